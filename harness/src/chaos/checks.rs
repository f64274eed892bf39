//! The checks chaos adds to [`crate::invariants`] (which it runs too).
//!
//! The scenario suite knows what each scenario should do; chaos does not,
//! so its checks are stated over what happened, from the evidence an
//! episode leaves: every process's event log and exit, the kills it sent,
//! the crash record, the traffic's accounting. Each is a plain function
//! over that evidence returning a [`Check`] (no I/O), so each is tested on
//! hand-written logs below.

use std::collections::{BTreeMap, HashMap};

use handoff::events;

use super::schedule::FaultKind;
use super::traffic::{FailedRequest, Failure, ProberReport, ReaderReport};
use crate::evidence::{Evidence, RunOutcome, RunRecord};
use crate::fixture::ProcKind;
use crate::invariants::Check;

/// Slack for comparing a reap time (an upper bound on a death) with a
/// client's observation of it.
const REAP_SLACK_NS: u64 = 1_000_000_000;

/// The points a `HANDOFF_CRASH_AT` spec makes exit (a `delay` or `hang`
/// entry is a stall, not a crash), by the library's own parser.
pub fn exiting_points(spec: &str) -> Vec<&'static str> {
    let armed = handoff::crash::parse_spec(spec).unwrap_or_default();
    armed
        .into_iter()
        .filter(|a| a.action == handoff::crash::Action::Exit)
        .map(|a| a.point)
        .collect()
}

/// Invariant 6 (crash points): every point that fired fired in a process
/// armed with it, and every exit 99 has its crash-record line.
pub fn check_crash_points(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    for (point, pid) in ev.crash_record {
        match ev.process_by_pid(*pid) {
            Some(p) => {
                let armed_with = p
                    .armed
                    .as_deref()
                    .is_some_and(|spec| exiting_points(spec).contains(&point.as_str()));
                if !armed_with {
                    problems.push(format!(
                        "{point} fired in {} (pid {pid}), which was armed with {:?}",
                        p.name, p.armed
                    ));
                }
            }
            None => problems.push(format!(
                "{point} fired in pid {pid}, not a process of the episode"
            )),
        }
    }
    for p in ev.processes {
        if let (Some(exit), Some(pid)) = (p.exit, p.pid)
            && exit.kind == crate::reaper::ExitKind::Code(crate::exit_code::CRASHED)
            && !ev.crash_record.iter().any(|(_, q)| *q == pid)
        {
            problems.push(format!(
                "{} exited 99 but the crash record has no line for it",
                p.name
            ));
        }
    }
    Check::from_problems(
        "crash-point-fired",
        problems,
        format!(
            "{} point(s) fired, each in its armed process",
            ev.crash_record.len()
        ),
    )
}

/// DESIGN.md section 3: a supervisor goes past the successor's `Hello` only
/// if the pid it announces is the child it spawned.
pub fn check_successor_identity(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    for log in ev
        .logs
        .iter()
        .filter(|l| l.process.starts_with("supervisor-"))
    {
        let spawned = log
            .events
            .iter()
            .find(|e| e.name == events::SPAWN)
            .and_then(|e| e.fields.get("successor_pid").and_then(|v| v.as_u64()));
        let announced = log
            .events
            .iter()
            .find(|e| e.name == events::HELLO && e.str_field("role") == Some("successor"))
            .and_then(|e| e.fields.get("peer_pid").and_then(|v| v.as_u64()));
        if let (Some(spawned), Some(announced)) = (spawned, announced)
            && spawned != announced
        {
            problems.push(format!(
                "{} accepted a successor Hello announcing pid {announced}; the child it spawned is \
                 pid {spawned}",
                log.process
            ));
        }
    }
    Check::from_problems(
        "successor-identity",
        problems,
        "every accepted successor Hello named the spawned child".into(),
    )
}

