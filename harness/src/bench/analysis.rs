//! From handoff records to figures: end-to-end latencies and where the time
//! goes, segment by segment. Pure: records in, summaries out.

use serde::Serialize;

use super::service::{HandoffRecord, mark};
use super::stats::Summary;
use crate::eventlog::SharedLog;

/// End-to-end latencies of a set of handoffs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latencies {
    /// Trigger → `Ready` received by the supervisor.
    pub trigger_to_ready: Summary,
    /// Trigger → `perform_handoff` returned (committed).
    pub trigger_to_commit: Summary,
    /// Trigger → the journal's clear durable.
    pub trigger_to_journal_synced: Summary,
    /// Trigger → the old incumbent exited (reaped).
    pub trigger_to_old_exit: Summary,
    /// Trigger → the new incumbent answered a `PING` on the listener.
    pub trigger_to_new_serves: Summary,
}

/// Summaries of the end-to-end latencies.
pub fn latencies(records: &[HandoffRecord]) -> Latencies {
    let ready: Vec<u64> = records.iter().filter_map(|r| r.to_ready_ns()).collect();
    let commit: Vec<u64> = records.iter().map(|r| r.to_commit_ns()).collect();
    let synced: Vec<u64> = records.iter().map(|r| r.to_journal_synced_ns()).collect();
    let exit: Vec<u64> = records.iter().filter_map(|r| r.to_old_exit_ns()).collect();
    let serves: Vec<u64> = records.iter().map(|r| r.to_serves_ns()).collect();
    Latencies {
        trigger_to_ready: Summary::of_ns(&ready),
        trigger_to_commit: Summary::of_ns(&commit),
        trigger_to_journal_synced: Summary::of_ns(&synced),
        trigger_to_old_exit: Summary::of_ns(&exit),
        trigger_to_new_serves: Summary::of_ns(&serves),
    }
}

/// Fill the incumbent and successor marks of `records` from the children's
/// event log.
pub fn attach_child_events(records: &mut [HandoffRecord], log: &SharedLog) {
    for r in records.iter_mut() {
        let id = handoff_id_text(r.handoff_id);
        for (slot, event) in r.inc.iter_mut().zip(mark::INCUMBENT_EVENTS) {
            *slot = log.find(&id, r.old_pid, event).unwrap_or(0);
        }
        for (slot, event) in r.suc.iter_mut().zip(mark::SUCCESSOR_EVENTS) {
            *slot = log.find(&id, r.new_pid, event).unwrap_or(0);
        }
    }
}

/// One handoff, for tools: every mark in µs after the trigger.
#[derive(Debug, Clone, Serialize)]
pub struct RecordOut {
    /// 1-based position in its run.
    pub index: usize,
    /// The handoff id.
    pub handoff_id: String,
    /// Incumbent handed off from.
    pub old_pid: u32,
    /// New incumbent.
    pub new_pid: u32,
    /// Old incumbent's exit code (-1: unknown or signalled).
    pub old_exit_code: i32,
    /// The trigger, `CLOCK_MONOTONIC` ns (to line up other timelines).
    pub trigger_mono_ns: u64,
    /// Mark name → µs after the trigger (marks not seen are absent).
    pub marks_us: std::collections::BTreeMap<String, f64>,
}

/// [`RecordOut`] of each record.
pub fn records_out(records: &[HandoffRecord]) -> Vec<RecordOut> {
    records
        .iter()
        .map(|r| {
            let rel = |ns: u64| (ns != 0).then(|| ns.saturating_sub(r.trigger_ns) as f64 / 1e3);
            let mut marks_us = std::collections::BTreeMap::new();
            let named = mark::SUPERVISOR_NAMES
                .iter()
                .map(|n| n.to_string())
                .zip(r.sup)
                .chain(
                    mark::INCUMBENT_EVENTS
                        .iter()
                        .map(|n| format!("O.{n}"))
                        .zip(r.inc),
                )
                .chain(
                    mark::SUCCESSOR_EVENTS
                        .iter()
                        .map(|n| format!("N.{n}"))
                        .zip(r.suc),
                )
                .chain([
                    ("returned".to_string(), r.commit_ns),
                    ("new_serves".to_string(), r.serves_ns),
                    ("old_exited".to_string(), r.old_exit_ns),
                ]);
            for (name, ns) in named {
                if let Some(us) = rel(ns) {
                    marks_us.insert(name, us);
                }
            }
            RecordOut {
                index: r.index,
                handoff_id: handoff_id_text(r.handoff_id),
                old_pid: r.old_pid,
                new_pid: r.new_pid,
                old_exit_code: r.old_exit_code,
                trigger_mono_ns: r.trigger_ns,
                marks_us,
            }
        })
        .collect()
}

