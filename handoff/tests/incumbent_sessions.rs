//! The incumbent side against a hand-driven supervisor over a real Unix
//! socket: session exclusivity, ordering rules, flock hand-over, recovery.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff::frame::{read_message, write_message};
use handoff::lock::is_locked;
use handoff::{
    DataDirLock, DrainReport, Drainable, HandoffId, Incumbent, IncumbentConfig, Message, SealError,
    SealReport, ServeOutcome, Side,
};

#[derive(Default)]
struct Calls {
    log: Vec<&'static str>,
}

struct TestService {
    calls: Arc<Mutex<Calls>>,
    fail_seal: bool,
    drain_for: Duration,
}

impl Drainable for TestService {
    fn drain(&mut self, _deadline: Instant) -> DrainReport {
        // Pacing is the point: a drain that takes this long.
        std::thread::sleep(self.drain_for);
        self.calls.lock().unwrap().log.push("drain");
        DrainReport {
            open_conns_remaining: 0,
            accept_closed: true,
        }
    }
    fn seal(&mut self) -> Result<SealReport, SealError> {
        self.calls.lock().unwrap().log.push("seal");
        if self.fail_seal {
            return Err(SealError {
                error: "disk on fire".into(),
                partial_state: "none".into(),
            });
        }
        Ok(SealReport {
            last_revision_per_shard: vec![7],
            data_dir_fingerprint: "fp".into(),
        })
    }
    fn resume_after_abort(&mut self) {
        self.calls.lock().unwrap().log.push("resume");
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    sock: PathBuf,
    calls: Arc<Mutex<Calls>>,
    serve: Option<JoinHandle<handoff::Result<ServeOutcome>>>,
}

fn config() -> IncumbentConfig {
    IncumbentConfig {
        heartbeat_interval: Duration::from_millis(20),
        hello_timeout: Duration::from_millis(500),
        liveness_timeout: Duration::from_millis(1000),
        reacquire_window: Duration::from_millis(300),
        reacquire_step: Duration::from_millis(5),
        allow_other_uids: false,
    }
}

fn start(fail_seal: bool, drain_for: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let sock = dir.path().join("control.sock");
    let lock = DataDirLock::acquire(&data).unwrap();
    let incumbent = Incumbent::bind_cold_start(&sock, lock)
        .unwrap()
        .with_config(config());
    let calls = Arc::new(Mutex::new(Calls::default()));
    let mut service = TestService {
        calls: Arc::clone(&calls),
        fail_seal,
        drain_for,
    };
    let serve = std::thread::spawn(move || incumbent.serve(&mut service));
    Fixture {
        _dir: dir,
        data,
        sock,
        calls,
        serve: Some(serve),
    }
}

fn read(s: &mut UnixStream) -> Message {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    read_message(s).expect("a frame within 5 s").1
}

fn read_skipping_heartbeats(s: &mut UnixStream) -> (Message, usize) {
    let mut beats = 0;
    loop {
        match read(s) {
            Message::Heartbeat { .. } => beats += 1,
            m => return (m, beats),
        }
    }
}

/// Connect as a supervisor: read Hello, answer HelloAck.
fn session(sock: &Path) -> (UnixStream, HandoffId) {
    let mut s = UnixStream::connect(sock).unwrap();
    match read(&mut s) {
        Message::Hello { role, pid, .. } => {
            assert_eq!(role, Side::Incumbent);
            assert_eq!(pid, std::process::id());
        }
        m => panic!("expected Hello, got {m:?}"),
    }
    let id = HandoffId::new();
    send(
        &mut s,
        Message::HelloAck {
            proto_version_chosen: 1,
            handoff_id: id,
        },
    );
    (s, id)
}

fn send(s: &mut UnixStream, m: Message) {
    write_message(s, 1, &m).unwrap();
}

fn prepare(s: &mut UnixStream, id: HandoffId) {
    send(
        s,
        Message::PrepareHandoff {
            handoff_id: id,
            successor_pid: 1,
            deadline_ms: 2_000,
            drain_grace_ms: 1_000,
        },
    );
}

/// A session driven through PrepareHandoff, Drained, SealRequest and
/// SealComplete: the incumbent has sealed and released the flock.
fn sealed_session(sock: &Path) -> (UnixStream, HandoffId) {
    let (mut s, id) = session(sock);
    prepare(&mut s, id);
    read_skipping_heartbeats(&mut s);
    send(&mut s, Message::SealRequest { handoff_id: id });
    assert!(matches!(
        read_skipping_heartbeats(&mut s).0,
        Message::SealComplete { .. }
    ));
    (s, id)
}

/// Wait until `cond` holds, or fail naming `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn full_session_releases_flock_before_seal_complete_and_commits() {
    let mut f = start(false, Duration::ZERO);
    assert!(is_locked(&f.data).unwrap());
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    assert!(matches!(
        read_skipping_heartbeats(&mut s).0,
        Message::Drained {
            accept_closed: true,
            ..
        }
    ));
    assert!(
        is_locked(&f.data).unwrap(),
        "flock must be held until the seal"
    );
    send(&mut s, Message::SealRequest { handoff_id: id });
    let (m, _) = read_skipping_heartbeats(&mut s);
    assert!(
        matches!(m, Message::SealComplete { handoff_id, ref last_revision_per_shard, .. } if handoff_id == id && last_revision_per_shard == &vec![7]),
        "{m:?}"
    );
    // SealComplete is written after the release: the flock is free now.
    assert!(!is_locked(&f.data).unwrap());
    send(&mut s, Message::Commit { handoff_id: id });
    let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Committed { handoff_id: id });
    assert_eq!(f.calls.lock().unwrap().log, vec!["drain", "seal"]);
}

