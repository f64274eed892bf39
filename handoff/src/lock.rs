//! The data-dir lock: at every instant at most one process is the writer.
//!
//! Two files in the data dir:
//!
//! - `handoff.lock`: the **truth**. Whoever holds `flock(LOCK_EX)` on it owns
//!   the data dir. It is created when missing and **never unlinked**: a
//!   process that unlinked it could take a lock on a fresh inode while another
//!   process still holds the old one, and both would be writers. The kernel
//!   releases the flock when the last file descriptor of the open file
//!   description is closed, so a crashed holder never leaves it stale.
//! - `handoff.pid`: an **advisory hint** for humans and error messages. It is
//!   written (by atomic rename) after the flock is taken, and removed on
//!   release while the flock is still held. It may lie: a holder killed by
//!   `SIGKILL` leaves it behind naming a dead pid, and a pid can be reused by
//!   an unrelated process. Nothing here decides anything from it.
//!
//! `flock` locks belong to an open file description, not to a process: two
//! independent `open`s in one process exclude each other, and a descriptor
//! inherited across `fork` shares the lock. This module opens the lock file
//! close-on-exec, so a spawned process (the successor) never inherits it and
//! must take the lock itself.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Exclusive `flock` on `<data_dir>/handoff.lock`, plus advisory pid file.
///
/// Holding a value of this type means this process holds the flock. Dropping
/// it releases the flock (as [`DataDirLock::release`] does).
#[derive(Debug)]
pub struct DataDirLock {
    data_dir: PathBuf,
    /// `None` only transiently, while releasing.
    flock: Option<Flock<File>>,
    /// Our pid is in the pid file (a successor records it once it serves).
    pid_recorded: bool,
}

/// Bound on retries of a `flock` interrupted by a signal.
const MAX_EINTR_RETRIES: u32 = 100;

/// Bound on the bytes read from the advisory pid file.
const MAX_PID_FILE_LEN: u64 = 64;

impl DataDirLock {
    /// Name of the lock file inside the data dir.
    pub const LOCK_FILE: &'static str = "handoff.lock";
    /// Name of the advisory pid file inside the data dir.
    pub const PID_FILE: &'static str = "handoff.pid";

