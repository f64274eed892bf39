//! Live traffic beside the harness's writing client ([`crate::client`]):
//!
//! - a **reader** that speaks the fake peer's line protocol: it writes a
//!   key, reads it back at once (often from another process, when a handoff
//!   or a restart fell in between), and now and then reads an older key it
//!   wrote. Every reply is checked: a `GET` of an acknowledged key must
//!   return its value. Every connection starts with `PING`, so each failed
//!   request is charged to the process that held its connection (the
//!   `PONG <pid>`), and the episode can tell a request that failed because
//!   its process was killed or was handing off from one that should not
//!   have failed at all.
//!
//!   Like a keep-alive client, the reader checks its pooled connection
//!   before reusing it (a non-blocking peek: one the server closed while it
//!   was idle is replaced without a request being written on it), and when
//!   the connection ends under a request (end of stream, reset) it sends the
//!   request again on a fresh connection, until the request's deadline
//!   ([`ReaderConfig::retry_deadline`]) has passed. Its requests are
//!   idempotent: a `GET`, or a `PUT` of the one value the reader writes to a
//!   key only it writes. So a request fails only when it could not complete
//!   within its deadline; every connection that ended under the reader is
//!   still kept ([`ReaderReport::retried`]) and must be explained, like a
//!   failure, by a kill or a drain of the process that held it;
//! - a **prober** that only connects and closes, on every listener, so "no
//!   connection is ever refused" is checked for any service, whatever its
//!   protocol.
//!
//! Both pace themselves (a few milliseconds between requests) and stop when
//! told; every blocking call is bounded.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use handoff::util::monotonic_ns;

use crate::client::{Acked, ConnOptions, LineConn, Patience, Reply};

/// Bound on one blocking connect or read before the stop flag is checked.
const STEP: Duration = Duration::from_millis(100);
/// Pacing between requests.
const PACE: Duration = Duration::from_millis(2);
/// A request unanswered this long is a failure in itself (nothing in an
/// episode keeps a request waiting that long: the longest legitimate wait
/// is a restart after a kill, well under it).
pub const STALL_BOUND: Duration = Duration::from_secs(10);
/// Failed requests kept verbatim (the rest are counted).
const MAX_KEPT: usize = 500;
/// Interval of the prober's connects.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// How the reader behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Bound on one request, its retries included: a request whose
    /// connection ends under it (end of stream, reset) is sent again on a
    /// fresh connection while less than this has passed since its first
    /// attempt; past it, the request failed (and is tried again as a new
    /// request).
    pub retry_deadline: Duration,
}

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `connect` got `ECONNREFUSED`.
    Refused,
    /// The connection ended (EOF, reset) before the reply: in
    /// [`ReaderReport::failed`], once the request's retry deadline had
    /// passed; in [`ReaderReport::retried`], a connection replaced.
    Closed(String),
    /// The service answered `ERR ...`.
    ErrReply(String),
    /// No reply within [`STALL_BOUND`].
    Stalled,
}

/// One request that was not answered as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    /// The request line (`PUT r5 w5`, `GET r5`, `PING`).
    pub request: String,
    /// The pid that answered `PING` on its connection, if it did.
    pub holder: Option<u32>,
    /// When the connection was opened (`CLOCK_MONOTONIC` ns).
    pub connected_ns: u64,
    /// When the failure was seen.
    pub failed_ns: u64,
    /// How.
    pub failure: Failure,
}

/// A read that returned something other than the acknowledged value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The key.
    pub key: String,
    /// The value acknowledged for it.
    pub expected: String,
    /// The reply.
    pub got: String,
    /// The pid that answered.
    pub holder: Option<u32>,
    /// When.
    pub at_ns: u64,
}

/// What the reader saw.
#[derive(Debug, Clone, Default)]
pub struct ReaderReport {
    /// Its acknowledged writes (they are in `kv.log` too).
    pub acked: Vec<Acked>,
    /// Reads that returned the acknowledged value.
    pub reads_ok: u64,
    /// Reads that did not.
    pub mismatches: Vec<Mismatch>,
    /// Failed requests (the first `MAX_KEPT`).
    pub failed: Vec<FailedRequest>,
    /// Failed requests in all.
    pub failed_total: u64,
    /// Connections that ended under the reader (seen idle before reuse, or
    /// under a request that was then sent again within its deadline), the
    /// first `MAX_KEPT`. None is a failed request, but each must be
    /// explained like one.
    pub retried: Vec<FailedRequest>,
    /// Such connections in all.
    pub retried_total: u64,
    /// Requests sent (or attempted).
    pub attempts: u64,
}

