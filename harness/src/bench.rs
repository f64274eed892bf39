//! `harness bench`: how fast a handoff is, measured against what it cannot
//! avoid, and proof of zero client errors under load.
//!
//! One run measures, on the fake peer and in this order:
//!
//! 1. **the floor** ([`floor`]): spawn → first byte of `fake-peer
//!    --version`, a Unix-socket frame round trip, a durable journal write
//!    and clear, a flock cycle, an append + `fdatasync`;
//! 2. **idle handoffs**: this process holds the listener and a
//!    `handoff::Supervisor`, cold-starts a `fake-peer` and hands off to a
//!    fresh one `--handoffs` times, each waited for completely (the new
//!    incumbent answers, the old one has exited) before the next; once with
//!    the children writing no event log (the headline latencies), once with
//!    the JSON event log on (where the time goes in each process);
//! 3. **handoffs under load** (the soak): `--clients` threads, in a process
//!    of their own, talk to the service over loopback TCP ([`load`]): a
//!    baseline phase, then `--load-handoffs` handoffs back to back (each
//!    waits until every client has completed a request on the new
//!    incumbent, so every handoff drains live connections, then a random
//!    fraction of one client interval, so that windows sample requests at
//!    a random phase of the clients' slots), then as many *spawn-only
//!    windows* (as long as the median handoff window, in which this process
//!    only fork+execs `fake-peer --version`: what any handoff must at least
//!    do, as a yardstick for the requests inside handoff windows), then an
//!    after phase; every acknowledged write is checked against the data
//!    dir; FD counts and RSS of the supervisor (this process) and the
//!    incumbent are sampled at handoff 10, every 100 and at the end.
//!
//! Timestamps are `CLOCK_MONOTONIC` everywhere: the supervisor's events are
//! captured in-process ([`capture`]), the children's come from their JSON
//! event log ([`event_log`]); [`analysis`] turns them into latencies and a
//! segment-by-segment account of where the time goes. The table goes to
//! stdout, progress to stderr, and `--json` writes [`report::BenchReport`].
//!
//! Nothing waits by sleeping except the paced clients and the fixed-length
//! baseline/after phases (measurement periods); every wait is bounded.
//!
//! The bench reaps its own children (`Child::wait`, one thread per retired
//! incumbent, which stamps the exit time): do not run it in a process where
//! [`crate::reaper`] has been initialised.

pub mod analysis;
pub mod capture;
pub mod floor;
pub mod load;
pub mod report;
pub mod service;
pub mod stats;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use handoff::SupervisorTimeouts;
use handoff::util::monotonic_ns;
use rand::{Rng as _, SeedableRng as _};

use self::analysis::DETAIL;
use self::capture::{CaptureBuffer, CaptureSubscriber};
use self::load::{ClientReport, Load, LoadConfig, LoadPhase, Timeline};
use self::report::{
    BenchReport, ClientsReport, Floor, Machine, PhaseRow, RunReport, Sample, Settings, TargetCheck,
};
use self::service::{HandoffRecord, Service, ServiceConfig};
use self::stats::Summary;
use crate::eventlog::SharedLog;

/// Command-line arguments of `harness bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Idle handoffs to measure, twice (children without, then with the
    /// JSON event log) [default: 200; --quick: 100].
    #[arg(long, value_name = "N")]
    pub handoffs: Option<usize>,
    /// Handoffs in a row under client load (the soak) [default: 1000;
    /// --quick: 100].
    #[arg(long, value_name = "N")]
    pub load_handoffs: Option<usize>,
    /// Client threads, one persistent connection each.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub clients: usize,
    /// Requests per second per client (paced).
    #[arg(long, value_name = "HZ", default_value_t = 250.0)]
    pub rate: f64,
    /// Share of PUTs (durable writes) among the requests, percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub put_percent: u32,
    /// Iterations of each floor measurement [default: 300; --quick: 60].
    #[arg(long, value_name = "N")]
    pub floor_iterations: Option<usize>,
    /// Length of the baseline phase before the handoffs under load, and of
    /// the phase after them, seconds [default: 3; --quick: 1].
    #[arg(long, value_name = "SECS")]
    pub baseline_secs: Option<f64>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// A short run (smaller defaults above).
    #[arg(long)]
    pub quick: bool,
    /// The fake-peer binary [default: target/release/fake-peer, built first
    /// with `$CARGO build --release -p fake-peers` when run through cargo].
    #[arg(long, value_name = "PATH")]
    pub fake_peer: Option<PathBuf>,
    /// Exit with an error when a target (the TARGETS section of the report)
    /// is missed.
    #[arg(long)]
    pub check: bool,
    /// What the spawn-only windows fork+exec, as one string split on spaces
    /// (default: `<fake-peer> --version`).
    #[arg(long, value_name = "COMMAND")]
    pub spawn_only: Option<String>,
}

