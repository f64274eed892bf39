//! The live client load: a separate process (this binary again, see
//! [`clients`]) whose threads talk to the fake peer over loopback TCP with
//! persistent connections, paced at a fixed request rate.
//!
//! The clients run in their own process, as real clients would: the
//! supervisor's `fork()` of each successor then copies only the
//! supervisor's threads and memory, and the bench process's FD count and
//! RSS are the supervisor's alone.
//!
//! A client reconnects on end-of-stream, reset or timeout and retries the
//! request (every request here is idempotent: `GET`, or a `PUT` of a value
//! this client alone writes to a key this client alone owns), so a request
//! fails only when it cannot complete within its deadline. What the client
//! saw on the way (refused connects, resets, end-of-stream, read timeouts)
//! is counted separately from the requests that failed. Like any
//! keep-alive client, it checks a pooled connection before reusing it (a
//! non-blocking peek): one the server closed while it was idle is replaced
//! without a request being written on it (counted as `closed_idle`).
//!
//! Every acknowledged `PUT` (`OK <seq>`) is appended to a per-client file so
//! the bench can check after the run that the data dir holds it; every
//! `GET` of a key this client wrote is checked against the last value it
//! saw acknowledged (a stale read is a lost write seen live).
//!
//! Each client writes every request (start, end, outcome) to a file; the
//! bench reads them after the run and places each request against its own
//! record of the run ([`Timeline`]: phase boundaries and windows, all on
//! `CLOCK_MONOTONIC`, which both processes share). A request counts as
//! *inside a window* when the window (a handoff's, from the trigger to the
//! new incumbent answering; or a spawn-only one) was open at any instant
//! between its start and its end.

pub mod clients;

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use handoff::util::monotonic_ns;
use serde::{Deserialize, Serialize};

use super::stats::Histogram;

/// How the clients behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadConfig {
    /// Client threads, one persistent connection each.
    pub clients: usize,
    /// Requests per second per client (paced; a client that falls behind
    /// skips the slots it missed rather than bursting).
    pub rate_per_client_hz: f64,
    /// Share of `PUT`s, in percent; the rest are `GET`s.
    pub put_percent: u32,
    /// Keys per client (bounded, so the store's map stays bounded).
    pub keys_per_client: usize,
    /// Bound on one connect.
    pub connect_timeout: Duration,
    /// Bound on one reply; past it the client reconnects and retries.
    pub read_timeout: Duration,
    /// Bound on a request, retries included; past it the request failed.
    pub request_deadline: Duration,
    /// Where each client appends its acknowledged writes and its requests.
    pub acked_dir: PathBuf,
}

impl LoadConfig {
    /// Time between two requests of one client.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate_per_client_hz.max(1.0))
    }
}

/// Which part of the run a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPhase {
    /// Connections warming up: not recorded.
    WarmUp,
    /// Baseline, before any handoff.
    Before,
    /// While handoffs run.
    During,
    /// After the handoffs: windows in which the bench only spawns a trivial
    /// binary (what any handoff must at least do), for comparison.
    SpawnFloor,
    /// After the last handoff (and the spawn-only windows).
    After,
}

/// The bench's record of a load run, against which each request is placed:
/// when each phase began and when each window was open (`CLOCK_MONOTONIC`
/// ns). Preallocated by the caller so recording does not grow the process.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Start of each phase after warm-up: `Before`, `During`, `SpawnFloor`,
    /// `After`. A request belongs to the phase in which it ended.
    pub phase_starts: [u64; 4],
    /// Handoff windows, in order: (trigger, new incumbent answered).
    pub handoff_windows: Vec<(u64, u64)>,
    /// Spawn-only windows, in order.
    pub spawn_windows: Vec<(u64, u64)>,
    /// Per handoff window: when each of [`HANDOFF_STEPS`] began (0: not
    /// seen).
    pub handoff_steps: Vec<[u64; HANDOFF_STEPS.len()]>,
    /// Per spawn-only window: when each of [`SPAWN_STEPS`] began.
    pub spawn_steps: Vec<[u64; SPAWN_STEPS.len()]>,
}

