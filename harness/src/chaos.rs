//! `harness chaos`: random kills at random phases under live traffic,
//! reproducible by seed.
//!
//! A run is a list of *episodes*. Episode K of the run seeded S has its own
//! seed, [`rng::episode_seed`]`(S, K)`, from which its fault schedule is
//! drawn ([`schedule::draw`]); so `--seed S --episode K` replays it, whatever
//! else the run did. An episode ([`episode::run`]) cold-starts the service,
//! puts live traffic on it, runs one to three handoffs while its faults land
//! (SIGKILLs of the supervisor, incumbent or successor when a chosen event
//! appears in the logs, plus a delay; crash points; misbehaviours), lets the
//! service settle (restarting it when nothing serves), then requires a clean
//! handoff to commit and checks every invariant of DESIGN.md section 9.
//!
//! The run stops after `--episodes` episodes or `--duration`, whichever
//! comes first (defaults: [`DEFAULT_EPISODES`] or [`DEFAULT_DURATION`]), and
//! at the first failing episode unless `--keep-going`. A failing episode
//! prints its seed, its schedule in words, the violations, an S/O/N
//! timeline with the kills marked, where its logs were copied, and the one
//! command that replays it; when it had several faults, it is shrunk
//! (faults dropped one at a time while it still fails) and the smallest
//! failing schedule is printed with its own replay command (`--faults`).
//!
//! `--service <binary>` runs the same chaos against another service built
//! on the library; `--workload <command>` plugs in its data checks (the
//! contract is in [`service`]). `--shard i/n` runs the episodes K with
//! `K mod n = i - 1`, so n machines with the same seed split one run.
//!
//! Exit status: 0 when every episode passed, 1 on any violation, 2 when the
//! command line is wrong or the binaries cannot be built.

pub mod checks;
pub mod episode;
pub mod render;
pub mod rng;
pub mod schedule;
pub mod service;
pub mod stage;
pub mod summary;
pub mod tail;
pub mod traffic;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use self::episode::{EpisodeConfig, EpisodeResult};
use self::schedule::{DrawOptions, Schedule};
use self::service::{CustomService, ServiceMode};
use self::summary::Summary;
use crate::scenario::Timeouts;

/// Default episode limit.
pub const DEFAULT_EPISODES: u64 = 200;
/// Default time budget.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Default bound on one request of the reader, retries included, ms: well
/// past a handoff's window without an acceptor (p99 around 0.1 s here) and
/// a restart after a kill, well under the reader's stall bound (10 s).
pub const DEFAULT_READER_RETRY_DEADLINE_MS: u64 = 2_000;
/// Bound on the episodes one shrink may run.
const MAX_SHRINK_RUNS: usize = 16;
/// Attempts per candidate schedule: a failure that needs a race to go one
/// way may pass once and fail the next time.
const SHRINK_ATTEMPTS: usize = 2;
/// Interval of the plain progress lines when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `harness chaos` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Run seed, decimal or 0x-hex. Default: drawn from the clock and
    /// printed first.
    #[arg(long)]
    pub seed: Option<String>,
    /// Stop after this many episodes...
    #[arg(long, default_value_t = DEFAULT_EPISODES)]
    pub episodes: u64,
    /// ...or after this much time, whichever comes first (`60s`, `2m`,
    /// `500ms`, or seconds). An episode in flight finishes.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run only episode K of the run (with --seed): replays it, and prints
    /// its timeline even when it passes.
    #[arg(long, value_name = "K")]
    pub episode: Option<u64>,
    /// Run shard I of N (1-based): the episodes K with K mod N = I - 1.
    #[arg(long, value_name = "I/N", default_value = "1/1", value_parser = parse_shard)]
    pub shard: Shard,
    /// Keep only these faults of each schedule, by id (what a shrunk
    /// schedule's replay command passes).
    #[arg(long, value_name = "IDS", value_parser = parse_fault_ids)]
    pub faults: Option<FaultIds>,
    /// Most faults per episode (0: clean control episodes, which must
    /// always pass).
    #[arg(long, default_value_t = 3)]
    pub max_faults: usize,
    /// The reader's bound on one request, retries included, in ms: a request
    /// whose connection ends under it (end of stream, reset) is sent again on
    /// a fresh connection until then; what is not answered by then counts as
    /// a failed request.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_READER_RETRY_DEADLINE_MS)]
    pub reader_retry_deadline_ms: u64,
    /// Write the report (settings, summary, every episode) as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// The service under test (default: the fake peer). Any binary built on
    /// the library: it gets the listeners through LISTEN_FDS, the handoff
    /// environment, and the arguments of --service-args.
    #[arg(long, value_name = "BINARY")]
    pub service: Option<PathBuf>,
    /// The service's arguments, split on whitespace; `{data_dir}` and
    /// `{control_socket}` are replaced.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "--data-dir {data_dir} --control-socket {control_socket}",
        allow_hyphen_values = true
    )]
    pub service_args: String,
    /// A listener the service gets (repeatable, in FD order; with --service).
    #[arg(long = "listener", value_name = "NAME", default_value = "kv")]
    pub listeners: Vec<String>,
    /// Data checks: a program and its arguments (split on whitespace), run
    /// in a write phase during each episode and a verify phase after it
    /// (the contract is in `harness::chaos::service`: CHAOS_PHASE,
    /// CHAOS_ADDR, CHAOS_STATE_DIR, SIGTERM, exit 0). Example:
    /// ci/workloads/kv-line-protocol.sh.
    #[arg(long, value_name = "COMMAND")]
    pub workload: Option<String>,
    /// Where a failing episode's logs and texts are copied.
    #[arg(long, value_name = "DIR", default_value = "chaos-artifacts")]
    pub artifacts: PathBuf,
    /// Go on after a failing episode (default: stop at the first).
    #[arg(long)]
    pub keep_going: bool,
    /// Do not shrink failing schedules.
    #[arg(long)]
    pub no_shrink: bool,
}

