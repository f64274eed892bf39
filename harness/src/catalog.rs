//! The scenario catalog: every scenario the suite runs, as values.
//!
//! - `crash::<point>`: one per point of [`handoff::crash::REGISTRY`],
//!   generated, so a new point gets a trial without anyone writing one. The
//!   point is armed in the process that reaches it (`s-`: the supervisor,
//!   `o-`: the cold-started incumbent, `n-`: the successor) and must fire;
//!   the service must converge (restarted if nothing is left serving), a
//!   fresh supervisor must recover and commit, and every invariant hold.
//! - `recover::<s-point>`: the journal a crashed supervisor left is read and
//!   snapshotted (its phase, and that it names the incumbent, not the
//!   supervisor), then the recovering supervisor commits, and one more
//!   handoff commits after it.
//! - named scenarios for the misbehaviours: seal failures, slow drain,
//!   `Ready` timeout, a successor dying before `Hello`, slow seal with
//!   heartbeats, two supervisors at once, twenty handoffs in a row.
//!
//! Points only reachable under a fault are listed in [`REACH`]; a point not
//! listed is expected on the plain handoff path, and its trial fails loudly
//! ("armed but never fired") if it is not.

use handoff::crash::{CrashPoint, CrashSide, REGISTRY};
use handoff::events;

use crate::exit_code::RunOutcome;
use crate::scenario::{Crash, FinalHandoff, Handoff, Racy, Scenario, SuccessorBinary, Timeouts};

/// A fault that makes a crash point reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The successor never sends `Ready`: the supervisor aborts after the
    /// seal (`Abort` to N, `ResumeAfterAbort` to O, O retakes the flock).
    AbortAfterSeal,
    /// The incumbent's first seal fails (`SealFailed`).
    SealFailsOnce,
}

/// Points off the plain handoff path, and the fault that reaches each.
pub const REACH: &[(&str, Reach)] = &[
    ("s-after-abort-sent", Reach::AbortAfterSeal),
    ("s-after-resume-sent", Reach::AbortAfterSeal),
    ("o-after-resume-recv", Reach::AbortAfterSeal),
    ("o-after-flock-reacquired", Reach::AbortAfterSeal),
    ("o-after-seal-failed-sent", Reach::SealFailsOnce),
];

