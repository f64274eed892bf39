//! An episode's fault schedule: a value drawn from the episode seed (pure).
//!
//! A schedule has a number of planned supervisor runs (handoffs) and a list
//! of faults, each attached to one run:
//!
//! - a **kill**: `SIGKILL` of the run's supervisor, incumbent or successor,
//!   when a chosen event appears in the logs (see
//!   [`super::stage::TRIGGERS`]), after an extra delay; or of the incumbent
//!   while idle, before the run's supervisor starts;
//! - a **crash point** (`HANDOFF_CRASH_AT`), armed in the process of the
//!   point's side that takes part in the run;
//! - a **misbehaviour** of the fake peer (`FAKE_*`) or the impostor
//!   successor, from the scenario suite's vocabulary.
//!
//! Some faults only make sense with another: a kill in the abort phase
//! needs a run that aborts, a kill of a recovering process needs a dead
//! supervisor. [`draw`] adds that companion fault itself, so the shrinker
//! can still drop either one.
//!
//! The same seed always draws the same schedule ([`super::rng`] is
//! SplitMix64, written out); `--faults i,j` replays a subset by index.

use handoff::crash::{CrashSide, REGISTRY};
use serde::Serialize;

use handoff::crash::points as crash;
use handoff::events;

use super::rng::Rng;
use super::stage::{Party, Stage, TriggerEvent, trigger_named, triggers_of};
use crate::catalog::{Reach, reach_of};

/// Bound on the drift of one drawn fault (redraws when a draw does not fit).
const MAX_REDRAWS: usize = 200;

/// A misbehaviour from the scenario vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misbehaviour {
    /// The incumbent's first seal fails (`FAKE_SEAL_FAIL=once`): abort, it
    /// keeps the flock.
    SealFailsOnce,
    /// The incumbent's drain takes this much longer (`FAKE_DRAIN_MS`).
    SlowDrain {
        /// Extra milliseconds.
        ms: u64,
    },
    /// The incumbent's seal takes this much longer (`FAKE_SEAL_MS`):
    /// heartbeats must keep the supervisor patient.
    SlowSeal {
        /// Extra milliseconds.
        ms: u64,
    },
    /// The successor never sends `Ready` (`FAKE_NEVER_READY=1`): the
    /// supervisor aborts at the deadline.
    NeverReady,
    /// The successor exits before its `Hello` (`FAKE_EXIT_BEFORE_HELLO=1`).
    ExitBeforeHello,
    /// The successor is an impostor whose `Hello` names another pid: the
    /// supervisor must refuse it before anything changes.
    Impostor,
}

impl Misbehaviour {
    /// The process it is set in: the run's incumbent or its successor.
    pub fn host(self) -> Party {
        match self {
            Misbehaviour::SealFailsOnce
            | Misbehaviour::SlowDrain { .. }
            | Misbehaviour::SlowSeal { .. } => Party::Incumbent,
            Misbehaviour::NeverReady | Misbehaviour::ExitBeforeHello | Misbehaviour::Impostor => {
                Party::Successor
            }
        }
    }

    /// Its `FAKE_*` variable, if it is one.
    pub fn env(self) -> Option<(String, String)> {
        let (k, v) = match self {
            Misbehaviour::SealFailsOnce => ("FAKE_SEAL_FAIL", "once".to_string()),
            Misbehaviour::SlowDrain { ms } => ("FAKE_DRAIN_MS", ms.to_string()),
            Misbehaviour::SlowSeal { ms } => ("FAKE_SEAL_MS", ms.to_string()),
            Misbehaviour::NeverReady => ("FAKE_NEVER_READY", "1".to_string()),
            Misbehaviour::ExitBeforeHello => ("FAKE_EXIT_BEFORE_HELLO", "1".to_string()),
            Misbehaviour::Impostor => return None,
        };
        Some((k.to_string(), v))
    }

    fn words(self) -> String {
        match self {
            Misbehaviour::SealFailsOnce => "its first seal fails (FAKE_SEAL_FAIL=once)".into(),
            Misbehaviour::SlowDrain { ms } => {
                format!("its drain takes {ms} ms longer (FAKE_DRAIN_MS={ms})")
            }
            Misbehaviour::SlowSeal { ms } => {
                format!("its seal takes {ms} ms longer (FAKE_SEAL_MS={ms})")
            }
            Misbehaviour::NeverReady => "it never sends Ready (FAKE_NEVER_READY=1)".into(),
            Misbehaviour::ExitBeforeHello => {
                "it exits before its Hello (FAKE_EXIT_BEFORE_HELLO=1)".into()
            }
            Misbehaviour::Impostor => {
                "it is an impostor whose Hello names another pid (HARNESS_IMPOSTOR=1)".into()
            }
        }
    }
}

