//! The invariants of DESIGN.md section 9, checked after every scenario.
//!
//! Each check returns a [`Check`]: a stable name, pass/fail, and a detail
//! for humans (never snapshotted: it may hold pids and timings). Pure cores
//! ([`flock_intervals`], [`verify_kv_log`], [`classify_fds`]) are separate
//! from the probes that read `/proc`, sockets and files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use handoff::events;
use handoff::frame::read_message;
use handoff::protocol::{Message, Side};
use serde::Serialize;

use crate::client::{self, Acked, ClientReport};
use crate::eventlog::ProcessLog;
use crate::fixture::{Fixture, POLL_STEP};
use crate::procs;
use crate::sockdiag;

/// The result of one invariant check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (snapshotted).
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was seen (printed on failure, never snapshotted).
    #[serde(skip)]
    pub detail: String,
}

impl Check {
    /// A passing check.
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            detail: detail.into(),
        }
    }
    /// A failing check.
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
    /// Pass when `problems` is empty.
    pub fn from_problems(name: &'static str, problems: Vec<String>, ok_detail: String) -> Self {
        if problems.is_empty() {
            Self::pass(name, ok_detail)
        } else {
            Self::fail(name, problems.join("; "))
        }
    }
}

/// A span during which a process's own events say it held the data-dir
/// flock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlockInterval {
    /// The process.
    pub process: String,
    /// When it took (or is known to hold) the flock.
    pub start_ns: u64,
    /// When it released it, or its last event while holding it (a lower
    /// bound: the span is what the logs *prove*).
    pub end_ns: u64,
    /// Whether the end is the process's last event rather than a release.
    pub open_ended: bool,
}

/// Derive flock-holding spans from each process's own events (pure).
///
/// Starts: `incumbent.bound` (a cold start binds while holding the lock),
/// `successor.flock_taken`, `incumbent.flock_reacquired`. Ends:
/// `incumbent.flock_released`, a successor's `aborted`/`supervisor_lost`,
/// and a crash point that exits.
pub fn flock_intervals(logs: &[ProcessLog]) -> Vec<FlockInterval> {
    let mut out = Vec::new();
    for log in logs {
        let mut held_since: Option<u64> = None;
        for ev in &log.events {
            let name = ev.name.as_str();
            let starts = name == events::INCUMBENT_BOUND
                || name == events::SUCCESSOR_FLOCK_TAKEN
                || name == events::INCUMBENT_FLOCK_REACQUIRED;
            let crash_exit = name == events::CRASH
                && ev
                    .str_field("action")
                    .is_none_or(|a| a.eq_ignore_ascii_case("exit"));
            let ends = name == events::FLOCK_RELEASING
                || name == events::INCUMBENT_FLOCK_RELEASED
                || name == events::SUCCESSOR_ABORTED
                || name == events::SUCCESSOR_SUPERVISOR_LOST
                || crash_exit;
            if starts && held_since.is_none() {
                held_since = Some(ev.mono_ns);
            } else if ends && let Some(start) = held_since.take() {
                out.push(FlockInterval {
                    process: log.process.clone(),
                    start_ns: start,
                    end_ns: ev.mono_ns,
                    open_ended: false,
                });
            }
        }
        if let Some(start) = held_since {
            let last = log.events.last().map_or(start, |e| e.mono_ns);
            out.push(FlockInterval {
                process: log.process.clone(),
                start_ns: start,
                end_ns: last,
                open_ended: true,
            });
        }
    }
    out.sort_by_key(|i| i.start_ns);
    out
}

