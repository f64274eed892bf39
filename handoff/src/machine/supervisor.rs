//! The supervisor's side of one handoff as an I/O-free state machine.
//!
//! [`SupervisorMachine::start`] returns the first [`Action`]; the driver
//! performs it and hands the result back to [`SupervisorMachine::next`], which
//! returns the next action, until [`Action::Finish`]. The states
//! ([`Wait`]) are named for what the supervisor waits for. Every way a
//! handoff can fail after it started lands in one abort transition
//! (`SupervisorMachine::abort`), which decides what to undo from what has
//! happened (the successor spawned and greeted, the incumbent sealed, a
//! journal written), not from where the failure came from.
//!
//! The machine logs the protocol's events itself (tracing is not I/O the
//! driver needs to see); the driver logs what only it knows (journal
//! durability).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::crash::points;
use crate::error::Error;
use crate::events;
use crate::protocol::{
    HandoffId, Message, PROTO_MAX, PROTO_MIN, ProtoVersion, Side, check_handoff_id,
    negotiate_version, short_name,
};
use crate::state::{Phase, StateJournal};

/// Timeouts of the supervisor side. The defaults are the seed's values; tests
/// shrink them to milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorTimeouts {
    /// Maximum wait on any one read from a peer before declaring it dead.
    /// Every frame, heartbeats included, resets it. Default 10 s (five
    /// heartbeat intervals).
    pub liveness: Duration,
    /// Bound on a peer's first frame, `Hello`. Default 5 s.
    pub hello_read: Duration,
    /// Slack added past a cap for a reply already on the wire when the cap
    /// expires. Default 1 s.
    pub wire_slack: Duration,
    /// Floor for any read timeout. Default 100 ms.
    pub min_read: Duration,
    /// Bound on `resume_from_journal`'s wait for the incumbent to answer.
    /// Default 5 s.
    pub probe: Duration,
}

impl Default for SupervisorTimeouts {
    fn default() -> Self {
        Self {
            liveness: Duration::from_secs(10),
            hello_read: Duration::from_secs(5),
            wire_slack: Duration::from_secs(1),
            min_read: Duration::from_millis(100),
            probe: Duration::from_secs(5),
        }
    }
}

/// What the machine needs to know about the handoff it drives.
#[derive(Debug, Clone)]
pub struct Params {
    /// The handoff's id (sent in `HelloAck`, checked on every later frame).
    pub handoff_id: HandoffId,
    /// Wall-clock cap on the whole handoff (`SpawnSpec::deadline`).
    pub deadline: Duration,
    /// Cap on the drain phase (`SpawnSpec::drain_grace`).
    pub drain_grace: Duration,
    /// The supervisor's timeouts.
    pub timeouts: SupervisorTimeouts,
    /// When the handoff started, for the journal (Unix milliseconds).
    pub started_unix_ms: u64,
    /// The successor's binary, for the spawn event.
    pub binary: String,
}

