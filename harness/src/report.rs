//! What a scenario run produced, as plain data: outcomes, processes,
//! events, invariant results. Its views are elsewhere:
//! [`crate::snapshot`] (the deterministic part, for snapshots) and
//! [`crate::timeline`] (the texts a human reads).

use std::path::PathBuf;

use serde::Serialize;

use crate::eventlog::{Normaliser, ProcessLog};
use crate::evidence::read_crash_record;
use crate::exit_code::RunOutcome;
use crate::fixture::{Fixture, ProcEntry, SupervisorHandle};
use crate::invariants::Check;
use crate::reaper::ExitKind;
use crate::scenario::{Handoff, Scenario};

/// What the journal held after a supervisor run, names instead of pids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalView {
    /// `Negotiating`, `Draining`, ... or `absent` / `unreadable`.
    pub phase: String,
    /// Who the journal says the incumbent is.
    pub incumbent: String,
    /// Who it says the successor is.
    pub successor: Option<String>,
    /// Why it is unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A second supervisor started during a handoff.
#[derive(Debug, Clone)]
pub struct SecondSupervisor {
    /// Its name.
    pub supervisor: String,
    /// How it ended.
    pub exit: ExitKind,
    /// Its outcome.
    pub outcome: Option<RunOutcome>,
    /// Whether its stderr says it was refused.
    pub stderr_mentions_refusal: bool,
    /// Whether the first supervisor's journal survived it.
    pub journal_kept: bool,
    /// Its stderr.
    pub stderr: String,
}

/// One supervisor run.
#[derive(Debug, Clone)]
pub struct HandoffRecord {
    /// `supervisor-<k>`.
    pub supervisor: String,
    /// The successor's name.
    pub successor: String,
    /// Index in the scenario's plan; `None` for the recovery handoff.
    pub planned: Option<usize>,
    /// Acceptable outcomes.
    pub expect: Vec<RunOutcome>,
    /// The successor's environment.
    pub successor_env: Vec<(String, String)>,
    /// How the supervisor ended.
    pub exit: Option<ExitKind>,
    /// Its outcome.
    pub outcome: Option<RunOutcome>,
    /// Its stdout (`committed <id> pid=<n>` on commit).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// A journal remained after it.
    pub journal_left: bool,
    /// The journal it left, when the scenario inspects it.
    pub journal: Option<JournalView>,
    /// Who was the incumbent once the service settled (or `no service`).
    pub settled: Option<String>,
    /// A second supervisor, if one was started during this run.
    pub second: Option<SecondSupervisor>,
}

impl HandoffRecord {
    /// A record for a run just started.
    pub fn new(handle: &SupervisorHandle, planned: Option<usize>, plan: &Handoff) -> Self {
        Self {
            supervisor: handle.name.clone(),
            successor: handle.successor.clone(),
            planned,
            expect: plan.expect.clone(),
            successor_env: plan.successor_env.clone(),
            exit: None,
            outcome: None,
            stdout: String::new(),
            stderr: String::new(),
            journal_left: false,
            journal: None,
            settled: None,
            second: None,
        }
    }
}

