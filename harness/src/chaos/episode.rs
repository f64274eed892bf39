//! One chaos episode, against real processes.
//!
//! 1. Cold-start the incumbent (`peer-0`) on the listeners the fixture
//!    holds, with the misbehaviours and `o-` crash points the schedule gives
//!    run 1; settle (restart it if a crash point killed it at start-up).
//! 2. Start the traffic: the harness's writing client, the reader and the
//!    prober ([`super::traffic`]); wait until requests are answered.
//! 3. For each planned run: idle kills first; then one `handoff-supervisor`
//!    with the run's crash points and misbehaviours. While it runs, and
//!    until the service settles afterwards, every event log is followed
//!    ([`super::tail`]) and each kill is sent when its trigger event appears,
//!    after its delay. Then wait until the service settles: one incumbent,
//!    or none, in which case the service is restarted by a cold start (as
//!    systemd's `Restart=` would).
//! 4. Verification: a clean supervisor (it runs `resume_from_journal`
//!    first, like every run) must commit. A leftover fault (a crash point
//!    armed for a run that never came, a first seal that fails) may spoil
//!    an attempt; then another runs, at most [`VERIFY_ATTEMPTS`].
//! 5. Stop the traffic, check every invariant while the service still runs,
//!    tear down, check what needs every exit.
//!
//! Nothing sleeps to synchronise: the loops poll logs, `/proc` and the
//! reaper with bounded deadlines that name what they waited for. The only
//! sleeps are the poll step and the delays of the schedule (pacing).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use handoff::events;
use handoff::util::monotonic_ns;
use nix::sys::signal::Signal;
use serde::Serialize;

use super::checks::{self, Accounting};
use super::render;
use super::schedule::{Fault, FaultKind, KillWhen, Misbehaviour, Schedule};
use super::service::{self, ServiceMode, Workload};
use super::stage::{Party, Stage, TriggerEvent, stage_at};
use super::tail::Tail;
use super::traffic::{ProberReport, ReaderConfig, ReaderReport, Traffic};
use crate::client::{Client, ClientReport};
use crate::evidence::{
    Evidence, KillRecord, MissedKill, Restart, RunOutcome, RunRecord, read_crash_record,
};
use crate::fixture::{Fixture, LISTENER_NAME, Settled, not_settled};
use crate::invariants::{self, Check};
use crate::reaper;
use crate::report::{Observed, name_crash_record};
use crate::rules;
use crate::scenario::{SuccessorBinary, Timeouts};
use crate::timeline;

/// Poll step of every watch loop (pacing, never a synchronisation).
const POLL: Duration = Duration::from_millis(1);
/// Poll step while a kill waits for its trigger: the kill follows its event
/// within about this much (plus the time to read the logs).
const POLL_ARMED: Duration = Duration::from_micros(200);
/// Interval between two settle checks (each reads `/proc` and sockets).
const SETTLE_CHECK_EVERY: Duration = Duration::from_millis(10);
/// Clean supervisor runs tried at the end before giving up.
pub const VERIFY_ATTEMPTS: usize = 3;
/// The deadline of a run whose successor never sends `Ready` (the abort
/// comes when it expires).
const NEVER_READY_DEADLINE_MS: u64 = 800;
/// Bound on the traffic's first answered requests.
const TRAFFIC_START_BOUND: Duration = Duration::from_secs(5);
/// Requests the reader must have answered before the first handoff (so the
/// handoffs happen under live traffic), and after the last one.
const TRAFFIC_PROGRESS: u64 = 3;

/// Everything one episode needs.
#[derive(Debug, Clone)]
pub struct EpisodeConfig {
    /// The run seed.
    pub run_seed: u64,
    /// The episode index.
    pub index: u64,
    /// Its schedule.
    pub schedule: Schedule,
    /// The service under test.
    pub service: ServiceMode,
    /// The timeouts (milliseconds everywhere).
    pub timeouts: Timeouts,
    /// The reader's bound on one request, retries included, ms.
    pub reader_retry_deadline_ms: u64,
    /// The command that replays it, for the failure text.
    pub replay: String,
    /// The name of its folder under the artifacts directory.
    pub artifact_name: String,
    /// Render the timeline even when it passes (a replay).
    pub explain: bool,
}