#[test]
fn a_second_supervisor_is_refused_while_a_session_runs() {
    let f = start(false, Duration::ZERO);
    let (mut first, id) = session(&f.sock);
    // Before the incumbent has read our HelloAck it may not know the id yet;
    // once it answered Drained it does.
    prepare(&mut first, id);
    assert!(matches!(
        read_skipping_heartbeats(&mut first).0,
        Message::Drained { .. }
    ));
    let mut second = UnixStream::connect(&f.sock).unwrap();
    match read(&mut second) {
        Message::Refused { reason } => assert!(
            reason.contains("another supervisor") && reason.contains(&id.to_string()),
            "{reason}"
        ),
        m => panic!("expected Refused, got {m:?}"),
    }
    // The first session is unaffected.
    send(&mut first, Message::SealRequest { handoff_id: id });
    assert!(matches!(
        read_skipping_heartbeats(&mut first).0,
        Message::SealComplete { .. }
    ));
}

#[test]
fn commit_before_seal_complete_is_rejected_and_the_incumbent_keeps_serving() {
    let f = start(false, Duration::ZERO);
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    read_skipping_heartbeats(&mut s);
    send(&mut s, Message::Commit { handoff_id: id });
    // The incumbent ends the session and resumes with the flock.
    let mut buf = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        std::io::Read::read(&mut s, &mut buf).unwrap(),
        0,
        "session closed"
    );
    wait_for("resume after the rejected Commit", || {
        f.calls.lock().unwrap().log.contains(&"resume")
    });
    assert!(is_locked(&f.data).unwrap());
    assert!(!f.calls.lock().unwrap().log.contains(&"seal"));
    // And a new session is accepted.
    let _ = session(&f.sock);
}

#[test]
fn a_wrong_handoff_id_is_rejected() {
    let f = start(false, Duration::ZERO);
    let (mut s, _id) = session(&f.sock);
    prepare(&mut s, HandoffId::new());
    let mut buf = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(std::io::Read::read(&mut s, &mut buf).unwrap(), 0);
    assert!(f.calls.lock().unwrap().log.is_empty(), "never drained");
    assert!(is_locked(&f.data).unwrap());
}

#[test]
fn seal_failure_keeps_the_flock_and_resumes() {
    let f = start(true, Duration::ZERO);
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    read_skipping_heartbeats(&mut s);
    send(&mut s, Message::SealRequest { handoff_id: id });
    match read_skipping_heartbeats(&mut s).0 {
        Message::SealFailed { error, .. } => assert_eq!(error, "disk on fire"),
        m => panic!("expected SealFailed, got {m:?}"),
    }
    wait_for("resume after SealFailed", || {
        f.calls.lock().unwrap().log.contains(&"resume")
    });
    assert!(is_locked(&f.data).unwrap());
}

#[test]
fn a_supervisor_lost_after_the_seal_makes_the_incumbent_retake_the_flock() {
    let f = start(false, Duration::ZERO);
    let (s, _id) = sealed_session(&f.sock);
    drop(s);
    wait_for("resume after the supervisor vanished", || {
        f.calls.lock().unwrap().log.contains(&"resume")
    });
    assert!(is_locked(&f.data).unwrap());
    // It serves sessions again.
    let _ = session(&f.sock);
}

#[test]
fn resume_after_abort_retakes_the_flock() {
    let f = start(false, Duration::ZERO);
    let (mut s, id) = sealed_session(&f.sock);
    assert!(!is_locked(&f.data).unwrap());
    send(&mut s, Message::ResumeAfterAbort { handoff_id: id });
    wait_for("resume after ResumeAfterAbort", || {
        f.calls.lock().unwrap().log.contains(&"resume")
    });
    assert!(is_locked(&f.data).unwrap());
}

#[test]
fn heartbeats_flow_while_drain_runs() {
    let f = start(false, Duration::from_millis(200));
    let (mut s, id) = session(&f.sock);
    prepare(&mut s, id);
    let (m, beats) = read_skipping_heartbeats(&mut s);
    assert!(matches!(m, Message::Drained { .. }));
    // 200 ms of drain at a 20 ms interval: expect several, allow for a slow
    // scheduler.
    assert!(beats >= 3, "only {beats} heartbeats during a 200 ms drain");
}

/// Regression (found by chaos, seed 0x901 episode 596): the successor sent
/// Ready and renamed its control socket over the path, then died with the
/// supervisor before Commit. The flock was free, and the incumbent retook it
/// and served on without a reachable control socket. It must concede.
#[test]
fn a_successor_that_rebound_the_path_and_died_is_not_overridden() {
    let mut f = start(false, Duration::ZERO);
    let (s, id) = sealed_session(&f.sock);
    // The successor's control socket replaces the path; the successor is
    // then gone (nothing holds the flock).
    let successor_sock = f.sock.with_file_name("successor.sock");
    let successor_listener = std::os::unix::net::UnixListener::bind(&successor_sock).unwrap();
    std::fs::rename(&successor_sock, &f.sock).unwrap();
    drop(successor_listener);
    assert!(!is_locked(&f.data).unwrap());
    // The supervisor dies before Commit.
    drop(s);
    wait_for("the incumbent to concede or resume", || {
        f.serve.as_ref().unwrap().is_finished() || f.calls.lock().unwrap().log.contains(&"resume")
    });
    assert!(
        !f.calls.lock().unwrap().log.contains(&"resume"),
        "the incumbent resumed after the successor had taken over"
    );
    let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Superseded { handoff_id: id });
}