/// What a handoff is doing, step by step, from its trigger.
pub const HANDOFF_STEPS: [&str; 6] = [
    "trigger → successor spawned (fork+exec)",
    "successor starts up, until its Hello",
    "Hello → incumbent stops accepting",
    "client gap: incumbent stops accepting → successor accepts",
    "successor accepts → commit returned",
    "commit returned → new incumbent answers",
];

/// What a spawn-only window holds, step by step.
pub const SPAWN_STEPS: [&str; 2] = [
    "fork+exec → the child exited",
    "the child exited → window closes",
];

impl Timeline {
    /// A timeline with room for `windows` windows of each kind.
    pub fn with_capacity(windows: usize) -> Self {
        Self {
            phase_starts: [u64::MAX; 4],
            handoff_windows: Vec::with_capacity(windows),
            spawn_windows: Vec::with_capacity(windows),
            handoff_steps: Vec::with_capacity(windows),
            spawn_steps: Vec::with_capacity(windows),
        }
    }

    /// `phase` starts now.
    pub fn enter(&mut self, phase: LoadPhase) -> u64 {
        let now = monotonic_ns();
        let slot = match phase {
            LoadPhase::WarmUp => return now,
            LoadPhase::Before => 0,
            LoadPhase::During => 1,
            LoadPhase::SpawnFloor => 2,
            LoadPhase::After => 3,
        };
        self.phase_starts[slot] = now;
        now
    }

    fn phase_at(&self, ns: u64) -> LoadPhase {
        match self.phase_starts.iter().rposition(|&start| start <= ns) {
            None => LoadPhase::WarmUp,
            Some(0) => LoadPhase::Before,
            Some(1) => LoadPhase::During,
            Some(2) => LoadPhase::SpawnFloor,
            Some(_) => LoadPhase::After,
        }
    }
}

/// The last of `windows` (sorted, disjoint) opened by `end`. An earlier
/// one closed before this one opened: if this one closed before a request
/// started, all did.
fn last_opened_by(windows: &[(u64, u64)], end: u64) -> Option<usize> {
    windows
        .partition_point(|&(open, _)| open <= end)
        .checked_sub(1)
}

/// The window of `windows` (sorted, disjoint) open at some instant of
/// `[start, end]`, if any.
fn overlapping_window(windows: &[(u64, u64)], start: u64, end: u64) -> Option<usize> {
    last_opened_by(windows, end).filter(|&i| windows[i].1 >= start)
}

/// The step a request that started at `start` began in: the one with the
/// latest start at or before it (`None`: before the window opened).
fn step_at(steps: &[u64], start: u64) -> Option<usize> {
    steps
        .iter()
        .enumerate()
        .filter(|&(_, &at)| at != 0 && at <= start)
        .max_by_key(|&(_, &at)| at)
        .map(|(i, _)| i)
}

/// Whether one of `windows` (sorted, disjoint) was open at any instant of
/// `[start, end]`, and whether one was open at `end`.
fn window_overlap(windows: &[(u64, u64)], start: u64, end: u64) -> (bool, bool) {
    match overlapping_window(windows, start, end) {
        Some(i) => (true, windows[i].1 >= end),
        None => (false, false),
    }
}

/// Progress of the clients, as the bench sees it (reported by the clients
/// process on its stdout).
pub struct LoadShared {
    /// Per client: start (`mono_ns`) of its last request that succeeded.
    progress: Vec<AtomicU64>,
    progress_lock: Mutex<()>,
    progress_changed: Condvar,
}

impl LoadShared {
    fn new(clients: usize) -> Self {
        Self {
            progress: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            progress_lock: Mutex::new(()),
            progress_changed: Condvar::new(),
        }
    }

