//! The service under test: the fake peer (default), or any binary built on
//! the library (`--service`), with an optional data workload (`--workload`).
//!
//! For another service the harness knows nothing of its protocol, so the
//! checks that need none replace the fake peer's:
//!
//! - *settled* and *one incumbent*: the only live process of the episode
//!   holds the flock, answers `Hello` on the control socket, holds every
//!   listener, and **accepts** on each: a probe connection leaves the
//!   listener's accept queue (read from `/proc/net/tcp`, where a listening
//!   socket's `rx_queue` is its accept backlog);
//! - *no stray FD*: what the fake peer's check allows, plus any file of the
//!   service's own outside the scenario directory; sockets it did not get
//!   from the harness, and files of other processes of the episode, are
//!   still strays;
//! - data: only through the workload command (below), else "skipped".
//!
//! # The workload contract
//!
//! `--workload '<program> [args...]'` (split on whitespace, no shell: put
//! a pipeline in a script) runs twice per episode, in its own process
//! group, with `CHAOS_ADDR=<host:port>` (the first listener),
//! `CHAOS_LISTENERS=<name>=<host:port>,...`, `CHAOS_DATA_DIR` (the
//! service's data dir: read it only to diagnose) and `CHAOS_STATE_DIR` (an
//! empty directory of its own, kept between the two phases):
//!
//! 1. `CHAOS_PHASE=write`, started once the first incumbent serves, for the
//!    whole episode (faults, restarts, handoffs): it writes, and records in
//!    `CHAOS_STATE_DIR` every write the service acknowledged. Its process
//!    group gets `SIGTERM` after the last handoff committed; the program
//!    must then exit 0 within 10 s. Any other ending is a violation (use a
//!    non-zero exit to report what it saw: a refused connection, a wrong
//!    answer).
//! 2. `CHAOS_PHASE=verify`, after that: it reads back every acknowledged
//!    write and exits 0 if all are there, within 60 s; anything else is a
//!    violation, reported with its output.
//!
//! `ci/workloads/kv-line-protocol.sh` is one, for the fake peer's protocol.
//!
//! Its stdout and stderr go to `workload-write.*` and `workload-verify.*` in
//! the episode's directory (kept with the artifacts of a failing episode).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::fixture::{Fixture, ServiceCommand, Settled};
use crate::invariants::{self, Check, FdClass};
use crate::procs;
use crate::reaper::{self, ExitKind};
use crate::sockdiag;

/// Bound on a listener's accept queue emptying after a probe connect.
const ACCEPT_BOUND: Duration = Duration::from_secs(1);
/// Bound on the workload's exit after `SIGTERM`.
const WORKLOAD_STOP_BOUND: Duration = Duration::from_secs(10);
/// Bound on the workload's verify phase.
const WORKLOAD_VERIFY_BOUND: Duration = Duration::from_secs(60);

/// The service under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceMode {
    /// The fake peer: every check, the built-in client and reader.
    FakePeer {
        /// An extra workload, if given.
        workload: Option<String>,
    },
    /// Another binary built on the library.
    Custom(CustomService),
}

/// Another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomService {
    /// Its binary.
    pub program: PathBuf,
    /// Its arguments (`{data_dir}`, `{control_socket}` replaced).
    pub args: Vec<String>,
    /// The listeners it gets, by name.
    pub listeners: Vec<String>,
    /// The data workload, if any.
    pub workload: Option<String>,
}

impl ServiceMode {
    /// The default service.
    pub fn is_fake_peer(&self) -> bool {
        matches!(self, ServiceMode::FakePeer { .. })
    }

    /// The workload command, if any.
    pub fn workload(&self) -> Option<&str> {
        match self {
            ServiceMode::FakePeer { workload } => workload.as_deref(),
            ServiceMode::Custom(c) => c.workload.as_deref(),
        }
    }
}

/// A fresh fixture for the service.
pub fn fixture(label: &str, mode: &ServiceMode) -> Result<Fixture, String> {
    match mode {
        ServiceMode::FakePeer { .. } => Fixture::new(label),
        ServiceMode::Custom(c) => Fixture::with_service(
            label,
            ServiceCommand {
                program: c.program.clone(),
                args: c.args.clone(),
                listeners: c.listeners.clone(),
            },
        ),
    }
}