/// A handoff id as `handoff::HandoffId` displays it (a UUID), from its raw
/// bits: records keep the bits so they stay heap-free.
pub fn handoff_id_text(raw: u128) -> String {
    let mut out = String::with_capacity(36);
    for (i, byte) in raw.to_be_bytes().iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A point on a handoff's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// `perform_handoff` called.
    Trigger,
    /// `perform_handoff` returned.
    Returned,
    /// The new incumbent first answered.
    Serves,
    /// The old incumbent exited.
    OldExit,
    /// A supervisor mark.
    S(usize),
    /// An incumbent mark (index into [`mark::INCUMBENT_EVENTS`]).
    O(usize),
    /// A successor mark (index into [`mark::SUCCESSOR_EVENTS`]).
    N(usize),
}

impl Point {
    fn at(self, r: &HandoffRecord) -> Option<u64> {
        let v = match self {
            Point::Trigger => r.trigger_ns,
            Point::Returned => r.commit_ns,
            Point::Serves => r.serves_ns,
            Point::OldExit => r.old_exit_ns,
            Point::S(i) => r.sup[i],
            Point::O(i) => r.inc[i],
            Point::N(i) => r.suc[i],
        };
        (v != 0).then_some(v)
    }
}

/// Indices into [`mark::INCUMBENT_EVENTS`].
const O_DRAIN: usize = 1;
const O_DRAINED: usize = 2;
const O_SEAL: usize = 3;
const O_FLOCK_RELEASED: usize = 4;
const O_SEAL_COMPLETE: usize = 5;
const O_COMMIT: usize = 6;
const O_DRAIN_BODY_END: usize = 7;
const O_HANDED_OFF: usize = 8;
/// Indices into [`mark::SUCCESSOR_EVENTS`].
const N_BEGIN: usize = 1;
const N_FLOCK_TAKEN: usize = 2;
const N_READY: usize = 3;
const N_BOUND: usize = 4;
const N_SERVING: usize = 5;

/// When each of [`super::load::HANDOFF_STEPS`] began in handoff `r` (0:
/// not seen): trigger, spawn returned, successor's Hello read, incumbent
/// received `PrepareHandoff` (stops accepting), successor accepting,
/// commit returned. Needs the children's marks attached.
pub fn window_steps(r: &HandoffRecord) -> [u64; super::load::HANDOFF_STEPS.len()] {
    [
        r.trigger_ns,
        r.sup[mark::SPAWN],
        r.sup[mark::N_HELLO],
        r.inc[O_DRAIN],
        r.suc[N_SERVING],
        r.commit_ns,
    ]
}

/// One segment of the timeline.
#[derive(Debug, Clone, Copy)]
pub struct SegmentDef {
    /// What happens in it.
    pub name: &'static str,
    /// From.
    pub from: Point,
    /// To.
    pub to: Point,
}

const fn seg(name: &'static str, from: Point, to: Point) -> SegmentDef {
    SegmentDef { name, from, to }
}