    /// Wait until every client has completed a request that started after
    /// `after_ns` (so each holds a connection to whoever serves now), at
    /// most `timeout`. False on timeout.
    pub fn wait_all_progressed(&self, after_ns: u64, timeout: Duration) -> bool {
        let guard = self.progress_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (_guard, waited) = self
            .progress_changed
            .wait_timeout_while(guard, timeout, |_| {
                !self
                    .progress
                    .iter()
                    .all(|p| p.load(Ordering::SeqCst) > after_ns)
            })
            .unwrap_or_else(|p| p.into_inner());
        !waited.timed_out()
    }

    fn progressed(&self, client: usize, start_ns: u64) {
        if let Some(p) = self.progress.get(client) {
            p.fetch_max(start_ns, Ordering::SeqCst);
        }
        let _guard = self.progress_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.progress_changed.notify_all();
    }
}

/// What went wrong on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Trouble {
    /// `connect` refused.
    Refused,
    /// Connection reset (or broken pipe, aborted).
    Reset,
    /// No reply (or no connect) within the bound.
    TimedOut,
    /// End of stream before a whole reply.
    Eof,
    /// `ERR sealed...`: the server asks for a retry on a new connection.
    Sealed,
    /// The server closed an idle connection (end of stream seen before the
    /// next request was written): a graceful close, no request at stake.
    ClosedIdle,
    /// Anything else.
    Other,
}

impl Trouble {
    const ALL: [Trouble; 7] = [
        Trouble::Refused,
        Trouble::Reset,
        Trouble::TimedOut,
        Trouble::Eof,
        Trouble::Sealed,
        Trouble::ClosedIdle,
        Trouble::Other,
    ];

    fn from_u8(v: u8) -> Trouble {
        Trouble::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Trouble::Other)
    }
}

pub(crate) fn classify(e: &io::Error) -> Trouble {
    match e.kind() {
        ErrorKind::ConnectionRefused => Trouble::Refused,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Trouble::Reset
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Trouble::TimedOut,
        ErrorKind::UnexpectedEof => Trouble::Eof,
        _ => Trouble::Other,
    }
}

/// Counts by [`Trouble`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TroubleCounts {
    /// Refused connects.
    pub refused: u64,
    /// Resets.
    pub reset: u64,
    /// Timeouts.
    pub timed_out: u64,
    /// End of stream.
    pub eof: u64,
    /// `ERR sealed` replies.
    pub sealed: u64,
    /// Idle connections found closed (cleanly) before reuse.
    pub closed_idle: u64,
    /// Other I/O errors or unexpected replies.
    pub other: u64,
}

impl TroubleCounts {
    pub(crate) fn count(&mut self, t: Trouble) {
        match t {
            Trouble::Refused => self.refused += 1,
            Trouble::Reset => self.reset += 1,
            Trouble::TimedOut => self.timed_out += 1,
            Trouble::Eof => self.eof += 1,
            Trouble::Sealed => self.sealed += 1,
            Trouble::ClosedIdle => self.closed_idle += 1,
            Trouble::Other => self.other += 1,
        }
    }

    pub(crate) fn add(&mut self, o: &TroubleCounts) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timed_out += o.timed_out;
        self.eof += o.eof;
        self.sealed += o.sealed;
        self.closed_idle += o.closed_idle;
        self.other += o.other;
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.refused
            + self.reset
            + self.timed_out
            + self.eof
            + self.sealed
            + self.closed_idle
            + self.other
    }
}

/// Requests inside windows that began in one step, and how many of them
/// were slow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepCount {
    /// The step (or "before the window opened").
    pub step: &'static str,
    /// Requests that started in it.
    pub requests: u64,
    /// Of which slower than the threshold.
    pub slow: u64,
}

/// Where the slow requests inside windows started: which step of the
/// handoff (or of the spawn-only window) was under way.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowRequests {
    /// Slow means slower than this: 3× the baseline p99, the most the
    /// issue's target lets the in-window p99 be.
    pub threshold_us: f64,
    /// Inside handoff windows, by [`HANDOFF_STEPS`].
    pub handoff: Vec<StepCount>,
    /// Inside spawn-only windows, by [`SPAWN_STEPS`].
    pub spawn_only: Vec<StepCount>,
}

/// The first row of a breakdown: requests already running when their
/// window opened.
const BEFORE_OPEN: &str = "already running when the window opened";