/// Whether the service has settled, right now: `Ok` when it has (one
/// incumbent, or none), `Err` with what was observed otherwise.
///
/// "None" is only believed once every process of the episode has been
/// reaped or is gone from `/proc`: a multi-threaded process whose main
/// thread has exited shows state `Z`, and its `environ` is unreadable once
/// its memory is released, so [`Fixture::live`] no longer lists it, while
/// its other threads still hold its files, the flock among them. A restart
/// then would find the flock held.
pub fn settled_now(fx: &mut Fixture, mode: &ServiceMode) -> Result<Settled, String> {
    let settled = settled_by_fixture(fx, mode)?;
    if settled == Settled::NoService
        && let Some(dying) = still_exiting(fx)
    {
        return Err(format!("nothing live, but {dying} is still exiting"));
    }
    Ok(settled)
}

/// The first process of the fixture that is neither reaped nor gone.
fn still_exiting(fx: &Fixture) -> Option<String> {
    fx.processes().iter().find_map(|p| {
        let pid = p.pid?;
        let gone = reaper::exit_of(pid).is_some() || !Path::new(&format!("/proc/{pid}")).exists();
        (!gone).then(|| format!("{} (pid {pid})", p.name))
    })
}

fn settled_by_fixture(fx: &mut Fixture, mode: &ServiceMode) -> Result<Settled, String> {
    if mode.is_fake_peer() {
        fx.settled_now(Fixture::serves_everywhere)
    } else {
        fx.settled_now(|fx, pid| accepts_everywhere(fx, pid).is_ok())
    }
}

