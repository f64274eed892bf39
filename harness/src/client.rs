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

struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

fn connect(addr: SocketAddr, report: &mut ClientReport) -> Option<Conn> {
    match TcpStream::connect_timeout(&addr, POLL_STEP) {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(POLL_STEP));
            let reader = BufReader::new(s.try_clone().ok()?);
            Some(Conn { writer: s, reader })
        }
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

enum Reply {
    Line(String),
    Gone,
    Stopped,
}

fn read_reply(conn: &mut Conn, stop: &AtomicBool) -> Reply {
    let mut line = String::new();
    loop {
        match conn.reader.read_line(&mut line) {
            Ok(0) => return Reply::Gone,
            Ok(_) if line.ends_with('\n') => return Reply::Line(line.trim_end().to_string()),
            Ok(_) => return Reply::Gone,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Nobody is serving right now (a handoff or a restart is in
                // progress): the request stays queued; keep waiting unless
                // the scenario is over.
                if stop.load(Ordering::SeqCst) {
                    return Reply::Stopped;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Reply::Gone,
        }
    }
}

fn write_loop(addr: SocketAddr, stop: &AtomicBool, woken: &mpsc::Receiver<()>) -> ClientReport {
    let mut report = ClientReport::default();
    let mut conn: Option<Conn> = None;
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
        if c.writer
            .write_all(format!("PUT {key} {value}\n").as_bytes())
            .is_err()
        {
            conn = None;
            report.reconnects += 1;
            continue;
        }
        match read_reply(c, stop) {
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
            Reply::Gone => {
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
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    ))?;
    (&stream).write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    if !reply.ends_with('\n') {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("connection ended before a full reply to {line:?} (got {reply:?})"),
        ));
    }
    Ok(reply.trim_end().to_string())
}

/// `GET` many keys over one connection (pipelined), within `timeout`.
pub fn get_many(
    addr: SocketAddr,
    keys: &[String],
    timeout: Duration,
) -> std::io::Result<Vec<String>> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = Vec::with_capacity(keys.len());
    // Batches keep both socket buffers small.
    for chunk in keys.chunks(64) {
        let mut req = String::new();
        for k in chunk {
            req.push_str("GET ");
            req.push_str(k);
            req.push('\n');
        }
        (&stream).write_all(req.as_bytes())?;
        for _ in chunk {
            let mut reply = String::new();
            if reader.read_line(&mut reply)? == 0 || !reply.ends_with('\n') {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection ended in the middle of the GETs",
                ));
            }
            out.push(reply.trim_end().to_string());
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
