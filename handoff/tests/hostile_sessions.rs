//! Hostile and hurried supervisors against an in-process incumbent over a
//! real control socket (issue 6): regression tests for what the hostile-peer
//! suite (`scenarios/tests/hostile.rs`) and the fuzzers found, and the
//! control socket's mode.
//!
//! Reproduce: `cargo test -p handoff --test hostile_sessions`.

mod incumbent_support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use handoff::{DataDirLock, Incumbent, Message};
use incumbent_support::{commit, read, start};

/// Bound on every wait here.
const WAIT: Duration = Duration::from_secs(10);
/// Cold binds watched for a wider mode. Before the fix (bind at the
/// temporary name, then chmod) a few hundred sufficed to see the 0777 socket.
const BIND_ROUNDS: usize = 400;

/// Found by the hostile-peer suite: a supervisor that ended its session and
/// saw the incumbent close the connection (end of stream) was sometimes
/// refused when it connected again at once ("another supervisor session is
/// in progress"): the incumbent closed the connection before it marked the
/// session over. That is exactly what `Supervisor::resume_from_journal`
/// (probe, wait for the close) followed by `perform_handoff` does.
#[test]
fn a_supervisor_that_saw_its_session_close_is_never_refused_next() {
    let mut f = start(false, Duration::ZERO);
    for round in 0..300 {
        // Each round connects right after the previous one saw its session
        // close: it must be greeted with Hello, never Refused.
        let mut probe = UnixStream::connect(&f.sock).unwrap();
        match read(&mut probe) {
            Message::Hello { .. } => {}
            m => panic!("round {round}: the session was not accepted: {m:?}"),
        }
        probe.shutdown(std::net::Shutdown::Write).unwrap();
        probe.set_read_timeout(Some(WAIT)).unwrap();
        let mut sink = [0u8; 16];
        assert_eq!(
            probe.read(&mut sink).unwrap(),
            0,
            "round {round}: expected the incumbent to close the probe session"
        );
    }
    commit(&mut f);
}

/// The control socket is 0600 once published, whatever the umask.
#[test]
fn the_control_socket_is_created_0600() {
    let mut f = start(false, Duration::ZERO);
    let mode = std::fs::metadata(&f.sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    commit(&mut f);
}

/// Watch every name under which the control socket exists while
/// `bind_cold_start` runs, with a umask that hides nothing (0): the socket
/// must never be reachable by anyone but its owner, neither at the final
/// path nor at the temporary one.
#[test]
fn the_control_socket_is_never_reachable_with_a_wider_mode() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let sock = dir.path().join("control.sock");
    // The process-wide umask: 0 makes bind(2) create the socket 0777.
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = Arc::clone(&done);
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut wider = Vec::new();
            let mut looks = 0u64;
            while !done.load(Ordering::SeqCst) {
                looks += 1;
                for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                    let path = entry.path();
                    let Ok(meta) = std::fs::symlink_metadata(&path) else {
                        continue;
                    };
                    let mode = meta.permissions().mode() & 0o7777;
                    if meta.is_dir() {
                        // A private directory hides what is inside it.
                        if path != root.join("data") && mode & 0o077 != 0 {
                            wider.push(format!("{} dir {mode:o}", path.display()));
                        }
                        continue;
                    }
                    if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
                        && mode & 0o077 != 0
                    {
                        wider.push(format!("{} socket {mode:o}", path.display()));
                    }
                }
            }
            (wider, looks)
        })
    };
    for _ in 0..BIND_ROUNDS {
        let lock = DataDirLock::acquire(&data).unwrap();
        let incumbent = Incumbent::bind_cold_start(&sock, lock).unwrap();
        drop(incumbent);
    }
    done.store(true, Ordering::SeqCst);
    let (wider, looks) = watcher.join().unwrap();
    nix::sys::stat::umask(old_umask);
    assert!(
        wider.is_empty(),
        "over {looks} looks, the socket was reachable with a wider mode: {:?}",
        &wider[..wider.len().min(5)]
    );
}