/// DESIGN.md section 3 ("N sends Ready before it re-binds the control
/// socket path, so an abort before Ready never leaves O's path pointing at
/// a dead successor"), seen from the incumbent: an incumbent that conceded
/// to its successor (`superseded`) did so after that successor sent `Ready`.
pub fn check_superseded_after_ready(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    for log in ev.logs {
        for sup in log
            .events
            .iter()
            .filter(|e| e.name == events::INCUMBENT_SUPERSEDED)
        {
            let id = sup.str_field("handoff_id").unwrap_or_default();
            let ready = ev.logs.iter().flat_map(|l| l.events.iter()).any(|e| {
                e.name == events::SUCCESSOR_READY
                    && e.str_field("handoff_id") == Some(id)
                    && e.mono_ns <= sup.mono_ns
            });
            if !ready {
                problems.push(format!(
                    "{} conceded handoff {id} to its successor (superseded), but no successor had \
                     sent Ready: the control socket path was rebound before Ready",
                    log.process
                ));
            }
        }
    }
    Check::from_problems(
        "superseded-only-after-ready",
        problems,
        "every concession followed the successor's Ready".into(),
    )
}

/// Invariant 5 (chaos form): a run that left a journal was followed by a
/// supervisor that recovered it. (That the journal is absent at the end is
/// checked while the service runs.)
pub fn check_journal_recovered(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    for (i, run) in ev.runs.iter().enumerate() {
        if !run.journal_left {
            continue;
        }
        match ev.runs.get(i + 1) {
            None => problems.push(format!(
                "{} left a journal and no supervisor ran after it",
                run.supervisor
            )),
            Some(next) => {
                if !ev
                    .events_of(&next.supervisor)
                    .any(|e| e.name == events::RECOVER)
                {
                    problems.push(format!(
                        "{} left a journal but {} logged no {}",
                        run.supervisor,
                        next.supervisor,
                        events::RECOVER
                    ));
                }
            }
        }
    }
    let left = ev.runs.iter().filter(|r| r.journal_left).count();
    Check::from_problems(
        "journal-recovered",
        problems,
        format!("{left} journal(s) left by a dead supervisor, each recovered by the next"),
    )
}

/// What may explain a run that did not commit.
fn faults_during(ev: &Evidence, run: &RunRecord) -> Vec<String> {
    let (from, to) = (run.window_start_ns, run.window_end_ns);
    let mut why = Vec::new();
    for k in ev.kills.iter().filter(|k| k.at_ns >= from && k.at_ns <= to) {
        why.push(format!("{} was killed", k.process));
    }
    for k in ev.kills.iter().filter(|k| k.run == run.index && k.idle) {
        why.push(format!("{} was killed while idle", k.process));
    }
    let names = [
        Some(&run.supervisor),
        Some(&run.successor),
        run.incumbent.as_ref(),
    ];
    for name in names.into_iter().flatten() {
        if let Some(t) = ev.crash_time(name)
            && t >= from
            && t <= to
        {
            why.push(format!("{name} crashed at a crash point"));
        }
    }
    if let Some(incumbent) = &run.incumbent
        && ev.events_of(incumbent).any(|e| {
            e.name == events::INCUMBENT_SEAL_FAILED && e.mono_ns >= from && e.mono_ns <= to
        })
    {
        why.push("the incumbent's seal failed (FAKE_SEAL_FAIL)".into());
    }
    if run.planned {
        for f in ev.schedule.into_iter().flat_map(|s| s.faults_of(run.index)) {
            if let FaultKind::Misbehave(m) = f.kind
                && m.host() == super::stage::Party::Successor
            {
                why.push(format!("the successor misbehaves ({m:?})"));
            }
        }
    }
    if run.incumbent.is_none() {
        why.push("nothing served when it started".into());
    }
    if let Some(t) = ev.timeouts {
        for (phase, took_ns) in slow_journal_writes(ev, &run.supervisor, t.liveness_ms) {
            why.push(format!(
                "its durable journal write ({phase}) took {} ms, past the {} ms the incumbent \
                 waits for a frame: the incumbent gave the session up, as it must",
                took_ns / 1_000_000,
                t.liveness_ms
            ));
        }
    }
    why
}

/// The journal writes `supervisor` waited for (`handoff.journal` recorded,
/// then `durable=true` for the same phase) that took longer than
/// `liveness_ms`: the incumbent hears nothing meanwhile and drops the
/// session, so the handoff fails without any fault. A slow `fsync` on a
/// loaded machine is the environment, not a protocol failure.
pub fn slow_journal_writes(
    ev: &Evidence,
    supervisor: &str,
    liveness_ms: u64,
) -> Vec<(String, u64)> {
    let mut recorded: HashMap<String, u64> = HashMap::new();
    let mut slow = Vec::new();
    for e in ev
        .events_of(supervisor)
        .filter(|e| e.name == events::JOURNAL)
    {
        let Some(phase) = e.str_field("phase") else {
            continue;
        };
        let durable = e.fields.get("durable").and_then(|v| v.as_bool()) == Some(true);
        if !durable {
            recorded.insert(phase.to_string(), e.mono_ns);
        } else if let Some(start) = recorded.remove(phase) {
            let took = e.mono_ns.saturating_sub(start);
            if took > liveness_ms * 1_000_000 {
                slow.push((phase.to_string(), took));
            }
        }
    }
    slow
}

