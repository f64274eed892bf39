//! The stages of a handoff, as the event stream shows them (pure), and the
//! three parties of a run. A [`Stage`] is where the protocol stands, seen
//! from outside; the journal's `handoff::Phase` is what the supervisor
//! recorded, and the two differ.
//!
//! A kill is reported in the stage the handoff was *in* when the signal was
//! sent: the stage entered by the last progress event any process of that
//! supervisor run (its supervisor, incumbent, successor) had logged by then.
//! Kills are triggered by events too ([`TRIGGERS`]), but a trigger names
//! the intent; the stage measured at the kill is what the summary counts.

use handoff::events;
use serde::Serialize;

use crate::eventlog::Event;

/// Where a handoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
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

impl Stage {
    /// Every phase, in protocol order.
    pub const ALL: [Stage; 9] = [
        Stage::Idle,
        Stage::Hello,
        Stage::Drain,
        Stage::Seal,
        Stage::Begin,
        Stage::Ready,
        Stage::Commit,
        Stage::Abort,
        Stage::Recover,
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Idle => "idle",
            Stage::Hello => "hello",
            Stage::Drain => "drain",
            Stage::Seal => "seal",
            Stage::Begin => "begin",
            Stage::Ready => "ready",
            Stage::Commit => "commit",
            Stage::Abort => "abort",
            Stage::Recover => "recover",
        }
    }
}

/// The three parties of a supervisor run (not the library's `Role`, which
/// is how a service process was started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// S: the run's `handoff-supervisor`.
    Supervisor,
    /// O: the process serving when the run started.
    Incumbent,
    /// N: the process the run's supervisor spawned.
    Successor,
}

impl Party {
    /// Every role.
    pub const ALL: [Party; 3] = [Party::Supervisor, Party::Incumbent, Party::Successor];

    /// `S`, `O` or `N`.
    pub fn letter(self) -> &'static str {
        match self {
            Party::Supervisor => "S",
            Party::Incumbent => "O",
            Party::Successor => "N",
        }
    }

    /// `supervisor`, `incumbent`, `successor`.
    pub fn name(self) -> &'static str {
        match self {
            Party::Supervisor => "supervisor",
            Party::Incumbent => "incumbent",
            Party::Successor => "successor",
        }
    }

    /// Whether a process of this role exists in `phase` (the matrix leaves
    /// the other cells out: no supervisor or successor exists while idle).
    pub fn can_be_in(self, phase: Stage) -> bool {
        !(phase == Stage::Idle && self != Party::Incumbent)
    }
}

