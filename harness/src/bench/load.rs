//! The live client load: threads that talk to the fake peer over loopback
//! TCP with persistent connections, paced at a fixed request rate.
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
//! Latencies go into fixed-size histograms by phase, so the recorder does
//! not grow the bench process (whose RSS is measured as the supervisor's).
//! A request counts as *inside a handoff window* when a window (from the
//! trigger to the new incumbent answering) was open at any instant between
//! its start and its end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff::util::monotonic_ns;
use serde::Serialize;

use super::stats::Histogram;

/// How the clients behave.
#[derive(Debug, Clone)]
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
    /// Where each client appends its acknowledged writes.
    pub acked_dir: PathBuf,
}

/// Which part of the run a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LoadPhase {
    /// Connections warming up: not recorded.
    WarmUp = 0,
    /// Baseline, before any handoff.
    Before = 1,
    /// While handoffs run.
    During = 2,
    /// After the last handoff.
    After = 3,
}

impl LoadPhase {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => LoadPhase::Before,
            2 => LoadPhase::During,
            3 => LoadPhase::After,
            _ => LoadPhase::WarmUp,
        }
    }
}

/// State shared between the bench's main thread and the clients.
pub struct LoadShared {
    phase: AtomicU8,
    windows_started: AtomicU64,
    windows_ended: AtomicU64,
    stop: AtomicBool,
    /// Per client: start (`mono_ns`) of its last request that succeeded.
    progress: Vec<AtomicU64>,
    progress_lock: Mutex<()>,
    progress_changed: Condvar,
}

impl LoadShared {
    fn new(clients: usize) -> Self {
        Self {
            phase: AtomicU8::new(LoadPhase::WarmUp as u8),
            windows_started: AtomicU64::new(0),
            windows_ended: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            progress: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            progress_lock: Mutex::new(()),
            progress_changed: Condvar::new(),
        }
    }