/// What the supervisor is waiting for: the machine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wait {
    /// The incumbent's `Hello` (or a `Refused` to retry).
    IncumbentHello,
    /// The successor process to be spawned.
    Spawn,
    /// The successor's `Hello`.
    SuccessorHello,
    /// The `Negotiating` journal entry to be durable.
    NegotiatingDurable,
    /// The incumbent's `Drained`.
    Drained,
    /// The incumbent's `SealComplete` (or `SealFailed`).
    SealComplete,
    /// The successor's `Ready`.
    Ready,
    /// The commit's remaining steps (guard disarmed, `Commit`, journal).
    Committing,
    /// The abort's remaining steps (Abort, kill, resume, journal).
    Aborting,
    /// Nothing: the handoff is over.
    Done,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Connect to the incumbent's control socket (replacing any earlier
    /// connection). Answer [`Input::Done`] or [`Input::Failed`].
    Connect,
    /// Wait this long before the next action (pacing between refused
    /// connection attempts). Answer [`Input::Done`].
    Pause(Duration),
    /// Spawn the successor with the listeners and a fresh control channel.
    /// Answer [`Input::Spawned`] or [`Input::Failed`].
    Spawn,
    /// Read one frame from `from`, giving up at `until`. Answer
    /// [`Input::Frame`], [`Input::Timeout`], [`Input::Closed`] or
    /// [`Input::ReadFailed`].
    Read {
        /// Whose frame.
        from: Side,
        /// When the read times out.
        until: Instant,
    },
    /// Write `msg` to `to` in frame version `version`. Answer
    /// [`Input::Done`] or [`Input::Failed`].
    Send {
        /// To whom.
        to: Side,
        /// The frame version.
        version: ProtoVersion,
        /// The message.
        msg: Message,
    },
    /// Record this journal entry for the background writer (`at_once`:
    /// start on it now rather than after the coalescing window). Answer
    /// [`Input::Done`] or [`Input::Failed`] (an earlier write failed).
    Journal {
        /// The entry.
        entry: StateJournal,
        /// Start writing at once.
        at_once: bool,
    },
    /// Wait until every recorded journal entry is durable (`entry` names the
    /// one waited for). Answer [`Input::Done`] or [`Input::Failed`].
    JournalFlush {
        /// The entry waited for.
        entry: StateJournal,
    },
    /// Record the journal's removal. Answer [`Input::Done`].
    JournalClear,
    /// Pass the named crash point (settling the journal writer first if it
    /// fires). Answer [`Input::Done`].
    CrashPoint(&'static str),
    /// Kill and reap the successor. Answer [`Input::Done`].
    KillSuccessor,
    /// Disarm the child guard: the successor is the incumbent and is the
    /// caller's from here. Answer [`Input::Done`].
    DisarmGuard,
    /// The handoff is over.
    Finish(Result<Finished, Error>),
}

/// How a handoff that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// True when the successor is the incumbent now.
    pub committed: bool,
    /// Why the handoff was aborted, when it was.
    pub abort_reason: Option<String>,
}

/// What happened: the result of the last action.
#[derive(Debug)]
pub enum Input {
    /// The action succeeded.
    Done,
    /// The action failed.
    Failed(Error),
    /// The successor was spawned with this pid.
    Spawned(u32),
    /// A frame arrived, in this frame version.
    Frame {
        /// The frame's version.
        version: ProtoVersion,
        /// Its message.
        msg: Message,
    },
    /// The read's deadline passed without a frame.
    Timeout,
    /// The peer closed its end.
    Closed,
    /// The read failed otherwise (an undecodable or oversized frame, an OS
    /// error).
    ReadFailed(Error),
}

/// What to do when a queued action fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFail {
    /// The handoff cannot go on: abort with the error.
    Abort,
    /// Best effort: log and carry on.
    Warn(Warning),
    /// `Begin` could not be sent: the successor is not ready.
    NotReady,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warning {
    AbortToSuccessor,
    Commit,
    Journal(Phase),
}

/// What to do once a queued action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    LogHello(Side),
    Prepare,
    Seal,
    Begin,
    BeginSent,
    Commit,
    Committed,
    LogResume,
}

#[derive(Debug)]
struct Step {
    action: Action,
    on_fail: OnFail,
    then: Option<Then>,
}

/// Why a handoff is aborted.
#[derive(Debug)]
enum Cause {
    /// The supervisor cannot go on (a failed write, a lost or misbehaving
    /// peer outside the seal and the ready wait): the result is the error.
    Error(Error),
    /// The incumbent could not seal; it keeps the flock and resumes.
    SealFailed(String),
    /// The incumbent did not answer the seal; its own recovery decides.
    SealUnanswered(Error),
    /// The successor did not become ready.
    NotReady(String),
}

/// A peer after its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The negotiated version.
    pub version: ProtoVersion,
    /// The pid it announced.
    pub pid: u32,
}

/// The supervisor's handoff. See the module documentation.
#[derive(Debug)]
pub struct SupervisorMachine {
    p: Params,
    wait: Wait,
    queue: VecDeque<Step>,
    pending: Option<(OnFail, Option<Then>)>,
    started: Instant,
    total_deadline: Instant,
    /// When the current wait for a frame gives up (set by its first read).
    wait_deadline: Option<Instant>,
    /// How long the current wait for a frame may take.
    wait_budget: Duration,
    /// Refused connections are retried until then, pausing this long.
    give_up_at: Instant,
    refused_pause: Duration,
    o: Option<Peer>,
    successor_pid: Option<u32>,
    n: Option<Peer>,
    o_sealed: bool,
    guard_armed: bool,
    journal_recorded: bool,
    prepare_at: Option<Instant>,
    seal_at: Option<Instant>,
    begin_at: Option<Instant>,
    /// Why the supervisor decided to abort, once it did.
    abort_reason: Option<String>,
    result: Option<Result<Finished, Error>>,
}