/// Each supervisor run ended as what happened during it allows: a run no
/// fault touched commits; a run whose successor is an impostor is refused
/// before anything changes (no `PrepareHandoff`); the last run, the clean
/// one, commits.
pub fn check_outcomes(ev: &Evidence) -> Check {
    let mut problems = Vec::new();
    for run in ev.runs {
        let dead = matches!(run.outcome, RunOutcome::Killed | RunOutcome::Crashed);
        if run.impostor && !dead {
            let prepared = ev
                .events_of(&run.supervisor)
                .any(|e| e.name == events::PREPARE);
            if run.outcome != RunOutcome::Failed || prepared {
                problems.push(format!(
                    "{} was given an impostor successor (its Hello names another pid) and ended \
                     {:?}{}; it must refuse it at the handshake, before anything changes",
                    run.supervisor,
                    run.outcome,
                    if prepared {
                        ", after asking the incumbent to drain"
                    } else {
                        ""
                    }
                ));
            }
            continue;
        }
        if run.outcome == RunOutcome::Committed {
            continue;
        }
        let why = faults_during(ev, run);
        if why.is_empty() {
            problems.push(format!(
                "{} ended {:?} ({}) though no fault touched it{}",
                run.supervisor,
                run.outcome,
                run.exit.map_or("no exit".into(), |e| e.to_string()),
                run.stderr_tail
                    .as_deref()
                    .map(|l| format!("; it said: {l}"))
                    .unwrap_or_default()
            ));
        }
    }
    match ev.runs.last() {
        Some(last) if last.outcome == RunOutcome::Committed && !last.planned => {}
        Some(last) => problems.push(format!(
            "the episode did not end with a clean handoff that commits (last run {} ended {:?})",
            last.supervisor, last.outcome
        )),
        None => problems.push("no supervisor ran".into()),
    }
    let committed = ev
        .runs
        .iter()
        .filter(|r| r.outcome == RunOutcome::Committed)
        .count();
    Check::from_problems(
        "outcome",
        problems,
        format!(
            "{} run(s), {committed} committed; every other one explained by a fault",
            ev.runs.len()
        ),
    )
}

/// Why a failed request failed, once attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The process holding the connection died while it was open: killed
    /// (chaos or a crash point), or a successor whose handoff did not
    /// commit (it exits, or its supervisor kills it).
    HolderKilled,
    /// The process holding the connection drained for a handoff while it
    /// was open (it closes idle connections; requests in flight finish).
    HolderHandedOff,
    /// Nothing explains it.
    Unexplained,
}

/// The lifetime facts of one service process, for attribution.
#[derive(Debug, Clone, Default)]
struct Fate {
    killed_ns: Option<u64>,
    crashed_ns: Option<u64>,
    drains_ns: Vec<u64>,
    exited_ns: Option<u64>,
    /// A successor whose handoff did not commit: it exits (or its
    /// supervisor kills it) and closes what it accepted after `Begin`.
    gave_up: bool,
}

fn fates(ev: &Evidence) -> HashMap<u32, Fate> {
    let mut out: HashMap<u32, Fate> = HashMap::new();
    for p in ev
        .processes
        .iter()
        .filter(|p| p.kind != ProcKind::Supervisor)
    {
        let Some(pid) = p.pid else { continue };
        let fate = out.entry(pid).or_default();
        fate.killed_ns = ev.killed_by_chaos(pid).map(|k| k.at_ns);
        fate.crashed_ns = ev.crash_time(&p.name);
        fate.drains_ns = ev
            .events_of(&p.name)
            .filter(|e| e.name == events::INCUMBENT_DRAIN)
            .map(|e| e.mono_ns)
            .collect();
        fate.exited_ns = p.exit.map(|e| e.reaped_mono_ns);
        fate.gave_up = p.kind == ProcKind::Successor
            && ev
                .run_of_successor(&p.name)
                .is_none_or(|r| r.outcome != RunOutcome::Committed);
    }
    out
}

