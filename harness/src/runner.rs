//! The one runner: executes any [`Scenario`] against real processes and
//! returns a [`Report`] with the outcome, every process's events and the
//! invariant results.
//!
//! The shape of every run:
//!
//! 1. cold-start the incumbent (`peer-0`) on the listeners the fixture holds;
//!    if an armed `o-` point killed it, restart the service (a clean cold
//!    start, as systemd's `Restart=` would);
//! 2. start the writing client;
//! 3. run each planned handoff (one `handoff-supervisor` each), wait for it
//!    to exit, then wait until the service settles: one incumbent, or none,
//!    in which case the service is restarted;
//! 4. when a crash fired or a journal was left behind, run one more,
//!    unarmed, supervisor: it recovers from the journal and must commit;
//! 5. stop the client and check every invariant.
//!
//! Every wait is on a condition with a deadline that names what it waited
//! for; nothing sleeps to synchronise.

use std::time::Duration;

use handoff::crash::CrashSide;
use handoff::events;
use handoff::util::monotonic_ns;

use crate::client::{Client, ClientReport};
use crate::evidence::{Evidence, RunRecord, read_crash_record};
use crate::exit_code::RunOutcome;
use crate::fixture::{Fixture, Settled, SupervisorHandle};
use crate::invariants::{self, Check};
use crate::reaper::ExitKind;
use crate::report::{HandoffRecord, JournalView, Report, SecondSupervisor};
use crate::rules;
use crate::scenario::{FinalHandoff, Handoff, Scenario};
use crate::timeline;