/// The accept backlog of the listening TCP socket with `inode`, from the
/// text of `/proc/net/tcp` or `/proc/net/tcp6` (pure). For a socket in
/// `LISTEN` state (`st` `0A`) the kernel reports its accept queue as
/// `rx_queue`.
pub fn listen_backlog(proc_net_tcp: &str, inode: u64) -> Option<u64> {
    proc_net_tcp.lines().skip(1).find_map(|line| {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.get(3) != Some(&"0A") || t.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        let (_, rx) = t.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// Inodes of every listening TCP socket on the machine.
fn listening_tcp_inodes() -> std::collections::HashSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let t: Vec<&str> = line.split_whitespace().collect();
                    (t.get(3) == Some(&"0A")).then(|| t.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

fn backlog(inode: u64) -> Option<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| listen_backlog(&t, inode))
}

/// `pid` holds every listener and accepts on it: a probe connection is
/// taken off the accept queue within `ACCEPT_BOUND`.
pub fn accepts_everywhere(fx: &Fixture, pid: u32) -> Result<(), String> {
    let fds = procs::fd_targets(pid).map_err(|e| format!("cannot read its FDs: {e}"))?;
    let held: Vec<u64> = fds
        .iter()
        .filter_map(|(_, t)| procs::socket_inode_of_target(t))
        .collect();
    let addrs: HashMap<String, std::net::SocketAddr> = fx.listener_addrs().into_iter().collect();
    for (name, inode) in fx.listener_inodes() {
        if !held.contains(&inode) {
            return Err(format!("it does not hold listener {name}"));
        }
        let addr = addrs
            .get(&name)
            .ok_or_else(|| format!("listener {name} has no address"))?;
        let probe = std::net::TcpStream::connect_timeout(addr, ACCEPT_BOUND)
            .map_err(|e| format!("connect to listener {name}: {e}"))?;
        // Another process's accept: no event announces it, so probe.
        handoff::util::poll_until(ACCEPT_BOUND, Duration::from_millis(2), || {
            (backlog(inode) == Some(0)).then_some(())
        })
        .ok_or_else(|| {
            format!(
                "listener {name}: a connection waited {ACCEPT_BOUND:?} in its accept queue \
                 (backlog {:?}): nobody accepts",
                backlog(inode)
            )
        })?;
        drop(probe);
    }
    Ok(())
}

/// Invariant 4 (FDs) for any service: every listener and the control
/// socket held, the lock file held, and no stray: no socket the harness did
/// not give it (an inherited socketpair end, another fixture's listener),
/// no file of another process of the episode. Its own files elsewhere are
/// its business.
pub fn check_fds(fx: &Fixture, pid: u32, incumbent: &str, timeout: Duration) -> Check {
    let root = format!("{}/", fx.root().display());
    invariants::check_fd_table(fx, pid, incumbent, timeout, |classes| {
        let unix = sockdiag::unix_sockets().unwrap_or_default();
        let tcp_listening = listening_tcp_inodes();
        let foreign = |ino: u64| unix.contains_key(&ino) || tcp_listening.contains(&ino);
        custom_fd_problems(classes, &fx.listener_inodes(), &root, &foreign)
    })
}

/// Problems with a classified FD table of another service (pure).
///
/// `foreign_socket(inode)` says whether an unclassified socket is something
/// the service cannot have made for itself in serving: a Unix socket (an
/// inherited socketpair end, another process's control socket) or a
/// listening TCP socket (another fixture's listener). Its accepted client
/// connections are its business.
pub fn custom_fd_problems(
    classes: &[(i32, FdClass)],
    listeners: &[(String, u64)],
    scenario_root: &str,
    foreign_socket: &dyn Fn(u64) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, _) in listeners {
        if !classes
            .iter()
            .any(|(_, c)| *c == FdClass::Listener(name.clone()))
        {
            problems.push(format!("listener {name} is not open"));
        }
    }
    if !classes.iter().any(|(_, c)| *c == FdClass::ControlSocket) {
        problems.push("the control socket is not open".into());
    }
    if !classes.iter().any(|(_, c)| *c == FdClass::LockFile) {
        problems.push("the lock file is not open".into());
    }
    for (fd, class) in classes {
        if let FdClass::Stray(what) = class {
            let foreign = procs::socket_inode_of_target(what.split(' ').next().unwrap_or(""))
                .is_some_and(foreign_socket);
            let ours = what.starts_with(scenario_root);
            if foreign || ours {
                problems.push(format!("stray FD {fd}: {what}"));
            }
        }
    }
    problems
}

/// The running write phase of a workload.
pub struct Workload {
    pid: u32,
    root: PathBuf,
    /// Stopped and reaped: its group id may be anyone's now.
    stopped: bool,
}

fn workload_command(cmd: &str, fx: &Fixture, phase: &str) -> Result<Command, String> {
    let state_dir = fx.root().join("workload-state");
    std::fs::create_dir_all(&state_dir).map_err(|e| format!("workload state dir: {e}"))?;
    let out = |stream: &str| {
        std::fs::File::create(fx.root().join(format!("workload-{phase}.{stream}")))
            .map_err(|e| format!("workload output: {e}"))
    };
    let listeners = fx.listener_addrs();
    let mut words = cmd.split_whitespace();
    let program = words.next().ok_or("--workload is empty")?;
    let mut c = Command::new(program);
    c.args(words)
        // Its own process group: the stop signal reaches its helpers too.
        .process_group(0)
        .env("CHAOS_PHASE", phase)
        .env(
            "CHAOS_ADDR",
            listeners
                .first()
                .map(|(_, a)| a.to_string())
                .unwrap_or_default(),
        )
        .env(
            "CHAOS_LISTENERS",
            listeners
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .env("CHAOS_DATA_DIR", fx.data_dir())
        .env("CHAOS_STATE_DIR", &state_dir)
        .stdin(Stdio::null())
        .stdout(out("stdout")?)
        .stderr(out("stderr")?);
    Ok(c)
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Workload {
    /// Start the write phase.
    pub fn start(cmd: &str, fx: &Fixture) -> Result<Self, String> {
        let mut c = workload_command(cmd, fx, "write")?;
        let pid = reaper::spawn(&mut c).map_err(|e| format!("cannot start the workload: {e}"))?;
        Ok(Self {
            pid,
            root: fx.root().to_path_buf(),
            stopped: false,
        })
    }

    /// `SIGTERM`, then its exit status: `Ok` for 0.
    pub fn stop(mut self) -> Result<(), String> {
        let already = reaper::exit_of(self.pid);
        if already.is_none() {
            signal_group(self.pid, Signal::SIGTERM);
        }
        let exit = reaper::wait_exit(self.pid, WORKLOAD_STOP_BOUND);
        if exit.is_none() {
            signal_group(self.pid, Signal::SIGKILL);
            let _ = reaper::wait_exit(self.pid, Duration::from_secs(2));
        }
        self.stopped = true;
        reaper::take(self.pid);
        let stderr = tail_of(&self.root.join("workload-write.stderr"));
        match exit.map(|e| e.kind) {
            Some(ExitKind::Code(0)) if already.is_none() => Ok(()),
            Some(kind) if already.is_some() => Err(format!(
                "the workload's write phase ended by itself before the episode did ({kind}); \
                 stderr: {stderr}"
            )),
            Some(kind) => Err(format!(
                "the workload's write phase ended with {kind}; stderr: {stderr}"
            )),
            None => {
                reaper::take(self.pid);
                Err(format!(
                    "the workload's write phase did not exit within {WORKLOAD_STOP_BOUND:?} of \
                     SIGTERM; it was killed"
                ))
            }
        }
    }

    /// Run the verify phase: a passing check when it exits 0.
    pub fn verify(cmd: &str, fx: &Fixture) -> Check {
        let mut c = match workload_command(cmd, fx, "verify") {
            Ok(c) => c,
            Err(e) => return Check::fail("workload/verify", e),
        };
        let result = reaper::run_to_completion(&mut c, WORKLOAD_VERIFY_BOUND);
        let stdout = tail_of(&fx.root().join("workload-verify.stdout"));
        let stderr = tail_of(&fx.root().join("workload-verify.stderr"));
        match result {
            Ok(ExitKind::Code(0)) => Check::pass(
                "workload/verify",
                format!("the workload verified its acknowledged writes: {stdout}"),
            ),
            Ok(kind) => Check::fail(
                "workload/verify",
                format!("the workload's verify phase ended with {kind}: {stdout} {stderr}"),
            ),
            Err(e) => Check::fail("workload/verify", e.to_string()),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if !self.stopped {
            signal_group(self.pid, Signal::SIGKILL);
        }
    }
}

/// Signal the process group the workload leads (its pid is the group id,
/// see `process_group(0)`), unless the leader was reaped and nothing of the
/// group is left to signal.
fn signal_group(leader: u32, sig: Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leader as i32), sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_backlog_of_a_listening_socket_is_its_rx_queue() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
           1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(listen_backlog(text, 4242), Some(3));
        assert_eq!(listen_backlog(text, 4343), None, "not a listening socket");
        assert_eq!(listen_backlog(text, 1), None);
    }

    #[test]
    fn a_real_listener_shows_its_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = procs::socket_inode(&listener).unwrap();
        assert_eq!(backlog(inode), Some(0));
        let _c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The kernel queues the connection as the handshake completes; no
        // event says when, so probe.
        handoff::util::poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            (backlog(inode) == Some(1)).then_some(())
        })
        .expect("the backlog never showed the connection");
        let _accepted = listener.accept().unwrap();
        assert_eq!(backlog(inode), Some(0));
    }

    #[test]
    fn another_services_own_files_are_not_strays() {
        let classes = vec![
            (3, FdClass::Listener("http".into())),
            (4, FdClass::ControlSocket),
            (5, FdClass::LockFile),
            (6, FdClass::Stray("/etc/ssl/certs/ca.pem".into())),
            (
                7,
                FdClass::Stray("/tmp/handoff-x/supervisor-1.jsonl".into()),
            ),
            (8, FdClass::Stray("socket:[99]".into())),
        ];
        let listeners = vec![("http".to_string(), 1)];
        let foreign = |ino: u64| ino == 99;
        let problems = custom_fd_problems(&classes, &listeners, "/tmp/handoff-x/", &foreign);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("supervisor-1.jsonl"));
        assert!(problems[1].contains("socket:[99]"));
        // A client connection (a TCP socket that is not listening) is fine.
        let client = vec![(9, FdClass::Stray("socket:[77]".into()))];
        let problems = custom_fd_problems(&client, &[], "/tmp/handoff-x/", &foreign);
        assert_eq!(
            problems.len(),
            2,
            "only the missing control socket and lock: {problems:?}"
        );
    }
}
