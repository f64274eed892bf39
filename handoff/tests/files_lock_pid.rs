//! The data-dir lock's advisory pid file, lying in every way a file can
//! (issue 6): garbage, a pid that is alive but does not hold the flock, a
//! zombie, a symlink planted at the pid file or at its temporary name, a
//! directory in its place. What `DataDirLock::acquire_or_break_stale`
//! promises, case by case: the flock decides, the pid file never does; a
//! live recorded pid is returned as the hint when the flock is held, a dead
//! or unreadable one is not; a stale pid file is overwritten once the flock
//! is ours; nothing is ever unlinked and no file outside the pid file is
//! ever written.
//!
//! The holder of the flock, when a case needs one, is another open file
//! description in this process (flock excludes it like another process:
//! `lock_processes.rs` shows the same across processes).
//!
//! Reproduce: `cargo test -p handoff --test files_lock_pid`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use handoff::lock::{holder_pid, is_locked};
use handoff::{DataDirLock, Error};

/// What is in place of the pid file before the call.
#[derive(Debug, Clone, Copy)]
enum PidFile {
    Absent,
    Text(&'static str),
    /// A megabyte of digits.
    Huge,
    /// The pid of a live process that holds no flock (`cat`, our child).
    LiveNonHolder,
    /// The pid of a zombie (our child, exited, not reaped).
    Zombie,
    /// The pid of a process that has exited and been reaped.
    Dead,
    /// This process's own pid.
    Ours,
    /// A symlink to a victim file outside the data dir.
    SymlinkToVictim,
    /// A directory.
    Directory,
}

/// What the call must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Taken; the pid file is a regular file naming us.
    Taken,
    /// Taken; the pid file could not be written (a directory is in its way).
    TakenWithoutPidFile,
    /// `LockHeld` with the recorded (live) pid as the hint.
    HeldWithHint,
    /// `LockHeld` with no hint.
    HeldWithoutHint,
}

struct Case {
    name: &'static str,
    flock_held_by_other: bool,
    pid_file: PidFile,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    use Expect::*;
    use PidFile::*;
    let case = |name, flock_held_by_other, pid_file, expect| Case {
        name,
        flock_held_by_other,
        pid_file,
        expect,
    };
    vec![
        case("free, no pid file", false, Absent, Taken),
        case("free, empty pid file", false, Text(""), Taken),
        case(
            "free, garbage pid file",
            false,
            Text("\0\u{fffd}not a pid\n"),
            Taken,
        ),
        case("free, negative pid", false, Text("-5\n"), Taken),
        case("free, pid 0", false, Text("0\n"), Taken),
        case("free, pid beyond u32", false, Text("99999999999\n"), Taken),
        case("free, two pids", false, Text("12\n34\n"), Taken),
        case("free, a megabyte of digits", false, Huge, Taken),
        case(
            "free, a live process that holds nothing",
            false,
            LiveNonHolder,
            Taken,
        ),
        case("free, a zombie", false, Zombie, Taken),
        case("free, a dead process", false, Dead, Taken),
        case("free, our own pid", false, Ours, Taken),
        case(
            "free, a symlink to a victim file",
            false,
            SymlinkToVictim,
            Taken,
        ),
        case("free, a directory", false, Directory, TakenWithoutPidFile),
        case("held, no pid file", true, Absent, HeldWithoutHint),
        case(
            "held, garbage pid file",
            true,
            Text("garbage"),
            HeldWithoutHint,
        ),
        case("held, a megabyte of digits", true, Huge, HeldWithoutHint),
        case(
            "held, a live process that holds nothing",
            true,
            LiveNonHolder,
            HeldWithHint,
        ),
        case("held, a zombie", true, Zombie, HeldWithoutHint),
        case("held, a dead process", true, Dead, HeldWithoutHint),
        case(
            "held, a symlink to a victim file",
            true,
            SymlinkToVictim,
            HeldWithoutHint,
        ),
        case("held, a directory", true, Directory, HeldWithoutHint),
    ]
}

const VICTIM_CONTENT: &str = "precious data that is not a pid file\n";

