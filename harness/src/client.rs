//! A small client that writes during a scenario and remembers every write
//! the service acknowledged, so the end of the scenario can prove none was
//! lost.
//!
//! It speaks the fake peer's line protocol over TCP to the listener the
//! harness holds: `PUT k<i> v<i>` until told to stop, each on the current
//! connection, reconnecting and retrying the same `PUT` (it is idempotent)
//! when the connection ends, is reset, or the reply is an `ERR` (for example
//! "sealed for handoff"). A write counts as acknowledged only on `OK <seq>`.
//! Connection refusals are counted: the harness holds the listening socket,
//! so there must be none, ever.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on one blocking read or connect before the stop flag is checked.
const POLL_STEP: Duration = Duration::from_millis(100);
/// Pacing between acknowledged writes (the stop signal ends it early).
const PACE: Duration = Duration::from_millis(3);
/// Bound on writes per scenario.
const MAX_WRITES: u64 = 20_000;

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The record number the service gave it.
    pub seq: u64,
}

/// What the client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Every acknowledged write, in order.
    pub acked: Vec<Acked>,
    /// `connect` calls that got `ECONNREFUSED`.
    pub refusals: u64,
    /// Connections that ended (EOF, reset) or were abandoned, so a request
    /// was retried on a new one.
    pub reconnects: u64,
    /// `ERR` replies (retried).
    pub err_replies: u64,
    /// Other I/O errors, verbatim (at most a few kept).
    pub errors: Vec<String>,
}

/// The running client.
pub struct Client {
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    handle: Option<JoinHandle<ClientReport>>,
}

impl Client {
    /// Start writing to `addr`.
    pub fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("harness-client".into())
            .spawn(move || write_loop(addr, &flag, &woken))
            .ok();
        Self { stop, wake, handle }
    }

    /// Stop (abandoning an unacknowledged request) and return what was seen.
    pub fn stop(mut self) -> ClientReport {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> ClientReport {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| ClientReport {
                errors: vec!["client thread panicked".into()],
                ..ClientReport::default()
            }),
            None => ClientReport {
                errors: vec!["client thread could not be started".into()],
                ..ClientReport::default()
            },
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.stop_inner();
        }
    }
}

/// One connection speaking the fake peer's line protocol: a request line,
/// a reply line. The harness's writer, the chaos reader and the bench's
/// clients all talk through it.
pub struct LineConn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// `CLOCK_MONOTONIC` when it was connected.
    pub connected_ns: u64,
}

/// How a [`LineConn`] connects and reads.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// Bound on `connect`.
    pub connect_timeout: Duration,
    /// Bound on one blocking read (and write, when set): with a stop flag,
    /// the step at which it is checked; without, the end of the request.
    pub io_timeout: Duration,
    /// Also bound writes by `io_timeout`.
    pub bound_writes: bool,
}

impl ConnOptions {
    /// Every connect, read and write bounded by `timeout`.
    pub fn within(timeout: Duration) -> Self {
        Self {
            connect_timeout: timeout,
            io_timeout: timeout,
            bound_writes: true,
        }
    }

    /// Connect and read in steps of `step`, writes unbounded.
    pub fn stepped(step: Duration) -> Self {
        Self {
            connect_timeout: step,
            io_timeout: step,
            bound_writes: false,
        }
    }
}

/// The reply to one request.
#[derive(Debug)]
pub enum Reply {
    /// A whole line, without its newline.
    Line(String),
    /// The connection ended (end of stream, possibly mid-line, or an error;
    /// a read timeout too, when nothing waits across them).
    Gone(std::io::Error),
    /// No reply within the stall bound.
    Stalled,
    /// The stop flag was set while waiting.
    Stopped,
}

/// How long [`LineConn::read_reply`] waits across read timeouts.
#[derive(Debug, Clone, Copy)]
pub enum Patience<'a> {
    /// A read timeout ends the request ([`Reply::Gone`]).
    None,
    /// Nobody serves right now (a handoff or a restart): the request waits
    /// in the accept queue or the socket, until `stop` is set or, when
    /// given, `stall` has passed.
    Until {
        /// Ends the wait.
        stop: &'a AtomicBool,
        /// Bound on the wait.
        stall: Option<Duration>,
    },
}

impl LineConn {
    /// Connect to `addr`.
    pub fn connect(addr: SocketAddr, options: ConnOptions) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, options.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(options.io_timeout))?;
        if options.bound_writes {
            stream.set_write_timeout(Some(options.io_timeout))?;
        }
        Ok(Self {
            reader: BufReader::with_capacity(4096, stream.try_clone()?),
            writer: stream,
            connected_ns: handoff::util::monotonic_ns(),
        })
    }

    /// Write one request line (the newline is added).
    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.writer.write_all(&bytes)
    }

    /// Read one reply line.
    pub fn read_reply(&mut self, patience: Patience) -> Reply {
        let started = Instant::now();
        let mut line = String::new();
        loop {
            match self.reader.read_line(&mut line) {
                Ok(0) if line.is_empty() => return Reply::Gone(eof("end of stream")),
                Ok(_) if line.ends_with('\n') => return Reply::Line(line.trim_end().to_string()),
                Ok(_) => return Reply::Gone(eof("end of stream mid-line")),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let Patience::Until { stop, stall } = patience else {
                        return Reply::Gone(e);
                    };
                    if stop.load(Ordering::SeqCst) {
                        return Reply::Stopped;
                    }
                    if stall.is_some_and(|s| started.elapsed() > s) {
                        return Reply::Stalled;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Reply::Gone(e),
            }
        }
    }

    /// Whether the server closed it since its last reply ([`idle_state`]).
    pub fn idle_state(&self) -> IdleState {
        idle_state(&self.writer)
    }
}

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(ErrorKind::UnexpectedEof, what.to_string())
}