fn attribute(f: &FailedRequest, fates: &HashMap<u32, Fate>) -> Cause {
    if f.failure == Failure::Refused || f.failure == Failure::Stalled {
        return Cause::Unexplained;
    }
    let within = |t: Option<u64>| t.is_some_and(|t| t >= f.connected_ns && t <= f.failed_ns);
    let died = |fate: &Fate| {
        within(fate.killed_ns)
            || within(fate.crashed_ns)
            || fate
                .exited_ns
                .is_some_and(|t| t >= f.connected_ns && t <= f.failed_ns + REAP_SLACK_NS)
                && (fate.killed_ns.is_some() || fate.crashed_ns.is_some() || fate.gave_up)
    };
    let drained = |fate: &Fate| {
        fate.drains_ns
            .iter()
            .any(|t| *t <= f.failed_ns && *t >= f.connected_ns)
    };
    let candidates: Vec<&Fate> = match f.holder {
        Some(pid) => fates.get(&pid).into_iter().collect(),
        // The connection failed before its holder said who it is: any
        // service process that died or drained meanwhile may have held it.
        None => fates.values().collect(),
    };
    if candidates.iter().any(|fate| died(fate)) {
        Cause::HolderKilled
    } else if candidates.iter().any(|fate| drained(fate)) {
        Cause::HolderHandedOff
    } else {
        Cause::Unexplained
    }
}

/// The client-side accounting of one episode.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    /// Requests that got their answer (the reader's; the writer's acks are
    /// counted by [`crate::invariants::check_acked_writes`]).
    pub answered: u64,
    /// Failed requests by cause.
    pub failed: BTreeMap<String, u64>,
    /// Connections that ended under the reader and were replaced (the
    /// request, if any, sent again within its deadline), by cause.
    pub retried: BTreeMap<String, u64>,
    /// `ECONNREFUSED` seen by the reader, the writer and the prober.
    pub refused: u64,
}