/// Why the bench could not measure (or, with `--check`, missed a target).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The run could not be set up.
    #[error("bench set-up: {0}")]
    Setup(String),
    /// A handoff failed or was aborted.
    #[error("handoff #{index} failed: {error}")]
    Handoff {
        /// 1-based, within its run.
        index: usize,
        /// What went wrong.
        error: String,
    },
    /// A check failed (an old incumbent did not exit, a target was missed).
    #[error("{0}")]
    Check(String),
    /// I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The library refused.
    #[error("handoff library: {0}")]
    Library(#[from] handoff::Error),
}

/// The plan: arguments with the defaults resolved.
#[derive(Debug, Clone)]
struct Plan {
    idle_handoffs: usize,
    load_handoffs: usize,
    floor_iterations: usize,
    baseline: Duration,
    quick: bool,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Self {
        let pick = |explicit: Option<usize>, full: usize, quick: usize| {
            explicit.unwrap_or(if args.quick { quick } else { full })
        };
        Self {
            idle_handoffs: pick(args.handoffs, 200, 100).max(1),
            load_handoffs: pick(args.load_handoffs, 1000, 100).max(1),
            floor_iterations: pick(args.floor_iterations, 300, 60).max(1),
            baseline: Duration::from_secs_f64(
                args.baseline_secs
                    .unwrap_or(if args.quick { 1.0 } else { 3.0 })
                    .clamp(0.1, 600.0),
            ),
            quick: args.quick,
        }
    }
}

/// Bound on the new incumbent's first answer, an old incumbent's exit, and
/// the clients' reconnection after a handoff.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Seed of the random trigger offsets under load (fixed: runs differ only
/// by the machine).
const TRIGGER_PHASE_SEED: u64 = 0x5eed_0005;

/// Tight but sane timeouts: a broken handoff fails in seconds, a healthy
/// one never comes near them.
fn supervisor_timeouts() -> SupervisorTimeouts {
    SupervisorTimeouts {
        liveness: Duration::from_secs(2),
        hello_read: Duration::from_secs(2),
        wire_slack: Duration::from_millis(250),
        min_read: Duration::from_millis(50),
        probe: Duration::from_secs(2),
    }
}