fn step_rows(steps: &[&'static str]) -> Vec<StepCount> {
    std::iter::once(BEFORE_OPEN)
        .chain(steps.iter().copied())
        .map(|step| StepCount {
            step,
            ..Default::default()
        })
        .collect()
}

impl SlowRequests {
    fn new(threshold_ns: u64) -> Self {
        Self {
            threshold_us: threshold_ns as f64 / 1e3,
            handoff: step_rows(&HANDOFF_STEPS),
            spawn_only: step_rows(&SPAWN_STEPS),
        }
    }

    fn place(&mut self, r: &clients::RequestRecord, t: &Timeline) {
        if r.failed.is_some() {
            return;
        }
        let slow = r.end_ns.saturating_sub(r.start_ns) as f64 > self.threshold_us * 1e3;
        let phase = t.phase_at(r.end_ns);
        let (windows, rows) = match phase {
            LoadPhase::During => (&t.handoff_windows, &mut self.handoff),
            LoadPhase::SpawnFloor => (&t.spawn_windows, &mut self.spawn_only),
            _ => return,
        };
        let Some(w) = overlapping_window(windows, r.start_ns, r.end_ns) else {
            return;
        };
        let steps = match phase {
            LoadPhase::During => t.handoff_steps.get(w).map(|s| s.as_slice()),
            _ => t.spawn_steps.get(w).map(|s| s.as_slice()),
        };
        let row = steps
            .and_then(|s| step_at(s, r.start_ns))
            .map_or(0, |i| i + 1);
        rows[row].requests += 1;
        rows[row].slow += u64::from(slow);
    }
}

/// Latency histograms by where a request ran.
#[derive(Debug, Clone, Default)]
pub struct PhaseHistograms {
    /// Baseline.
    pub before: Histogram,
    /// During the handoff phase, overlapping a handoff window.
    pub in_window: Histogram,
    /// During the handoff phase, outside every window.
    pub between_windows: Histogram,
    /// After the handoffs.
    pub after: Histogram,
    /// Overlapping a spawn-only window.
    pub in_spawn_window: Histogram,
}

impl PhaseHistograms {
    /// The baseline: requests while no handoff ran, before the handoffs and
    /// after them (and the spawn-only windows), pooled; twice the samples
    /// of either, and a transient on the machine during one of them weighs
    /// half as much.
    pub fn baseline(&self) -> Histogram {
        let mut pooled = self.before.clone();
        pooled.merge(&self.after);
        pooled
    }
}

/// Successful requests completed in each phase (for requests per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Completions {
    /// In the baseline.
    pub before: u64,
    /// In the handoff phase.
    pub during: u64,
    /// Of which while a window was open.
    pub during_in_window: u64,
    /// After.
    pub after: u64,
    /// While a spawn-only window was open.
    pub in_spawn_window: u64,
}

/// What the clients saw, placed against the bench's timeline.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Latency of successful requests.
    pub latency: PhaseHistograms,
    /// Successful requests by phase of completion.
    pub completions: Completions,
    /// Requests that failed (deadline passed) after warm-up, by their last
    /// trouble.
    pub failed: TroubleCounts,
    /// What the clients counted as they went.
    pub seen: clients::Counters,
    /// Where the slow requests inside windows started.
    pub slow: SlowRequests,
}

impl ClientReport {
    /// Place each request of `counters`' request files against `timeline`
    /// (complete: windows and their steps).
    pub fn from_requests(counters: clients::Counters, timeline: &Timeline) -> io::Result<Self> {
        let mut report = ClientReport {
            seen: counters,
            ..Default::default()
        };
        let files = report.seen.request_files.clone();
        for_each_request(&files, |r| report.place(r, timeline))?;
        // Second pass, now that the baseline is known.
        let threshold_ns = report
            .latency
            .baseline()
            .percentile_ns(99.0)
            .saturating_mul(3);
        let mut slow = SlowRequests::new(threshold_ns);
        for_each_request(&files, |r| slow.place(r, timeline))?;
        report.slow = slow;
        Ok(report)
    }