/// When a kill happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillWhen {
    /// While the service is idle, before the run's supervisor starts
    /// (the delay counts from the end of the previous run).
    Idle,
    /// When the event appears in the log of the role that logs it.
    After(&'static TriggerEvent),
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `SIGKILL` one process.
    Kill {
        /// Whose process.
        victim: Party,
        /// When.
        when: KillWhen,
        /// Extra delay after the trigger, in milliseconds.
        delay_ms: u64,
    },
    /// Arm a crash point (`HANDOFF_CRASH_AT=<point>`, action `exit`).
    Crash {
        /// The registry name.
        point: &'static str,
    },
    /// Ask for a misbehaviour.
    Misbehave(Misbehaviour),
    /// Pause a process at a crash point (`HANDOFF_CRASH_AT=<point>=delay(ms)`):
    /// a process that is slow at one step of the protocol (a GC pause, a
    /// busy disk). It also holds the handoff in one phase long enough for a
    /// kill to land in it.
    Stall {
        /// The registry name.
        point: &'static str,
        /// How long.
        ms: u64,
    },
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Its index in the drawn schedule (stable under [`Schedule::subset`]:
    /// `--faults` names faults by it).
    pub id: usize,
    /// The supervisor run it belongs to (0-based).
    pub run: usize,
    /// What it does.
    pub kind: FaultKind,
}

impl Fault {
    /// The role of the process the fault is set in or aimed at.
    pub fn target(&self) -> Party {
        match self.kind {
            FaultKind::Kill { victim, .. } => victim,
            FaultKind::Crash { point } | FaultKind::Stall { point, .. } => crash_role(point),
            FaultKind::Misbehave(m) => m.host(),
        }
    }

    /// The fault in words.
    pub fn words(&self) -> String {
        let run = self.run + 1;
        match self.kind {
            FaultKind::Kill {
                victim,
                when: KillWhen::Idle,
                delay_ms,
            } => format!(
                "run {run}: SIGKILL the {} while idle, {delay_ms} ms before the run's supervisor \
                 starts",
                victim.name()
            ),
            FaultKind::Kill {
                victim,
                when: KillWhen::After(t),
                delay_ms,
            } => format!(
                "run {run}: SIGKILL the {} {delay_ms} ms after the {} logs {} ({} phase){}",
                victim.name(),
                if t.logged_by == victim {
                    "same process".to_string()
                } else {
                    t.logged_by.name().to_string()
                },
                t.event,
                t.phase.name(),
                if victim == Party::Supervisor && t.event == handoff::events::RECOVER {
                    ": the restarted supervisor, while it recovers the journal"
                } else {
                    ""
                }
            ),
            FaultKind::Crash { point } => format!(
                "run {run}: crash point {point} armed in the {} ({})",
                crash_host_words(point, self.run),
                handoff::crash::lookup(point).map_or("", |p| p.description)
            ),
            FaultKind::Stall { point, ms } => format!(
                "run {run}: the {} stalls {ms} ms at {point} ({})",
                crash_host_words(point, self.run),
                handoff::crash::lookup(point).map_or("", |p| p.description)
            ),
            FaultKind::Misbehave(m) => format!(
                "run {run}: the {}: {}",
                match m.host() {
                    Party::Incumbent => incumbent_host_words(self.run),
                    _ => "successor".to_string(),
                },
                m.words()
            ),
        }
    }
}

fn crash_role(point: &str) -> Party {
    match handoff::crash::lookup(point).map(|p| p.side) {
        Some(CrashSide::Supervisor) => Party::Supervisor,
        Some(CrashSide::Successor) => Party::Successor,
        _ => Party::Incumbent,
    }
}

fn incumbent_host_words(run: usize) -> String {
    if run == 0 {
        "incumbent (the cold-started peer)".to_string()
    } else {
        format!(
            "incumbent (set in the successor of run {run}, which serves in run {})",
            run + 1
        )
    }
}

fn crash_host_words(point: &str, run: usize) -> String {
    match crash_role(point) {
        Party::Supervisor => "supervisor".to_string(),
        Party::Successor => "successor".to_string(),
        Party::Incumbent => incumbent_host_words(run),
    }
}

/// An episode's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// The episode seed it was drawn from.
    pub seed: u64,
    /// Planned supervisor runs (more follow until a clean one commits).
    pub runs: usize,
    /// The faults, by id.
    pub faults: Vec<Fault>,
}

/// What [`draw`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawOptions {
    /// Most faults per episode (0: a clean control run).
    pub max_faults: usize,
    /// The service is the fake peer: `FAKE_*` misbehaviours and `o-`/`n-`
    /// crash points are available (another service may not be built with
    /// crash points, and has no `FAKE_*` knobs).
    pub fake_peer: bool,
}

impl Default for DrawOptions {
    fn default() -> Self {
        Self {
            max_faults: 3,
            fake_peer: true,
        }
    }
}

impl Schedule {
    /// The faults of run `run`.
    pub fn faults_of(&self, run: usize) -> impl Iterator<Item = &Fault> {
        self.faults.iter().filter(move |f| f.run == run)
    }