/// Fault ids: `0,2`, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultIds(pub Vec<usize>);

/// Parse `--faults`: comma-separated ids, or `none`.
pub fn parse_fault_ids(text: &str) -> Result<FaultIds, String> {
    if text.trim() == "none" {
        return Ok(FaultIds(vec![]));
    }
    text.split(',')
        .map(|t| {
            t.trim()
                .parse()
                .map_err(|_| format!("{text:?}: expected fault ids such as 0,2 (or none)"))
        })
        .collect::<Result<_, _>>()
        .map(FaultIds)
}

/// `i/n`, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// Which (1..=n).
    pub index: u64,
    /// Of how many.
    pub count: u64,
}

impl Shard {
    /// Whether episode `k` belongs to this shard.
    pub fn owns(self, k: u64) -> bool {
        k % self.count == self.index - 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parse `i/n` with `1 <= i <= n`.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected I/N, e.g. 2/4"))?;
    let index: u64 = i
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: I is not a number"))?;
    let count: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: N is not a number"))?;
    if count == 0 || index == 0 || index > count {
        return Err(format!("{text:?}: need 1 <= I <= N"));
    }
    Ok(Shard { index, count })
}

/// Parse `90`, `90s`, `2m`, `1h`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let v: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 60s, 2m, 500ms"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(v)),
        "ms" => Ok(Duration::from_millis(v)),
        "m" | "min" => Ok(Duration::from_secs(v * 60)),
        "h" => Ok(Duration::from_secs(v * 3600)),
        other => Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,{}".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What a run of the command decided from its arguments.
struct Plan {
    seed: u64,
    service: ServiceMode,
    options: DrawOptions,
    timeouts: Timeouts,
}

impl Plan {
    fn from_args(args: &ChaosArgs) -> Result<Self, String> {
        let seed = match &args.seed {
            Some(s) => rng::parse_seed(s)?,
            None => rng::fresh_seed(),
        };
        let service = match &args.service {
            None => ServiceMode::FakePeer {
                workload: args.workload.clone(),
            },
            Some(program) => {
                let program = std::fs::canonicalize(program)
                    .map_err(|e| format!("--service {}: {e}", program.display()))?;
                ServiceMode::Custom(CustomService {
                    program,
                    args: args
                        .service_args
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                    listeners: args.listeners.clone(),
                    workload: args.workload.clone(),
                })
            }
        };
        if args.listeners.is_empty() {
            return Err("--listener: at least one".into());
        }
        Ok(Self {
            seed,
            options: DrawOptions {
                max_faults: args.max_faults,
                fake_peer: service.is_fake_peer(),
            },
            service,
            timeouts: Timeouts::default(),
        })
    }

