//! The clients process: this binary again, started by [`super::Load`] with
//! [`CLIENTS_ENV`] set to a [`ClientsSpec`] as JSON. It runs one thread per
//! client until its stdin ends, then writes its counters and exits.
//!
//! On stdout, one line per event, for the bench:
//! `progress <client> <start_ns>` after each request that succeeded, then
//! `report <json>` ([`Counters`]) once every client has stopped. Each
//! client writes its requests to `requests-<client>.log` ([`RequestRecord`]
//! per line) and its acknowledged writes to `acked-<client>.log`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use handoff::util::monotonic_ns;
use serde::{Deserialize, Serialize};

use super::{LoadConfig, LoadShared, Trouble, TroubleCounts, acked_file, classify};
use crate::client::{ConnOptions, IdleState, LineConn, Patience, Reply};

/// The variable that makes this binary the clients process.
pub const CLIENTS_ENV: &str = "HARNESS_BENCH_CLIENTS";

/// What the clients process is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientsSpec {
    /// The bench: the clients process dies with it (`PR_SET_PDEATHSIG`).
    pub parent_pid: i32,
    /// The server.
    pub addr: SocketAddr,
    /// How the clients behave.
    pub config: LoadConfig,
}

/// If this process was started as the clients process, run the clients and
/// exit; otherwise return. Call it first thing in `main`.
pub fn run_if_requested() {
    let Ok(config) = std::env::var(CLIENTS_ENV) else {
        return;
    };
    let code = match serde_json::from_str::<ClientsSpec>(&config)
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))
        .and_then(run_clients)
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("harness bench clients: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// What the clients saw, apart from their requests (which are in files).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Troubles seen and retried past.
    pub troubles_seen: TroubleCounts,
    /// Requests that needed more than one attempt.
    pub retried_requests: u64,
    /// Most attempts one request took.
    pub max_attempts: u64,
    /// `GET`s that did not return the last acknowledged value.
    pub stale_reads: u64,
    /// `PUT`s acknowledged.
    pub acked_puts: u64,
    /// Replies that made no sense.
    pub bad_replies: u64,
    /// Files of acknowledged writes (`<seq> <key> <value>` lines).
    pub acked_files: Vec<PathBuf>,
    /// Files of requests ([`RequestRecord`] lines).
    pub request_files: Vec<PathBuf>,
}

impl Counters {
    fn add(&mut self, o: Counters) {
        self.troubles_seen.add(&o.troubles_seen);
        self.retried_requests += o.retried_requests;
        self.max_attempts = self.max_attempts.max(o.max_attempts);
        self.stale_reads += o.stale_reads;
        self.acked_puts += o.acked_puts;
        self.bad_replies += o.bad_replies;
        self.acked_files.extend(o.acked_files);
        self.request_files.extend(o.request_files);
    }
}

/// One request: when it started and ended (`CLOCK_MONOTONIC` ns), and, if
/// it failed, its last trouble (as `Trouble as u8`). On disk:
/// `<start_ns> <end_ns> <-|trouble>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Start.
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// `None` if it succeeded.
    pub failed: Option<u8>,
}

impl std::fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.failed {
            None => write!(f, "{} {} -", self.start_ns, self.end_ns),
            Some(t) => write!(f, "{} {} {t}", self.start_ns, self.end_ns),
        }
    }
}

impl RequestRecord {
    /// Parse one line as [`Display`](std::fmt::Display) writes it.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        let start_ns = parts.next()?.parse().ok()?;
        let end_ns = parts.next()?.parse().ok()?;
        let failed = match parts.next()? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        parts.next().is_none().then_some(Self {
            start_ns,
            end_ns,
            failed,
        })
    }
}

/// The file of client `id`'s requests.
pub fn requests_file(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("requests-{id}.log"))
}

fn run_clients(
    ClientsSpec {
        parent_pid,
        addr,
        config,
    }: ClientsSpec,
) -> io::Result<()> {
    // A bench killed outright (no stdin to close in order) takes the
    // clients with it; a bench gone before this line ends them here.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() != parent_pid {
        return Err(io::Error::other(
            "the bench that started the clients is gone",
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(config.clients);
    for id in 0..config.clients {
        let client = Client::new(id, addr, config.clone(), Arc::clone(&stop))?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-client-{id}"))
                .spawn(move || client.run())?,
        );
    }
    // Stdin ends when the bench stops the load (or dies).
    let mut sink = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut sink);
    stop.store(true, Ordering::SeqCst);
    let mut total = Counters::default();
    for t in threads {
        let counters = t
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))??;
        total.add(counters);
    }
    let json = serde_json::to_string(&total).map_err(io::Error::other)?;
    let mut out = io::stdout().lock();
    writeln!(out, "report {json}")?;
    out.flush()
}

