//! A deterministic explorer: the library's supervisor and incumbent
//! machines ([`handoff::machine`], the code `perform_handoff` and
//! `Incumbent::serve` run) and a model of the successor in a modelled
//! world ([`world`]), driven through every interleaving of
//! deliveries, timeouts and faults up to a bound, then by a seeded random
//! walk beyond it, with the invariants checked after every step.
//!
//! A run is a list of choices, one per step, among the moves the world
//! offers (index 0: the next process in a fixed order makes progress).
//! The bound counts the choices that are not 0 (a fault, or a delivery out
//! of the default order): with bound 2, every run with at most two such
//! choices anywhere is explored (context bounding). A state already
//! explored with at least as much bound left is not explored again.
//!
//! A failing run is shrunk (each non-default choice set back to 0 or
//! dropped while the run still fails), printed as an S/O/N timeline, and
//! named by a replay string: `harness explore --replay 12:5,20:3` (step
//! 12 took move 5, step 20 move 3, every other step move 0).

pub mod world;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use world::{ModelDefects, Move, World};

/// The most steps one run may take before it counts as not settling.
pub const MAX_STEPS: usize = 300;

/// What to explore.
#[derive(Debug, Clone)]
pub struct Config {
    /// Non-default choices per run explored exhaustively.
    pub bound: usize,
    /// How long to walk randomly once every run within the bound was
    /// explored (that part always completes), counted from the start.
    pub budget: Duration,
    /// Seed of the random walk beyond the bound.
    pub seed: u64,
    /// At most this many faults per random run.
    pub random_faults: usize,
    /// Deliberate defects of the incumbent and successor models.
    pub defects: ModelDefects,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bound: 2,
            budget: Duration::from_secs(3),
            seed: 1,
            random_faults: 4,
            defects: ModelDefects::default(),
        }
    }
}

/// A failing run, shrunk.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The broken invariant.
    pub violation: String,
    /// The run's choices (see [`replay_string`]).
    pub choices: Vec<usize>,
    /// The S/O/N timeline of the shrunk run.
    pub timeline: String,
}

impl Failure {
    /// The one-line replay of this failure.
    pub fn replay(&self) -> String {
        replay_string(&self.choices)
    }
}

/// What an exploration covered.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The bound explored exhaustively.
    pub bound: usize,
    /// Whether every run within the bound was explored in the budget.
    pub exhaustive_complete: bool,
    /// Runs (interleavings) explored within the bound.
    pub exhaustive_runs: u64,
    /// Time spent on the runs within the bound.
    pub exhaustive_elapsed: Duration,
    /// Random runs beyond the bound.
    pub random_runs: u64,
    /// Distinct world states reached.
    pub distinct_states: usize,
    /// Time spent.
    pub elapsed: Duration,
    /// Time to the first failing run, when one was found.
    pub time_to_failure: Option<Duration>,
    /// The first failure, shrunk.
    pub failure: Option<Failure>,
}

impl Summary {
    /// The figures, one per line.
    pub fn text(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let runs = self.exhaustive_runs + self.random_runs;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bound: every run with at most {} non-default choices (faults or reorderings){}",
            self.bound,
            if self.exhaustive_complete {
                ", explored completely"
            } else {
                ", stopped at the first failure"
            }
        );
        let _ = writeln!(
            s,
            "runs: {} within the bound (in {:.3} s), {} random beyond it, {:.0} per second",
            self.exhaustive_runs,
            self.exhaustive_elapsed.as_secs_f64(),
            self.random_runs,
            runs as f64 / secs
        );
        let _ = writeln!(
            s,
            "distinct states: {} ({:.0} per second)",
            self.distinct_states,
            self.distinct_states as f64 / secs
        );
        let _ = writeln!(s, "elapsed: {:.3} s", self.elapsed.as_secs_f64());
        if let (Some(f), Some(t)) = (&self.failure, self.time_to_failure) {
            let _ = writeln!(
                s,
                "VIOLATION after {:.3} s: {}",
                t.as_secs_f64(),
                f.violation
            );
            let _ = writeln!(s, "{}", f.timeline);
            let _ = writeln!(s, "replay: harness explore --replay {}", f.replay());
        }
        s
    }
}