fn child_env() -> Vec<(String, String)> {
    [
        ("HANDOFF_HEARTBEAT_MS", "500"),
        ("HANDOFF_HELLO_TIMEOUT_MS", "2000"),
        ("HANDOFF_LIVENESS_MS", "3000"),
        ("HANDOFF_BEGIN_TIMEOUT_MS", "5000"),
        ("HANDOFF_LOCK_TIMEOUT_MS", "1000"),
        ("HANDOFF_REACQUIRE_WINDOW_MS", "1000"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    // This process is the supervisor: if it is killed (even with -9), the
    // fake peers it started die with it instead of serving on.
    .chain([(
        "FAKE_DIE_WITH_PARENT".to_string(),
        std::process::id().to_string(),
    )])
    .collect()
}

/// Run the bench: measure, print the table on stdout, write `--json`.
pub fn run(args: BenchArgs) -> Result<BenchReport, BenchError> {
    let plan = Plan::from_args(&args);
    let fake_peer = locate_fake_peer(args.fake_peer.as_deref())?;
    let loadavg_at_start = loadavg();
    let root = tempfile::Builder::new()
        .prefix("handoff-bench-")
        .tempdir()?;
    progress(format_args!(
        "bench dir {} ({}), fake-peer {}",
        root.path().display(),
        fs_type(root.path()),
        fake_peer.display()
    ));

    progress(format_args!(
        "floor: {} iterations each",
        plan.floor_iterations
    ));
    let mut floor = measure_floor(&fake_peer, root.path(), plan.floor_iterations)?;
    let spawn_floor_p50 = floor.spawn_fake_peer.p50_us;

    let spawn_only: Vec<String> = match &args.spawn_only {
        Some(command) => command.split_whitespace().map(str::to_string).collect(),
        None => vec![fake_peer.display().to_string(), "--version".to_string()],
    };
    if spawn_only.is_empty() {
        return Err(BenchError::Setup(
            "--spawn-only needs a program to run, e.g. --spawn-only /bin/true".into(),
        ));
    }
    let load_config = LoadConfig {
        clients: args.clients.max(1),
        rate_per_client_hz: args.rate.max(1.0),
        put_percent: args.put_percent,
        keys_per_client: 64,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        request_deadline: Duration::from_secs(5),
        acked_dir: root.path().to_path_buf(),
    };
    let service_config = |name: &str, child_event_log: bool| ServiceConfig {
        fake_peer: fake_peer.clone(),
        dir: root.path().join(name),
        child_event_log,
        timeouts: supervisor_timeouts(),
        deadline: Duration::from_secs(5),
        drain_grace: Duration::from_secs(1),
        child_env: child_env(),
        settle_timeout: SETTLE_TIMEOUT,
    };

    let capture = CaptureBuffer::with_capacity(256);
    let dispatch = tracing::Dispatch::new(CaptureSubscriber::new(capture.clone()));
    let (mut idle, mut idle_logged, (mut load, clients)) =
        tracing::dispatcher::with_default(&dispatch, || -> Result<_, BenchError> {
            progress(format_args!(
                "idle: {} handoffs, children without event log",
                plan.idle_handoffs
            ));
            let idle = run_idle(service_config("idle", false), plan.idle_handoffs, &capture)?;
            progress(format_args!(
                "idle: {} handoffs, children writing the JSON event log",
                plan.idle_handoffs
            ));
            let idle_logged = run_idle(
                service_config("idle-logged", true),
                plan.idle_handoffs,
                &capture,
            )?;
            progress(format_args!(
                "load: {} handoffs, {} clients × {} req/s",
                plan.load_handoffs, load_config.clients, load_config.rate_per_client_hz
            ));
            let load = run_load(
                service_config("load", true),
                &load_config,
                plan.load_handoffs,
                plan.baseline,
                &spawn_only,
                &capture,
            )?;
            Ok((idle, idle_logged, load))
        })?;

    progress(format_args!("floor again (drift)"));
    floor.spawn_fake_peer_at_end = Summary::of_ns(&floor::spawn_to_first_byte(
        &fake_peer,
        &["--version"],
        floor::SpawnPath::Default,
        plan.floor_iterations,
    )?);

    for run in [&mut idle, &mut idle_logged, &mut load] {
        run.commit_p50_over_spawn_p50 =
            ratio(run.latencies.trigger_to_commit.p50_us, spawn_floor_p50);
        run.ready_p50_over_spawn_p50 =
            ratio(run.latencies.trigger_to_ready.p50_us, spawn_floor_p50);
    }
    let report = BenchReport {
        command: command_line(),
        machine: machine(root.path(), &fake_peer, loadavg_at_start),
        settings: Settings {
            idle_handoffs: plan.idle_handoffs,
            load_handoffs: plan.load_handoffs,
            clients: load_config.clients,
            rate_per_client_hz: load_config.rate_per_client_hz,
            put_percent: load_config.put_percent,
            floor_iterations: plan.floor_iterations,
            baseline_secs: plan.baseline.as_secs_f64(),
            quick: plan.quick,
            child_env: child_env(),
            spawn_only: spawn_only.join(" "),
        },
        targets: targets(&floor, &idle, &load, &clients),
        floor,
        idle,
        idle_logged,
        load,
        clients,
    };
    let table = report::render(&report);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(table.as_bytes())?;
    stdout.flush()?;
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| BenchError::Setup(format!("cannot encode the report: {e}")))?;
        std::fs::write(path, json)?;
        progress(format_args!("wrote {}", path.display()));
    }
    if args.check {
        let missed: Vec<&str> = report
            .targets
            .iter()
            .filter(|t| !t.met)
            .map(|t| t.name.as_str())
            .collect();
        if !missed.is_empty() {
            return Err(BenchError::Check(format!(
                "targets missed: {}",
                missed.join("; ")
            )));
        }
    }
    Ok(report)
}

fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("bench: {args}");
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn measure_floor(fake_peer: &Path, dir: &Path, iterations: usize) -> Result<Floor, BenchError> {
    use floor::SpawnPath;
    let spawn = |program: &Path, args: &[&str], path| -> Result<Summary, BenchError> {
        Ok(Summary::of_ns(&floor::spawn_to_first_byte(
            program, args, path, iterations,
        )?))
    };
    Ok(Floor {
        spawn_fake_peer: spawn(fake_peer, &["--version"], SpawnPath::Default)?,
        spawn_fake_peer_fork_exec: spawn(fake_peer, &["--version"], SpawnPath::ForkExec)?,
        spawn_echo: spawn(Path::new("/bin/echo"), &["x"], SpawnPath::Default)?,
        spawn_fake_peer_at_end: Summary::default(),
        unix_round_trip: Summary::of_ns(&floor::unix_round_trip(iterations * 10)?),
        journal_write: Summary::of_ns(&floor::journal_write(dir, iterations)?),
        journal_clear: Summary::of_ns(&floor::journal_clear(dir, iterations)?),
        flock_cycle: Summary::of_ns(&floor::flock_cycle(dir, iterations * 3)?),
        append_fdatasync: Summary::of_ns(&floor::append_fdatasync(dir, iterations)?),
    })
}

/// Records preallocated, their pages touched, so that keeping them does not
/// grow the bench process while its RSS is being watched. (An all-zero
/// value would be allocated with `calloc`, whose pages stay untouched until
/// written: the first version of this bench measured its own records as a
/// 200 KiB "leak" of the supervisor over 1000 handoffs.)
fn preallocated(n: usize) -> Vec<HandoffRecord> {
    let touched = HandoffRecord {
        old_exit_code: -1,
        ..Default::default()
    };
    let mut v = vec![touched; n];
    v.clear();
    v
}

fn sample(after_handoff: usize, service: &Service) -> Result<Sample, BenchError> {
    Ok(Sample {
        after_handoff,
        supervisor: crate::procs::sample(std::process::id())?,
        incumbent: crate::procs::sample(service.incumbent_pid())?,
    })
}

fn is_sample_point(k: usize, n: usize) -> bool {
    k == 10 || k == n || k.is_multiple_of(100)
}

/// Record old incumbents' exits in the handoff that retired them.
fn apply_exits(records: &mut [HandoffRecord], exits: &[(u32, u64, i32)]) {
    for (pid, mono_ns, code) in exits {
        // Pids are not reused within a run of a few thousand processes,
        // and the handoff is among the last few: scan from the end.
        if let Some(r) = records.iter_mut().rev().find(|r| r.old_pid == *pid) {
            r.old_exit_ns = *mono_ns;
            r.old_exit_code = *code;
        }
    }
}