/// Run `scenario` and report. Never panics on a scenario failure: the report
/// says what failed; a failing run keeps its directory.
pub fn run(scenario: &Scenario) -> Report {
    let mut report = Report::new(scenario);
    let mut fx = match Fixture::new(&scenario.name) {
        Ok(fx) => fx,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.dir = fx.root().to_path_buf();
    let mut client: Option<Client> = None;
    let driven = drive(scenario, &mut fx, &mut report, &mut client);
    let client_report = client.map(Client::stop);
    if let Err(e) = driven {
        report.error = Some(e);
    }
    if report.error.is_none() {
        final_checks(scenario, &mut fx, &mut report, client_report.as_ref());
    }
    fx.teardown();
    post_mortem_checks(scenario, &fx, &mut report);
    report.collect(&fx);
    report.dir_guard = fx.take_dir();
    if !report.passed() {
        report.keep_dir();
    }
    report
}

fn crash_env(
    scenario: &Scenario,
    side: CrashSide,
    handoff: Option<usize>,
) -> Vec<(String, String)> {
    if scenario.sweep {
        // Every point of this side, as a no-op delay: each one reached logs
        // a `handoff.crash` event and the process carries on.
        let spec: Vec<String> = handoff::crash::REGISTRY
            .iter()
            .filter(|p| p.side == side)
            .map(|p| format!("{}=delay(0)", p.name))
            .collect();
        return vec![(handoff::crash::ENV_CRASH_AT.to_string(), spec.join(","))];
    }
    match &scenario.crash {
        Some(c)
            if c.side() == Some(side)
                && (side == CrashSide::Incumbent || handoff == Some(c.handoff)) =>
        {
            vec![(handoff::crash::ENV_CRASH_AT.to_string(), c.spec())]
        }
        _ => vec![],
    }
}

fn drive(
    s: &Scenario,
    fx: &mut Fixture,
    report: &mut Report,
    client: &mut Option<Client>,
) -> Result<(), String> {
    // 1. The first incumbent.
    let mut env = s.timeouts.service_env();
    env.extend(s.incumbent_env.iter().cloned());
    env.extend(crash_env(s, CrashSide::Incumbent, None));
    let first = fx.cold_start(&env)?;
    let settled = fx.settle(s.timeouts.settle_bound())?;
    let mut incumbent = match settled {
        Settled::Incumbent { name, .. } => name,
        Settled::NoService => match restart_cause(fx, report) {
            Some(_) => {
                report.restarts.push(format!("{first} died at start-up"));
                restart(s, fx, report)?
            }
            None => {
                return Err(format!(
                    "the first incumbent ({first}) died at start-up; see {first}.stderr"
                ));
            }
        },
    };
    report.first_lock_inode = std::fs::metadata(fx.lock_file())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok();

    // 2. The client.
    if s.client {
        let addr = fx
            .addr(crate::fixture::LISTENER_NAME)
            .ok_or("the fixture has no listener")?;
        *client = Some(Client::start(addr));
    }

    // 3. The planned handoffs.
    for (i, h) in s.handoffs.iter().enumerate() {
        incumbent = run_handoff(s, fx, report, Some(i), h, &incumbent)?;
    }

    // 4. Recovery: a fresh, unarmed supervisor must recover and commit.
    let crashed = report
        .handoffs
        .iter()
        .any(|h| h.outcome == Some(RunOutcome::Crashed))
        || !report.restarts.is_empty()
        || std::fs::read_to_string(fx.crash_record()).is_ok_and(|t| !t.trim().is_empty());
    let needed = match s.final_handoff {
        FinalHandoff::Always => true,
        FinalHandoff::Never => false,
        FinalHandoff::WhenNeeded => crashed || fx.journal().exists(),
    };
    if needed {
        incumbent = run_handoff(s, fx, report, None, &s.recovery, &incumbent)?;
    }
    report.final_incumbent = Some(incumbent);
    Ok(())
}

/// What explains that nothing serves now ([`rules::restart_cause`]): a
/// service process died of a fault since the last restart. Only a crash
/// point armed in a service process may take the service down; when a
/// supervisor crashes, or nothing does, the incumbent or the successor must
/// be serving afterwards.
fn restart_cause(fx: &Fixture, report: &Report) -> Option<String> {
    let logs = fx.logs();
    let ev = Evidence {
        logs: &logs,
        processes: fx.processes(),
        ..Evidence::default()
    };
    rules::restart_cause(&ev, report.last_restart_ns, monotonic_ns())
}

/// Cold-start a clean service process after the service died.
fn restart(s: &Scenario, fx: &mut Fixture, report: &mut Report) -> Result<String, String> {
    report.last_restart_ns = monotonic_ns();
    let name = fx.cold_start(&s.timeouts.service_env())?;
    report.restarts.push(format!("restarted as {name}"));
    match fx.settle(s.timeouts.settle_bound())? {
        Settled::Incumbent { name, .. } => Ok(name),
        Settled::NoService => Err(format!(
            "the restarted service ({name}) died too; see {name}.stderr"
        )),
    }
}

fn run_handoff(
    s: &Scenario,
    fx: &mut Fixture,
    report: &mut Report,
    index: Option<usize>,
    h: &Handoff,
    incumbent: &str,
) -> Result<String, String> {
    let mut supervisor_env = s.timeouts.service_env();
    supervisor_env.extend(crash_env(s, CrashSide::Supervisor, index));
    let mut successor_env = h.successor_env.clone();
    successor_env.extend(crash_env(s, CrashSide::Successor, index));
    let mut timeouts = s.timeouts.clone();
    if let Some(ms) = h.drain_grace_ms {
        timeouts.drain_grace_ms = ms;
    }
    let args = timeouts.supervisor_args();
    let bound = Duration::from_millis(s.timeouts.supervisor_run_bound_ms());

    let handle: SupervisorHandle =
        fx.spawn_supervisor(&args, &supervisor_env, &successor_env, h.successor)?;
    let mut record = HandoffRecord::new(&handle, index, h);

    if h.second_supervisor {
        // While the incumbent drains for the first supervisor, a second one
        // must be refused, clearly, and leave the first one's handoff alone.
        fx.wait_for_event(incumbent, events::INCUMBENT_DRAIN, bound)?;
        let journal_before = fx.journal().exists();
        let second = fx.spawn_supervisor(
            &args,
            &s.timeouts.service_env(),
            &h.successor_env,
            h.successor,
        )?;
        let exit = fx.wait_exit(&second.name, bound)?;
        // Only meaningful while the first handoff is still draining: its
        // journal (phase Negotiating) must then still be there.
        let first_still_draining = crate::reaper::exit_of(handle.pid).is_none()
            && !fx
                .logs()
                .iter()
                .any(|l| l.process == incumbent && l.has(events::INCUMBENT_DRAINED));
        let stderr = std::fs::read_to_string(fx.root().join(format!("{}.stderr", second.name)))
            .unwrap_or_default();
        record.second = Some(SecondSupervisor {
            supervisor: second.name.clone(),
            exit: exit.kind,
            outcome: code_outcome(exit.kind),
            stderr_mentions_refusal: ["refused", "in progress", "already"]
                .iter()
                .any(|w| stderr.to_ascii_lowercase().contains(w)),
            journal_kept: !journal_before || !first_still_draining || fx.journal().exists(),
            stderr,
        });
    }

    let exit = fx.wait_exit(&handle.name, bound)?;
    record.exit = Some(exit.kind);
    record.outcome = code_outcome(exit.kind);
    record.stdout = std::fs::read_to_string(fx.root().join(format!("{}.stdout", handle.name)))
        .unwrap_or_default();
    record.stderr = std::fs::read_to_string(fx.root().join(format!("{}.stderr", handle.name)))
        .unwrap_or_default();

    // Settle, recording the journal as the crash left it.
    let settled = fx.settle(s.timeouts.settle_bound());
    if fx.journal().exists() {
        record.journal_left = true;
        if s.inspect_journal {
            record.journal = Some(read_journal(fx));
        }
    }
    let next = match settled {
        Ok(Settled::Incumbent { name, .. }) => {
            record.settled = Some(name.clone());
            Ok(name)
        }
        Ok(Settled::NoService) => {
            record.settled = Some("no service".into());
            report
                .restarts
                .push(format!("no live incumbent after {}", handle.name));
            if restart_cause(fx, report).is_some() {
                restart(s, fx, report)
            } else {
                Err(format!(
                    "no process serves after {}, yet no service process was made to crash: \
                     the incumbent and the successor both gave up",
                    handle.name
                ))
            }
        }
        Err(e) => Err(e),
    };
    report.handoffs.push(record);
    next
}

fn code_outcome(kind: ExitKind) -> Option<RunOutcome> {
    match kind {
        ExitKind::Code(c) => RunOutcome::of_code(c),
        ExitKind::Signal(_) => None,
    }
}

fn read_journal(fx: &Fixture) -> JournalView {
    match handoff::StateJournal::read(&fx.journal()) {
        Ok(Some(j)) => {
            let name = |pid: u32| {
                fx.name_of(pid)
                    .map(str::to_string)
                    .unwrap_or_else(|| "<not a scenario process>".into())
            };
            JournalView {
                phase: format!("{:?}", j.phase),
                incumbent: name(j.incumbent_pid),
                successor: j.successor_pid.map(name),
                error: None,
            }
        }
        Ok(None) => JournalView {
            phase: "absent".into(),
            incumbent: String::new(),
            successor: None,
            error: None,
        },
        Err(e) => JournalView {
            phase: "unreadable".into(),
            incumbent: String::new(),
            successor: None,
            error: Some(e.to_string()),
        },
    }
}

/// Checks that need the service still running: invariants 1–5.
fn final_checks(
    s: &Scenario,
    fx: &mut Fixture,
    report: &mut Report,
    client: Option<&ClientReport>,
) {
    let incumbent = report.final_incumbent.clone().unwrap_or_default();
    let Some(pid) = fx.process(&incumbent).and_then(|p| p.pid) else {
        report.error = Some(format!(
            "the final incumbent {incumbent:?} has no known pid"
        ));
        return;
    };
    let logs = fx.logs();
    let mut checks = vec![invariants::check_flock_intervals(&logs)];
    checks.extend(invariants::serving_checks(
        fx,
        pid,
        &incumbent,
        report.first_lock_inode,
        client.map(|c| (c, c)),
        &invariants::FAKE_PEER,
    ));
    checks.push(check_journal(fx, report));
    checks.push(check_outcomes(s, report));
    report.checks.extend(checks);
}

/// Invariant 5: no journal at the end, and every journal a run left behind
/// was recovered by the next supervisor, which then committed.
fn check_journal(fx: &Fixture, report: &Report) -> Check {
    let mut problems = Vec::new();
    if fx.journal().exists() {
        problems.push("a journal is left at the end".to_string());
    }
    let logs = fx.logs();
    for (i, h) in report.handoffs.iter().enumerate() {
        // DESIGN.md section 5, "fix, don't copy": the journal names the
        // incumbent (from its Hello), never the supervisor itself.
        if let Some(j) = &h.journal
            && !j.incumbent.is_empty()
            && !j.incumbent.starts_with("peer-")
        {
            problems.push(format!(
                "the journal {} left names {} as the incumbent, not a service process",
                h.supervisor, j.incumbent
            ));
        }
        if !h.journal_left {
            continue;
        }
        match report.handoffs.get(i + 1) {
            None => problems.push(format!(
                "{} left a journal and no supervisor ran after it",
                h.supervisor
            )),
            Some(next) => {
                let recovered = logs
                    .iter()
                    .find(|l| l.process == next.supervisor)
                    .is_some_and(|l| l.has(events::RECOVER));
                if !recovered {
                    problems.push(format!(
                        "{} left a journal but {} logged no {}",
                        h.supervisor,
                        next.supervisor,
                        events::RECOVER
                    ));
                }
                if next.outcome != Some(RunOutcome::Committed) {
                    problems.push(format!(
                        "{} recovered a journal but did not commit ({:?})",
                        next.supervisor, next.exit
                    ));
                }
            }
        }
    }
    Check::from_problems("journal", problems, "absent at the end".into())
}

/// Each supervisor run ended as the scenario allows; a second supervisor was
/// refused clearly without disturbing the first.
fn check_outcomes(_s: &Scenario, report: &Report) -> Check {
    let mut problems = Vec::new();
    for h in &report.handoffs {
        match h.outcome {
            Some(o) if h.expect.contains(&o) => {}
            _ => problems.push(format!(
                "{} ended with {} (outcome {:?}); expected one of {:?}{}",
                h.supervisor,
                h.exit.map_or("no exit".into(), |e| e.to_string()),
                h.outcome,
                h.expect,
                timeline::supervisor_says(&h.stdout, &h.stderr)
                    .map(|l| format!("; it said: {l}"))
                    .unwrap_or_default()
            )),
        }
        if let Some(second) = &h.second {
            if second.outcome != Some(RunOutcome::Failed) {
                problems.push(format!(
                    "the second supervisor {} ended with {}; expected a refusal (exit 3)",
                    second.supervisor, second.exit
                ));
            }
            if !second.stderr_mentions_refusal {
                problems.push(format!(
                    "the second supervisor's error does not say it was refused: {:?}",
                    timeline::supervisor_says("", &second.stderr).unwrap_or_default()
                ));
            }
        }
    }
    Check::from_problems("outcome", problems, "every run ended as expected".into())
}

/// Checks that need every exit: invariant 6.
fn post_mortem_checks(s: &Scenario, fx: &Fixture, report: &mut Report) {
    let crash_record = read_crash_record(&fx.crash_record());
    report.checks.push(check_crash_fired(s, fx, &crash_record));
    let runs = run_records(report);
    report.checks.push(rules::check_exits(&Evidence {
        processes: fx.processes(),
        runs: &runs,
        crash_record: &crash_record,
        ..Evidence::default()
    }));
}

/// Each supervisor run (a second supervisor's too) as the evidence records
/// it.
fn run_records(report: &Report) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for h in &report.handoffs {
        runs.push(RunRecord {
            index: runs.len(),
            planned: h.planned.is_some(),
            supervisor: h.supervisor.clone(),
            successor: h.successor.clone(),
            successor_exits_before_hello: h
                .successor_env
                .iter()
                .any(|(k, v)| k == "FAKE_EXIT_BEFORE_HELLO" && v == "1"),
            exit: h.exit,
            outcome: rules::run_outcome(h.exit, false),
            journal_left: h.journal_left,
            settled: h.settled.clone(),
            ..RunRecord::default()
        });
        if let Some(second) = &h.second {
            runs.push(RunRecord {
                index: runs.len(),
                supervisor: second.supervisor.clone(),
                exit: Some(second.exit),
                outcome: rules::run_outcome(Some(second.exit), false),
                ..RunRecord::default()
            });
        }
    }
    runs
}

