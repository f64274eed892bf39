//! The trigger socket: how an operator (or `ExecReload=`) asks a running
//! daemon for a handoff or its status, and the `trigger` client.
//!
//! Protocol: the client connects, writes one line, and reads one line back.
//!
//! | request | reply |
//! | --- | --- |
//! | `status` | one JSON object (see the daemon module) |
//! | `handoff` | after the handoff ends: `committed <id> pid=<new pid>`, `aborted <id>: <reason>` or `error: <what>` |
//! | `handoff <binary>` | the same, spawning `<binary>` (with the configured args) as the successor |
//!
//! The socket is bound under a temporary name, set to mode 0600 and renamed
//! into place, so it is never reachable with wider permissions; each peer's
//! uid is checked with `SO_PEERCRED` (this daemon's uid, or root) before a
//! byte is read. Requests are one line of at most [`MAX_LINE_BYTES`], read
//! within [`READ_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request line.
pub const MAX_LINE_BYTES: usize = 4096;
/// A client must send its line within this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most trigger connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Hand off to a new process (of `binary`, or the current one).
    Handoff {
        /// The successor's binary, when not the current one.
        binary: Option<PathBuf>,
    },
    /// Report the daemon's state.
    Status,
}

/// Parse one request line (pure).
pub fn parse_command(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    let command = match (words.next(), words.next()) {
        (Some("status"), None) => Command::Status,
        (Some("handoff"), binary) => Command::Handoff {
            binary: binary.map(PathBuf::from),
        },
        _ => {
            return Err(format!(
                "unknown request {line:?}: expected `handoff [binary]` or `status`"
            ));
        }
    };
    if words.next().is_some() {
        return Err(format!(
            "request {line:?} has extra words: expected `handoff [binary]` or `status`"
        ));
    }
    Ok(command)
}

/// Whether a peer of `peer_uid` may use the socket of a daemon running as
/// `own_uid`: the same user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// A request handed to the daemon, with where the reply goes.
pub struct Request {
    /// What was asked.
    pub command: Command,
    /// The asking process, from `SO_PEERCRED`.
    pub peer_pid: i32,
    /// The reply line (without newline). Dropping it answers
    /// `error: the daemon is shutting down`.
    pub reply: mpsc::Sender<String>,
}

/// The bound trigger socket and its accept thread.
pub struct TriggerServer {
    listener: Arc<UnixListener>,
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    active: Arc<Active>,
    acceptor: Option<JoinHandle<()>>,
}

/// Connection threads still running, so `stop` can wait for their replies.
#[derive(Default)]
struct Active {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Active {
    /// Count one more connection, unless `MAX_CONNECTIONS` are running.
    fn try_enter(&self) -> bool {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if *n >= MAX_CONNECTIONS {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Wait until no connection runs, at most until `deadline`.
    fn wait_idle(&self, deadline: Instant) {
        let n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let left = deadline.saturating_duration_since(Instant::now());
        drop(self.changed.wait_timeout_while(n, left, |n| *n > 0));
    }
}

/// Bind `path` with mode 0600 (bind under a temporary name, chmod, rename).
/// A stale socket file is replaced; one that answers means another daemon
/// runs, and is an error.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    match UnixStream::connect(path) {
        Ok(_) => {
            return Err(format!(
                "trigger socket {} is answered by a live process: is another daemon running?",
                path.display()
            ));
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {}
        Err(e) => {
            return Err(format!(
                "cannot check trigger socket {}: {e}",
                path.display()
            ));
        }
    }
    handoff::incumbent::bind_private_socket(path)
        .map_err(|e| format!("cannot bind trigger socket {}: {e}", path.display()))
}

impl TriggerServer {
    /// Serve `listener` (bound at `path` by [`bind`]) on a thread; every
    /// request goes to `submit`, which returns false once the daemon no
    /// longer takes requests.
    pub fn start(
        listener: UnixListener,
        path: PathBuf,
        submit: impl Fn(Request) -> bool + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let active = Arc::new(Active::default());
        let acceptor = {
            let listener = Arc::clone(&listener);
            let stopping = Arc::clone(&stopping);
            let active = Arc::clone(&active);
            let submit = Arc::new(submit);
            std::thread::Builder::new()
                .name("trigger-accept".into())
                .spawn(move || accept_loop(&listener, &stopping, &active, submit))?
        };
        Ok(Self {
            listener,
            path,
            stopping,
            active,
            acceptor: Some(acceptor),
        })
    }