fn run_idle(
    config: ServiceConfig,
    n: usize,
    capture: &CaptureBuffer,
) -> Result<RunReport, BenchError> {
    let mut service = Service::start(config)?;
    let mut records = preallocated(n);
    let mut samples = vec![sample(0, &service)?];
    for k in 1..=n {
        let record = service.handoff(k, capture)?;
        records.push(record);
        let exits = service.wait_exits()?;
        apply_exits(&mut records, &exits);
        if is_sample_point(k, n) {
            samples.push(sample(k, &service)?);
        }
        if k.is_multiple_of(100) {
            progress(format_args!("idle: {k}/{n}"));
        }
    }
    service.shutdown();
    let log = child_events(&service)?;
    Ok(run_report(&mut records, &service, &log, samples, 0))
}

fn run_load(
    config: ServiceConfig,
    load_config: &LoadConfig,
    n: usize,
    baseline: Duration,
    spawn_only: &[String],
    capture: &CaptureBuffer,
) -> Result<(RunReport, ClientsReport), BenchError> {
    let mut service = Service::start(config)?;
    let program = std::env::current_exe().map_err(|e| {
        BenchError::Setup(format!("cannot find this binary to start the clients: {e}"))
    })?;
    let load = Load::start(&program, service.addr(), load_config)?;
    let shared = load.shared();
    if !shared.wait_all_progressed(0, SETTLE_TIMEOUT) {
        return Err(BenchError::Setup(format!(
            "the clients did not complete a first request within {SETTLE_TIMEOUT:?}"
        )));
    }
    let mut timeline = Timeline::with_capacity(n);
    // Warm-up, then the baseline: measurement periods, not synchronisation.
    std::thread::sleep(Duration::from_millis(500));
    let before_ns = timeline.enter(LoadPhase::Before);
    std::thread::sleep(baseline);

    let mut records = preallocated(n);
    let mut samples = vec![sample(0, &service)?];
    let mut slow_reconnects = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(TRIGGER_PHASE_SEED);
    let during_ns = timeline.enter(LoadPhase::During);
    for k in 1..=n {
        let opened_ns = monotonic_ns();
        let record = service.handoff(k, capture);
        timeline.handoff_windows.push((opened_ns, monotonic_ns()));
        let record = record?;
        records.push(record);
        let exits = service.collect_exits();
        apply_exits(&mut records, &exits);
        if !shared.wait_all_progressed(record.serves_ns, SETTLE_TIMEOUT) {
            slow_reconnects += 1;
        }
        // Every client has just completed a request, so its next one is
        // almost a whole interval away: triggering now would put every
        // window in the idle part of the clients' intervals (and sample
        // almost no requests). A random offset over one interval puts the
        // trigger at a uniformly random phase of each client's slots, so
        // the windows sample requests as a trigger at an arbitrary moment
        // would. Measurement design, not synchronisation.
        random_phase(&mut rng, load_config.interval());
        if is_sample_point(k, n) {
            let exits = service.wait_exits()?;
            apply_exits(&mut records, &exits);
            samples.push(sample(k, &service)?);
        }
        if k.is_multiple_of(100) {
            progress(format_args!("load: {k}/{n}"));
        }
    }
    let spawn_floor_ns = timeline.enter(LoadPhase::SpawnFloor);
    spawn_only_windows(spawn_only, load_config, &records, &mut rng, &mut timeline)?;
    let after_ns = timeline.enter(LoadPhase::After);
    std::thread::sleep(baseline);
    let end_ns = monotonic_ns();
    let counters = load.stop()?;
    let durability =
        load::check_durability(&service.data_dir().join("kv.log"), &counters.acked_files)?;
    let exits = service.wait_exits()?;
    apply_exits(&mut records, &exits);
    service.shutdown();
    let log = child_events(&service)?;
    let run = run_report(&mut records, &service, &log, samples, slow_reconnects);
    // The children's marks are attached now: each window's steps are known.
    timeline
        .handoff_steps
        .extend(records.iter().map(analysis::window_steps));
    let clients = ClientReport::from_requests(counters, &timeline)?;
    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
    let open_secs = |windows: &[(u64, u64)]| windows.iter().map(|&(a, b)| secs(a, b)).sum();
    let clients = clients_report(
        &clients,
        load_config,
        durability,
        [
            secs(before_ns, during_ns),
            secs(during_ns, spawn_floor_ns),
            open_secs(&timeline.handoff_windows),
            secs(after_ns, end_ns),
            open_secs(&timeline.spawn_windows),
        ],
    );
    Ok((run, clients))
}

