//! Protocol phases, as the event stream shows them (pure).
//!
//! A kill is reported in the phase the handoff was *in* when the signal was
//! sent: the phase entered by the last progress event any process of that
//! supervisor run (its supervisor, incumbent, successor) had logged by then.
//! Kills are triggered by events too ([`TRIGGERS`]), but a trigger names
//! the intent; the phase measured at the kill is what the summary counts.

use handoff::events;
use serde::Serialize;

use crate::eventlog::Event;

/// Where a handoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No handoff in progress: the incumbent serves alone.
    Idle,
    /// The supervisor started, connects, exchanges `Hello`s, spawns the
    /// successor, journals `Negotiating`.
    Hello,
    /// `PrepareHandoff` sent: the incumbent drains.
    Drain,
    /// `SealRequest` sent: the incumbent seals (it still holds the flock).
    Seal,
    /// The incumbent released the flock: `SealComplete`, `Begin`, the
    /// successor takes the listeners and the flock, opens the sealed state.
    Begin,
    /// The successor sent `Ready` and binds the control socket.
    Ready,
    /// The supervisor sends `Commit`; the old incumbent exits.
    Commit,
    /// The handoff is being aborted: `SealFailed`, `Abort`,
    /// `ResumeAfterAbort`.
    Abort,
    /// A process lost its supervisor and recovers on its own, or a restarted
    /// supervisor recovers a journal.
    Recover,
}

impl Phase {
    /// Every phase, in protocol order.
    pub const ALL: [Phase; 9] = [
        Phase::Idle,
        Phase::Hello,
        Phase::Drain,
        Phase::Seal,
        Phase::Begin,
        Phase::Ready,
        Phase::Commit,
        Phase::Abort,
        Phase::Recover,
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Hello => "hello",
            Phase::Drain => "drain",
            Phase::Seal => "seal",
            Phase::Begin => "begin",
            Phase::Ready => "ready",
            Phase::Commit => "commit",
            Phase::Abort => "abort",
            Phase::Recover => "recover",
        }
    }
}

/// The three roles of a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// S: the run's `handoff-supervisor`.
    Supervisor,
    /// O: the process serving when the run started.
    Incumbent,
    /// N: the process the run's supervisor spawned.
    Successor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Supervisor, Role::Incumbent, Role::Successor];

    /// `S`, `O` or `N`.
    pub fn letter(self) -> &'static str {
        match self {
            Role::Supervisor => "S",
            Role::Incumbent => "O",
            Role::Successor => "N",
        }
    }

    /// `supervisor`, `incumbent`, `successor`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Incumbent => "incumbent",
            Role::Successor => "successor",
        }
    }

    /// Whether a process of this role exists in `phase` (the matrix leaves
    /// the other cells out: no supervisor or successor exists while idle).
    pub fn can_be_in(self, phase: Phase) -> bool {
        !(phase == Phase::Idle && self != Role::Incumbent)
    }
}

/// The phase an event enters, if it moves the handoff on.
pub fn phase_entered(ev: &Event) -> Option<Phase> {
    let name = ev.name.as_str();
    if name == events::JOURNAL {
        return match ev.str_field("phase")? {
            "Negotiating" => Some(Phase::Hello),
            "Draining" => Some(Phase::Drain),
            "Sealing" | "AwaitingReady" => Some(Phase::Begin),
            "Committed" => Some(Phase::Commit),
            "ResumingAfterAbort" => Some(Phase::Abort),
            _ => None,
        };
    }
    let phase = match name {
        n if n == events::HELLO
            || n == events::SPAWN
            || n == events::INCUMBENT_SESSION
            || n == events::SUCCESSOR_HELLO =>
        {
            Phase::Hello
        }
        n if n == events::PREPARE
            || n == events::DRAINED
            || n == events::INCUMBENT_DRAIN
            || n == events::INCUMBENT_DRAINED =>
        {
            Phase::Drain
        }
        n if n == events::SEAL || n == events::INCUMBENT_SEAL => Phase::Seal,
        n if n == events::SEAL_COMPLETE
            || n == events::INCUMBENT_FLOCK_RELEASED
            || n == events::INCUMBENT_SEAL_COMPLETE
            || n == events::SUCCESSOR_BEGIN
            || n == events::SUCCESSOR_FLOCK_TAKEN =>
        {
            Phase::Begin
        }
        n if n == events::READY || n == events::SUCCESSOR_READY || n == events::SUCCESSOR_BOUND => {
            Phase::Ready
        }
        n if n == events::COMMIT || n == events::INCUMBENT_COMMIT => Phase::Commit,
        n if n == events::ABORT
            || n == events::RESUME
            || n == events::INCUMBENT_SEAL_FAILED
            || n == events::SUCCESSOR_ABORTED =>
        {
            Phase::Abort
        }
        n if n == events::RECOVER
            || n == events::INCUMBENT_SUPERVISOR_LOST
            || n == events::INCUMBENT_PROTOCOL_ERROR
            || n == events::SUCCESSOR_SUPERVISOR_LOST
            || n == events::INCUMBENT_FLOCK_REACQUIRED =>
        {
            Phase::Recover
        }
        n if n == events::OUTCOME
            || n == events::INCUMBENT_RESUME
            || n == events::INCUMBENT_SUPERSEDED
            || n == events::INCUMBENT_BOUND =>
        {
            Phase::Idle
        }
        _ => return None,
    };
    Some(phase)
}

