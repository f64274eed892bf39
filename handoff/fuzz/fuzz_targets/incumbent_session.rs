//! Stateful: a real `Incumbent` (in-process, real control socket, real
//! flock) serves for the whole run; each input is one hostile supervisor
//! session, a sequence of frames (valid messages of every kind with the
//! session's id or another, at the negotiated version or another, raw
//! bytes) and reads, after which the connection is closed.
//!
//! After every session the incumbent must be back in a consistent state
//! within a bound: either it committed (only after it sealed: the flock is
//! free and the service sealed) and a fresh incumbent is started, or it
//! accepts the next session (answers `Hello`, not `Refused`) while holding
//! the flock, with the service serving (drained or sealed states resumed).
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use handoff::frame::{read_message, write_message};
use handoff::lock::is_locked;
use handoff::{
    DataDirLock, DrainReport, Drainable, HandoffId, Incumbent, IncumbentConfig, Message, SealError,
    SealReport, ServeOutcome, Side,
};
use libfuzzer_sys::fuzz_target;

/// Bound on the incumbent settling after a session.
const SETTLE: Duration = Duration::from_secs(5);
/// How long a `Read` action waits for a frame.
const READ_WAIT: Duration = Duration::from_millis(2);
/// Actions per input.
const MAX_ACTIONS: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServiceState {
    Serving,
    Drained,
    Sealed,
}

/// The service: tracks what the library made it do, and fails its seal
/// when the input says so.
struct Service {
    state: Arc<Mutex<ServiceState>>,
    seal_fails: Arc<Mutex<bool>>,
}

impl Drainable for Service {
    fn drain(&mut self, _deadline: Instant) -> DrainReport {
        let mut state = self.state.lock().unwrap();
        assert_eq!(*state, ServiceState::Serving, "drain while not serving");
        *state = ServiceState::Drained;
        DrainReport {
            open_conns_remaining: 0,
            accept_closed: true,
        }
    }
    fn seal(&mut self) -> Result<SealReport, SealError> {
        let mut state = self.state.lock().unwrap();
        assert_eq!(*state, ServiceState::Drained, "seal before drain");
        if *self.seal_fails.lock().unwrap() {
            return Err(SealError {
                error: "fuzzed seal failure".into(),
                partial_state: "none".into(),
            });
        }
        *state = ServiceState::Sealed;
        Ok(SealReport::default())
    }
    fn resume_after_abort(&mut self) {
        *self.state.lock().unwrap() = ServiceState::Serving;
    }
}

struct World {
    data: PathBuf,
    sock: PathBuf,
    state: Arc<Mutex<ServiceState>>,
    seal_fails: Arc<Mutex<bool>>,
    serve: Option<JoinHandle<handoff::Result<ServeOutcome>>>,
    /// A session the incumbent already greeted, for the next input.
    next: Option<UnixStream>,
}

impl World {
    fn new() -> Self {
        let root =
            std::env::temp_dir().join(format!("handoff-fuzz-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data")).unwrap();
        let mut world = World {
            data: root.join("data"),
            sock: root.join("control.sock"),
            state: Arc::new(Mutex::new(ServiceState::Serving)),
            seal_fails: Arc::new(Mutex::new(false)),
            serve: None,
            next: None,
        };
        world.start_incumbent();
        world
    }

    fn start_incumbent(&mut self) {
        *self.state.lock().unwrap() = ServiceState::Serving;
        let lock = DataDirLock::acquire(&self.data).expect("the flock is free for a new incumbent");
        let incumbent = Incumbent::bind_cold_start(&self.sock, lock)
            .unwrap()
            .with_config(IncumbentConfig {
                heartbeat_interval: Duration::from_secs(60),
                hello_timeout: Duration::from_secs(2),
                liveness_timeout: Duration::from_secs(2),
                reacquire_window: Duration::from_millis(200),
                reacquire_step: Duration::from_millis(1),
                allow_other_uids: false,
            });
        let mut service = Service {
            state: Arc::clone(&self.state),
            seal_fails: Arc::clone(&self.seal_fails),
        };
        self.serve = Some(std::thread::spawn(move || incumbent.serve(&mut service)));
        self.next = None;
    }

