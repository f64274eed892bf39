//! One supervisor session of the incumbent as an I/O-free state machine.
//!
//! Same shape as [`super::supervisor`]: [`SessionMachine::start`] returns
//! the first [`Action`], [`SessionMachine::next`] takes its result and
//! returns the next, until [`Action::Finish`]. The service's `drain` and
//! `seal` hooks (run by the driver with the heartbeat armed) and the flock
//! are actions too. Every way a session can fail lands in one recovery
//! transition (`SessionMachine::recover`): drained but not sealed, resume;
//! sealed, retake the flock or concede to the successor; then resume.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::crash::points;
use crate::drainable::{DrainReport, SealError, SealReport};
use crate::error::Error;
use crate::events;
use crate::protocol::{HandoffId, Message, PROTO_MAX, PROTO_MIN, ProtoVersion, Side, short_name};

/// What the session machine needs to know.
#[derive(Debug, Clone)]
pub struct Params {
    /// This process's pid, for `Hello`.
    pub pid: u32,
    /// The build identity, for `Hello`.
    pub build_id: Vec<u8>,
    /// Bound on the wait for `HelloAck`.
    pub hello_timeout: Duration,
    /// Bound on supervisor silence between protocol steps.
    pub liveness_timeout: Duration,
    /// Cap on the supervisor's deadline.
    pub max_deadline: Duration,
    /// Whether this process holds the flock as the session starts.
    pub holds_flock: bool,
}

/// What the session waits for: the machine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wait {
    /// The supervisor's `HelloAck`.
    HelloAck,
    /// `PrepareHandoff`.
    Prepare,
    /// The service's `drain`.
    Drain,
    /// `SealRequest` (or `ResumeAfterAbort`).
    SealRequest,
    /// The service's `seal`.
    Seal,
    /// `Commit` (or `ResumeAfterAbort`).
    Commit,
    /// The recovery's remaining steps.
    Recovering,
    /// Nothing: the session is over.
    Done,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The service serves with the flock; accept the next session.
    Continue,
    /// The handoff committed: exit.
    Committed(HandoffId),
    /// A successor holds the flock and the control socket: exit.
    Superseded(HandoffId),
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Bound every write on the session socket by this long. Answer
    /// [`Input::Done`] or [`Input::Failed`].
    SetWriteTimeout(Duration),
    /// Write `msg` in frame version `version`. Answer [`Input::Done`] or
    /// [`Input::Failed`].
    Send {
        /// The frame version.
        version: ProtoVersion,
        /// The message.
        msg: Message,
    },
    /// Read one frame within `timeout`; once a session exists, its frames
    /// must carry `session`'s version and id. Answer [`Input::Frame`] or
    /// [`Input::ReadFailed`].
    Read {
        /// The negotiated version and the handoff's id, once known.
        session: Option<(ProtoVersion, HandoffId)>,
        /// The read's bound.
        timeout: Duration,
        /// What the read waits for (names a timeout).
        awaiting: &'static str,
    },
    /// Record the session's handoff as the current one (the acceptor names
    /// it when it refuses a second supervisor). Answer [`Input::Done`].
    SetCurrent(HandoffId),
    /// Run the service's `drain` until `deadline`, heartbeat armed. Answer
    /// [`Input::Drained`] or [`Input::Failed`].
    Drain {
        /// The drain's deadline.
        deadline: Instant,
    },
    /// Run the service's `seal`, heartbeat armed. Answer [`Input::Sealed`]
    /// or [`Input::Failed`].
    Seal,
    /// Release the flock to the successor. Answer [`Input::Done`].
    ReleaseFlock,
    /// Try to take the flock back, polling until `give_up_at`; concede if
    /// the control socket path is rebound meanwhile. Answer
    /// [`Input::Retake`].
    RetakeFlock {
        /// The last moment to try.
        give_up_at: Option<Instant>,
    },
    /// Run the service's `resume_after_abort`. Answer [`Input::Done`].
    Resume,
    /// Pass the named crash point. Answer [`Input::Done`].
    CrashPoint(&'static str),
    /// The session is over.
    Finish(End),
}