/// Processes a case made; killed and reaped on drop.
#[derive(Default)]
struct Helpers(Vec<Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Put `what` in place of the pid file; returns the pid it names, if any.
fn plant(data: &Path, victim: &Path, what: PidFile, helpers: &mut Helpers) -> Option<u32> {
    let pid_path = data.join(DataDirLock::PID_FILE);
    let write = |text: &str| std::fs::write(&pid_path, text).unwrap();
    match what {
        PidFile::Absent => {
            let _ = std::fs::remove_file(&pid_path);
            None
        }
        PidFile::Text(text) => {
            write(text);
            None
        }
        PidFile::Huge => {
            write(&"7".repeat(1 << 20));
            None
        }
        PidFile::LiveNonHolder => {
            let cat = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let pid = cat.id();
            helpers.0.push(cat);
            write(&format!("{pid}\n"));
            Some(pid)
        }
        PidFile::Zombie => {
            let child = Command::new("true").spawn().unwrap();
            let pid = child.id();
            helpers.0.push(child);
            // Wait for its exit without reaping it (WNOWAIT): it stays a
            // zombie until the helper guard reaps it. `true` exits at once.
            nix::sys::wait::waitid(
                nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
                nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
            )
            .unwrap();
            assert_eq!(proc_state(pid), Some('Z'), "pid {pid} is a zombie");
            write(&format!("{pid}\n"));
            Some(pid)
        }
        PidFile::Dead => {
            let mut child = Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            write(&format!("{pid}\n"));
            Some(pid)
        }
        PidFile::Ours => {
            write(&format!("{}\n", std::process::id()));
            Some(std::process::id())
        }
        PidFile::SymlinkToVictim => {
            let _ = std::fs::remove_file(&pid_path);
            std::os::unix::fs::symlink(victim, &pid_path).unwrap();
            None
        }
        PidFile::Directory => {
            let _ = std::fs::remove_file(&pid_path);
            std::fs::create_dir(&pid_path).unwrap();
            None
        }
    }
}

fn run(case: &Case, acquire: fn(&Path) -> handoff::Result<DataDirLock>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, VICTIM_CONTENT).unwrap();
    let mut helpers = Helpers::default();

    // The lock file exists from the start; its inode must never change.
    let holder = DataDirLock::acquire(&data).unwrap();
    let lock_ino = std::fs::metadata(data.join(DataDirLock::LOCK_FILE))
        .unwrap()
        .ino();
    let holder = case.flock_held_by_other.then_some(holder);
    let named = plant(&data, &victim, case.pid_file, &mut helpers);

    let result = acquire(&data);
    let context = format!("case {:?}: got {result:?}", case.name);
    match case.expect {
        Expect::Taken | Expect::TakenWithoutPidFile => {
            let lock = result.unwrap_or_else(|e| panic!("{context}: expected the lock: {e}"));
            assert!(is_locked(&data).unwrap(), "{context}");
            let pid_path = data.join(DataDirLock::PID_FILE);
            if case.expect == Expect::Taken {
                let meta = std::fs::symlink_metadata(&pid_path).unwrap();
                assert!(
                    meta.is_file(),
                    "{context}: the pid file is not a regular file"
                );
                assert_eq!(holder_pid(&data), Some(std::process::id()), "{context}");
            } else {
                assert!(pid_path.is_dir(), "{context}: the directory was removed");
            }
            drop(lock);
        }
        Expect::HeldWithHint => match result {
            Err(Error::LockHeld { holder_pid, .. }) => {
                assert_eq!(holder_pid, named, "{context}")
            }
            _ => panic!("{context}: expected LockHeld with a hint"),
        },
        Expect::HeldWithoutHint => match result {
            Err(Error::LockHeld { holder_pid, .. }) => assert_eq!(holder_pid, None, "{context}"),
            _ => panic!("{context}: expected LockHeld without a hint"),
        },
    }
    drop(holder);
    assert_eq!(
        std::fs::metadata(data.join(DataDirLock::LOCK_FILE))
            .unwrap()
            .ino(),
        lock_ino,
        "case {:?}: the lock file was replaced",
        case.name
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        VICTIM_CONTENT,
        "case {:?}: a file outside the data dir was written through a symlink",
        case.name
    );
}

#[test]
fn acquire_or_break_stale_handles_every_lying_pid_file() {
    for case in cases() {
        run(&case, DataDirLock::acquire_or_break_stale);
    }
}

/// `acquire` decides exactly as `acquire_or_break_stale` does; it only
/// reports the pid file's content as the hint when the flock is held.
#[test]
fn acquire_decides_by_the_flock_alone() {
    for case in cases() {
        let expect = match case.expect {
            // `acquire` passes on whatever pid the file names, dead or alive.
            Expect::HeldWithoutHint | Expect::HeldWithHint => match case.pid_file {
                PidFile::LiveNonHolder | PidFile::Zombie | PidFile::Dead => Expect::HeldWithHint,
                _ => Expect::HeldWithoutHint,
            },
            other => other,
        };
        run(&Case { expect, ..case }, DataDirLock::acquire);
    }
}

/// Found writing these tests: the pid file is written through a temporary
/// file with a predictable name (`.handoff.pid.tmp.<pid>`), opened with
/// `O_CREAT|O_TRUNC`, which follows a symlink planted there: whoever could
/// write to the data dir could make the lock holder truncate and overwrite
/// any file it can write (as root, any file).
#[test]
fn a_symlink_planted_at_the_pid_files_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, VICTIM_CONTENT).unwrap();
    let temp = data.join(format!(
        ".{}.tmp.{}",
        DataDirLock::PID_FILE,
        std::process::id()
    ));
    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    let lock = DataDirLock::acquire_or_break_stale(&data).unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        VICTIM_CONTENT,
        "the victim was overwritten through the planted symlink"
    );
    let pid_path = data.join(DataDirLock::PID_FILE);
    assert!(
        !std::fs::symlink_metadata(&pid_path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false),
        "the planted symlink became the pid file"
    );
    drop(lock);
}