    /// The misbehaviours of run `run` set in `host`.
    pub fn misbehaviours(&self, run: usize, host: Party) -> Vec<Misbehaviour> {
        self.faults_of(run)
            .filter_map(|f| match f.kind {
                FaultKind::Misbehave(m) if m.host() == host => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The environment that sets, in one process, the faults of each
    /// `(run, party)` it plays: misbehaviours (`FAKE_*`), then one
    /// `HANDOFF_CRASH_AT` with its crash points (`<point>`) and stalls
    /// (`<point>=delay(<ms>)`). A fault that reaches a process through its
    /// environment says how here.
    pub fn env(&self, hosts: &[(usize, Party)]) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut points = Vec::new();
        for &(run, party) in hosts {
            for f in self.faults_of(run).filter(|f| f.target() == party) {
                match f.kind {
                    FaultKind::Misbehave(m) => env.extend(m.env()),
                    FaultKind::Crash { point } => points.push(point.to_string()),
                    FaultKind::Stall { point, ms } => points.push(format!("{point}=delay({ms})")),
                    FaultKind::Kill { .. } => {}
                }
            }
        }
        if !points.is_empty() {
            env.push((handoff::crash::ENV_CRASH_AT.to_string(), points.join(",")));
        }
        env
    }

    /// Only the faults whose ids are in `ids` (the runs stay).
    pub fn subset(&self, ids: &[usize]) -> Schedule {
        Schedule {
            seed: self.seed,
            runs: self.runs,
            faults: self
                .faults
                .iter()
                .filter(|f| ids.contains(&f.id))
                .copied()
                .collect(),
        }
    }

    /// The ids of the faults.
    pub fn ids(&self) -> Vec<usize> {
        self.faults.iter().map(|f| f.id).collect()
    }

    /// The schedule in words, one fault per line.
    pub fn words(&self) -> String {
        let mut out = format!(
            "{} planned handoff{}, {} fault{}",
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.faults.len(),
            if self.faults.len() == 1 { "" } else { "s" }
        );
        if self.faults.is_empty() {
            out.push_str(" (a clean control episode)");
        }
        out.push('\n');
        for f in &self.faults {
            out.push_str(&format!("  [{}] {}\n", f.id, f.words()));
        }
        out
    }
}

/// Draw the schedule of the episode seeded `seed`.
///
/// With `aim`, the first fault is a kill aimed at that role and phase (with
/// the companions the phase needs); the run aims its episodes at every cell
/// in turn ([`aim_of_episode`]), so a run of a few dozen episodes already
/// kills every role in every phase it can be in.
pub fn draw(seed: u64, aim: Option<(Party, Stage)>, options: DrawOptions) -> Schedule {
    let mut rng = Rng::new(seed);
    let mut runs = 1 + rng.weighted(&[50, 35, 15]);
    let wanted = rng.weighted(&[5, 35, 40, 20]).min(options.max_faults);
    let mut faults: Vec<Fault> = Vec::new();
    let mut redraws = 0;
    if let Some(cell) = aim
        && wanted > 0
    {
        let run = rng.below(runs as u64) as usize;
        let budget = options.max_faults;
        if let Some(new) = draw_kill(
            &mut rng,
            run,
            &mut runs,
            budget,
            &faults,
            options,
            Some(cell),
        ) {
            for (run, kind) in new {
                faults.push(Fault {
                    id: faults.len(),
                    run,
                    kind,
                });
            }
        }
    }
    while faults.len() < wanted && redraws < MAX_REDRAWS {
        // A fault's companions may take the episode past `wanted`, never
        // past the maximum.
        let budget = options.max_faults - faults.len();
        let run = rng.below(runs as u64) as usize;
        let drawn = match rng.weighted(&[55, 18, 17, 10]) {
            0 => draw_kill(&mut rng, run, &mut runs, budget, &faults, options, None),
            1 => draw_crash(&mut rng, run, budget, &faults, options),
            2 => draw_misbehaviour(&mut rng, run, &faults, options).map(|m| vec![(run, m)]),
            _ => {
                let phase = *rng.pick(&Stage::ALL[1..]);
                let victim = rng.pick_copy(&Party::ALL);
                draw_stall(&mut rng, run, phase, victim, &faults, options).map(|k| vec![(run, k)])
            }
        };
        match drawn {
            Some(new) => {
                for (run, kind) in new {
                    faults.push(Fault {
                        id: faults.len(),
                        run,
                        kind,
                    });
                }
            }
            None => redraws += 1,
        }
    }
    faults.sort_by_key(|f| (f.run, f.id));
    for (i, f) in faults.iter_mut().enumerate() {
        f.id = i;
    }
    Schedule { seed, runs, faults }
}

fn delay(rng: &mut Rng) -> u64 {
    match rng.weighted(&[45, 25, 30]) {
        0 => rng.range(0, 1),
        1 => rng.range(2, 5),
        _ => rng.range(6, 60),
    }
}

/// The misbehaviour of run `run` that makes it abort, if one is scheduled.
fn abort_cause(faults: &[Fault], run: usize) -> Option<Misbehaviour> {
    faults.iter().find_map(|f| match f.kind {
        FaultKind::Misbehave(m @ (Misbehaviour::NeverReady | Misbehaviour::SealFailsOnce))
            if f.run == run =>
        {
            Some(m)
        }
        _ => None,
    })
}

fn kill(victim: Party, trigger: &'static TriggerEvent, delay_ms: u64) -> FaultKind {
    FaultKind::Kill {
        victim,
        when: KillWhen::After(trigger),
        delay_ms,
    }
}

fn trigger(event: &str) -> &'static TriggerEvent {
    trigger_named(event).expect("every recipe names a trigger of the table")
}

/// A kill of the supervisor in a phase where it has journaled (so the next
/// supervisor recovers a journal) and its peers are mid-handoff, at once.
fn supervisor_kill(rng: &mut Rng, phases: &[Stage]) -> FaultKind {
    let phase = *rng.pick(phases);
    kill(Party::Supervisor, rng.pick_copy(&triggers_of(phase)), 0)
}

/// Every role × phase cell a kill can land in, in a fixed order.
pub fn cells() -> Vec<(Party, Stage)> {
    Party::ALL
        .iter()
        .flat_map(|r| Stage::ALL.iter().map(move |p| (*r, *p)))
        .filter(|(r, p)| r.can_be_in(*p))
        .collect()
}

/// The cell episode `index` aims its first kill at. Episodes go in rounds
/// of one episode per cell; each round visits every cell once, in an order
/// drawn from the round number, so that a shard running every n-th episode
/// (whatever n) also aims at every cell over a few rounds.
pub fn aim_of_episode(index: u64) -> (Party, Stage) {
    let cells = cells();
    let n = cells.len() as u64;
    let mut order: Vec<usize> = (0..cells.len()).collect();
    let mut rng = Rng::new(super::rng::mix((index / n) ^ 0xa1a1_a1a1));
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    cells[order[(index % n) as usize]]
}

/// How likely each phase is picked for a kill. Hello, ready, commit,
/// abort and recover last a few milliseconds or less and often need
/// companions: they are picked more.
const PHASE_WEIGHTS: [u64; 9] = [8, 12, 8, 10, 12, 16, 16, 20, 20];

// The odds `draw_kill` draws from (percent chances; millisecond ranges,
// both ends included). Named so each can be read and tuned; changing one
// changes the schedule every seed draws.

/// A delay that lands a kill inside a stage lasting about a millisecond.
const PROMPT_DELAY_MS: (u64, u64) = (0, 1);
/// An idle kill's delay before the supervisor starts.
const IDLE_DELAY_MS: (u64, u64) = (0, 50);
/// An abort aimed at, with no cause scheduled yet: caused by a successor
/// that never sends `Ready` (else by a seal that fails once). Always for a
/// successor victim, which exists only in the first case.
const ABORT_BY_NEVER_READY: u64 = 60;
/// An abort caused by a never-ready successor: kill the supervisor or the
/// incumbent at the incumbent's resume rather than at the abort.
const KILL_AT_RESUME: u64 = 30;
/// A stall holds the victim inside the abort.
const STALL_IN_ABORT: u64 = 80;
/// How long a stall holds a process at its point.
const STALL_MS: (u64, u64) = (20, 120);
/// The incumbent recovering from a lost supervisor: killed when it notices
/// (`supervisor_lost`) rather than when it has retaken the flock.
const KILL_AT_SUPERVISOR_LOST: u64 = 50;
/// A stall holds the recovering incumbent just after it retook the flock.
const STALL_AT_REACQUIRE: u64 = 70;
/// A stall holds the successor with the flock while its supervisor is dead.
const STALL_SUCCESSOR_HOLDING_FLOCK: u64 = 90;
/// How long that stall holds the successor.
const SUCCESSOR_STALL_MS: (u64, u64) = (30, 120);
/// A supervisor kill aimed at the begin stage lands between the
/// successor's `Begin` and its `Ready`.
const SUPERVISOR_BETWEEN_BEGIN_AND_READY: u64 = 60;
/// That kill follows `successor.begin` (else `successor.flock_taken`).
const AT_SUCCESSOR_BEGIN: u64 = 50;
/// A kill in a short stage (hello, ready, commit, or between `Begin` and
/// `Ready`) comes with a fault that holds the handoff in that stage.
const WIDEN_SHORT: u64 = 85;
/// A kill in a longer stage comes with such a fault.
const WIDEN: u64 = 60;
/// The fault that widens a drain or a seal is the fake peer's slow drain or
/// slow seal (else a stall at a point).
const SLOW_RATHER_THAN_STALL: u64 = 50;
/// How much longer a slow drain or seal takes.
const SLOW_MS: (u64, u64) = (30, 200);

/// A kill, with the companions its phase needs: a cause for an abort, a
/// dead supervisor for a recovery, a stall or a slow drain or seal that
/// holds the handoff in the phase long enough for the kill to land in it.
/// `budget` is how many faults may still be added.
fn draw_kill(
    rng: &mut Rng,
    run: usize,
    runs: &mut usize,
    budget: usize,
    faults: &[Fault],
    options: DrawOptions,
    aim: Option<(Party, Stage)>,
) -> Option<Vec<(usize, FaultKind)>> {
    let (victim, phase) = match aim {
        Some(cell) => cell,
        None => {
            let victim = rng.pick_copy(&Party::ALL);
            let weights: Vec<u64> = Stage::ALL
                .iter()
                .zip(PHASE_WEIGHTS)
                .map(|(p, w)| if victim.can_be_in(*p) { w } else { 0 })
                .collect();
            (victim, Stage::ALL[rng.weighted(&weights)])
        }
    };
    let small = |rng: &mut Rng| rng.range(PROMPT_DELAY_MS.0, PROMPT_DELAY_MS.1);
    let mut out: Vec<(usize, FaultKind)> = Vec::new();
    match phase {
        Stage::Idle => {
            let delay_ms = rng.range(IDLE_DELAY_MS.0, IDLE_DELAY_MS.1);
            out.push((
                run,
                FaultKind::Kill {
                    victim,
                    when: KillWhen::Idle,
                    delay_ms,
                },
            ));
            return Some(out);
        }
        Stage::Abort => {
            // The supervisor aborts (its `handoff.abort`); a stall keeps the
            // victim in the abort: the supervisor before it kills the
            // successor and resumes the incumbent, or the incumbent before it
            // resumes after its failed seal.
            let cause = match abort_cause(faults, run) {
                Some(c) => c,
                None => {
                    if budget < 2 || !options.fake_peer {
                        return None;
                    }
                    let c = if victim == Party::Successor || rng.chance(ABORT_BY_NEVER_READY) {
                        Misbehaviour::NeverReady
                    } else {
                        Misbehaviour::SealFailsOnce
                    };
                    out.push((run, FaultKind::Misbehave(c)));
                    c
                }
            };
            let ev = if cause == Misbehaviour::NeverReady
                && victim != Party::Successor
                && rng.chance(KILL_AT_RESUME)
            {
                events::RESUME
            } else {
                events::ABORT
            };
            let d = small(rng);
            out.push((run, kill(victim, trigger(ev), d)));
            let stall = match cause {
                Misbehaviour::NeverReady => crash::S_AFTER_ABORT_SENT,
                _ => crash::O_AFTER_SEAL_FAILED_SENT,
            };
            if budget > out.len() && !armed_at(faults, run, stall) && rng.chance(STALL_IN_ABORT) {
                let ms = rng.range(STALL_MS.0, STALL_MS.1);
                out.push((run, FaultKind::Stall { point: stall, ms }));
            }
        }
        Stage::Recover => {
            if budget < 2 {
                return None;
            }
            match victim {
                Party::Supervisor => {
                    // The restarted supervisor, killed while it recovers the
                    // journal its predecessor left: that one dies first.
                    let run = run.max(1);
                    *runs = (*runs).max(run + 1);
                    let first = supervisor_kill(rng, &[Stage::Drain, Stage::Seal, Stage::Begin]);
                    out.push((run - 1, first));
                    let d = small(rng);
                    out.push((run, kill(victim, trigger(events::RECOVER), d)));
                    return Some(out);
                }
                Party::Incumbent => {
                    // The incumbent lost its supervisor after the seal: it
                    // retakes the flock (a stall holds it there).
                    let first = supervisor_kill(rng, &[Stage::Seal, Stage::Begin]);
                    out.push((run, first));
                    let ev = if rng.chance(KILL_AT_SUPERVISOR_LOST) {
                        events::INCUMBENT_SUPERVISOR_LOST
                    } else {
                        events::INCUMBENT_FLOCK_REACQUIRED
                    };
                    let d = small(rng);
                    out.push((run, kill(victim, trigger(ev), d)));
                    let stall = crash::O_AFTER_FLOCK_REACQUIRED;
                    if options.fake_peer
                        && budget > out.len()
                        && !armed_at(faults, run, stall)
                        && rng.chance(STALL_AT_REACQUIRE)
                    {
                        let ms = rng.range(STALL_MS.0, STALL_MS.1);
                        out.push((run, FaultKind::Stall { point: stall, ms }));
                    }
                }
                Party::Successor => {
                    // The supervisor dies after Begin, while the successor
                    // holds the flock (a stall keeps it there): the incumbent
                    // recovers, waiting for the flock, and the successor is
                    // killed meanwhile.
                    // (`successor.begin`: the stall point below comes before
                    // `successor.flock_taken` is logged.)
                    let t = trigger(events::SUCCESSOR_BEGIN);
                    out.push((run, kill(Party::Supervisor, t, 0)));
                    let d = small(rng);
                    out.push((
                        run,
                        kill(victim, trigger(events::INCUMBENT_SUPERVISOR_LOST), d),
                    ));
                    let stall = crash::N_AFTER_FLOCK_TAKEN;
                    if options.fake_peer
                        && budget > out.len()
                        && !armed_at(faults, run, stall)
                        && rng.chance(STALL_SUCCESSOR_HOLDING_FLOCK)
                    {
                        let ms = rng.range(SUCCESSOR_STALL_MS.0, SUCCESSOR_STALL_MS.1);
                        out.push((run, FaultKind::Stall { point: stall, ms }));
                    }
                }
            }
        }
        other => {
            // A successor exists from its spawn on.
            let triggers: Vec<&'static TriggerEvent> = triggers_of(other)
                .into_iter()
                .filter(|t| {
                    victim != Party::Successor
                        || !(t.event == events::HELLO || t.event == events::INCUMBENT_SESSION)
                })
                .collect();
            // The supervisor dying between Begin and Ready is the window
            // the design turns on (the successor holds the flock, the
            // incumbent has let go): aim there often, from the successor's
            // events.
            let between_begin_and_ready = other == Stage::Begin
                && victim == Party::Supervisor
                && rng.chance(SUPERVISOR_BETWEEN_BEGIN_AND_READY);
            let t = if between_begin_and_ready {
                trigger(if rng.chance(AT_SUCCESSOR_BEGIN) {
                    events::SUCCESSOR_BEGIN
                } else {
                    events::SUCCESSOR_FLOCK_TAKEN
                })
            } else {
                *rng.pick(&triggers)
            };
            let short = matches!(other, Stage::Hello | Stage::Ready | Stage::Commit);
            // Most phases last about a millisecond: often hold the handoff
            // in the chosen one, with a slow drain or seal (the fake peer's
            // own knobs) or a stall at a point inside the phase.
            let widen_chance = if short || between_begin_and_ready {
                WIDEN_SHORT
            } else {
                WIDEN
            };
            let mut widen = None;
            if budget > 1 && rng.chance(widen_chance) {
                let slow = match other {
                    Stage::Drain if options.fake_peer => Some(Misbehaviour::SlowDrain {
                        ms: rng.range(SLOW_MS.0, SLOW_MS.1),
                    }),
                    Stage::Seal if options.fake_peer => Some(Misbehaviour::SlowSeal {
                        ms: rng.range(SLOW_MS.0, SLOW_MS.1),
                    }),
                    _ => None,
                };
                widen = match slow {
                    Some(m)
                        if rng.chance(SLOW_RATHER_THAN_STALL) && !misbehaves(faults, run, m) =>
                    {
                        Some(FaultKind::Misbehave(m))
                    }
                    // Hold the successor between Begin and Ready, so the
                    // supervisor is surely dead before Ready is written.
                    // (A point the successor reaches after the trigger event:
                    // `n-after-flock-taken` comes before `successor.flock_taken`
                    // is logged.)
                    _ if between_begin_and_ready && options.fake_peer => {
                        let point = if t.event == events::SUCCESSOR_BEGIN {
                            rng.pick_copy(&[crash::N_AFTER_FLOCK_TAKEN, crash::N_AFTER_TEMP_BOUND])
                        } else {
                            crash::N_AFTER_TEMP_BOUND
                        };
                        (!armed_at(faults, run, point)).then(|| FaultKind::Stall {
                            point,
                            ms: rng.range(STALL_MS.0, STALL_MS.1),
                        })
                    }
                    _ => draw_stall(rng, run, other, victim, faults, options),
                };
            }
            let widened_ms = match widen {
                Some(FaultKind::Stall { ms, .. })
                | Some(FaultKind::Misbehave(
                    Misbehaviour::SlowDrain { ms } | Misbehaviour::SlowSeal { ms },
                )) => Some(ms),
                _ => None,
            };
            // The delay lands the kill inside the phase: within the first
            // half of a widened one, at once in a short one.
            let d = match widened_ms {
                _ if between_begin_and_ready || short => small(rng),
                Some(ms) => delay(rng).min(ms / 2),
                None => small(rng),
            };
            // Run 1's incumbent is the cold-started peer: what is set in the
            // incumbent reaches it for sure.
            let run = if widen.as_ref().is_some_and(hosted_in_incumbent) {
                0
            } else {
                run
            };
            out.push((run, kill(victim, t, d)));
            if let Some(w) = widen {
                out.push((run, w));
            }
        }
    }
    // What the incumbent carries only reaches run 1's incumbent for sure:
    // move a recipe that sets something there, and stands alone, to run 1.
    let stands_alone = !faults
        .iter()
        .any(|f| f.run == out.first().map_or(run, |(r, _)| *r));
    if stands_alone && out.iter().any(|(_, k)| hosted_in_incumbent(k)) {
        for (r, _) in out.iter_mut() {
            *r = 0;
        }
    }
    Some(out)
}

/// Whether `point` is already armed (crash or stall) in run `run`.
fn armed_at(faults: &[Fault], run: usize, point: &str) -> bool {
    faults.iter().any(|f| {
        f.run == run
            && matches!(f.kind,
                FaultKind::Crash { point: p } | FaultKind::Stall { point: p, .. } if p == point)
    })
}

/// Whether a misbehaviour of `m`'s kind is already set in run `run`.
fn misbehaves(faults: &[Fault], run: usize, m: Misbehaviour) -> bool {
    faults.iter().any(|f| {
        f.run == run
            && matches!(f.kind, FaultKind::Misbehave(o)
                if std::mem::discriminant(&o) == std::mem::discriminant(&m))
    })
}

/// Points where a pause holds the handoff in `phase` with `victim`
/// alive: while the process at the point pauses, its peers wait for it and
/// log nothing that moves the handoff on. (A supervisor that pauses after
/// sending `SealRequest` does not hold the seal: the incumbent seals on.)
fn stall_points(phase: Stage, victim: Party) -> &'static [&'static str] {
    use handoff::crash::points::*;
    match (phase, victim) {
        (Stage::Idle, _) => &[],
        (Stage::Hello, Party::Successor) => &[
            S_AFTER_SPAWN_SUCCESSOR,
            S_AFTER_N_HELLO,
            S_AFTER_JOURNAL_NEGOTIATING,
        ],
        (Stage::Hello, _) => &[
            S_AFTER_O_HELLO,
            S_AFTER_SPAWN_SUCCESSOR,
            S_AFTER_N_HELLO,
            S_AFTER_JOURNAL_NEGOTIATING,
        ],
        (Stage::Drain, _) => &[
            S_AFTER_PREPARE_SENT,
            O_AFTER_PREPARE_RECV,
            O_AFTER_DRAIN,
            S_AFTER_DRAINED_RECV,
            S_AFTER_JOURNAL_DRAINING,
        ],
        (Stage::Seal, _) => &[O_AFTER_SEAL_REQUEST_RECV, O_AFTER_SEAL],
        (Stage::Begin, _) => &[
            O_AFTER_FLOCK_RELEASED,
            S_AFTER_SEAL_COMPLETE_RECV,
            S_AFTER_JOURNAL_SEALING,
            N_AFTER_BEGIN_RECV,
            N_AFTER_FLOCK_TAKEN,
            N_AFTER_TEMP_BOUND,
        ],
        (Stage::Ready, _) => &[S_AFTER_READY_RECV],
        // The old incumbent exits as soon as it has Commit, unless it pauses.
        (Stage::Commit, Party::Incumbent) => &[O_AFTER_COMMIT_RECV],
        (Stage::Commit, _) => &[S_AFTER_COMMIT_SENT],
        (Stage::Abort, _) => &[S_AFTER_ABORT_SENT, O_AFTER_SEAL_FAILED_SENT],
        (Stage::Recover, _) => &[O_AFTER_FLOCK_REACQUIRED, N_AFTER_FLOCK_TAKEN],
    }
}