impl SupervisorMachine {
    /// A machine for the handoff `p`, started at `now`; returns it with its
    /// first action.
    pub fn start(p: Params, now: Instant) -> (Self, Action) {
        let t = p.timeouts.clone();
        let mut m = Self {
            started: now,
            total_deadline: now + p.deadline,
            wait: Wait::IncumbentHello,
            queue: VecDeque::new(),
            pending: None,
            wait_deadline: None,
            wait_budget: t.hello_read.max(t.min_read),
            give_up_at: now + t.hello_read,
            refused_pause: Duration::from_millis(5),
            o: None,
            successor_pid: None,
            n: None,
            o_sealed: false,
            guard_armed: false,
            journal_recorded: false,
            prepare_at: None,
            seal_at: None,
            begin_at: None,
            abort_reason: None,
            result: None,
            p,
        };
        m.push(Action::Connect, OnFail::Abort, None);
        let first = m.poll(now);
        (m, first)
    }

    /// What the supervisor waits for now.
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// The handoff's id.
    pub fn handoff_id(&self) -> HandoffId {
        self.p.handoff_id
    }

    /// The incumbent after its `Hello`.
    pub fn incumbent(&self) -> Option<Peer> {
        self.o
    }

    /// The spawned successor's pid.
    pub fn successor_pid(&self) -> Option<u32> {
        self.successor_pid
    }

    /// Feed the result of the last action; get the next action.
    pub fn next(&mut self, now: Instant, input: Input) -> Action {
        if let Some((on_fail, then)) = self.pending.take() {
            match input {
                Input::Done => {
                    if let Some(then) = then {
                        self.then(now, then);
                    }
                }
                Input::Spawned(pid) => self.spawned(pid),
                Input::Failed(e) => self.failed(on_fail, e),
                other => self.abort(Cause::Error(Error::Protocol(format!(
                    "BUG: the driver answered an action with {other:?}"
                )))),
            }
        } else {
            self.on_read(now, input);
        }
        self.poll(now)
    }

    fn push(&mut self, action: Action, on_fail: OnFail, then: Option<Then>) {
        self.queue.push_back(Step {
            action,
            on_fail,
            then,
        });
    }

    fn crash(&mut self, point: &'static str) {
        self.push(Action::CrashPoint(point), OnFail::Abort, None);
    }

    fn entry(&self, phase: Phase) -> StateJournal {
        StateJournal {
            handoff_id: self.p.handoff_id,
            phase,
            incumbent_pid: self.o.map_or(0, |o| o.pid),
            successor_pid: self.successor_pid,
            started_at_unix_ms: self.p.started_unix_ms,
        }
    }

    fn journal(&mut self, phase: Phase, at_once: bool, on_fail: OnFail) {
        self.journal_recorded = true;
        let entry = self.entry(phase);
        self.push(Action::Journal { entry, at_once }, on_fail, None);
    }

    /// Record a phase after the durable `Negotiating` entry: a failure is
    /// logged and the handoff goes on. Aborting there would gain nothing
    /// (the journal on disk already names the handoff, and recovery does
    /// not depend on the phase) and, after `Begin`, would kill a successor
    /// that may be serving while the incumbent may have conceded to it.
    fn journal_best_effort(&mut self, phase: Phase) {
        self.journal(phase, false, OnFail::Warn(Warning::Journal(phase)));
    }

    /// Enter a wait for a frame that may take `budget`.
    fn await_frame(&mut self, wait: Wait, budget: Duration) {
        self.wait = wait;
        self.wait_budget = budget.max(self.p.timeouts.min_read);
        self.wait_deadline = None;
    }

    fn remaining(&self, now: Instant) -> Duration {
        let min = self.p.timeouts.min_read;
        self.total_deadline
            .checked_duration_since(now)
            .unwrap_or(min)
            .max(min)
    }

