//! Scenarios are values: what to start, what to arm, which misbehaviour to
//! ask for, how many handoffs, the timeouts, and which outcomes are
//! acceptable. One runner ([`crate::runner::run`]) executes any of them.

use serde::Serialize;

use crate::exit_code::RunOutcome;

/// Every timeout of a scenario, in milliseconds, so nothing waits seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Incumbent: heartbeat interval while `drain`/`seal` run.
    pub heartbeat_ms: u64,
    /// Supervisor and incumbent: silence tolerated between frames.
    pub liveness_ms: u64,
    /// Supervisor and incumbent: bound on the `Hello`/`HelloAck` read.
    pub hello_timeout_ms: u64,
    /// Incumbent: window to retake the flock after losing a sealed session.
    pub reacquire_window_ms: u64,
    /// Supervisor: cap on the drain.
    pub drain_grace_ms: u64,
    /// Supervisor: cap on the whole handoff.
    pub deadline_ms: u64,
    /// Supervisor: slack past a cap for replies already on the wire.
    pub wire_slack_ms: u64,
    /// Supervisor: bound on `resume_from_journal`'s probe of the incumbent.
    pub probe_timeout_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            liveness_ms: 1_000,
            hello_timeout_ms: 1_000,
            reacquire_window_ms: 300,
            drain_grace_ms: 1_500,
            deadline_ms: 4_000,
            wire_slack_ms: 200,
            probe_timeout_ms: 1_000,
        }
    }
}

impl Timeouts {
    /// Environment for service processes (the incumbent side reads these).
    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            ("HANDOFF_HEARTBEAT_MS".into(), self.heartbeat_ms.to_string()),
            ("HANDOFF_LIVENESS_MS".into(), self.liveness_ms.to_string()),
            (
                "HANDOFF_HELLO_TIMEOUT_MS".into(),
                self.hello_timeout_ms.to_string(),
            ),
            (
                "HANDOFF_REACQUIRE_WINDOW_MS".into(),
                self.reacquire_window_ms.to_string(),
            ),
        ]
    }

    /// Command-line flags for `handoff-supervisor`.
    pub fn supervisor_args(&self) -> Vec<String> {
        [
            ("--drain-grace-ms", self.drain_grace_ms),
            ("--deadline-ms", self.deadline_ms),
            ("--liveness-ms", self.liveness_ms),
            ("--hello-timeout-ms", self.hello_timeout_ms),
            ("--wire-slack-ms", self.wire_slack_ms),
            ("--probe-timeout-ms", self.probe_timeout_ms),
        ]
        .iter()
        .flat_map(|(flag, v)| [flag.to_string(), v.to_string()])
        .collect()
    }

    /// Bound on the service settling after a supervisor exits: the
    /// incumbent's reacquire window, a successor or an incumbent noticing a
    /// silent supervisor (twice the liveness timeout), and 5 s for start-up
    /// and a loaded machine.
    pub fn settle_bound(&self) -> std::time::Duration {
        std::time::Duration::from_millis(5_000 + self.reacquire_window_ms + 2 * self.liveness_ms)
    }

    /// Upper bound on one supervisor run, for the harness's own wait.
    pub fn supervisor_run_bound_ms(&self) -> u64 {
        self.deadline_ms + self.drain_grace_ms + 2 * self.liveness_ms + 10_000
    }
}

/// A crash point to arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crash {
    /// The registry name.
    pub point: &'static str,
    /// The action (`exit`, `hang`, ...), `HANDOFF_CRASH_AT` syntax.
    pub action: &'static str,
    /// For `s-`/`n-` points: the index of the handoff whose supervisor (or
    /// successor) is armed. `o-` points arm the cold-started incumbent.
    pub handoff: usize,
}

impl Crash {
    /// An `exit` crash at `point` during the first handoff.
    pub fn at(point: &'static str) -> Self {
        Self {
            point,
            action: "exit",
            handoff: 0,
        }
    }

    /// The side of the point, from its registry entry.
    pub fn side(&self) -> Option<handoff::crash::CrashSide> {
        handoff::crash::lookup(self.point).map(|p| p.side)
    }

    /// The `HANDOFF_CRASH_AT` value.
    pub fn spec(&self) -> String {
        if self.action == "exit" {
            self.point.to_string()
        } else {
            format!("{}={}", self.point, self.action)
        }
    }
}

/// The binary a supervisor spawns as its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuccessorBinary {
    /// `fake-peer`.
    FakePeer,
    /// The running executable as [`crate::impostor`]: lies about its pid.
    Impostor,
}

/// One supervisor run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handoff {
    /// What the supervisor spawns.
    pub successor: SuccessorBinary,
    /// Environment for the successor (misbehaviour).
    pub successor_env: Vec<(String, String)>,
    /// Acceptable outcomes (the snapshot pins the one that happened unless
    /// the scenario is declared racy).
    pub expect: Vec<RunOutcome>,
    /// Start a second supervisor while the first one's incumbent drains;
    /// it must be refused.
    pub second_supervisor: bool,
    /// Override the scenario's drain grace for this run.
    pub drain_grace_ms: Option<u64>,
}