/// Whether a widening fault is set in the run's incumbent process (which is
/// only certain in run 1: later runs' incumbents are earlier successors, or
/// restarts).
fn hosted_in_incumbent(kind: &FaultKind) -> bool {
    match kind {
        FaultKind::Misbehave(m) => m.host() == Party::Incumbent,
        FaultKind::Stall { point, .. } | FaultKind::Crash { point } => point.starts_with("o-"),
        FaultKind::Kill { .. } => false,
    }
}

fn draw_stall(
    rng: &mut Rng,
    run: usize,
    phase: Stage,
    victim: Party,
    faults: &[Fault],
    options: DrawOptions,
) -> Option<FaultKind> {
    let candidates: Vec<&'static str> = stall_points(phase, victim)
        .iter()
        .copied()
        .filter(|p| options.fake_peer || p.starts_with("s-"))
        .filter(|p| {
            !faults.iter().any(|f| {
                f.run == run
                    && matches!(f.kind,
                        FaultKind::Crash { point } | FaultKind::Stall { point, .. } if point == *p)
            })
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    Some(FaultKind::Stall {
        point: rng.pick_copy(&candidates),
        ms: rng.range(20, 120),
    })
}

fn draw_crash(
    rng: &mut Rng,
    run: usize,
    budget: usize,
    faults: &[Fault],
    options: DrawOptions,
) -> Option<Vec<(usize, FaultKind)>> {
    let candidates: Vec<&'static str> = REGISTRY
        .iter()
        .filter(|p| options.fake_peer || p.side == CrashSide::Supervisor)
        .map(|p| p.name)
        .collect();
    let point = *rng.pick(&candidates);
    // Only a cold start binds the incumbent's control socket: that point
    // fires in the first incumbent, at the start of the episode.
    let run = if point == handoff::crash::points::O_AFTER_CONTROL_BOUND {
        0
    } else {
        run
    };
    if faults.iter().any(|f| {
        f.run == run
            && matches!(f.kind,
                FaultKind::Crash { point: p } | FaultKind::Stall { point: p, .. } if p == point)
    }) {
        return None;
    }
    let mut out = Vec::new();
    let needed = match reach_of(point) {
        Some(Reach::AbortAfterSeal) => Some(Misbehaviour::NeverReady),
        Some(Reach::SealFailsOnce) => Some(Misbehaviour::SealFailsOnce),
        None => None,
    };
    if let Some(m) = needed
        && !faults
            .iter()
            .any(|f| f.run == run && f.kind == FaultKind::Misbehave(m))
    {
        if budget < 2 || !options.fake_peer {
            return None;
        }
        out.push((run, FaultKind::Misbehave(m)));
    }
    out.push((run, FaultKind::Crash { point }));
    Some(out)
}

fn draw_misbehaviour(
    rng: &mut Rng,
    run: usize,
    faults: &[Fault],
    options: DrawOptions,
) -> Option<FaultKind> {
    let m = match rng.weighted(&[20, 20, 15, 15, 12, 18]) {
        0 => Misbehaviour::SlowDrain {
            ms: rng.range(20, 250),
        },
        1 => Misbehaviour::SlowSeal {
            ms: rng.range(20, 250),
        },
        2 => Misbehaviour::SealFailsOnce,
        3 => Misbehaviour::NeverReady,
        4 => Misbehaviour::ExitBeforeHello,
        _ => Misbehaviour::Impostor,
    };
    if !options.fake_peer && m != Misbehaviour::Impostor {
        return None;
    }
    // One misbehaviour of a kind per process.
    let same_kind =
        |other: &Misbehaviour| std::mem::discriminant(other) == std::mem::discriminant(&m);
    let clash = faults.iter().any(|f| {
        f.run == run && matches!(f.kind, FaultKind::Misbehave(o) if same_kind(&o) || (o.host() == Party::Successor && m.host() == Party::Successor))
    });
    if clash {
        return None;
    }
    Some(FaultKind::Misbehave(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        for seed in 0..200 {
            assert_eq!(
                draw(seed, None, DrawOptions::default()),
                draw(seed, None, DrawOptions::default())
            );
        }
    }

    #[test]
    fn schedules_respect_their_bounds_and_companions() {
        for seed in 0..2_000 {
            let s = draw(seed, None, DrawOptions::default());
            assert!((1..=3).contains(&s.runs), "{s:?}");
            assert!(s.faults.len() <= 3, "{s:?}");
            for (i, f) in s.faults.iter().enumerate() {
                assert_eq!(f.id, i);
                assert!(f.run < s.runs, "{s:?}");
                if let FaultKind::Kill {
                    when: KillWhen::After(t),
                    ..
                } = f.kind
                    && t.phase == Stage::Abort
                {
                    assert!(abort_cause(&s.faults, f.run).is_some(), "{s:?}");
                }
                if let FaultKind::Crash { point } = f.kind
                    && let Some(Reach::SealFailsOnce) = reach_of(point)
                {
                    assert!(s.faults.iter().any(|g| g.run == f.run
                        && g.kind == FaultKind::Misbehave(Misbehaviour::SealFailsOnce)));
                }
            }
            // Words never panic and name every fault.
            assert_eq!(s.words().lines().count(), 1 + s.faults.len());
        }
    }

    #[test]
    fn aimed_episodes_start_with_a_kill_in_their_cell() {
        assert_eq!(cells().len(), 25);
        for index in 0..500 {
            let aim = aim_of_episode(index);
            let s = draw(index, Some(aim), DrawOptions::default());
            if s.faults.is_empty() {
                continue;
            }
            let aimed = s.faults.iter().any(|f| match f.kind {
                FaultKind::Kill { victim, when, .. } => {
                    victim == aim.0
                        && match when {
                            KillWhen::Idle => aim.1 == Stage::Idle,
                            KillWhen::After(t) => t.phase == aim.1,
                        }
                }
                _ => false,
            });
            assert!(aimed, "episode {index} aims at {aim:?}: {s:?}");
        }
    }

    #[test]
    fn every_shard_aims_at_every_cell() {
        let n = cells().len();
        for shards in [1u64, 2, 3, 4, 5, 6, 8, 10] {
            for shard in 0..shards {
                let aimed: std::collections::HashSet<_> = (0..4_000u64)
                    .filter(|k| k % shards == shard)
                    .map(aim_of_episode)
                    .collect();
                assert_eq!(aimed.len(), n, "shard {shard} of {shards}");
            }
        }
    }

    #[test]
    fn no_faults_when_asked_for_none() {
        let options = DrawOptions {
            max_faults: 0,
            fake_peer: true,
        };
        for seed in 0..100 {
            assert!(draw(seed, None, options).faults.is_empty());
        }
    }

    #[test]
    fn another_service_gets_no_fake_peer_faults() {
        let options = DrawOptions {
            max_faults: 3,
            fake_peer: false,
        };
        for seed in 0..1_000 {
            for f in draw(seed, None, options).faults {
                match f.kind {
                    FaultKind::Crash { point } | FaultKind::Stall { point, .. } => {
                        assert!(point.starts_with("s-"), "{point}")
                    }
                    FaultKind::Misbehave(m) => assert_eq!(m, Misbehaviour::Impostor),
                    FaultKind::Kill { .. } => {}
                }
            }
        }
    }

    #[test]
    fn subsets_keep_ids_and_runs() {
        let s = (0..)
            .map(|seed| draw(seed, None, DrawOptions::default()))
            .find(|s| s.faults.len() == 3)
            .unwrap();
        let sub = s.subset(&[0, 2]);
        assert_eq!(sub.runs, s.runs);
        assert_eq!(sub.ids(), vec![0, 2]);
    }
}