/// Chooses a move past the end of a run's fixed choices.
type Pick<'a> = &'a mut dyn FnMut(&[Move]) -> usize;

/// One run's record.
struct Run {
    /// Per step: the state's hash and how many moves it offered.
    steps: Vec<(u64, usize)>,
    /// The choice taken at each step.
    taken: Vec<usize>,
    violation: Option<String>,
    world: World,
}

fn hash_key(w: &World) -> u64 {
    let mut h = DefaultHasher::new();
    w.state_key().hash(&mut h);
    h.finish()
}

/// Run one sequence of choices (missing ones are 0, out-of-range ones
/// fall back to 0); `pick` chooses past the end of `choices` instead when
/// given.
fn run(choices: &[usize], defects: ModelDefects, mut pick: Option<Pick<'_>>) -> Run {
    let mut world = World::new(defects);
    let mut steps = Vec::new();
    let mut taken = Vec::new();
    let mut violation = None;
    for i in 0.. {
        if world.settled() {
            violation = world.check_settled();
            break;
        }
        if i >= MAX_STEPS {
            violation = Some(format!("the run did not settle in {MAX_STEPS} steps"));
            break;
        }
        let moves = world.moves();
        let c = match (choices.get(i), pick.as_mut()) {
            (Some(&c), _) => c,
            (None, Some(p)) => p(&moves),
            (None, None) => 0,
        };
        let c = if c < moves.len() { c } else { 0 };
        steps.push((hash_key(&world), moves.len()));
        taken.push(c);
        world.apply(&moves[c]);
        if let Some(v) = world.check() {
            violation = Some(v);
            break;
        }
    }
    Run {
        steps,
        taken,
        violation,
        world,
    }
}

/// Explore: every run within the bound, then random runs until the budget
/// runs out; stop at the first failing run.
pub fn explore(config: &Config) -> Summary {
    let started = Instant::now();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut summary = Summary {
        bound: config.bound,
        exhaustive_complete: false,
        exhaustive_runs: 0,
        exhaustive_elapsed: Duration::ZERO,
        random_runs: 0,
        distinct_states: 0,
        elapsed: Duration::ZERO,
        time_to_failure: None,
        failure: None,
    };
    let deadline = started + config.budget;
    // Depth-first over prefixes: (choices, bound left).
    let mut stack: Vec<(Vec<usize>, usize)> = vec![(Vec::new(), config.bound)];
    let mut failing: Option<Vec<usize>> = None;
    // The bounded part always runs to its end, whatever the budget, so
    // what it covers does not depend on the machine's speed.
    while let Some((prefix, left)) = stack.pop() {
        let r = run(&prefix, config.defects, None);
        summary.exhaustive_runs += 1;
        for (h, _) in &r.steps {
            seen.entry(*h).or_insert(0);
        }
        if r.violation.is_some() {
            failing = Some(r.taken);
            break;
        }
        if left == 0 {
            continue;
        }
        for (j, &(h, n)) in r.steps.iter().enumerate().skip(prefix.len()).rev() {
            let explored = seen.get(&h).copied().unwrap_or(0);
            if explored >= left && explored > 0 {
                continue;
            }
            seen.insert(h, left);
            for c in 1..n {
                let mut next = r.taken[..j].to_vec();
                next.push(c);
                stack.push((next, left - 1));
            }
        }
    }
    summary.exhaustive_elapsed = started.elapsed();
    if failing.is_none() && stack.is_empty() {
        summary.exhaustive_complete = true;
        let mut rng = StdRng::seed_from_u64(config.seed);
        while Instant::now() < deadline {
            let mut faults = 0;
            let max_faults = config.random_faults;
            let mut pick = |moves: &[Move]| -> usize {
                let normal = moves.iter().filter(|m| !m.is_fault()).count();
                let fault_ok = faults < max_faults && normal < moves.len();
                if fault_ok && rng.random_bool(0.05) {
                    faults += 1;
                    rng.random_range(normal..moves.len())
                } else if normal > 1 {
                    rng.random_range(0..normal)
                } else {
                    0
                }
            };
            let r = run(&[], config.defects, Some(&mut pick));
            summary.random_runs += 1;
            for (h, _) in &r.steps {
                seen.entry(*h).or_insert(0);
            }
            if r.violation.is_some() {
                failing = Some(r.taken);
                break;
            }
        }
    }
    if let Some(choices) = failing {
        summary.time_to_failure = Some(started.elapsed());
        summary.failure = Some(shrink(choices, config.defects));
    }
    summary.distinct_states = seen.len();
    summary.elapsed = started.elapsed();
    summary
}