/// Tell the bench that `client` completed a request started at `start_ns`.
fn progressed(client: usize, start_ns: u64) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "progress {client} {start_ns}")?;
    out.flush()
}

/// Read the clients process's stdout: progress into `shared`, until its
/// report.
pub(super) fn read_reports(stdout: impl Read, shared: &LoadShared) -> io::Result<Counters> {
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(json) = line.strip_prefix("report ") {
            return serde_json::from_str(json)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e));
        }
        let progress = line.strip_prefix("progress ").and_then(|rest| {
            let (client, start) = rest.split_once(' ')?;
            Some((client.parse().ok()?, start.parse().ok()?))
        });
        match progress {
            Some((client, start_ns)) => shared.progressed(client, start_ns),
            None => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("unexpected line from the clients process: {line:?}"),
                ));
            }
        }
    }
    Err(io::Error::new(
        ErrorKind::UnexpectedEof,
        "the clients process ended without a report",
    ))
}

struct Client {
    id: usize,
    addr: SocketAddr,
    config: LoadConfig,
    stop: Arc<AtomicBool>,
    conn: Option<LineConn>,
    counters: Counters,
    acked: BufWriter<File>,
    requests: BufWriter<File>,
    /// Per key: the counter of the last acknowledged value, and whether a
    /// later `PUT` failed (its value is then unknown).
    last_value: Vec<(Option<u64>, bool)>,
}

/// What one request got.
enum Answer {
    Ok(String),
    Failed(Trouble),
}

impl Client {
    fn new(
        id: usize,
        addr: SocketAddr,
        config: LoadConfig,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let acked_path = acked_file(&config.acked_dir, id);
        let acked = BufWriter::with_capacity(64 * 1024, File::create(&acked_path)?);
        let requests_path = requests_file(&config.acked_dir, id);
        let requests = BufWriter::with_capacity(64 * 1024, File::create(&requests_path)?);
        let keys = config.keys_per_client.max(1);
        Ok(Self {
            id,
            addr,
            stop,
            conn: None,
            counters: Counters {
                acked_files: vec![acked_path],
                request_files: vec![requests_path],
                ..Default::default()
            },
            acked,
            requests,
            last_value: vec![(None, false); keys],
            config,
        })
    }