/// Wait a random time in `[0, interval)`: the next window then opens at a
/// uniformly random phase of each client's request slots.
fn random_phase(rng: &mut rand::rngs::StdRng, interval: Duration) {
    let ns = interval.as_nanos().max(1) as u64;
    std::thread::sleep(Duration::from_nanos(rng.random_range(0..ns)));
}

/// The comparison for request latency inside handoff windows: as many
/// windows as there were handoffs, each as long as the median handoff window
/// (trigger → new incumbent answers) and at a random phase of the clients'
/// slots, in which this process only spawns `command` (by default
/// `fake-peer --version`; fork + exec, as the supervisor spawns) and waits
/// for it to exit. Every handoff
/// starts a process, so the clients cannot do better inside handoff windows
/// than inside these. Returns the total time windows were open.
fn spawn_only_windows(
    command: &[String],
    load_config: &LoadConfig,
    records: &[HandoffRecord],
    rng: &mut rand::rngs::StdRng,
    timeline: &mut Timeline,
) -> Result<(), BenchError> {
    let mut windows: Vec<u64> = records.iter().map(|r| r.to_serves_ns()).collect();
    windows.sort_unstable();
    let window = Duration::from_nanos(stats::nearest_rank(&windows, 50.0));
    for _ in 0..records.len() {
        let opened = std::time::Instant::now();
        let opened_ns = monotonic_ns();
        let spawned = floor::spawn_and_wait(command);
        let exited_ns = monotonic_ns();
        // Hold the window as long as a handoff's: a measurement period.
        std::thread::sleep(window.saturating_sub(opened.elapsed()));
        timeline.spawn_windows.push((opened_ns, monotonic_ns()));
        timeline.spawn_steps.push([opened_ns, exited_ns]);
        spawned.map_err(|e| BenchError::Setup(format!("spawn-only window: {e}")))?;
        random_phase(rng, load_config.interval());
    }
    Ok(())
}

fn child_events(service: &Service) -> Result<SharedLog, BenchError> {
    Ok(match service.event_log() {
        Some(path) => SharedLog::read(&path)?,
        None => SharedLog::default(),
    })
}

fn run_report(
    records: &mut [HandoffRecord],
    service: &Service,
    log: &SharedLog,
    samples: Vec<Sample>,
    slow_reconnects: usize,
) -> RunReport {
    analysis::attach_child_events(records, log);
    let wall = |upto: usize| -> Option<f64> {
        let (first, last) = (records.first()?, records.get(upto.checked_sub(1)?)?);
        Some(last.serves_ns.saturating_sub(first.trigger_ns) as f64 / 1e9)
    };
    RunReport {
        handoffs: records.len(),
        latencies: analysis::latencies(records),
        commit_p50_over_spawn_p50: f64::NAN,
        ready_p50_over_spawn_p50: f64::NAN,
        critical_path: analysis::breakdown(records, &analysis::critical_path(records), true),
        detail: analysis::breakdown(records, DETAIL, false),
        journal_time: analysis::journal_time(records),
        slow_flock_waits: analysis::slow_flock_count(records, 4_000_000),
        trend: analysis::trend(records, 100),
        wall_s: wall(records.len()).unwrap_or(0.0),
        first_100_wall_s: wall(100),
        samples,
        supervisor_warnings: service.warnings.clone(),
        child_warnings: log.warning_count,
        child_warning_examples: log.warnings.iter().take(5).cloned().collect(),
        bad_exits: service.bad_exits.clone(),
        stale_answers: service.stale_answers,
        slow_reconnects,
        records: analysis::records_out(records),
    }
}