    /// Stop accepting and remove the socket file. Idempotent.
    pub fn close(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
        // Shutting our own listening socket down makes a blocked accept(2)
        // return; nobody else holds it.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }

    /// [`close`](Self::close), then wait (at most `bound`) for replies
    /// still being written.
    pub fn stop(mut self, bound: Duration) {
        self.close();
        self.active.wait_idle(Instant::now() + bound);
    }
}

fn accept_loop<F>(
    listener: &UnixListener,
    stopping: &AtomicBool,
    active: &Arc<Active>,
    submit: Arc<F>,
) where
    F: Fn(Request) -> bool + Send + Sync + 'static,
{
    let own_uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(target: crate::daemon::events::TRIGGER_REFUSED, error = %e, "trigger accept failed");
                // Pacing after a resource error (EMFILE...), which would
                // otherwise spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stopping.load(Ordering::SeqCst) {
            refuse(stream, "the daemon is shutting down");
            return;
        }
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
        let peer_pid = match cred {
            Ok(c) if peer_allowed(c.uid(), own_uid) => c.pid(),
            Ok(c) => {
                tracing::warn!(target: crate::daemon::events::TRIGGER_REFUSED, peer_uid = c.uid(), peer_pid = c.pid(), own_uid, "trigger from another uid refused");
                refuse(
                    stream,
                    "permission denied: the trigger socket serves its own uid only",
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(target: crate::daemon::events::TRIGGER_REFUSED, error = %e, "cannot read trigger peer credentials; refused");
                refuse(stream, "permission denied: peer credentials unavailable");
                continue;
            }
        };
        if !active.try_enter() {
            refuse(stream, "busy: too many trigger connections");
            continue;
        }
        let submit = Arc::clone(&submit);
        let active_conn = Arc::clone(active);
        let spawned = std::thread::Builder::new()
            .name("trigger-conn".into())
            .spawn(move || {
                serve_connection(stream, peer_pid, &*submit);
                active_conn.leave();
            });
        if spawned.is_err() {
            active.leave();
        }
    }
}

fn refuse(mut stream: UnixStream, why: &str) {
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let _ = writeln!(stream, "error: {why}");
}

fn serve_connection(stream: UnixStream, peer_pid: i32, submit: &dyn Fn(Request) -> bool) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let reply = match read_line(&stream) {
        Err(why) => format!("error: {why}"),
        Ok(line) => match parse_command(&line) {
            Err(why) => format!("error: {why}"),
            Ok(command) => {
                let (tx, rx) = mpsc::channel();
                if submit(Request {
                    command,
                    peer_pid,
                    reply: tx,
                }) {
                    // The daemon answers every request it took, or drops the
                    // sender when it exits; a handoff is bounded by its
                    // deadline, so this wait is too.
                    rx.recv()
                        .unwrap_or_else(|_| "error: the daemon is shutting down".into())
                } else {
                    "error: the daemon is shutting down".into()
                }
            }
        },
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

fn read_line(stream: &UnixStream) -> Result<String, String> {
    let mut reader = BufReader::new(stream.take(MAX_LINE_BYTES as u64 + 1));
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(_) if line.len() > MAX_LINE_BYTES => {
            Err(format!("request longer than {MAX_LINE_BYTES} bytes"))
        }
        Ok(_) => String::from_utf8(line)
            .map(|l| l.trim().to_string())
            .map_err(|_| "request is not UTF-8".to_string()),
        Err(e) if handoff::util::is_timeout(&e) => Err(format!(
            "no request line within {} ms",
            READ_TIMEOUT.as_millis()
        )),
        Err(e) => Err(format!("reading the request: {e}")),
    }
}

/// `handoff-supervisor trigger`: send one request to a running daemon and
/// print its reply.
#[derive(Debug, clap::Parser)]
#[command(
    name = "handoff-supervisor trigger",
    bin_name = "handoff-supervisor trigger",
    after_help = "EXIT CODES:\n  0   committed (handoff), or the status was printed\n  2   aborted: the incumbent serves on\n  3   error: the reply, or why the daemon could not be reached, is on stderr"
)]
pub struct TriggerCli {
    /// The daemon's trigger socket.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    socket: Option<PathBuf>,

    /// Read the trigger socket's path from the daemon's config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Give up waiting for the reply after this long.
    #[arg(long, value_name = "MS", default_value_t = 600_000)]
    timeout_ms: u64,

    #[command(subcommand)]
    request: TriggerRequest,
}

#[derive(Debug, clap::Subcommand)]
enum TriggerRequest {
    /// Hand the service off to a new process; waits for the outcome.
    Handoff {
        /// The successor's binary (default: the current incumbent's).
        binary: Option<PathBuf>,
    },
    /// Print the daemon's state as one JSON line.
    Status,
}