/// Pairs of intervals of different processes that overlap (pure).
pub fn overlapping(intervals: &[FlockInterval]) -> Vec<(FlockInterval, FlockInterval)> {
    let mut out = Vec::new();
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if a.process != b.process && a.start_ns < b.end_ns && b.start_ns < a.end_ns {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// Invariant 1 from the events: flock-holding spans never overlap.
pub fn check_flock_intervals(logs: &[ProcessLog]) -> Check {
    let intervals = flock_intervals(logs);
    let overlaps = overlapping(&intervals);
    let problems = overlaps
        .iter()
        .map(|(a, b)| {
            format!(
                "{} held the flock [{}, {}] while {} held it [{}, {}] (mono ns)",
                a.process, a.start_ns, a.end_ns, b.process, b.start_ns, b.end_ns
            )
        })
        .collect();
    let holders: Vec<&str> = intervals.iter().map(|i| i.process.as_str()).collect();
    Check::from_problems(
        "single-writer/flock-intervals",
        problems,
        format!("holders in order: {}", holders.join(" → ")),
    )
}

/// Check the fake peer's log `kv.log` (pure): records numbered 1, 2, 3, ...
/// with no gap or repeat (two writers would collide on a number), and every
/// acknowledged write is the record its `OK <seq>` named. A torn last line
/// (a crash mid-append) is tolerated.
pub fn verify_kv_log(bytes: &[u8], acked: &[Acked]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut records: HashMap<u64, (String, String)> = HashMap::new();
    let text = String::from_utf8_lossy(bytes);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    for (expected_seq, (line_no, line)) in (1u64..).zip(complete.lines().enumerate()) {
        let tokens: Vec<&str> = line.split(' ').collect();
        let [seq, key, value] = tokens.as_slice() else {
            problems.push(format!(
                "kv.log line {}: {line:?} is not a record",
                line_no + 1
            ));
            break;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            problems.push(format!("kv.log line {}: bad sequence number", line_no + 1));
            break;
        };
        if seq != expected_seq {
            problems.push(format!(
                "kv.log line {}: record {seq} where {expected_seq} was due (two writers?)",
                line_no + 1
            ));
            break;
        }
        records.insert(seq, (key.to_string(), value.to_string()));
    }
    for a in acked {
        match records.get(&a.seq) {
            Some((k, v)) if *k == a.key && *v == a.value => {}
            Some((k, v)) => problems.push(format!(
                "acknowledged {}={} as record {}, but record {} is {k}={v}",
                a.key, a.value, a.seq, a.seq
            )),
            None => problems.push(format!(
                "acknowledged {}={} as record {}, which is not in kv.log",
                a.key, a.value, a.seq
            )),
        }
    }
    problems
}

/// Invariant 1 from the data: `kv.log` has a single writer's numbering and
/// holds every acknowledged write where it was acknowledged.
pub fn check_kv_log(data_dir: &Path, report: &ClientReport) -> Check {
    let bytes = std::fs::read(data_dir.join("kv.log")).unwrap_or_default();
    let problems = verify_kv_log(&bytes, &report.acked);
    Check::from_problems(
        "single-writer/kv-log",
        problems,
        format!(
            "{} bytes, {} acknowledged writes found",
            bytes.len(),
            report.acked.len()
        ),
    )
}

/// Invariant 1 from the kernel: exactly one `FLOCK WRITE` on the lock file's
/// inode, held by the incumbent, and the lock file is the inode it was at the
/// start (it was never unlinked and recreated).
pub fn check_kernel_flock(fx: &Fixture, incumbent_pid: u32, first_inode: Option<u64>) -> Check {
    let mut problems = Vec::new();
    match procs::flock_holders(&fx.lock_file()) {
        Ok(holders) => {
            let writers: Vec<_> = holders.iter().filter(|h| h.mode == "WRITE").collect();
            if writers.len() != 1 || writers[0].pid != incumbent_pid || holders.len() != 1 {
                problems.push(format!(
                    "/proc/locks shows {} flock(s) on the lock file: {:?}; expected one WRITE \
                     held by the incumbent (pid {incumbent_pid})",
                    holders.len(),
                    holders
                        .iter()
                        .map(|h| format!("{} by pid {}", h.mode, h.pid))
                        .collect::<Vec<_>>()
                ));
            }
        }
        Err(e) => problems.push(format!("cannot read the lock file or /proc/locks: {e}")),
    }
    let now = std::fs::metadata(fx.lock_file())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .ok();
    if first_inode.is_some() && now != first_inode {
        problems.push(format!(
            "the lock file changed inode ({first_inode:?} → {now:?}): it was unlinked and \
             recreated, so two processes could each hold a flock"
        ));
    }
    Check::from_problems(
        "single-writer/kernel",
        problems,
        format!("one FLOCK WRITE held by pid {incumbent_pid}"),
    )
}

/// Invariant 2: exactly one incumbent. It is the only live process of the
/// scenario, answers `Hello` (role incumbent, its own pid) on the control
/// socket, and serves on every listener: `serves` says what is wrong there
/// ([`pings_everywhere`] for the fake peer).
pub fn check_one_incumbent(
    fx: &Fixture,
    incumbent_pid: u32,
    serves: impl Fn(&Fixture, u32) -> Result<(), String>,
) -> Check {
    let mut problems = Vec::new();
    let live = fx.live();
    if live.len() != 1 || live[0].pid != incumbent_pid {
        problems.push(format!(
            "live processes should be the incumbent alone: {}",
            fx.describe_state(&live)
        ));
    }
    match hello_from(&fx.control_socket(), Duration::from_secs(3)) {
        Ok((Side::Incumbent, pid)) if pid == incumbent_pid => {}
        Ok((role, pid)) => problems.push(format!(
            "the control socket answered Hello role {role:?} pid {pid}; expected the incumbent, \
             pid {incumbent_pid}"
        )),
        Err(e) => problems.push(format!("no Hello on the control socket: {e}")),
    }
    if let Err(e) = serves(fx, incumbent_pid) {
        problems.push(e);
    }
    Check::from_problems(
        "one-incumbent",
        problems,
        format!("pid {incumbent_pid} answers Hello and serves on every listener"),
    )
}

/// The fake peer serves on every listener: `PING` → `PONG <its pid>`.
pub fn pings_everywhere(fx: &Fixture, incumbent_pid: u32) -> Result<(), String> {
    let mut problems = Vec::new();
    for (name, addr) in fx.listener_addrs() {
        for _ in 0..3 {
            match client::request(addr, "PING", Duration::from_secs(3)) {
                Ok(reply) if reply == format!("PONG {incumbent_pid}") => {}
                Ok(reply) => problems.push(format!(
                    "listener {name}: PING answered {reply:?}; expected PONG {incumbent_pid}"
                )),
                Err(e) => problems.push(format!("listener {name}: PING failed: {e}")),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Connect to a control socket and read the first frame: the `Hello`.
pub fn hello_from(path: &Path, timeout: Duration) -> Result<(Side, u32), String> {
    let mut stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let hello = match read_message(&mut stream) {
        Ok((_, Message::Hello { role, pid, .. })) => Ok((role, pid)),
        Ok((_, other)) => Err(format!("first frame is {other:?}, not Hello")),
        Err(e) => Err(e.to_string()),
    };
    // Close politely, as a probing supervisor does: shut our side, then wait
    // (bounded by the read timeout) for the incumbent to end the session.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 256];
    while matches!(std::io::Read::read(&mut stream, &mut sink), Ok(n) if n > 0) {}
    hello
}

/// Invariant 3: every acknowledged write is readable at the end, and no
/// connection was ever refused.
pub fn check_acked_writes(addr: Option<SocketAddr>, report: &ClientReport) -> Check {
    let mut problems = Vec::new();
    if report.refusals > 0 {
        problems.push(format!(
            "{} connection(s) refused: the listening socket was not held throughout",
            report.refusals
        ));
    }
    // The latest acknowledged value of each key is what GET must return.
    let mut latest: BTreeMap<&str, &str> = BTreeMap::new();
    for a in &report.acked {
        latest.insert(&a.key, &a.value);
    }
    let keys: Vec<String> = latest.keys().map(|k| k.to_string()).collect();
    match addr {
        None => problems.push("no listener address".into()),
        Some(addr) if !keys.is_empty() => {
            match client::get_many(addr, &keys, Duration::from_secs(5)) {
                Ok(replies) => {
                    let lost: Vec<String> = keys
                        .iter()
                        .zip(&replies)
                        .filter(|(k, r)| **r != format!("VALUE {}", latest[k.as_str()]))
                        .map(|(k, r)| format!("{k} → {r:?}"))
                        .collect();
                    if !lost.is_empty() {
                        problems.push(format!(
                            "{} acknowledged write(s) lost, e.g. {}",
                            lost.len(),
                            lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                Err(e) => problems.push(format!("GETs failed: {e}")),
            }
        }
        Some(_) => {}
    }
    if report.acked.is_empty() {
        problems.push(format!(
            "the client got no write acknowledged at all (errors: {:?})",
            report.errors
        ));
    }
    Check::from_problems(
        "no-acked-write-lost",
        problems,
        format!(
            "{} acknowledged, {} reconnects, {} ERR replies, 0 refusals",
            report.acked.len(),
            report.reconnects,
            report.err_replies
        ),
    )
}

/// What one FD of the incumbent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdClass {
    /// 0, 1, 2.
    Stdio,
    /// One of the harness's listeners, by name.
    Listener(String),
    /// The control socket (bound to the control path, or to the temporary
    /// name a successor bound before renaming it into place).
    ControlSocket,
    /// One end of a Unix socket pair whose other end the process holds too
    /// (an internal wake-up channel).
    InternalPair,
    /// The data-dir lock file.
    LockFile,
    /// A file in the data dir (the service's own data, e.g. `kv.log`).
    DataFile(String),
    /// The process's own event log.
    OwnEventLog,
    /// Anything else: a stray.
    Stray(String),
}

/// What the classifier knows about the scenario (pure inputs).
#[derive(Debug, Clone, Default)]
pub struct FdContext {
    /// `socket inode → listener name`.
    pub listener_inodes: HashMap<u64, String>,
    /// Socket inodes bound, right now, to the control socket path.
    pub control_inodes: HashSet<u64>,
    /// `socket inode → peer socket inode` of connected Unix sockets.
    pub unix_peers: HashMap<u64, u64>,
    /// The lock file path.
    pub lock_path: String,
    /// The data dir (with a trailing `/`).
    pub data_dir: String,
    /// The incumbent's own event log.
    pub own_log: String,
}

/// Classify each FD (pure). Data files other than the lock file count as
/// the service's own (`kv.log`). A Unix socket whose peer is in the same FD
/// table is an internal pair; one whose peer is elsewhere, or gone (the end
/// of a socketpair inherited from a supervisor), is a stray.
pub fn classify_fds(fds: &[(i32, String)], ctx: &FdContext) -> Vec<(i32, FdClass)> {
    let own: HashSet<u64> = fds
        .iter()
        .filter_map(|(_, t)| procs::socket_inode_of_target(t))
        .collect();
    fds.iter()
        .map(|(fd, target)| {
            let class = if *fd <= 2 {
                FdClass::Stdio
            } else if let Some(ino) = procs::socket_inode_of_target(target) {
                if let Some(name) = ctx.listener_inodes.get(&ino) {
                    FdClass::Listener(name.clone())
                } else if ctx.control_inodes.contains(&ino) {
                    FdClass::ControlSocket
                } else if ctx.unix_peers.get(&ino).is_some_and(|p| own.contains(p)) {
                    FdClass::InternalPair
                } else {
                    FdClass::Stray(format!(
                        "{target} (not a listener, not the control socket, not an internal pair{})",
                        match ctx.unix_peers.get(&ino) {
                            Some(p) => format!("; its peer socket:[{p}] is in another process"),
                            None => String::new(),
                        }
                    ))
                }
            } else if *target == ctx.lock_path {
                FdClass::LockFile
            } else if target.starts_with(&ctx.data_dir) {
                FdClass::DataFile(target[ctx.data_dir.len()..].to_string())
            } else if *target == ctx.own_log {
                FdClass::OwnEventLog
            } else {
                FdClass::Stray(target.clone())
            };
            (*fd, class)
        })
        .collect()
}

/// Problems with a classified FD table (pure): every listener exactly once
/// (a listener passed on at FD 3.. while its original number stays open is
/// a broken hand-over), the control socket at least once (the incumbent's
/// accept thread holds a duplicate), the lock file exactly once, nothing
/// stray.
pub fn fd_problems(classes: &[(i32, FdClass)], listeners: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let count = |want: &FdClass| classes.iter().filter(|(_, c)| c == want).count();
    for name in listeners {
        let n = count(&FdClass::Listener(name.clone()));
        if n != 1 {
            problems.push(format!("listener {name} is open {n} times (expected once)"));
        }
    }
    // The incumbent may hold its control socket more than once (its accept
    // thread works on a duplicate); it must hold it.
    if count(&FdClass::ControlSocket) == 0 {
        problems.push("the control socket is not open".to_string());
    }
    let n = count(&FdClass::LockFile);
    if n != 1 {
        problems.push(format!("the lock file is open {n} times (expected once)"));
    }
    for (fd, class) in classes {
        if let FdClass::Stray(what) = class {
            problems.push(format!("stray FD {fd}: {what}"));
        }
    }
    problems
}

/// What the incumbent `incumbent` of `fx` may legitimately hold, read from
/// the fixture and the kernel's socket table now.
pub fn fd_context(fx: &Fixture, incumbent: &str) -> FdContext {
    let unix = sockdiag::unix_sockets().unwrap_or_default();
    let control = fx.control_socket();
    FdContext {
        listener_inodes: fx
            .listener_inodes()
            .into_iter()
            .map(|(n, i)| (i, n))
            .collect(),
        control_inodes: unix
            .values()
            .filter(|s| s.is_listening() && sockdiag::bound_to(s, &control))
            .map(|s| s.inode)
            .collect(),
        unix_peers: unix
            .values()
            .filter_map(|s| s.peer.map(|p| (s.inode, p)))
            .collect(),
        lock_path: fx.lock_file().to_string_lossy().into_owned(),
        data_dir: format!("{}/", fx.data_dir().display()),
        own_log: fx
            .root()
            .join(format!("{incumbent}.jsonl"))
            .to_string_lossy()
            .into_owned(),
    }
}

/// Invariant 4 (FDs): the incumbent holds its stdio, each listener once, the
/// control socket, the lock file, its data and its event log, and nothing
/// else. A broken FD hand-over (an inherited socketpair end, another
/// fixture's listener, a supervisor's log, a duplicated listener) fails it.
/// Client connections close asynchronously, so the check is retried until it
/// passes or `timeout` expires.
pub fn check_fds(fx: &Fixture, incumbent_pid: u32, incumbent: &str, timeout: Duration) -> Check {
    let listener_names: Vec<String> = fx.listener_inodes().into_iter().map(|(n, _)| n).collect();
    check_fd_table(fx, incumbent_pid, incumbent, timeout, |classes| {
        fd_problems(classes, &listener_names)
    })
}

/// The `no-stray-fd` check of `pid`'s FD table: classify it (against the
/// fixture, `incumbent` naming its own log) and ask `problems_of` what is
/// wrong with it, until nothing is or `timeout` expires. Client connections
/// close asynchronously, and no event announces that another process closed
/// an FD, so the table is probed again until then.
pub fn check_fd_table(
    fx: &Fixture,
    pid: u32,
    incumbent: &str,
    timeout: Duration,
    mut problems_of: impl FnMut(&[(i32, FdClass)]) -> Vec<String>,
) -> Check {
    let mut last = (Vec::new(), String::new());
    let passed = handoff::util::poll_until(timeout, POLL_STEP, || {
        let ctx = fd_context(fx, incumbent);
        last = match procs::fd_targets(pid) {
            Ok(fds) => {
                let classes = classify_fds(&fds, &ctx);
                let table = fds
                    .iter()
                    .map(|(fd, t)| format!("{fd}→{t}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (problems_of(&classes), table)
            }
            Err(e) => (
                vec![format!("cannot read /proc/{pid}/fd: {e}")],
                String::new(),
            ),
        };
        last.0.is_empty().then_some(())
    });
    let (problems, table) = last;
    match passed {
        Some(()) => Check::pass("no-stray-fd", format!("FD table: {table}")),
        None => Check::fail(
            "no-stray-fd",
            format!("{}; FD table: {table}", problems.join("; ")),
        ),
    }
}

/// How the final incumbent is probed: the fake peer's way, or another
/// service's (its FD table judged by `fds`, its serving by `serves`).
pub struct Probes {
    /// The `no-stray-fd` check.
    pub fds: fn(&Fixture, u32, &str, Duration) -> Check,
    /// What is wrong with how it serves on the listeners.
    pub serves: fn(&Fixture, u32) -> Result<(), String>,
}

/// The fake peer's probes.
pub const FAKE_PEER: Probes = Probes {
    fds: check_fds,
    serves: pings_everywhere,
};

/// The checks that need the final incumbent `name` (`pid`) still serving,
/// the same for every run: the kernel's flock; `kv.log` against every
/// acknowledged write (`acked`); the FD table (before any probe of ours
/// opens a connection to it); one incumbent; the writer's acknowledged
/// writes read back; nothing else of the fixture alive.
pub fn serving_checks(
    fx: &Fixture,
    pid: u32,
    name: &str,
    first_lock_inode: Option<u64>,
    writes: Option<(&ClientReport, &ClientReport)>,
    probes: &Probes,
) -> Vec<Check> {
    let mut checks = vec![check_kernel_flock(fx, pid, first_lock_inode)];
    if let Some((acked, _)) = writes {
        checks.push(check_kv_log(&fx.data_dir(), acked));
    }
    checks.push((probes.fds)(fx, pid, name, Duration::from_secs(3)));
    checks.push(check_one_incumbent(fx, pid, probes.serves));
    if let Some((_, writer)) = writes {
        checks.push(check_acked_writes(
            fx.addr(crate::fixture::LISTENER_NAME),
            writer,
        ));
    }
    checks.push(crate::rules::check_no_leaked_process(
        &crate::evidence::Evidence {
            processes: fx.processes(),
            live: &fx.live(),
            final_incumbent: Some(pid),
            ..Default::default()
        },
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::parse_log;

    fn log(process: &str, events: &[(u64, &str)]) -> ProcessLog {
        let text: String = events
            .iter()
            .map(|(t, name)| {
                format!(
                    r#"{{"mono_ns":{t},"pid":1,"level":"INFO","event":"{name}","message":"","action":"Exit"}}"#
                ) + "\n"
            })
            .collect();
        parse_log(process, text.as_bytes())
    }

    #[test]
    fn a_clean_handoff_has_disjoint_flock_spans() {
        let o = log(
            "peer-0",
            &[
                (10, events::INCUMBENT_BOUND),
                (50, events::INCUMBENT_FLOCK_RELEASED),
                (90, events::INCUMBENT_COMMIT),
            ],
        );
        let n = log(
            "peer-1",
            &[
                (60, events::SUCCESSOR_FLOCK_TAKEN),
                (70, events::SUCCESSOR_READY),
            ],
        );
        let iv = flock_intervals(&[o, n]);
        assert_eq!(iv.len(), 2);
        assert!(!iv[0].open_ended);
        assert!(iv[1].open_ended);
        assert!(check_flock_intervals(&[]).ok);
        assert!(overlapping(&iv).is_empty());
    }

    #[test]
    fn a_successor_taking_the_flock_before_the_release_overlaps() {
        let o = log(
            "peer-0",
            &[
                (10, events::INCUMBENT_BOUND),
                (80, events::INCUMBENT_FLOCK_RELEASED),
            ],
        );
        let n = log("peer-1", &[(60, events::SUCCESSOR_FLOCK_TAKEN), (70, "x")]);
        let logs = [o, n];
        assert_eq!(overlapping(&flock_intervals(&logs)).len(), 1);
        assert!(!check_flock_intervals(&logs).ok);
    }

    #[test]
    fn a_crash_ends_a_span() {
        let n = log(
            "peer-1",
            &[(60, events::SUCCESSOR_FLOCK_TAKEN), (65, events::CRASH)],
        );
        let o = log("peer-0", &[(70, events::INCUMBENT_FLOCK_REACQUIRED)]);
        assert!(overlapping(&flock_intervals(&[n, o])).is_empty());
    }

    fn acked(key: &str, value: &str, seq: u64) -> Acked {
        Acked {
            key: key.into(),
            value: value.into(),
            seq,
        }
    }

    #[test]
    fn kv_log_numbering_and_acks_are_verified() {
        let log = b"1 k0 v0\n2 k1 v1\n3 k0 v2\n4 k2 v";
        assert!(verify_kv_log(log, &[acked("k0", "v0", 1), acked("k0", "v2", 3)]).is_empty());
        let lost = verify_kv_log(log, &[acked("k9", "v9", 7)]);
        assert!(lost[0].contains("not in kv.log"), "{lost:?}");
        let clobbered = verify_kv_log(log, &[acked("k5", "v5", 2)]);
        assert!(clobbered[0].contains("record 2 is k1=v1"), "{clobbered:?}");
        let two_writers = verify_kv_log(b"1 a b\n2 c d\n2 e f\n", &[]);
        assert!(two_writers[0].contains("two writers"), "{two_writers:?}");
    }

    #[test]
    fn fd_tables_are_classified_and_strays_named() {
        let ctx = FdContext {
            listener_inodes: [(100, "kv".to_string())].into(),
            control_inodes: [200].into(),
            unix_peers: [(400, 401), (401, 400), (500, 501)].into(),
            lock_path: "/d/data/handoff.lock".into(),
            data_dir: "/d/data/".into(),
            own_log: "/d/peer-1.jsonl".into(),
        };
        let good = vec![
            (0, "/dev/null".to_string()),
            (1, "/d/supervisor-1.stdout".to_string()),
            (2, "/d/supervisor-1.stderr".to_string()),
            (3, "socket:[100]".to_string()),
            (4, "/d/peer-1.jsonl".to_string()),
            (5, "/d/data/handoff.lock".to_string()),
            (6, "/d/data/kv.log".to_string()),
            (7, "socket:[200]".to_string()),
            (8, "socket:[400]".to_string()),
            (9, "socket:[401]".to_string()),
        ];
        let classes = classify_fds(&good, &ctx);
        assert!(
            fd_problems(&classes, &["kv".into()]).is_empty(),
            "{classes:?}"
        );

        // A dangling socketpair end (its supervisor is gone), a supervisor's
        // log, a second copy of the listener, a socket whose peer lives in
        // another process: all caught.
        let mut bad = good.clone();
        bad.push((18, "socket:[999]".to_string()));
        bad.push((19, "/d/supervisor-1.jsonl".to_string()));
        bad.push((10, "socket:[100]".to_string()));
        bad.push((11, "socket:[500]".to_string()));
        let problems = fd_problems(&classify_fds(&bad, &ctx), &["kv".into()]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("listener kv is open 2 times"));

        // A duplicated control socket is fine; no control socket, no lock
        // file are not.
        let mut dup = good.clone();
        dup.push((12, "socket:[200]".to_string()));
        assert!(fd_problems(&classify_fds(&dup, &ctx), &["kv".into()]).is_empty());
        let bare = vec![(3, "socket:[100]".to_string())];
        let problems = fd_problems(&classify_fds(&bare, &ctx), &["kv".into()]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