    fn poll(&mut self, now: Instant) -> Action {
        if let Some(step) = self.queue.pop_front() {
            if !matches!(step.action, Action::Finish(_)) {
                self.pending = Some((step.on_fail, step.then));
            }
            return step.action;
        }
        let from = match self.wait {
            Wait::IncumbentHello | Wait::Drained | Wait::SealComplete => Side::Incumbent,
            Wait::SuccessorHello | Wait::Ready => Side::Successor,
            Wait::Aborting => {
                self.finish_abort();
                return self.poll(now);
            }
            Wait::Done => {
                let result = self.result.take().unwrap_or_else(|| {
                    Err(Error::Protocol(
                        "BUG: the supervisor machine was polled after it finished".into(),
                    ))
                });
                return Action::Finish(result);
            }
            wait => {
                let e = Error::Protocol(format!("BUG: supervisor machine stalled in {wait:?}"));
                self.abort(Cause::Error(e));
                return self.poll(now);
            }
        };
        let deadline = *self
            .wait_deadline
            .get_or_insert_with(|| now + self.wait_budget);
        let hello = matches!(self.wait, Wait::IncumbentHello | Wait::SuccessorHello);
        let until = if hello {
            deadline
        } else if now >= deadline {
            // A heartbeat arrived at the very end of the wait.
            self.on_read(now, Input::Timeout);
            return self.poll(now);
        } else {
            (now + self.p.timeouts.liveness).min(deadline)
        }
        .max(now + self.p.timeouts.min_read);
        Action::Read { from, until }
    }

