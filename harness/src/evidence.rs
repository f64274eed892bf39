//! What a run leaves behind, as plain data: the records the engine keeps
//! while it drives (supervisor runs, kills, restarts) and [`Evidence`], the
//! one value every invariant of [`crate::rules`] and [`crate::chaos::checks`]
//! is a pure function of.
//!
//! This module is a leaf: it names records, it does not produce or judge
//! them.

use serde::Serialize;

use crate::chaos::schedule::Schedule;
use crate::chaos::stage::{Party, Stage};
use crate::eventlog::{Event, ProcessLog};
pub use crate::exit_code::RunOutcome;
use crate::fixture::ProcEntry;
use crate::procs::ProcStat;
use crate::reaper::ExitKind;
use crate::scenario::Timeouts;

/// One supervisor run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunRecord {
    /// 0-based index among the run's supervisors.
    pub index: usize,
    /// A planned run (faults may apply), or a verification run (clean).
    pub planned: bool,
    /// `supervisor-<k>`.
    pub supervisor: String,
    /// The name its successor got.
    pub successor: String,
    /// The incumbent when it started, if any served.
    pub incumbent: Option<String>,
    /// Its successor was the impostor.
    pub impostor: bool,
    /// Its successor was told to exit before its `Hello`.
    pub successor_exits_before_hello: bool,
    /// How the supervisor ended.
    #[serde(skip)]
    pub exit: Option<ExitKind>,
    /// Its outcome.
    pub outcome: RunOutcome,
    /// A journal was left when it ended.
    pub journal_left: bool,
    /// It recovered a journal first (`handoff.recover`).
    pub recovered_journal: bool,
    /// Who served once the service settled (`no service` before a restart).
    pub settled: Option<String>,
    /// `CLOCK_MONOTONIC` when it started (after any idle kill).
    pub window_start_ns: u64,
    /// When the service had settled after it.
    pub window_end_ns: u64,
    /// The last line of its stderr.
    pub stderr_tail: Option<String>,
    /// `PrepareHandoff` → `Commit`, when it committed.
    pub latency_ms: Option<f64>,
}

/// A kill that was sent.
#[derive(Debug, Clone, Serialize)]
pub struct KillRecord {
    /// The schedule's fault id.
    pub fault_id: usize,
    /// The run (0-based).
    pub run: usize,
    /// An idle kill (before the run's supervisor started).
    pub idle: bool,
    /// The role of the victim in the run.
    pub victim: Party,
    /// Its process name.
    pub process: String,
    /// Its pid.
    pub pid: u32,
    /// The trigger event (or `idle`).
    pub trigger: String,
    /// The delay after the trigger.
    pub delay_ms: u64,
    /// `CLOCK_MONOTONIC` when the signal was sent.
    pub at_ns: u64,
    /// The stage the handoff was in when it was sent (measured).
    pub phase: Stage,
}

/// A scheduled kill that was not sent.
#[derive(Debug, Clone, Serialize)]
pub struct MissedKill {
    /// The schedule's fault id.
    pub fault_id: usize,
    /// Why.
    pub why: String,
}

/// A cold start of the service after nothing served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// `CLOCK_MONOTONIC` when the engine found nothing serving.
    pub at_ns: u64,
    /// What the engine saw (`nothing served after supervisor-2`).
    pub why: String,
}

/// Everything a run left behind, after teardown: what every invariant is
/// judged on. Built by the engine from the fixture and its own records;
/// hand-written in the unit tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// Every process's events.
    pub logs: &'a [ProcessLog],
    /// Every process and how it ended.
    pub processes: &'a [ProcEntry],
    /// The kills that were sent.
    pub kills: &'a [KillRecord],
    /// Each supervisor run.
    pub runs: &'a [RunRecord],
    /// `(point, pid)` per line of the crash record.
    pub crash_record: &'a [(String, u32)],
    /// Each cold start after nothing served.
    pub restarts: &'a [Restart],
    /// The drawn schedule (a chaos episode).
    pub schedule: Option<&'a Schedule>,
    /// The processes carrying the fixture's marker still alive at the end,
    /// while the final incumbent still served.
    pub live: &'a [ProcStat],
    /// The final incumbent's pid.
    pub final_incumbent: Option<u32>,
    /// The timeouts every process ran with.
    pub timeouts: Option<&'a Timeouts>,
}