/// What the prober saw.
#[derive(Debug, Clone, Default)]
pub struct ProberReport {
    /// Connects attempted.
    pub connects: u64,
    /// `ECONNREFUSED`, with when.
    pub refused_at_ns: Vec<u64>,
    /// Other connect errors (timeouts when the accept queue is full).
    pub other_errors: u64,
}

/// Successful requests of the reader, announced to whoever waits for them.
#[derive(Default)]
struct Progress {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Progress {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    fn get(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait_for(&self, at_least: u64, timeout: Duration) -> bool {
        let count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let (count, _) = self
            .changed
            .wait_timeout_while(count, timeout, |n| *n < at_least)
            .unwrap_or_else(|p| p.into_inner());
        *count >= at_least
    }
}

/// The running traffic.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    /// Successful requests of the reader so far.
    progress: Arc<Progress>,
    reader: Option<JoinHandle<ReaderReport>>,
    probers: Vec<JoinHandle<ProberReport>>,
}

impl Traffic {
    /// Start the prober on every address, and the reader on `reader_addr`
    /// when the service speaks the fake peer's protocol.
    pub fn start(
        reader_addr: Option<SocketAddr>,
        probe_addrs: &[SocketAddr],
        config: ReaderConfig,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let reader = reader_addr.and_then(|addr| {
            let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
            std::thread::Builder::new()
                .name("chaos-reader".into())
                .spawn(move || read_loop(addr, config, &stop, &progress))
                .ok()
        });
        let probers = probe_addrs
            .iter()
            .filter_map(|addr| {
                let (addr, stop) = (*addr, Arc::clone(&stop));
                std::thread::Builder::new()
                    .name("chaos-prober".into())
                    .spawn(move || probe_loop(addr, &stop))
                    .ok()
            })
            .collect();
        Self {
            stop,
            progress,
            reader,
            probers,
        }
    }

    /// Successful reader requests so far.
    pub fn progress(&self) -> u64 {
        self.progress.get()
    }

    /// Wait until the reader has answered `at_least` requests in all, at
    /// most `timeout`. False on timeout.
    pub fn wait_for_progress(&self, at_least: u64, timeout: Duration) -> bool {
        self.progress.wait_for(at_least, timeout)
    }

    /// Whether a reader runs.
    pub fn has_reader(&self) -> bool {
        self.reader.is_some()
    }