/// Points whose crash has two legitimate results. Each entry says why, which
/// processes keep only a deterministic prefix of their events in the
/// snapshot, the acceptable outcomes of the crashed run, and who may be the
/// incumbent after it. Found by running each trial many times; see the
/// README of the scenario suite.
pub fn racy(point: &str) -> Option<(Racy, Vec<RunOutcome>)> {
    match point {
        // The seed's own example.
        "s-after-begin-sent" => Some((
            Racy {
                why: "S dies right after Begin. The successor takes the flock and writes Ready: \
                      if S's socket is not closed yet the write succeeds, the successor binds the \
                      control socket and is the incumbent (the incumbent finds the flock held \
                      and exits, superseded); otherwise it gives up, and the incumbent, which \
                      lost its supervisor while sealed, retakes the flock and serves on",
                truncate_after: vec![
                    ("peer-0", events::INCUMBENT_SUPERVISOR_LOST),
                    ("peer-1", events::SUCCESSOR_BEGIN),
                ],
                drop: vec![],
                survivors: vec!["peer-0", "peer-1"],
                survivor_in: vec![
                    ("supervisor-2", "handoff.hello handoff_id=<id2> peer_pid="),
                    ("supervisor-2", "handoff.recover incumbent_pid="),
                ],
            },
            vec![RunOutcome::Crashed],
        )),
        "n-after-hello-sent" => Some((
            Racy {
                why: "N dies right after its Hello. S's HelloAck either fails at once (EPIPE: \
                      the handoff fails before anything changed) or lands in the dead socket's \
                      buffer, and S carries on until it needs N after the seal, then aborts \
                      and resumes the incumbent",
                truncate_after: vec![
                    ("supervisor-1", events::SPAWN),
                    ("peer-0", events::INCUMBENT_SESSION),
                ],
                drop: vec![],
                survivors: vec![],
                survivor_in: vec![],
            },
            vec![RunOutcome::Failed, RunOutcome::Aborted],
        )),
        "o-after-hello-sent" => Some((
            Racy {
                why: "O dies right after its Hello. S's HelloAck either fails at once (EPIPE, \
                      before a successor is spawned or a journal written) or lands in the dead \
                      socket's buffer, and S spawns the successor, journals, and fails on the \
                      next read; the recovering supervisor then finds a journal or not",
                truncate_after: vec![("supervisor-1", ""), ("peer-1", "")],
                drop: vec![
                    ("supervisor-2", events::RECOVER),
                    ("supervisor-2", "handoff.journal phase=cleared"),
                ],
                survivors: vec![],
                survivor_in: vec![],
            },
            vec![RunOutcome::Failed],
        )),
        "o-after-drained-sent" => Some((
            Racy {
                why: "O dies right after Drained. S's SealRequest either fails at once \
                      (EPIPE) or lands in the dead socket's buffer and S's read fails; either \
                      way S clears its journal and returns the error, but which step failed \
                      (and so S's last events) is a race",
                truncate_after: vec![("supervisor-1", events::SEAL)],
                drop: vec![
                    ("supervisor-2", events::RECOVER),
                    ("supervisor-2", "handoff.journal phase=cleared"),
                ],
                survivors: vec![],
                survivor_in: vec![],
            },
            vec![RunOutcome::Failed],
        )),
        "o-after-seal-complete-sent" => Some((
            Racy {
                why: "O dies right after SealComplete. S goes on to Begin, Ready and Commit: \
                      the Commit write either fails (EPIPE: O's socket is closed) or lands in \
                      the dead socket's buffer, depending on how far O's exit got; the \
                      handoff commits either way, and S logs the failed write only in the \
                      first case",
                truncate_after: vec![],
                drop: vec![("supervisor-1", "handoff.commit error=")],
                survivors: vec![],
                survivor_in: vec![],
            },
            vec![RunOutcome::Committed],
        )),
        "n-after-hello-ack-recv" => Some((
            Racy {
                why: "N dies right after HelloAck. After the seal, S's Begin either fails at \
                      once (EPIPE) or lands in the dead socket's buffer and S journals \
                      AwaitingReady before its read fails; both abort and resume the incumbent",
                truncate_after: vec![],
                drop: vec![(
                    "supervisor-1",
                    "handoff.journal handoff_id=<id1> phase=AwaitingReady",
                )],
                survivors: vec![],
                survivor_in: vec![],
            },
            vec![RunOutcome::Aborted],
        )),
        _ => None,
    }
}

/// The reach fault of `point`, if it needs one.
pub fn reach_of(point: &str) -> Option<Reach> {
    REACH.iter().find(|(p, _)| *p == point).map(|(_, r)| *r)
}

fn apply_reach(s: &mut Scenario, reach: Option<Reach>) {
    match reach {
        Some(Reach::AbortAfterSeal) => {
            s.handoffs[0]
                .successor_env
                .push(("FAKE_NEVER_READY".into(), "1".into()));
            // The abort comes when the deadline expires: keep it short.
            s.timeouts.deadline_ms = 800;
        }
        Some(Reach::SealFailsOnce) => {
            s.incumbent_env
                .push(("FAKE_SEAL_FAIL".into(), "once".into()));
        }
        None => {}
    }
}

/// The generated scenario for one crash point.
pub fn crash_scenario(point: &CrashPoint) -> Scenario {
    let mut s = Scenario::new(
        format!("crash::{}", point.name),
        format!("crash at {}: {}", point.name, point.description),
    );
    s.crash = Some(Crash::at(point.name));
    s.handoffs[0].expect = match point.side {
        CrashSide::Supervisor => vec![RunOutcome::Crashed],
        CrashSide::Incumbent | CrashSide::Successor => {
            vec![
                RunOutcome::Committed,
                RunOutcome::Aborted,
                RunOutcome::Failed,
            ]
        }
    };
    apply_reach(&mut s, reach_of(point.name));
    if let Some((r, outcomes)) = racy(point.name) {
        s.handoffs[0].expect = outcomes;
        s.racy = Some(r);
    }
    s
}

/// The recovery scenario for one `s-` point.
pub fn recover_scenario(point: &CrashPoint) -> Scenario {
    let mut s = crash_scenario(point);
    s.name = format!("recover::{}", point.name);
    s.summary = format!(
        "supervisor crashes at {}; a fresh supervisor recovers from the journal and commits, \
         then one more handoff commits",
        point.name
    );
    s.inspect_journal = true;
    // The recovering supervisor is planned (it must commit), then one more.
    s.handoffs.push(Handoff::commits());
    s.final_handoff = FinalHandoff::Always;
    s
}

