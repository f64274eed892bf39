//! HTTP clients for the upgrade tests of the example services: keep-alive
//! clients that follow the client-side rule of the drain contract
//! (`handoff::drain`: a request on a reused connection that closed before the
//! first byte of its response was not read by the server, and is resent once
//! on a new connection), and one-shot clients (a new connection per request,
//! never resent). Every other error is a failed request.
//!
//! Every second request is `POST /counter`; its acknowledged count is kept,
//! so the test can check that every acknowledged write is in the final
//! state.
#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bound on requests per client, so a loop stops by itself even if
/// the test thread died.
const MAX_REQUESTS_PER_CLIENT: u64 = 1_000_000;

/// What the clients saw, shared by all of them.
#[derive(Default)]
pub struct Load {
    pub stop: AtomicBool,
    /// Requests answered `200`.
    pub ok: AtomicU64,
    /// Requests resent under the rule (and then answered or failed).
    pub resent: AtomicU64,
    /// Of those, `POST`s: writes whose resend is safe only by the rule.
    pub resent_writes: AtomicU64,
    pub failures: Mutex<Vec<String>>,
    /// Pids that answered.
    pub servers: Mutex<BTreeSet<u32>>,
    /// Counts acknowledged by `POST /counter`.
    pub acked: Mutex<Vec<u64>>,
}

/// A response: its status line, whether the server closes the connection,
/// its body.
pub struct Response {
    pub status: String,
    pub close: bool,
    pub body: String,
}

/// Why a request got no complete response; `unanswered` when not a byte
/// of the response came (the resend rule's case).
pub struct NoResponse {
    pub unanswered: bool,
    pub why: String,
}

/// Send one request on `conn` and read its response.
pub fn exchange(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    close: bool,
) -> Result<Response, NoResponse> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: {connection}\r\nContent-Length: 0\r\n\r\n"
    );
    let unanswered = |why: String| NoResponse {
        unanswered: true,
        why,
    };
    let broken = |why: String| NoResponse {
        unanswered: false,
        why,
    };
    conn.get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| unanswered(format!("write: {e}")))?;
    let mut status = String::new();
    match conn.read_line(&mut status) {
        Ok(0) => return Err(unanswered("end of stream before the response".into())),
        Err(e) if status.is_empty() => return Err(unanswered(format!("read: {e}"))),
        Err(e) => return Err(broken(format!("read status line: {e}"))),
        Ok(_) => {}
    }
    let (mut length, mut server_closes) = (None, false);
    loop {
        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) => {
                return Err(broken(format!(
                    "end of stream in the head after {status:?}"
                )));
            }
            Err(e) => return Err(broken(format!("read head: {e}"))),
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if lower.starts_with("connection:") && lower.contains("close") {
            server_closes = true;
        }
    }
    let length = length.ok_or_else(|| broken(format!("no Content-Length after {status:?}")))?;
    let mut body = vec![0; length];
    conn.read_exact(&mut body)
        .map_err(|e| broken(format!("body of {length} bytes: {e}")))?;
    Ok(Response {
        status: status.trim_end().to_string(),
        close: server_closes,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn connect(addr: &str) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(BufReader::new(stream))
}

/// The `n`-th request of a client: `GET /` and `POST /counter` in turn.
fn request(n: u64) -> (&'static str, &'static str) {
    if n % 2 == 1 {
        ("POST", "/counter")
    } else {
        ("GET", "/")
    }
}

impl Load {
    fn fail(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }

    /// Account for a complete response.
    fn answered(&self, n: u64, response: &Response) {
        if response.status != "HTTP/1.1 200 OK" {
            return self.fail(format!(
                "request {n}: {:?} {:?}",
                response.status, response.body
            ));
        }
        let field = |name: &str| {
            response
                .body
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.parse::<u64>().ok())
        };
        let Some(pid) = field("pid=") else {
            return self.fail(format!("request {n}: no pid in {:?}", response.body));
        };
        self.servers.lock().unwrap().insert(pid as u32);
        if let Some(count) = field("count=") {
            self.acked.lock().unwrap().push(count);
        }
        self.ok.fetch_add(1, Ordering::SeqCst);
    }

    /// One persistent connection, reopened when the server closes it.
    pub fn keep_alive_client(&self, addr: &str) {
        let mut kept: Option<BufReader<TcpStream>> = None;
        for n in 0..MAX_REQUESTS_PER_CLIENT {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let (method, path) = request(n);
            loop {
                let reused = kept.is_some();
                let mut conn = match kept.take().map_or_else(|| connect(addr), Ok) {
                    Ok(conn) => conn,
                    Err(e) => break self.fail(format!("request {n}: connect: {e}")),
                };
                match exchange(&mut conn, method, path, false) {
                    Ok(response) => {
                        if !response.close {
                            kept = Some(conn);
                        }
                        break self.answered(n, &response);
                    }
                    // The rule: not a byte of response on a reused
                    // connection, so the server did not read it; resend
                    // on a new connection.
                    Err(e) if e.unanswered && reused => {
                        self.resent.fetch_add(1, Ordering::SeqCst);
                        if method == "POST" {
                            self.resent_writes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) => break self.fail(format!("request {n} {method} {path}: {}", e.why)),
                }
            }
        }
    }

    /// A new connection per request, `Connection: close`; never resent.
    pub fn one_shot_client(&self, addr: &str) {
        for n in 0..MAX_REQUESTS_PER_CLIENT {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let (method, path) = request(n);
            let result = connect(addr)
                .map_err(|e| format!("connect: {e}"))
                .and_then(|mut conn| exchange(&mut conn, method, path, true).map_err(|e| e.why));
            match result {
                Ok(response) => self.answered(n, &response),
                Err(why) => self.fail(format!("one-shot request {n} {method} {path}: {why}")),
            }
        }
    }
}

/// `GET /counter` on a new connection: the service's count.
pub fn counter(addr: &str) -> Result<u64, String> {
    let mut conn = connect(addr).map_err(|e| format!("connect: {e}"))?;
    let response = exchange(&mut conn, "GET", "/counter", true).map_err(|e| e.why)?;
    response
        .body
        .trim()
        .strip_prefix("count=")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("unexpected {:?} {:?}", response.status, response.body))
}
