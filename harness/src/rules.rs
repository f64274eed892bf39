//! The rules every run is judged by, whoever drove it (a named scenario or
//! a chaos episode): how each process may end, that nothing outlives the
//! run but the incumbent, and that the service was restarted only after a
//! fault killed a service process. Each rule is a pure function of one
//! [`Evidence`] value, tested on hand-written evidence below.

use nix::sys::signal::Signal;

use crate::evidence::{Evidence, RunOutcome};
pub use crate::exit_code::run_outcome;
use crate::exit_code::{
    CRASHED, EXIT_OK, SUCCESSOR_EXITED_BEFORE_HELLO, SUCCESSOR_NOT_COMMITTED, SUPERVISOR_ABORTED,
    SUPERVISOR_FAILED,
};
use crate::fixture::ProcKind;
use crate::invariants::Check;
use crate::reaper::ExitKind;

/// Every reaped process ended in a way the evidence explains: [`EXIT_OK`];
/// [`CRASHED`] in an armed process with its crash-record line; a
/// supervisor's [`SUPERVISOR_ABORTED`] or [`SUPERVISOR_FAILED`] (its outcome
/// is judged elsewhere); a successor's [`SUCCESSOR_NOT_COMMITTED`] when its
/// run did not commit, or [`SUCCESSOR_EXITED_BEFORE_HELLO`] when it was told
/// to; `SIGKILL` sent by chaos, by the harness's teardown, or by a
/// supervisor to its own successor (reaped by the harness when that
/// supervisor died between the kill and the reap).
pub fn check_exits(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    for p in ev.processes {
        let Some(exit) = p.exit else { continue };
        let armed = p.armed.is_some();
        let run = || {
            ev.run_of_successor(&p.name).or_else(|| {
                let by = p.spawned_by.as_deref()?;
                ev.runs.iter().find(|r| r.supervisor == by)
            })
        };
        let successor = p.kind == ProcKind::Successor;
        let ok = match exit.kind {
            ExitKind::Signal(sig) if sig == Signal::SIGKILL as i32 => {
                p.killed_by_harness
                    || ev.killed_by_chaos(exit.pid).is_some()
                    || (successor
                        && run().is_some_and(|r| {
                            matches!(r.outcome, RunOutcome::Killed | RunOutcome::Crashed)
                        }))
            }
            ExitKind::Signal(_) => false,
            ExitKind::Code(EXIT_OK) => true,
            ExitKind::Code(CRASHED) => {
                armed && ev.crash_record.iter().any(|(_, pid)| *pid == exit.pid)
            }
            ExitKind::Code(SUPERVISOR_ABORTED | SUPERVISOR_FAILED)
                if p.kind == ProcKind::Supervisor =>
            {
                true
            }
            ExitKind::Code(SUCCESSOR_NOT_COMMITTED) if successor => {
                run().is_some_and(|r| r.outcome != RunOutcome::Committed)
            }
            ExitKind::Code(SUCCESSOR_EXITED_BEFORE_HELLO) if successor => {
                run().is_some_and(|r| r.successor_exits_before_hello)
            }
            ExitKind::Code(_) => false,
        };
        if !ok {
            problems.push(format!(
                "{} ({:?}{}) ended with {}{}",
                p.name,
                p.kind,
                if armed { ", armed" } else { "" },
                exit.kind,
                if exit.kind == ExitKind::Code(CRASHED) && armed {
                    " with no line in the crash record"
                } else {
                    ""
                }
            ));
        }
    }
    Check::from_problems(
        "no-unexpected-death",
        problems,
        "every reaped process ended in a way the run explains".into(),
    )
}

/// Nothing carrying the fixture's marker lives at the end but the final
/// incumbent.
pub fn check_no_leaked_process(ev: &Evidence) -> Check {
    let leaked: Vec<String> = ev
        .live
        .iter()
        .filter(|p| Some(p.pid) != ev.final_incumbent)
        .map(|p| match ev.process_by_pid(p.pid) {
            Some(named) => format!("{} (pid {}) is still alive", named.name, p.pid),
            None => format!(
                "pid {} ({}) carries the fixture marker but is no process the run named",
                p.pid, p.comm
            ),
        })
        .collect();
    Check::from_problems(
        "no-leaked-process",
        leaked,
        format!(
            "{} processes started, only the incumbent lives",
            ev.processes.iter().filter(|p| p.pid.is_some()).count()
        ),
    )
}