/// The phase at `at_ns` of a run whose events are `events` (any order):
/// the phase entered by the last progress event logged at or before
/// `at_ns`, except that along the forward path (hello → drain → seal →
/// begin → ready → commit) it never moves back: processes log
/// concurrently, and the successor's `successor.bound` may be written after
/// the supervisor's `commit`. `Hello` when the supervisor has started but
/// nothing moved yet.
pub fn phase_at<'a>(events: impl IntoIterator<Item = &'a Event>, at_ns: u64) -> Phase {
    let mut progress: Vec<(u64, Phase)> = events
        .into_iter()
        .filter(|e| e.mono_ns <= at_ns)
        .filter_map(|e| phase_entered(e).map(|p| (e.mono_ns, p)))
        .collect();
    progress.sort_by_key(|(t, _)| *t);
    let forward = |p: Phase| (Phase::Hello..=Phase::Commit).contains(&p);
    progress.into_iter().fold(Phase::Hello, |current, (_, p)| {
        if forward(current) && forward(p) {
            current.max(p)
        } else {
            p
        }
    })
}

/// A kill trigger: an event of one role, in the phase it opens. Kills are
/// drawn from this table, so that every phase gets kills in every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TriggerEvent {
    /// The phase this event opens (or marks).
    pub phase: Phase,
    /// Whose log it is in.
    pub logged_by: Role,
    /// The event name.
    pub event: &'static str,
}

const fn t(phase: Phase, logged_by: Role, event: &'static str) -> TriggerEvent {
    TriggerEvent {
        phase,
        logged_by,
        event,
    }
}

/// Every event a kill may wait for. (The idle phase has no trigger event:
/// an idle kill happens before the run's supervisor starts.)
pub const TRIGGERS: &[TriggerEvent] = &[
    t(Phase::Hello, Role::Supervisor, events::HELLO),
    t(Phase::Hello, Role::Supervisor, events::SPAWN),
    t(Phase::Hello, Role::Incumbent, events::INCUMBENT_SESSION),
    t(Phase::Hello, Role::Successor, events::SUCCESSOR_HELLO),
    t(Phase::Drain, Role::Supervisor, events::PREPARE),
    t(Phase::Drain, Role::Incumbent, events::INCUMBENT_DRAIN),
    t(Phase::Drain, Role::Incumbent, events::INCUMBENT_DRAINED),
    t(Phase::Drain, Role::Supervisor, events::DRAINED),
    t(Phase::Seal, Role::Supervisor, events::SEAL),
    t(Phase::Seal, Role::Incumbent, events::INCUMBENT_SEAL),
    t(
        Phase::Begin,
        Role::Incumbent,
        events::INCUMBENT_FLOCK_RELEASED,
    ),
    t(
        Phase::Begin,
        Role::Incumbent,
        events::INCUMBENT_SEAL_COMPLETE,
    ),
    t(Phase::Begin, Role::Supervisor, events::SEAL_COMPLETE),
    t(Phase::Begin, Role::Successor, events::SUCCESSOR_BEGIN),
    t(Phase::Begin, Role::Successor, events::SUCCESSOR_FLOCK_TAKEN),
    t(Phase::Ready, Role::Successor, events::SUCCESSOR_READY),
    t(Phase::Ready, Role::Supervisor, events::READY),
    t(Phase::Ready, Role::Successor, events::SUCCESSOR_BOUND),
    t(Phase::Commit, Role::Supervisor, events::COMMIT),
    t(Phase::Commit, Role::Incumbent, events::INCUMBENT_COMMIT),
    t(Phase::Abort, Role::Supervisor, events::ABORT),
    t(Phase::Abort, Role::Supervisor, events::RESUME),
    t(Phase::Recover, Role::Supervisor, events::RECOVER),
    t(
        Phase::Recover,
        Role::Incumbent,
        events::INCUMBENT_SUPERVISOR_LOST,
    ),
    t(
        Phase::Recover,
        Role::Incumbent,
        events::INCUMBENT_FLOCK_REACQUIRED,
    ),
];