/// The client-side accounting: every request was answered, or failed only
/// because the process holding its connection was killed or was handing
/// off (it drained); every connection that ended under the reader (and was
/// replaced, its request retried) ended for the same reasons; never
/// refused; no read returned something other than the acknowledged value.
pub fn check_client_accounting(
    ev: &Evidence,
    reader: Option<&ReaderReport>,
    prober: &ProberReport,
    writer_refusals: u64,
) -> (Check, Accounting) {
    let mut problems = Vec::new();
    let mut acc = Accounting {
        refused: writer_refusals + prober.refused_at_ns.len() as u64,
        ..Accounting::default()
    };
    if !prober.refused_at_ns.is_empty() {
        problems.push(format!(
            "{} connect(s) of the prober refused: the listening socket was not held throughout",
            prober.refused_at_ns.len()
        ));
    }
    if writer_refusals > 0 {
        problems.push(format!(
            "{writer_refusals} connect(s) of the writer refused"
        ));
    }
    if let Some(r) = reader {
        acc.answered = r.acked.len() as u64 + r.reads_ok;
        let fates = fates(ev);
        let mut unexplained = Vec::new();
        for f in &r.failed {
            let cause = attribute(f, &fates);
            if f.failure == Failure::Refused {
                acc.refused += 1;
            }
            *acc.failed.entry(format!("{cause:?}")).or_default() += 1;
            if cause == Cause::Unexplained {
                unexplained.push(f);
            }
        }
        let unkept = r.failed_total - r.failed.len() as u64;
        if unkept > 0 {
            *acc.failed.entry("NotKept".into()).or_default() += unkept;
        }
        let mut closed_unexplained = Vec::new();
        for f in &r.retried {
            let cause = attribute(f, &fates);
            *acc.retried.entry(format!("{cause:?}")).or_default() += 1;
            if cause == Cause::Unexplained {
                closed_unexplained.push(f);
            }
        }
        let unkept = r.retried_total - r.retried.len() as u64;
        if unkept > 0 {
            *acc.retried.entry("NotKept".into()).or_default() += unkept;
        }
        let name = |pid: Option<u32>| {
            pid.and_then(|p| ev.process_by_pid(p))
                .map_or_else(|| format!("{pid:?}"), |p| p.name.clone())
        };
        let examples = |list: &[&FailedRequest]| {
            list.iter()
                .take(3)
                .map(|f| {
                    format!(
                        "{:?} on a connection held by {}: {:?}",
                        f.request,
                        name(f.holder),
                        f.failure
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !unexplained.is_empty() {
            problems.push(format!(
                "{} request(s) failed with no kill or handoff to explain it, e.g. {}",
                unexplained.len(),
                examples(&unexplained)
            ));
        }
        if !closed_unexplained.is_empty() {
            problems.push(format!(
                "{} connection(s) of the reader ended (the request retried on a new one) with no \
                 kill or handoff to explain it, e.g. {}",
                closed_unexplained.len(),
                examples(&closed_unexplained)
            ));
        }
        for m in r.mismatches.iter().take(3) {
            problems.push(format!(
                "GET {} answered {:?} by {}; the acknowledged value is {:?}",
                m.key,
                m.got,
                m.holder
                    .and_then(|p| ev.process_by_pid(p))
                    .map_or("?", |p| p.name.as_str()),
                m.expected
            ));
        }
        if r.mismatches.len() > 3 {
            problems.push(format!("{} read mismatch(es) in all", r.mismatches.len()));
        }
    }
    let detail = format!(
        "{} answered, failed {:?}, connections closed and retried {:?}, {} refused",
        acc.answered, acc.failed, acc.retried, acc.refused
    );
    (
        Check::from_problems("client-accounting", problems, detail),
        acc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::ProcessLog;
    use crate::evidence::samples::{kill, log, proc_entry};
    use crate::reaper::ExitKind;

    #[test]
    fn a_supervisor_that_accepts_the_wrong_pid_is_caught() {
        let good = log(
            "supervisor-1",
            10,
            &[
                (1, events::SPAWN, r#","successor_pid":11"#),
                (2, events::HELLO, r#","role":"successor","peer_pid":11"#),
            ],
        );
        let bad = log(
            "supervisor-2",
            20,
            &[
                (1, events::SPAWN, r#","successor_pid":21"#),
                (2, events::HELLO, r#","role":"successor","peer_pid":1"#),
            ],
        );
        let ev = |logs: &[ProcessLog]| {
            let logs = logs.to_vec();
            let ev = Evidence {
                logs: &logs,
                ..Evidence::default()
            };
            check_successor_identity(&ev).ok
        };
        assert!(ev(std::slice::from_ref(&good)));
        assert!(!ev(&[good, bad]));
    }

    #[test]
    fn conceding_before_ready_is_caught() {
        let id = r#","handoff_id":"0f1e2d3c-4b5a-4978-8877-665544332211""#;
        let o = log("peer-0", 1, &[(50, events::INCUMBENT_SUPERSEDED, id)]);
        let n_ready = log("peer-1", 2, &[(40, events::SUCCESSOR_READY, id)]);
        let n_silent = log("peer-1", 2, &[(40, events::SUCCESSOR_FLOCK_TAKEN, id)]);
        for (n, ok) in [(n_ready, true), (n_silent, false)] {
            let logs = vec![o.clone(), n];
            let ev = Evidence {
                logs: &logs,
                ..Evidence::default()
            };
            assert_eq!(check_superseded_after_ready(&ev).ok, ok);
        }
    }

    #[test]
    fn failed_requests_are_charged_to_kills_and_drains() {
        let logs = vec![log("peer-1", 7, &[(500, events::INCUMBENT_DRAIN, "")])];
        let processes = vec![
            proc_entry("peer-0", 6, ProcKind::ColdStart, Some(ExitKind::Signal(9))),
            proc_entry("peer-1", 7, ProcKind::Successor, None),
        ];
        let kills = vec![kill("peer-0", 6, 300)];
        let ev = Evidence {
            logs: &logs,
            processes: &processes,
            kills: &kills,
            ..Evidence::default()
        };
        let fates = fates(&ev);
        let failed = |holder, connected_ns, failed_ns, failure| FailedRequest {
            request: "PUT r1 w1".into(),
            holder,
            connected_ns,
            failed_ns,
            failure,
        };
        let closed = || Failure::Closed("eof".into());
        assert_eq!(
            attribute(&failed(Some(6), 100, 310, closed()), &fates),
            Cause::HolderKilled
        );
        assert_eq!(
            attribute(&failed(Some(7), 400, 510, closed()), &fates),
            Cause::HolderHandedOff
        );
        // A drain before the connection was opened explains nothing.
        assert_eq!(
            attribute(&failed(Some(7), 600, 700, closed()), &fates),
            Cause::Unexplained
        );
        assert_eq!(
            attribute(&failed(None, 0, 0, Failure::Refused), &fates),
            Cause::Unexplained
        );
        assert_eq!(
            attribute(&failed(None, 250, 320, closed()), &fates),
            Cause::HolderKilled
        );
    }

    #[test]
    fn a_connection_closed_under_the_reader_must_be_explained_though_retried() {
        let logs = vec![log("peer-1", 7, &[(500, events::INCUMBENT_DRAIN, "")])];
        let processes = vec![proc_entry("peer-1", 7, ProcKind::Successor, None)];
        let ev = Evidence {
            logs: &logs,
            processes: &processes,
            ..Evidence::default()
        };
        let closed = |connected_ns, failed_ns| FailedRequest {
            request: "GET r1".into(),
            holder: Some(7),
            connected_ns,
            failed_ns,
            failure: Failure::Closed("end of stream".into()),
        };
        let reader = |retried: Vec<FailedRequest>| ReaderReport {
            retried_total: retried.len() as u64,
            retried,
            ..ReaderReport::default()
        };
        let prober = ProberReport::default();
        // Closed by the drain: explained, and no request failed.
        let (check, acc) =
            check_client_accounting(&ev, Some(&reader(vec![closed(400, 510)])), &prober, 0);
        assert!(check.ok, "{check:?}");
        assert_eq!(acc.retried.get("HolderHandedOff"), Some(&1));
        assert!(acc.failed.is_empty());
        // Closed with no drain or kill in its lifetime: a violation, though
        // the request was retried and answered.
        let (check, acc) =
            check_client_accounting(&ev, Some(&reader(vec![closed(600, 700)])), &prober, 0);
        assert!(!check.ok);
        assert_eq!(acc.retried.get("Unexplained"), Some(&1));
    }

    #[test]
    fn a_run_failed_by_a_journal_write_slower_than_the_liveness_is_explained() {
        let sup = |durable_at: u64| {
            log(
                "supervisor-1",
                10,
                &[
                    (1_000_000, events::JOURNAL, r#","phase":"Negotiating""#),
                    (
                        durable_at,
                        events::JOURNAL,
                        r#","phase":"Negotiating","durable":true"#,
                    ),
                ],
            )
        };
        let run = RunRecord {
            supervisor: "supervisor-1".into(),
            successor: "peer-1".into(),
            incumbent: Some("peer-0".into()),
            planned: true,
            outcome: RunOutcome::Failed,
            window_end_ns: u64::MAX,
            ..RunRecord::default()
        };
        let timeouts = crate::scenario::Timeouts::default();
        let runs = vec![run];
        let outcome_ok = |logs: Vec<ProcessLog>| {
            let ev = Evidence {
                logs: &logs,
                runs: &runs,
                timeouts: Some(&timeouts),
                ..Evidence::default()
            };
            let why = faults_during(&ev, &runs[0]);
            !why.is_empty()
        };
        // 1.2 s against the 1 s liveness: explained.
        assert!(outcome_ok(vec![sup(1_201_000_000)]));
        // 0.2 s: nothing explains the failure.
        assert!(!outcome_ok(vec![sup(201_000_000)]));
    }

    #[test]
    fn a_connection_closed_by_a_successor_that_gave_up_is_explained() {
        let processes = vec![
            proc_entry("peer-0", 6, ProcKind::ColdStart, None),
            proc_entry("peer-1", 7, ProcKind::Successor, Some(ExitKind::Code(1))),
        ];
        let aborted = vec![RunRecord {
            supervisor: "supervisor-1".into(),
            successor: "peer-1".into(),
            outcome: RunOutcome::Aborted,
            ..RunRecord::default()
        }];
        let committed = vec![RunRecord {
            outcome: RunOutcome::Committed,
            ..aborted[0].clone()
        }];
        let closed = FailedRequest {
            request: "PING".into(),
            holder: None,
            connected_ns: 500,
            failed_ns: 900,
            failure: Failure::Closed("end of stream".into()),
        };
        for (runs, cause) in [
            (&aborted, Cause::HolderKilled),
            (&committed, Cause::Unexplained),
        ] {
            let ev = Evidence {
                processes: &processes,
                runs,
                ..Evidence::default()
            };
            assert_eq!(attribute(&closed, &fates(&ev)), cause);
        }
    }
}