    fn awaiting(&self) -> &'static str {
        match self.wait {
            Wait::IncumbentHello | Wait::SuccessorHello => "peer Hello",
            Wait::Drained => "Drained",
            Wait::SealComplete => "SealComplete",
            _ => "Ready",
        }
    }

    /// The result of a read, as the wait sees it: the awaited frame, a
    /// frame to skip (liveness only), or the error that ends the wait.
    fn read_result(&self, input: Input) -> Option<Result<Message, Error>> {
        let awaiting = self.awaiting();
        let hello = matches!(self.wait, Wait::IncumbentHello | Wait::SuccessorHello);
        let version = match self.wait {
            Wait::Drained | Wait::SealComplete => self.o.map(|o| o.version),
            Wait::Ready => self.n.map(|n| n.version),
            _ => None,
        };
        match input {
            Input::Frame { msg, .. } if hello => Some(Ok(msg)),
            Input::Frame { version: v, .. } if Some(v) != version => {
                Some(Err(Error::WrongFrameVersion {
                    expected: version.unwrap_or(v),
                    got: v,
                }))
            }
            Input::Frame {
                msg: Message::Heartbeat { .. } | Message::SealProgress { .. },
                ..
            } => None,
            Input::Frame { msg, .. } => {
                if let Err(e) = check_handoff_id(self.p.handoff_id, &msg) {
                    return Some(Err(e));
                }
                let wanted = match self.wait {
                    Wait::Drained => matches!(msg, Message::Drained { .. }),
                    Wait::SealComplete => {
                        matches!(
                            msg,
                            Message::SealComplete { .. } | Message::SealFailed { .. }
                        )
                    }
                    _ => matches!(msg, Message::Ready { .. }),
                };
                Some(if wanted {
                    Ok(msg)
                } else {
                    Err(Error::UnexpectedMessage {
                        expected: awaiting,
                        got: short_name(&msg),
                    })
                })
            }
            Input::Timeout => Some(Err(Error::Timeout(awaiting))),
            Input::Closed => Some(Err(Error::PeerClosed(awaiting))),
            Input::ReadFailed(e) => Some(Err(e)),
            other => Some(Err(Error::Protocol(format!(
                "BUG: the driver answered a read with {other:?}"
            )))),
        }
    }

    fn on_read(&mut self, now: Instant, input: Input) {
        let Some(result) = self.read_result(input) else {
            return; // liveness frame: read again
        };
        match (self.wait, result) {
            (Wait::IncumbentHello, Ok(Message::Refused { reason })) if now < self.give_up_at => {
                tracing::debug!(reason = %reason, "incumbent refused; retrying");
                // Each refusal is an event on the incumbent's side: back off
                // from 5 ms to 100 ms so a retry loop does not flood it.
                let pause = self
                    .refused_pause
                    .min(self.give_up_at.saturating_duration_since(now));
                self.refused_pause = (self.refused_pause * 2).min(Duration::from_millis(100));
                self.push(Action::Pause(pause), OnFail::Abort, None);
                self.push(Action::Connect, OnFail::Abort, None);
                self.wait_deadline = None;
            }
            (Wait::IncumbentHello, Ok(msg)) => match check_hello(msg, Side::Incumbent, None) {
                Ok(peer) => {
                    self.o = Some(peer);
                    self.wait = Wait::Spawn;
                    self.push(
                        self.hello_ack(Side::Incumbent, peer.version),
                        OnFail::Abort,
                        Some(Then::LogHello(Side::Incumbent)),
                    );
                    self.crash(points::S_AFTER_O_HELLO);
                    self.push(Action::Spawn, OnFail::Abort, None);
                }
                Err(e) => self.abort(Cause::Error(e)),
            },
            (Wait::SuccessorHello, Ok(msg)) => {
                match check_hello(msg, Side::Successor, self.successor_pid) {
                    Ok(peer) => {
                        self.n = Some(peer);
                        self.wait = Wait::NegotiatingDurable;
                        self.push(
                            self.hello_ack(Side::Successor, peer.version),
                            OnFail::Abort,
                            Some(Then::LogHello(Side::Successor)),
                        );
                        self.crash(points::S_AFTER_N_HELLO);
                        let entry = self.entry(Phase::Negotiating);
                        self.push(Action::JournalFlush { entry }, OnFail::Abort, None);
                        self.push(
                            Action::CrashPoint(points::S_AFTER_JOURNAL_NEGOTIATING),
                            OnFail::Abort,
                            Some(Then::Prepare),
                        );
                    }
                    Err(e) => self.abort(Cause::Error(e)),
                }
            }
            (
                Wait::Drained,
                Ok(Message::Drained {
                    open_conns_remaining,
                    accept_closed,
                }),
            ) => {
                let handoff_id = self.p.handoff_id;
                let drain_seconds = self
                    .prepare_at
                    .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
                tracing::info!(target: events::DRAINED, %handoff_id, open_conns_remaining, accept_closed, drain_seconds, "drain complete");
                self.wait = Wait::SealComplete;
                self.crash(points::S_AFTER_DRAINED_RECV);
                self.journal_best_effort(Phase::Draining);
                self.push(
                    Action::CrashPoint(points::S_AFTER_JOURNAL_DRAINING),
                    OnFail::Abort,
                    Some(Then::Seal),
                );
            }
            (Wait::SealComplete, Ok(Message::SealComplete { .. })) => {
                let handoff_id = self.p.handoff_id;
                let seal_seconds = self
                    .seal_at
                    .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
                tracing::info!(target: events::SEAL_COMPLETE, %handoff_id, seal_seconds, "seal complete; flock released by O");
                self.o_sealed = true;
                self.wait = Wait::Ready;
                self.crash(points::S_AFTER_SEAL_COMPLETE_RECV);
                self.journal_best_effort(Phase::Sealing);
                self.push(
                    Action::CrashPoint(points::S_AFTER_JOURNAL_SEALING),
                    OnFail::Abort,
                    Some(Then::Begin),
                );
            }
            (Wait::SealComplete, Ok(Message::SealFailed { error, .. })) => {
                self.abort(Cause::SealFailed(format!("seal failed: {error}")));
            }
            (Wait::SealComplete, Err(e)) => self.abort(Cause::SealUnanswered(e)),
            (
                Wait::Ready,
                Ok(Message::Ready {
                    listening_on,
                    healthz_ok,
                    advertised_revision_per_shard,
                    ..
                }),
            ) => {
                let handoff_id = self.p.handoff_id;
                let begin_to_ready_seconds = self
                    .begin_at
                    .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
                tracing::info!(target: events::READY, %handoff_id, healthz_ok, listeners = ?listening_on, advertised_revisions = ?advertised_revision_per_shard, begin_to_ready_seconds, "successor ready");
                self.wait = Wait::Committing;
                self.crash(points::S_AFTER_READY_RECV);
                // N holds the flock and is the incumbent from here on,
                // whatever happens to O. Disarm the guard *before* writing
                // Commit so a dead O cannot take N down with it.
                self.push(Action::DisarmGuard, OnFail::Abort, Some(Then::Commit));
            }
            (Wait::Ready, Ok(m)) => {
                self.abort(Cause::NotReady(format!(
                    "expected Ready, got {}",
                    short_name(&m)
                )));
            }
            (Wait::Ready, Err(e)) => self.abort(Cause::NotReady(not_ready_reason(&e))),
            (_, Ok(m)) => self.abort(Cause::Error(Error::UnexpectedMessage {
                expected: self.awaiting(),
                got: short_name(&m),
            })),
            (_, Err(e)) => self.abort(Cause::Error(e)),
        }
    }

    fn hello_ack(&self, to: Side, version: ProtoVersion) -> Action {
        Action::Send {
            to,
            version,
            msg: Message::HelloAck {
                proto_version_chosen: version,
                handoff_id: self.p.handoff_id,
            },
        }
    }

    fn spawned(&mut self, pid: u32) {
        self.successor_pid = Some(pid);
        self.guard_armed = true;
        let handoff_id = self.p.handoff_id;
        tracing::info!(target: events::SPAWN, %handoff_id, successor_pid = pid, binary = %self.p.binary, "spawned successor");
        self.crash(points::S_AFTER_SPAWN_SUCCESSOR);
        // The one journal write the handoff waits for: it must be durable
        // before PrepareHandoff, the first message that changes a peer's
        // state. Everything it records is known now, so it runs while N
        // starts up and is waited for after N's Hello.
        self.journal(Phase::Negotiating, true, OnFail::Abort);
        let t = &self.p.timeouts;
        let budget = t.hello_read.max(t.min_read);
        self.await_frame(Wait::SuccessorHello, budget);
    }

    fn failed(&mut self, on_fail: OnFail, e: Error) {
        let handoff_id = self.p.handoff_id;
        match on_fail {
            OnFail::Warn(Warning::AbortToSuccessor) => {
                let reason = self.abort_reason.as_deref().unwrap_or_default();
                tracing::warn!(target: events::ABORT, %handoff_id, reason = %reason, error = %e, "best-effort Abort to the successor failed; it will be killed and reaped anyway");
            }
            OnFail::Warn(Warning::Commit) => {
                tracing::warn!(target: events::COMMIT, %handoff_id, error = %e, "failed to send Commit to the incumbent; it may have crashed — the successor is the incumbent regardless, the handoff is committed");
            }
            OnFail::Warn(Warning::Journal(phase)) => {
                // Best effort: the durable Negotiating entry already names
                // the handoff, and recovery is the same whatever phase the
                // journal names.
                tracing::warn!(target: events::JOURNAL, %handoff_id, error = %e, "journal {phase:?} failed");
            }
            OnFail::NotReady => self.abort(Cause::NotReady(not_ready_reason(&e))),
            OnFail::Abort => self.abort(Cause::Error(e)),
        }
    }

    fn then(&mut self, now: Instant, then: Then) {
        let handoff_id = self.p.handoff_id;
        match then {
            Then::LogHello(side) => {
                let (role, peer) = match side {
                    Side::Incumbent => ("incumbent", self.o),
                    Side::Successor => ("successor", self.n),
                };
                let (peer_pid, proto_version) = peer.map_or((0, 0), |p| (p.pid, p.version));
                tracing::info!(target: events::HELLO, %handoff_id, role, peer_pid, proto_version, "{role} hello");
            }
            Then::Prepare => {
                // O gets the budget *remaining*, so its view of the deadline
                // tracks ours.
                self.prepare_at = Some(now);
                let deadline_ms = self.remaining(now).as_millis() as u64;
                let drain_grace_ms = self.p.drain_grace.as_millis() as u64;
                let successor_pid = self.successor_pid.unwrap_or(0);
                tracing::info!(target: events::PREPARE, %handoff_id, successor_pid, drain_grace_ms, deadline_ms, "prepare handoff");
                self.send_o(Message::PrepareHandoff {
                    handoff_id,
                    successor_pid,
                    deadline_ms,
                    drain_grace_ms,
                });
                self.crash(points::S_AFTER_PREPARE_SENT);
                // O may use all of drain_grace, and its reply still has to
                // cross the wire.
                let budget = self.p.drain_grace + self.p.timeouts.wire_slack;
                self.await_frame(Wait::Drained, budget);
            }
            Then::Seal => {
                self.seal_at = Some(now);
                tracing::info!(target: events::SEAL, %handoff_id, "seal request");
                self.send_o(Message::SealRequest { handoff_id });
                self.crash(points::S_AFTER_SEAL_REQUEST_SENT);
                // Per-read liveness (heartbeats reset it), overall cap at the
                // handoff deadline plus slack: seal() has no internal
                // deadline, so its reply may land arbitrarily close to the cap.
                let budget = self.remaining(now) + self.p.timeouts.wire_slack;
                self.await_frame(Wait::SealComplete, budget);
            }
            Then::Begin => {
                self.begin_at = Some(now);
                let version = self.n.map_or(PROTO_MIN, |n| n.version);
                self.push(
                    Action::Send {
                        to: Side::Successor,
                        version,
                        msg: Message::Begin { handoff_id },
                    },
                    OnFail::NotReady,
                    Some(Then::BeginSent),
                );
            }
            Then::BeginSent => {
                self.crash(points::S_AFTER_BEGIN_SENT);
                self.journal_best_effort(Phase::AwaitingReady);
                // N has no internal deadline for its start-up, so Ready may
                // be in flight when the cap elapses: allow wire_slack.
                let budget = self.remaining(now) + self.p.timeouts.wire_slack;
                self.await_frame(Wait::Ready, budget);
            }
            Then::Commit => {
                self.guard_armed = false;
                let total_seconds = now.saturating_duration_since(self.started).as_secs_f64();
                tracing::info!(target: events::COMMIT, %handoff_id, total_seconds, "commit");
                let version = self.o.map_or(PROTO_MIN, |o| o.version);
                self.push(
                    Action::Send {
                        to: Side::Incumbent,
                        version,
                        msg: Message::Commit { handoff_id },
                    },
                    OnFail::Warn(Warning::Commit),
                    None,
                );
                self.crash(points::S_AFTER_COMMIT_SENT);
                self.journal_best_effort(Phase::Committed);
                self.push(Action::JournalClear, OnFail::Abort, None);
                self.push(
                    Action::CrashPoint(points::S_AFTER_JOURNAL_CLEAR),
                    OnFail::Abort,
                    Some(Then::Committed),
                );
            }
            Then::Committed => {
                let successor_pid = self.successor_pid.unwrap_or(0);
                tracing::info!(target: events::OUTCOME, %handoff_id, committed = true, successor_pid, "handoff committed");
                self.finish(Ok(Finished {
                    committed: true,
                    abort_reason: None,
                }));
            }
            Then::LogResume => {
                tracing::info!(target: events::RESUME, %handoff_id, "sent ResumeAfterAbort to O");
            }
        }
    }

    fn send_o(&mut self, msg: Message) {
        let version = self.o.map_or(PROTO_MIN, |o| o.version);
        self.push(
            Action::Send {
                to: Side::Incumbent,
                version,
                msg,
            },
            OnFail::Abort,
            None,
        );
    }

    fn finish(&mut self, result: Result<Finished, Error>) {
        self.wait = Wait::Done;
        self.queue.clear();
        self.result = Some(result);
    }

    /// The one abort transition. What it undoes follows from what has
    /// happened: a greeted successor is told `Abort` (when the supervisor
    /// decided the abort); a spawned successor still under the guard is
    /// killed and reaped; a sealed incumbent is told `ResumeAfterAbort`
    /// (its flock is free once the successor is reaped); a journal written
    /// is cleared. A failure while aborting ends the abort with that error,
    /// still clearing the journal.
    fn abort(&mut self, cause: Cause) {
        let handoff_id = self.p.handoff_id;
        if self.wait == Wait::Aborting {
            // The abort itself failed (ResumeAfterAbort could not be sent,
            // or its journal entry failed): the handoff ends in that error.
            let e = match cause {
                Cause::Error(e) | Cause::SealUnanswered(e) => e,
                Cause::SealFailed(r) | Cause::NotReady(r) => Error::Protocol(r),
            };
            self.queue.clear();
            self.result = Some(Err(e));
            if self.journal_recorded {
                self.push(Action::JournalClear, OnFail::Abort, None);
            }
            return;
        }
        self.queue.clear();
        self.wait = Wait::Aborting;
        let (reason, result) = match cause {
            Cause::Error(e) => (None, Err(e)),
            Cause::SealFailed(reason) => {
                // O keeps the flock and resumes on its own.
                tracing::warn!(target: events::ABORT, %handoff_id, cause = "seal_failed", reason = %reason, "seal failed; aborting handoff");
                (
                    Some(reason.clone()),
                    Ok(Finished {
                        committed: false,
                        abort_reason: Some(reason),
                    }),
                )
            }
            Cause::SealUnanswered(e) => {
                // O is silent or gone mid-seal: we cannot know whether it
                // released the flock. O's own recovery (retake the flock,
                // resume) decides.
                let reason = if e.is_timeout() {
                    "incumbent unresponsive during seal".to_string()
                } else {
                    format!("seal read failed: {e}")
                };
                tracing::warn!(target: events::ABORT, %handoff_id, cause = "seal_unanswered", reason = %reason, "aborting handoff during seal");
                (Some(reason), Err(e))
            }
            Cause::NotReady(reason) => {
                tracing::warn!(target: events::ABORT, %handoff_id, cause = "not_ready", reason = %reason, "aborting handoff before commit");
                (
                    Some(reason.clone()),
                    Ok(Finished {
                        committed: false,
                        abort_reason: Some(reason),
                    }),
                )
            }
        };
        self.abort_reason.clone_from(&reason);
        // A decided abort tells a greeted successor why before it dies.
        if let (Some(reason), Some(n), true) = (&reason, self.n, self.guard_armed) {
            self.push(
                Action::Send {
                    to: Side::Successor,
                    version: n.version,
                    msg: Message::Abort {
                        handoff_id,
                        reason: reason.clone(),
                    },
                },
                OnFail::Warn(Warning::AbortToSuccessor),
                None,
            );
            if self.o_sealed {
                self.crash(points::S_AFTER_ABORT_SENT);
            }
        }
        if self.guard_armed {
            self.guard_armed = false;
            if reason.is_none() {
                let successor_pid = self.successor_pid.unwrap_or(0);
                tracing::warn!(
                    target: events::ABORT,
                    cause = "error",
                    successor_pid,
                    "killing the successor: the handoff ended in an error"
                );
            }
            self.push(Action::KillSuccessor, OnFail::Abort, None);
        }
        if self.o_sealed {
            // O has sealed and released the flock: tell it to serve again.
            self.send_o(Message::ResumeAfterAbort { handoff_id });
            self.queue
                .back_mut()
                .expect("BUG: send_o queued a step")
                .then = Some(Then::LogResume);
            self.crash(points::S_AFTER_RESUME_SENT);
            self.journal_best_effort(Phase::ResumingAfterAbort);
        }
        self.result = Some(result);
        if self.journal_recorded {
            self.push(Action::JournalClear, OnFail::Abort, None);
        }
    }

    /// The abort's steps are done: report its result.
    fn finish_abort(&mut self) {
        let handoff_id = self.p.handoff_id;
        let result = self.result.take().unwrap_or_else(|| {
            Err(Error::Protocol(
                "BUG: abort finished without a result".into(),
            ))
        });
        if let Ok(Finished {
            abort_reason: Some(reason),
            ..
        }) = &result
        {
            tracing::info!(target: events::OUTCOME, %handoff_id, committed = false, reason = %reason, "handoff aborted");
        }
        self.finish(result);
    }
}