/// Whether the data checks ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataChecks {
    /// The built-in client and reader of the fake peer.
    BuiltIn,
    /// The `--workload` command.
    Workload,
    /// Skipped (another service, no `--workload`).
    Skipped,
}

/// What one episode found.
#[derive(Debug)]
pub struct EpisodeResult {
    /// The episode index.
    pub index: u64,
    /// The schedule it ran.
    pub schedule: Schedule,
    /// Wall time.
    pub duration: Duration,
    /// Each supervisor run.
    pub runs: Vec<RunRecord>,
    /// Kills sent.
    pub kills: Vec<KillRecord>,
    /// Kills scheduled but not sent.
    pub missed: Vec<MissedKill>,
    /// Service restarts (cold starts after the service died).
    pub restarts: Vec<Restart>,
    /// Incumbents that recovered on their own after losing a supervisor.
    pub self_recoveries: u64,
    /// Crash points armed: `(point, process)`.
    pub armed: Vec<(String, String)>,
    /// Crash points that fired: `(point, process)`.
    pub fired: Vec<(String, String)>,
    /// Every invariant result.
    pub checks: Vec<Check>,
    /// A harness problem that stopped the episode (not a finding about the
    /// service; reported, and the run fails).
    pub error: Option<String>,
    /// Writes acknowledged and verified at the end.
    pub acked_writes_verified: u64,
    /// Reads that returned the acknowledged value, during the episode.
    pub reads_verified: u64,
    /// Client accounting.
    pub accounting: Accounting,
    /// Whether data checks ran.
    pub data_checks: DataChecks,
    /// Everything a human needs, when it failed (or when asked).
    pub text: Option<String>,
    /// Where its logs were copied.
    pub artifacts: Option<PathBuf>,
}

impl EpisodeResult {
    /// No violation and no harness error.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks, one line each.
    pub fn violations(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if let Some(e) = &self.error {
            out.push(format!("harness error: {e}"));
        }
        out
    }
}

/// Why an episode stopped early.
enum Halt {
    /// An invariant failed in a way that makes going on pointless (the
    /// service did not settle, or could not be restarted).
    Violation(Check),
    /// The harness could not do its part.
    Harness(String),
}

impl From<String> for Halt {
    fn from(e: String) -> Self {
        Halt::Harness(e)
    }
}

/// A kill waiting for its trigger.
struct Pending {
    fault: Fault,
    victim: Party,
    trigger: &'static TriggerEvent,
    delay_ms: u64,
    due_ns: Option<u64>,
}

/// How one supervisor run is started.
struct RunPlan {
    supervisor_args: Vec<String>,
    supervisor_env: Vec<(String, String)>,
    successor_env: Vec<(String, String)>,
    successor: SuccessorBinary,
}

/// Who is who in the current run.
struct RunCtx {
    index: usize,
    supervisor: String,
    supervisor_pid: u32,
    incumbent: Option<String>,
    successor: String,
    start_ns: u64,
}

impl RunCtx {
    fn process_of(&self, role: Party) -> Option<&str> {
        match role {
            Party::Supervisor => Some(&self.supervisor),
            Party::Incumbent => self.incumbent.as_deref(),
            Party::Successor => Some(&self.successor),
        }
    }
}

struct Driver<'a> {
    cfg: &'a EpisodeConfig,
    fx: Fixture,
    tail: Tail,
    runs: Vec<RunRecord>,
    kills: Vec<KillRecord>,
    /// `(run processes, run start)` of each kill, to measure its phase.
    kill_context: Vec<(Vec<String>, u64)>,
    missed: Vec<MissedKill>,
    restarts: Vec<Restart>,
    checks: Vec<Check>,
    incumbent: Option<String>,
    first_lock_inode: Option<u64>,
}