/// The phase an event enters, if it moves the handoff on.
pub fn stage_entered(ev: &Event) -> Option<Stage> {
    let name = ev.name.as_str();
    if name == events::JOURNAL {
        return match ev.str_field("phase")? {
            "Negotiating" => Some(Stage::Hello),
            "Draining" => Some(Stage::Drain),
            "Sealing" | "AwaitingReady" => Some(Stage::Begin),
            "Committed" => Some(Stage::Commit),
            "ResumingAfterAbort" => Some(Stage::Abort),
            _ => None,
        };
    }
    let phase = match name {
        n if n == events::HELLO
            || n == events::SPAWN
            || n == events::INCUMBENT_SESSION
            || n == events::SUCCESSOR_HELLO =>
        {
            Stage::Hello
        }
        n if n == events::PREPARE
            || n == events::DRAINED
            || n == events::INCUMBENT_DRAIN
            || n == events::INCUMBENT_DRAINED =>
        {
            Stage::Drain
        }
        n if n == events::SEAL || n == events::INCUMBENT_SEAL => Stage::Seal,
        n if n == events::SEAL_COMPLETE
            || n == events::INCUMBENT_FLOCK_RELEASED
            || n == events::INCUMBENT_SEAL_COMPLETE
            || n == events::SUCCESSOR_BEGIN
            || n == events::SUCCESSOR_FLOCK_TAKEN =>
        {
            Stage::Begin
        }
        n if n == events::READY || n == events::SUCCESSOR_READY || n == events::SUCCESSOR_BOUND => {
            Stage::Ready
        }
        n if n == events::COMMIT || n == events::INCUMBENT_COMMIT => Stage::Commit,
        n if n == events::ABORT
            || n == events::RESUME
            || n == events::INCUMBENT_SEAL_FAILED
            || n == events::SUCCESSOR_ABORTED =>
        {
            Stage::Abort
        }
        n if n == events::RECOVER
            || n == events::INCUMBENT_SUPERVISOR_LOST
            || n == events::INCUMBENT_PROTOCOL_ERROR
            || n == events::SUCCESSOR_SUPERVISOR_LOST
            || n == events::INCUMBENT_FLOCK_REACQUIRED =>
        {
            Stage::Recover
        }
        n if n == events::OUTCOME
            || n == events::INCUMBENT_RESUME
            || n == events::INCUMBENT_SUPERSEDED
            || n == events::INCUMBENT_BOUND =>
        {
            Stage::Idle
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
pub fn stage_at<'a>(events: impl IntoIterator<Item = &'a Event>, at_ns: u64) -> Stage {
    let mut progress: Vec<(u64, Stage)> = events
        .into_iter()
        .filter(|e| e.mono_ns <= at_ns)
        .filter_map(|e| stage_entered(e).map(|p| (e.mono_ns, p)))
        .collect();
    progress.sort_by_key(|(t, _)| *t);
    let forward = |p: Stage| (Stage::Hello..=Stage::Commit).contains(&p);
    progress.into_iter().fold(Stage::Hello, |current, (_, p)| {
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
    pub phase: Stage,
    /// Whose log it is in.
    pub logged_by: Party,
    /// The event name.
    pub event: &'static str,
}

const fn t(phase: Stage, logged_by: Party, event: &'static str) -> TriggerEvent {
    TriggerEvent {
        phase,
        logged_by,
        event,
    }
}

/// Every event a kill may wait for. (The idle phase has no trigger event:
/// an idle kill happens before the run's supervisor starts.)
pub const TRIGGERS: &[TriggerEvent] = &[
    t(Stage::Hello, Party::Supervisor, events::HELLO),
    t(Stage::Hello, Party::Supervisor, events::SPAWN),
    t(Stage::Hello, Party::Incumbent, events::INCUMBENT_SESSION),
    t(Stage::Hello, Party::Successor, events::SUCCESSOR_HELLO),
    t(Stage::Drain, Party::Supervisor, events::PREPARE),
    t(Stage::Drain, Party::Incumbent, events::INCUMBENT_DRAIN),
    t(Stage::Drain, Party::Incumbent, events::INCUMBENT_DRAINED),
    t(Stage::Drain, Party::Supervisor, events::DRAINED),
    t(Stage::Seal, Party::Supervisor, events::SEAL),
    t(Stage::Seal, Party::Incumbent, events::INCUMBENT_SEAL),
    t(
        Stage::Begin,
        Party::Incumbent,
        events::INCUMBENT_FLOCK_RELEASED,
    ),
    t(
        Stage::Begin,
        Party::Incumbent,
        events::INCUMBENT_SEAL_COMPLETE,
    ),
    t(Stage::Begin, Party::Supervisor, events::SEAL_COMPLETE),
    t(Stage::Begin, Party::Successor, events::SUCCESSOR_BEGIN),
    t(
        Stage::Begin,
        Party::Successor,
        events::SUCCESSOR_FLOCK_TAKEN,
    ),
    t(Stage::Ready, Party::Successor, events::SUCCESSOR_READY),
    t(Stage::Ready, Party::Supervisor, events::READY),
    t(Stage::Ready, Party::Successor, events::SUCCESSOR_BOUND),
    t(Stage::Commit, Party::Supervisor, events::COMMIT),
    t(Stage::Commit, Party::Incumbent, events::INCUMBENT_COMMIT),
    t(Stage::Abort, Party::Supervisor, events::ABORT),
    t(Stage::Abort, Party::Supervisor, events::RESUME),
    t(Stage::Recover, Party::Supervisor, events::RECOVER),
    t(
        Stage::Recover,
        Party::Incumbent,
        events::INCUMBENT_SUPERVISOR_LOST,
    ),
    t(
        Stage::Recover,
        Party::Incumbent,
        events::INCUMBENT_FLOCK_REACQUIRED,
    ),
];

/// The triggers of `phase`.
pub fn triggers_of(phase: Stage) -> Vec<&'static TriggerEvent> {
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
        assert_eq!(stage_at(&log, 5), Stage::Hello);
        assert_eq!(stage_at(&log, 25), Stage::Hello);
        assert_eq!(stage_at(&log, 35), Stage::Drain);
        assert_eq!(stage_at(&log, 47), Stage::Seal);
        assert_eq!(stage_at(&log, 55), Stage::Begin);
        assert_eq!(stage_at(&log, 65), Stage::Ready);
        assert_eq!(stage_at(&log, 75), Stage::Commit);
        assert_eq!(stage_at(&log, 99), Stage::Idle);
    }

    #[test]
    fn the_forward_path_never_moves_back() {
        let log = vec![
            ev(10, events::COMMIT, ""),
            ev(20, events::SUCCESSOR_BOUND, ""),
            ev(30, events::OUTCOME, ""),
            ev(40, events::HELLO, ""),
        ];
        assert_eq!(stage_at(&log, 25), Stage::Commit);
        assert_eq!(stage_at(&log, 35), Stage::Idle);
        assert_eq!(stage_at(&log, 45), Stage::Hello);
    }

    #[test]
    fn journal_phases_map_to_protocol_phases() {
        assert_eq!(
            stage_entered(&ev(1, events::JOURNAL, r#","phase":"AwaitingReady""#)),
            Some(Stage::Begin)
        );
        assert_eq!(
            stage_entered(&ev(1, events::JOURNAL, r#","phase":"cleared""#)),
            None
        );
    }

    #[test]
    fn every_phase_but_idle_has_triggers_and_every_trigger_enters_its_phase() {
        for phase in Stage::ALL {
            assert_eq!(
                triggers_of(phase).is_empty(),
                phase == Stage::Idle,
                "{phase:?}"
            );
        }
        for tr in TRIGGERS {
            // Journal-free triggers enter the phase they are filed under.
            assert_eq!(
                stage_entered(&ev(1, tr.event, "")),
                Some(tr.phase),
                "{}",
                tr.event
            );
        }
    }
}