/// Check a peer's `Hello` (its role, its pid when known, a common
/// version): the peer as the supervisor will speak to it.
pub fn check_hello(
    msg: Message,
    expected_role: Side,
    expected_pid: Option<u32>,
) -> Result<Peer, Error> {
    let (role, pid, proto_min, proto_max) = match msg {
        Message::Hello {
            role,
            pid,
            proto_min,
            proto_max,
            ..
        } => (role, pid, proto_min, proto_max),
        Message::Refused { reason } => return Err(Error::Refused(reason)),
        other => {
            return Err(Error::UnexpectedMessage {
                expected: "Hello",
                got: short_name(&other),
            });
        }
    };
    if role != expected_role {
        return Err(Error::Protocol(format!(
            "peer announced role {role:?}, expected {expected_role:?}"
        )));
    }
    if let Some(expected) = expected_pid
        && pid != expected
    {
        return Err(Error::PidMismatch {
            expected,
            announced: pid,
        });
    }
    let version = negotiate_version(PROTO_MIN, PROTO_MAX, proto_min, proto_max)?;
    Ok(Peer { version, pid })
}

fn not_ready_reason(e: &Error) -> String {
    match e {
        Error::Timeout(s) => format!("ready phase timed out waiting for {s}"),
        e => format!("ready read failed: {e}"),
    }
}