    /// Take the lock without waiting.
    ///
    /// Creates `handoff.lock` if missing, takes `flock(LOCK_EX | LOCK_NB)` on
    /// a fresh open file description, then records this process's pid in
    /// `handoff.pid` (a failure to write that hint is logged, not returned).
    /// When another open file description holds the flock
    /// (another process, or another `acquire` in this one), fails with
    /// [`Error::LockHeld`] carrying the pid file's content as a hint.
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let mut lock = Self::acquire_unrecorded(data_dir)?;
        lock.record_holder_pid();
        Ok(lock)
    }

    /// [`acquire`](Self::acquire) without writing the pid file; see
    /// [`record_holder_pid`](Self::record_holder_pid).
    fn acquire_unrecorded(data_dir: &Path) -> Result<Self> {
        let flock = try_flock(data_dir)?.ok_or_else(|| Error::LockHeld {
            path: lock_path(data_dir),
            holder_pid: holder_pid(data_dir),
        })?;
        Ok(DataDirLock {
            data_dir: data_dir.to_owned(),
            flock: Some(flock),
            pid_recorded: false,
        })
    }

    /// Write our pid to the advisory pid file, unless done already. A
    /// successor takes the flock with the pid file still naming the
    /// incumbent (a hint, never the truth) and records itself once it
    /// serves, off the path on which no process accepts.
    pub(crate) fn record_holder_pid(&mut self) {
        if !self.pid_recorded {
            record_pid(&self.data_dir);
            self.pid_recorded = true;
        }
    }

    /// Take the lock, treating a lying pid file as stale.
    ///
    /// Exactly like [`DataDirLock::acquire`] in what it decides: **the flock
    /// decides, the pid file never does.** What differs is that this call
    /// expects the pid file to lie and says so:
    ///
    /// - flock free, pid file names another process (dead, or alive but not
    ///   holding the flock since we just took it): the lock is taken, the
    ///   stale pid file is overwritten with our pid, and a `warn` event says
    ///   which pid it named and whether that process was alive.
    /// - flock held, pid file names a live process: [`Error::LockHeld`] with
    ///   that pid as the hint (it may still be wrong, but it is the best
    ///   lead).
    /// - flock held, pid file names a dead process (or a zombie), or is
    ///   absent or unreadable: some other process holds the flock without
    ///   having recorded itself, for example a child that inherited the lock
    ///   file descriptor across `fork` from the process that died.
    ///   [`Error::LockHeld`] with no pid hint, and a `warn` event that
    ///   explains this and names the dead pid.
    ///
    /// Nothing is ever unlinked.
    pub fn acquire_or_break_stale(data_dir: &Path) -> Result<Self> {
        let recorded = holder_pid(data_dir);
        let path = lock_path(data_dir);
        let Some(flock) = try_flock(data_dir)? else {
            return match recorded {
                Some(pid) if process_is_running(pid) => Err(Error::LockHeld {
                    path,
                    holder_pid: Some(pid),
                }),
                _ => {
                    tracing::warn!(
                        lock_file = %path.display(),
                        pid_file_names = ?recorded,
                        "data-dir lock is held, but the pid file names no live process: \
                         some other process holds the flock without having recorded itself \
                         (for example one that inherited the lock file descriptor from a \
                         process that has since died); find it with `fuser -v {}`",
                        path.display()
                    );
                    Err(Error::LockHeld {
                        path,
                        holder_pid: None,
                    })
                }
            };
        };
        // Re-read: the previous holder may have rewritten the pid file
        // between our first read and the moment it released the flock.
        if let Some(stale) = holder_pid(data_dir).or(recorded)
            && stale != std::process::id()
        {
            let state = if process_is_running(stale) {
                "alive but not holding the flock (pid reused, or a lying pid file)"
            } else {
                "dead"
            };
            tracing::warn!(
                lock_file = %path.display(),
                stale_pid = stale,
                "took the data-dir lock; the pid file named pid {stale}, which is {state}; \
                 overwriting the stale pid file"
            );
        }
        record_pid(data_dir);
        Ok(DataDirLock {
            data_dir: data_dir.to_owned(),
            flock: Some(flock),
            pid_recorded: true,
        })
    }

    /// Poll `acquire` every `step` until `timeout`.
    ///
    /// At least one attempt is made, even with a zero timeout. While the lock
    /// is held, sleeps `step` (shortened to the time left) between attempts;
    /// this is a pacing loop, not synchronisation. On expiry returns
    /// [`Error::Io`] of kind [`ErrorKind::TimedOut`] whose inner error is a
    /// [`LockWaitExpired`] saying how long it waited and who held the lock.
    /// Errors other than [`Error::LockHeld`] are returned at once.
    pub fn acquire_within(data_dir: &Path, timeout: Duration, step: Duration) -> Result<Self> {
        let mut lock = Self::acquire_within_unrecorded(data_dir, timeout, step)?;
        lock.record_holder_pid();
        Ok(lock)
    }

    /// [`acquire_within`](Self::acquire_within) without writing the pid
    /// file (the successor's take-over).
    pub(crate) fn acquire_within_unrecorded(
        data_dir: &Path,
        timeout: Duration,
        step: Duration,
    ) -> Result<Self> {
        let started = Instant::now();
        let mut attempts: u32 = 0;
        let mut last_held = (lock_path(data_dir), None);
        // flock(2) offers no bounded blocking wait: try without blocking
        // until the holder lets go or the bound passes. Never spin: a zero
        // step still yields a millisecond.
        let step = step.max(Duration::from_millis(1));
        let outcome = crate::util::poll_until(timeout, step, || {
            attempts = attempts.saturating_add(1);
            match Self::acquire_unrecorded(data_dir) {
                Err(Error::LockHeld { path, holder_pid }) => {
                    last_held = (path, holder_pid);
                    None
                }
                done => Some(done),
            }
        });
        outcome.unwrap_or_else(|| {
            let (path, holder_pid) = last_held;
            Err(Error::Io(std::io::Error::new(
                ErrorKind::TimedOut,
                LockWaitExpired {
                    path,
                    holder_pid,
                    waited: started.elapsed(),
                    attempts,
                },
            )))
        })
    }

    /// Release the flock now.
    ///
    /// Removes the pid file first (if it still names this process), while the
    /// flock is still held, so it can never delete the pid file of the next
    /// holder; then unlocks. Dropping the value does the same.
    pub fn release(self) {
        drop(self);
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The lock file, `<data_dir>/handoff.lock`.
    pub fn lock_path(&self) -> PathBuf {
        lock_path(&self.data_dir)
    }

    /// Release the flock to a successor after a seal: the pid file is left
    /// naming us (no file I/O between the seal and the release); the
    /// successor overwrites it.
    pub(crate) fn release_to_successor(mut self) {
        self.pid_recorded = false;
        self.release_inner();
    }

    fn release_inner(&mut self) {
        let Some(flock) = self.flock.take() else {
            return;
        };
        // Logged *before* the unlock, so a log-derived holding span never
        // extends past the real one (the harness's single-writer check).
        tracing::info!(target: crate::events::FLOCK_RELEASING, "releasing the data-dir flock");
        if self.pid_recorded && holder_pid(&self.data_dir) == Some(std::process::id()) {
            let pid_path = pid_path(&self.data_dir);
            if let Err(e) = std::fs::remove_file(&pid_path)
                && e.kind() != ErrorKind::NotFound
            {
                tracing::warn!(pid_file = %pid_path.display(), error = %e,
                    "could not remove the advisory pid file on release");
            }
        }
        if let Err((flock, errno)) = flock.unlock() {
            tracing::warn!(lock_file = %lock_path(&self.data_dir).display(), %errno,
                "explicit unlock failed; closing the lock file releases it");
            drop(flock);
        }
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        self.release_inner();
    }
}