    /// The options that change what an episode does, as flags.
    fn flags(&self, args: &ChaosArgs) -> String {
        let mut out = String::new();
        if args.max_faults != 3 {
            out.push_str(&format!(" --max-faults {}", args.max_faults));
        }
        if args.reader_retry_deadline_ms != DEFAULT_READER_RETRY_DEADLINE_MS {
            out.push_str(&format!(
                " --reader-retry-deadline-ms {}",
                args.reader_retry_deadline_ms
            ));
        }
        if let ServiceMode::Custom(c) = &self.service {
            out.push_str(&format!(
                " --service {}",
                quote(&c.program.to_string_lossy())
            ));
            if args.service_args != "--data-dir {data_dir} --control-socket {control_socket}" {
                out.push_str(&format!(" --service-args {}", quote(&args.service_args)));
            }
            for l in &args.listeners {
                out.push_str(&format!(" --listener {}", quote(l)));
            }
        }
        if let Some(w) = &args.workload {
            out.push_str(&format!(" --workload {}", quote(w)));
        }
        out
    }

    fn replay(&self, args: &ChaosArgs, k: u64, faults: Option<&[usize]>) -> String {
        let mut cmd = format!(
            "cargo run --release -p harness -- chaos --seed {:#x} --episode {k}{}",
            self.seed,
            self.flags(args)
        );
        if let Some(ids) = faults {
            cmd.push_str(&format!(
                " --faults {}",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ));
        }
        cmd
    }

    fn schedule(&self, k: u64, faults: Option<&[usize]>) -> Schedule {
        let s = schedule::draw(
            rng::episode_seed(self.seed, k),
            Some(schedule::aim_of_episode(k)),
            self.options,
        );
        match faults {
            Some(ids) => s.subset(ids),
            None => s,
        }
    }
}

/// One episode in the JSON report.
#[derive(Debug, Serialize)]
struct EpisodeJson<'a> {
    index: u64,
    seed: String,
    passed: bool,
    duration_s: f64,
    schedule: &'a Schedule,
    schedule_words: String,
    runs: &'a [crate::evidence::RunRecord],
    kills: &'a [crate::evidence::KillRecord],
    kills_not_sent: &'a [crate::evidence::MissedKill],
    restarts: &'a [crate::evidence::Restart],
    violations: Vec<String>,
    replay: String,
    artifacts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shrunk_to: Option<ShrunkJson>,
}

#[derive(Debug, Clone, Serialize)]
struct ShrunkJson {
    faults: Vec<usize>,
    schedule_words: String,
    replay: String,
    artifacts: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    run_seed: String,
    shard: Shard,
    episodes_limit: u64,
    duration_limit_s: f64,
    max_faults: usize,
    reader_retry_deadline_ms: u64,
    service: String,
    workload: Option<String>,
    wall_s: f64,
    stopped_because: &'a str,
    first_violation_episode: Option<u64>,
    first_violation_after_s: Option<f64>,
    summary: &'a Summary,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    kill_matrix_empty_cells: Vec<String>,
    episodes: Vec<EpisodeJson<'a>>,
}