/// The named scenarios.
pub fn named_scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();

    out.push(Scenario::new(
        "happy-path",
        "one handoff commits; the successor serves every acknowledged write",
    ));

    let mut s = Scenario::new(
        "handoffs-20-in-a-row",
        "twenty handoffs in a row, each commits, while a client writes",
    );
    s.handoffs = (0..20).map(|_| Handoff::commits()).collect();
    s.final_handoff = FinalHandoff::Never;
    out.push(s);

    let mut s = Scenario::new(
        "seal-fails-once",
        "the incumbent's first seal fails: abort, it keeps the flock and serves; the next \
         handoff commits",
    );
    s.incumbent_env
        .push(("FAKE_SEAL_FAIL".into(), "once".into()));
    s.handoffs = vec![Handoff::aborts(), Handoff::commits()];
    out.push(s);

    let mut s = Scenario::new(
        "seal-fails-always",
        "every seal fails: each handoff aborts and the incumbent keeps serving",
    );
    s.incumbent_env
        .push(("FAKE_SEAL_FAIL".into(), "always".into()));
    s.handoffs = vec![Handoff::aborts(), Handoff::aborts()];
    s.final_handoff = FinalHandoff::Never;
    out.push(s);

    let mut s = Scenario::new(
        "drain-past-grace",
        "the incumbent drains longer than the drain grace: the handoff gives up before the seal \
         and the incumbent serves on",
    );
    s.timeouts.drain_grace_ms = 200;
    s.incumbent_env.push(("FAKE_DRAIN_MS".into(), "900".into()));
    // A drain timeout is an error (exit 3): the supervisor
    // gives up before the seal and clears its journal (DESIGN.md section 5,
    // "cleared at the end either way"); the incumbent, drained but not
    // sealed, resumes on the closed session. The next handoff, with a drain
    // grace that covers the slow drain, commits.
    s.handoffs = vec![
        Handoff {
            expect: vec![RunOutcome::Failed],
            ..Handoff::commits()
        },
        Handoff {
            drain_grace_ms: Some(3_000),
            ..Handoff::commits()
        },
    ];
    s.inspect_journal = true;
    s.recovery.drain_grace_ms = Some(3_000);
    out.push(s);

    let mut s = Scenario::new(
        "ready-timeout",
        "the successor never sends Ready: the supervisor aborts at the deadline, kills it, and \
         the incumbent retakes the flock and serves",
    );
    s.timeouts.deadline_ms = 800;
    s.handoffs = vec![Handoff::aborts().successor_env("FAKE_NEVER_READY", "1")];
    s.final_handoff = FinalHandoff::Never;
    out.push(s);

    let mut s = Scenario::new(
        "successor-exits-before-hello",
        "the successor exits before its Hello: the handoff fails before anything changed and \
         the incumbent serves on",
    );
    s.handoffs = vec![Handoff {
        expect: vec![RunOutcome::Failed, RunOutcome::Aborted],
        ..Handoff::commits().successor_env("FAKE_EXIT_BEFORE_HELLO", "1")
    }];
    s.final_handoff = FinalHandoff::Never;
    out.push(s);

    // s-after-begin-sent has two legitimate results. Here injected delays
    // (faults, not synchronisation) steer it into the harder branch: the
    // incumbent is slow after SealComplete (200 ms), so the successor takes
    // the flock first; the successor is slow after taking it (400 ms), so
    // the supervisor is long dead when it writes Ready. Its Ready fails, it
    // gives up, and the incumbent must take everything back, the flock and a
    // control socket path that still leads to it. The race stays declared:
    // both results remain correct if the delays do not steer it.
    let mut s = Scenario::new(
        "supervisor-dies-before-ready",
        "the supervisor dies right after Begin, before the successor's Ready: the successor \
         gives up, and the incumbent retakes the flock and still owns its control socket path",
    );
    s.crash = Some(Crash::at("s-after-begin-sent"));
    s.incumbent_env.push((
        "HANDOFF_CRASH_AT".into(),
        "o-after-seal-complete-sent=delay(200)".into(),
    ));
    s.handoffs = vec![Handoff {
        expect: vec![RunOutcome::Crashed],
        ..Handoff::commits().successor_env("HANDOFF_CRASH_AT", "n-after-flock-taken=delay(400)")
    }];
    s.racy = racy("s-after-begin-sent").map(|(r, _)| r);
    out.push(s);

    let mut s = Scenario::new(
        "successor-lies-about-its-pid",
        "the successor's Hello names a pid other than the child's: the supervisor refuses it \
         at the handshake, before the incumbent drains, and the incumbent serves on",
    );
    s.handoffs = vec![Handoff {
        successor: SuccessorBinary::Impostor,
        expect: vec![RunOutcome::Failed],
        ..Handoff::commits()
    }];
    s.final_handoff = FinalHandoff::Never;
    out.push(s);

    let mut s = Scenario::new(
        "slow-seal-with-heartbeats",
        "the seal takes four liveness timeouts; heartbeats keep the supervisor patient and the \
         handoff commits",
    );
    s.timeouts = Timeouts {
        liveness_ms: 300,
        heartbeat_ms: 50,
        deadline_ms: 5_000,
        ..Timeouts::default()
    };
    s.incumbent_env.push(("FAKE_SEAL_MS".into(), "1200".into()));
    out.push(s);

    let mut s = Scenario::new(
        "two-supervisors-at-once",
        "a second supervisor starts while the first one's incumbent drains: it is refused with \
         a clear error and the first handoff commits",
    );
    // The first handoff drains for far longer than the second supervisor's
    // probe of the incumbent, so the second one is refused while the first
    // is still draining (not merely queued behind it).
    s.incumbent_env
        .push(("FAKE_DRAIN_MS".into(), "2000".into()));
    s.timeouts.drain_grace_ms = 4_000;
    s.timeouts.deadline_ms = 6_000;
    s.timeouts.probe_timeout_ms = 300;
    s.handoffs = vec![Handoff {
        second_supervisor: true,
        ..Handoff::commits()
    }];
    out.push(s);

    out
}