/// The supervisor's critical path: its marks in the order they happen
/// (by median offset from the trigger, so a library that reorders its steps
/// is still read right), then the return. Consecutive segments from
/// trigger to return: their means add up to the mean trigger → commit.
pub fn critical_path(records: &[HandoffRecord]) -> Vec<SegmentDef> {
    let mut order: Vec<(u64, usize)> = (0..mark::COUNT)
        .filter_map(|m| {
            let mut offsets: Vec<u64> = records
                .iter()
                .filter(|r| r.sup[m] != 0)
                .map(|r| r.sup[m].saturating_sub(r.trigger_ns))
                .collect();
            offsets.sort_unstable();
            (!offsets.is_empty()).then(|| (super::stats::nearest_rank(&offsets, 50.0), m))
        })
        .collect();
    order.sort();
    let mut path = Vec::with_capacity(order.len() + 1);
    let mut from = Point::Trigger;
    for (_, m) in order {
        path.push(seg(SEGMENT_NAMES[m], from, Point::S(m)));
        from = Point::S(m);
    }
    path.push(seg("return from perform_handoff", from, Point::Returned));
    path
}

/// What happens just before each supervisor mark (by index): the name of
/// the critical-path segment that ends there.
const SEGMENT_NAMES: [&str; mark::COUNT] = [
    "S: connect to O, Hello/HelloAck",
    "S: socketpair, spawn() of N (fork+exec)",
    "N: starts up; S reads its Hello",
    "S: wait for the journal write Negotiating (started at spawn)",
    "S: (PrepareHandoff about to be written)",
    "O: drains; S reads Drained",
    "S: journal Draining recorded (written in the background)",
    "S: (SealRequest about to be written)",
    "O: seals, releases the flock; S reads SealComplete",
    "S: journal Sealing recorded (background)",
    "S: Begin written; journal AwaitingReady recorded",
    "N: takes over; S reads Ready",
    "S: (Commit about to be written)",
    "S: Commit written; journal Committed recorded",
    "S: journal clear recorded",
    "S: outcome logged",
];

/// Detail of the other processes' side, and what follows the commit.
pub const DETAIL: &[SegmentDef] = &[
    seg(
        "clients: O stops accepting (Prepare recv) → N accepting",
        Point::O(O_DRAIN),
        Point::N(N_SERVING),
    ),
    seg(
        "O: PrepareHandoff written → received",
        Point::S(mark::PREPARE),
        Point::O(O_DRAIN),
    ),
    seg(
        "O: Prepare recv → Drained sent (drain(), heartbeats armed)",
        Point::O(O_DRAIN),
        Point::O(O_DRAINED),
    ),
    seg(
        "O:   of which Prepare recv → end of Server::drain",
        Point::O(O_DRAIN),
        Point::O(O_DRAIN_BODY_END),
    ),
    seg(
        "O:   of which end of drain → Drained sent (heartbeats disarmed)",
        Point::O(O_DRAIN_BODY_END),
        Point::O(O_DRAINED),
    ),
    seg(
        "O: Drained sent → received by S",
        Point::O(O_DRAINED),
        Point::S(mark::DRAINED),
    ),
    seg(
        "O: SealRequest written → received",
        Point::S(mark::SEAL),
        Point::O(O_SEAL),
    ),
    seg(
        "O: seal() (heartbeats armed) → flock released",
        Point::O(O_SEAL),
        Point::O(O_FLOCK_RELEASED),
    ),
    seg(
        "O: flock released → SealComplete sent",
        Point::O(O_FLOCK_RELEASED),
        Point::O(O_SEAL_COMPLETE),
    ),
    seg(
        "N: Begin written (after journal Sealing) → received",
        Point::S(mark::J_SEALING),
        Point::N(N_BEGIN),
    ),
    seg(
        "N: Begin → flock taken (listeners, flock, pid file)",
        Point::N(N_BEGIN),
        Point::N(N_FLOCK_TAKEN),
    ),
    seg(
        "N: flock → Ready sent (replay of the log's tail)",
        Point::N(N_FLOCK_TAKEN),
        Point::N(N_READY),
    ),
    seg(
        "N: Begin received → Ready sent (total)",
        Point::N(N_BEGIN),
        Point::N(N_READY),
    ),
    seg(
        "N: Ready sent → received by S",
        Point::N(N_READY),
        Point::S(mark::READY),
    ),
    seg(
        "N: Ready sent → control socket renamed",
        Point::N(N_READY),
        Point::N(N_BOUND),
    ),
    seg(
        "O: Commit received → serve() returned",
        Point::O(O_COMMIT),
        Point::O(O_HANDED_OFF),
    ),
    seg(
        "O: Commit received → process exited (reaped)",
        Point::O(O_COMMIT),
        Point::OldExit,
    ),
    seg(
        "N: control socket renamed → serving (Server::start)",
        Point::N(N_BOUND),
        Point::N(N_SERVING),
    ),
    seg(
        "commit returned → new incumbent answers PING",
        Point::Returned,
        Point::Serves,
    ),
    seg(
        "commit returned → old incumbent exited",
        Point::Returned,
        Point::OldExit,
    ),
];

