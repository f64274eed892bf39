//! The harness as a child subreaper, and the one place that reaps children.
//!
//! [`init`] makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`):
//! when a supervisor dies, its successor is reparented to the harness rather
//! than to init, so no process a scenario started can escape it. One reaper
//! thread then reaps *every* child of the process, direct or reparented, and
//! records how it ended. Scenarios run in parallel threads of one process, so
//! nobody else may wait for children: a `waitpid(-1)` elsewhere would steal
//! another scenario's exit status, and std's `Child::wait` would race the
//! reaper. Spawn through [`spawn`] (or hand a `Child` to [`adopt`]) and ask
//! this module for exit statuses.
//!
//! Guarantees:
//! - a child is reaped (`waitpid`) only while holding the state lock, and
//!   [`signal`] checks "not reaped yet" under the same lock, so a signal never
//!   reaches a recycled pid of one of our own children;
//! - every reaped pid's exit (code or signal) is recorded with the
//!   `CLOCK_MONOTONIC` time of the reap, until a fixture [`take`]s it.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use serde::Serialize;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit {c}"),
            ExitKind::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its pid.
    pub pid: u32,
    /// How it ended.
    pub kind: ExitKind,
    /// `CLOCK_MONOTONIC` (ns) when it was reaped: an upper bound on its death.
    pub reaped_mono_ns: u64,
}

struct State {
    exited: HashMap<u32, Exit>,
    /// Bumped on every spawn so a reaper idle on "no children" wakes up.
    spawn_generation: u64,
}

struct Reaper {
    state: Mutex<State>,
    changed: Condvar,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| Reaper {
        state: Mutex::new(State {
            exited: HashMap::new(),
            spawn_generation: 0,
        }),
        changed: Condvar::new(),
    })
}

fn lock() -> MutexGuard<'static, State> {
    reaper()
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Become a child subreaper and start the reaper thread (once per process).
pub fn init() -> io::Result<()> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| format!("PR_SET_CHILD_SUBREAPER failed: {e}"))?;
            std::thread::Builder::new()
                .name("harness-reaper".into())
                .spawn(reap_forever)
                .map_err(|e| format!("cannot start the reaper thread: {e}"))?;
            Ok(())
        })
        .clone()
        .map_err(io::Error::other)
}

fn reap_forever() {
    loop {
        let generation = lock().spawn_generation;
        // Peek without reaping: the reap itself happens under the lock.
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(peeked) => {
                let Some(pid) = peeked.pid() else { continue };
                let mut state = lock();
                let status = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                let kind = match status {
                    Ok(WaitStatus::Exited(_, code)) => Some(ExitKind::Code(code)),
                    Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitKind::Signal(sig as i32)),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let pid = pid.as_raw() as u32;
                    state.exited.insert(
                        pid,
                        Exit {
                            pid,
                            kind,
                            reaped_mono_ns: handoff::util::monotonic_ns(),
                        },
                    );
                    reaper().changed.notify_all();
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                // No children: idle until something is spawned. The timeout
                // is a safety net, not a synchronisation: a spawn bumps the
                // generation and notifies.
                let state = lock();
                if state.spawn_generation == generation {
                    let _ = reaper()
                        .changed
                        .wait_timeout(state, Duration::from_millis(200));
                }
            }
            Err(e) => {
                eprintln!("harness reaper: waitid failed: {e}");
                let state = lock();
                let _ = reaper()
                    .changed
                    .wait_timeout(state, Duration::from_millis(50));
            }
        }
    }
}

fn note_spawned() {
    let mut state = lock();
    state.spawn_generation += 1;
    reaper().changed.notify_all();
}

/// Spawn `cmd`; the reaper owns its exit status. Returns the pid.
pub fn spawn(cmd: &mut Command) -> io::Result<u32> {
    init()?;
    let child = cmd.spawn()?;
    Ok(adopt(child))
}

/// Hand a child spawned elsewhere to the reaper. The `Child` is dropped
/// without waiting (std never waits on drop).
pub fn adopt(child: Child) -> u32 {
    let pid = child.id();
    drop(child);
    note_spawned();
    pid
}

/// The recorded exit of `pid`, if it was reaped.
pub fn exit_of(pid: u32) -> Option<Exit> {
    lock().exited.get(&pid).copied()
}

/// Wait until `pid` is reaped, at most `timeout`.
pub fn wait_exit(pid: u32, timeout: Duration) -> Option<Exit> {
    let deadline = Instant::now() + timeout;
    let mut state = lock();
    loop {
        if let Some(exit) = state.exited.get(&pid) {
            return Some(*exit);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        state = reaper()
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Forget and return the recorded exit of `pid` (a fixture does this for its
/// processes at the end, so a recycled pid never inherits a stale record).
pub fn take(pid: u32) -> Option<Exit> {
    lock().exited.remove(&pid)
}

/// Send `sig` to `pid` unless the reaper has already reaped it. Returns
/// whether the signal was sent.
pub fn signal(pid: u32, sig: Signal) -> bool {
    let state = lock();
    if state.exited.contains_key(&pid) {
        return false;
    }
    let sent = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).is_ok();
    drop(state);
    sent
}

/// Run `cmd` to completion through the reaper (for helpers such as the
/// build step, which must not wait on their own once the reaper runs).
pub fn run_to_completion(cmd: &mut Command, timeout: Duration) -> io::Result<ExitKind> {
    let pid = spawn(cmd)?;
    match wait_exit(pid, timeout) {
        Some(exit) => {
            take(pid);
            Ok(exit.kind)
        }
        None => {
            signal(pid, Signal::SIGKILL);
            let _ = wait_exit(pid, Duration::from_secs(5));
            take(pid);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {timeout:?}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaps_children_and_records_codes_and_signals() {
        let code = run_to_completion(
            Command::new("sh").args(["-c", "exit 7"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(code, ExitKind::Code(7));

        let pid = spawn(Command::new("sleep").arg("30")).unwrap();
        assert!(signal(pid, Signal::SIGKILL));
        let exit = wait_exit(pid, Duration::from_secs(10)).expect("reaped");
        assert_eq!(exit.kind, ExitKind::Signal(Signal::SIGKILL as i32));
        assert!(!signal(pid, Signal::SIGKILL), "never signal a reaped pid");
        assert_eq!(take(pid).map(|e| e.pid), Some(pid));
    }

    #[test]
    fn orphans_are_reparented_and_reaped() {
        init().unwrap();
        // The shell starts a grandchild that blocks on a FIFO, prints its pid
        // and exits; the grandchild is reparented to us (subreaper). Writing
        // to the FIFO lets it exit, and the reaper here collects it.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pid");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let script = format!(
            "sh -c 'read x < {fifo}; exit 5' & echo $! > {out}",
            fifo = fifo.display(),
            out = out.display()
        );
        let code = run_to_completion(
            Command::new("sh").args(["-c", &script]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(code, ExitKind::Code(0));
        let pid: u32 = std::fs::read_to_string(&out)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::write(&fifo, "go\n").unwrap();
        let exit = wait_exit(pid, Duration::from_secs(10)).expect("grandchild reaped by us");
        assert_eq!(exit.kind, ExitKind::Code(5));
        take(pid);
    }

    #[test]
    fn exit_kinds_display_readably() {
        assert_eq!(ExitKind::Code(99).to_string(), "exit 99");
        assert_eq!(ExitKind::Signal(9).to_string(), "killed by SIGKILL");
    }
}
