//! The deterministic view of a run: what a snapshot holds.
//!
//! Each process's events are kept in its own order; the interleaving of
//! processes never is. Even within one process a few events depend on a race
//! the protocol allows, and are left out by rules that apply to every
//! scenario (each found by running the suite many times):
//!
//! 1. **Retry noise.** `handoff.incumbent.refused` is logged once per probe
//!    of a supervisor waiting for a busy incumbent; how many depends on
//!    timing. (A second supervisor's refusal is asserted on its own outcome.)
//! 2. **A failed successor.** A successor that never became the incumbent
//!    (and is not the process that crashed) is killed by its supervisor
//!    (`SIGKILL`) as soon as the supervisor gives up, which may be before or
//!    after the successor logged its handshake, its `Begin`, its last words.
//!    Its events are replaced by one line; what it did is still checked
//!    (flock spans, exit code when the harness reaps it).
//! 3. **Sends to a crashed supervisor.** After a supervisor crashes, the
//!    incumbent's or successor's next frame to it may still land in the
//!    socket buffer or fail with `EPIPE`, depending on whether the kernel has
//!    closed the dead process's socket yet. The events that confirm such a
//!    send (`incumbent.drained`, `incumbent.seal_failed`,
//!    `incumbent.seal_complete`, `successor.ready`) are dropped for every
//!    handoff whose supervisor crashed.
//! 4. **Declared races** ([`crate::scenario::Racy`], from
//!    `catalog::racy`): crash points with two legitimate results keep only
//!    each listed process's deterministic prefix (listed even when the
//!    process does not exist in one branch), drop events whose normalised
//!    line starts with a listed pattern, record the acceptable outcomes
//!    instead of the one that happened, and call the survivor `<survivor>`
//!    where a later process names it.
//!
//! Handoff ids are numbered over the kept events only, so a racy branch that
//! logged an extra id does not shift the numbering of the rest.

use std::collections::HashSet;

use serde::Serialize;

use handoff::events;

use crate::eventlog::ProcessLog;
use crate::exit_code::RunOutcome;
use crate::fixture::ProcKind;
use crate::report::{HandoffRecord, Report, names, snake};

/// Events whose count depends on how often a waiting supervisor probed.
pub const RETRY_NOISE: &[&str] = &[events::INCUMBENT_REFUSED];

/// What replaces a failed successor's events (rule 2).
pub const FAILED_SUCCESSOR: &str =
    "… (a successor that never became the incumbent: its events race its supervisor's kill)";

/// Events logged after a frame was sent to the supervisor (rule 3).
pub const SEND_CONFIRMATIONS: &[&str] = &[
    events::INCUMBENT_DRAINED,
    events::INCUMBENT_SEAL_FAILED,
    events::INCUMBENT_SEAL_COMPLETE,
    events::SUCCESSOR_READY,
];

/// Marker appended where a racy process's events were cut.
pub const RACY_CUT: &str = "… (racy from here: see `racy`)";

/// One process's normalised events, for the snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessEvents {
    /// The process.
    pub process: String,
    /// Its events, in its own order.
    pub events: Vec<String>,
}

/// One supervisor run, for the snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct HandoffView {
    /// The supervisor.
    pub supervisor: String,
    /// Its successor.
    pub successor: String,
    /// Its outcome (or the acceptable set, when racy).
    pub outcome: String,
    /// The journal left behind, when inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_left: Option<crate::report::JournalView>,
    /// Who was the incumbent afterwards.
    pub then_incumbent: String,
    /// A second supervisor's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_supervisor: Option<String>,
}

/// The deterministic view of a report.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotView {
    /// The scenario.
    pub scenario: String,
    /// Its summary.
    pub summary: String,
    /// The armed point and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash: Option<String>,
    /// Why the run has two legitimate outcomes, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub racy: Option<String>,
    /// Each supervisor run.
    pub handoffs: Vec<HandoffView>,
    /// Service restarts.
    pub restarts: Vec<String>,
    /// The incumbent at the end.
    pub final_incumbent: String,
    /// `<check name>: ok | FAILED`, in the order checked.
    pub invariants: Vec<String>,
    /// Each process's normalised events.
    pub events: Vec<ProcessEvents>,
}

/// Why a process's events were cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    None,
    Racy,
    FailedSuccessor,
}

/// The raw handoff id a supervisor run used (its first `handoff_id`).
fn raw_id(report: &Report, supervisor: &str) -> Option<String> {
    report
        .observed
        .logs
        .iter()
        .find(|l| l.process == supervisor)?
        .events
        .iter()
        .find_map(|e| e.str_field("handoff_id").map(str::to_string))
}

