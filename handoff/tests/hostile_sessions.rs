//! Hostile and hurried supervisors against an in-process incumbent over a
//! real control socket (issue 6): regression tests for what the hostile-peer
//! suite (`scenarios/tests/hostile.rs`) and the fuzzers found, and the
//! control socket's mode.
//!
//! Reproduce: `cargo test -p handoff --test hostile_sessions`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff::frame::{read_message, write_message};
use handoff::{
    DataDirLock, DrainReport, Drainable, HandoffId, Incumbent, IncumbentConfig, Message, SealError,
    SealReport, ServeOutcome,
};

/// Bound on every wait here.
const WAIT: Duration = Duration::from_secs(10);
/// Cold binds watched for a wider mode. Before the fix (bind at the
/// temporary name, then chmod) a few hundred sufficed to see the 0777 socket.
const BIND_ROUNDS: usize = 400;

struct Service;

impl Drainable for Service {
    fn drain(&mut self, _deadline: Instant) -> DrainReport {
        DrainReport {
            open_conns_remaining: 0,
            accept_closed: true,
        }
    }
    fn seal(&mut self) -> Result<SealReport, SealError> {
        Ok(SealReport::default())
    }
    fn resume_after_abort(&mut self) {}
}

struct Fixture {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    serve: Option<JoinHandle<handoff::Result<ServeOutcome>>>,
}

impl Fixture {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let sock = dir.path().join("control.sock");
        let lock = DataDirLock::acquire(&data).unwrap();
        let incumbent = Incumbent::bind_cold_start(&sock, lock)
            .unwrap()
            .with_config(IncumbentConfig {
                heartbeat_interval: Duration::from_millis(20),
                hello_timeout: Duration::from_millis(2000),
                liveness_timeout: Duration::from_millis(2000),
                reacquire_window: Duration::from_millis(300),
                reacquire_step: Duration::from_millis(5),
                allow_other_uids: false,
                max_deadline: Duration::from_secs(600),
            });
        let serve = std::thread::spawn(move || incumbent.serve(&mut Service));
        Fixture {
            _dir: dir,
            sock,
            serve: Some(serve),
        }
    }

    /// End the incumbent: a full session up to `Commit`.
    fn commit(&mut self) {
        let mut s = connect_expecting_hello(&self.sock);
        let id = HandoffId::new();
        let send = |s: &mut UnixStream, m: Message| write_message(s, 1, &m).unwrap();
        send(
            &mut s,
            Message::HelloAck {
                proto_version_chosen: 1,
                handoff_id: id,
            },
        );
        send(
            &mut s,
            Message::PrepareHandoff {
                handoff_id: id,
                successor_pid: 1,
                deadline_ms: 5_000,
                drain_grace_ms: 1_000,
            },
        );
        loop {
            match read(&mut s) {
                Message::Heartbeat { .. } => continue,
                Message::Drained { .. } => break,
                m => panic!("expected Drained, got {m:?}"),
            }
        }
        send(&mut s, Message::SealRequest { handoff_id: id });
        loop {
            match read(&mut s) {
                Message::Heartbeat { .. } | Message::SealProgress { .. } => continue,
                Message::SealComplete { .. } => break,
                m => panic!("expected SealComplete, got {m:?}"),
            }
        }
        send(&mut s, Message::Commit { handoff_id: id });
        let outcome = self.serve.take().unwrap().join().unwrap().unwrap();
        assert_eq!(outcome, ServeOutcome::Committed { handoff_id: id });
    }
}

fn read(s: &mut UnixStream) -> Message {
    s.set_read_timeout(Some(WAIT)).unwrap();
    read_message(s).expect("a frame within the wait bound").1
}

fn connect_expecting_hello(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    match read(&mut s) {
        Message::Hello { .. } => s,
        m => panic!("expected Hello, got {m:?}"),
    }
}

/// Found by the hostile-peer suite: a supervisor that ended its session and
/// saw the incumbent close the connection (end of stream) was sometimes
/// refused when it connected again at once ("another supervisor session is
/// in progress"): the incumbent closed the connection before it marked the
/// session over. That is exactly what `Supervisor::resume_from_journal`
/// (probe, wait for the close) followed by `perform_handoff` does.
#[test]
fn a_supervisor_that_saw_its_session_close_is_never_refused_next() {
    let mut f = Fixture::start();
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
    f.commit();
}

/// The control socket is 0600 once published, whatever the umask.
#[test]
fn the_control_socket_is_created_0600() {
    let mut f = Fixture::start();
    let mode = std::fs::metadata(&f.sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    f.commit();
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
