//! An HTTP/1.1 server that upgrades without failing a request
//! (docs/embedding.md): `http_server CONTROL_SOCKET DATA_DIR`, under a
//! supervisor that passes it a listener named `http`. `GET /` answers
//! `pid=<pid>`; `POST /counter` adds one to a counter kept in DATA_DIR and
//! answers `pid=<pid> count=<n>` once the new count is on disk; `GET
//! /counter` answers the count. Connections are kept alive.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use handoff::drain::{Connection, Drain};
use handoff::{DataDirLock, DrainReport, Drainable, Incumbent, IncumbentConfig, Readiness, Role};
use handoff::{SealError, SealReport};

#[path = "support/counter.rs"]
mod counter;
use counter::Counter;

struct Server {
    drain: Drain,
    counter: Arc<Counter>,
}

impl Drainable for Server {
    /// Stop accepting, finish every request already read, close idle
    /// connections (the drain contract of `handoff::drain`).
    fn drain(&mut self, deadline: Instant) -> DrainReport {
        self.drain.drain(deadline)
    }

    /// Every acknowledged increment is already on disk: stop writing. The
    /// library releases the flock right after.
    fn seal(&mut self) -> Result<SealReport, SealError> {
        let count = self.counter.set_sealed(true);
        Ok(SealReport {
            last_revision_per_shard: vec![count],
            data_dir_fingerprint: format!("count={count}"),
        })
    }

    /// The handoff was aborted: write and accept again (idempotent).
    fn resume_after_abort(&mut self) {
        self.counter.set_sealed(false);
        self.drain.resume();
    }
}

fn accept_loop(drain: Drain, listener: TcpListener, counter: Arc<Counter>) {
    loop {
        match drain.accept(&listener) {
            Ok((stream, conn)) => {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || serve_connection(stream, conn, &counter));
            }
            Err(e) => {
                eprintln!("http_server: accept: {e}");
                std::thread::sleep(Duration::from_millis(10)); // back off (e.g. out of FDs)
            }
        }
    }
}

/// Requests on one connection until the client closes it, it errs, or the
/// drain ends it. `conn` is dropped on return: the drain counts it closed.
fn serve_connection(stream: TcpStream, mut conn: Connection, counter: &Counter) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    loop {
        // Drained while idle, or idle past the read timeout: close without
        // reading, so the client knows its next request was not seen.
        if reader.buffer().is_empty() && !conn.wait_for_request(&stream).unwrap_or(false) {
            return;
        }
        let Ok(Some((method, path, client_keeps_alive))) = read_head(&mut reader) else {
            return; // the client closed, or sent garbage
        };
        let (status, body) = match (method.as_str(), path.as_str()) {
            ("GET", "/") => ("200 OK", format!("pid={}\n", std::process::id())),
            ("GET", "/counter") => ("200 OK", format!("count={}\n", counter.count())),
            ("POST", "/counter") => match counter.increment() {
                Ok(n) => ("200 OK", format!("pid={} count={n}\n", std::process::id())),
                Err(e) => ("503 Service Unavailable", format!("{e}\n")),
            },
            _ => ("404 Not Found", String::new()),
        };
        let keep_alive = client_keeps_alive && conn.keep_alive();
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let response = format!(
            "HTTP/1.1 {status}\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if (&stream).write_all(response.as_bytes()).is_err() || !keep_alive {
            return;
        }
    }
}

/// Read a request's head (at most 8 KiB) and skip its body: `(method, path,
/// keep-alive)`, `None` at the end of the stream.
fn read_head(
    reader: &mut BufReader<&TcpStream>,
) -> std::io::Result<Option<(String, String, bool)>> {
    let (mut head, mut line) = (reader.by_ref().take(8192), String::new());
    if head.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace().map(str::to_string);
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (mut length, mut keep_alive) = (0u64, true);
    loop {
        line.clear();
        if head.read_line(&mut line)? <= 2 {
            break; // the blank line (or the end of the stream)
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(std::io::Error::other)?;
        } else if lower.starts_with("connection:") && lower.contains("close") {
            keep_alive = false;
        }
    }
    std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink())?;
    Ok(Some((method, path, keep_alive)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    handoff::events::init_from_env();
    let args: Vec<String> = std::env::args().collect();
    let [_, control, data_dir] = &args[..] else {
        return Err("usage: http_server CONTROL_SOCKET DATA_DIR".into());
    };
    let (control, data_dir) = (Path::new(control), Path::new(data_dir));
    // Everything that can fail comes before the take-over: a successor must
    // not fail after `Ready`, when its supervisor has committed and the old
    // incumbent exits.
    let config = IncumbentConfig::from_env()?;
    // Open the state only while holding the flock: a successor then sees
    // every write its predecessor acknowledged.
    let (incumbent, listener, counter) = match handoff::detect_role()? {
        Role::ColdStart { listeners } => {
            let mut http = listeners.into_iter().filter(|(name, _)| name == "http");
            let (_, listener) = http
                .next()
                .ok_or("no `http` listener: run me under a supervisor")?;
            let lock = DataDirLock::acquire(data_dir)?;
            let counter = Counter::open(data_dir)?;
            (
                Incumbent::bind_cold_start(control, lock)?,
                listener,
                counter,
            )
        }
        Role::Successor(successor) => {
            let mut handshook = successor.handshake(b"http-example".to_vec())?;
            // Start-up work that needs no flock belongs here, before Begin.
            handshook.prepare_control_socket(control)?;
            let mut begun = handshook.wait_for_begin()?; // the incumbent drained and sealed
            let listener = begun.take_listener("http")?;
            let lock = begun.acquire_lock(data_dir)?;
            let counter = Counter::open(data_dir)?;
            let ready = Readiness {
                healthz_ok: true,
                ..Readiness::default()
            };
            (
                begun.announce_and_bind(ready, control, lock)?,
                listener,
                counter,
            )
        }
    };
    let counter = Arc::new(counter);
    let drain = Drain::new();
    let (acceptor, state) = (drain.clone(), Arc::clone(&counter));
    std::thread::spawn(move || accept_loop(acceptor, listener, state));
    // Serve supervisor sessions; returns once a successor has taken over.
    incumbent
        .with_config(config)
        .serve(&mut Server { drain, counter })?;
    Ok(())
}
