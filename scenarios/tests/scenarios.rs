//! The scenario suite: every scenario of `harness::catalog` is one trial,
//! plus a `coverage` trial. Trials are values: the crash matrix is generated
//! from `handoff::crash::REGISTRY`, so a new crash point gets a trial without
//! anyone writing one.
//!
//! Each trial runs its scenario against real processes, fails with the
//! invariant results, a timeline and one command that reproduces it (the
//! scenario directory with every log is kept), and compares the normalised
//! result with the insta snapshot named after the trial
//! (`tests/snapshots/<trial with :: as __>.snap`).
//!
//! # Coverage
//!
//! "Every declared crash point fired in some trial" is checked two ways, so
//! it holds under `cargo test` (all trials in threads of one process, any
//! `--test-threads`) and under nextest (one process per trial):
//!
//! 1. Always, self-contained: `coverage` runs the reachability sweep (a
//!    plain handoff, an abort after the seal, a failed seal, with every point
//!    armed as a no-op `delay(0)`) and requires every registry point to be
//!    reached, and requires every point to have its `crash::<point>` trial.
//!    Each of those trials fails unless its point fires (exit 99) in the
//!    process it was armed in, so a green run of the matrix covers every
//!    point, in whichever process each trial ran.
//! 2. When the whole crash matrix runs in this process (plain `cargo test`),
//!    `coverage` is listed last, waits for every other trial that runs here
//!    to finish (the trial list and libtest-mimic's own filter say how many),
//!    and requires every point to have fired as a real crash in some trial.
//!    Under nextest, or with a filter that leaves part of the matrix out,
//!    this part reports what it could see and defers to part 1.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use handoff::crash::REGISTRY;
use harness::report::Report;
use harness::scenario::Scenario;
use libtest_mimic::{Arguments, Failed, Trial};

/// Name of the coverage trial.
const COVERAGE: &str = "coverage";
/// Bound on the coverage trial's wait for the others.
const COVERAGE_WAIT: Duration = Duration::from_secs(600);

/// Crash points that fired, with the trials they fired in.
static FIRED: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::new(BTreeMap::new());
/// Trials finished in this process (passed or not).
static FINISHED: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Counts a trial as finished when dropped, even if it panicked.
struct FinishedGuard;

impl Drop for FinishedGuard {
    fn drop(&mut self) {
        let (count, changed) = &FINISHED;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        changed.notify_all();
    }
}

fn snapshot_name(trial: &str) -> String {
    trial.replace("::", "__")
}

fn assert_snapshot(trial: &str, value: &impl serde::Serialize) -> Result<(), String> {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = snapshot_name(trial);
    catch_unwind(AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_json_snapshot!(name.as_str(), value));
    }))
    .map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "the snapshot tests/snapshots/{name}.snap does not match (diff above){}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        )
    })
}

fn run_scenario_trial(scenario: &Scenario) -> Result<(), Failed> {
    let _finished = FinishedGuard;
    let mut report: Report = harness::runner::run(scenario);
    {
        let mut fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
        for point in report.fired_points() {
            fired
                .entry(point)
                .or_default()
                .insert(scenario.name.clone());
        }
    }
    if !report.passed() {
        return Err(harness::timeline::failure_text(&report).into());
    }
    if let Err(mismatch) = assert_snapshot(&scenario.name, &harness::snapshot::view(&report)) {
        let dir = report.keep_dir();
        return Err(format!(
            "{mismatch}\nlogs kept in {}\nreproduce: {}",
            dir.display(),
            scenario.repro_command()
        )
        .into());
    }
    Ok(())
}

/// The coverage trial's snapshot. Which sweep path reaches a point first is
/// a race (a successor killed early by its supervisor may not reach its
/// next point), so only the union is recorded.
#[derive(serde::Serialize)]
struct CoverageView {
    /// Sweep paths run.
    sweep_paths: Vec<String>,
    /// Registry points reached by some path, out of all.
    reached: String,
    /// Points no sweep path reached (must be empty).
    unreachable: Vec<String>,
    /// Points without a `crash::<point>` trial (must be empty).
    without_trial: Vec<String>,
}