    fn place(&mut self, r: &clients::RequestRecord, timeline: &Timeline) {
        let phase = timeline.phase_at(r.end_ns);
        let Some(trouble) = r.failed else {
            self.place_success(phase, r, timeline);
            return;
        };
        if phase != LoadPhase::WarmUp {
            self.failed.count(Trouble::from_u8(trouble));
        }
    }

    fn place_success(&mut self, phase: LoadPhase, r: &clients::RequestRecord, t: &Timeline) {
        let latency = r.end_ns.saturating_sub(r.start_ns);
        let h = &mut self.latency;
        let c = &mut self.completions;
        match phase {
            LoadPhase::WarmUp => {}
            LoadPhase::Before => {
                h.before.record(latency);
                c.before += 1;
            }
            LoadPhase::During => {
                let (overlapped, open_at_end) =
                    window_overlap(&t.handoff_windows, r.start_ns, r.end_ns);
                if overlapped {
                    h.in_window.record(latency);
                } else {
                    h.between_windows.record(latency);
                }
                c.during += 1;
                if open_at_end {
                    c.during_in_window += 1;
                }
            }
            LoadPhase::SpawnFloor => {
                let (overlapped, open_at_end) =
                    window_overlap(&t.spawn_windows, r.start_ns, r.end_ns);
                if overlapped {
                    h.in_spawn_window.record(latency);
                }
                if open_at_end {
                    c.in_spawn_window += 1;
                }
            }
            LoadPhase::After => {
                h.after.record(latency);
                c.after += 1;
            }
        }
    }
}

/// Call `f` on every request of `files`.
fn for_each_request(
    files: &[PathBuf],
    mut f: impl FnMut(&clients::RequestRecord),
) -> io::Result<()> {
    for path in files {
        for line in BufReader::new(File::open(path)?).lines() {
            let request = clients::RequestRecord::parse(&line?).ok_or_else(|| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad request record in {}", path.display()),
                )
            })?;
            f(&request);
        }
    }
    Ok(())
}

/// The clients process, running.
pub struct Load {
    shared: Arc<LoadShared>,
    child: Child,
    stdin: Option<ChildStdin>,
    /// The reader of the child's stdout: its final counters.
    report: mpsc::Receiver<io::Result<clients::Counters>>,
    reader: Option<JoinHandle<()>>,
    stop_bound: Duration,
}

impl Load {
    /// Start the clients process (`program`: this binary) against `addr`.
    pub fn start(program: &Path, addr: SocketAddr, config: &LoadConfig) -> io::Result<Self> {
        let spec = clients::ClientsSpec {
            parent_pid: std::process::id() as i32,
            addr,
            config: config.clone(),
        };
        let config_json = serde_json::to_string(&spec).map_err(io::Error::other)?;
        let mut child = Command::new(program)
            .env(clients::CLIENTS_ENV, config_json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("clients process has no stdout pipe"))?;
        let shared = Arc::new(LoadShared::new(config.clients));
        let (tx, report) = mpsc::channel();
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("bench-clients-reader".into())
                .spawn(move || {
                    let _ = tx.send(clients::read_reports(stdout, &shared));
                })?
        };
        Ok(Self {
            shared,
            child,
            stdin,
            report,
            reader: Some(reader),
            stop_bound: config.request_deadline + CLIENTS_EXIT_SLACK,
        })
    }

    /// The clients' progress.
    pub fn shared(&self) -> &LoadShared {
        &self.shared
    }

    /// Stop every client (each finishes its request in flight, bounded by
    /// its deadline); what they did is then in the files
    /// [`ClientReport::from_requests`] reads.
    pub fn stop(mut self) -> io::Result<clients::Counters> {
        // End of input tells the clients process to stop.
        drop(self.stdin.take());
        let counters = match self.report.recv_timeout(self.stop_bound) {
            Ok(counters) => counters?,
            Err(_) => {
                return Err(io::Error::other(format!(
                    "the clients process did not report within {:?} of being told to stop",
                    self.stop_bound
                )));
            }
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let status = self.child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "the clients process exited with {status}"
            )));
        }
        Ok(counters)
    }
}