    /// Stop and collect what was seen.
    pub fn stop(mut self) -> (Option<ReaderReport>, ProberReport) {
        self.stop.store(true, Ordering::SeqCst);
        let reader = self.reader.take().map(|h| {
            h.join().unwrap_or_else(|_| ReaderReport {
                failed: vec![FailedRequest {
                    request: "<reader thread panicked>".into(),
                    holder: None,
                    connected_ns: 0,
                    failed_ns: 0,
                    failure: Failure::Closed("panic".into()),
                }],
                failed_total: 1,
                ..ReaderReport::default()
            })
        });
        let mut probe = ProberReport::default();
        for h in self.probers.drain(..) {
            if let Ok(p) = h.join() {
                probe.connects += p.connects;
                probe.refused_at_ns.extend(p.refused_at_ns);
                probe.other_errors += p.other_errors;
            }
        }
        (reader, probe)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A reader's connection and the process that answered its `PING`.
struct Conn {
    line: LineConn,
    holder: Option<u32>,
}

impl Conn {
    fn read(&mut self, stop: &AtomicBool) -> Reply {
        self.line.read_reply(Patience::Until {
            stop,
            stall: Some(STALL_BOUND),
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put { key: String, value: String },
    Get { key: String, value: String },
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Put { key, value } => format!("PUT {key} {value}"),
            Op::Get { key, .. } => format!("GET {key}"),
        }
    }
}

struct Reader<'a> {
    addr: SocketAddr,
    stop: &'a AtomicBool,
    retry_deadline_ns: u64,
    report: ReaderReport,
}

/// Why [`Reader::connect`] gave no connection.
enum NoConn {
    /// Nothing to retry on at once (refused, and recorded; a connect that
    /// timed out; the stop flag).
    Later,
    /// The connection ended before its `PONG` (end of stream, reset).
    Closed(Conn, String),
}

fn record(
    list: &mut Vec<FailedRequest>,
    total: &mut u64,
    request: String,
    conn: Option<&Conn>,
    failure: Failure,
) {
    *total += 1;
    if list.len() < MAX_KEPT {
        list.push(FailedRequest {
            request,
            holder: conn.and_then(|c| c.holder),
            connected_ns: conn.map_or(0, |c| c.line.connected_ns),
            failed_ns: monotonic_ns(),
            failure,
        });
    }
}

impl Reader<'_> {
    fn fail(&mut self, request: String, conn: Option<&Conn>, failure: Failure) {
        let r = &mut self.report;
        record(&mut r.failed, &mut r.failed_total, request, conn, failure);
    }

    /// A connection ended under the reader and what it carried is sent
    /// again on a fresh one: no failure, but kept to be explained.
    fn retried(&mut self, request: String, conn: Option<&Conn>, why: String) {
        let r = &mut self.report;
        record(
            &mut r.retried,
            &mut r.retried_total,
            request,
            conn,
            Failure::Closed(why),
        );
    }

    /// The connection ended under `request` (end of stream, reset), whose
    /// first attempt was at `started_ns`: within its deadline it is retried,
    /// past it the request failed. Returns the start of its next attempt's
    /// deadline (unchanged for a retry; now for a request tried anew).
    fn closed(
        &mut self,
        request: String,
        conn: Option<&Conn>,
        why: String,
        started_ns: u64,
    ) -> u64 {
        let now = monotonic_ns();
        if now.saturating_sub(started_ns) < self.retry_deadline_ns {
            self.retried(request, conn, why);
            started_ns
        } else {
            self.fail(request, conn, Failure::Closed(why));
            now
        }
    }

    /// Connect and learn who holds the connection (`PING`).
    fn connect(&mut self) -> Result<Conn, NoConn> {
        self.report.attempts += 1;
        let line = match LineConn::connect(self.addr, ConnOptions::stepped(STEP)) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                self.fail("connect".into(), None, Failure::Refused);
                return Err(NoConn::Later);
            }
            // The accept queue is full or slow: try again.
            Err(_) => return Err(NoConn::Later),
        };
        let mut conn = Conn { line, holder: None };
        if let Err(e) = conn.line.send("PING") {
            return Err(NoConn::Closed(conn, e.to_string()));
        }
        match conn.read(self.stop) {
            Reply::Line(l) => match l.strip_prefix("PONG ").and_then(|p| p.parse().ok()) {
                Some(pid) => {
                    conn.holder = Some(pid);
                    Ok(conn)
                }
                None => {
                    self.fail("PING".into(), Some(&conn), Failure::ErrReply(l));
                    Err(NoConn::Later)
                }
            },
            Reply::Gone(e) => Err(NoConn::Closed(conn, e.to_string())),
            Reply::Stalled => {
                self.fail("PING".into(), Some(&conn), Failure::Stalled);
                Err(NoConn::Later)
            }
            Reply::Stopped => Err(NoConn::Later),
        }
    }
}

/// How a pooled connection (no request outstanding) ended, if it did: end
/// of stream (the server shut it, as a drain does, or its process died) or
/// a reset; `None` while it is open. Never blocks.
/// The fake peer's answer to a write while it is sealed for a handoff
/// (`fake_peers::store::PutError::Sealed`): retry on a new connection.
const SEALED_REPLY: &str = "ERR sealed for handoff";

fn closed_while_idle(state: crate::client::IdleState) -> Option<String> {
    match state {
        crate::client::IdleState::Open => None,
        crate::client::IdleState::Ended => Some("end of stream while idle".into()),
        crate::client::IdleState::Failed(e) => Some(format!("{e} while idle")),
    }
}