/// One row of the breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRow {
    /// What happens in the segment.
    pub name: &'static str,
    /// Durations over the handoffs where both ends were seen.
    pub summary: Summary,
    /// Mean of this segment / mean trigger → commit (critical path only).
    pub share_of_commit: Option<f64>,
}

fn durations(records: &[HandoffRecord], s: &SegmentDef) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| Some(s.to.at(r)?.saturating_sub(s.from.at(r)?)))
        .collect()
}

/// Summaries of `segments` over `records`; for the critical path, each
/// segment's share of the mean trigger → commit.
pub fn breakdown(
    records: &[HandoffRecord],
    segments: &[SegmentDef],
    critical: bool,
) -> Vec<SegmentRow> {
    let commit_mean = Summary::of_ns(
        &records
            .iter()
            .map(HandoffRecord::to_commit_ns)
            .collect::<Vec<_>>(),
    )
    .mean_us;
    segments
        .iter()
        .map(|s| {
            let summary = Summary::of_ns(&durations(records, s));
            SegmentRow {
                name: s.name,
                summary,
                share_of_commit: (critical && commit_mean > 0.0 && summary.count > 0)
                    .then(|| summary.mean_us / commit_mean),
            }
        })
        .collect()
}

/// Time in the supervisor's journal writes on the critical path, summed
/// per handoff: every critical-path segment that ends at a journal mark
/// (the `Begin`/`Commit` socket writes ride along, a few µs).
pub fn journal_time(records: &[HandoffRecord]) -> Summary {
    const JOURNAL_MARKS: [usize; 6] = [
        mark::J_NEGOTIATING,
        mark::J_DRAINING,
        mark::J_SEALING,
        mark::J_AWAITING_READY,
        mark::J_COMMITTED,
        mark::J_CLEARED,
    ];
    let path = critical_path(records);
    let sums: Vec<u64> = records
        .iter()
        .filter_map(|r| {
            path.iter()
                .filter(|s| matches!(s.to, Point::S(m) if JOURNAL_MARKS.contains(&m)))
                .try_fold(0u64, |acc, s| {
                    Some(acc + s.to.at(r)?.saturating_sub(s.from.at(r)?))
                })
        })
        .collect();
    Summary::of_ns(&sums)
}

/// Handoffs in which the successor waited at least `threshold_ns` for the
/// flock after `Begin` (the sign of `acquire_lock`'s 5 ms poll step).
pub fn slow_flock_count(records: &[HandoffRecord], threshold_ns: u64) -> usize {
    let s = seg("", Point::N(N_BEGIN), Point::N(N_FLOCK_TAKEN));
    durations(records, &s)
        .iter()
        .filter(|d| **d >= threshold_ns)
        .count()
}

/// Median of trigger → commit and of the successor's flock → Ready over the
/// first and last `n` records (a growth check: the successor replays the
/// whole store log).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Trend {
    /// How many records each end covers.
    pub window: usize,
    /// trigger → commit p50, first records, µs.
    pub commit_p50_first_us: f64,
    /// trigger → commit p50, last records, µs.
    pub commit_p50_last_us: f64,
    /// N flock → Ready sent p50, first records, µs.
    pub successor_open_p50_first_us: f64,
    /// N flock → Ready sent p50, last records, µs.
    pub successor_open_p50_last_us: f64,
}