/// The triggers of `phase`.
pub fn triggers_of(phase: Phase) -> Vec<&'static TriggerEvent> {
    TRIGGERS.iter().filter(|t| t.phase == phase).collect()
}

/// The trigger for `event`, if it is one.
pub fn trigger_named(event: &str) -> Option<&'static TriggerEvent> {
    TRIGGERS.iter().find(|t| t.event == event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::parse_log;

    fn ev(t: u64, name: &str, extra: &str) -> Event {
        let line = format!(
            r#"{{"mono_ns":{t},"pid":1,"level":"INFO","event":"{name}","message":""{extra}}}"#
        );
        parse_log("p", format!("{line}\n").as_bytes())
            .events
            .remove(0)
    }

    #[test]
    fn phases_follow_the_last_progress_event() {
        let log = vec![
            ev(10, events::HELLO, ""),
            ev(20, events::JOURNAL, r#","phase":"Negotiating""#),
            ev(30, events::PREPARE, ""),
            ev(40, events::INCUMBENT_SEAL, ""),
            ev(45, "fake_peer.drain", ""),
            ev(50, events::INCUMBENT_FLOCK_RELEASED, ""),
            ev(60, events::SUCCESSOR_READY, ""),
            ev(70, events::COMMIT, ""),
            ev(80, events::OUTCOME, ""),
        ];
        assert_eq!(phase_at(&log, 5), Phase::Hello);
        assert_eq!(phase_at(&log, 25), Phase::Hello);
        assert_eq!(phase_at(&log, 35), Phase::Drain);
        assert_eq!(phase_at(&log, 47), Phase::Seal);
        assert_eq!(phase_at(&log, 55), Phase::Begin);
        assert_eq!(phase_at(&log, 65), Phase::Ready);
        assert_eq!(phase_at(&log, 75), Phase::Commit);
        assert_eq!(phase_at(&log, 99), Phase::Idle);
    }

    #[test]
    fn the_forward_path_never_moves_back() {
        let log = vec![
            ev(10, events::COMMIT, ""),
            ev(20, events::SUCCESSOR_BOUND, ""),
            ev(30, events::OUTCOME, ""),
            ev(40, events::HELLO, ""),
        ];
        assert_eq!(phase_at(&log, 25), Phase::Commit);
        assert_eq!(phase_at(&log, 35), Phase::Idle);
        assert_eq!(phase_at(&log, 45), Phase::Hello);
    }

    #[test]
    fn journal_phases_map_to_protocol_phases() {
        assert_eq!(
            phase_entered(&ev(1, events::JOURNAL, r#","phase":"AwaitingReady""#)),
            Some(Phase::Begin)
        );
        assert_eq!(
            phase_entered(&ev(1, events::JOURNAL, r#","phase":"cleared""#)),
            None
        );
    }

    #[test]
    fn every_phase_but_idle_has_triggers_and_every_trigger_enters_its_phase() {
        for phase in Phase::ALL {
            assert_eq!(
                triggers_of(phase).is_empty(),
                phase == Phase::Idle,
                "{phase:?}"
            );
        }
        for tr in TRIGGERS {
            // Journal-free triggers enter the phase they are filed under.
            assert_eq!(
                phase_entered(&ev(1, tr.event, "")),
                Some(tr.phase),
                "{}",
                tr.event
            );
        }
    }
}