fn read_loop(
    addr: SocketAddr,
    config: ReaderConfig,
    stop: &AtomicBool,
    progress: &Progress,
) -> ReaderReport {
    let mut r = Reader {
        addr,
        stop,
        retry_deadline_ns: u64::try_from(config.retry_deadline.as_nanos()).unwrap_or(u64::MAX),
        report: ReaderReport::default(),
    };
    let mut conn: Option<Conn> = None;
    let mut next_key: u64 = 0;
    // The request to send again, and the start of its deadline.
    let mut pending: Option<(Op, u64)> = None;
    let mut written: Vec<(String, String)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let (op, mut started_ns) = pending.take().unwrap_or_else(|| {
            next_key += 1;
            let op = if next_key.is_multiple_of(3) && !written.is_empty() {
                // An older key, spread over everything written so far.
                let i = (next_key.wrapping_mul(2_654_435_761) % written.len() as u64) as usize;
                let (key, value) = written[i].clone();
                Op::Get { key, value }
            } else {
                Op::Put {
                    key: format!("r{next_key}"),
                    value: format!("w{next_key}"),
                }
            };
            (op, monotonic_ns())
        });
        let line = op.line();
        // A pooled connection the server closed since its last reply is
        // replaced before a request is written on it.
        if let Some(why) = conn
            .as_ref()
            .and_then(|c| closed_while_idle(c.line.idle_state()))
        {
            let c = conn.take();
            r.retried(format!("(idle, before {line})"), c.as_ref(), why);
        }
        if conn.is_none() {
            match r.connect() {
                Ok(c) => conn = Some(c),
                Err(no) => {
                    if let NoConn::Closed(c, why) = no {
                        started_ns = r.closed("PING".into(), Some(&c), why, started_ns);
                    }
                    pending = Some((op, started_ns));
                    // Back-off before reconnecting (pacing, not a wait).
                    std::thread::sleep(PACE.max(Duration::from_millis(10)));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        r.report.attempts += 1;
        if let Err(e) = c.line.send(&line) {
            let c = conn.take();
            started_ns = r.closed(line, c.as_ref(), e.to_string(), started_ns);
            pending = Some((op, started_ns));
            continue;
        }
        match c.read(stop) {
            Reply::Line(reply) => match &op {
                Op::Put { key, value } => {
                    match reply.strip_prefix("OK ").and_then(|s| s.parse().ok()) {
                        Some(seq) => {
                            r.report.acked.push(Acked {
                                key: key.clone(),
                                value: value.clone(),
                                seq,
                            });
                            written.push((key.clone(), value.clone()));
                            progress.add();
                            // Read it back at once.
                            let get = Op::Get {
                                key: key.clone(),
                                value: value.clone(),
                            };
                            pending = Some((get, monotonic_ns()));
                        }
                        // The server is sealed for a handoff and asks for
                        // the write on a new connection: like a closure.
                        None if reply.starts_with(SEALED_REPLY) => {
                            let c = conn.take();
                            started_ns = r.closed(line, c.as_ref(), reply, started_ns);
                            pending = Some((op, started_ns));
                        }
                        None => {
                            let c = conn.take();
                            r.fail(line, c.as_ref(), Failure::ErrReply(reply));
                            pending = Some((op, monotonic_ns()));
                        }
                    }
                }
                Op::Get { key, value } => {
                    if reply == format!("VALUE {value}") {
                        r.report.reads_ok += 1;
                        progress.add();
                    } else if reply.starts_with("ERR") {
                        let c = conn.take();
                        r.fail(line, c.as_ref(), Failure::ErrReply(reply));
                        pending = Some((op, monotonic_ns()));
                    } else {
                        r.report.mismatches.push(Mismatch {
                            key: key.clone(),
                            expected: format!("VALUE {value}"),
                            got: reply,
                            holder: c.holder,
                            at_ns: monotonic_ns(),
                        });
                    }
                }
            },
            Reply::Gone(e) => {
                let c = conn.take();
                started_ns = r.closed(line, c.as_ref(), e.to_string(), started_ns);
                pending = Some((op, started_ns));
                // At once, on a fresh connection.
                continue;
            }
            Reply::Stalled => {
                let c = conn.take();
                r.fail(line, c.as_ref(), Failure::Stalled);
                pending = Some((op, monotonic_ns()));
            }
            Reply::Stopped => break,
        }
        std::thread::sleep(PACE);
    }
    r.report
}

fn probe_loop(addr: SocketAddr, stop: &AtomicBool) -> ProberReport {
    let mut report = ProberReport::default();
    while !stop.load(Ordering::SeqCst) {
        report.connects += 1;
        match TcpStream::connect_timeout(&addr, STEP) {
            Ok(s) => drop(s),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                report.refused_at_ns.push(monotonic_ns());
            }
            Err(_) => report.other_errors += 1,
        }
        std::thread::sleep(PROBE_EVERY);
    }
    report
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Shutdown, TcpListener};
    use std::os::fd::AsFd;
    use std::sync::mpsc;
    use std::time::Instant;

    use fake_peers::misbehaviour::Misbehaviour;
    use fake_peers::server::Server;
    use fake_peers::store::Store;
    use handoff::Drainable;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    fn config(retry_deadline: Duration) -> ReaderConfig {
        ReaderConfig { retry_deadline }
    }

    /// Wait (bounded) until `stream` is readable: data, end of stream or an
    /// error has arrived.
    fn wait_readable(stream: &TcpStream) {
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll");
        assert_eq!(n, 1, "nothing arrived on the socket within 10 s");
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// A scripted service on loopback: one thread hands each accepted
    /// connection to `serve` until `serve` returns false or [`stop`] is
    /// called.
    ///
    /// [`stop`]: ScriptedServer::stop
    struct ScriptedServer {
        addr: SocketAddr,
        done: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    }

    impl ScriptedServer {
        fn start(mut serve: impl FnMut(TcpStream) -> bool + Send + 'static) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let done = Arc::new(AtomicBool::new(false));
            let server_done = Arc::clone(&done);
            let thread = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    if server_done.load(Ordering::SeqCst) || !serve(stream) {
                        return;
                    }
                }
            });
            Self { addr, done, thread }
        }

        fn stop(self) {
            self.done.store(true, Ordering::SeqCst);
            // Wake the thread from its accept, to end it.
            drop(TcpStream::connect(self.addr));
            self.thread.join().unwrap();
        }
    }

    #[test]
    fn the_peek_tells_an_open_connection_from_a_closed_one() {
        // Open and quiet: reusable.
        let (client, server) = pair();
        assert_eq!(closed_while_idle(crate::client::idle_state(&client)), None);
        // Bytes nobody asked for are left to the next reply read.
        (&server).write_all(b"PONG 1\n").unwrap();
        wait_readable(&client);
        assert_eq!(closed_while_idle(crate::client::idle_state(&client)), None);
        // End of stream (what a drain sends), after the bytes.
        let (client, server) = pair();
        server.shutdown(Shutdown::Write).unwrap();
        wait_readable(&client);
        assert_eq!(
            closed_while_idle(crate::client::idle_state(&client)).as_deref(),
            Some("end of stream while idle")
        );
        // A reset.
        let (client, server) = pair();
        nix::sys::socket::setsockopt(
            &server,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(server);
        wait_readable(&client);
        let why = closed_while_idle(crate::client::idle_state(&client)).expect("a reset is seen");
        assert!(why.contains("reset"), "{why}");
    }

    /// The real fake peer's server drains (it shuts every idle connection,
    /// and accepts nothing) and then resumes, as an incumbent does when its
    /// handoff aborts: the reader replaces its closed connection, its
    /// request waits in the accept queue, and nothing counts as failed.
    #[test]
    fn a_connection_closed_by_a_drain_is_replaced_and_no_request_fails() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Server::start(
            Store::open(dir.path()).unwrap(),
            vec![("kv".into(), listener)],
            Misbehaviour::default(),
        )
        .unwrap();
        let traffic = Traffic::start(Some(addr), &[], config(BOUND));
        assert!(traffic.wait_for_progress(5, BOUND), "no traffic");
        let report = server.drain(Instant::now() + BOUND);
        assert_eq!(report.open_conns_remaining, 0);
        let answered = traffic.progress();
        server.resume_after_abort();
        assert!(
            traffic.wait_for_progress(answered + 5, BOUND),
            "no traffic after the resume"
        );
        let (reader, _) = traffic.stop();
        let reader = reader.unwrap();
        assert_eq!(reader.failed, vec![], "no request may fail");
        assert_eq!(reader.failed_total, 0);
        assert_eq!(reader.mismatches, vec![]);
        assert!(reader.retried_total >= 1, "the drain closed no connection");
        for f in &reader.retried {
            assert!(matches!(f.failure, Failure::Closed(_)), "{f:?}");
            assert_eq!(f.holder, Some(std::process::id()), "{f:?}");
        }
    }

    /// A service sealed for a handoff answers writes with `ERR sealed ...;
    /// retry on a new connection`: the reader does so, and nothing fails.
    /// (Scripted: the first two writes are answered sealed, then it serves.)
    #[test]
    fn a_write_answered_sealed_is_retried_on_a_new_connection() {
        let (sealed_tx, sealed) = mpsc::channel::<()>();
        let mut sealed_left = 2;
        let mut seq = 0u64;
        let server = ScriptedServer::start(move |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                let reply = match line.trim_end().split(' ').collect::<Vec<_>>()[..] {
                    ["PING"] => format!("PONG {}", std::process::id()),
                    ["PUT", _, _] if sealed_left > 0 => {
                        sealed_left -= 1;
                        let _ = sealed_tx.send(());
                        "ERR sealed for handoff; retry on a new connection".into()
                    }
                    ["PUT", _, _] => {
                        seq += 1;
                        format!("OK {seq}")
                    }
                    ["GET", key] => format!("VALUE w{}", key.trim_start_matches('r')),
                    _ => "ERR what".into(),
                };
                line.clear();
                if (&stream)
                    .write_all(format!("{reply}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
            true
        });
        let addr = server.addr;
        let traffic = Traffic::start(Some(addr), &[], config(BOUND));
        for _ in 0..2 {
            sealed
                .recv_timeout(BOUND)
                .expect("the reader sent no write");
        }
        assert!(
            traffic.wait_for_progress(3, BOUND),
            "no traffic after the seal"
        );
        let (reader, _) = traffic.stop();
        server.stop();
        let reader = reader.unwrap();
        assert_eq!(reader.failed, vec![], "no request may fail");
        assert_eq!(reader.mismatches, vec![]);
        assert_eq!(reader.retried_total, 2, "{:?}", reader.retried);
        for f in &reader.retried {
            assert!(
                matches!(&f.failure, Failure::Closed(why) if why.starts_with(SEALED_REPLY)),
                "{f:?}"
            );
            assert_eq!(f.request, "PUT r1 w1", "{f:?}");
        }
    }

    /// A service that answers `PING` and closes every connection on the
    /// next request: the reader retries each request until its deadline,
    /// then counts it failed (and keeps every closure before that).
    #[test]
    fn a_request_that_cannot_complete_within_its_deadline_fails() {
        let deadline = Duration::from_millis(50);
        let (closed_tx, closed) = mpsc::channel::<Instant>();
        let server = ScriptedServer::start(move |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line != "PING\n" {
                return true;
            }
            let _ = (&stream).write_all(format!("PONG {}\n", std::process::id()).as_bytes());
            line.clear();
            if matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                drop(stream);
                return closed_tx.send(Instant::now()).is_ok();
            }
            true
        });
        let addr = server.addr;
        let traffic = Traffic::start(Some(addr), &[], config(deadline));
        // Closures for more than two deadlines: the first request's deadline
        // has passed at a closure by then.
        let first = closed.recv_timeout(BOUND).expect("no request came");
        loop {
            let at = closed
                .recv_timeout(BOUND)
                .expect("the reader stopped retrying");
            if at.duration_since(first) > 2 * deadline {
                break;
            }
        }
        let (reader, _) = traffic.stop();
        server.stop();
        let reader = reader.unwrap();
        assert_eq!((reader.acked.len(), reader.reads_ok), (0, 0));
        assert!(
            reader.failed_total >= 1,
            "nothing failed ({} closures retried)",
            reader.retried_total
        );
        for f in &reader.failed {
            assert!(matches!(f.failure, Failure::Closed(_)), "{f:?}");
            assert_eq!(f.request, "PUT r1 w1", "{f:?}");
        }
        assert!(reader.retried_total >= 1, "nothing was retried");
    }
}