fn coverage_trial(
    trial_names: &[String],
    others_running: usize,
    matrix_here: bool,
) -> Result<(), Failed> {
    let repro = "cargo test -p scenarios --test scenarios -- 'coverage' --exact";
    let mut problems = Vec::new();

    // 1. Every point has its trial, and the sweep reaches every point.
    let without_trial: Vec<String> = REGISTRY
        .iter()
        .filter(|p| !trial_names.contains(&format!("crash::{}", p.name)))
        .map(|p| p.name.to_string())
        .collect();
    let mut reached_by_path: Vec<(String, Vec<String>)> = Vec::new();
    let mut reached = BTreeSet::new();
    for scenario in harness::catalog::reachability_sweep() {
        let mut report = harness::runner::run(&scenario);
        if !report.passed() {
            return Err(format!(
                "{}\n(from the coverage trial; reproduce: {repro})",
                harness::timeline::failure_text(&report)
            )
            .into());
        }
        reached.extend(report.observed.reached.iter().cloned());
        reached_by_path.push((
            scenario.name.clone(),
            report.observed.reached.iter().cloned().collect(),
        ));
        report.dir_guard.take();
    }
    let unreachable: Vec<String> = REGISTRY
        .iter()
        .filter(|p| !reached.contains(p.name))
        .map(|p| p.name.to_string())
        .collect();
    if !without_trial.is_empty() {
        problems.push(format!("points without a crash trial: {without_trial:?}"));
    }
    if !unreachable.is_empty() {
        problems.push(format!(
            "points the reachability sweep never reached (add a path to \
             harness::catalog::reachability_sweep, or remove the point): {unreachable:?}"
        ));
    }

    // 2. With the whole matrix in this process: every point really fired.
    if matrix_here {
        let (count, changed) = &FINISHED;
        let deadline = Instant::now() + COVERAGE_WAIT;
        let mut finished = count.lock().unwrap_or_else(|p| p.into_inner());
        while *finished < others_running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                problems.push(format!(
                    "waited {COVERAGE_WAIT:?} for the other {others_running} trials; {} finished",
                    *finished
                ));
                break;
            }
            finished = changed
                .wait_timeout(finished, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(finished);
        let fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
        let never: Vec<&str> = REGISTRY
            .iter()
            .filter(|p| !fired.contains_key(p.name))
            .map(|p| p.name)
            .collect();
        if !never.is_empty() {
            problems.push(format!(
                "declared crash points that fired in no trial: {never:?}"
            ));
        }
    } else {
        eprintln!(
            "coverage: the crash matrix does not run in this process (nextest, or a filter); \
             each crash::<point> trial asserts its own point fired"
        );
    }

    if !problems.is_empty() {
        for (path, points) in &reached_by_path {
            problems.push(format!("{path} reached {points:?}"));
        }
    }
    let view = CoverageView {
        sweep_paths: reached_by_path.iter().map(|(p, _)| p.clone()).collect(),
        reached: format!(
            "{} of {}",
            REGISTRY.iter().filter(|p| reached.contains(p.name)).count(),
            REGISTRY.len()
        ),
        unreachable,
        without_trial,
    };
    if let Err(mismatch) = assert_snapshot(COVERAGE, &view) {
        problems.push(mismatch);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nreproduce: {repro}", problems.join("\n")).into())
    }
}

fn main() {
    // A scenario may spawn this very binary as a lying successor.
    harness::impostor::run_if_requested();
    // insta finds the workspace root by running `cargo metadata` and waiting
    // for it, but this process's only reaper is the harness's (a subreaper
    // reaping every child, see `harness::reaper`), which would steal that
    // child's exit status and make insta fall back to the wrong directory.
    // Name the root up front instead.
    if std::env::var_os("INSTA_WORKSPACE_ROOT").is_none()
        && let Some(root) = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()
    {
        // SAFETY: nothing else runs yet: libtest-mimic has not started its
        // threads, and the reaper starts with the first fixture.
        unsafe { std::env::set_var("INSTA_WORKSPACE_ROOT", root) };
    }
    let args = Arguments::from_args();
    let scenarios = harness::catalog::all();
    let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    let mut trials: Vec<Trial> = scenarios
        .into_iter()
        .map(|s| Trial::test(s.name.clone(), move || run_scenario_trial(&s)))
        .collect();

    // Which trials run in this process, per libtest-mimic's own filter.
    let running: Vec<&str> = trials
        .iter()
        .filter(|t| !args.is_filtered_out(t))
        .map(|t| t.name())
        .collect();
    let others_running = running.len();
    let matrix_here = REGISTRY
        .iter()
        .all(|p| running.contains(&format!("crash::{}", p.name).as_str()));
    let names_for_coverage = names.clone();
    trials.push(Trial::test(COVERAGE, move || {
        coverage_trial(&names_for_coverage, others_running, matrix_here)
    }));
    libtest_mimic::run(&args, trials).exit();
}