    fn run(mut self) -> io::Result<Counters> {
        let interval_ns = self.config.interval().as_nanos() as u64;
        // Stagger the clients across one interval.
        let mut next_ns =
            monotonic_ns() + interval_ns * self.id as u64 / self.config.clients.max(1) as u64;
        let keys = self.last_value.len() as u64;
        let mut i: u64 = 0;
        while !self.stop.load(Ordering::SeqCst) {
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
                format!("PUT c{}k{key} v{}x{i}", self.id, self.id)
            } else {
                format!("GET c{}k{key}", self.id)
            };
            let start_ns = monotonic_ns();
            let (outcome, attempts) = self.request(&request, start_ns);
            let end_ns = monotonic_ns();
            if attempts > 1 {
                self.counters.retried_requests += 1;
            }
            self.counters.max_attempts = self.counters.max_attempts.max(attempts);
            let failed = match outcome {
                Answer::Ok(reply) => {
                    self.check_reply(key, i, is_put, &reply)?;
                    progressed(self.id, start_ns)?;
                    None
                }
                Answer::Failed(trouble) => {
                    if is_put {
                        self.last_value[key].1 = true;
                    }
                    Some(trouble as u8)
                }
            };
            let record = RequestRecord {
                start_ns,
                end_ns,
                failed,
            };
            writeln!(self.requests, "{record}")?;
            i += 1;
        }
        self.acked.flush()?;
        self.requests.flush()?;
        Ok(self.counters)
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
                    self.counters.acked_puts += 1;
                    self.last_value[key] = (Some(i), false);
                }
                None => {
                    self.counters.bad_replies += 1;
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
            None => self.counters.bad_replies += 1,
            Some(got) if uncertain => self.last_value[key] = (got.or(last), false),
            Some(got) if got != last => self.counters.stale_reads += 1,
            Some(_) => {}
        }
        Ok(())
    }

    /// Send `request` and read its reply line, reconnecting and retrying
    /// until `request_deadline` after `start_ns`.
    fn request(&mut self, request: &str, start_ns: u64) -> (Answer, u64) {
        let deadline_ns = start_ns + self.config.request_deadline.as_nanos() as u64;
        let mut attempts = 0;
        let mut last = Trouble::TimedOut;
        loop {
            if attempts > 0 && monotonic_ns() >= deadline_ns {
                return (Answer::Failed(last), attempts);
            }
            attempts += 1;
            // A pooled connection the server has closed since its last reply
            // is seen here, before a request is written on it.
            if let Some(conn) = &self.conn
                && let Some(trouble) = closed_while_idle(conn.idle_state())
            {
                self.counters.troubles_seen.count(trouble);
                self.conn = None;
            }
            if self.conn.is_none() {
                match self.connect() {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        last = classify(&e);
                        self.counters.troubles_seen.count(last);
                        // Pacing reconnects to a listener that refuses.
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            let reply = match conn.send(request) {
                Ok(()) => conn.read_reply(Patience::None),
                Err(e) => Reply::Gone(e),
            };
            let trouble = match reply {
                Reply::Line(reply) => {
                    if reply.starts_with("ERR sealed") {
                        Trouble::Sealed
                    } else if reply.starts_with("ERR") {
                        self.counters.bad_replies += 1;
                        return (Answer::Failed(Trouble::Other), attempts);
                    } else {
                        return (Answer::Ok(reply), attempts);
                    }
                }
                Reply::Gone(e) => classify(&e),
                Reply::Stalled | Reply::Stopped => Trouble::TimedOut,
            };
            last = trouble;
            self.counters.troubles_seen.count(trouble);
            self.conn = None;
        }
    }

    fn connect(&self) -> io::Result<LineConn> {
        LineConn::connect(
            self.addr,
            ConnOptions {
                connect_timeout: self.config.connect_timeout,
                io_timeout: self.config.read_timeout,
                bound_writes: true,
            },
        )
    }
}

/// What an idle connection (no request outstanding) has to say: nothing
/// (`None`, reusable), end of stream (closed cleanly) or a reset. Never
/// blocks.
fn closed_while_idle(state: IdleState) -> Option<Trouble> {
    match state {
        IdleState::Open => None,
        IdleState::Ended => Some(Trouble::ClosedIdle),
        IdleState::Failed(e) => Some(classify(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_records_round_trip() {
        for r in [
            RequestRecord {
                start_ns: 1,
                end_ns: 22,
                failed: None,
            },
            RequestRecord {
                start_ns: 3,
                end_ns: 4,
                failed: Some(Trouble::Eof as u8),
            },
        ] {
            assert_eq!(RequestRecord::parse(&r.to_string()), Some(r));
        }
        assert_eq!(RequestRecord::parse("1 2"), None);
        assert_eq!(RequestRecord::parse("1 2 - 3"), None);
        assert_eq!(RequestRecord::parse("x 2 -"), None);
    }

    #[test]
    fn progress_lines_reach_the_bench_and_the_report_ends_them() {
        let shared = LoadShared::new(2);
        let out = "progress 0 10\nprogress 1 11\nreport {\"troubles_seen\":{\"refused\":0,\"reset\":1,\"timed_out\":0,\"eof\":0,\"sealed\":0,\"closed_idle\":0,\"other\":0},\"retried_requests\":2,\"max_attempts\":2,\"stale_reads\":0,\"acked_puts\":3,\"bad_replies\":0,\"acked_files\":[],\"request_files\":[]}\n";
        let counters = read_reports(out.as_bytes(), &shared).unwrap();
        assert_eq!((counters.troubles_seen.reset, counters.acked_puts), (1, 3));
        assert!(shared.wait_all_progressed(5, Duration::from_millis(1)));
        assert!(read_reports("progress 0 1\n".as_bytes(), &shared).is_err());
        assert!(read_reports("garbage\n".as_bytes(), &shared).is_err());
    }
}
