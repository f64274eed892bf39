//! The fake peer's client protocol: one request per line, one reply per line.
//!
//! ```text
//! PUT <key> <value>\n   ->  OK <seq>\n       (only once the record is fsynced)
//! GET <key>\n           ->  VALUE <value>\n  or  NOTFOUND\n
//! PING\n                ->  PONG <pid>\n
//! anything else         ->  ERR <reason>\n
//! ```
//!
//! Keys and values are non-empty tokens without whitespace. A line longer
//! than [`MAX_LINE_BYTES`] is answered with `ERR` and the connection closed.
//!
//! Parsing and rendering are pure; [`read_request_line`] is the one thin
//! I/O helper, generic over [`BufRead`] so it is tested on byte slices.

use std::io::{self, BufRead};

/// Longest request line accepted, newline included.
pub const MAX_LINE_BYTES: usize = 4096;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PUT <key> <value>`: append to the log, fsync, then acknowledge.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `GET <key>`: read the current value.
    Get {
        /// The key.
        key: String,
    },
    /// `PING`: liveness; the reply names the serving process.
    Ping,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `OK <seq>`: the `PUT` is durable as record `seq`.
    Ok {
        /// The record's sequence number.
        seq: u64,
    },
    /// `VALUE <value>`.
    Value(String),
    /// `NOTFOUND`.
    NotFound,
    /// `PONG <pid>`.
    Pong {
        /// The pid of the serving process.
        pid: u32,
    },
    /// `ERR <reason>`; the reason is one line.
    Err(String),
}

impl Response {
    /// The reply as one line, newline included.
    pub fn render(&self) -> String {
        match self {
            Response::Ok { seq } => format!("OK {seq}\n"),
            Response::Value(v) => format!("VALUE {v}\n"),
            Response::NotFound => "NOTFOUND\n".to_string(),
            Response::Pong { pid } => format!("PONG {pid}\n"),
            // A reason never spans lines: the client reads one line per reply.
            Response::Err(reason) => format!("ERR {}\n", reason.replace(['\n', '\r'], " ")),
        }
    }
}

/// Parse one request line (without or with its trailing `\n` / `\r\n`).
///
/// The error is the reason sent back in `ERR <reason>`.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let mut tokens = line.split_whitespace();
    let verb = tokens.next().ok_or_else(|| "empty request".to_string())?;
    let args: Vec<&str> = tokens.collect();
    match (verb, args.as_slice()) {
        ("PUT", [key, value]) => Ok(Request::Put {
            key: (*key).to_string(),
            value: (*value).to_string(),
        }),
        ("PUT", _) => Err("usage: PUT <key> <value>".to_string()),
        ("GET", [key]) => Ok(Request::Get {
            key: (*key).to_string(),
        }),
        ("GET", _) => Err("usage: GET <key>".to_string()),
        ("PING", []) => Ok(Request::Ping),
        ("PING", _) => Err("usage: PING".to_string()),
        (other, _) => Err(format!(
            "unknown command {:?}; expected PUT, GET or PING",
            truncate_for_reply(other)
        )),
    }
}

fn truncate_for_reply(s: &str) -> &str {
    const MAX: usize = 32;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What [`read_request_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// A complete line (with its `\n`) is in the buffer.
    Line,
    /// The stream ended. Any partial line without its `\n` was discarded: a
    /// request that never fully arrived is never executed.
    Eof,
    /// The line exceeded `max_bytes`; the caller answers `ERR` and closes.
    TooLong,
}

/// Read one `\n`-terminated line into `line` (cleared first), reading at most
/// `max_bytes` from `reader` for it.
pub fn read_request_line<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max_bytes: usize,
) -> io::Result<LineRead> {
    line.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        let room = max_bytes.saturating_sub(line.len());
        match available.iter().position(|b| *b == b'\n') {
            Some(i) if i < room => {
                line.extend_from_slice(&available[..=i]);
                reader.consume(i + 1);
                return Ok(LineRead::Line);
            }
            _ if available.len() >= room => return Ok(LineRead::TooLong),
            _ => {
                let n = available.len();
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
    }
}