/// See [`Trend`].
pub fn trend(records: &[HandoffRecord], n: usize) -> Trend {
    let n = n.min(records.len() / 2);
    if n == 0 {
        return Trend::default();
    }
    let (first, last) = (&records[..n], &records[records.len() - n..]);
    let open = seg("", Point::N(N_FLOCK_TAKEN), Point::N(N_READY));
    let commit = |rs: &[HandoffRecord]| {
        Summary::of_ns(
            &rs.iter()
                .map(HandoffRecord::to_commit_ns)
                .collect::<Vec<_>>(),
        )
        .p50_us
    };
    Trend {
        window: n,
        commit_p50_first_us: commit(first),
        commit_p50_last_us: commit(last),
        successor_open_p50_first_us: Summary::of_ns(&durations(first, &open)).p50_us,
        successor_open_p50_last_us: Summary::of_ns(&durations(last, &open)).p50_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(base: u64) -> HandoffRecord {
        let mut r = HandoffRecord {
            trigger_ns: base,
            ..Default::default()
        };
        for (i, slot) in r.sup.iter_mut().enumerate() {
            *slot = base + 10 * (i as u64 + 1);
        }
        r.commit_ns = base + 10 * (mark::COUNT as u64 + 1);
        r
    }

    #[test]
    fn critical_path_segments_add_up_to_trigger_to_commit() {
        let records = [record(1_000), record(5_000)];
        let rows = breakdown(&records, &critical_path(&records), true);
        let sum: f64 = rows.iter().map(|r| r.summary.mean_us).sum();
        let commit = latencies(&records).trigger_to_commit.mean_us;
        assert!((sum - commit).abs() < 1e-9, "{sum} vs {commit}");
        let shares: f64 = rows.iter().filter_map(|r| r.share_of_commit).sum();
        assert!((shares - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_mark_never_seen_is_left_out_of_the_path() {
        let mut r = record(1_000);
        r.sup[mark::SPAWN] = 0;
        let path = critical_path(&[r]);
        assert_eq!(path.len(), mark::COUNT);
        assert!(path.iter().all(|s| s.to != Point::S(mark::SPAWN)));
        let rows = breakdown(&[r], &path, true);
        let sum: f64 = rows.iter().map(|r| r.summary.mean_us).sum();
        assert!((sum - latencies(&[r]).trigger_to_commit.mean_us).abs() < 1e-9);
        assert_eq!(journal_time(&[r]).count, 1);
    }

    #[test]
    fn the_critical_path_follows_the_order_the_marks_happen_in() {
        let mut r = record(1_000);
        // The journal written before the successor's Hello.
        r.sup.swap(mark::N_HELLO, mark::J_NEGOTIATING);
        let path = critical_path(&[r]);
        let ends: Vec<Point> = path.iter().map(|s| s.to).collect();
        let neg = ends
            .iter()
            .position(|p| *p == Point::S(mark::J_NEGOTIATING));
        let hello = ends.iter().position(|p| *p == Point::S(mark::N_HELLO));
        assert!(neg < hello);
        let rows = breakdown(&[r], &path, true);
        assert!(rows.iter().all(|row| row.summary.count == 1));
        assert_eq!(journal_time(&[r]).count, 1);
    }

    #[test]
    fn handoff_ids_print_as_the_library_prints_them() {
        for _ in 0..10 {
            let id = handoff::HandoffId::new();
            assert_eq!(handoff_id_text(id.as_u128()), id.to_string());
        }
    }

    #[test]
    fn trend_compares_both_ends() {
        let records: Vec<HandoffRecord> = (0..10).map(|i| record(i * 100_000)).collect();
        let t = trend(&records, 3);
        assert_eq!(t.window, 3);
        assert_eq!(t.commit_p50_first_us, t.commit_p50_last_us);
    }
}
