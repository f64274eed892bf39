//! The modelled world one run of the explorer happens in: the library's
//! supervisor machine and incumbent session machine, a model of the
//! successor (its protocol behaviour as the typestate API implements it:
//! Hello, wait for Begin, take the listeners and the flock, Ready, rename
//! the control socket, serve), and what the OS gives them: the data-dir
//! flock and its holder, the control channels and whether the control path
//! was renamed over, the journal file with what is durable, process deaths,
//! a process manager's restart of the service and the supervisor's restart
//! and recovery (`resume_from_journal`: wait for the incumbent, clear).
//!
//! A run is a sequence of choices; at each step [`World::moves`] lists what
//! may happen next (index 0 is the default: the next process in a fixed
//! order makes progress) and [`World::apply`] does it, then
//! [`World::check`] checks the invariants.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use handoff::machine::incumbent::{
    Action as OAction, End, Input as OInput, Params as OParams, Retake, SessionMachine,
};
use handoff::machine::supervisor::{Action, Input, Params, SupervisorMachine};
use handoff::protocol::{HandoffId, Message, PROTO_MAX, PROTO_MIN, Side};
use handoff::{DrainReport, Error, Phase, SealError, SealReport, SupervisorTimeouts};

const O_PID: u32 = 100;
const N_PID: u32 = 200;

/// A process that can hold the flock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// The incumbent.
    O,
    /// The successor.
    N,
    /// A service process a process manager restarted.
    Restarted,
    /// Some other process (a backup tool, a stray instance).
    Foreign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NState {
    NotSpawned,
    /// Started: its `Hello` is next.
    Starting,
    AwaitBegin,
    /// `Begin` received: taking the flock.
    Begun,
    /// `Ready` sent: renaming the control socket and serving next.
    ReadySent,
    Serving,
    Exited,
    Dead,
}

/// One thing that can happen next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// The supervisor performs its pending action (a read delivers the
    /// next frame, or times out if no frame can come).
    Supervisor,
    /// The incumbent handles its next message or internal step.
    Incumbent,
    /// The successor handles its next message or internal step.
    Successor,
    /// The background journal writer makes the recorded state durable.
    JournalWriter,
    /// The foreign flock holder lets go.
    ForeignRelease,
    /// The supervisor restarts after dying and recovers from the journal.
    SupervisorRestart,
    /// A process manager restarts the service (nothing serves, a service
    /// process died).
    ServiceRestart,
    /// Fault: this role dies now.
    Kill(Holder),
    /// Fault: the supervisor dies.
    KillSupervisor,
    /// Fault: power cut: every process dies, the journal keeps only what
    /// was durable; the supervisor and the service restart.
    PowerCut,
    /// Fault: this journal write fails (EIO, ENOSPC).
    JournalFails,
    /// Fault: a foreign process takes the flock just before `Begin`.
    ForeignTakesFlock,
    /// Fault: the peer the supervisor reads from stalls past its timeout.
    Stall,
    /// Fault: what the incumbent waits for (a frame from the supervisor,
    /// the flock) comes too late: its wait ends by its timeout first.
    StallIncumbent,
    /// Fault: the peer the supervisor reads from sends a frame of another
    /// handoff.
    Misbehave,
    /// Fault: the incumbent's seal fails.
    SealFails,
}

impl Move {
    /// Whether this move is a fault.
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            Move::Supervisor
                | Move::Incumbent
                | Move::Successor
                | Move::JournalWriter
                | Move::ForeignRelease
                | Move::SupervisorRestart
                | Move::ServiceRestart
        )
    }
}

/// Deliberate defects of the models, to see the explorer catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelDefects {
    /// The successor serves without the flock when it is busy at `Begin`.
    pub successor_ignores_busy_flock: bool,
    /// The successor sends `Ready` before it takes the flock.
    pub successor_ready_before_flock: bool,
}