/// Run `harness chaos`.
pub fn run(args: &ChaosArgs) -> ExitCode {
    let plan = match Plan::from_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("harness chaos: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "chaos: run seed {:#x} (the whole run again: --seed {:#x}), shard {}, service {}",
        plan.seed,
        plan.seed,
        args.shard,
        match &plan.service {
            ServiceMode::FakePeer { .. } => "fake-peer".to_string(),
            ServiceMode::Custom(c) => c.program.display().to_string(),
        }
    );
    if let ServiceMode::Custom(c) = &plan.service
        && c.workload.is_none()
    {
        println!(
            "chaos: no --workload for {}: data checks are skipped (the protocol-free invariants \
             still run)",
            c.program.display()
        );
    }
    if let Err(e) = crate::bins::ensure_built() {
        eprintln!("harness chaos: {e}");
        return ExitCode::from(2);
    }

    let episodes: Vec<u64> = match args.episode {
        Some(k) => vec![k],
        None => (0..args.episodes).filter(|k| args.shard.owns(*k)).collect(),
    };
    let replaying = args.episode.is_some();
    let bar = progress_bar(episodes.len() as u64, replaying);
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut results: Vec<(EpisodeResult, String, Option<ShrunkJson>)> = Vec::new();
    let mut stopped_because = "episode limit";
    let mut last_plain = Instant::now();
    // (episode, seconds into the run when its violation was known)
    let mut first_failure: Option<(u64, f64)> = None;
    for &k in &episodes {
        if !replaying && started.elapsed() >= args.duration {
            stopped_because = "time budget";
            break;
        }
        let schedule = plan.schedule(k, args.faults.as_ref().map(|f| f.0.as_slice()));
        let cfg = EpisodeConfig {
            run_seed: plan.seed,
            index: k,
            schedule,
            service: plan.service.clone(),
            timeouts: plan.timeouts.clone(),
            reader_retry_deadline_ms: args.reader_retry_deadline_ms,
            replay: plan.replay(args, k, args.faults.as_ref().map(|f| f.0.as_slice())),
            artifact_name: format!("seed-{:#x}-episode-{k}", plan.seed),
            explain: replaying,
        };
        let result = episode::run(&cfg, Some(&args.artifacts));
        summary.add(&result);
        let passed = result.passed();
        bar.inc(1);
        bar.set_message(live_counts(&summary));
        if bar.is_hidden() && !replaying && last_plain.elapsed() >= PLAIN_PROGRESS_EVERY {
            eprintln!(
                "chaos: {} of {} episodes, {:.0} s: {}",
                summary.episodes,
                episodes.len(),
                started.elapsed().as_secs_f64(),
                live_counts(&summary)
            );
            last_plain = Instant::now();
        }
        if let Some(text) = &result.text {
            bar.suspend(|| println!("\n{text}"));
        }
        let mut shrunk = None;
        if !passed && first_failure.is_none() {
            first_failure = Some((k, started.elapsed().as_secs_f64()));
        }
        if !passed && !replaying && !args.no_shrink && cfg.schedule.faults.len() >= 2 {
            shrunk = bar.suspend(|| shrink(&plan, args, &cfg));
        }
        results.push((result, cfg.replay.clone(), shrunk));
        if !passed && !args.keep_going {
            stopped_because = "a failing episode (--keep-going runs on)";
            break;
        }
    }
    bar.finish_and_clear();
    summary.wall = started.elapsed();

    let header = format!(
        "chaos summary: run seed {:#x}, shard {}, {} episodes in {:.1} s (stopped by {}){}",
        plan.seed,
        args.shard,
        summary.episodes,
        summary.wall.as_secs_f64(),
        stopped_because,
        match first_failure {
            Some((k, s)) => format!("; first violation: episode {k}, {s:.1} s into the run"),
            None => String::new(),
        }
    );
    println!("\n{}", summary.table(&header));
    let empty = summary.empty_cells();
    if !empty.is_empty() && !replaying {
        println!(
            "role × phase cells with no kill in this run: {}",
            empty.join(", ")
        );
    }
    let failed: Vec<&(EpisodeResult, String, Option<ShrunkJson>)> =
        results.iter().filter(|(r, _, _)| !r.passed()).collect();
    for (r, replay, shrunk) in &failed {
        println!(
            "FAILED episode {} (seed {:#x}): {}\n  replay: {replay}",
            r.index,
            r.schedule.seed,
            r.violations().join("; ")
        );
        if let Some(s) = shrunk {
            println!("  shrunk to faults {:?}: {}", s.faults, s.replay);
        }
        if let Some(dir) = &r.artifacts {
            println!("  logs: {}", dir.display());
        }
    }

    if let Some(path) = &args.json {
        let report = ReportJson {
            run_seed: format!("{:#x}", plan.seed),
            shard: args.shard,
            episodes_limit: args.episodes,
            duration_limit_s: args.duration.as_secs_f64(),
            max_faults: args.max_faults,
            reader_retry_deadline_ms: args.reader_retry_deadline_ms,
            service: match &plan.service {
                ServiceMode::FakePeer { .. } => "fake-peer".into(),
                ServiceMode::Custom(c) => c.program.display().to_string(),
            },
            workload: args.workload.clone(),
            wall_s: summary.wall.as_secs_f64(),
            stopped_because,
            first_violation_episode: first_failure.map(|(k, _)| k),
            first_violation_after_s: first_failure.map(|(_, s)| s),
            summary: &summary,
            latency_ms_p50: summary::percentile(&summary.latencies_ms, 50.0),
            latency_ms_p99: summary::percentile(&summary.latencies_ms, 99.0),
            kill_matrix_empty_cells: empty,
            episodes: results
                .iter()
                .map(|(r, replay, shrunk)| EpisodeJson {
                    index: r.index,
                    seed: format!("{:#x}", r.schedule.seed),
                    passed: r.passed(),
                    duration_s: r.duration.as_secs_f64(),
                    schedule: &r.schedule,
                    schedule_words: r.schedule.words(),
                    runs: &r.runs,
                    kills: &r.kills,
                    kills_not_sent: &r.missed,
                    restarts: &r.restarts,
                    violations: r.violations(),
                    replay: replay.clone(),
                    artifacts: r.artifacts.as_ref().map(|d| d.display().to_string()),
                    shrunk_to: shrunk.clone(),
                })
                .collect(),
        };
        match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("harness chaos: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("harness chaos: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn live_counts(s: &Summary) -> String {
    let run = |o| s.runs.get(&o).copied().unwrap_or(0);
    format!(
        "commits {} aborts {} failed {} crashed {} killed {} | kills {} restarts {} | violations {}",
        run(crate::evidence::RunOutcome::Committed),
        run(crate::evidence::RunOutcome::Aborted),
        run(crate::evidence::RunOutcome::Failed),
        run(crate::evidence::RunOutcome::Crashed),
        run(crate::evidence::RunOutcome::Killed),
        s.kills_sent,
        s.restarts,
        s.checks_failed
    )
}

fn progress_bar(len: u64, replaying: bool) -> ProgressBar {
    if replaying || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} episodes  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Drop faults one at a time while the episode still fails; print and
/// return the smallest failing schedule.
fn shrink(plan: &Plan, args: &ChaosArgs, failing: &EpisodeConfig) -> Option<ShrunkJson> {
    let original = failing.schedule.clone();
    let mut current = original.clone();
    let mut runs = 0;
    let mut last_result: Option<EpisodeResult> = None;
    println!(
        "shrinking episode {} ({} faults): dropping one fault at a time while it still fails",
        failing.index,
        original.faults.len()
    );
    'outer: loop {
        for f in &current.faults {
            if runs >= MAX_SHRINK_RUNS {
                break 'outer;
            }
            let ids: Vec<usize> = current.ids().into_iter().filter(|i| *i != f.id).collect();
            let candidate = original.subset(&ids);
            let mut cfg = failing.clone();
            cfg.schedule = candidate.clone();
            cfg.replay = plan.replay(args, failing.index, Some(&ids));
            cfg.artifact_name = format!(
                "seed-{:#x}-episode-{}-faults-{}",
                plan.seed,
                failing.index,
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join("-")
                }
            );
            let mut result = None;
            for _ in 0..SHRINK_ATTEMPTS {
                runs += 1;
                let r = episode::run(&cfg, Some(&args.artifacts));
                let failed = !r.passed();
                result = Some(r);
                if failed || runs >= MAX_SHRINK_RUNS {
                    break;
                }
            }
            let Some(result) = result else { break 'outer };
            println!(
                "  without [{}] ({} left): {}",
                f.id,
                ids.len(),
                if result.passed() {
                    "passes"
                } else {
                    "still fails"
                }
            );
            if !result.passed() {
                current = candidate;
                last_result = Some(result);
                continue 'outer;
            }
        }
        break;
    }
    let Some(result) = last_result else {
        println!(
            "no smaller schedule failed ({SHRINK_ATTEMPTS} attempts each): all {} faults are \
             needed, or the failure needs a race to go its way (replay the episode a few times)",
            original.faults.len()
        );
        return None;
    };
    let ids = current.ids();
    let replay = plan.replay(args, failing.index, Some(&ids));
    println!(
        "\nsmallest failing schedule of episode {} ({} of {} faults):\n{}violations: {}\nreplay: \
         {replay}\n{}",
        failing.index,
        ids.len(),
        original.faults.len(),
        current.words(),
        result.violations().join("; "),
        result
            .artifacts
            .as_ref()
            .map(|d| format!("logs: {}", d.display()))
            .unwrap_or_default()
    );
    Some(ShrunkJson {
        faults: ids,
        schedule_words: current.words(),
        replay,
        artifacts: result.artifacts.map(|d| d.display().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_episodes() {
        let s = parse_shard("2/3").unwrap();
        let owned: Vec<u64> = (0..7).filter(|k| s.owns(*k)).collect();
        assert_eq!(owned, vec![1, 4]);
        assert!(parse_shard("0/3").is_err());
        assert!(parse_shard("4/3").is_err());
        assert!(parse_shard("x").is_err());
        let all: Vec<u64> = (1..=3)
            .flat_map(|i| {
                let s = Shard { index: i, count: 3 };
                (0..9).filter(move |k| s.owns(*k))
            })
            .collect();
        assert_eq!(all.len(), 9);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn replay_commands_quote_what_needs_it() {
        assert_eq!(quote("abc-1"), "abc-1");
        assert_eq!(quote("two words"), "'two words'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