/// Shrink a failing run: set each non-default choice back to 0, or drop
/// it, while the run still fails; then describe it.
pub fn shrink(mut choices: Vec<usize>, defects: ModelDefects) -> Failure {
    let fails = |c: &[usize]| run(c, defects, None).violation.is_some();
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..choices.len()).rev() {
            if choices[i] == 0 {
                continue;
            }
            let mut dropped = choices.clone();
            dropped.remove(i);
            if fails(&dropped) {
                choices = dropped;
                changed = true;
                continue;
            }
            let mut zeroed = choices.clone();
            zeroed[i] = 0;
            if fails(&zeroed) {
                choices = zeroed;
                changed = true;
            }
        }
    }
    while choices.last() == Some(&0) {
        choices.pop();
    }
    describe(&choices, defects)
}

/// Replay `choices` and describe the run.
pub fn describe(choices: &[usize], defects: ModelDefects) -> Failure {
    let r = run(choices, defects, None);
    Failure {
        violation: r.violation.unwrap_or_else(|| "none: the run passes".into()),
        choices: choices.to_vec(),
        timeline: timeline(&r.world),
    }
}

/// The S/O/N timeline of a run: one line per event, in the column of the
/// role it happened to.
pub fn timeline(w: &World) -> String {
    const WIDTH: usize = 34;
    let mut s = format!(
        "{:>6}  {:<WIDTH$}{:<WIDTH$}{}\n",
        "ms", "S (supervisor)", "O (incumbent)", "N (successor)"
    );
    for (ms, who, what) in &w.trace {
        let col = match who {
            'S' => 0,
            'O' => 1,
            _ => 2,
        };
        let _ = writeln!(s, "{ms:>6}  {}{what}", " ".repeat(col * WIDTH));
    }
    s
}

/// The replay string of `choices`: `step:choice` for each non-default
/// choice, comma-separated (`-` for none).
pub fn replay_string(choices: &[usize]) -> String {
    let parts: Vec<String> = choices
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 0)
        .map(|(i, c)| format!("{i}:{c}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Parse a replay string (see [`replay_string`]).
pub fn parse_replay(s: &str) -> Result<Vec<usize>, String> {
    let mut choices = Vec::new();
    if s.trim() == "-" {
        return Ok(choices);
    }
    for part in s.split(',') {
        let (i, c) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not step:choice"))?;
        let i: usize = i.trim().parse().map_err(|e| format!("step {i:?}: {e}"))?;
        let c: usize = c.trim().parse().map_err(|e| format!("choice {c:?}: {e}"))?;
        if i >= MAX_STEPS {
            return Err(format!("step {i} is past the {MAX_STEPS}-step bound"));
        }
        if choices.len() <= i {
            choices.resize(i + 1, 0);
        }
        choices[i] = c;
    }
    Ok(choices)
}