/// The kept events of each process (rules 1–4), before normalisation.
fn kept_logs(report: &Report) -> Vec<(ProcessLog, Cut)> {
    let racy = report.scenario.racy.as_ref();
    let crashed_ids: HashSet<String> = report
        .handoffs
        .iter()
        .filter(|h| h.outcome == Some(RunOutcome::Crashed))
        .filter_map(|h| raw_id(report, &h.supervisor))
        .collect();
    // A racy process may not exist at all in one branch (a successor never
    // spawned): it is listed, empty, either way.
    let mut logs = report.observed.logs.clone();
    if let Some(r) = racy {
        for (process, _) in &r.truncate_after {
            if !logs.iter().any(|l| l.process == *process) {
                logs.push(ProcessLog {
                    process: process.to_string(),
                    ..ProcessLog::default()
                });
            }
        }
        logs.sort_by_key(|l| crate::eventlog::process_order(&l.process));
    }
    logs.iter()
        .map(|log| {
            let kind = report
                .observed
                .processes
                .iter()
                .find(|p| p.name == log.process)
                .map(|p| p.kind);
            let racy_listed =
                racy.is_some_and(|r| r.truncate_after.iter().any(|(p, _)| *p == log.process));
            let failed_successor = kind == Some(ProcKind::Successor)
                && !log.has(events::SUCCESSOR_BOUND)
                && !log.has(events::CRASH)
                && !racy_listed;
            let mut kept: Vec<_> = log
                .events
                .iter()
                .filter(|e| !RETRY_NOISE.contains(&e.name.as_str()))
                .filter(|_| !failed_successor)
                .filter(|e| {
                    !(SEND_CONFIRMATIONS.contains(&e.name.as_str())
                        && e.str_field("handoff_id")
                            .is_some_and(|id| crashed_ids.contains(id)))
                })
                .filter(|e| {
                    !racy.is_some_and(|r| {
                        r.drop.iter().any(|(p, pattern)| {
                            *p == log.process
                                && report.observed.normaliser.event(e).starts_with(pattern)
                        })
                    })
                })
                .cloned()
                .collect();
            let mut cut = false;
            if let Some((_, marker)) =
                racy.and_then(|r| r.truncate_after.iter().find(|(p, _)| *p == log.process))
            {
                let keep = if marker.is_empty() {
                    0
                } else {
                    kept.iter()
                        .position(|e| e.name == *marker)
                        .map_or(kept.len(), |i| i + 1)
                };
                kept.truncate(keep);
                cut = true;
            }
            (
                ProcessLog {
                    events: kept,
                    ..log.clone()
                },
                if failed_successor {
                    Cut::FailedSuccessor
                } else if cut {
                    Cut::Racy
                } else {
                    Cut::None
                },
            )
        })
        .collect()
}

fn outcome_text(report: &Report, h: &HandoffRecord) -> String {
    match (report.scenario.racy.is_some(), h.outcome) {
        (true, _) if h.expect.len() > 1 => format!("one of {}", names(&h.expect)),
        (_, Some(o)) => snake(&o),
        (_, None) => format!("unexpected ({:?})", h.exit),
    }
}

/// Build the deterministic view of `report`.
pub fn view(report: &Report) -> SnapshotView {
    let s = &report.scenario;
    let racy = s.racy.as_ref();
    let kept = kept_logs(report);
    let logs: Vec<ProcessLog> = kept.iter().map(|(l, _)| l.clone()).collect();
    let mut normaliser = report.observed.normaliser.without_ids();
    normaliser.learn_ids(&logs);

    let handoffs = report
        .handoffs
        .iter()
        .map(|h| HandoffView {
            supervisor: h.supervisor.clone(),
            successor: h.successor.clone(),
            outcome: outcome_text(report, h),
            journal_left: h.journal.clone(),
            then_incumbent: match racy {
                Some(r) if !r.survivors.is_empty() && h.planned == Some(0) => {
                    format!("one of {}", r.survivors.join(", "))
                }
                _ => h.settled.clone().unwrap_or_default(),
            },
            second_supervisor: h.second.as_ref().map(|sec| {
                format!(
                    "{} {}{}; {}'s journal {}",
                    sec.supervisor,
                    sec.outcome
                        .map_or_else(|| sec.exit.to_string(), |o| snake(&o)),
                    if sec.stderr_mentions_refusal {
                        " (refused)"
                    } else {
                        ""
                    },
                    h.supervisor,
                    if sec.journal_kept {
                        "kept"
                    } else {
                        // A regression: a second supervisor must leave the
                        // journal of the handoff in flight alone.
                        "DELETED while its handoff was in flight"
                    }
                )
            }),
        })
        .collect();

    let events = kept
        .iter()
        .map(|(log, cut)| {
            let mut lines: Vec<String> = log.events.iter().map(|e| normaliser.event(e)).collect();
            match cut {
                Cut::None => {}
                Cut::Racy => lines.push(RACY_CUT.into()),
                Cut::FailedSuccessor => lines.push(FAILED_SUCCESSOR.into()),
            }
            if let Some(r) = racy {
                // The survivor's name appears in later processes' events (a
                // supervisor's hello with the incumbent it found).
                for line in &mut lines {
                    if r.survivor_in
                        .iter()
                        .any(|(p, prefix)| *p == log.process && line.starts_with(prefix))
                    {
                        *line = line
                            .split(' ')
                            .map(|token| match token.split_once('=') {
                                Some((k, v)) if r.survivors.contains(&v) => {
                                    format!("{k}=<survivor>")
                                }
                                _ => token.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                    }
                }
            }
            ProcessEvents {
                process: log.process.clone(),
                events: lines,
            }
        })
        .collect();

    SnapshotView {
        scenario: s.name.clone(),
        summary: s.summary.clone(),
        crash: s.crash.as_ref().map(|c| {
            let side = c.side().map_or("?", |side| side.prefix());
            format!("{} ({side} side, handoff {})", c.spec(), c.handoff + 1)
        }),
        racy: racy.map(|r| r.why.to_string()),
        handoffs,
        restarts: report.restarts.clone(),
        final_incumbent: report.final_incumbent.clone().unwrap_or_default(),
        invariants: report
            .checks
            .iter()
            .map(|c| format!("{}: {}", c.name, if c.ok { "ok" } else { "FAILED" }))
            .collect(),
        events,
    }
}