fn clients_report(
    c: &ClientReport,
    config: &LoadConfig,
    durability: load::DurabilityCheck,
    [before_s, during_s, windows_s, after_s, spawn_windows_s]: [f64; 5],
) -> ClientsReport {
    let mut during = c.latency.in_window.clone();
    during.merge(&c.latency.between_windows);
    let row = |name, duration_s: f64, requests: u64, latency: Summary| PhaseRow {
        name,
        duration_s,
        requests,
        requests_per_s: if duration_s > 0.0 {
            requests as f64 / duration_s
        } else {
            0.0
        },
        latency,
    };
    let baseline = c.latency.baseline().summary();
    let in_window = c.latency.in_window.summary();
    let spawn_window = c.latency.in_spawn_window.summary();
    ClientsReport {
        phases: vec![
            row(
                "baseline: no handoff (before and after, pooled)",
                before_s + after_s,
                c.completions.before + c.completions.after,
                baseline,
            ),
            row(
                "before handoffs",
                before_s,
                c.completions.before,
                c.latency.before.summary(),
            ),
            row(
                "during handoffs (all)",
                during_s,
                c.completions.during,
                during.summary(),
            ),
            row(
                "inside handoff windows (trigger → new answers)",
                windows_s,
                c.completions.during_in_window,
                in_window,
            ),
            row(
                "between handoff windows",
                during_s - windows_s,
                c.completions.during - c.completions.during_in_window,
                c.latency.between_windows.summary(),
            ),
            row(
                "after handoffs",
                after_s,
                c.completions.after,
                c.latency.after.summary(),
            ),
            row(
                "inside spawn-only windows (see settings)",
                spawn_windows_s,
                c.completions.in_spawn_window,
                spawn_window,
            ),
        ],
        offered_rps: config.rate_per_client_hz * config.clients as f64,
        troubles_seen: c.seen.troubles_seen,
        failed: c.failed,
        retried_requests: c.seen.retried_requests,
        max_attempts: c.seen.max_attempts,
        stale_reads: c.seen.stale_reads,
        bad_replies: c.seen.bad_replies,
        durability,
        window_p99_over_baseline_p99: ratio(in_window.p99_us, baseline.p99_us),
        spawn_window_p99_over_baseline_p99: ratio(spawn_window.p99_us, baseline.p99_us),
        slow_inside_windows: c.slow.clone(),
    }
}

fn targets(
    floor: &Floor,
    idle: &RunReport,
    load: &RunReport,
    c: &ClientsReport,
) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let mut check = |name: &str, target: &str, measured: String, met: bool| {
        out.push(TargetCheck {
            name: name.to_string(),
            target: target.to_string(),
            measured,
            met,
        });
    };
    let commit = &idle.latencies.trigger_to_commit;
    check(
        "idle median trigger → commit / spawn floor median (no child log)",
        "<= 2.5×",
        format!(
            "{:.2}× ({:.3} ms / {:.3} ms)",
            idle.commit_p50_over_spawn_p50,
            commit.p50_us / 1e3,
            floor.spawn_fake_peer.p50_us / 1e3
        ),
        idle.commit_p50_over_spawn_p50 <= 2.5,
    );
    check(
        "idle p99 trigger → commit (no child log)",
        "<= 15 ms",
        format!("{:.3} ms", commit.p99_us / 1e3),
        commit.p99_us <= 15_000.0,
    );
    let t = &c.troubles_seen;
    check(
        "under load: refused or reset connections (seen, even if retried)",
        "0",
        format!("refused {}, reset {}", t.refused, t.reset),
        t.refused == 0 && t.reset == 0,
    );
    check(
        "under load: requests that failed",
        "0",
        format!("{}", c.failed.total()),
        c.failed.total() == 0,
    );
    check(
        "under load: lost acknowledged writes (log check + stale reads)",
        "0",
        format!(
            "{} of {} lost, {} stale reads",
            c.durability.lost, c.durability.acked, c.stale_reads
        ),
        c.durability.lost == 0 && c.stale_reads == 0 && c.durability.acked > 0,
    );
    check(
        "under load: request p99 inside windows / baseline p99",
        "<= 3×",
        format!(
            "{:.2}× (spawn-only windows: {:.2}×)",
            c.window_p99_over_baseline_p99, c.spawn_window_p99_over_baseline_p99
        ),
        c.window_p99_over_baseline_p99 <= 3.0,
    );
    let at = |run: &RunReport, k: usize| run.samples.iter().find(|s| s.after_handoff == k).copied();
    for (run_name, run) in [("under load", load), ("idle", idle)] {
        let last = run.samples.last().copied();
        match (at(run, 10), last) {
            (Some(a), Some(b)) if b.after_handoff > 10 => {
                for (who, pa, pb) in [
                    ("supervisor", a.supervisor, b.supervisor),
                    ("incumbent", a.incumbent, b.incumbent),
                ] {
                    check(
                        &format!(
                            "{run_name}: {who} FD count, handoff 10 vs {}",
                            b.after_handoff
                        ),
                        "equal",
                        format!("{} vs {}", pa.fds, pb.fds),
                        pa.fds == pb.fds,
                    );
                    let delta = pb.rss_kib as i64 - pa.rss_kib as i64;
                    check(
                        &format!("{run_name}: {who} RSS, handoff 10 vs {}", b.after_handoff),
                        "within 1 MiB",
                        format!("{} → {} KiB ({delta:+} KiB)", pa.rss_kib, pb.rss_kib),
                        delta.abs() <= 1024,
                    );
                }
            }
            _ => check(
                &format!("{run_name}: FD / RSS growth"),
                "more than 10 handoffs",
                "not measured".into(),
                false,
            ),
        }
    }
    match idle.first_100_wall_s {
        Some(s) => check(
            "100 idle handoffs in a row, wall time",
            "< 2 s",
            format!("{s:.3} s"),
            s < 2.0,
        ),
        None => check(
            "100 idle handoffs in a row, wall time",
            "< 2 s",
            "fewer than 100 idle handoffs".into(),
            false,
        ),
    }
    out
}

