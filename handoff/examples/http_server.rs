//! An HTTP server that upgrades without dropping a request (docs/embedding.md):
//! `http_server CONTROL_SOCKET DATA_DIR`, under a supervisor that passes it a
//! listener named `http`. Every request is answered `200` with the pid;
//! `POST /write?v=VALUE` first appends `VALUE` to `DATA_DIR/writes.log` and
//! fsyncs it (an acknowledged write is durable), and `GET /log` answers the
//! log itself. Only the process holding the data dir's flock serves, so the
//! log has one writer at a time.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::{fd::AsFd, unix::net::UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::{JoinHandle, spawn};
use std::time::{Duration, Instant};

use handoff::{DataDirLock, DrainReport, Drainable, Incumbent, IncumbentConfig, Readiness, Role};
use handoff::{SealError, SealReport};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

static IN_FLIGHT: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new()); // requests, answered
static WRITES: OnceLock<Mutex<PathBuf>> = OnceLock::new(); // the log; one append at a time

struct Server {
    listener: TcpListener,
    /// The accept thread, and the socket whose byte wakes it from poll(2).
    acceptor: Option<(UnixStream, JoinHandle<()>)>,
}

impl Server {
    fn accept(&mut self) -> std::io::Result<()> {
        let (wake, wake_rx) = UnixStream::pair()?;
        let listener = self.listener.try_clone()?;
        self.acceptor = Some((wake, spawn(move || accept_loop(listener, wake_rx))));
        Ok(())
    }
}

impl Drainable for Server {
    /// Stop accepting, then let every accepted request finish. The listener
    /// stays open: the kernel queues new connections for the successor.
    fn drain(&mut self, deadline: Instant) -> DrainReport {
        if let Some((mut wake, acceptor)) = self.acceptor.take() {
            let _ = wake.write_all(&[1]); // the accept thread returns at once
            let _ = acceptor.join(); // so every accepted request is counted below
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let (lock, answered) = &IN_FLIGHT;
        let (in_flight, _) = answered
            .wait_timeout_while(lock.lock().unwrap(), left, |n| *n > 0)
            .unwrap();
        DrainReport {
            open_conns_remaining: *in_flight,
            accept_closed: true,
        }
    }

    /// Nothing to make durable: this server keeps no state. A stateful one
    /// flushes and fsyncs here; the flock is released right after.
    fn seal(&mut self) -> Result<SealReport, SealError> {
        Ok(SealReport::default())
    }

    /// The handoff was aborted: serve again (idempotent).
    fn resume_after_abort(&mut self) {
        if self.acceptor.is_none() {
            self.accept()
                .unwrap_or_else(|e| eprintln!("http_server: cannot accept: {e}"));
        }
    }
}

fn accept_loop(listener: TcpListener, wake: UnixStream) {
    loop {
        let mut fds = [
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, PollTimeout::NONE); // EINTR: just go round again
        if fds[0].any() == Some(true) {
            return; // draining: accept nothing more
        } else if fds[1].any() != Some(true) {
            continue; // interrupted: accept(2) would block
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        *IN_FLIGHT.0.lock().unwrap() += 1;
        spawn(move || {
            let _ = respond(stream);
            *IN_FLIGHT.0.lock().unwrap() -= 1;
            IN_FLIGHT.1.notify_all();
        });
    }
}

fn respond(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (mut reader, mut request, mut line) = (
        BufReader::new((&stream).take(8192)),
        String::new(),
        String::new(),
    );
    reader.read_line(&mut request)?;
    while reader.read_line(&mut line)? > 2 {
        line.clear(); // skip the headers, up to the blank line
    }
    let pid = std::process::id();
    let body = match request.split_whitespace().take(2).collect::<Vec<_>>()[..] {
        ["POST", target] if target.starts_with("/write?v=") => {
            append(&target["/write?v=".len()..]).map(|()| format!("pid={pid}\n"))
        }
        ["GET", "/log"] => std::fs::read_to_string(&*log_path().lock().unwrap()),
        _ => Ok(format!("pid={pid}\n")),
    };
    let (status, body) = match body {
        Ok(body) => ("200 OK", body),
        Err(e) => ("500 Internal Server Error", format!("{e}\n")),
    };
    let head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length");
    write!(stream, "{head}: {}\r\n\r\n{body}", body.len())
}

fn log_path() -> &'static Mutex<PathBuf> {
    WRITES.get().expect("set in main")
}

/// Append one line to the log, durably, before the write is acknowledged.
fn append(value: &str) -> std::io::Result<()> {
    let path = log_path().lock().unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&*path)?;
    let created = log.metadata()?.len() == 0;
    // One write(2) of the whole line: a process killed between two writes
    // would leave half a line for the next append to run into.
    log.write_all(format!("{value}\n").as_bytes())?;
    log.sync_data()?;
    if created {
        // The new file's name must be durable too.
        std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    handoff::events::init_from_env();
    let args: Vec<String> = std::env::args().collect();
    let [_, control, data_dir] = &args[..] else {
        return Err("usage: http_server CONTROL_SOCKET DATA_DIR".into());
    };
    let (control, data_dir) = (Path::new(control), Path::new(data_dir));
    // Everything that can fail comes first: a successor must not fail after
    // `Ready`, when its supervisor has committed and the old incumbent exits.
    let config = IncumbentConfig::from_env()?;
    let _ = WRITES.set(Mutex::new(data_dir.join("writes.log")));
    let (incumbent, listener) = match handoff::detect_role()? {
        Role::ColdStart { listeners } => {
            let mut http = listeners.into_iter().filter(|(name, _)| name == "http");
            let (_, listener) = http
                .next()
                .ok_or("no `http` listener: run me under a supervisor")?;
            let lock = DataDirLock::acquire(data_dir)?;
            (Incumbent::bind_cold_start(control, lock)?, listener)
        }
        Role::Successor(successor) => {
            let mut handshook = successor.handshake(b"http-example".to_vec())?;
            // Start-up work that needs no flock belongs here, before Begin.
            handshook.prepare_control_socket(control)?;
            let mut begun = handshook.wait_for_begin()?; // the incumbent drained and sealed
            let listener = begun.take_listener("http")?;
            let lock = begun.acquire_lock(data_dir)?;
            let ready = Readiness {
                healthz_ok: true,
                ..Readiness::default()
            };
            (begun.announce_and_bind(ready, control, lock)?, listener)
        }
    };
    let mut server = Server {
        listener,
        acceptor: None,
    };
    server.accept()?;
    // Serve supervisor sessions; returns once a successor has taken over.
    incumbent.with_config(config).serve(&mut server)?;
    Ok(())
}