/// The world of one run.
#[derive(Debug)]
pub struct World {
    base: Instant,
    now: Instant,
    defects: ModelDefects,
    s: Option<SupervisorMachine>,
    /// The supervisor's pending action.
    s_action: Option<Action>,
    s_dead: bool,
    s_result: Option<String>,
    handoff_id: HandoffId,
    /// The incumbent process is alive.
    o_live: bool,
    /// The incumbent serves (accepts and writes).
    o_serving: bool,
    /// The incumbent's current session: the library's machine.
    o_session: Option<SessionMachine>,
    o_action: Option<OAction>,
    n_state: NState,
    restarted_serving: bool,
    flock: Option<Holder>,
    n_listeners: bool,
    /// The control path is renamed over by the successor.
    control_renamed: bool,
    o_connected: bool,
    to_o: VecDeque<Message>,
    from_o: VecDeque<Message>,
    to_n: VecDeque<Message>,
    from_n: VecDeque<Message>,
    /// When a successor waiting for the flock gives up.
    n_gives_up_at: Option<Instant>,
    journal_pending: Option<Option<Phase>>,
    journal_durable: Option<Phase>,
    journal_fail_next: bool,
    journal_failed: bool,
    ready_sent: bool,
    ready_delivered: bool,
    guard_disarmed: bool,
    commit_sent: bool,
    /// A service process died, stalled or misbehaved: a process manager
    /// may have to restart the service.
    service_faulted: bool,
    /// A foreign process held the data-dir flock: outside the protocol,
    /// recovered by a process manager's restart.
    foreign_interfered: bool,
    /// The timeline: (milliseconds, role, what happened).
    #[allow(clippy::type_complexity)]
    pub trace: Vec<(u64, char, String)>,
}

const DEADLINE: Duration = Duration::from_millis(2000);
const REACQUIRE_WINDOW: Duration = Duration::from_millis(200);

fn timeouts() -> SupervisorTimeouts {
    SupervisorTimeouts {
        liveness: Duration::from_millis(300),
        hello_read: Duration::from_millis(200),
        wire_slack: Duration::from_millis(50),
        min_read: Duration::from_millis(10),
        probe: Duration::from_millis(200),
    }
}

/// The longest any one wait of the supervisor may take in this world.
pub fn wait_bound() -> Duration {
    DEADLINE + timeouts().wire_slack + timeouts().hello_read
}

impl World {
    /// A world with an incumbent serving and holding the flock, and a
    /// supervisor starting a handoff.
    pub fn new(defects: ModelDefects) -> Self {
        let base = Instant::now();
        let handoff_id: HandoffId = "5e1ec7ed-0000-4000-8000-000000000001"
            .parse()
            .expect("a valid UUID");
        let params = Params {
            handoff_id,
            deadline: DEADLINE,
            drain_grace: Duration::from_millis(500),
            timeouts: timeouts(),
            started_unix_ms: 0,
            binary: "successor".into(),
        };
        let (s, first) = SupervisorMachine::start(params, base);
        let mut w = Self {
            base,
            now: base,
            defects,
            s: Some(s),
            s_action: None,
            s_dead: false,
            s_result: None,
            handoff_id,
            o_live: true,
            o_serving: true,
            o_session: None,
            o_action: None,
            n_state: NState::NotSpawned,
            restarted_serving: false,
            flock: Some(Holder::O),
            n_listeners: false,
            control_renamed: false,
            o_connected: false,
            to_o: VecDeque::new(),
            from_o: VecDeque::new(),
            to_n: VecDeque::new(),
            from_n: VecDeque::new(),
            n_gives_up_at: None,
            journal_pending: None,
            journal_durable: None,
            journal_fail_next: false,
            journal_failed: false,
            ready_sent: false,
            ready_delivered: false,
            guard_disarmed: false,
            commit_sent: false,
            service_faulted: false,
            foreign_interfered: false,
            trace: Vec::new(),
        };
        w.s_action = Some(first);
        w
    }