/// How long past its request deadline the clients process may take to write
/// its files and exit once told to stop.
const CLIENTS_EXIT_SLACK: Duration = Duration::from_secs(5);

impl Drop for Load {
    /// A clients process left running (the bench failed midway) is killed.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The file of client `id`'s acknowledged writes.
pub fn acked_file(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("acked-{id}.log"))
}

/// Result of checking acknowledged writes against the store's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DurabilityCheck {
    /// Acknowledged writes checked.
    pub acked: u64,
    /// Of which absent from the log, or present with another key or value.
    pub lost: u64,
    /// Records in the log.
    pub log_records: u64,
    /// The first few lost writes, verbatim.
    pub examples: Vec<String>,
}

/// Check every line `<seq> <key> <value>` of `acked_files` against the fake
/// peer's log (`kv.log`: `<seq> <key> <value>` per record, seq from 1).
pub fn check_durability(log_path: &Path, acked_files: &[PathBuf]) -> io::Result<DurabilityCheck> {
    let log = std::fs::read_to_string(log_path)?;
    let records: Vec<&str> = log.lines().collect();
    let mut check = DurabilityCheck {
        log_records: records.len() as u64,
        ..Default::default()
    };
    for path in acked_files {
        for line in BufReader::new(File::open(path)?).lines() {
            let line = line?;
            let Some((seq, rest)) = line.split_once(' ') else {
                continue;
            };
            check.acked += 1;
            let found = seq
                .parse::<usize>()
                .ok()
                .and_then(|s| s.checked_sub(1))
                .and_then(|idx| records.get(idx))
                .is_some_and(|record| record.split_once(' ') == Some((seq, rest)));
            if !found {
                check.lost += 1;
                if check.examples.len() < 10 {
                    check.examples.push(line);
                }
            }
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_check_finds_missing_and_mismatched_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kv.log");
        std::fs::write(&log, "1 a v1\n2 b v2\n3 a v3\n").unwrap();
        let acked = dir.path().join("acked-0.log");
        std::fs::write(&acked, "1 a v1\n3 a v3\n2 b v9\n4 c v4\n").unwrap();
        let check = check_durability(&log, &[acked]).unwrap();
        assert_eq!((check.acked, check.lost, check.log_records), (4, 2, 3));
        assert_eq!(check.examples, vec!["2 b v9", "4 c v4"]);
    }

    #[test]
    fn troubles_are_classified_by_kind() {
        let e = |k| io::Error::from(k);
        assert_eq!(classify(&e(ErrorKind::ConnectionRefused)), Trouble::Refused);
        assert_eq!(classify(&e(ErrorKind::ConnectionReset)), Trouble::Reset);
        assert_eq!(classify(&e(ErrorKind::BrokenPipe)), Trouble::Reset);
        assert_eq!(classify(&e(ErrorKind::WouldBlock)), Trouble::TimedOut);
        let mut c = TroubleCounts::default();
        c.count(Trouble::Eof);
        c.count(Trouble::Reset);
        assert_eq!((c.eof, c.reset, c.total()), (1, 1, 2));
    }

    #[test]
    fn a_window_open_at_any_instant_of_a_request_counts() {
        let windows = [(10, 20), (40, 50)];
        assert_eq!(window_overlap(&windows, 0, 5), (false, false)); // before all
        assert_eq!(window_overlap(&windows, 5, 12), (true, true)); // open at end
        assert_eq!(window_overlap(&windows, 15, 25), (true, false)); // open at start
        assert_eq!(window_overlap(&windows, 30, 60), (true, false)); // opened and closed during
        assert_eq!(window_overlap(&windows, 21, 39), (false, false)); // between
        assert_eq!(window_overlap(&windows, 42, 45), (true, true)); // inside
        assert_eq!(window_overlap(&windows, 51, 60), (false, false)); // after all
        assert_eq!(window_overlap(&[], 0, 60), (false, false));
    }

    #[test]
    fn slow_requests_are_placed_by_the_step_they_started_in() {
        let mut t = Timeline::with_capacity(1);
        t.phase_starts = [100, 200, 300, 400];
        t.handoff_windows.push((210, 290));
        // Steps from 210; the successor's Hello (step 2) was not seen.
        t.handoff_steps.push([210, 220, 0, 240, 250, 260]);
        t.spawn_windows.push((310, 390));
        t.spawn_steps.push([310, 330]);
        let mut slow = SlowRequests::new(10_000); // 10 µs
        let req = |start_ns, end_ns| clients::RequestRecord {
            start_ns,
            end_ns,
            failed: None,
        };
        for r in [
            req(205, 212),          // already running at the trigger, fast
            req(221, 239),          // spawned → (Hello unseen) → step 1, fast
            req(245, 245 + 20_000), // client gap, slow... but ends in phase After
            req(245, 249),          // client gap, fast
            req(255, 256),          // accepts → commit
            req(150, 160),          // baseline: not in a window
            req(311, 329),          // spawn: the child running
            req(335, 336),          // after it exited
        ] {
            slow.place(&r, &t);
        }
        // A slow one in the gap, placed in phase During.
        let mut t2 = t.clone();
        t2.phase_starts[2] = u64::MAX - 1;
        t2.phase_starts[3] = u64::MAX;
        slow.place(&req(245, 245 + 20_000), &t2);
        let counts = |rows: &[StepCount]| -> Vec<(u64, u64)> {
            rows.iter().map(|r| (r.requests, r.slow)).collect()
        };
        assert_eq!(
            counts(&slow.handoff),
            vec![(1, 0), (0, 0), (1, 0), (0, 0), (2, 1), (1, 0), (0, 0)]
        );
        assert_eq!(counts(&slow.spawn_only), vec![(0, 0), (1, 0), (1, 0)]);
        assert_eq!(step_at(&[210, 220, 0, 240], 230), Some(1));
        assert_eq!(step_at(&[210, 220, 0, 240], 200), None);
    }

    #[test]
    fn requests_are_placed_by_the_phase_they_end_in() {
        let mut t = Timeline::with_capacity(1);
        t.phase_starts = [100, 200, 300, 400];
        t.handoff_windows.push((210, 220));
        t.spawn_windows.push((310, 320));
        let ok = |start_ns, end_ns| clients::RequestRecord {
            start_ns,
            end_ns,
            failed: None,
        };
        let mut r = ClientReport::default();
        for req in [
            ok(10, 20),
            ok(150, 160),
            ok(195, 205),
            ok(215, 225),
            ok(230, 240),
        ] {
            r.place(&req, &t);
        }
        r.place(&ok(305, 315), &t);
        r.place(&ok(330, 340), &t);
        r.place(&ok(450, 460), &t);
        r.place(
            &clients::RequestRecord {
                start_ns: 5,
                end_ns: 15,
                failed: Some(Trouble::Reset as u8),
            },
            &t,
        );
        r.place(
            &clients::RequestRecord {
                start_ns: 250,
                end_ns: 260,
                failed: Some(Trouble::TimedOut as u8),
            },
            &t,
        );
        assert_eq!(r.latency.before.count(), 1);
        assert_eq!(r.latency.in_window.count(), 1);
        assert_eq!(r.latency.between_windows.count(), 2);
        assert_eq!(r.latency.in_spawn_window.count(), 1);
        assert_eq!(r.latency.after.count(), 1);
        assert_eq!(r.completions.before, 1);
        assert_eq!(r.completions.during, 3);
        assert_eq!(r.completions.during_in_window, 0);
        assert_eq!((r.failed.reset, r.failed.timed_out), (0, 1));
    }

    #[test]
    fn waiting_for_progress_is_bounded() {
        let shared = LoadShared::new(2);
        shared.progressed(0, 10);
        assert!(!shared.wait_all_progressed(5, Duration::from_millis(1)));
        shared.progressed(1, 11);
        assert!(shared.wait_all_progressed(5, Duration::from_millis(1)));
    }
}