/// A scenario's result. Owns the scenario directory: it is removed when the
/// report drops, unless [`Report::keep_dir`] was called (a failing run keeps
/// it).
#[derive(Debug)]
pub struct Report {
    /// The scenario.
    pub scenario: Scenario,
    /// Its directory (kept when the run failed).
    pub dir: PathBuf,
    /// Whether the directory was kept.
    pub dir_kept: bool,
    /// A harness-level error that stopped the run early.
    pub error: Option<String>,
    /// Each supervisor run.
    pub handoffs: Vec<HandoffRecord>,
    /// Service restarts, in order.
    pub restarts: Vec<String>,
    /// `CLOCK_MONOTONIC` of the last restart (0: none yet).
    pub last_restart_ns: u64,
    /// The incumbent at the end.
    pub final_incumbent: Option<String>,
    /// The lock file's inode after the first start.
    pub first_lock_inode: Option<u64>,
    /// Invariant results.
    pub checks: Vec<Check>,
    /// What the fixture recorded.
    pub observed: Observed,
    /// The directory, removed on drop unless kept.
    pub dir_guard: Option<tempfile::TempDir>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &Scenario) -> Self {
        Self {
            scenario: scenario.clone(),
            dir: PathBuf::new(),
            dir_kept: false,
            error: None,
            handoffs: Vec::new(),
            restarts: Vec::new(),
            last_restart_ns: 0,
            final_incumbent: None,
            first_lock_inode: None,
            checks: Vec::new(),
            observed: Observed::default(),
            dir_guard: None,
        }
    }

    /// Keep the scenario directory after the report drops; returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.dir_guard.take() {
            let _ = dir.keep();
        }
        self.dir_kept = true;
        self.dir.clone()
    }

    /// Take what the fixture recorded; a malformed event log fails a check.
    pub fn collect(&mut self, fx: &Fixture) {
        self.observed = Observed::collect(fx);
        self.checks.extend(self.observed.malformed_logs());
    }

    /// True when nothing failed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|c| c.ok)
    }

    /// Crash points that fired (their names).
    pub fn fired_points(&self) -> Vec<String> {
        self.observed.fired.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// The crash record's `(point, pid)` entries with the fixture's process
/// names for the pids.
pub fn name_crash_record(fx: &Fixture, record: &[(String, u32)]) -> Vec<(String, String)> {
    record
        .iter()
        .map(|(point, pid)| {
            let name = fx.name_of(*pid);
            (
                point.clone(),
                name.map_or_else(|| format!("pid {pid}"), str::to_string),
            )
        })
        .collect()
}

/// What the fixture recorded of a run, as plain data: every process, every
/// event log, the names that make them readable, and the crash points. A
/// scenario's report and a chaos episode both take it from their fixture.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every process.
    pub processes: Vec<ProcEntry>,
    /// Every event log.
    pub logs: Vec<ProcessLog>,
    /// Names for ids, pids, paths.
    pub normaliser: Normaliser,
    /// Crash points that fired: `(point, process)`.
    pub fired: Vec<(String, String)>,
    /// Crash points reached (a `handoff.crash` event), whatever their action.
    pub reached: std::collections::BTreeSet<String>,
}

impl Observed {
    /// Take the processes and logs from the fixture and build the names.
    pub fn collect(fx: &Fixture) -> Self {
        let processes = fx.processes().to_vec();
        let logs = fx.logs();
        let root = fx.root().to_string_lossy().into_owned();
        let bin_dir = fx
            .bins()
            .fake_peer
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let exe = std::env::current_exe()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut normaliser = Normaliser::new(vec![
            (root, "<dir>".into()),
            (bin_dir, "<bin>".into()),
            (exe, "<impostor>".into()),
        ]);
        for p in &processes {
            if let Some(pid) = p.pid {
                normaliser.learn_pid(pid, &p.name);
            }
        }
        normaliser.learn_ids(&logs);
        let fired = name_crash_record(fx, &read_crash_record(&fx.crash_record()));
        let reached = logs
            .iter()
            .flat_map(|l| l.events.iter())
            .filter(|e| e.name == handoff::events::CRASH)
            .filter_map(|e| e.str_field("point").map(str::to_string))
            .collect();
        Self {
            processes,
            logs,
            normaliser,
            fired,
            reached,
        }
    }

    /// A failed check for each event log with lines that are not events.
    pub fn malformed_logs(&self) -> Vec<Check> {
        self.logs
            .iter()
            .filter(|log| !log.bad_lines.is_empty())
            .map(|log| {
                Check::fail(
                    "event-log-well-formed",
                    format!(
                        "{}: lines that are not events: {:?}",
                        log.process, log.bad_lines
                    ),
                )
            })
            .collect()
    }
}

pub(crate) fn snake(o: &RunOutcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(crate) fn names(outcomes: &[RunOutcome]) -> String {
    outcomes.iter().map(snake).collect::<Vec<_>>().join(" | ")
}