    /// Everything that decides what can happen next, as text (the trace
    /// and the clock's origin left out): two runs in the same state print
    /// the same.
    pub fn state_key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}/{:?}/{}{}|{:?}|{:?}|{:?}|{:?}|{}{}{}{}{}{}{}{}{}{}|{:?}{:?}{:?}{:?}|{:?}|{:?}|{:?}",
            self.s.as_ref().map(|s| s.wait()),
            self.s_action.as_ref().map(|a| action_key(a, self.base)),
            self.o_session.as_ref().map(SessionMachine::wait),
            self.o_action.as_ref().map(o_action_key),
            self.o_live as u8,
            self.o_serving as u8,
            self.n_state,
            self.flock,
            self.journal_pending,
            self.journal_durable,
            self.s_dead as u8,
            self.restarted_serving as u8,
            self.n_listeners as u8,
            self.control_renamed as u8,
            self.o_connected as u8,
            self.journal_fail_next as u8,
            self.ready_sent as u8,
            self.ready_delivered as u8,
            self.guard_disarmed as u8,
            self.commit_sent as u8,
            self.to_o,
            self.from_o,
            self.to_n,
            self.from_n,
            self.n_gives_up_at.map(|t| t - self.base),
            self.now - self.base,
            self.s_result,
        )
    }

    fn log(&mut self, who: char, what: impl Into<String>) {
        let ms = (self.now - self.base).as_millis() as u64;
        self.trace.push((ms, who, what.into()));
    }

    fn o_alive(&self) -> bool {
        self.o_live
    }

    fn n_alive(&self) -> bool {
        !matches!(
            self.n_state,
            NState::NotSpawned | NState::Exited | NState::Dead
        )
    }

    /// The supervisor is alive and in a handoff.
    fn s_running(&self) -> bool {
        self.s.is_some() && !self.s_dead && self.s_action.is_some()
    }

    /// Whether the supervisor's pending read can be answered now.
    fn s_read_ready(&self) -> Option<bool> {
        match &self.s_action {
            Some(Action::Read { from, .. }) => Some(match from {
                Side::Incumbent => !self.from_o.is_empty() || !self.o_connected || !self.o_alive(),
                Side::Successor => !self.from_n.is_empty() || !self.n_alive(),
            }),
            _ => None,
        }
    }

    /// Whether the incumbent can act without waiting for time to pass.
    fn o_can_step(&self) -> bool {
        match &self.o_action {
            None => false,
            Some(OAction::Read { .. }) => !self.to_o.is_empty() || !self.o_connected,
            Some(OAction::RetakeFlock { .. }) => self.flock.is_none() || self.control_renamed,
            Some(_) => true,
        }
    }

    /// Whether the incumbent waits for time to pass (a read's timeout, the
    /// end of its flock retake).
    fn o_waits(&self) -> bool {
        self.o_action.is_some() && !self.o_can_step()
    }

    fn n_can_step(&self) -> bool {
        match self.n_state {
            NState::Starting | NState::Begun | NState::ReadySent => true,
            NState::AwaitBegin => !self.to_n.is_empty() || !self.s_running(),
            _ => false,
        }
    }

    fn nothing_serves(&self) -> bool {
        !(self.o_serving
            || matches!(self.n_state, NState::ReadySent | NState::Serving)
            || self.restarted_serving)
    }

    /// What may happen next; index 0 is the default.
    pub fn moves(&self) -> Vec<Move> {
        let mut m = Vec::new();
        if self.flock == Some(Holder::Foreign) {
            m.push(Move::ForeignRelease);
        }
        if self.o_can_step() {
            m.push(Move::Incumbent);
        }
        if self.n_can_step() {
            m.push(Move::Successor);
        }
        if self.journal_pending.is_some() && !self.journal_failed {
            m.push(Move::JournalWriter);
        }
        let others_busy = !m.is_empty();
        if self.s_running() {
            match self.s_read_ready() {
                Some(true) => m.push(Move::Supervisor),
                // A read with nothing to deliver times out only once no
                // one else can make progress.
                Some(false) if !others_busy => m.push(Move::Supervisor),
                Some(false) => {}
                None => m.push(Move::Supervisor),
            }
        }
        // The incumbent's read times out, or its flock retake gives up,
        // only once no one else can make progress either.
        if !others_busy && self.o_waits() {
            m.push(Move::Incumbent);
        }
        if self.s_dead {
            m.push(Move::SupervisorRestart);
        }
        if m.is_empty()
            && self.nothing_serves()
            && (self.service_faulted || self.foreign_interfered)
        {
            m.push(Move::ServiceRestart);
        }
        // Faults.
        if self.s_running() {
            m.push(Move::KillSupervisor);
            m.push(Move::PowerCut);
        }
        if self.o_alive() {
            m.push(Move::Kill(Holder::O));
        }
        if self.n_alive() {
            m.push(Move::Kill(Holder::N));
        }
        if self.s_running()
            && matches!(
                self.s_action,
                Some(Action::Journal { .. } | Action::JournalFlush { .. })
            )
        {
            m.push(Move::JournalFails);
        }
        if self.flock.is_none()
            && self.n_state == NState::AwaitBegin
            && matches!(self.to_n.front(), Some(Message::Begin { .. }))
        {
            m.push(Move::ForeignTakesFlock);
        }
        if self.s_running() && matches!(self.s_action, Some(Action::Read { .. })) {
            m.push(Move::Stall);
            m.push(Move::Misbehave);
        }
        if matches!(self.o_action, Some(OAction::Seal)) {
            m.push(Move::SealFails);
        }
        let o_retake_blocked =
            matches!(self.o_action, Some(OAction::RetakeFlock { .. })) && self.o_waits();
        let o_read = matches!(self.o_action, Some(OAction::Read { .. })) && self.o_connected;
        if o_read || o_retake_blocked {
            m.push(Move::StallIncumbent);
        }
        m
    }

    /// Whether the run is over: nothing but faults can happen.
    pub fn settled(&self) -> bool {
        self.moves().iter().all(Move::is_fault)
    }

    /// Apply one move.
    pub fn apply(&mut self, mv: &Move) {
        match mv {
            Move::Supervisor => self.step_supervisor(None),
            Move::Incumbent => self.step_incumbent(None),
            Move::Successor => self.step_successor(),
            Move::JournalWriter => {
                if let Some(p) = self.journal_pending.take() {
                    self.journal_durable = p;
                    self.log('S', format!("journal durable: {p:?}"));
                }
            }
            Move::ForeignRelease => {
                self.flock = None;
                self.log('O', "foreign process releases the flock");
            }
            Move::SupervisorRestart => self.restart_supervisor(),
            Move::ServiceRestart => {
                if self.flock.is_none() {
                    self.flock = Some(Holder::Restarted);
                    self.restarted_serving = true;
                    self.log(
                        'O',
                        "process manager restarts the service: it takes the flock and serves",
                    );
                } else {
                    self.log(
                        'O',
                        "process manager restarts the service: the flock is busy",
                    );
                }
                self.service_faulted = false;
                self.foreign_interfered = false;
            }
            Move::KillSupervisor => self.kill_supervisor(false),
            Move::PowerCut => {
                self.log('S', "POWER CUT: every process dies");
                self.kill_supervisor(true);
                self.kill(Holder::O);
                self.kill(Holder::N);
            }
            Move::Kill(who) => self.kill(*who),
            Move::JournalFails => {
                self.journal_fail_next = true;
                self.step_supervisor(None);
            }
            Move::ForeignTakesFlock => {
                self.flock = Some(Holder::Foreign);
                self.foreign_interfered = true;
                self.log('N', "a foreign process takes the flock");
            }
            Move::Stall => {
                self.service_faulted = true;
                self.log('S', "the peer stalls past the read's timeout");
                self.step_supervisor(Some(Input::Timeout));
            }
            Move::Misbehave => {
                self.service_faulted = true;
                self.log('S', "the peer sends a frame of another handoff");
                let other: HandoffId = "5e1ec7ed-0000-4000-8000-000000000002"
                    .parse()
                    .expect("a valid UUID");
                let msg = Message::Abort {
                    handoff_id: other,
                    reason: "hostile".into(),
                };
                self.step_supervisor(Some(Input::Frame {
                    version: PROTO_MAX,
                    msg,
                }));
            }
            Move::SealFails => self.step_incumbent(Some(OInput::Sealed(Err(SealError {
                error: "EIO".into(),
                partial_state: String::new(),
            })))),
            Move::StallIncumbent => match &self.o_action {
                Some(OAction::Read {
                    awaiting, timeout, ..
                }) => {
                    let awaiting = *awaiting;
                    self.now += *timeout;
                    self.log(
                        'O',
                        format!("the supervisor stalls past the wait for {awaiting}"),
                    );
                    self.step_incumbent(Some(OInput::ReadFailed(Error::Timeout(awaiting))));
                }
                // The flock stays held past the retake's bound.
                _ => self.step_incumbent(None),
            },
        }
    }

    fn kill(&mut self, who: Holder) {
        match who {
            Holder::O if self.o_alive() => {
                self.o_live = false;
                self.o_serving = false;
                self.o_session = None;
                self.o_action = None;
                self.service_faulted = true;
                self.log('O', "killed");
            }
            Holder::N if self.n_alive() => {
                self.n_state = NState::Dead;
                self.service_faulted = true;
                // Its socket stays at the control path: a renamed path
                // stays renamed.
                self.log('N', "killed");
            }
            _ => return,
        }
        if self.flock == Some(who) {
            self.flock = None;
        }
    }

    fn kill_supervisor(&mut self, power_cut: bool) {
        self.s_dead = true;
        self.s_action = None;
        // What the supervisor wrote is in its peers' socket buffers; what
        // it had not read dies with it.
        self.o_connected = false;
        self.from_o.clear();
        self.from_n.clear();
        if power_cut {
            self.journal_pending = None;
        } else {
            // The writer thread dies with the process: what it had not
            // written is lost too.
            self.journal_pending = None;
            self.log('S', "killed");
        }
    }

    /// The restarted supervisor's `resume_from_journal`: wait for the
    /// incumbent to answer (bounded), then clear the journal.
    fn restart_supervisor(&mut self) {
        self.s_dead = false;
        self.s = None;
        let found = self.journal_durable.take();
        self.log(
            'S',
            format!("restarted: journal {found:?} recovered and cleared"),
        );
        self.s_result = Some("recovered".into());
    }

    fn s_send(&mut self, to: Side, msg: Message) -> Input {
        self.log(
            'S',
            format!("sends {} to {to:?}", handoff::protocol::short_name(&msg)),
        );
        match to {
            Side::Incumbent => {
                if !self.o_connected || !self.o_alive() {
                    return Input::Failed(Error::PeerClosed("send"));
                }
                if matches!(msg, Message::Commit { .. }) {
                    self.commit_sent = true;
                }
                self.to_o.push_back(msg);
            }
            Side::Successor => {
                if !self.n_alive() {
                    return Input::Failed(Error::PeerClosed("send"));
                }
                self.to_n.push_back(msg);
            }
        }
        Input::Done
    }

    fn step_supervisor(&mut self, forced: Option<Input>) {
        let Some(action) = self.s_action.take() else {
            return;
        };
        let input = if let Some(forced) = forced {
            if let Action::Read { until, .. } = &action {
                self.now = self.now.max(*until);
            }
            forced
        } else {
            match action {
                Action::Finish(result) => {
                    let text = match &result {
                        Ok(f) if f.committed => "committed".to_string(),
                        Ok(f) => format!("aborted: {}", f.abort_reason.clone().unwrap_or_default()),
                        Err(e) => format!("failed: {e}"),
                    };
                    self.log('S', format!("handoff {text}"));
                    self.s_result = Some(text);
                    self.o_connected = false;
                    self.s_action = None;
                    // The supervisor's end of both channels closes: the
                    // incumbent reads what was sent, then the end.
                    return;
                }
                Action::Connect => {
                    if self.o_alive() && self.o_session.is_none() {
                        self.o_connected = true;
                        self.to_o.clear();
                        let (m, first) = SessionMachine::start(
                            OParams {
                                pid: O_PID,
                                build_id: vec![],
                                hello_timeout: Duration::from_millis(200),
                                liveness_timeout: Duration::from_millis(300),
                                max_deadline: Duration::from_secs(600),
                                holds_flock: self.flock == Some(Holder::O),
                            },
                            self.now,
                        );
                        self.o_session = Some(m);
                        self.o_action = Some(first);
                        self.log('S', "connects to the incumbent");
                        Input::Done
                    } else {
                        self.log('S', "connect refused: no incumbent");
                        Input::Failed(Error::Io(std::io::ErrorKind::ConnectionRefused.into()))
                    }
                }
                Action::Pause(d) => {
                    self.now += d;
                    Input::Done
                }
                Action::Spawn => {
                    self.n_state = NState::Starting;
                    self.log('S', "spawns the successor");
                    Input::Spawned(N_PID)
                }
                Action::Read { from, until } => {
                    let frame = match from {
                        Side::Incumbent => self.from_o.pop_front(),
                        Side::Successor => self.from_n.pop_front(),
                    };
                    match frame {
                        Some(msg) => {
                            if matches!(msg, Message::Ready { .. }) {
                                self.ready_delivered = true;
                            }
                            Input::Frame {
                                version: PROTO_MAX,
                                msg,
                            }
                        }
                        None => {
                            let closed = match from {
                                Side::Incumbent => !self.o_alive() || !self.o_connected,
                                Side::Successor => !self.n_alive(),
                            };
                            if closed {
                                Input::Closed
                            } else {
                                self.now = self.now.max(until);
                                self.log('S', format!("read from {from:?} times out"));
                                Input::Timeout
                            }
                        }
                    }
                }
                Action::Send { to, msg, .. } => self.s_send(to, msg),
                Action::Journal { entry, .. } => {
                    if self.journal_fail_next || self.journal_failed {
                        self.journal_fail_next = false;
                        self.journal_failed = true;
                        self.log('S', format!("journal {:?} fails (EIO)", entry.phase));
                        Input::Failed(Error::Io(std::io::Error::other("EIO")))
                    } else {
                        self.check_forward(entry.phase);
                        self.journal_pending = Some(Some(entry.phase));
                        Input::Done
                    }
                }
                Action::JournalFlush { .. } => {
                    if self.journal_fail_next || self.journal_failed {
                        self.journal_fail_next = false;
                        self.journal_failed = true;
                        self.log('S', "journal flush fails (ENOSPC)");
                        Input::Failed(Error::Io(std::io::Error::other("ENOSPC")))
                    } else {
                        if let Some(p) = self.journal_pending.take() {
                            self.journal_durable = p;
                        }
                        Input::Done
                    }
                }
                Action::JournalClear => {
                    // A clear supersedes an earlier failure.
                    self.journal_failed = false;
                    self.journal_pending = Some(None);
                    Input::Done
                }
                Action::CrashPoint(_) => Input::Done,
                Action::KillSuccessor => {
                    self.log('S', "kills and reaps the successor");
                    if self.n_alive() {
                        self.n_state = NState::Dead;
                        self.control_renamed = false;
                        if self.flock == Some(Holder::N) {
                            self.flock = None;
                        }
                    }
                    Input::Done
                }
                Action::DisarmGuard => {
                    self.log('S', "disarms the child guard");
                    self.guard_disarmed = true;
                    Input::Done
                }
            }
        };
        let s = self
            .s
            .as_mut()
            .expect("a running supervisor has its machine");
        let next = s.next(self.now, input);
        self.s_action = Some(next);
    }

    /// A journal entry must never name an earlier phase than the last one
    /// recorded.
    fn check_forward(&mut self, phase: Phase) {
        let rank = |p: Phase| match p {
            Phase::Negotiating => 0,
            Phase::Draining => 1,
            Phase::Sealing => 2,
            Phase::AwaitingReady => 3,
            Phase::Committed | Phase::ResumingAfterAbort => 4,
        };
        let prev = match self.journal_pending {
            Some(p) => p,
            None => self.journal_durable,
        };
        if let Some(prev) = prev
            && rank(phase) < rank(prev)
        {
            self.log(
                'S',
                format!("VIOLATION journal moved back from {prev:?} to {phase:?}"),
            );
        }
    }

    /// The incumbent performs its pending action (`forced`: the result a
    /// fault imposes instead).
    fn step_incumbent(&mut self, forced: Option<OInput>) {
        let Some(action) = self.o_action.take() else {
            return;
        };
        let input = match forced {
            Some(input) => input,
            None => match action {
                OAction::Finish(end) => {
                    self.o_session = None;
                    match end {
                        End::Continue => self.log('O', "session over: serves on"),
                        End::Committed(_) => {
                            self.o_live = false;
                            self.o_serving = false;
                            self.log('O', "committed: exits");
                        }
                        End::Superseded(_) => {
                            self.o_live = false;
                            self.o_serving = false;
                            self.log('O', "superseded: exits");
                        }
                    }
                    return;
                }
                OAction::SetWriteTimeout(_) | OAction::SetCurrent(_) | OAction::CrashPoint(_) => {
                    OInput::Done
                }
                OAction::Send { msg, .. } => {
                    self.log(
                        'O',
                        format!("sends {}", handoff::protocol::short_name(&msg)),
                    );
                    if self.o_connected {
                        self.from_o.push_back(msg);
                        OInput::Done
                    } else {
                        OInput::Failed(Error::Io(std::io::ErrorKind::BrokenPipe.into()))
                    }
                }
                OAction::Read {
                    timeout, awaiting, ..
                } => match self.to_o.pop_front() {
                    Some(msg) => OInput::Frame {
                        version: PROTO_MAX,
                        msg,
                    },
                    None if !self.o_connected => OInput::ReadFailed(Error::PeerClosed(awaiting)),
                    None => {
                        self.now += timeout;
                        self.log('O', format!("read for {awaiting} times out"));
                        OInput::ReadFailed(Error::Timeout(awaiting))
                    }
                },
                OAction::Drain { .. } => {
                    self.o_serving = false;
                    self.log('O', "drains");
                    OInput::Drained(DrainReport {
                        open_conns_remaining: 0,
                        accept_closed: true,
                    })
                }
                OAction::Seal => {
                    self.log('O', "seals");
                    OInput::Sealed(Ok(SealReport::default()))
                }
                OAction::ReleaseFlock => {
                    if self.flock == Some(Holder::O) {
                        self.flock = None;
                    }
                    self.log('O', "releases the flock");
                    OInput::Done
                }
                OAction::RetakeFlock { give_up_at } => {
                    if self.control_renamed {
                        self.log('O', "the control path is renamed over: concedes");
                        OInput::Retake(Retake::PathRebound)
                    } else if self.flock.is_none() {
                        self.flock = Some(Holder::O);
                        self.log('O', "retakes the flock");
                        OInput::Retake(Retake::Taken)
                    } else {
                        let window_end = self.now + REACQUIRE_WINDOW;
                        self.now = give_up_at.map_or(window_end, |d| d.max(window_end));
                        self.log(
                            'O',
                            format!("the flock stays held by {:?}: gives up", self.flock),
                        );
                        OInput::Retake(Retake::GaveUp)
                    }
                }
                OAction::Resume => {
                    self.o_serving = true;
                    self.log('O', "resumes serving");
                    OInput::Done
                }
            },
        };
        let session = self
            .o_session
            .as_mut()
            .expect("an incumbent with an action has its session");
        self.o_action = Some(session.next(self.now, input));
    }

    fn step_successor(&mut self) {
        match self.n_state {
            NState::Starting => {
                self.from_n.push_back(Message::Hello {
                    role: Side::Successor,
                    pid: N_PID,
                    build_id: vec![],
                    proto_min: PROTO_MIN,
                    proto_max: PROTO_MAX,
                    capabilities: vec![],
                });
                self.n_state = NState::AwaitBegin;
                self.log('N', "sends Hello");
            }
            NState::AwaitBegin => match self.to_n.pop_front() {
                Some(Message::HelloAck { .. }) => {}
                Some(Message::Begin { .. }) => {
                    self.n_state = NState::Begun;
                    self.n_gives_up_at = Some(self.now + DEADLINE);
                    self.log('N', "Begin: takes its listeners, then the flock");
                    self.n_listeners = true;
                    if self.defects.successor_ready_before_flock {
                        self.send_ready();
                    }
                }
                Some(Message::Abort { .. }) | None => {
                    self.n_state = NState::Exited;
                    self.log('N', "aborted or lost its supervisor: exits");
                }
                Some(m) => {
                    self.n_state = NState::Exited;
                    self.log(
                        'N',
                        format!(
                            "protocol error: {}: exits",
                            handoff::protocol::short_name(&m)
                        ),
                    );
                }
            },
            NState::Begun => {
                if self.flock.is_none() {
                    self.flock = Some(Holder::N);
                    self.log('N', "takes the flock");
                    self.send_ready();
                } else if self.defects.successor_ignores_busy_flock {
                    self.log('N', "the flock is busy: carries on WITHOUT it");
                    self.send_ready();
                } else {
                    let give_up = self.n_gives_up_at.unwrap_or(self.now);
                    self.now = self.now.max(give_up);
                    self.n_state = NState::Exited;
                    self.log('N', "the flock stays busy past its deadline: exits");
                }
            }
            NState::ReadySent => {
                self.control_renamed = true;
                self.n_state = NState::Serving;
                self.log('N', "renames its control socket over the path, serves");
            }
            _ => {}
        }
    }

    fn send_ready(&mut self) {
        if !self.s_running() {
            // Its Ready cannot reach a supervisor that is gone: it exits.
            self.n_state = NState::Exited;
            self.n_listeners = false;
            if self.flock == Some(Holder::N) {
                self.flock = None;
            }
            self.log('N', "Ready fails: the supervisor is gone; exits");
            return;
        }
        if self.ready_sent {
            self.n_state = NState::ReadySent;
            return;
        }
        self.ready_sent = true;
        self.n_state = NState::ReadySent;
        {
            self.from_n.push_back(Message::Ready {
                handoff_id: self.handoff_id,
                listening_on: vec!["main".into()],
                healthz_ok: true,
                advertised_revision_per_shard: vec![],
            });
        }
        self.log('N', "sends Ready");
        self.check_ready();
    }

    fn check_ready(&mut self) {
        if !(self.flock == Some(Holder::N) && self.n_listeners) {
            self.log(
                'N',
                "VIOLATION Ready sent without the flock and the listeners",
            );
        }
    }

    /// The invariants that hold after every step; the first broken one.
    pub fn check(&self) -> Option<String> {
        if let Some((_, _, v)) = self
            .trace
            .iter()
            .find(|(_, _, t)| t.starts_with("VIOLATION"))
        {
            return Some(v.trim_start_matches("VIOLATION ").to_string());
        }
        let o_writes = self.o_serving;
        let n_writes = matches!(self.n_state, NState::ReadySent | NState::Serving);
        if o_writes && self.flock != Some(Holder::O) {
            return Some(format!(
                "the incumbent serves without the flock (held by {:?})",
                self.flock
            ));
        }
        if n_writes && self.flock != Some(Holder::N) {
            return Some(format!(
                "the successor serves without the flock (held by {:?})",
                self.flock
            ));
        }
        if self.restarted_serving && self.flock != Some(Holder::Restarted) {
            return Some("the restarted service serves without the flock".into());
        }
        if self.commit_sent && !(self.ready_sent && self.ready_delivered) {
            return Some(
                "Commit sent to the incumbent before the supervisor received Ready".into(),
            );
        }
        if self.guard_disarmed && !self.ready_delivered {
            return Some("the child guard was disarmed before Ready was received".into());
        }
        if let Some(Action::Read { until, .. }) = &self.s_action
            && *until > self.now + wait_bound()
        {
            return Some(format!(
                "a wait of the supervisor is bounded by {:?}, more than {:?}",
                *until - self.now,
                wait_bound()
            ));
        }
        if (self.now - self.base) > 4 * wait_bound() {
            return Some("the run did not settle within its time bound".into());
        }
        None
    }

    /// The invariants of a settled run.
    pub fn check_settled(&self) -> Option<String> {
        let serving = [
            self.o_serving,
            matches!(self.n_state, NState::Serving | NState::ReadySent),
            self.restarted_serving,
        ];
        let count = serving.iter().filter(|s| **s).count();
        if count != 1 {
            return Some(format!(
                "{count} incumbents once settled (incumbent serving {}, successor {:?}, restarted {})",
                self.o_serving, self.n_state, self.restarted_serving
            ));
        }
        if self.journal_durable.is_some() || matches!(self.journal_pending, Some(Some(_))) {
            return Some(format!(
                "the journal is neither cleared nor recovered: {:?} durable, {:?} pending",
                self.journal_durable, self.journal_pending
            ));
        }
        if self.s.is_some() && self.s_result.is_none() {
            return Some(format!(
                "the supervisor never finished (waiting for {:?})",
                self.s.as_ref().map(SupervisorMachine::wait)
            ));
        }
        None
    }
}

fn action_key(a: &Action, base: Instant) -> String {
    match a {
        Action::Read { from, until } => format!("Read({from:?},{:?})", *until - base),
        Action::Send { to, msg, .. } => {
            format!("Send({to:?},{})", handoff::protocol::short_name(msg))
        }
        Action::Journal { entry, .. } => format!("Journal({:?})", entry.phase),
        Action::Finish(r) => format!("Finish({:?})", r.as_ref().map(|f| f.committed).ok()),
        other => format!("{other:?}"),
    }
}

fn o_action_key(a: &OAction) -> String {
    match a {
        OAction::Send { msg, .. } => format!("Send({})", handoff::protocol::short_name(msg)),
        OAction::Read { awaiting, .. } => format!("Read({awaiting})"),
        OAction::Drain { .. } => "Drain".into(),
        OAction::RetakeFlock { .. } => "Retake".into(),
        other => format!("{other:?}"),
    }
}