/// The reachability sweep: the plain handoff, an abort after the seal, and a
/// failed seal, each with every crash point armed as a no-op `delay(0)`.
/// Together they must reach every point of the registry (the coverage
/// trial checks it).
pub fn reachability_sweep() -> Vec<Scenario> {
    let mut plain = Scenario::new(
        "sweep::plain",
        "every point armed as delay(0) on a committing handoff",
    );
    plain.sweep = true;
    let mut out = vec![plain];
    for (name, reach) in [
        ("sweep::abort-after-seal", Reach::AbortAfterSeal),
        ("sweep::seal-fails-once", Reach::SealFailsOnce),
    ] {
        let mut s = Scenario::new(
            name,
            format!("every point armed as delay(0) under {reach:?}"),
        );
        s.sweep = true;
        s.handoffs[0].expect = vec![RunOutcome::Aborted];
        apply_reach(&mut s, Some(reach));
        s.final_handoff = FinalHandoff::Never;
        out.push(s);
    }
    out
}

/// Every scenario: the crash matrix, the recovery matrix, the named ones.
pub fn all() -> Vec<Scenario> {
    let mut out: Vec<Scenario> = REGISTRY.iter().map(crash_scenario).collect();
    out.extend(
        REGISTRY
            .iter()
            .filter(|p| p.side == CrashSide::Supervisor)
            .map(recover_scenario),
    );
    out.extend(named_scenarios());
    out
}

/// The scenario called `name` (`crash::<point>`, `recover::<point>`, a
/// named one, or a bare point name for its crash scenario).
pub fn find(name: &str) -> Option<Scenario> {
    let all = all();
    all.iter()
        .find(|s| s.name == name)
        .or_else(|| all.iter().find(|s| s.name == format!("crash::{name}")))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_crash_trial_and_every_s_point_a_recovery_trial() {
        let all = all();
        for p in REGISTRY {
            assert!(all.iter().any(|s| s.name == format!("crash::{}", p.name)));
            assert_eq!(
                all.iter().any(|s| s.name == format!("recover::{}", p.name)),
                p.side == CrashSide::Supervisor
            );
        }
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate scenario names");
    }

    #[test]
    fn reach_table_names_only_registered_points() {
        for (p, _) in REACH {
            assert!(
                handoff::crash::lookup(p).is_some(),
                "{p} is not in the registry"
            );
        }
    }

    #[test]
    fn find_accepts_a_bare_point_name() {
        assert_eq!(
            find("s-after-begin-sent").map(|s| s.name),
            Some("crash::s-after-begin-sent".into())
        );
        assert!(find("no-such-thing").is_none());
    }
}
