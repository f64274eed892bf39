//! Shared by the incumbent tests: a test service, an incumbent serving it on
//! a thread, and a hand-driven supervisor over a real Unix socket.
#![allow(dead_code)] // each test file uses a different part

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff::frame::{read_message, write_message};
use handoff::{
    DataDirLock, DrainReport, Drainable, HandoffId, Incumbent, IncumbentConfig, Message, SealError,
    SealReport, ServeOutcome, Side,
};

#[derive(Default)]
pub struct Calls {
    pub log: Vec<&'static str>,
    /// `Incumbent::serve` returned.
    pub serve_returned: bool,
    /// A held `resume_after_abort` may return (see `Options::hold_resume`).
    pub resume_released: bool,
}

impl Calls {
    pub fn count(&self, call: &str) -> usize {
        self.log.iter().filter(|c| **c == call).count()
    }
}

/// What the test service was asked to do, and a condition variable to wait
/// for it on.
#[derive(Default)]
pub struct CallLog {
    calls: Mutex<Calls>,
    changed: Condvar,
}

impl CallLog {
    pub fn lock(&self) -> std::sync::LockResult<MutexGuard<'_, Calls>> {
        self.calls.lock()
    }

    fn update(&self, f: impl FnOnce(&mut Calls)) {
        f(&mut self.calls.lock().unwrap());
        self.changed.notify_all();
    }

    fn push(&self, call: &'static str) {
        self.update(|c| c.log.push(call));
    }

    /// Let a held `resume_after_abort` return.
    pub fn release_resume(&self) {
        self.update(|c| c.resume_released = true);
    }

    /// Wait until `cond` holds, or fail naming `what` after 5 s.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut(&Calls) -> bool) {
        let calls = self.calls.lock().unwrap();
        let (_calls, waited) = self
            .changed
            .wait_timeout_while(calls, Duration::from_secs(5), |c| !cond(c))
            .unwrap();
        assert!(!waited.timed_out(), "timed out waiting for {what}");
    }
}

pub struct TestService {
    calls: Arc<CallLog>,
    fail_seal: bool,
    drain_for: Duration,
    seal_for: Duration,
    hold_resume: bool,
}

impl Drainable for TestService {
    fn drain(&mut self, _deadline: Instant) -> DrainReport {
        // Pacing is the point: a drain that takes this long.
        std::thread::sleep(self.drain_for);
        self.calls.push("drain");
        DrainReport {
            open_conns_remaining: 0,
            accept_closed: true,
        }
    }
    fn seal(&mut self) -> Result<SealReport, SealError> {
        // Likewise: a seal that takes this long.
        std::thread::sleep(self.seal_for);
        self.calls.push("seal");
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
        self.calls.push("resume");
        if self.hold_resume {
            self.calls
                .wait_until("the test to release the resume", |c| c.resume_released);
        }
    }
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub calls: Arc<CallLog>,
    pub serve: Option<JoinHandle<handoff::Result<ServeOutcome>>>,
}

impl Fixture {
    /// How many times the service resumed.
    pub fn resumes(&self) -> usize {
        self.calls.lock().unwrap().count("resume")
    }
}

pub fn config() -> IncumbentConfig {
    IncumbentConfig {
        heartbeat_interval: Duration::from_millis(20),
        hello_timeout: Duration::from_millis(500),
        liveness_timeout: Duration::from_millis(1000),
        reacquire_window: Duration::from_millis(300),
        reacquire_step: Duration::from_millis(5),
        allow_other_uids: false,
        max_deadline: Duration::from_millis(400),
    }
}

/// How the test service behaves, and the heartbeat interval.
#[derive(Clone, Copy)]
pub struct Options {
    pub fail_seal: bool,
    pub drain_for: Duration,
    pub seal_for: Duration,
    pub heartbeat_interval: Duration,
    /// `resume_after_abort` returns only once the test calls
    /// `CallLog::release_resume`: a resume that takes a while.
    pub hold_resume: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fail_seal: false,
            drain_for: Duration::ZERO,
            seal_for: Duration::ZERO,
            heartbeat_interval: config().heartbeat_interval,
            hold_resume: false,
        }
    }
}

