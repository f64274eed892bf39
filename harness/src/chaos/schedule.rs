//! An episode's fault schedule: a value drawn from the episode seed (pure).
//!
//! A schedule has a number of planned supervisor runs (handoffs) and a list
//! of faults, each attached to one run:
//!
//! - a **kill**: `SIGKILL` of the run's supervisor, incumbent or successor,
//!   when a chosen event appears in the logs (see
//!   [`super::phase::TRIGGERS`]), after an extra delay; or of the incumbent
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

use super::phase::{Phase, Role, TriggerEvent, triggers_of};
use super::rng::Rng;
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
    pub fn host(self) -> Role {
        match self {
            Misbehaviour::SealFailsOnce
            | Misbehaviour::SlowDrain { .. }
            | Misbehaviour::SlowSeal { .. } => Role::Incumbent,
            Misbehaviour::NeverReady | Misbehaviour::ExitBeforeHello | Misbehaviour::Impostor => {
                Role::Successor
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

    /// Whether it makes its run abort, or fail, by design.
    pub fn spoils_the_run(self) -> bool {
        !matches!(
            self,
            Misbehaviour::SlowDrain { .. } | Misbehaviour::SlowSeal { .. }
        )
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
        victim: Role,
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
    pub fn target(&self) -> Role {
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
                if victim == Role::Supervisor && t.event == handoff::events::RECOVER {
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
                    Role::Incumbent => incumbent_host_words(self.run),
                    _ => "successor".to_string(),
                },
                m.words()
            ),
        }
    }
}

fn crash_role(point: &str) -> Role {
    match handoff::crash::lookup(point).map(|p| p.side) {
        Some(CrashSide::Supervisor) => Role::Supervisor,
        Some(CrashSide::Successor) => Role::Successor,
        _ => Role::Incumbent,
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
        Role::Supervisor => "supervisor".to_string(),
        Role::Successor => "successor".to_string(),
        Role::Incumbent => incumbent_host_words(run),
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
    pub fn misbehaviours(&self, run: usize, host: Role) -> Vec<Misbehaviour> {
        self.faults_of(run)
            .filter_map(|f| match f.kind {
                FaultKind::Misbehave(m) if m.host() == host => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The `HANDOFF_CRASH_AT` entries of run `run` whose side is `side`:
    /// crash points (`<point>`) and stalls (`<point>=delay(<ms>)`).
    pub fn crash_specs(&self, run: usize, side: Role) -> Vec<String> {
        self.faults_of(run)
            .filter_map(|f| match f.kind {
                FaultKind::Crash { point } if crash_role(point) == side => Some(point.to_string()),
                FaultKind::Stall { point, ms } if crash_role(point) == side => {
                    Some(format!("{point}=delay({ms})"))
                }
                _ => None,
            })
            .collect()
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
pub fn draw(seed: u64, options: DrawOptions) -> Schedule {
    let mut rng = Rng::new(seed);
    let mut runs = 1 + rng.weighted(&[50, 35, 15]);
    let wanted = rng.weighted(&[5, 35, 40, 20]).min(options.max_faults);
    let mut faults: Vec<Fault> = Vec::new();
    let mut redraws = 0;
    while faults.len() < wanted && redraws < MAX_REDRAWS {
        let budget = wanted - faults.len();
        let run = rng.below(runs as u64) as usize;
        let drawn = match rng.weighted(&[60, 18, 12, 10]) {
            0 => draw_kill(&mut rng, run, &mut runs, budget, &faults, options),
            1 => draw_crash(&mut rng, run, budget, &faults, options),
            2 => draw_misbehaviour(&mut rng, run, &faults, options).map(|m| vec![(run, m)]),
            _ => {
                let phase = *rng.pick(&Phase::ALL[1..]);
                draw_stall(&mut rng, run, phase, &faults, options).map(|k| vec![(run, k)])
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
    match rng.weighted(&[35, 35, 30]) {
        0 => 0,
        1 => rng.range(1, 5),
        _ => rng.range(6, 60),
    }
}

fn has_abort_cause(faults: &[Fault], run: usize) -> bool {
    faults.iter().any(|f| {
        f.run == run
            && matches!(
                f.kind,
                FaultKind::Misbehave(Misbehaviour::NeverReady | Misbehaviour::SealFailsOnce)
            )
    })
}

/// A kill of the supervisor in a phase where it has journaled (so the next
/// supervisor recovers a journal) and its peers are mid-handoff.
fn supervisor_kill(rng: &mut Rng, run: usize) -> (usize, FaultKind) {
    let phase = *rng.pick(&[Phase::Drain, Phase::Seal, Phase::Begin]);
    let trigger = *rng.pick(&triggers_of(phase));
    (
        run,
        FaultKind::Kill {
            victim: Role::Supervisor,
            when: KillWhen::After(trigger),
            delay_ms: 0,
        },
    )
}

fn draw_kill(
    rng: &mut Rng,
    mut run: usize,
    runs: &mut usize,
    budget: usize,
    faults: &[Fault],
    options: DrawOptions,
) -> Option<Vec<(usize, FaultKind)>> {
    let victim = *rng.pick(&Role::ALL);
    let phases: Vec<Phase> = Phase::ALL
        .iter()
        .copied()
        .filter(|p| victim.can_be_in(*p))
        .collect();
    let phase = *rng.pick(&phases);
    let mut out = Vec::new();
    let when = match phase {
        Phase::Idle => KillWhen::Idle,
        Phase::Abort => {
            if !has_abort_cause(faults, run) {
                if budget < 2 {
                    return None;
                }
                let cause = if rng.chance(50) {
                    Misbehaviour::NeverReady
                } else {
                    Misbehaviour::SealFailsOnce
                };
                out.push((run, FaultKind::Misbehave(cause)));
            }
            KillWhen::After(*rng.pick(&triggers_of(Phase::Abort)))
        }
        Phase::Recover => {
            if budget < 2 {
                return None;
            }
            // A supervisor is killed while it recovers a journal; an
            // incumbent or a successor while it recovers from a lost
            // supervisor (a successor does not exist yet while a restarted
            // supervisor recovers).
            let candidates: Vec<&TriggerEvent> = triggers_of(Phase::Recover)
                .into_iter()
                .filter(|t| match victim {
                    Role::Supervisor => t.logged_by == Role::Supervisor,
                    Role::Successor => t.logged_by != Role::Supervisor,
                    Role::Incumbent => true,
                })
                .collect();
            let trigger = *rng.pick(&candidates);
            if trigger.logged_by == Role::Supervisor {
                // The restarted supervisor, killed while it recovers the
                // journal its predecessor left: that predecessor dies first.
                if run == 0 {
                    run = 1;
                }
                *runs = (*runs).max(run + 1);
                out.push(supervisor_kill(rng, run - 1));
            } else {
                // A process that lost its supervisor: the supervisor dies
                // first, in the same run.
                out.push(supervisor_kill(rng, run));
            }
            KillWhen::After(trigger)
        }
        other => {
            // The fake peer drains and seals in about a millisecond: a kill
            // aimed there often comes with a slow drain or seal, so that it
            // lands inside the phase rather than after it.
            let widen = match other {
                Phase::Drain => Some(Misbehaviour::SlowDrain {
                    ms: rng.range(30, 200),
                }),
                Phase::Seal => Some(Misbehaviour::SlowSeal {
                    ms: rng.range(30, 200),
                }),
                _ => None,
            };
            if let Some(m) = widen
                && options.fake_peer
                && budget >= 2
                && rng.chance(50)
                && !faults.iter().any(|f| {
                    f.run == run
                        && matches!(f.kind, FaultKind::Misbehave(o)
                            if std::mem::discriminant(&o) == std::mem::discriminant(&m))
                })
            {
                out.push((run, FaultKind::Misbehave(m)));
            }
            KillWhen::After(*rng.pick(&triggers_of(other)))
        }
    };
    // Most phases last about a millisecond: often hold the handoff in the
    // chosen one with a stall, so that the kill lands inside it.
    let budget_left = budget.saturating_sub(out.len());
    if phase != Phase::Idle
        && out.len() < 2
        && budget_left >= 2
        && !out.iter().any(|(_, k)| matches!(k, FaultKind::Misbehave(_)))
        && rng.chance(50)
        && let Some(stall) = draw_stall(rng, run, phase, faults, options)
    {
        out.push((run, stall));
    }
    let delay_ms = match when {
        KillWhen::Idle => rng.range(0, 50),
        // Aborts and recoveries take about a millisecond.
        KillWhen::After(t) if matches!(t.phase, Phase::Abort | Phase::Recover | Phase::Commit) => {
            rng.range(0, 1)
        }
        KillWhen::After(_) => delay(rng),
    };
    out.push((
        run,
        FaultKind::Kill {
            victim,
            when,
            delay_ms,
        },
    ));
    Some(out)
}

/// Points where a pause holds the handoff in each phase (the process that
/// stalls has logged the event that opened the phase, or its peer has).
fn stall_points(phase: Phase) -> &'static [&'static str] {
    use handoff::crash::points::*;
    match phase {
        Phase::Idle => &[],
        Phase::Hello => &[
            S_AFTER_O_HELLO,
            S_AFTER_SPAWN_SUCCESSOR,
            S_AFTER_N_HELLO,
            S_AFTER_JOURNAL_NEGOTIATING,
            O_AFTER_HELLO_ACK_RECV,
            N_AFTER_HELLO_ACK_RECV,
        ],
        Phase::Drain => &[
            S_AFTER_PREPARE_SENT,
            O_AFTER_PREPARE_RECV,
            O_AFTER_DRAIN,
            S_AFTER_DRAINED_RECV,
            S_AFTER_JOURNAL_DRAINING,
        ],
        Phase::Seal => &[S_AFTER_SEAL_REQUEST_SENT, O_AFTER_SEAL_REQUEST_RECV, O_AFTER_SEAL],
        Phase::Begin => &[
            O_AFTER_FLOCK_RELEASED,
            S_AFTER_SEAL_COMPLETE_RECV,
            S_AFTER_JOURNAL_SEALING,
            N_AFTER_BEGIN_RECV,
            N_AFTER_FLOCK_TAKEN,
            N_AFTER_TEMP_BOUND,
        ],
        Phase::Ready => &[S_AFTER_READY_RECV],
        Phase::Commit => &[S_AFTER_COMMIT_SENT, O_AFTER_COMMIT_RECV],
        Phase::Abort => &[S_AFTER_ABORT_SENT, O_AFTER_SEAL_FAILED_SENT],
        Phase::Recover => &[O_AFTER_FLOCK_REACQUIRED, N_AFTER_FLOCK_TAKEN],
    }
}

fn draw_stall(
    rng: &mut Rng,
    run: usize,
    phase: Phase,
    faults: &[Fault],
    options: DrawOptions,
) -> Option<FaultKind> {
    let candidates: Vec<&'static str> = stall_points(phase)
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
        point: *rng.pick(&candidates),
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
    let m = match rng.weighted(&[25, 25, 15, 15, 10, 10]) {
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
        f.run == run && matches!(f.kind, FaultKind::Misbehave(o) if same_kind(&o) || (o.host() == Role::Successor && m.host() == Role::Successor))
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
                draw(seed, DrawOptions::default()),
                draw(seed, DrawOptions::default())
            );
        }
    }

    #[test]
    fn schedules_respect_their_bounds_and_companions() {
        for seed in 0..2_000 {
            let s = draw(seed, DrawOptions::default());
            assert!((1..=3).contains(&s.runs), "{s:?}");
            assert!(s.faults.len() <= 3, "{s:?}");
            for (i, f) in s.faults.iter().enumerate() {
                assert_eq!(f.id, i);
                assert!(f.run < s.runs, "{s:?}");
                if let FaultKind::Kill {
                    when: KillWhen::After(t),
                    ..
                } = f.kind
                    && t.phase == Phase::Abort
                {
                    assert!(has_abort_cause(&s.faults, f.run), "{s:?}");
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
    fn no_faults_when_asked_for_none() {
        let options = DrawOptions {
            max_faults: 0,
            fake_peer: true,
        };
        for seed in 0..100 {
            assert!(draw(seed, options).faults.is_empty());
        }
    }

    #[test]
    fn another_service_gets_no_fake_peer_faults() {
        let options = DrawOptions {
            max_faults: 3,
            fake_peer: false,
        };
        for seed in 0..1_000 {
            for f in draw(seed, options).faults {
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
            .map(|seed| draw(seed, DrawOptions::default()))
            .find(|s| s.faults.len() == 3)
            .unwrap();
        let sub = s.subset(&[0, 2]);
        assert_eq!(sub.runs, s.runs);
        assert_eq!(sub.ids(), vec![0, 2]);
    }
}