/// What [`DataDirLock::acquire_within`] reports when the lock stayed held.
#[derive(Debug)]
pub struct LockWaitExpired {
    /// The lock file.
    pub path: PathBuf,
    /// The pid file's hint at the last attempt.
    pub holder_pid: Option<u32>,
    /// How long we waited.
    pub waited: Duration,
    /// How many times we tried.
    pub attempts: u32,
}

impl std::fmt::Display for LockWaitExpired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data-dir lock {} still held after waiting {} ms ({} attempts)",
            self.path.display(),
            self.waited.as_millis(),
            self.attempts
        )?;
        if let Some(pid) = self.holder_pid {
            write!(f, "; pid file names {pid}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LockWaitExpired {}

/// True when some process holds the flock on `data_dir` right now.
///
/// Probes with `LOCK_EX | LOCK_NB` on a separate, read-only open file
/// description and unlocks at once. It creates nothing: when the lock file
/// does not exist, nobody can hold it and the answer is `false`. A lock held
/// by this very process through a [`DataDirLock`] counts as held. The answer
/// may be stale by the time it returns, and for the instant of the probe a
/// concurrent `acquire` elsewhere may see the lock as held.
pub fn is_locked(data_dir: &Path) -> Result<bool> {
    let file = match File::open(lock_path(data_dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::Io(e)),
    };
    match flock_nonblocking(file)? {
        Some(flock) => {
            // Dropping unlocks; an unlock error would only mean the close
            // releases it instead.
            drop(flock);
            Ok(false)
        }
        None => Ok(true),
    }
}

/// The pid the advisory pid file names, if any.
///
/// `None` when the file is absent, unreadable, or does not hold a single
/// positive decimal pid. Remember that the pid file may lie.
pub fn holder_pid(data_dir: &Path) -> Option<u32> {
    let file = File::open(pid_path(data_dir)).ok()?;
    let mut text = String::new();
    file.take(MAX_PID_FILE_LEN).read_to_string(&mut text).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    (pid != 0 && pid <= i32::MAX as u32).then_some(pid)
}

fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DataDirLock::LOCK_FILE)
}

fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DataDirLock::PID_FILE)
}

/// Open (creating if missing, never truncating) and try to lock. `None`
/// when another open file description holds the flock.
fn try_flock(data_dir: &Path) -> Result<Option<Flock<File>>> {
    // std opens with O_CLOEXEC: a spawned process never inherits the lock.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(data_dir))?;
    flock_nonblocking(file)
}

fn flock_nonblocking(mut file: File) -> Result<Option<Flock<File>>> {
    for _ in 0..MAX_EINTR_RETRIES {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => return Ok(Some(flock)),
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((returned, Errno::EINTR)) => file = returned,
            Err((_, errno)) => return Err(Error::from(errno)),
        }
    }
    Err(Error::from(Errno::EINTR))
}

/// Record our pid in the advisory pid file. The flock is already ours, so a
/// failure here (a read-only data dir with an existing lock file, say) costs
/// only the hint: it is logged, and a stale pid file is removed if possible
/// so it does not point at someone else.
fn record_pid(data_dir: &Path) {
    if let Err(e) = write_pid_file(data_dir) {
        let pid_path = pid_path(data_dir);
        tracing::warn!(pid_file = %pid_path.display(), error = %e,
            "holding the data-dir lock, but could not record our pid in the advisory pid file");
        let _ = std::fs::remove_file(pid_path);
    }
}

/// Record our pid, atomically so a reader never sees a half-written file.
/// Called only while holding the flock, so no other holder writes it
/// concurrently; the temp name carries the pid against non-holders.
///
/// The temp name is predictable, so whatever is there (a leftover, or a
/// symlink planted to make us write elsewhere) is removed, and the file is
/// created with `O_EXCL`, which never follows a symlink: if something
/// reappears in between, the write fails (and is logged) rather than going
/// through it.
fn write_pid_file(data_dir: &Path) -> Result<()> {
    let pid = std::process::id();
    let temp = data_dir.join(format!(".{}.tmp.{pid}", DataDirLock::PID_FILE));
    let written = (|| -> std::io::Result<()> {
        match std::fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        writeln!(file, "{pid}")?;
        std::fs::rename(&temp, pid_path(data_dir))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::Io(e));
    }
    Ok(())
}

