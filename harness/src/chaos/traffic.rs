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
//!   have failed at all;
//! - a **prober** that only connects and closes, on every listener, so "no
//!   connection is ever refused" is checked for any service, whatever its
//!   protocol.
//!
//! Both pace themselves (a few milliseconds between requests) and stop when
//! told; every blocking call is bounded.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use handoff::util::monotonic_ns;

use crate::client::Acked;

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

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `connect` got `ECONNREFUSED`.
    Refused,
    /// The connection ended (EOF, reset) before the reply.
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

/// The running traffic.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    /// Successful requests of the reader so far.
    progress: Arc<AtomicU64>,
    reader: Option<JoinHandle<ReaderReport>>,
    probers: Vec<JoinHandle<ProberReport>>,
}

impl Traffic {
    /// Start the prober on every address, and the reader on `reader_addr`
    /// when the service speaks the fake peer's protocol.
    pub fn start(reader_addr: Option<SocketAddr>, probe_addrs: &[SocketAddr]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let reader = reader_addr.and_then(|addr| {
            let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
            std::thread::Builder::new()
                .name("chaos-reader".into())
                .spawn(move || read_loop(addr, &stop, &progress))
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
        self.progress.load(Ordering::SeqCst)
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

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    holder: Option<u32>,
    connected_ns: u64,
}

enum Reply {
    Line(String),
    Gone(String),
    Stalled,
    Stopped,
}

fn read_line(conn: &mut Conn, stop: &AtomicBool) -> Reply {
    let started = monotonic_ns();
    let mut line = String::new();
    loop {
        match conn.reader.read_line(&mut line) {
            Ok(0) => return Reply::Gone("end of stream".into()),
            Ok(_) if line.ends_with('\n') => return Reply::Line(line.trim_end().to_string()),
            Ok(_) => return Reply::Gone("end of stream mid-line".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Nobody serves right now (a handoff or a restart): the
                // request waits in the accept queue or the socket.
                if stop.load(Ordering::SeqCst) {
                    return Reply::Stopped;
                }
                if monotonic_ns().saturating_sub(started) > STALL_BOUND.as_nanos() as u64 {
                    return Reply::Stalled;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Reply::Gone(e.to_string()),
        }
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
    report: ReaderReport,
}

impl Reader<'_> {
    fn fail(&mut self, request: String, conn: Option<&Conn>, failure: Failure) {
        self.report.failed_total += 1;
        if self.report.failed.len() < MAX_KEPT {
            self.report.failed.push(FailedRequest {
                request,
                holder: conn.and_then(|c| c.holder),
                connected_ns: conn.map_or(0, |c| c.connected_ns),
                failed_ns: monotonic_ns(),
                failure,
            });
        }
    }

    /// Connect and learn who holds the connection (`PING`).
    fn connect(&mut self) -> Option<Conn> {
        self.report.attempts += 1;
        let stream = match TcpStream::connect_timeout(&self.addr, STEP) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                self.fail("connect".into(), None, Failure::Refused);
                return None;
            }
            // The accept queue is full or slow: try again.
            Err(_) => return None,
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(STEP));
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone().ok()?),
            writer: stream,
            holder: None,
            connected_ns: monotonic_ns(),
        };
        if let Err(e) = conn.writer.write_all(b"PING\n") {
            self.fail("PING".into(), Some(&conn), Failure::Closed(e.to_string()));
            return None;
        }
        match read_line(&mut conn, self.stop) {
            Reply::Line(l) => match l.strip_prefix("PONG ").and_then(|p| p.parse().ok()) {
                Some(pid) => {
                    conn.holder = Some(pid);
                    Some(conn)
                }
                None => {
                    self.fail("PING".into(), Some(&conn), Failure::ErrReply(l));
                    None
                }
            },
            Reply::Gone(why) => {
                self.fail("PING".into(), Some(&conn), Failure::Closed(why));
                None
            }
            Reply::Stalled => {
                self.fail("PING".into(), Some(&conn), Failure::Stalled);
                None
            }
            Reply::Stopped => None,
        }
    }
}

fn read_loop(addr: SocketAddr, stop: &AtomicBool, progress: &AtomicU64) -> ReaderReport {
    let mut r = Reader {
        addr,
        stop,
        report: ReaderReport::default(),
    };
    let mut conn: Option<Conn> = None;
    let mut next_key: u64 = 0;
    let mut pending: Option<Op> = None;
    let mut written: Vec<(String, String)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let op = pending.take().unwrap_or_else(|| {
            next_key += 1;
            if next_key.is_multiple_of(3) && !written.is_empty() {
                // An older key, spread over everything written so far.
                let i = (next_key.wrapping_mul(2_654_435_761) % written.len() as u64) as usize;
                let (key, value) = written[i].clone();
                Op::Get { key, value }
            } else {
                Op::Put {
                    key: format!("r{next_key}"),
                    value: format!("w{next_key}"),
                }
            }
        });
        if conn.is_none() {
            conn = r.connect();
            if conn.is_none() {
                pending = Some(op);
                std::thread::sleep(PACE.max(Duration::from_millis(10)));
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        r.report.attempts += 1;
        let line = op.line();
        if let Err(e) = c.writer.write_all(format!("{line}\n").as_bytes()) {
            let c = conn.take();
            r.fail(line, c.as_ref(), Failure::Closed(e.to_string()));
            pending = Some(op);
            continue;
        }
        match read_line(c, stop) {
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
                            progress.fetch_add(1, Ordering::SeqCst);
                            // Read it back at once.
                            pending = Some(Op::Get {
                                key: key.clone(),
                                value: value.clone(),
                            });
                        }
                        None => {
                            let c = conn.take();
                            r.fail(line, c.as_ref(), Failure::ErrReply(reply));
                            pending = Some(op);
                        }
                    }
                }
                Op::Get { key, value } => {
                    if reply == format!("VALUE {value}") {
                        r.report.reads_ok += 1;
                        progress.fetch_add(1, Ordering::SeqCst);
                    } else if reply.starts_with("ERR") {
                        let c = conn.take();
                        r.fail(line, c.as_ref(), Failure::ErrReply(reply));
                        pending = Some(op);
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
            Reply::Gone(why) => {
                let c = conn.take();
                r.fail(line, c.as_ref(), Failure::Closed(why));
                pending = Some(op);
            }
            Reply::Stalled => {
                let c = conn.take();
                r.fail(line, c.as_ref(), Failure::Stalled);
                pending = Some(op);
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