fn connect(addr: SocketAddr, report: &mut ClientReport) -> Option<LineConn> {
    match LineConn::connect(addr, ConnOptions::stepped(POLL_STEP)) {
        Ok(c) => Some(c),
        Err(e) => {
            if e.kind() == ErrorKind::ConnectionRefused {
                report.refusals += 1;
            } else {
                note_error(report, format!("connect: {e}"));
            }
            None
        }
    }
}

fn note_error(report: &mut ClientReport, e: String) {
    if report.errors.len() < 8 {
        report.errors.push(e);
    }
}

fn write_loop(addr: SocketAddr, stop: &AtomicBool, woken: &mpsc::Receiver<()>) -> ClientReport {
    let mut report = ClientReport::default();
    let mut conn: Option<LineConn> = None;
    let mut i: u64 = 0;
    while !stop.load(Ordering::SeqCst) && i < MAX_WRITES {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let Some(c) = conn.as_mut() else {
            conn = connect(addr, &mut report);
            if conn.is_none() {
                // Back off one step before reconnecting (refusals must not
                // happen at all; this only bounds the loop's rate).
                let _ = woken.recv_timeout(POLL_STEP);
            }
            continue;
        };
        if c.send(&format!("PUT {key} {value}")).is_err() {
            conn = None;
            report.reconnects += 1;
            continue;
        }
        match c.read_reply(Patience::Until { stop, stall: None }) {
            Reply::Line(line) => {
                if let Some(seq) = line.strip_prefix("OK ").and_then(|s| s.parse().ok()) {
                    report.acked.push(Acked { key, value, seq });
                    i += 1;
                    let _ = woken.recv_timeout(PACE);
                } else {
                    report.err_replies += 1;
                    conn = None;
                    report.reconnects += 1;
                }
            }
            Reply::Gone(_) | Reply::Stalled => {
                conn = None;
                report.reconnects += 1;
            }
            Reply::Stopped => break,
        }
    }
    report
}

/// Send one request line on a fresh connection and read one reply line,
/// within `timeout`.
pub fn request(addr: SocketAddr, line: &str, timeout: Duration) -> std::io::Result<String> {
    let mut conn = LineConn::connect(addr, ConnOptions::within(timeout))?;
    conn.send(line)?;
    match conn.read_reply(Patience::None) {
        Reply::Line(reply) => Ok(reply),
        Reply::Gone(e) => Err(std::io::Error::new(
            e.kind(),
            format!("no full reply to {line:?}: {e}"),
        )),
        Reply::Stalled | Reply::Stopped => Err(ErrorKind::TimedOut.into()),
    }
}

/// One `PING` on a fresh connection, within `timeout`: the pid in its
/// `PONG <pid>` reply. Waits for the server to close its side, so its
/// connection is gone on return.
pub fn ping(addr: SocketAddr, timeout: Duration) -> std::io::Result<u32> {
    let mut conn = LineConn::connect(
        addr,
        ConnOptions::within(timeout.max(Duration::from_millis(1))),
    )?;
    conn.send("PING")?;
    let line = match conn.read_reply(Patience::None) {
        Reply::Line(line) => line,
        Reply::Gone(e) => return Err(e),
        Reply::Stalled | Reply::Stopped => return Err(ErrorKind::TimedOut.into()),
    };
    let pid = line
        .strip_prefix("PONG ")
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| std::io::Error::other(format!("expected PONG <pid>, got {line:?}")))?;
    conn.writer.shutdown(std::net::Shutdown::Write)?;
    std::io::copy(&mut conn.reader, &mut std::io::sink())?;
    Ok(pid)
}

/// `GET` many keys over one connection (pipelined), within `timeout`.
pub fn get_many(
    addr: SocketAddr,
    keys: &[String],
    timeout: Duration,
) -> std::io::Result<Vec<String>> {
    let mut conn = LineConn::connect(addr, ConnOptions::within(timeout))?;
    let mut out = Vec::with_capacity(keys.len());
    // Batches keep both socket buffers small.
    for chunk in keys.chunks(64) {
        let batch: Vec<String> = chunk.iter().map(|k| format!("GET {k}")).collect();
        conn.send(&batch.join("\n"))?;
        for _ in chunk {
            match conn.read_reply(Patience::None) {
                Reply::Line(reply) => out.push(reply),
                Reply::Gone(e) => return Err(e),
                Reply::Stalled | Reply::Stopped => return Err(ErrorKind::TimedOut.into()),
            }
        }
    }
    Ok(out)
}

/// How a pooled keep-alive connection (no request outstanding) stands.
#[derive(Debug)]
pub enum IdleState {
    /// Open: reuse it. (Bytes nobody asked for also leave it "open": the
    /// next reply read sees and reports them.)
    Open,
    /// The server shut it (a drain does, or its process died): replace it
    /// without writing a request on it.
    Ended,
    /// It failed (a reset): replace it.
    Failed(std::io::Error),
}

/// Whether `stream`, with no request outstanding, was closed by the server
/// since its last reply, as a keep-alive client checks before reusing a
/// connection. A non-blocking peek: never blocks, consumes nothing.
pub fn idle_state(stream: &TcpStream) -> IdleState {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => IdleState::Ended,
        Ok(_) => IdleState::Open,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => IdleState::Open,
        Err(e) => IdleState::Failed(std::io::Error::from(e)),
    }
}