/// How an attempt to take the flock back ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retake {
    /// This process holds the flock again.
    Taken,
    /// The successor renamed its control socket over the path (it sent
    /// `Ready`) while holding the flock.
    PathRebound,
    /// The flock stayed held past the bound.
    GaveUp,
}

/// What happened: the result of the last action.
#[derive(Debug)]
pub enum Input {
    /// The action succeeded.
    Done,
    /// The action failed.
    Failed(Error),
    /// A frame arrived.
    Frame {
        /// Its version.
        version: ProtoVersion,
        /// Its message.
        msg: Message,
    },
    /// The read failed (a timeout, a closed peer, a bad frame).
    ReadFailed(Error),
    /// `drain` returned.
    Drained(DrainReport),
    /// `seal` returned.
    Sealed(Result<SealReport, SealError>),
    /// The flock retake ended.
    Retake(Retake),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Session,
    Drained,
    Resumed,
    ResumedAfterSealFailure,
    FlockReacquired,
    Prepare,
    Seal,
    Committed,
    FlockReleased,
    SealCompleteSent,
}

#[derive(Debug)]
struct Step {
    action: Action,
    then: Option<Then>,
}

/// One session. See the module documentation.
#[derive(Debug)]
pub struct SessionMachine {
    p: Params,
    wait: Wait,
    queue: VecDeque<Step>,
    pending: Option<Option<Then>>,
    session: Option<(ProtoVersion, HandoffId)>,
    drained: bool,
    sealed: bool,
    holds_flock: bool,
    deadline: Option<Instant>,
    drain_report: Option<DrainReport>,
    /// `PrepareHandoff`'s arrival, deadline and drain grace, until the
    /// drain starts.
    prepare: Option<(Instant, u64, u64)>,
    /// The time of the last input.
    now: Instant,
}

impl SessionMachine {
    /// A session starting at `now` on a freshly accepted connection;
    /// returns it with its first action.
    pub fn start(p: Params, now: Instant) -> (Self, Action) {
        let mut m = Self {
            now,
            wait: Wait::HelloAck,
            queue: VecDeque::new(),
            pending: None,
            session: None,
            drained: false,
            sealed: false,
            holds_flock: p.holds_flock,
            deadline: None,
            drain_report: None,
            prepare: None,
            p,
        };
        // A supervisor that stops reading is as lost as one that stops
        // writing: every write on this socket is bounded.
        m.push(Action::SetWriteTimeout(m.p.liveness_timeout), None);
        // Hello goes out at our highest version; its shape is the same in
        // every version.
        let hello = Message::Hello {
            role: Side::Incumbent,
            pid: m.p.pid,
            build_id: m.p.build_id.clone(),
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            capabilities: Vec::new(),
        };
        m.push(
            Action::Send {
                version: PROTO_MAX,
                msg: hello,
            },
            None,
        );
        m.push(Action::CrashPoint(points::O_AFTER_HELLO_SENT), None);
        let first = m.poll();
        (m, first)
    }

    /// What the session waits for now.
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Whether this process holds the flock, as far as the session knows.
    pub fn holds_flock(&self) -> bool {
        self.holds_flock
    }

    /// Whether `drain` ran in this session.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Whether `seal` succeeded in this session.
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    fn push(&mut self, action: Action, then: Option<Then>) {
        self.queue.push_back(Step { action, then });
    }

    fn id(&self) -> HandoffId {
        self.session.map_or(HandoffId::nil(), |(_, id)| id)
    }

    /// The negotiated version (the highest before `HelloAck`).
    pub fn version(&self) -> ProtoVersion {
        self.session.map_or(PROTO_MAX, |(v, _)| v)
    }

    /// Feed the result of the last action; get the next action.
    pub fn next(&mut self, now: Instant, input: Input) -> Action {
        self.now = now;
        if let Some(then) = self.pending.take() {
            match input {
                Input::Done => {
                    if let Some(then) = then {
                        self.then(then);
                    }
                }
                Input::Drained(report) => self.drained_by_service(report),
                Input::Sealed(result) => self.sealed_by_service(result),
                Input::Retake(r) => self.retaken(r),
                Input::Failed(e) | Input::ReadFailed(e) => self.fail(e),
                Input::Frame { msg, .. } => self.on_frame(now, msg),
            }
        }
        self.poll()
    }