/// Run the client; returns the exit code.
pub fn run_client(cli: TriggerCli) -> i32 {
    use crate::oneshot::{EXIT_ABORTED, EXIT_COMMITTED, EXIT_ERROR};
    let socket = match (&cli.socket, &cli.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => match crate::config::DaemonConfig::load(c) {
            Ok(config) => config.trigger_socket,
            Err(e) => {
                eprintln!("handoff-supervisor trigger: {e}");
                return EXIT_ERROR;
            }
        },
        (None, None) => {
            eprintln!("handoff-supervisor trigger: give --socket <PATH> or --config <FILE>");
            return EXIT_ERROR;
        }
    };
    let line = match &cli.request {
        TriggerRequest::Status => "status".to_string(),
        TriggerRequest::Handoff { binary: None } => "handoff".to_string(),
        TriggerRequest::Handoff { binary: Some(b) } => {
            let text = b.to_string_lossy();
            if text.split_whitespace().count() != 1 {
                eprintln!(
                    "handoff-supervisor trigger: binary paths with whitespace cannot be sent"
                );
                return EXIT_ERROR;
            }
            format!("handoff {text}")
        }
    };
    let reply = match request(&socket, &line, Duration::from_millis(cli.timeout_ms)) {
        Ok(r) => r,
        Err(RequestError::Unreachable(e)) => {
            eprintln!(
                "handoff-supervisor trigger: cannot reach the daemon at {}: {e}\n\
                 handoff-supervisor trigger: next: is the daemon running? check its \
                 trigger_socket and that you run as its user",
                socket.display()
            );
            return EXIT_ERROR;
        }
        Err(RequestError::NoReply(e)) if handoff::util::is_timeout(&e) => {
            eprintln!(
                "handoff-supervisor trigger: the daemon took the request but sent no reply \
                 within --timeout-ms {}; it goes on regardless (a handoff runs to its end):\n\
                 handoff-supervisor trigger: next: `handoff-supervisor trigger --socket {} \
                 status` shows the outcome in last_handoff",
                cli.timeout_ms,
                socket.display()
            );
            return EXIT_ERROR;
        }
        Err(RequestError::NoReply(e)) => {
            eprintln!(
                "handoff-supervisor trigger: no reply from the daemon at {}: {e}\n\
                 handoff-supervisor trigger: next: `status` shows whether the request ran \
                 (last_handoff), and the daemon's log why it did not answer",
                socket.display()
            );
            return EXIT_ERROR;
        }
    };
    if let Some(error) = reply.strip_prefix("error: ") {
        eprintln!("handoff-supervisor trigger: {error}");
        return EXIT_ERROR;
    }
    println!("{reply}");
    match cli.request {
        TriggerRequest::Status => EXIT_COMMITTED,
        TriggerRequest::Handoff { .. } if reply.starts_with("committed ") => EXIT_COMMITTED,
        TriggerRequest::Handoff { .. } if reply.starts_with("aborted ") => EXIT_ABORTED,
        TriggerRequest::Handoff { .. } => EXIT_ERROR,
    }
}

/// Why a request got no reply.
#[derive(Debug)]
pub enum RequestError {
    /// Nothing was sent: the socket could not be connected to.
    Unreachable(std::io::Error),
    /// Sent (the daemon may be acting on it), but no reply came.
    NoReply(std::io::Error),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Unreachable(e) => write!(f, "cannot connect: {e}"),
            RequestError::NoReply(e) => write!(f, "no reply: {e}"),
        }
    }
}

/// Send `line`, read the one-line reply (without its newline), waiting at
/// most `timeout` for it.
pub fn request(socket: &Path, line: &str, timeout: Duration) -> Result<String, RequestError> {
    let mut stream = UnixStream::connect(socket).map_err(RequestError::Unreachable)?;
    stream
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .and_then(|()| stream.set_write_timeout(Some(READ_TIMEOUT)))
        .map_err(RequestError::Unreachable)?;
    // A daemon that refuses a peer replies and closes without reading: the
    // write may then fail (EPIPE) while the refusal waits to be read.
    let sent = writeln!(stream, "{line}").and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let mut reply = String::new();
    let read = BufReader::new(stream.take(1 << 20)).read_line(&mut reply);
    if !reply.is_empty() {
        return Ok(reply.trim_end().to_string());
    }
    sent.map_err(RequestError::NoReply)?;
    read.map_err(RequestError::NoReply)?;
    Err(RequestError::NoReply(std::io::Error::new(
        ErrorKind::UnexpectedEof,
        "the daemon closed the connection without a reply",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_command("status"), Ok(Command::Status));
        assert_eq!(
            parse_command(" handoff \n"),
            Ok(Command::Handoff { binary: None })
        );
        assert_eq!(
            parse_command("handoff /usr/bin/svc-2"),
            Ok(Command::Handoff {
                binary: Some("/usr/bin/svc-2".into())
            })
        );
        for bad in ["", "reload", "status now", "handoff a b", "HANDOFF"] {
            assert!(parse_command(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_same_uid_or_root_may_trigger() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(1000, 0));
    }

    #[test]
    fn the_socket_is_private_and_a_live_one_is_not_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trigger.sock");
        let first = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let e = bind(&path).unwrap_err();
        assert!(e.contains("another daemon"), "{e}");
        drop(first);
        // Stale (nobody listens): replaced.
        bind(&path).unwrap();
    }

    #[test]
    fn a_request_round_trips_through_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let server = TriggerServer::start(bind(&path).unwrap(), path.clone(), |req: Request| {
            let _ = req.reply.send(format!("got {:?}", req.command));
            true
        })
        .unwrap();
        let reply = request(&path, "status", Duration::from_secs(5)).unwrap();
        assert_eq!(reply, "got Status");
        let reply = request(&path, "bogus", Duration::from_secs(5)).unwrap();
        assert!(reply.starts_with("error: unknown request"), "{reply}");
        server.stop(Duration::from_secs(1));
        assert!(!path.exists());
    }
}
