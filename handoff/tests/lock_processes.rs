//! The data-dir lock across real processes: exclusion, release on `SIGKILL`,
//! and pid files that lie.
//!
//! The other processes are this test binary itself, re-executed in a helper
//! mode selected by `HANDOFF_LOCK_TEST_HELPER` (see
//! [`helper_process_entry_point`]). Every wait has a deadline; nothing
//! sleeps to synchronise.
//!
//! Reproduce one test: `cargo test -p handoff --test lock_processes <name>`.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use handoff::lock::{holder_pid, is_locked};
use handoff::{DataDirLock, Error};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HELPER_ENV: &str = "HANDOFF_LOCK_TEST_HELPER";
const DIR_ENV: &str = "HANDOFF_LOCK_TEST_DIR";
const HELPER_TEST: &str = "helper_process_entry_point";
const DEADLINE: Duration = Duration::from_secs(30);

/// Not a test: the entry point of the helper processes. Without
/// `HANDOFF_LOCK_TEST_HELPER` it does nothing.
///
/// - `hold`: take the lock with `DataDirLock::acquire`, print
///   `LOCKED <pid>`, hold it until stdin closes.
/// - `bequeath`: take the flock by hand on an FD that is *not*
///   close-on-exec, record its pid in the pid file, spawn `cat` (which
///   inherits the FD, and so the flock, and stdin), print
///   `LOCKED <pid> <cat pid>`, and wait for `cat`.
#[test]
fn helper_process_entry_point() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var(DIR_ENV).expect(DIR_ENV));
    match mode.as_str() {
        "hold" => {
            let lock = DataDirLock::acquire(&dir).expect("helper acquire");
            println!("LOCKED {}", std::process::id());
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            lock.release();
        }
        "bequeath" => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(DataDirLock::LOCK_FILE))
                .unwrap();
            let flock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| e)
                .expect("helper flock");
            nix::fcntl::fcntl(
                flock.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
            std::fs::write(
                dir.join(DataDirLock::PID_FILE),
                format!("{}\n", std::process::id()),
            )
            .unwrap();
            let mut heir = Command::new("cat")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn cat");
            println!("LOCKED {} {}", std::process::id(), heir.id());
            let _ = heir.wait();
        }
        other => panic!("unknown helper mode {other:?}"),
    }
}

/// A helper process and the lines it prints. Dropping it kills and reaps
/// it, so no test leaves a process behind.
struct Helper {
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn spawn(mode: &str, dir: &Path) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                HELPER_TEST,
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(HELPER_ENV, mode)
            .env(DIR_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            pid: child.id(),
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
        }
    }

    /// The numbers after `LOCKED`, once the helper holds the lock.
    fn wait_until_locked(&self) -> Vec<u32> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("helper never reported LOCKED within {DEADLINE:?}: {e}")
            });
            if let Some(rest) = line.strip_prefix("LOCKED ") {
                return rest.split(' ').map(|w| w.parse().unwrap()).collect();
            }
        }
    }

    /// SIGKILL and reap: once this returns the process has exited, so the
    /// kernel has closed its FDs.
    fn kill_and_reap(mut self) -> ExitStatus {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL).unwrap();
        wait_with_deadline(self.child.take().unwrap())
    }

    /// Close stdin and wait for a clean exit.
    fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        wait_with_deadline(self.child.take().unwrap())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait for `child`, failing the test (and killing the child) past the
/// deadline. std's `Child::wait` has no timeout, so it runs in a thread.
fn wait_with_deadline(mut child: Child) -> ExitStatus {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("process {pid} still running after {DEADLINE:?}");
        }
    }
}

fn expect_lock_held(result: handoff::Result<DataDirLock>) -> Option<u32> {
    match result {
        Err(Error::LockHeld { holder_pid, .. }) => holder_pid,
        other => panic!("expected LockHeld, got {other:?}"),
    }
}

#[test]
fn second_open_in_the_same_process_is_excluded() {
    let dir = tempfile::tempdir().unwrap();
    let lock = DataDirLock::acquire(dir.path()).unwrap();
    assert_eq!(
        expect_lock_held(DataDirLock::acquire(dir.path())),
        Some(std::process::id())
    );
    assert_eq!(
        expect_lock_held(DataDirLock::acquire_or_break_stale(dir.path())),
        Some(std::process::id())
    );
    lock.release();
    DataDirLock::acquire(dir.path()).unwrap();
}