    fn poll(&mut self) -> Action {
        if let Some(step) = self.queue.pop_front() {
            if !matches!(step.action, Action::Finish(_)) {
                self.pending = Some(step.then);
            }
            return step.action;
        }
        let (timeout, awaiting) = match self.wait {
            Wait::HelloAck => (self.p.hello_timeout, "HelloAck"),
            Wait::Prepare => (self.p.liveness_timeout, "PrepareHandoff"),
            Wait::SealRequest => (self.p.liveness_timeout, "SealRequest"),
            Wait::Commit => {
                // The supervisor waits for Ready up to the deadline plus
                // slack; wait a liveness period past that.
                let left = self
                    .deadline
                    .map(|d| d.saturating_duration_since(self.now))
                    .unwrap_or_default();
                (left + self.p.liveness_timeout, "Commit")
            }
            wait => {
                let e = Error::Protocol(format!("BUG: session machine stalled in {wait:?}"));
                self.fail(e);
                return self.poll();
            }
        };
        self.pending = Some(None);
        Action::Read {
            session: self.session,
            timeout,
            awaiting,
        }
    }

    fn on_frame(&mut self, now: Instant, msg: Message) {
        match (self.wait, msg) {
            (
                Wait::HelloAck,
                Message::HelloAck {
                    proto_version_chosen: version,
                    handoff_id,
                },
            ) => {
                if !(PROTO_MIN..=PROTO_MAX).contains(&version) {
                    return self.fail(Error::VersionMismatch {
                        ours_min: PROTO_MIN,
                        ours_max: PROTO_MAX,
                        theirs_min: version,
                        theirs_max: version,
                    });
                }
                self.session = Some((version, handoff_id));
                self.wait = Wait::Prepare;
                self.push(Action::CrashPoint(points::O_AFTER_HELLO_ACK_RECV), None);
                self.push(Action::SetCurrent(handoff_id), Some(Then::Session));
            }
            (Wait::HelloAck, other) => self.fail(Error::UnexpectedMessage {
                expected: "HelloAck",
                got: short_name(&other),
            }),
            (
                Wait::Prepare,
                Message::PrepareHandoff {
                    deadline_ms,
                    drain_grace_ms,
                    ..
                },
            ) => {
                self.prepare = Some((now, deadline_ms, drain_grace_ms));
                self.push(
                    Action::CrashPoint(points::O_AFTER_PREPARE_RECV),
                    Some(Then::Prepare),
                );
            }
            (Wait::SealRequest, Message::SealRequest { .. }) => {
                self.wait = Wait::Seal;
                self.push(
                    Action::CrashPoint(points::O_AFTER_SEAL_REQUEST_RECV),
                    Some(Then::Seal),
                );
            }
            // Harmless before the seal: resume.
            (Wait::SealRequest, Message::ResumeAfterAbort { .. }) => self.recover(),
            (Wait::Commit, Message::Commit { .. }) => {
                self.wait = Wait::Done;
                self.push(
                    Action::CrashPoint(points::O_AFTER_COMMIT_RECV),
                    Some(Then::Committed),
                );
            }
            (Wait::Commit, Message::ResumeAfterAbort { .. }) => {
                self.push(Action::CrashPoint(points::O_AFTER_RESUME_RECV), None);
                self.recover();
            }
            (Wait::Prepare, other) => self.fail(reject(other, "PrepareHandoff")),
            (Wait::SealRequest, other) => self.fail(reject(other, "SealRequest")),
            (_, other) => self.fail(reject(other, "Commit or ResumeAfterAbort")),
        }
    }