impl Handoff {
    /// A handoff that must commit.
    pub fn commits() -> Self {
        Self {
            successor: SuccessorBinary::FakePeer,
            successor_env: vec![],
            expect: vec![RunOutcome::Committed],
            second_supervisor: false,
            drain_grace_ms: None,
        }
    }

    /// A handoff that must abort.
    pub fn aborts() -> Self {
        Self {
            expect: vec![RunOutcome::Aborted],
            ..Self::commits()
        }
    }

    /// With successor environment.
    pub fn successor_env(mut self, k: &str, v: &str) -> Self {
        self.successor_env.push((k.into(), v.into()));
        self
    }
}

/// A scenario whose result depends on a race the protocol allows (both
/// outcomes are legitimate). The snapshot then records the alternatives
/// instead of the one that happened, and each listed process's events only
/// up to the marker (its deterministic prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Racy {
    /// Why two outcomes are legitimate, for the reader of the snapshot.
    pub why: &'static str,
    /// `(process, event)`: keep that process's events up to and including
    /// the first `event`; with an empty event, keep none of them.
    pub truncate_after: Vec<(&'static str, &'static str)>,
    /// `(process, pattern)`: drop that process's events whose normalised
    /// line starts with `pattern` (e.g. `handoff.journal phase=cleared`).
    pub drop: Vec<(&'static str, &'static str)>,
    /// The processes that may legitimately be the incumbent after the racy
    /// handoff.
    pub survivors: Vec<&'static str>,
    /// `(process, line prefix)`: in that process's normalised events that
    /// start with the prefix (e.g. a later supervisor's hello with the
    /// incumbent it found), a survivor's name becomes `<survivor>`.
    pub survivor_in: Vec<(&'static str, &'static str)>,
}

/// Whether to run one more (unarmed) handoff at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalHandoff {
    /// When a crash fired or a journal was left behind: invariant 5 says a
    /// fresh supervisor must recover and then commit.
    WhenNeeded,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// A scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// The trial name, e.g. `crash::s-after-begin-sent`.
    pub name: String,
    /// One line for humans.
    pub summary: String,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Environment (misbehaviour) of the cold-started incumbent.
    pub incumbent_env: Vec<(String, String)>,
    /// The armed crash point, if any.
    pub crash: Option<Crash>,
    /// The supervisor runs, in order.
    pub handoffs: Vec<Handoff>,
    /// Whether to run the recovery handoff.
    pub final_handoff: FinalHandoff,
    /// The recovery handoff's plan (it must commit).
    pub recovery: Handoff,
    /// Record the journal a crash left (phase, pids) in the report.
    pub inspect_journal: bool,
    /// A client writes during the whole scenario.
    pub client: bool,
    /// Two legitimate outcomes, if so.
    pub racy: Option<Racy>,
    /// Reachability sweep: arm every crash point of each process's side as a
    /// no-op `delay(0)`, so each point reached logs a `handoff.crash` event
    /// and nothing dies.
    pub sweep: bool,
}

impl Scenario {
    /// A scenario with defaults: one committing handoff, a writing client.
    pub fn new(name: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            summary: summary.into(),
            timeouts: Timeouts::default(),
            incumbent_env: vec![],
            crash: None,
            handoffs: vec![Handoff::commits()],
            final_handoff: FinalHandoff::WhenNeeded,
            recovery: Handoff::commits(),
            inspect_journal: false,
            client: true,
            racy: None,
            sweep: false,
        }
    }

    /// The command that reproduces this scenario alone.
    pub fn repro_command(&self) -> String {
        format!(
            "cargo test -p scenarios --test scenarios -- '{}' --exact",
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!(RunOutcome::of_code(0), Some(RunOutcome::Committed));
        assert_eq!(RunOutcome::of_code(2), Some(RunOutcome::Aborted));
        assert_eq!(RunOutcome::of_code(3), Some(RunOutcome::Failed));
        assert_eq!(RunOutcome::of_code(99), Some(RunOutcome::Crashed));
        assert_eq!(RunOutcome::of_code(1), None);
    }

    #[test]
    fn crash_specs_render() {
        assert_eq!(Crash::at("o-after-seal").spec(), "o-after-seal");
        let hang = Crash {
            action: "hang",
            ..Crash::at("o-after-seal")
        };
        assert_eq!(hang.spec(), "o-after-seal=hang");
        assert_eq!(
            Crash::at("n-after-ready-sent").side(),
            Some(handoff::crash::CrashSide::Successor)
        );
    }

    #[test]
    fn timeouts_become_flags_and_env() {
        let t = Timeouts::default();
        let args = t.supervisor_args();
        assert_eq!(args.len(), 12);
        assert_eq!(args[0], "--drain-grace-ms");
        assert!(
            t.service_env()
                .iter()
                .any(|(k, _)| k == "HANDOFF_LIVENESS_MS")
        );
    }
}