pub fn start(fail_seal: bool, drain_for: Duration) -> Fixture {
    start_with(Options {
        fail_seal,
        drain_for,
        ..Options::default()
    })
}

pub fn start_with(options: Options) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let sock = dir.path().join("control.sock");
    let lock = DataDirLock::acquire(&data).unwrap();
    let incumbent = Incumbent::bind_cold_start(&sock, lock)
        .unwrap()
        .with_config(IncumbentConfig {
            heartbeat_interval: options.heartbeat_interval,
            ..config()
        });
    let calls = Arc::new(CallLog::default());
    let mut service = TestService {
        calls: Arc::clone(&calls),
        fail_seal: options.fail_seal,
        drain_for: options.drain_for,
        seal_for: options.seal_for,
        hold_resume: options.hold_resume,
    };
    let serve = std::thread::spawn(move || {
        let outcome = incumbent.serve(&mut service);
        service.calls.update(|c| c.serve_returned = true);
        outcome
    });
    Fixture {
        _dir: dir,
        data,
        sock,
        calls,
        serve: Some(serve),
    }
}

pub fn read(s: &mut UnixStream) -> Message {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    read_message(s).expect("a frame within 5 s").1
}

pub fn read_skipping_heartbeats(s: &mut UnixStream) -> (Message, usize) {
    let mut beats = 0;
    loop {
        match read(s) {
            Message::Heartbeat { .. } => beats += 1,
            m => return (m, beats),
        }
    }
}

/// Assert that the incumbent writes nothing for `quiet` (it is waiting for
/// our next frame, so nothing may come, heartbeats included).
pub fn assert_nothing_written_for(s: &mut UnixStream, quiet: Duration, after: &str) {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the incumbent closed the session after {after}"),
        Ok(_) => panic!("the incumbent wrote a frame (a heartbeat?) after {after}"),
        Err(e) => panic!("read after {after}: {e}"),
    }
}

/// The next thing the incumbent does is close the session: no frame (a
/// heartbeat least of all) comes first.
pub fn assert_closed_without_heartbeats(s: &mut UnixStream, after: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match read_message(s) {
        Ok((_, Message::Heartbeat { .. })) => panic!("a heartbeat was written after {after}"),
        Ok((_, m)) => panic!("unexpected {m:?} after {after}"),
        Err(handoff::Error::PeerClosed(_)) => {}
        Err(e) => panic!("expected the session to close after {after}, got {e}"),
    }
}

/// Connect as a supervisor: read Hello, answer HelloAck.
pub fn session(sock: &Path) -> (UnixStream, HandoffId) {
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

pub fn send(s: &mut UnixStream, m: Message) {
    write_message(s, 1, &m).unwrap();
}

pub fn prepare(s: &mut UnixStream, id: HandoffId) {
    prepare_with_deadline(s, id, 2_000);
}

pub fn prepare_with_deadline(s: &mut UnixStream, id: HandoffId, deadline_ms: u64) {
    send(
        s,
        Message::PrepareHandoff {
            handoff_id: id,
            successor_pid: 1,
            deadline_ms,
            drain_grace_ms: 1_000,
        },
    );
}

/// A session driven through PrepareHandoff, Drained, SealRequest and
/// SealComplete: the incumbent has sealed and released the flock.
pub fn sealed_session(sock: &Path) -> (UnixStream, HandoffId) {
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

/// End the incumbent: a whole session up to `Commit`, and `serve` returns
/// `Committed`.
pub fn commit(f: &mut Fixture) {
    let (mut s, id) = sealed_session(&f.sock);
    send(&mut s, Message::Commit { handoff_id: id });
    let outcome = f.serve.take().unwrap().join().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Committed { handoff_id: id });
}