    fn drained_by_service(&mut self, report: DrainReport) {
        self.push(Action::CrashPoint(points::O_AFTER_DRAIN), None);
        self.push(
            Action::Send {
                version: self.version(),
                msg: Message::Drained {
                    open_conns_remaining: report.open_conns_remaining,
                    accept_closed: report.accept_closed,
                },
            },
            Some(Then::Drained),
        );
        self.drain_report = Some(report);
        self.push(Action::CrashPoint(points::O_AFTER_DRAINED_SENT), None);
        self.wait = Wait::SealRequest;
    }

    fn sealed_by_service(&mut self, result: Result<SealReport, SealError>) {
        let handoff_id = self.id();
        let version = self.version();
        match result {
            Ok(report) => {
                self.push(Action::CrashPoint(points::O_AFTER_SEAL), None);
                // The seal made every acknowledged write durable: only now
                // may the writer role go.
                self.sealed = true;
                self.holds_flock = false;
                self.push(Action::ReleaseFlock, Some(Then::FlockReleased));
                self.push(Action::CrashPoint(points::O_AFTER_FLOCK_RELEASED), None);
                self.push(
                    Action::Send {
                        version,
                        msg: Message::SealComplete {
                            handoff_id,
                            last_revision_per_shard: report.last_revision_per_shard,
                            data_dir_fingerprint: report.data_dir_fingerprint,
                        },
                    },
                    Some(Then::SealCompleteSent),
                );
                self.push(Action::CrashPoint(points::O_AFTER_SEAL_COMPLETE_SENT), None);
                self.wait = Wait::Commit;
            }
            Err(seal_error) => {
                // Keep the flock, tell the supervisor, serve again at once.
                tracing::warn!(target: events::INCUMBENT_SEAL_FAILED, %handoff_id, error = %seal_error, "seal failed; keeping the flock and resuming");
                self.push(
                    Action::Send {
                        version,
                        msg: Message::SealFailed {
                            handoff_id,
                            error: seal_error.error.clone(),
                            partial_state: seal_error.partial_state.clone(),
                        },
                    },
                    None,
                );
                self.push(Action::CrashPoint(points::O_AFTER_SEAL_FAILED_SENT), None);
                self.wait = Wait::Recovering;
                self.push(Action::Resume, Some(Then::ResumedAfterSealFailure));
                self.push(Action::Finish(End::Continue), None);
            }
        }
    }

    fn then(&mut self, then: Then) {
        let handoff_id = self.id();
        match then {
            Then::Session => {
                let proto_version = self.version();
                tracing::info!(target: events::INCUMBENT_SESSION, %handoff_id, proto_version, "supervisor session");
            }
            Then::Drained => {
                let report = self.drain_report.take().unwrap_or(DrainReport {
                    open_conns_remaining: 0,
                    accept_closed: false,
                });
                tracing::info!(target: events::INCUMBENT_DRAINED, %handoff_id, open_conns_remaining = report.open_conns_remaining, accept_closed = report.accept_closed, "drained");
            }
            Then::Resumed => {
                tracing::info!(target: events::INCUMBENT_RESUME, %handoff_id, sealed = self.sealed, "serving again");
            }
            Then::ResumedAfterSealFailure => {
                tracing::info!(target: events::INCUMBENT_RESUME, %handoff_id, cause = "seal_failed", "serving again");
            }
            Then::Prepare => {
                let Some((at, deadline_ms, drain_grace_ms)) = self.prepare.take() else {
                    return;
                };
                let cap_ms = u64::try_from(self.p.max_deadline.as_millis()).unwrap_or(u64::MAX);
                if deadline_ms > cap_ms {
                    tracing::warn!(target: events::INCUMBENT_DRAIN, %handoff_id, deadline_ms, max_deadline_ms = cap_ms, "the supervisor's deadline exceeds max_deadline; using max_deadline");
                }
                let deadline_ms = deadline_ms.min(cap_ms);
                self.deadline = Some(at + Duration::from_millis(deadline_ms));
                let deadline = at + Duration::from_millis(drain_grace_ms.min(deadline_ms));
                tracing::info!(target: events::INCUMBENT_DRAIN, %handoff_id, drain_grace_ms, deadline_ms, "draining");
                self.drained = true;
                self.wait = Wait::Drain;
                self.push(Action::Drain { deadline }, None);
            }
            Then::Seal => {
                tracing::info!(target: events::INCUMBENT_SEAL, %handoff_id, "sealing");
                self.push(Action::Seal, None);
            }
            Then::Committed => {
                tracing::info!(target: events::INCUMBENT_COMMIT, %handoff_id, "committed; exiting");
                self.push(Action::Finish(End::Committed(handoff_id)), None);
            }
            Then::FlockReleased => {
                tracing::info!(target: events::INCUMBENT_FLOCK_RELEASED, %handoff_id, "flock released");
            }
            Then::SealCompleteSent => {
                tracing::info!(target: events::INCUMBENT_SEAL_COMPLETE, %handoff_id, "seal complete sent");
            }
            Then::FlockReacquired => {
                tracing::info!(target: events::INCUMBENT_FLOCK_REACQUIRED, %handoff_id, "flock reacquired");
            }
        }
    }

