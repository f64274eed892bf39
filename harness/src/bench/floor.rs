//! The floor: what the steps a handoff cannot avoid cost on this machine,
//! measured in the same run as the handoffs so ratios compare like with like.
//!
//! - spawn → first byte on a pipe, for the fake peer itself (`fake-peer
//!   --version`: exec, dynamic loading, Rust runtime, clap, the
//!   `handoff::events` subscriber — everything a successor does before its
//!   own work) with std's default spawn (`posix_spawn`, a vfork) and with a
//!   forced `fork`+`exec` (the path std takes when a `pre_exec` hook is set,
//!   as `handoff::fd` must), and `/bin/echo` for reference;
//! - one frame's round trip over a Unix socketpair (`handoff::frame`);
//! - one durable journal write (`StateJournal::write_atomic`: temp file,
//!   fsync, rename, directory fsync) and one journal clear (unlink,
//!   directory fsync);
//! - the data-dir flock taken and released (`DataDirLock`, with its pid file);
//! - one small append + `fdatasync`, the fake peer's durable `PUT`.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handoff::frame::{read_message, write_message};
use handoff::protocol::PROTO_MAX;
use handoff::{DataDirLock, HandoffId, Message, Phase, StateJournal};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Iterations thrown away before measuring (page cache, branch predictors,
/// lazy binding).
const WARM_UP: usize = 5;
/// Bound on a spawned program's first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);

/// How std spawns the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnPath {
    /// std's default: `posix_spawn` (vfork semantics) when nothing forbids it.
    Default,
    /// `fork` + `exec`, which std uses when the command needs code to run in
    /// the child (a `pre_exec` hook, or as here a uid change to our own uid).
    ForkExec,
}

/// Time from `spawn()` to the first byte the child writes on its stdout
/// pipe, `iterations` times (after a warm-up). The child is reaped after
/// each measurement, outside the timed part.
pub fn spawn_to_first_byte(
    program: &Path,
    args: &[&str],
    path: SpawnPath,
    iterations: usize,
) -> io::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + WARM_UP {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if path == SpawnPath::ForkExec {
            cmd.uid(nix::unistd::getuid().as_raw());
        }
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("spawned child has no stdout pipe"))?;
        let ready = {
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
            poll(
                &mut fds,
                PollTimeout::try_from(FIRST_BYTE_TIMEOUT).unwrap_or(PollTimeout::NONE),
            )
            .map_err(io::Error::from)?
        };
        let mut byte = [0u8; 1];
        let got = if ready > 0 {
            stdout.read(&mut byte)?
        } else {
            0
        };
        let elapsed = started.elapsed();
        if got == 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{} {args:?} wrote nothing within {FIRST_BYTE_TIMEOUT:?}",
                program.display()
            )));
        }
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "{} {args:?} exited with {status}",
                program.display()
            )));
        }
        if i >= WARM_UP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    Ok(samples)
}

/// Spawn `command` (the program, then its arguments) the way the
/// supervisor spawns a successor (fork, then exec), with stdio on
/// /dev/null, and wait for it to exit; an error if it fails. The spawn-only windows of the load run time this.
pub fn spawn_and_wait(command: &[String]) -> io::Result<()> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Forces fork + exec, as in `SpawnPath::ForkExec`.
    cmd.uid(nix::unistd::getuid().as_raw());
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {args:?} exited with {status}"
        )))
    }
}

/// Round trip of one protocol frame (a `Heartbeat`) over a socketpair, to a
/// thread that echoes it.
pub fn unix_round_trip(iterations: usize) -> handoff::Result<Vec<u64>> {
    let (mut near, mut far) = UnixStream::pair()?;
    near.set_read_timeout(Some(Duration::from_secs(5)))?;
    far.set_read_timeout(Some(Duration::from_secs(5)))?;
    let echo = std::thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || -> handoff::Result<()> {
            loop {
                match read_message(&mut far) {
                    Ok((version, msg)) => write_message(&mut far, version, &msg)?,
                    Err(handoff::Error::PeerClosed(_)) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })?;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + WARM_UP {
        let started = Instant::now();
        write_message(
            &mut near,
            PROTO_MAX,
            &Message::Heartbeat { ts_ms: i as u64 },
        )?;
        let (_, reply) = read_message(&mut near)?;
        let elapsed = started.elapsed();
        debug_assert!(matches!(reply, Message::Heartbeat { .. }));
        if i >= WARM_UP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    drop(near);
    echo.join()
        .map_err(|_| handoff::Error::Protocol("echo thread panicked".into()))??;
    Ok(samples)
}

fn sample_journal() -> StateJournal {
    StateJournal {
        handoff_id: HandoffId::new(),
        phase: Phase::Negotiating,
        incumbent_pid: std::process::id(),
        successor_pid: Some(std::process::id() + 1),
        started_at_unix_ms: handoff::util::now_unix_ms(),
    }
}

/// `StateJournal::write_atomic` into `dir` (which should be on the file
/// system the handoffs' journal lives on).
pub fn journal_write(dir: &Path, iterations: usize) -> handoff::Result<Vec<u64>> {
    let path = dir.join("floor-journal.json");
    let journal = sample_journal();
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + WARM_UP {
        let started = Instant::now();
        journal.write_atomic(&path)?;
        let elapsed = started.elapsed();
        if i >= WARM_UP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    StateJournal::delete(&path)?;
    Ok(samples)
}

/// `StateJournal::delete` (unlink + directory fsync) of a journal just written.
pub fn journal_clear(dir: &Path, iterations: usize) -> handoff::Result<Vec<u64>> {
    let path = dir.join("floor-journal-clear.json");
    let journal = sample_journal();
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + WARM_UP {
        journal.write_atomic(&path)?;
        let started = Instant::now();
        StateJournal::delete(&path)?;
        let elapsed = started.elapsed();
        if i >= WARM_UP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    Ok(samples)
}

/// `DataDirLock::acquire` then release, in a fresh data dir under `dir`.
pub fn flock_cycle(dir: &Path, iterations: usize) -> handoff::Result<Vec<u64>> {
    let data_dir = dir.join("floor-lock");
    std::fs::create_dir_all(&data_dir)?;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + WARM_UP {
        let started = Instant::now();
        let lock = DataDirLock::acquire(&data_dir)?;
        lock.release();
        let elapsed = started.elapsed();
        if i >= WARM_UP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    Ok(samples)
}

/// A 32-byte append and `fdatasync`, as the fake peer's `PUT` does.
pub fn append_fdatasync(dir: &Path, iterations: usize) -> io::Result<Vec<u64>> {
    let path = dir.join("floor-append.log");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let record = b"1234567 c0k12 v0x123456789012345\n";
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + WARM_UP {
        let started = Instant::now();
        file.write_all(record)?;
        file.sync_data()?;
        let elapsed = started.elapsed();
        if i >= WARM_UP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(samples)
}