/// True when `pid` names a process that could hold a file descriptor: it
/// exists and is not a zombie. `EPERM` from `kill(pid, 0)` means it exists.
pub(crate) fn process_is_running(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    // A zombie has closed all its descriptors: it holds no flock.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_in_the_same_process_is_refused_with_the_pid_hint() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
        match DataDirLock::acquire(dir.path()) {
            Err(Error::LockHeld { path, holder_pid }) => {
                assert_eq!(path, dir.path().join("handoff.lock"));
                assert_eq!(holder_pid, Some(std::process::id()));
            }
            other => panic!("expected LockHeld, got {other:?}"),
        }
        assert!(is_locked(dir.path()).unwrap());
        lock.release();
        assert!(!is_locked(dir.path()).unwrap());
        // The lock file stays; the pid file goes with the holder.
        assert!(dir.path().join("handoff.lock").exists());
        assert_eq!(holder_pid(dir.path()), None);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(again.data_dir(), dir.path());
    }

    #[test]
    fn a_handoff_leaves_the_pid_file_to_the_successor_which_records_itself_when_it_serves() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for another holder's pid.
        std::fs::write(dir.path().join("handoff.pid"), "1\n").unwrap();
        let old = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
        old.release_to_successor();
        assert!(!is_locked(dir.path()).unwrap());
        assert_eq!(
            holder_pid(dir.path()),
            Some(std::process::id()),
            "no pid-file I/O on the way from seal to release"
        );
        std::fs::write(dir.path().join("handoff.pid"), "1\n").unwrap();
        let mut new = DataDirLock::acquire_within_unrecorded(
            dir.path(),
            Duration::from_millis(10),
            Duration::from_millis(1),
        )
        .unwrap();
        assert_eq!(holder_pid(dir.path()), Some(1), "not recorded on take-over");
        new.record_holder_pid();
        assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
        drop(new);
        assert_eq!(holder_pid(dir.path()), None, "a recorded holder removes it");

        // A holder that never recorded itself leaves the file alone.
        std::fs::write(dir.path().join("handoff.pid"), "1\n").unwrap();
        let unrecorded = DataDirLock::acquire_within_unrecorded(
            dir.path(),
            Duration::from_millis(10),
            Duration::from_millis(1),
        )
        .unwrap();
        drop(unrecorded);
        assert_eq!(holder_pid(dir.path()), Some(1));
    }

    #[test]
    fn drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDirLock::acquire(dir.path()).unwrap());
        assert!(!is_locked(dir.path()).unwrap());
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn is_locked_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_locked(dir.path()).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // And a missing data dir is simply unlocked.
        assert!(!is_locked(&dir.path().join("absent")).unwrap());
    }

    #[test]
    fn is_locked_probe_does_not_keep_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handoff.lock"), b"").unwrap();
        assert!(!is_locked(dir.path()).unwrap());
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn acquire_in_a_missing_data_dir_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDirLock::acquire(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, Error::Io(ref e) if e.kind() == ErrorKind::NotFound));
    }

    #[test]
    fn holder_pid_ignores_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("handoff.pid");
        for (content, expected) in [
            ("1234\n", Some(1234)),
            ("  77 ", Some(77)),
            ("", None),
            ("0", None),
            ("-5", None),
            ("abc", None),
            ("99999999999", None),
            ("4294967295", None),
        ] {
            std::fs::write(&pid_file, content).unwrap();
            assert_eq!(holder_pid(dir.path()), expected, "{content:?}");
        }
        std::fs::write(&pid_file, vec![b'7'; 10_000]).unwrap();
        assert_eq!(holder_pid(dir.path()), None);
    }

    #[test]
    fn acquire_within_reports_how_long_it_waited() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire_within(
            dir.path(),
            Duration::from_millis(30),
            Duration::from_millis(5),
        )
        .unwrap_err();
        let Error::Io(io) = &err else {
            panic!("expected a timed-out I/O error, got {err:?}")
        };
        assert_eq!(io.kind(), ErrorKind::TimedOut);
        let expired = io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<LockWaitExpired>())
            .expect("inner LockWaitExpired");
        assert!(expired.waited >= Duration::from_millis(30));
        assert!(expired.attempts >= 2);
        assert_eq!(expired.holder_pid, Some(std::process::id()));
        let text = err.to_string();
        assert!(text.contains("still held after waiting"), "{text}");
        assert!(err.is_timeout());
    }

    #[test]
    fn acquire_within_succeeds_at_once_when_free() {
        let dir = tempfile::tempdir().unwrap();
        DataDirLock::acquire_within(dir.path(), Duration::ZERO, Duration::ZERO).unwrap();
    }

    #[test]
    fn zombie_and_absent_pids_are_not_running() {
        assert!(process_is_running(std::process::id()));
        assert!(!process_is_running(0));
        assert!(!process_is_running(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait (with a deadline) until the child is a zombie, without reaping.
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_is_running(pid) {
            assert!(Instant::now() < deadline, "child {pid} never exited");
            std::thread::yield_now();
        }
        child.wait().unwrap();
        assert!(!process_is_running(pid));
    }
}