/// The `fake-peer` to run: `explicit`, or the release build next to this
/// binary's target dir, built first when run through cargo (a no-op when
/// up to date, so the binary measured matches the sources).
fn locate_fake_peer(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(BenchError::Setup(format!(
                "--fake-peer {}: no such file",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe()?;
    // <target>/<profile>/harness
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| BenchError::Setup(format!("cannot place {}", exe.display())))?;
    let binary = target_dir.join("release").join("fake-peer");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    if let (Some(cargo), Some(workspace)) = (std::env::var_os("CARGO"), workspace) {
        progress(format_args!("building the release fake-peer"));
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "fake-peers",
                "--bin",
                "fake-peer",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(workspace)
            .status()?;
        if !status.success() {
            return Err(BenchError::Setup(format!(
                "`cargo build --release -p fake-peers` failed ({status})"
            )));
        }
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(BenchError::Setup(format!(
            "{} not found: build it with `cargo build --release -p fake-peers`, \
             run the bench through `cargo run --release -p harness -- bench`, \
             or pass --fake-peer PATH",
            binary.display()
        )))
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p harness -- {}", args.join(" "))
}

fn fs_type(path: &Path) -> String {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, statfs};
    match statfs(path) {
        Ok(s) if s.filesystem_type() == EXT4_SUPER_MAGIC => "ext4".into(),
        Ok(s) if s.filesystem_type() == XFS_SUPER_MAGIC => "xfs".into(),
        Ok(s) if s.filesystem_type() == TMPFS_MAGIC => "tmpfs (fsync is free)".into(),
        Ok(s) => format!("fs magic {:#x}", s.filesystem_type().0),
        Err(e) => format!("unknown ({e})"),
    }
}

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine(dir: &Path, fake_peer: &Path, loadavg_at_start: String) -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    let kernel = match (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    ) {
        (Ok(os), Ok(release)) => format!("{os} {release}"),
        _ => "unknown kernel".into(),
    };
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        kernel,
        bench_dir_fs: fs_type(dir),
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        fake_peer: fake_peer.display().to_string(),
        loadavg_at_start,
        loadavg_at_end: loadavg(),
    }
}