impl Evidence<'_> {
    /// The log of the process `process`.
    pub fn log_of(&self, process: &str) -> Option<&ProcessLog> {
        self.logs.iter().find(|l| l.process == process)
    }

    /// The events of the process `process`, in its order.
    pub fn events_of<'b>(&'b self, process: &str) -> impl Iterator<Item = &'b Event> + 'b {
        self.log_of(process)
            .into_iter()
            .flat_map(|l| l.events.iter())
    }

    /// The process that had `pid`.
    pub fn process_by_pid(&self, pid: u32) -> Option<&ProcEntry> {
        self.processes.iter().find(|p| p.pid == Some(pid))
    }

    /// The kill chaos sent to `pid`, if it did.
    pub fn killed_by_chaos(&self, pid: u32) -> Option<&KillRecord> {
        self.kills.iter().find(|k| k.pid == pid)
    }

    /// When the process `name` died of a crash point, if it did.
    pub fn crash_time(&self, name: &str) -> Option<u64> {
        self.events_of(name)
            .find(|e| {
                e.name == handoff::events::CRASH
                    && e.str_field("action").is_none_or(|a| a == "Exit")
            })
            .map(|e| e.mono_ns)
    }

    /// The run whose successor is the process `name`.
    pub fn run_of_successor(&self, name: &str) -> Option<&RunRecord> {
        self.runs.iter().find(|r| r.successor == name)
    }
}

/// `(point, pid)` per line of a crash record (`<point> <pid>`).
pub fn parse_crash_record(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|l| {
            let (point, pid) = l.trim().split_once(' ')?;
            Some((point.to_string(), pid.parse().ok()?))
        })
        .collect()
}

/// The crash record at `path` (none when it is absent).
pub fn read_crash_record(path: &std::path::Path) -> Vec<(String, u32)> {
    parse_crash_record(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Hand-written evidence for the unit tests of the rules and checks.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;
    use crate::chaos::stage::{Party, Stage};
    use crate::fixture::ProcKind;
    use crate::reaper::Exit;

    /// A log of `(mono_ns, event, extra JSON fields starting with a comma)`.
    pub fn log(process: &str, pid: u32, lines: &[(u64, &str, &str)]) -> ProcessLog {
        let text: String = lines
            .iter()
            .map(|(t, name, extra)| {
                format!(
                    r#"{{"mono_ns":{t},"pid":{pid},"level":"INFO","event":"{name}","message":""{extra}}}"#
                ) + "\n"
            })
            .collect();
        crate::eventlog::parse_log(process, text.as_bytes())
    }

    /// A process that ended with `exit` (reaped at 1 µs), if it did.
    pub fn proc_entry(name: &str, pid: u32, kind: ProcKind, exit: Option<ExitKind>) -> ProcEntry {
        ProcEntry {
            name: name.into(),
            pid: Some(pid),
            kind,
            armed: None,
            spawned_by: None,
            exit: exit.map(|kind| Exit {
                pid,
                kind,
                reaped_mono_ns: 1_000,
            }),
            killed_by_harness: false,
        }
    }

    /// An idle chaos kill of `process` at `at_ns`.
    pub fn kill(process: &str, pid: u32, at_ns: u64) -> KillRecord {
        KillRecord {
            fault_id: 0,
            run: 0,
            idle: true,
            victim: Party::Incumbent,
            process: process.into(),
            pid,
            trigger: "idle".into(),
            delay_ms: 0,
            at_ns,
            phase: Stage::Idle,
        }
    }
}