#[test]
fn flock_excludes_another_process_and_is_released_when_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Helper::spawn("hold", dir.path());
    assert_eq!(holder.wait_until_locked(), [holder.pid]);

    assert_eq!(
        expect_lock_held(DataDirLock::acquire(dir.path())),
        Some(holder.pid)
    );
    assert!(is_locked(dir.path()).unwrap());
    assert_eq!(holder_pid(dir.path()), Some(holder.pid));

    let dead = holder.pid;
    let status = holder.kill_and_reap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // SIGKILL ran no destructor: the pid file still names the dead holder,
    // but the kernel released the flock.
    assert_eq!(holder_pid(dir.path()), Some(dead));
    assert!(!is_locked(dir.path()).unwrap());
    let lock = DataDirLock::acquire(dir.path()).unwrap();
    assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
    assert!(dir.path().join(DataDirLock::LOCK_FILE).exists());
    drop(lock);
}

#[test]
fn a_holder_that_exits_cleanly_releases_the_lock_and_its_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Helper::spawn("hold", dir.path());
    holder.wait_until_locked();
    assert!(holder.finish().success());
    assert_eq!(holder_pid(dir.path()), None);
    assert!(!is_locked(dir.path()).unwrap());
    DataDirLock::acquire(dir.path()).unwrap();
}

#[test]
fn acquire_within_waits_for_a_holder_that_releases() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = Helper::spawn("hold", dir.path());
    holder.wait_until_locked();
    // The holder releases when its stdin closes, while we are polling.
    drop(holder.stdin.take());
    let lock = DataDirLock::acquire_within(dir.path(), DEADLINE, Duration::from_millis(5))
        .expect("the holder released within the deadline");
    assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
    drop(lock);
    assert!(holder.finish().success());
}

#[test]
fn break_stale_overwrites_the_pid_file_of_a_killed_holder() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Helper::spawn("hold", dir.path());
    holder.wait_until_locked();
    let dead = holder.pid;
    holder.kill_and_reap();
    assert_eq!(holder_pid(dir.path()), Some(dead));
    let lock = DataDirLock::acquire_or_break_stale(dir.path()).unwrap();
    assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
    drop(lock);
}

#[test]
fn break_stale_ignores_a_pid_file_naming_a_live_process_that_does_not_hold_the_flock() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // Alive, and holding a lock, but on another data dir.
    let liar = Helper::spawn("hold", elsewhere.path());
    liar.wait_until_locked();
    std::fs::write(
        dir.path().join(DataDirLock::PID_FILE),
        format!("{}\n", liar.pid),
    )
    .unwrap();
    assert!(!is_locked(dir.path()).unwrap());
    let lock = DataDirLock::acquire_or_break_stale(dir.path()).unwrap();
    assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
    drop(lock);
    assert!(liar.finish().success());
}

#[test]
fn flock_inherited_by_a_survivor_wins_over_a_pid_file_naming_the_dead() {
    let dir = tempfile::tempdir().unwrap();
    let mut parent = Helper::spawn("bequeath", dir.path());
    let pids = parent.wait_until_locked();
    let (dead, heir) = (pids[0], pids[1]);
    assert_eq!(dead, parent.pid);
    // The heir shares the helper's stdin pipe; keep our end to keep it alive.
    let heir_stdin = parent.stdin.take();
    assert!(!parent.kill_and_reap().success());

    // The pid file names a dead process, yet the flock is held (by `cat`).
    assert_eq!(holder_pid(dir.path()), Some(dead));
    assert!(is_locked(dir.path()).unwrap());
    assert_eq!(
        expect_lock_held(DataDirLock::acquire(dir.path())),
        Some(dead)
    );
    assert_eq!(
        expect_lock_held(DataDirLock::acquire_or_break_stale(dir.path())),
        None,
        "a dead pid is no useful hint"
    );
    // Nothing was unlinked or overwritten on the way.
    assert_eq!(holder_pid(dir.path()), Some(dead));

    // Closing the pipe ends the heir (reparented, so not ours to reap); its
    // exit closes the last FD of the flock.
    drop(heir_stdin);
    let lock = DataDirLock::acquire_within(dir.path(), DEADLINE, Duration::from_millis(5))
        .unwrap_or_else(|e| panic!("heir {heir} kept the lock: {e}"));
    drop(lock);
}

#[test]
fn util_linux_flock_sees_our_lock() {
    let flock_bin = Path::new("/usr/bin/flock");
    if !flock_bin.exists() {
        eprintln!("/usr/bin/flock (util-linux) is absent; this cross-check needs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lock_file = dir.path().join(DataDirLock::LOCK_FILE);
    let run = || {
        let child = Command::new(flock_bin)
            .arg("-n")
            .arg(&lock_file)
            .arg("true")
            .spawn()
            .unwrap();
        wait_with_deadline(child)
    };
    let lock = DataDirLock::acquire(dir.path()).unwrap();
    assert_eq!(run().code(), Some(1), "flock -n must fail while we hold it");
    lock.release();
    assert!(run().success(), "flock -n must succeed once released");
}