/// Invariant 6a: the armed point fired, in the armed process, which died of
/// it (exit 99); nothing else fired.
fn check_crash_fired(s: &Scenario, fx: &Fixture, fired: &[(String, u32)]) -> Check {
    let mut problems = Vec::new();
    if s.sweep {
        if !fired.is_empty() {
            problems.push(format!(
                "a reachability sweep only delays, yet {fired:?} fired"
            ));
        }
        return Check::from_problems("crash-point-fired", problems, "sweep".into());
    }
    let Some(crash) = &s.crash else {
        if !fired.is_empty() {
            problems.push(format!("no point was armed, yet {fired:?} fired"));
        }
        return Check::from_problems("crash-point-fired", problems, "none armed".into());
    };
    let armed: Vec<&crate::fixture::ProcEntry> = fx
        .processes()
        .iter()
        .filter(|p| p.armed.is_some())
        .collect();
    match fired {
        [(point, pid)] if point == crash.point => {
            let name = fx.name_of(*pid);
            if !armed.iter().any(|p| Some(p.name.as_str()) == name) {
                problems.push(format!(
                    "{point} fired in pid {pid} ({name:?}), not in an armed process"
                ));
            }
            if let Some(p) = name.and_then(|n| fx.process(n)) {
                if let Some(exit) = p.exit
                    && exit.kind != ExitKind::Code(handoff::crash::CRASH_EXIT_CODE)
                {
                    problems.push(format!(
                        "{} fired {point} but ended with {}",
                        p.name, exit.kind
                    ));
                }
                let logged = fx
                    .logs()
                    .iter()
                    .find(|l| l.process == p.name)
                    .is_some_and(|l| {
                        l.events.iter().any(|e| {
                            e.name == events::CRASH && e.str_field("point") == Some(crash.point)
                        })
                    });
                if !logged {
                    problems.push(format!(
                        "{} fired {point} but its event log has no {} event",
                        p.name,
                        events::CRASH
                    ));
                }
            }
        }
        [] => problems.push(format!(
            "{} was armed in {:?} but never fired: if it is reachable only under a fault, \
             add it to the reach table in harness/src/catalog.rs",
            crash.point,
            armed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
        )),
        other => problems.push(format!(
            "expected exactly {} to fire once; the crash record says {other:?}",
            crash.point
        )),
    }
    Check::from_problems(
        "crash-point-fired",
        problems,
        format!("{} fired", crash.point),
    )
}