    /// Wait for the incumbent to settle after a session: committed (then
    /// start a new one) or greeting the next session.
    fn settle(&mut self) -> UnixStream {
        let deadline = Instant::now() + SETTLE;
        loop {
            assert!(
                Instant::now() < deadline,
                "the incumbent did not settle within {SETTLE:?}"
            );
            if self.serve.as_ref().is_some_and(|s| s.is_finished()) {
                let outcome = self.serve.take().unwrap().join().expect("serve panicked");
                match outcome {
                    Ok(ServeOutcome::Committed { .. }) => {
                        assert_eq!(
                            *self.state.lock().unwrap(),
                            ServiceState::Sealed,
                            "committed without a seal"
                        );
                        assert!(
                            !is_locked(&self.data).unwrap(),
                            "committed but the flock is held"
                        );
                    }
                    other => panic!("serve ended with {other:?}"),
                }
                self.start_incumbent();
                continue;
            }
            if let Ok(mut stream) = UnixStream::connect(&self.sock) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                match read_message(&mut stream) {
                    Ok((
                        _,
                        Message::Hello {
                            role: Side::Incumbent,
                            ..
                        },
                    )) => return stream,
                    Ok((_, Message::Refused { .. })) | Err(_) => {}
                    Ok((_, other)) => panic!("the incumbent opened with {other:?}"),
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| Mutex::new(World::new()))
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Id {
    Session,
    Other(u128),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Version {
    Negotiated,
    Other(u16),
}

#[derive(Arbitrary, Debug)]
enum Msg {
    Hello,
    HelloAck {
        chosen: u16,
        id: Id,
    },
    Prepare {
        id: Id,
        /// Any value, up to `u64::MAX` (the incumbent must not overflow
        /// its deadline arithmetic).
        deadline_ms: u64,
        drain_grace_ms: u64,
    },
    Drained,
    SealRequest {
        id: Id,
    },
    SealProgress,
    SealComplete {
        id: Id,
    },
    SealFailed {
        id: Id,
    },
    Begin {
        id: Id,
    },
    Ready {
        id: Id,
    },
    Commit {
        id: Id,
    },
    Abort {
        id: Id,
    },
    ResumeAfterAbort {
        id: Id,
    },
    Heartbeat,
    Refused,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Send { version: Version, message: Msg },
    Raw(Vec<u8>),
    Read,
}

#[derive(Arbitrary, Debug)]
struct Input {
    session_id: u128,
    seal_fails: bool,
    /// How many steps of a well-behaved session come first (mod 6):
    /// HelloAck, PrepareHandoff, read Drained, SealRequest, read
    /// SealComplete. Gets the fuzzer to every phase at once.
    well_behaved_steps: u8,
    actions: Vec<Action>,
}

/// Run the first `steps` steps of a well-behaved session; false if the
/// incumbent ended it (seal failed, or a step went wrong).
fn well_behaved_prefix(stream: &mut UnixStream, session: u128, steps: u8) -> bool {
    let id = handoff_id(session);
    let read_until = |stream: &mut UnixStream, want: fn(&Message) -> bool| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        loop {
            match read_message(stream) {
                Ok((_, Message::Heartbeat { .. } | Message::SealProgress { .. })) => continue,
                Ok((_, m)) => return want(&m),
                Err(_) => return false,
            }
        }
    };
    for step in 0..steps % 6 {
        let ok = match step {
            0 => write_message(
                stream,
                1,
                &Message::HelloAck {
                    proto_version_chosen: 1,
                    handoff_id: id,
                },
            )
            .is_ok(),
            1 => write_message(
                stream,
                1,
                &Message::PrepareHandoff {
                    handoff_id: id,
                    successor_pid: 2,
                    deadline_ms: 5_000,
                    drain_grace_ms: 1_000,
                },
            )
            .is_ok(),
            2 => read_until(stream, |m| matches!(m, Message::Drained { .. })),
            3 => write_message(stream, 1, &Message::SealRequest { handoff_id: id }).is_ok(),
            _ => read_until(stream, |m| matches!(m, Message::SealComplete { .. })),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn handoff_id(raw: u128) -> HandoffId {
    let hex = format!("{raw:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
    .parse()
    .expect("a formatted u128 is a UUID")
}

fn build(message: &Msg, session: u128) -> Message {
    let id = |id: &Id| match id {
        Id::Session => handoff_id(session),
        Id::Other(raw) => handoff_id(*raw),
    };
    match message {
        Msg::Hello => Message::Hello {
            role: Side::Incumbent,
            pid: 1,
            build_id: vec![1],
            proto_min: 1,
            proto_max: 1,
            capabilities: vec![],
        },
        Msg::HelloAck { chosen, id: i } => Message::HelloAck {
            proto_version_chosen: *chosen % 3,
            handoff_id: id(i),
        },
        Msg::Prepare {
            id: i,
            deadline_ms,
            drain_grace_ms,
        } => Message::PrepareHandoff {
            handoff_id: id(i),
            successor_pid: 2,
            deadline_ms: *deadline_ms,
            drain_grace_ms: *drain_grace_ms,
        },
        Msg::Drained => Message::Drained {
            open_conns_remaining: 0,
            accept_closed: true,
        },
        Msg::SealRequest { id: i } => Message::SealRequest { handoff_id: id(i) },
        Msg::SealProgress => Message::SealProgress {
            shards_sealed: 0,
            shards_total: 1,
            last_revision: 0,
        },
        Msg::SealComplete { id: i } => Message::SealComplete {
            handoff_id: id(i),
            last_revision_per_shard: vec![],
            data_dir_fingerprint: String::new(),
        },
        Msg::SealFailed { id: i } => Message::SealFailed {
            handoff_id: id(i),
            error: "e".into(),
            partial_state: "p".into(),
        },
        Msg::Begin { id: i } => Message::Begin { handoff_id: id(i) },
        Msg::Ready { id: i } => Message::Ready {
            handoff_id: id(i),
            listening_on: vec![],
            healthz_ok: true,
            advertised_revision_per_shard: vec![],
        },
        Msg::Commit { id: i } => Message::Commit { handoff_id: id(i) },
        Msg::Abort { id: i } => Message::Abort {
            handoff_id: id(i),
            reason: "r".into(),
        },
        Msg::ResumeAfterAbort { id: i } => Message::ResumeAfterAbort { handoff_id: id(i) },
        Msg::Heartbeat => Message::Heartbeat { ts_ms: 0 },
        Msg::Refused => Message::Refused { reason: "r".into() },
    }
}

fuzz_target!(|input: Input| {
    let mut world = world().lock().unwrap_or_else(|p| p.into_inner());
    *world.seal_fails.lock().unwrap() = input.seal_fails;
    let mut stream = match world.next.take() {
        Some(stream) => stream,
        None => world.settle(),
    };
    let prefix_ok = well_behaved_prefix(&mut stream, input.session_id, input.well_behaved_steps);
    for action in input
        .actions
        .iter()
        .take(if prefix_ok { MAX_ACTIONS } else { 0 })
    {
        let ok = match action {
            Action::Send { version, message } => {
                let version = match version {
                    Version::Negotiated => 1,
                    Version::Other(v) => *v,
                };
                write_message(&mut stream, version, &build(message, input.session_id)).is_ok()
            }
            Action::Raw(bytes) => stream.write_all(bytes).is_ok(),
            Action::Read => {
                let _ = stream.set_read_timeout(Some(READ_WAIT));
                match read_message(&mut stream) {
                    Ok(_) => true,
                    Err(e) => e.is_timeout(),
                }
            }
        };
        if !ok {
            // The incumbent ended the session.
            break;
        }
    }
    drop(stream);
    let next = world.settle();
    if world.serve.is_some() {
        assert!(
            is_locked(&world.data).unwrap(),
            "the incumbent serves without the flock"
        );
        assert_eq!(
            *world.state.lock().unwrap(),
            ServiceState::Serving,
            "the session ended but the service was not resumed"
        );
    }
    world.next = Some(next);
});