/// Run one episode.
pub fn run(cfg: &EpisodeConfig, artifacts: Option<&Path>) -> EpisodeResult {
    let started = Instant::now();
    let mut result = EpisodeResult {
        index: cfg.index,
        schedule: cfg.schedule.clone(),
        duration: Duration::ZERO,
        runs: Vec::new(),
        kills: Vec::new(),
        missed: Vec::new(),
        restarts: Vec::new(),
        self_recoveries: 0,
        armed: Vec::new(),
        fired: Vec::new(),
        checks: Vec::new(),
        error: None,
        acked_writes_verified: 0,
        reads_verified: 0,
        accounting: Accounting::default(),
        data_checks: match &cfg.service {
            ServiceMode::FakePeer { workload: None } => DataChecks::BuiltIn,
            ServiceMode::FakePeer { workload: Some(_) } => DataChecks::Workload,
            ServiceMode::Custom(c) if c.workload.is_some() => DataChecks::Workload,
            ServiceMode::Custom(_) => DataChecks::Skipped,
        },
        text: None,
        artifacts: None,
    };
    let fx = match service::fixture(&format!("chaos-e{}", cfg.index), &cfg.service) {
        Ok(fx) => fx,
        Err(e) => {
            result.error = Some(e);
            result.duration = started.elapsed();
            return result;
        }
    };
    let mut d = Driver {
        cfg,
        tail: Tail::new(fx.root()),
        fx,
        runs: Vec::new(),
        kills: Vec::new(),
        kill_context: Vec::new(),
        missed: Vec::new(),
        restarts: Vec::new(),
        checks: Vec::new(),
        incumbent: None,
        first_lock_inode: None,
    };

    let mut writer: Option<Client> = None;
    let mut traffic: Option<Traffic> = None;
    let mut workload: Option<Workload> = None;
    let driven = d.drive(&mut writer, &mut traffic, &mut workload);
    let writer_report = writer.map(Client::stop);
    let (reader_report, prober_report) = traffic
        .map(Traffic::stop)
        .unwrap_or((None, ProberReport::default()));
    let workload_written = workload.map(|w| w.stop());
    match driven {
        Ok(()) => d.final_checks(
            writer_report.as_ref(),
            reader_report.as_ref(),
            workload_written,
            &mut result,
        ),
        Err(Halt::Violation(check)) => d.checks.push(check),
        Err(Halt::Harness(e)) => result.error = Some(e),
    }
    d.fx.teardown();
    d.post_mortem(
        &mut result,
        writer_report.as_ref(),
        reader_report.as_ref(),
        &prober_report,
    );
    result.duration = started.elapsed();
    d.finish(&mut result, artifacts);
    result
}