    /// The session failed: say how, then recover.
    fn fail(&mut self, e: Error) {
        if self.wait == Wait::HelloAck || self.wait == Wait::Prepare {
            // A supervisor that connects and leaves (a probe) ends the
            // session quietly.
            if matches!(e, Error::PeerClosed(_)) {
                self.finish_now(End::Continue);
                return;
            }
        }
        let id = self.session.map(|(_, i)| i.to_string()).unwrap_or_default();
        if matches!(e, Error::PeerClosed(_)) || e.is_timeout() || matches!(e, Error::Io(_)) {
            tracing::warn!(target: events::INCUMBENT_SUPERVISOR_LOST, handoff_id = %id, error = %e, drained = self.drained, sealed = self.sealed, "lost the supervisor");
        } else {
            tracing::warn!(target: events::INCUMBENT_PROTOCOL_ERROR, handoff_id = %id, error = %e, drained = self.drained, sealed = self.sealed, "session ended on a protocol error");
        }
        self.queue.clear();
        self.recover();
    }

    fn finish_now(&mut self, end: End) {
        self.queue.clear();
        self.wait = Wait::Done;
        self.push(Action::Finish(end), None);
    }

    /// The one recovery: put the service back in charge after a session
    /// that did not commit. Nothing to undo before the drain; after it,
    /// retake the flock if the seal released it (or concede to a successor
    /// that holds it), then resume.
    fn recover(&mut self) {
        self.wait = Wait::Recovering;
        if !self.drained {
            self.push(Action::Finish(End::Continue), None);
            return;
        }
        if self.holds_flock {
            self.push(Action::Resume, Some(Then::Resumed));
            self.push(Action::Finish(End::Continue), None);
        } else {
            self.push(
                Action::RetakeFlock {
                    give_up_at: self.deadline,
                },
                None,
            );
        }
    }

    fn retaken(&mut self, r: Retake) {
        let handoff_id = self.id();
        match r {
            Retake::Taken => {
                self.holds_flock = true;
                self.then(Then::FlockReacquired);
                self.push(Action::CrashPoint(points::O_AFTER_FLOCK_REACQUIRED), None);
                self.push(Action::Resume, Some(Then::Resumed));
                self.push(Action::Finish(End::Continue), None);
            }
            Retake::PathRebound | Retake::GaveUp => {
                let reason = if r == Retake::GaveUp {
                    "gave_up"
                } else {
                    "path_rebound"
                };
                tracing::warn!(target: events::INCUMBENT_SUPERSEDED, %handoff_id, "the successor holds the flock and the control socket; it is the incumbent, exiting");
                tracing::debug!(reason, "conceded");
                self.finish_now(End::Superseded(handoff_id));
            }
        }
    }
}

fn reject(other: Message, expected: &'static str) -> Error {
    match other {
        Message::Commit { .. } => Error::Protocol(format!(
            "Commit before SealComplete is rejected (awaiting {expected})"
        )),
        other => Error::UnexpectedMessage {
            expected,
            got: short_name(&other),
        },
    }
}