    /// Enter `phase`.
    pub fn set_phase(&self, phase: LoadPhase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// A handoff window opens (call just before the trigger).
    pub fn open_window(&self) {
        self.windows_started.fetch_add(1, Ordering::SeqCst);
    }

    /// The window closes (call once the new incumbent answers).
    pub fn close_window(&self) {
        self.windows_ended.fetch_add(1, Ordering::SeqCst);
    }

    /// Wait until every client has completed a request that started after
    /// `after_ns` (so each holds a connection to whoever serves now), at
    /// most `timeout`. False on timeout.
    pub fn wait_all_progressed(&self, after_ns: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.progress_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self
                .progress
                .iter()
                .all(|p| p.load(Ordering::SeqCst) > after_ns)
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .progress_changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn progressed(&self, client: usize, start_ns: u64) {
        self.progress[client].store(start_ns, Ordering::SeqCst);
        let _guard = self.progress_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.progress_changed.notify_all();
    }

    fn windows(&self) -> (u64, u64) {
        // Read `ended` first: a window that ends between the two loads then
        // still looks open, never the reverse.
        let ended = self.windows_ended.load(Ordering::SeqCst);
        let started = self.windows_started.load(Ordering::SeqCst);
        (started, ended)
    }
}

/// What went wrong on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

fn classify(e: &io::Error) -> Trouble {
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
    fn count(&mut self, t: Trouble) {
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

    fn add(&mut self, o: &TroubleCounts) {
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
}

impl PhaseHistograms {
    fn merge(&mut self, o: &PhaseHistograms) {
        self.before.merge(&o.before);
        self.in_window.merge(&o.in_window);
        self.between_windows.merge(&o.between_windows);
        self.after.merge(&o.after);
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
}

/// What one client (or all, merged) saw.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Latency of successful requests.
    pub latency: PhaseHistograms,
    /// Successful requests by phase of completion.
    pub completions: Completions,
    /// Troubles seen and retried past.
    pub troubles_seen: TroubleCounts,
    /// Requests that failed (deadline passed), by their last trouble.
    pub failed: TroubleCounts,
    /// Requests that needed more than one attempt.
    pub retried_requests: u64,
    /// Most attempts one request took.
    pub max_attempts: u64,
    /// `GET`s that did not return the last acknowledged value.
    pub stale_reads: u64,
    /// `PUT`s acknowledged.
    pub acked_puts: u64,
    /// Replies that made no sense (counted in `failed.other` too).
    pub bad_replies: u64,
    /// Files of acknowledged writes (`<seq> <key> <value>` lines).
    pub acked_files: Vec<PathBuf>,
}

impl ClientReport {
    fn merge(&mut self, o: &ClientReport) {
        self.latency.merge(&o.latency);
        self.completions.before += o.completions.before;
        self.completions.during += o.completions.during;
        self.completions.during_in_window += o.completions.during_in_window;
        self.completions.after += o.completions.after;
        self.troubles_seen.add(&o.troubles_seen);
        self.failed.add(&o.failed);
        self.retried_requests += o.retried_requests;
        self.max_attempts = self.max_attempts.max(o.max_attempts);
        self.stale_reads += o.stale_reads;
        self.acked_puts += o.acked_puts;
        self.bad_replies += o.bad_replies;
        self.acked_files.extend(o.acked_files.iter().cloned());
    }
}

/// Running clients.
pub struct Load {
    shared: Arc<LoadShared>,
    threads: Vec<JoinHandle<io::Result<ClientReport>>>,
}

impl Load {
    /// Start `config.clients` clients against `addr`.
    pub fn start(addr: SocketAddr, config: &LoadConfig) -> io::Result<Self> {
        let shared = Arc::new(LoadShared::new(config.clients));
        let mut threads = Vec::with_capacity(config.clients);
        for id in 0..config.clients {
            let shared = Arc::clone(&shared);
            let config = config.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-client-{id}"))
                    .spawn(move || Client::new(id, addr, config, shared)?.run())?,
            );
        }
        Ok(Self { shared, threads })
    }

    /// The state shared with the clients.
    pub fn shared(&self) -> &LoadShared {
        &self.shared
    }

    /// Stop every client (each finishes its request in flight, bounded by
    /// its deadline) and merge what they saw.
    pub fn stop(mut self) -> io::Result<ClientReport> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut merged = ClientReport::default();
        for t in std::mem::take(&mut self.threads) {
            let report = t
                .join()
                .map_err(|_| io::Error::other("a client thread panicked"))??;
            merged.merge(&report);
        }
        Ok(merged)
    }
}

impl Drop for Load {
    /// Clients left running (the bench failed midway) stop after their
    /// request in flight.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

struct Client {
    id: usize,
    addr: SocketAddr,
    config: LoadConfig,
    shared: Arc<LoadShared>,
    conn: Option<Connection>,
    report: ClientReport,
    acked: BufWriter<File>,
    /// Per key: the counter of the last acknowledged value, and whether a
    /// later `PUT` failed (its value is then unknown).
    last_value: Vec<(Option<u64>, bool)>,
    line: Vec<u8>,
}

/// Outcome of one request.
enum Outcome {
    Ok(String),
    Failed(Trouble),
}

impl Client {
    fn new(
        id: usize,
        addr: SocketAddr,
        config: LoadConfig,
        shared: Arc<LoadShared>,
    ) -> io::Result<Self> {
        let acked_path = acked_file(&config.acked_dir, id);
        let acked = BufWriter::with_capacity(64 * 1024, File::create(&acked_path)?);
        let keys = config.keys_per_client.max(1);
        Ok(Self {
            id,
            addr,
            shared,
            conn: None,
            report: ClientReport {
                acked_files: vec![acked_path],
                ..Default::default()
            },
            acked,
            last_value: vec![(None, false); keys],
            line: Vec::with_capacity(256),
            config,
        })
    }

    fn run(mut self) -> io::Result<ClientReport> {
        let interval_ns = (1e9 / self.config.rate_per_client_hz.max(1.0)) as u64;
        // Stagger the clients across one interval.
        let mut next_ns =
            monotonic_ns() + interval_ns * self.id as u64 / self.config.clients.max(1) as u64;
        let keys = self.last_value.len() as u64;
        let mut i: u64 = 0;
        while !self.shared.stop.load(Ordering::SeqCst) {
            let now = monotonic_ns();
            if next_ns > now {
                // Pacing the request rate, not synchronisation.
                std::thread::sleep(Duration::from_nanos(next_ns - now));
            }
            next_ns += interval_ns;
            let now = monotonic_ns();
            if next_ns < now {
                next_ns = now;
            }
            let key = (i % keys) as usize;
            let is_put = (i * 37 % 100) < u64::from(self.config.put_percent);
            let request = if is_put {
                format!("PUT c{}k{key} v{}x{i}\n", self.id, self.id)
            } else {
                format!("GET c{}k{key}\n", self.id)
            };
            let (s0, e0) = self.shared.windows();
            let start_ns = monotonic_ns();
            let (outcome, attempts) = self.request(request.as_bytes(), start_ns);
            let end_ns = monotonic_ns();
            let (s1, e1) = self.shared.windows();
            let phase = LoadPhase::from_u8(self.shared.phase.load(Ordering::SeqCst));
            if attempts > 1 {
                self.report.retried_requests += 1;
            }
            self.report.max_attempts = self.report.max_attempts.max(attempts);
            match outcome {
                Outcome::Ok(reply) => {
                    self.check_reply(key, i, is_put, &reply)?;
                    self.record(phase, start_ns, end_ns, (s0, e0), (s1, e1));
                    self.shared.progressed(self.id, start_ns);
                }
                Outcome::Failed(trouble) => {
                    if phase != LoadPhase::WarmUp {
                        self.report.failed.count(trouble);
                    }
                    if is_put {
                        self.last_value[key].1 = true;
                    }
                }
            }
            i += 1;
        }
        self.acked.flush()?;
        Ok(self.report)
    }

    fn record(
        &mut self,
        phase: LoadPhase,
        start_ns: u64,
        end_ns: u64,
        (s0, e0): (u64, u64),
        (s1, e1): (u64, u64),
    ) {
        let latency = end_ns.saturating_sub(start_ns);
        // Open at the start, or a window started while the request ran.
        let overlapped = s0 > e0 || s1 > s0;
        let open_at_end = s1 > e1;
        let h = &mut self.report.latency;
        match phase {
            LoadPhase::WarmUp => {}
            LoadPhase::Before => {
                h.before.record(latency);
                self.report.completions.before += 1;
            }
            LoadPhase::During => {
                if overlapped {
                    h.in_window.record(latency);
                } else {
                    h.between_windows.record(latency);
                }
                self.report.completions.during += 1;
                if open_at_end {
                    self.report.completions.during_in_window += 1;
                }
            }
            LoadPhase::After => {
                h.after.record(latency);
                self.report.completions.after += 1;
            }
        }
    }

    fn check_reply(&mut self, key: usize, i: u64, is_put: bool, reply: &str) -> io::Result<()> {
        let (last, uncertain) = self.last_value[key];
        if is_put {
            match reply
                .strip_prefix("OK ")
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                Some(seq) => {
                    writeln!(self.acked, "{seq} c{}k{key} v{}x{i}", self.id, self.id)?;
                    self.report.acked_puts += 1;
                    self.last_value[key] = (Some(i), false);
                }
                None => {
                    self.report.bad_replies += 1;
                    self.last_value[key].1 = true;
                }
            }
            return Ok(());
        }
        let got = if reply.trim() == "NOTFOUND" {
            Some(None)
        } else {
            reply.strip_prefix("VALUE ").map(|v| {
                v.trim()
                    .rsplit_once('x')
                    .and_then(|(_, n)| n.parse::<u64>().ok())
            })
        };
        match got {
            None => self.report.bad_replies += 1,
            Some(got) if uncertain => self.last_value[key] = (got.or(last), false),
            Some(got) if got != last => self.report.stale_reads += 1,
            Some(_) => {}
        }
        Ok(())
    }

    /// Send `request` and read its reply line, reconnecting and retrying
    /// until `request_deadline` after `start_ns`.
    fn request(&mut self, request: &[u8], start_ns: u64) -> (Outcome, u64) {
        let deadline_ns = start_ns + self.config.request_deadline.as_nanos() as u64;
        let mut attempts = 0;
        let mut last = Trouble::TimedOut;
        loop {
            if attempts > 0 && monotonic_ns() >= deadline_ns {
                return (Outcome::Failed(last), attempts);
            }
            attempts += 1;
            // A pooled connection the server has closed since its last reply
            // is seen here, before a request is written on it.
            if let Some(conn) = &self.conn
                && let Some(trouble) = closed_while_idle(&conn.writer)
            {
                self.report.troubles_seen.count(trouble);
                self.conn = None;
            }
            if self.conn.is_none() {
                match self.connect() {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        last = classify(&e);
                        self.report.troubles_seen.count(last);
                        // Pacing reconnects to a listener that refuses.
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            self.line.clear();
            let exchanged = conn
                .writer
                .write_all(request)
                .and_then(|()| conn.reader.read_until(b'\n', &mut self.line));
            let trouble = match exchanged {
                Ok(_) if self.line.last() == Some(&b'\n') => {
                    let reply = String::from_utf8_lossy(&self.line).into_owned();
                    if reply.starts_with("ERR sealed") {
                        Trouble::Sealed
                    } else if reply.starts_with("ERR") {
                        self.report.bad_replies += 1;
                        return (Outcome::Failed(Trouble::Other), attempts);
                    } else {
                        return (Outcome::Ok(reply), attempts);
                    }
                }
                // End of stream, possibly mid-line.
                Ok(_) => Trouble::Eof,
                Err(e) => classify(&e),
            };
            last = trouble;
            self.report.troubles_seen.count(trouble);
            self.conn = None;
        }
    }

    fn connect(&self) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&self.addr, self.config.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.config.read_timeout))?;
        stream.set_write_timeout(Some(self.config.read_timeout))?;
        Ok(Connection {
            reader: BufReader::with_capacity(4096, stream.try_clone()?),
            writer: stream,
        })
    }
}

/// What an idle connection (no request outstanding) has to say: nothing
/// (`None`, reusable), end of stream (closed cleanly), a reset, or bytes
/// nobody asked for. Never blocks.
fn closed_while_idle(stream: &TcpStream) -> Option<Trouble> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::{AsFd, AsRawFd};
    // End of stream and resets make a socket readable (POLLHUP and POLLERR
    // are always reported).
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let mut byte = [0u8; 1];
    Some(
        match recv(
            stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => Trouble::ClosedIdle,
            Ok(_) => Trouble::Other,
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(e) => classify(&io::Error::from(e)),
        },
    )
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
        let shared = LoadShared::new(1);
        // (started, ended) before and after a request.
        let overlapped = |(s0, e0): (u64, u64), (s1, _e1): (u64, u64)| s0 > e0 || s1 > s0;
        assert!(!overlapped((0, 0), (0, 0)));
        assert!(overlapped((1, 0), (1, 1))); // open at start
        assert!(overlapped((0, 0), (1, 1))); // opened and closed during
        assert!(overlapped((0, 0), (1, 0))); // open at end
        assert!(!overlapped((1, 1), (1, 1))); // closed before
        shared.open_window();
        assert_eq!(shared.windows(), (1, 0));
        shared.close_window();
        assert_eq!(shared.windows(), (1, 1));
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