/// What explains finding nothing serving at `at_ns`, when the previous
/// restart (or the start of the run) was at `since_ns`: a service process
/// (not a supervisor) that died of a fault in between, killed by chaos or
/// at a crash point. Nothing else may take the service down: a supervisor
/// that dies, at any step, leaves the incumbent or the successor serving.
pub fn restart_cause(ev: &Evidence, since_ns: u64, at_ns: u64) -> Option<String> {
    let within = |t: u64| t > since_ns && t <= at_ns;
    let service = |name: &str| {
        ev.processes
            .iter()
            .any(|p| p.name == name && p.kind != ProcKind::Supervisor)
    };
    if let Some(k) = ev
        .kills
        .iter()
        .find(|k| within(k.at_ns) && service(&k.process))
    {
        return Some(format!("{} was killed", k.process));
    }
    ev.processes
        .iter()
        .filter(|p| p.kind != ProcKind::Supervisor)
        .find(|p| ev.crash_time(&p.name).is_some_and(within))
        .map(|p| format!("{} died at a crash point", p.name))
}

/// Every restart of the service followed the death of a service process by
/// a fault ([`restart_cause`]).
pub fn check_restarts(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    let mut since = 0;
    for r in ev.restarts {
        if restart_cause(ev, since, r.at_ns).is_none() {
            problems.push(format!(
                "the service was restarted ({}) though no fault killed a service process",
                r.why
            ));
        }
        since = r.at_ns;
    }
    Check::from_problems(
        "restart-explained",
        problems,
        format!(
            "{} restart(s), each after a fault killed a service process",
            ev.restarts.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::ProcessLog;
    use crate::evidence::samples::{kill, log, proc_entry as entry};
    use crate::evidence::{Restart, RunRecord};
    use crate::fixture::ProcEntry;
    use crate::procs::ProcStat;

    fn run(outcome: RunOutcome) -> RunRecord {
        RunRecord {
            supervisor: "supervisor-1".into(),
            successor: "peer-1".into(),
            outcome,
            ..RunRecord::default()
        }
    }

    fn crash_log(process: &str, pid: u32, at_ns: u64) -> ProcessLog {
        let fields = r#","point":"o-after-drain","action":"Exit""#;
        log(process, pid, &[(at_ns, handoff::events::CRASH, fields)])
    }

    fn exits_ok(processes: &[ProcEntry], runs: &[RunRecord], ev: Evidence) -> bool {
        check_exits(&Evidence {
            processes,
            runs,
            ..ev
        })
        .ok
    }

    #[test]
    fn exit_codes_match_the_fake_peer_and_the_supervisor() {
        assert_eq!(SUCCESSOR_NOT_COMMITTED, fake_peers::peer::EXIT_FAILURE);
        assert_eq!(
            SUCCESSOR_EXITED_BEFORE_HELLO,
            fake_peers::misbehaviour::EXIT_BEFORE_HELLO_CODE
        );
        assert_eq!(EXIT_OK, fake_peers::peer::EXIT_OK);
        assert_eq!(
            run_outcome(Some(ExitKind::Code(2)), false),
            RunOutcome::Aborted
        );
        assert_eq!(
            run_outcome(Some(ExitKind::Signal(9)), false),
            RunOutcome::Other
        );
        assert_eq!(
            run_outcome(Some(ExitKind::Signal(9)), true),
            RunOutcome::Killed
        );
    }

    #[test]
    fn exit_99_needs_an_armed_process_and_a_crash_record_line() {
        let mut p = entry(
            "peer-0",
            5,
            ProcKind::ColdStart,
            Some(ExitKind::Code(CRASHED)),
        );
        let record = vec![("o-after-drain".to_string(), 5)];
        assert!(!exits_ok(
            std::slice::from_ref(&p),
            &[],
            Evidence::default()
        ));
        p.armed = Some("o-after-drain".into());
        assert!(!exits_ok(
            std::slice::from_ref(&p),
            &[],
            Evidence::default()
        ));
        let ev = Evidence {
            crash_record: &record,
            ..Evidence::default()
        };
        assert!(exits_ok(std::slice::from_ref(&p), &[], ev));
    }

    #[test]
    fn a_successor_exits_1_only_when_its_run_did_not_commit() {
        let p = entry("peer-1", 6, ProcKind::Successor, Some(ExitKind::Code(1)));
        let ps = std::slice::from_ref(&p);
        assert!(exits_ok(
            ps,
            &[run(RunOutcome::Aborted)],
            Evidence::default()
        ));
        assert!(!exits_ok(
            ps,
            &[run(RunOutcome::Committed)],
            Evidence::default()
        ));
        assert!(!exits_ok(ps, &[], Evidence::default()));
    }

    #[test]
    fn a_successor_exits_3_only_when_told_to() {
        let p = entry("peer-1", 6, ProcKind::Successor, Some(ExitKind::Code(3)));
        let ps = std::slice::from_ref(&p);
        let mut told = run(RunOutcome::Failed);
        assert!(!exits_ok(
            ps,
            std::slice::from_ref(&told),
            Evidence::default()
        ));
        told.successor_exits_before_hello = true;
        assert!(exits_ok(ps, &[told], Evidence::default()));
    }

    #[test]
    fn a_sigkill_needs_a_sender() {
        let mut p = entry("peer-0", 5, ProcKind::ColdStart, Some(ExitKind::Signal(9)));
        assert!(!exits_ok(
            std::slice::from_ref(&p),
            &[],
            Evidence::default()
        ));
        let kills = vec![kill("peer-0", 5, 10)];
        let ev = Evidence {
            kills: &kills,
            ..Evidence::default()
        };
        assert!(exits_ok(std::slice::from_ref(&p), &[], ev));
        p.killed_by_harness = true;
        assert!(exits_ok(std::slice::from_ref(&p), &[], Evidence::default()));
        // A successor whose supervisor died before reaping it.
        let mut n = entry("peer-1", 6, ProcKind::Successor, Some(ExitKind::Signal(9)));
        n.spawned_by = Some("supervisor-1".into());
        let ns = std::slice::from_ref(&n);
        assert!(exits_ok(
            ns,
            &[run(RunOutcome::Killed)],
            Evidence::default()
        ));
        assert!(!exits_ok(
            ns,
            &[run(RunOutcome::Aborted)],
            Evidence::default()
        ));
    }

    #[test]
    fn only_the_incumbent_may_outlive_the_run() {
        let processes = vec![
            entry("peer-0", 5, ProcKind::ColdStart, None),
            entry("peer-1", 6, ProcKind::Successor, None),
        ];
        let stat = |pid| ProcStat {
            pid,
            ppid: 1,
            state: 'S',
            comm: "fake-peer".into(),
        };
        let live = vec![stat(6)];
        let ev = Evidence {
            processes: &processes,
            live: &live,
            final_incumbent: Some(6),
            ..Evidence::default()
        };
        assert!(check_no_leaked_process(&ev).ok);
        let live = vec![stat(6), stat(5), stat(77)];
        let check = check_no_leaked_process(&Evidence { live: &live, ..ev });
        assert!(!check.ok);
        assert!(check.detail.contains("peer-0 (pid 5)"), "{}", check.detail);
        assert!(check.detail.contains("pid 77"), "{}", check.detail);
    }

    #[test]
    fn a_restart_needs_a_service_process_killed_by_a_fault() {
        let processes = vec![
            entry("peer-0", 5, ProcKind::ColdStart, Some(ExitKind::Signal(9))),
            entry(
                "supervisor-1",
                7,
                ProcKind::Supervisor,
                Some(ExitKind::Signal(9)),
            ),
        ];
        let restart = |at_ns| Restart {
            at_ns,
            why: "nothing served after supervisor-1".into(),
        };
        let restarts = vec![restart(100)];
        let base = Evidence {
            processes: &processes,
            restarts: &restarts,
            ..Evidence::default()
        };
        // Nothing died of a fault: the service should have survived.
        assert!(!check_restarts(&base).ok);
        // Only the supervisor was killed: still unexplained.
        let kills = vec![kill("supervisor-1", 7, 50)];
        assert!(
            !check_restarts(&Evidence {
                kills: &kills,
                ..base
            })
            .ok
        );
        // The incumbent was killed before it.
        let kills = vec![kill("peer-0", 5, 50)];
        assert!(
            check_restarts(&Evidence {
                kills: &kills,
                ..base
            })
            .ok
        );
        // One kill explains one restart, not a second one after it.
        let two = vec![restart(100), restart(200)];
        assert!(
            !check_restarts(&Evidence {
                kills: &kills,
                restarts: &two,
                ..base
            })
            .ok
        );
        // A crash point in the incumbent explains it too.
        let logs = vec![crash_log("peer-0", 5, 80)];
        assert!(
            check_restarts(&Evidence {
                logs: &logs,
                ..base
            })
            .ok
        );
        // A crash after the restart explains nothing.
        let logs = vec![crash_log("peer-0", 5, 180)];
        assert!(
            !check_restarts(&Evidence {
                logs: &logs,
                ..base
            })
            .ok
        );
    }
}