impl Driver<'_> {
    fn schedule(&self) -> &Schedule {
        &self.cfg.schedule
    }

    fn service_env(&self) -> Vec<(String, String)> {
        self.cfg.timeouts.service_env()
    }

    fn drive(
        &mut self,
        writer: &mut Option<Client>,
        traffic: &mut Option<Traffic>,
        workload: &mut Option<Workload>,
    ) -> Result<(), Halt> {
        // 1. The first incumbent.
        let mut env = self.service_env();
        env.extend(self.schedule().env(&[(0, Party::Incumbent)]));
        let first = self.fx.cold_start(&env)?;
        match self.settle(None, &mut Vec::new())? {
            Settled::Incumbent { name, .. } => self.incumbent = Some(name),
            Settled::NoService => self.restart(&format!("{first} died at start-up"))?,
        }
        self.first_lock_inode = std::fs::metadata(self.fx.lock_file()).map(|m| m.ino()).ok();

        // 2. Traffic, live before the first handoff.
        let addrs: Vec<_> = self
            .fx
            .listener_addrs()
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        let fake_peer = self.cfg.service.is_fake_peer();
        let main_addr = self.fx.addr(LISTENER_NAME);
        if fake_peer {
            let addr = main_addr.ok_or_else(|| "the fixture has no kv listener".to_string())?;
            *writer = Some(Client::start(addr));
        }
        *traffic = Some(Traffic::start(
            if fake_peer { main_addr } else { None },
            &addrs,
            ReaderConfig {
                retry_deadline: Duration::from_millis(self.cfg.reader_retry_deadline_ms),
            },
        ));
        if let Some(cmd) = self.cfg.service.workload() {
            *workload = Some(Workload::start(cmd, &self.fx)?);
        }
        if let Some(t) = traffic.as_ref() {
            self.wait_for_traffic(t, "before the first handoff")?;
        }

        // 3. The planned runs.
        for run in 0..self.schedule().runs {
            self.supervise(run, true)?;
        }

        // 4. A clean handoff must commit.
        for attempt in 0..VERIFY_ATTEMPTS {
            let index = self.runs.len();
            self.supervise(index, false)?;
            let last = self.runs.last().expect("supervise records its run");
            if last.outcome == RunOutcome::Committed {
                break;
            }
            if attempt + 1 == VERIFY_ATTEMPTS {
                // check_outcomes reports it.
                break;
            }
        }
        if let Some(t) = traffic.as_ref() {
            self.wait_for_traffic(t, "after the last handoff")?;
        }
        Ok(())
    }

    /// Wait (bounded) until the reader has answered a few more requests.
    fn wait_for_traffic(&mut self, traffic: &Traffic, when: &str) -> Result<(), Halt> {
        if !traffic.has_reader() {
            return Ok(());
        }
        let target = traffic.progress() + TRAFFIC_PROGRESS;
        let deadline = Instant::now() + TRAFFIC_START_BOUND;
        while traffic.progress() < target {
            if Instant::now() >= deadline {
                return Err(Halt::Violation(Check::fail(
                    "one-incumbent/serves",
                    format!(
                        "waited {TRAFFIC_START_BOUND:?} {when} for {TRAFFIC_PROGRESS} client \
                         requests to be answered; {} were",
                        traffic.progress() + TRAFFIC_PROGRESS - target
                    ),
                )));
            }
            self.pump(None, &mut Vec::new());
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Follow the logs; arm kills whose trigger appeared; send the ones due.
    fn pump(&mut self, ctx: Option<&RunCtx>, pending: &mut Vec<Pending>) {
        let names: Vec<String> = self.fx.processes().iter().map(|p| p.name.clone()).collect();
        let fresh = self.tail.poll(names.iter().map(String::as_str));
        let Some(ctx) = ctx else { return };
        for ev in &fresh {
            if ev.mono_ns < ctx.start_ns {
                continue;
            }
            for p in pending.iter_mut().filter(|p| p.due_ns.is_none()) {
                if ev.name == p.trigger.event
                    && ctx.process_of(p.trigger.logged_by) == Some(ev.process.as_str())
                {
                    // The delay counts from the event itself, so the time it
                    // took to notice it is part of the delay, not added.
                    p.due_ns = Some(ev.mono_ns + p.delay_ms * 1_000_000);
                }
            }
        }
        let now = monotonic_ns();
        let mut i = 0;
        while i < pending.len() {
            if pending[i].due_ns.is_some_and(|due| due <= now) {
                let p = pending.remove(i);
                self.kill(ctx, p.fault, p.victim, p.trigger.event, p.delay_ms, false);
            } else {
                i += 1;
            }
        }
    }

    fn victim_pid(&self, ctx: &RunCtx, victim: Party) -> Option<u32> {
        match victim {
            Party::Supervisor => Some(ctx.supervisor_pid),
            Party::Incumbent => ctx
                .incumbent
                .as_deref()
                .and_then(|n| self.fx.process(n))
                .and_then(|p| p.pid),
            Party::Successor => self
                .tail
                .spawned_by(&ctx.supervisor)
                .or_else(|| self.tail.pid_of(&ctx.successor)),
        }
    }

    fn kill(
        &mut self,
        ctx: &RunCtx,
        fault: Fault,
        victim: Party,
        trigger: &str,
        delay_ms: u64,
        idle: bool,
    ) {
        let Some(name) = ctx.process_of(victim).map(str::to_string) else {
            self.missed.push(MissedKill {
                fault_id: fault.id,
                why: format!("no {} in run {}", victim.name(), ctx.index + 1),
            });
            return;
        };
        let Some(pid) = self.victim_pid(ctx, victim) else {
            self.missed.push(MissedKill {
                fault_id: fault.id,
                why: format!("{name} had no known pid yet when {trigger} came"),
            });
            return;
        };
        if !is_live(pid) {
            self.missed.push(MissedKill {
                fault_id: fault.id,
                why: format!("{name} had already exited when {trigger} (+{delay_ms} ms) came"),
            });
            return;
        }
        let at_ns = monotonic_ns();
        if !reaper::signal(pid, Signal::SIGKILL) {
            self.missed.push(MissedKill {
                fault_id: fault.id,
                why: format!("{name} had already been reaped"),
            });
            return;
        }
        let processes: Vec<String> = [
            Some(ctx.supervisor.clone()),
            ctx.incumbent.clone(),
            Some(ctx.successor.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.kill_context.push((processes, ctx.start_ns));
        self.kills.push(KillRecord {
            fault_id: fault.id,
            run: fault.run,
            idle,
            victim,
            process: name,
            pid,
            trigger: trigger.to_string(),
            delay_ms,
            at_ns,
            phase: if idle { Stage::Idle } else { Stage::Hello },
        });
    }

    /// The supervisor's arguments and environment, the successor's
    /// environment and binary, for run `run`.
    fn run_plan(&self, run: usize, planned: bool) -> RunPlan {
        let mut timeouts = self.cfg.timeouts.clone();
        if !planned {
            return RunPlan {
                supervisor_args: timeouts.supervisor_args(),
                supervisor_env: self.service_env(),
                successor_env: vec![],
                successor: SuccessorBinary::FakePeer,
            };
        }
        let s = self.schedule();
        let successor_misbehaviours = s.misbehaviours(run, Party::Successor);
        if successor_misbehaviours.contains(&Misbehaviour::NeverReady) {
            timeouts.deadline_ms = NEVER_READY_DEADLINE_MS;
        }
        let mut supervisor_env = self.service_env();
        supervisor_env.extend(s.env(&[(run, Party::Supervisor)]));
        // The successor: its own faults, and what the schedule sets in the
        // incumbent of the next run (which it becomes if this run commits).
        let successor_env = s.env(&[(run, Party::Successor), (run + 1, Party::Incumbent)]);
        let binary = if successor_misbehaviours.contains(&Misbehaviour::Impostor) {
            SuccessorBinary::Impostor
        } else {
            SuccessorBinary::FakePeer
        };
        RunPlan {
            supervisor_args: timeouts.supervisor_args(),
            supervisor_env,
            successor_env,
            successor: binary,
        }
    }

    /// One supervisor run, its kills, and the settling after it.
    fn supervise(&mut self, run: usize, planned: bool) -> Result<(), Halt> {
        let faults: Vec<Fault> = if planned {
            self.schedule().faults_of(run).copied().collect()
        } else {
            vec![]
        };
        let mut window_start_ns = monotonic_ns();
        let incumbent_at_start = self.incumbent.clone();

        // Idle kills: the incumbent, under traffic, before the supervisor.
        for f in &faults {
            if let FaultKind::Kill {
                victim,
                when: KillWhen::Idle,
                delay_ms,
            } = f.kind
            {
                let until = Instant::now() + Duration::from_millis(delay_ms);
                while Instant::now() < until {
                    self.pump(None, &mut Vec::new());
                    std::thread::sleep(POLL);
                }
                let ctx = RunCtx {
                    index: run,
                    supervisor: String::new(),
                    supervisor_pid: 0,
                    incumbent: self.incumbent.clone(),
                    successor: String::new(),
                    start_ns: window_start_ns,
                };
                self.kill(&ctx, *f, victim, "idle", delay_ms, true);
            }
        }

        let RunPlan {
            supervisor_args: args,
            supervisor_env,
            successor_env,
            successor: binary,
        } = self.run_plan(run, planned);
        window_start_ns = window_start_ns.min(monotonic_ns());
        let start_ns = monotonic_ns();
        let handle = self
            .fx
            .spawn_supervisor(&args, &supervisor_env, &successor_env, binary)?;
        let ctx = RunCtx {
            index: run,
            supervisor: handle.name.clone(),
            supervisor_pid: handle.pid,
            incumbent: self.incumbent.clone(),
            successor: handle.successor.clone(),
            start_ns,
        };
        let mut pending: Vec<Pending> = faults
            .iter()
            .filter_map(|f| match f.kind {
                FaultKind::Kill {
                    victim,
                    when: KillWhen::After(trigger),
                    delay_ms,
                } => Some(Pending {
                    fault: *f,
                    victim,
                    trigger,
                    delay_ms,
                    due_ns: None,
                }),
                _ => None,
            })
            .collect();

        // Watch the supervisor to its end.
        let bound = Duration::from_millis(self.cfg.timeouts.supervisor_run_bound_ms());
        let deadline = Instant::now() + bound;
        let mut overran = false;
        loop {
            self.pump(Some(&ctx), &mut pending);
            if reaper::exit_of(handle.pid).is_some() {
                break;
            }
            if Instant::now() >= deadline {
                overran = true;
                reaper::signal(handle.pid, Signal::SIGKILL);
                break;
            }
            nap(&pending);
        }
        let exit = self
            .fx
            .wait_exit(&handle.name, Duration::from_secs(5))
            .ok()
            .map(|e| e.kind);
        if overran {
            return Err(Halt::Violation(Check::fail(
                "supervisor-bounded",
                format!(
                    "{} did not exit within {bound:?} (the sum of its deadline, drain grace and \
                     liveness timeouts, plus 10 s); it was killed",
                    handle.name
                ),
            )));
        }
        let journal_left = self.fx.journal().exists();

        // Settle, still following the logs: kills may wait for the
        // recovery's events.
        let settled = self.settle(Some(&ctx), &mut pending);
        for p in pending {
            self.missed.push(MissedKill {
                fault_id: p.fault.id,
                why: match p.due_ns {
                    Some(_) => "the service settled before its delay ran out".into(),
                    None => format!(
                        "its trigger {} never appeared in the {}'s log",
                        p.trigger.event,
                        p.trigger.logged_by.name()
                    ),
                },
            });
        }
        let killed = self.kills.iter().any(|k| k.pid == handle.pid);
        let read = |stream: &str| {
            std::fs::read_to_string(self.fx.root().join(format!("{}.{stream}", handle.name)))
                .unwrap_or_default()
        };
        let (stdout, stderr) = (read("stdout"), read("stderr"));
        let mut record = RunRecord {
            index: run,
            planned,
            supervisor: handle.name.clone(),
            successor: handle.successor.clone(),
            incumbent: incumbent_at_start,
            impostor: binary == SuccessorBinary::Impostor,
            successor_exits_before_hello: faults
                .iter()
                .any(|f| f.kind == FaultKind::Misbehave(Misbehaviour::ExitBeforeHello)),
            exit,
            outcome: rules::run_outcome(exit, killed),
            journal_left,
            recovered_journal: false,
            settled: None,
            window_start_ns,
            window_end_ns: 0,
            stderr_tail: timeline::supervisor_says(&stdout, &stderr),
            latency_ms: None,
        };
        let settled = match settled {
            Ok(s) => s,
            Err(halt) => {
                record.window_end_ns = monotonic_ns();
                self.runs.push(record);
                return Err(halt);
            }
        };
        match settled {
            Settled::Incumbent { name, .. } => {
                record.settled = Some(name.clone());
                self.incumbent = Some(name);
            }
            Settled::NoService => {
                record.settled = Some("no service".into());
                self.incumbent = None;
            }
        }
        record.window_end_ns = monotonic_ns();
        self.runs.push(record);
        if self.incumbent.is_none() {
            self.restart(&format!("nothing served after {}", handle.name))?;
        }
        Ok(())
    }

    /// Wait until the service settles (bounded), following the logs and
    /// sending due kills meanwhile. A service that does not settle is a
    /// violation of invariant 2.
    fn settle(
        &mut self,
        ctx: Option<&RunCtx>,
        pending: &mut Vec<Pending>,
    ) -> Result<Settled, Halt> {
        let bound = self.cfg.timeouts.settle_bound();
        let deadline = Instant::now() + bound;
        let mut next_check = Instant::now();
        let mut last_observed = String::new();
        loop {
            self.pump(ctx, pending);
            let kill_due = pending.iter().any(|p| p.due_ns.is_some());
            if !kill_due && Instant::now() >= next_check {
                match service::settled_now(&mut self.fx, &self.cfg.service) {
                    Ok(settled) => return Ok(settled),
                    Err(observed) => last_observed = observed,
                }
                next_check = Instant::now() + SETTLE_CHECK_EVERY;
            }
            if Instant::now() >= deadline {
                return Err(Halt::Violation(Check::fail(
                    "one-incumbent/settled",
                    not_settled(bound, &last_observed),
                )));
            }
            nap(pending);
        }
    }

    /// Cold-start a clean service process after the service died.
    fn restart(&mut self, why: &str) -> Result<(), Halt> {
        let at_ns = monotonic_ns();
        let env = self.service_env();
        let name = self.fx.cold_start(&env)?;
        self.restarts.push(Restart {
            at_ns,
            why: format!("{why}: restarted as {name}"),
        });
        match self.settle(None, &mut Vec::new())? {
            Settled::Incumbent { name, .. } => {
                self.incumbent = Some(name);
                Ok(())
            }
            Settled::NoService => Err(Halt::Violation(Check::fail(
                "one-incumbent/restart",
                format!(
                    "the service was restarted ({why}) as {name}, which died too; see \
                     {name}.stderr"
                ),
            ))),
        }
    }

    /// Invariants 1-5 while the final incumbent still serves.
    fn final_checks(
        &mut self,
        writer: Option<&ClientReport>,
        reader: Option<&ReaderReport>,
        workload_written: Option<Result<(), String>>,
        result: &mut EpisodeResult,
    ) {
        let Some(name) = self.incumbent.clone() else {
            self.checks
                .push(Check::fail("one-incumbent", "no incumbent at the end"));
            return;
        };
        let Some(pid) = self.fx.process(&name).and_then(|p| p.pid) else {
            self.checks.push(Check::fail(
                "one-incumbent",
                format!("the final incumbent {name} has no known pid"),
            ));
            return;
        };
        let merged = writer.map(|w| {
            let mut all = w.clone();
            all.acked
                .extend(reader.iter().flat_map(|r| r.acked.iter().cloned()));
            all
        });
        let probes = match &self.cfg.service {
            ServiceMode::FakePeer { .. } => invariants::FAKE_PEER,
            ServiceMode::Custom(_) => invariants::Probes {
                fds: service::check_fds,
                serves: service::accepts_everywhere,
            },
        };
        self.checks.extend(invariants::serving_checks(
            &self.fx,
            pid,
            &name,
            self.first_lock_inode,
            merged.as_ref().zip(writer),
            &probes,
        ));
        if let Some(all) = &merged {
            result.acked_writes_verified = all.acked.len() as u64;
            result.reads_verified = reader.map_or(0, |r| r.reads_ok);
        }
        if let Some(written) = workload_written {
            self.checks.push(match written {
                Ok(()) => Check::pass("workload/write", "the workload's write phase exited 0"),
                Err(e) => Check::fail("workload/write", e),
            });
            if let Some(cmd) = self.cfg.service.workload() {
                self.checks.push(Workload::verify(cmd, &self.fx));
            }
        }
        self.checks.push(if self.fx.journal().exists() {
            Check::fail("journal", "a journal is left at the end")
        } else {
            Check::pass("journal", "absent at the end")
        });
    }

    /// The checks that need every exit and every log.
    fn post_mortem(
        &mut self,
        result: &mut EpisodeResult,
        writer: Option<&ClientReport>,
        reader: Option<&ReaderReport>,
        prober: &ProberReport,
    ) {
        let logs = self.fx.logs();
        // Measure each kill's phase, now that every log is complete.
        for (k, (processes, start_ns)) in self.kills.iter_mut().zip(&self.kill_context) {
            if k.idle {
                continue;
            }
            let run_events = logs
                .iter()
                .filter(|l| processes.contains(&l.process))
                .flat_map(|l| l.events.iter())
                .filter(|e| e.mono_ns >= *start_ns);
            k.phase = stage_at(run_events, k.at_ns);
        }
        for run in &mut self.runs {
            let log = logs.iter().find(|l| l.process == run.supervisor);
            run.recovered_journal = log.is_some_and(|l| l.has(events::RECOVER));
            if run.outcome == RunOutcome::Committed
                && let Some(log) = log
            {
                let at = |name: &str| {
                    log.events
                        .iter()
                        .find(|e| e.name == name)
                        .map(|e| e.mono_ns)
                };
                if let (Some(p), Some(c)) = (at(events::PREPARE), at(events::COMMIT)) {
                    run.latency_ms = Some(c.saturating_sub(p) as f64 / 1e6);
                }
            }
        }
        let crash_record = read_crash_record(&self.fx.crash_record());
        let processes = self.fx.processes().to_vec();
        let ev = Evidence {
            logs: &logs,
            processes: &processes,
            kills: &self.kills,
            runs: &self.runs,
            crash_record: &crash_record,
            restarts: &self.restarts,
            schedule: Some(&self.cfg.schedule),
            timeouts: Some(&self.cfg.timeouts),
            ..Evidence::default()
        };
        let complete = result.error.is_none() && !self.checks.iter().any(|c| !c.ok);
        self.checks.push(invariants::check_flock_intervals(&logs));
        self.checks.push(rules::check_exits(&ev));
        self.checks.push(rules::check_restarts(&ev));
        self.checks.push(checks::check_crash_points(&ev));
        self.checks.push(checks::check_successor_identity(&ev));
        self.checks.push(checks::check_superseded_after_ready(&ev));
        if complete {
            // Only meaningful for an episode that ran to its end.
            self.checks.push(checks::check_journal_recovered(&ev));
            self.checks.push(checks::check_outcomes(&ev));
        }
        let (accounting_check, accounting) =
            checks::check_client_accounting(&ev, reader, prober, writer.map_or(0, |w| w.refusals));
        self.checks.push(accounting_check);
        result.accounting = accounting;
        result.self_recoveries = logs
            .iter()
            .flat_map(|l| l.events.iter())
            .filter(|e| e.name == events::INCUMBENT_SUPERVISOR_LOST)
            .count() as u64;
        for p in &processes {
            if let Some(spec) = &p.armed {
                for point in checks::exiting_points(spec) {
                    result.armed.push((point.to_string(), p.name.clone()));
                }
            }
        }
        result.fired = name_crash_record(&self.fx, &crash_record);
    }

    /// Move what was found into the result; render the text and copy the
    /// logs when it failed (or when asked).
    fn finish(&mut self, result: &mut EpisodeResult, artifacts: Option<&Path>) {
        result.runs = std::mem::take(&mut self.runs);
        result.kills = std::mem::take(&mut self.kills);
        result.missed = std::mem::take(&mut self.missed);
        result.restarts = std::mem::take(&mut self.restarts);
        result.checks = std::mem::take(&mut self.checks);
        let failed = !result.passed();
        if !failed && !self.cfg.explain {
            return;
        }
        let mut seen = Observed::collect(&self.fx);
        result.checks.extend(seen.malformed_logs());
        render::mark_kills(&mut seen.logs, &result.kills);
        let title = format!(
            "chaos seed {:#x} episode {}",
            self.cfg.run_seed, self.cfg.index
        );
        let rendered = timeline::render(&title, &seen);
        if let Some(dir) = artifacts
            && (failed || self.cfg.explain)
        {
            let target = dir.join(&self.cfg.artifact_name);
            match render::copy_dir(self.fx.root(), &target) {
                Ok(()) => result.artifacts = Some(target),
                Err(e) => {
                    result.error.get_or_insert(format!(
                        "cannot copy the episode's logs to {}: {e}",
                        target.display()
                    ));
                }
            }
        }
        let text = render::episode_text(self.cfg, result, &seen, &rendered);
        if let Some(dir) = &result.artifacts {
            let _ = std::fs::write(dir.join("failure.txt"), &text);
            if let Ok(json) = serde_json::to_string_pretty(&result.schedule) {
                let _ = std::fs::write(dir.join("schedule.json"), json);
            }
        }
        result.text = Some(text);
    }
}

/// Sleep one poll step: short while a kill waits for its trigger, never past
/// a due kill.
fn nap(pending: &[Pending]) {
    let step = if pending.is_empty() { POLL } else { POLL_ARMED };
    let now = monotonic_ns();
    let until_due = pending
        .iter()
        .filter_map(|p| p.due_ns)
        .map(|due| Duration::from_nanos(due.saturating_sub(now)))
        .min();
    std::thread::sleep(until_due.map_or(step, |d| d.min(step)));
}

fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| crate::procs::parse_stat(&t))
        .is_some_and(|s| s.is_live())
}
