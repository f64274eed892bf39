//! `handoff-supervisor daemon`: the long-running supervisor, for systemd or
//! any process manager.
//!
//! One thread (the loop in [`Daemon::run`]) owns all state; everything else
//! talks to it through one channel: a signal thread (SIGTERM, SIGINT, SIGHUP,
//! SIGCHLD, caught with `signal-hook`'s self-pipe; no signal is blocked, so
//! children start with a clean mask, and caught signals revert to their
//! default action across `exec`), the trigger socket's threads, and at most
//! one worker thread running an *operation* — a cold start or a handoff,
//! each bounded by the library's timeouts. A signal may interrupt a blocking
//! call on another thread; the library's frame I/O retries `EINTR`.
//!
//! What it does, and the decisions taken where the issue left a choice:
//!
//! - **Listeners**: inherited through `LISTEN_FDS` (systemd socket
//!   activation) or bound from `[listeners]`; held until the daemon exits,
//!   so the kernel's accept queue never closes across handoffs or restarts.
//! - **Start**: bind the trigger socket first (a second daemon fails here,
//!   before touching anything), recover the journal
//!   (`Supervisor::resume_from_journal`), then adopt an incumbent that
//!   already answers on the control socket (left by a previous daemon) or
//!   cold-start one. `READY=1` goes to systemd once an incumbent answers.
//! - **Children**: the daemon owns the incumbent's `Child` (from the cold
//!   start, then from each committed `HandoffOutcome`) and reaps it; after a
//!   commit the old incumbent is *retired*: reaped when it exits, killed if
//!   it is still alive `retire_timeout_ms` after the commit. It only ever
//!   waits for its own children by pid, never `waitpid(-1)`, so the library's
//!   own reaping of a failed successor is untouched. An adopted incumbent is
//!   not a child: it is watched through a pidfd, whose exit a thread waits
//!   for (noticed at once), and signalled through it (never a recycled pid).
//! - **Adoption**: an incumbent left running by a killed daemon is adopted
//!   with its listeners: without socket activation they are copied out of
//!   its FD table (`pidfd_getfd`), so they are the very sockets clients
//!   queue on and nothing is ever refused.
//! - **Restart** (systemd's `Restart=`): an incumbent that dies outside a
//!   handoff is cold-started again after `restart.delay_ms`, per
//!   `restart.policy`, at most `restart.burst` times per
//!   `restart.interval_ms`; past that the daemon stops and exits 1 so the
//!   unit fails visibly. One that dies *during* a handoff is judged when the
//!   handoff ends: a commit means the successor serves, anything else
//!   restarts.
//! - **Rollback**: a commit that changes the binary keeps the one it
//!   replaced and starts a probation (`rollback.probation_ms`). An incumbent
//!   that dies on probation, where a restart would follow, is restarted as
//!   the previous binary instead (reported in `status` as `rolled_back`, in
//!   STATUS= and as an event). The previous binary is then forgotten: if it
//!   dies too, that is a plain restart of it under the same limits, so a
//!   rollback never loops. A handoff to the same path starts no probation
//!   (there is nothing else to go back to).
//! - **Triggers**: `handoff [binary]` runs one handoff and replies when it
//!   ends; a committed `binary` becomes the service's binary from then on
//!   (restarts and later handoffs use it). `status` replies at once, even
//!   mid-handoff. SIGHUP is `handoff` with no one waiting for the reply.
//! - **Shutdown** (SIGTERM, SIGINT): stop taking triggers (the socket file
//!   is removed), let an in-flight operation run to its end — the library
//!   has no way to abort a handoff half-way from outside, and its deadline
//!   bounds it — then SIGTERM the incumbent (and any retiring one), SIGKILL
//!   what is left after `stop_timeout_ms`, reap, exit 0. Stopping the unit
//!   stops the service, as systemd expects; a handoff never outlives it.
//!
//! Exit codes: 0 after a clean stop; 1 when the service could not be kept
//! running (restart limit, or the incumbent exited under `policy = "never"`
//! or a failing exit under `"on-failure"`); 3 when it could not start
//! (config, sockets, listeners).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use handoff::{Error, HandoffOutcome, SpawnSpec, Supervisor, SupervisorTimeouts};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::config::{DaemonConfig, RestartPolicy};
use crate::listeners::Listeners;
use crate::notify::Notifier;
use crate::probe::{self, Answer};
use crate::trigger::{self, Command, Request, TriggerServer};

/// Event names (tracing targets) of the daemon, beside the library's
/// `handoff::events`. Documented in `docs/events.md`.
pub mod events {
    /// The daemon is up: listeners held, trigger socket bound.
    pub const STARTED: &str = "handoff.daemon.started";
    /// A cold-started incumbent answered on the control socket.
    pub const INCUMBENT_STARTED: &str = "handoff.daemon.incumbent_started";
    /// A cold start failed (the process exited or never answered).
    pub const START_FAILED: &str = "handoff.daemon.start_failed";
    /// An incumbent left by a previous daemon answered; it is adopted.
    pub const INCUMBENT_ADOPTED: &str = "handoff.daemon.incumbent_adopted";
    /// The incumbent exited (field `during_handoff`).
    pub const INCUMBENT_EXITED: &str = "handoff.daemon.incumbent_exited";
    /// A restart is scheduled (fields `delay_ms`, `restarts`).
    pub const RESTART: &str = "handoff.daemon.restart";
    /// A committed build died on probation; the previous binary is started
    /// instead (fields `bad_binary`, `binary`, `reason`, `after_commit_ms`).
    pub const ROLLED_BACK: &str = "handoff.daemon.rolled_back";
    /// A trigger request arrived (fields `command`, `peer_pid`).
    pub const TRIGGER: &str = "handoff.daemon.trigger";
    /// A trigger connection was refused (another uid, too many, error).
    pub const TRIGGER_REFUSED: &str = "handoff.daemon.trigger_refused";
    /// A previous incumbent was reaped after a commit (field `status`).
    pub const RETIRED: &str = "handoff.daemon.retired";
    /// Shutdown began (field `signal` or `reason`).
    pub const SHUTDOWN: &str = "handoff.daemon.shutdown";
    /// The daemon is exiting (field `exit_code`).
    pub const STOPPED: &str = "handoff.daemon.stopped";
}

const AFTER_HELP: &str = "\
The daemon holds the listeners, starts the first incumbent, recovers the
journal, serves trigger requests on trigger_socket (mode 0600, same uid or
root only) and restarts the incumbent if it dies, until SIGTERM/SIGINT.
SIGHUP hands off to the current binary. The config format is described in
docs/daemon.md; an example systemd unit is docs/handoff-supervisor.service.

UNDER SYSTEMD (Type=notify): READY=1 once an incumbent answers, MAINPID=<the
daemon> and STATUS=<one line> at every change, STOPPING=1 on shutdown. With
socket activation, LISTEN_FDNAMES (FileDescriptorName=) must match the
config's [listeners] names, or [listeners] must be absent.

EXIT CODES:
  0   stopped cleanly (SIGTERM/SIGINT)
  1   the service could not be kept running (restart limit, restart policy)
  3   could not start: config, sockets, listeners (reason on stderr)";

/// `handoff-supervisor daemon`: supervise a service for as long as it runs.
#[derive(Debug, clap::Parser)]
#[command(
    name = "handoff-supervisor daemon",
    bin_name = "handoff-supervisor daemon",
    after_help = AFTER_HELP
)]
pub struct DaemonCli {
    /// The config file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// Check the config, print it as understood, and exit: 0 when valid, 3
    /// when not. Nothing is bound or started.
    #[arg(long)]
    check: bool,
}

/// Exit code: stopped cleanly.
const EXIT_STOPPED: i32 = 0;
/// Exit code: the service could not be kept running.
const EXIT_GAVE_UP: i32 = 1;
/// Exit code: start-up failed.
const EXIT_START_FAILED: i32 = 3;
/// Longest the loop sleeps without an event (every exit is an event; this
/// only bounds how late a timer can be if a wake-up were ever missed).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// After SIGKILL, how long to wait for the kernel before exiting anyway.
const KILL_REAP_BOUND: Duration = Duration::from_secs(5);
/// How long replies still being written may delay the exit.
const TRIGGER_DRAIN_BOUND: Duration = Duration::from_secs(1);

/// Everything that reaches the loop.
enum Event {
    Signal(Signal),
    Trigger(Request),
    ColdStartDone(Result<Child, String>),
    HandoffDone {
        binary: PathBuf,
        result: handoff::Result<HandoffOutcome>,
    },
    /// An adopted incumbent's pidfd became readable: it exited.
    AdoptedExited,
}

/// Who serves now.
enum Incumbent {
    None,
    /// Our child: reaped with `try_wait`.
    Owned(Child),
    /// Left by a previous daemon: watched and signalled through its pidfd.
    Adopted(handoff::fd::PidFd),
}

impl Incumbent {
    fn pid(&self) -> Option<u32> {
        match self {
            Incumbent::None => None,
            Incumbent::Owned(c) => Some(c.id()),
            Incumbent::Adopted(pidfd) => Some(pidfd.pid()),
        }
    }
}

/// An incumbent that handed off and must now exit.
struct Retired {
    child: Child,
    kill_at: Instant,
}

/// The operation the worker thread runs, and who waits for its end.
struct Operation {
    kind: OperationKind,
    waiters: Vec<mpsc::Sender<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationKind {
    ColdStart,
    Handoff,
}

enum Phase {
    Running,
    /// Shutdown began; children get SIGTERM once no operation runs.
    Stopping {
        /// When SIGTERM went to the children, with the SIGKILL time.
        terminated: Option<Instant>,
        killed_at: Option<Instant>,
    },
}

#[derive(Default)]
struct Stats {
    committed: u64,
    aborted: u64,
    failed: u64,
    restarts: u64,
    rollbacks: u64,
}

struct Daemon {
    config: DaemonConfig,
    supervisor: Arc<Supervisor>,
    timeouts: SupervisorTimeouts,
    listeners: Listeners,
    notifier: Notifier,
    tx: mpsc::Sender<Event>,
    /// The service's binary: the configured one, then each committed one.
    binary: PathBuf,
    /// The binary the last binary-changing commit replaced, with the end of
    /// that commit's probation; `None` once used or past.
    previous: Option<(PathBuf, Instant)>,
    /// When the last commit happened, for the rollback's report.
    committed_at: Option<Instant>,
    /// The last rollback, for `status`, until the next commit.
    rolled_back: Option<serde_json::Value>,
    incumbent: Incumbent,
    retired: Vec<Retired>,
    operation: Option<Operation>,
    /// The incumbent died while an operation ran: decide when it ends.
    died_during_operation: bool,
    restart_at: Option<Instant>,
    restart_history: VecDeque<Instant>,
    stats: Stats,
    last_handoff: Option<serde_json::Value>,
    ready_sent: bool,
    phase: Phase,
    exit_code: i32,
    started_at: Instant,
}

/// Run the daemon; returns the exit code.
pub fn run(cli: DaemonCli) -> i32 {
    if cli.check {
        return match DaemonConfig::load(&cli.config) {
            Ok(config) => {
                println!("{config:#?}");
                let problems = crate::preflight::problems(&config, true);
                for p in &problems {
                    eprintln!("handoff-supervisor daemon: {}: {p}", cli.config.display());
                }
                if problems.is_empty() {
                    println!("config {} is valid", cli.config.display());
                    EXIT_STOPPED
                } else {
                    EXIT_START_FAILED
                }
            }
            Err(e) => {
                eprintln!("handoff-supervisor daemon: {e}");
                EXIT_START_FAILED
            }
        };
    }
    match start(&cli) {
        Ok((mut daemon, rx, trigger)) => daemon.run(&rx, trigger),
        Err(e) => {
            eprintln!("handoff-supervisor daemon: {e}");
            EXIT_START_FAILED
        }
    }
}

/// Everything before the loop. Takes the listeners before any thread
/// exists.
fn start(cli: &DaemonCli) -> Result<(Daemon, mpsc::Receiver<Event>, TriggerServer), String> {
    let config = DaemonConfig::load(&cli.config)?;
    // LISTEN_FDS meant for another process (LISTEN_PID) yields none.
    let inherited = match Listeners::inherited()? {
        Some(inherited) if !inherited.names().is_empty() => {
            config.check_inherited_names(&inherited.names())?;
            Some(inherited)
        }
        _ => None,
    };
    // Fail now on what would fail later (the listeners are bound, or
    // adopted, below: their errors come from there).
    let problems = crate::preflight::problems(&config, false);
    if !problems.is_empty() {
        return Err(format!(
            "{}: {}",
            cli.config.display(),
            problems.join(&format!("\n{}: ", cli.config.display()))
        ));
    }
    let trigger_listener = trigger::bind(&config.trigger_socket)?;
    let remove_trigger = || {
        let _ = std::fs::remove_file(&config.trigger_socket);
    };
    let fail = |e: String| {
        remove_trigger();
        e
    };

    let defaults = SupervisorTimeouts::default();
    let t = &config.timeouts;
    let timeouts = SupervisorTimeouts {
        liveness: t.liveness.unwrap_or(defaults.liveness),
        hello_read: t.hello_read.unwrap_or(defaults.hello_read),
        wire_slack: t.wire_slack.unwrap_or(defaults.wire_slack),
        probe: t.probe.unwrap_or(defaults.probe),
        ..defaults
    };
    let mut supervisor = Supervisor::new(&config.control_socket)
        .map_err(|e| fail(e.to_string()))?
        .with_timeouts(timeouts.clone());
    if let Some(journal) = &config.journal {
        supervisor = supervisor.with_journal(journal.clone());
    }
    if let Some(build_id) = &config.build_id {
        supervisor = supervisor.with_build_id(build_id.as_bytes().to_vec());
    }
    // Recovery waits for the incumbent, not for the listeners: it runs
    // before they are adopted from that incumbent.
    match supervisor.resume_from_journal() {
        Ok(Some(j)) => {
            tracing::warn!(target: handoff::events::RECOVER, handoff_id = %j.handoff_id, phase = ?j.phase, "recovered an interrupted handoff; journal cleared")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(target: handoff::events::RECOVER, error = %e, "journal recovery failed; continuing")
        }
    }
    let incumbent = match probe::ask_until_not_refused(&config.control_socket, timeouts.probe) {
        Answer::Incumbent(pid) => match handoff::fd::PidFd::open(pid) {
            Ok(pidfd) => {
                tracing::info!(target: events::INCUMBENT_ADOPTED, pid, "an incumbent already answers on the control socket; adopted");
                Incumbent::Adopted(pidfd)
            }
            // It exited since it answered: start afresh.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Incumbent::None,
            Err(e) => {
                return Err(fail(format!(
                    "cannot watch the incumbent pid {pid} that answers on {} (pidfd_open: {e}); \
                     Linux 5.3 or later is needed to adopt it",
                    config.control_socket.display()
                )));
            }
        },
        Answer::Nobody => Incumbent::None,
        Answer::Refused(why) | Answer::Unexpected(why) => {
            return Err(fail(format!(
                "the control socket {} answers, but not as an idle incumbent ({why}); \
                 is another supervisor running?",
                config.control_socket.display()
            )));
        }
    };
    // The listeners: systemd's; else the adopted incumbent's own sockets
    // (binding anew would fail, or open a second socket beside the one
    // clients queue on); else bound here.
    let listeners = match (inherited, &incumbent) {
        (Some(inherited), _) => inherited,
        (None, Incumbent::Adopted(pidfd)) => {
            Listeners::adopt(pidfd, &config.listeners, "[listeners]").map_err(fail)?
        }
        (None, _) => Listeners::bind(&config.listeners, "[listeners]").map_err(fail)?,
    };
    if listeners.names().is_empty() {
        tracing::warn!("no listeners: neither [listeners] nor LISTEN_FDS gives any");
    }
    for (name, fd) in listeners.named_fds() {
        supervisor = supervisor.with_listener(name, fd);
    }

    let (tx, rx) = mpsc::channel();
    let caught = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ];
    let mut signals =
        signal_hook::iterator::Signals::new(caught.map(|s| s as i32)).map_err(|e| {
            remove_trigger();
            format!("cannot catch signals: {e}")
        })?;
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for raw in signals.forever() {
                    let Ok(sig) = Signal::try_from(raw) else {
                        continue;
                    };
                    if tx.send(Event::Signal(sig)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }
    let trigger = {
        let tx = tx.clone();
        TriggerServer::start(
            trigger_listener,
            config.trigger_socket.clone(),
            move |req| tx.send(Event::Trigger(req)).is_ok(),
        )
        .map_err(|e| {
            remove_trigger();
            format!("cannot start the trigger thread: {e}")
        })?
    };
    tracing::info!(
        target: events::STARTED,
        pid = std::process::id(),
        listeners = ?listeners.names(),
        inherited = listeners.is_inherited(),
        adopted = listeners.is_adopted(),
        trigger_socket = %config.trigger_socket.display(),
        "daemon started"
    );
    let daemon = Daemon {
        binary: config.binary.clone(),
        previous: None,
        committed_at: None,
        rolled_back: None,
        supervisor: Arc::new(supervisor),
        timeouts,
        listeners,
        notifier: Notifier::from_env(),
        tx,
        incumbent,
        retired: Vec::new(),
        operation: None,
        died_during_operation: false,
        restart_at: None,
        restart_history: VecDeque::new(),
        stats: Stats::default(),
        last_handoff: None,
        ready_sent: false,
        phase: Phase::Running,
        exit_code: EXIT_STOPPED,
        started_at: Instant::now(),
        config,
    };
    Ok((daemon, rx, trigger))
}

impl Daemon {
    fn run(&mut self, rx: &mpsc::Receiver<Event>, mut trigger: TriggerServer) -> i32 {
        if let Incumbent::Adopted(pidfd) = &self.incumbent {
            self.watch_adopted(pidfd);
        }
        match self.incumbent.pid() {
            Some(pid) => self.announce_ready(pid),
            None => self.start_cold_start(),
        }
        loop {
            let now = Instant::now();
            let wait = self
                .next_deadline()
                .map_or(MAX_IDLE, |d| d.saturating_duration_since(now))
                .min(MAX_IDLE);
            match rx.recv_timeout(wait) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                // We hold a sender ourselves.
                Err(RecvTimeoutError::Disconnected) => unreachable!("the loop holds a sender"),
            }
            self.reap();
            self.on_timers();
            if matches!(self.phase, Phase::Stopping { .. }) {
                // No new requests; ones already queued get an error reply.
                trigger.close();
            }
            if self.finished() {
                break;
            }
        }
        // Answer what is still queued (with an error), then let replies
        // already computed reach their clients.
        while let Ok(event) = rx.try_recv() {
            if let Event::Trigger(req) = event {
                let _ = req.reply.send("error: the daemon is shutting down".into());
            }
        }
        trigger.stop(TRIGGER_DRAIN_BOUND);
        tracing::info!(target: events::STOPPED, exit_code = self.exit_code, "daemon stopped");
        self.exit_code
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(Signal::SIGCHLD) | Event::AdoptedExited => {} // reaped after every event
            Event::Signal(Signal::SIGHUP) => {
                tracing::info!(target: events::TRIGGER, command = "handoff", source = "SIGHUP", "handoff requested");
                if let Err(why) = self.start_handoff(None, None) {
                    tracing::warn!(target: events::TRIGGER, reason = %why, "SIGHUP handoff not started");
                }
            }
            Event::Signal(sig) => self.begin_shutdown(&format!("{sig}"), EXIT_STOPPED),
            Event::Trigger(req) => self.on_trigger(req),
            Event::ColdStartDone(result) => self.on_cold_start_done(result),
            Event::HandoffDone { binary, result } => self.on_handoff_done(binary, result),
        }
    }

    fn on_trigger(&mut self, req: Request) {
        let command = match &req.command {
            Command::Status => "status".to_string(),
            Command::Handoff { binary: None } => "handoff".to_string(),
            Command::Handoff { binary: Some(b) } => format!("handoff {}", b.display()),
        };
        tracing::info!(target: events::TRIGGER, command = %command, peer_pid = req.peer_pid, "trigger request");
        match req.command {
            Command::Status => {
                // Never report a dead incumbent as serving.
                self.reap();
                let _ = req.reply.send(self.status_json().to_string());
            }
            Command::Handoff { binary } => {
                if let Err(why) = self.start_handoff(binary, Some(req.reply.clone())) {
                    let _ = req.reply.send(format!("error: {why}"));
                }
            }
        }
    }

    // ----- operations ------------------------------------------------------

    fn spawn_spec(&self, binary: PathBuf) -> SpawnSpec {
        let mut spec = SpawnSpec::new(binary);
        spec.args = self.config.args.clone();
        spec.env = self.config.env.clone();
        spec.deadline = self.config.timeouts.deadline;
        spec.drain_grace = self.config.timeouts.drain_grace;
        spec
    }

    fn start_cold_start(&mut self) {
        debug_assert!(self.operation.is_none(), "one operation at a time");
        self.restart_at = None;
        let spec = self.spawn_spec(self.binary.clone());
        let supervisor = Arc::clone(&self.supervisor);
        let control = self.config.control_socket.clone();
        let timeouts = self.timeouts.clone();
        let tx = self.tx.clone();
        self.operation = Some(Operation {
            kind: OperationKind::ColdStart,
            waiters: Vec::new(),
        });
        self.notifier
            .status(&format!("starting {}", spec.binary.display()));
        let spawned = std::thread::Builder::new()
            .name("cold-start".into())
            .spawn(move || {
                let result = match supervisor.cold_start(&spec) {
                    Err(e) => Err(format!("cannot start {}: {e}", spec.binary.display())),
                    Ok(mut child) => match probe::wait_until_answers(
                        &mut child,
                        &control,
                        &timeouts,
                        "timeouts.probe_timeout_ms",
                    ) {
                        Ok(()) => Ok(child),
                        Err(why) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            Err(format!(
                                "the cold-started incumbent (pid {}) {why}; it was killed",
                                child.id()
                            ))
                        }
                    },
                };
                let _ = tx.send(Event::ColdStartDone(result));
            });
        if let Err(e) = spawned {
            self.operation = None;
            self.on_cold_start_done(Err(format!("cannot start the worker thread: {e}")));
        }
    }

    fn on_cold_start_done(&mut self, result: Result<Child, String>) {
        self.operation = None;
        match result {
            Ok(child) => {
                let pid = child.id();
                tracing::info!(target: events::INCUMBENT_STARTED, pid, binary = %self.binary.display(), "incumbent started");
                self.incumbent = Incumbent::Owned(child);
                self.announce_ready(pid);
            }
            Err(why) => {
                tracing::error!(target: events::START_FAILED, error = %why, "cold start failed");
                if matches!(self.phase, Phase::Running) {
                    self.schedule_restart(&why);
                }
            }
        }
    }

    /// Start a handoff to `binary` (default: the current one). `Err` says
    /// why it cannot start now.
    fn start_handoff(
        &mut self,
        binary: Option<PathBuf>,
        waiter: Option<mpsc::Sender<String>>,
    ) -> Result<(), String> {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return Err("the daemon is shutting down".into());
        }
        match (&self.operation, &self.incumbent) {
            (Some(op), _) if op.kind == OperationKind::Handoff => {
                return Err("a handoff is already in progress; retry when it ends".into());
            }
            (Some(_), _) | (None, Incumbent::None) => {
                return Err(
                    "no incumbent serves yet (starting or restarting); retry once \
                            `status` shows state \"serving\""
                        .into(),
                );
            }
            _ => {}
        }
        let binary = binary.unwrap_or_else(|| self.binary.clone());
        crate::preflight::executable(&binary)
            .map_err(|why| format!("cannot hand off to {}: {why}", binary.display()))?;
        let spec = self.spawn_spec(binary.clone());
        let supervisor = Arc::clone(&self.supervisor);
        let tx = self.tx.clone();
        self.notifier
            .status(&format!("handing off to {}", binary.display()));
        std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let result = supervisor.perform_handoff(spec);
                    // Report the handoff once its journal clear is on disk:
                    // a trigger that returned leaves nothing in flight.
                    if let Err(e) = supervisor.sync_journal() {
                        tracing::warn!(target: handoff::events::JOURNAL, error = %e, "journal clear failed; the next start recovers from it");
                    }
                    result
                }))
                .unwrap_or_else(|_| {
                    Err(Error::Protocol(
                        "the handoff thread panicked (a bug: please report it)".into(),
                    ))
                });
                let _ = tx.send(Event::HandoffDone { binary, result });
            })
            .map_err(|e| format!("cannot start the handoff thread: {e}"))?;
        self.operation = Some(Operation {
            kind: OperationKind::Handoff,
            waiters: waiter.into_iter().collect(),
        });
        Ok(())
    }

    fn on_handoff_done(&mut self, binary: PathBuf, result: handoff::Result<HandoffOutcome>) {
        let waiters = self
            .operation
            .take()
            .map(|op| op.waiters)
            .unwrap_or_default();
        let died = std::mem::take(&mut self.died_during_operation);
        let reply = match result {
            Ok(outcome) if outcome.committed => {
                self.stats.committed += 1;
                let id = outcome.handoff_id;
                let new = match outcome.child {
                    Some(child) => Incumbent::Owned(child),
                    None => match probe::ask_until_not_refused(
                        &self.config.control_socket,
                        self.timeouts.hello_read,
                    ) {
                        // Not expected (the library hands the child over on
                        // commit); keep track of whoever answers.
                        Answer::Incumbent(pid) => match handoff::fd::PidFd::open(pid) {
                            Ok(pidfd) => {
                                self.watch_adopted(&pidfd);
                                Incumbent::Adopted(pidfd)
                            }
                            Err(_) => Incumbent::None,
                        },
                        _ => Incumbent::None,
                    },
                };
                let pid = new.pid();
                match std::mem::replace(&mut self.incumbent, new) {
                    Incumbent::Owned(old) => self.retired.push(Retired {
                        child: old,
                        kill_at: Instant::now() + self.config.timeouts.retire,
                    }),
                    // Not our child: it exits on Commit, its parent reaps it.
                    Incumbent::Adopted(_) | Incumbent::None => {}
                }
                let now = Instant::now();
                self.previous = (binary != self.binary && self.config.rollback.enabled)
                    .then(|| (self.binary.clone(), now + self.config.rollback.probation));
                self.committed_at = Some(now);
                self.rolled_back = None;
                self.binary = binary;
                let pid_text = pid.map_or_else(|| "unknown".into(), |p| p.to_string());
                self.last_handoff = Some(serde_json::json!({
                    "handoff_id": id.to_string(), "result": "committed", "pid": pid,
                }));
                self.notifier.status(&self.status_line());
                if pid.is_none() {
                    // Nobody to serve: treat it as a death.
                    self.incumbent_gone("the committed successor cannot be found", false);
                }
                format!("committed {id} pid={pid_text}")
            }
            Ok(outcome) => {
                self.stats.aborted += 1;
                let reason = outcome
                    .abort_reason
                    .unwrap_or_else(|| "no reason given".into());
                self.last_handoff = Some(serde_json::json!({
                    "handoff_id": outcome.handoff_id.to_string(), "result": "aborted", "reason": reason,
                }));
                self.notifier.status(&self.status_line());
                format!("aborted {}: {reason}", outcome.handoff_id)
            }
            Err(e) => {
                self.stats.failed += 1;
                // Name the binary: a spawn failure says only "Exec format
                // error" or "Permission denied" by itself.
                let e = format!("handoff to {}: {e}", binary.display());
                self.last_handoff = Some(serde_json::json!({
                    "result": "failed", "error": e,
                }));
                self.notifier.status(&self.status_line());
                format!("error: {e}")
            }
        };
        for w in waiters {
            let _ = w.send(reply.clone());
        }
        if died && self.incumbent.pid().is_none() {
            self.incumbent_gone(
                "the incumbent died during a handoff that did not commit",
                false,
            );
        }
    }

    // ----- children ----------------------------------------------------------

    /// A thread that waits for the adopted incumbent's exit (its pidfd
    /// becomes readable) and wakes the loop. Our own children need none:
    /// their exit raises SIGCHLD.
    fn watch_adopted(&self, pidfd: &handoff::fd::PidFd) {
        let watched = match pidfd.try_clone() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(target: events::INCUMBENT_EXITED, pid = pidfd.pid(), error = %e, "cannot watch the adopted incumbent; its exit is noticed at the next event");
                return;
            }
        };
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("adopted-watch".into())
            .spawn(move || {
                if watched.wait_exited(None).is_ok() {
                    let _ = tx.send(Event::AdoptedExited);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(target: events::INCUMBENT_EXITED, pid = pidfd.pid(), error = %e, "cannot start the thread watching the adopted incumbent");
        }
    }

    /// Collect exited children: the incumbent (ours, or adopted) and retired
    /// ones. Never `waitpid(-1)`: the library reaps its own.
    fn reap(&mut self) {
        let exited: Option<(u32, String, bool)> = match &mut self.incumbent {
            Incumbent::None => None,
            Incumbent::Owned(child) => match child.try_wait() {
                Ok(Some(status)) => Some((child.id(), describe(status), status.success())),
                Ok(None) => None,
                Err(e) => Some((child.id(), format!("cannot be waited for: {e}"), false)),
            },
            Incumbent::Adopted(pidfd) => pidfd.has_exited().then(|| {
                (
                    pidfd.pid(),
                    "gone (adopted: exit status unknown)".into(),
                    false,
                )
            }),
        };
        if let Some((pid, status, success)) = exited {
            self.incumbent = Incumbent::None;
            let during_handoff = self.operation.is_some();
            if during_handoff || matches!(self.phase, Phase::Stopping { .. }) {
                // Expected: it exits on Commit, or was told to stop.
                tracing::info!(target: events::INCUMBENT_EXITED, pid, status = %status, during_handoff, "incumbent exited");
            } else {
                tracing::warn!(target: events::INCUMBENT_EXITED, pid, status = %status, during_handoff, "incumbent exited");
            }
            if during_handoff {
                self.died_during_operation = true;
            } else {
                self.incumbent_gone(&format!("incumbent pid {pid} {status}"), success);
            }
        }
        self.retired.retain_mut(|r| match r.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::info!(target: events::RETIRED, pid = r.child.id(), status = %describe(status), "previous incumbent reaped");
                false
            }
            Err(e) => {
                tracing::warn!(target: events::RETIRED, pid = r.child.id(), error = %e, "cannot wait for a previous incumbent");
                false
            }
        });
    }

    /// The incumbent is gone outside a handoff: apply the restart policy,
    /// rolling back first if it was a new build on probation.
    fn incumbent_gone(&mut self, what: &str, success: bool) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        let restarts = match self.config.restart.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Always => true,
        };
        if restarts && let Some(why) = self.roll_back(what) {
            self.schedule_restart(&why);
            return;
        }
        match self.config.restart.policy {
            RestartPolicy::Never => {
                self.begin_shutdown(&format!("{what}; restart policy is never"), EXIT_GAVE_UP)
            }
            RestartPolicy::OnFailure if success => self.begin_shutdown(
                &format!("{what}; restart policy is on-failure"),
                EXIT_STOPPED,
            ),
            RestartPolicy::OnFailure => self.schedule_restart(what),
            RestartPolicy::Always => self.schedule_restart(what),
        }
    }

    /// When the binary that just died was committed less than
    /// `rollback.probation_ms` ago, make the previous one the service's
    /// binary again and return the reason to restart with. Used once: the
    /// previous binary is forgotten, so its own death is a plain restart.
    fn roll_back(&mut self, what: &str) -> Option<String> {
        let (previous, probation_end) = self.previous.take()?;
        let now = Instant::now();
        if now >= probation_end {
            return None;
        }
        let after_commit_ms = self
            .committed_at
            .map_or(0, |t| now.duration_since(t).as_millis() as u64);
        let bad = std::mem::replace(&mut self.binary, previous);
        self.stats.rollbacks += 1;
        let reason = format!(
            "{what} {after_commit_ms} ms after its commit (rollback.probation_ms = {})",
            self.config.rollback.probation.as_millis()
        );
        tracing::error!(target: events::ROLLED_BACK, bad_binary = %bad.display(), binary = %self.binary.display(), reason = %reason, after_commit_ms, "new build died on probation; rolling back to the previous binary");
        self.rolled_back = Some(serde_json::json!({
            "bad_binary": bad.display().to_string(),
            "binary": self.binary.display().to_string(),
            "reason": reason,
            "after_commit_ms": after_commit_ms,
        }));
        Some(format!(
            "{reason}; rolling back from {} to {}",
            bad.display(),
            self.binary.display()
        ))
    }

    fn schedule_restart(&mut self, why: &str) {
        let now = Instant::now();
        let r = &self.config.restart;
        while self
            .restart_history
            .front()
            .is_some_and(|t| now.duration_since(*t) > r.interval)
        {
            self.restart_history.pop_front();
        }
        if self.restart_history.len() >= r.burst as usize {
            let reason = format!(
                "{why}; {} restarts within {} ms (restart.burst): giving up",
                r.burst,
                r.interval.as_millis()
            );
            tracing::error!(target: events::RESTART, reason = %reason, "restart limit reached");
            self.begin_shutdown(&reason, EXIT_GAVE_UP);
            return;
        }
        self.restart_history.push_back(now);
        self.stats.restarts += 1;
        self.restart_at = Some(now + r.delay);
        tracing::warn!(target: events::RESTART, reason = %why, delay_ms = r.delay.as_millis() as u64, restarts = self.stats.restarts, "restarting the incumbent");
        self.notifier
            .status(&format!("{why}; restarting in {} ms", r.delay.as_millis()));
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if let Some(at) = self.restart_at
            && now >= at
            && self.operation.is_none()
            && matches!(self.phase, Phase::Running)
        {
            self.start_cold_start();
        }
        for r in &mut self.retired {
            if now >= r.kill_at {
                tracing::warn!(target: events::RETIRED, pid = r.child.id(), "previous incumbent still alive after retire_timeout_ms; killing it");
                let _ = r.child.kill();
                r.kill_at = now + KILL_REAP_BOUND;
            }
        }
        if let Phase::Stopping {
            terminated,
            killed_at,
        } = &mut self.phase
        {
            match (*terminated, *killed_at) {
                (None, _) if self.operation.is_none() => {
                    signal_all(&self.incumbent, &self.retired, Signal::SIGTERM);
                    *terminated = Some(now + self.config.timeouts.stop);
                }
                (Some(kill_at), None) if now >= kill_at => {
                    let pids = child_pids(&self.incumbent, &self.retired);
                    if !pids.is_empty() {
                        tracing::warn!(target: events::SHUTDOWN, pids = ?pids, "still alive after stop_timeout_ms; SIGKILL");
                    }
                    signal_all(&self.incumbent, &self.retired, Signal::SIGKILL);
                    *killed_at = Some(now);
                }
                _ => {}
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.restart_at;
        for r in &self.retired {
            next = Some(next.map_or(r.kill_at, |n| n.min(r.kill_at)));
        }
        if let Phase::Stopping {
            terminated: Some(kill_at),
            killed_at: None,
        } = self.phase
        {
            next = Some(next.map_or(kill_at, |n| n.min(kill_at)));
        }
        next
    }

    fn finished(&self) -> bool {
        let Phase::Stopping {
            terminated,
            killed_at,
        } = self.phase
        else {
            return false;
        };
        if terminated.is_none() || self.operation.is_some() {
            return false;
        }
        let all_gone = self.incumbent.pid().is_none() && self.retired.is_empty();
        let gave_up = killed_at.is_some_and(|t| t.elapsed() >= KILL_REAP_BOUND);
        if gave_up && !all_gone {
            tracing::error!(target: events::SHUTDOWN, pids = ?child_pids(&self.incumbent, &self.retired), "children survive SIGKILL; exiting anyway");
        }
        all_gone || gave_up
    }

    fn begin_shutdown(&mut self, reason: &str, exit_code: i32) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            tracing::info!(target: events::SHUTDOWN, reason, "already stopping");
            return;
        }
        tracing::info!(target: events::SHUTDOWN, reason, in_flight = self.operation.is_some(), "shutting down");
        self.exit_code = exit_code;
        self.restart_at = None;
        self.phase = Phase::Stopping {
            terminated: None,
            killed_at: None,
        };
        self.notifier.stopping(&format!("stopping: {reason}"));
    }

    // ----- status ------------------------------------------------------------

    fn announce_ready(&mut self, pid: u32) {
        let mut line = format!("serving: incumbent pid {pid} ({})", self.binary.display());
        if let Some(bad) = self
            .rolled_back
            .as_ref()
            .and_then(|r| r["bad_binary"].as_str())
        {
            line.push_str(&format!("; rolled back from {bad}"));
        }
        if self.ready_sent {
            self.notifier.status(&line);
        } else {
            self.ready_sent = true;
            self.notifier.ready(&line);
        }
    }

    fn state(&self) -> &'static str {
        match (&self.phase, &self.operation, &self.incumbent) {
            (Phase::Stopping { .. }, _, _) => "stopping",
            (_, Some(op), _) if op.kind == OperationKind::Handoff => "handing-off",
            (_, Some(_), _) => "starting",
            (_, None, Incumbent::None) if self.restart_at.is_some() => "restarting",
            (_, None, Incumbent::None) => "down",
            _ => "serving",
        }
    }

    fn status_line(&self) -> String {
        let s = &self.stats;
        let pid = self
            .incumbent
            .pid()
            .map_or_else(|| "none".into(), |p| p.to_string());
        format!(
            "{}: incumbent pid {pid}; handoffs {} committed, {} aborted, {} failed; {} restarts",
            self.state(),
            s.committed,
            s.aborted,
            s.failed,
            s.restarts
        )
    }

    /// The reply to `status`: one JSON object (documented in docs/daemon.md).
    fn status_json(&self) -> serde_json::Value {
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .addresses()
            .into_iter()
            .map(|(name, addr)| serde_json::json!({ "name": name, "addr": addr }))
            .collect();
        serde_json::json!({
            "state": self.state(),
            "daemon_pid": std::process::id(),
            "incumbent_pid": self.incumbent.pid(),
            "incumbent_adopted": matches!(self.incumbent, Incumbent::Adopted(_)),
            "binary": self.binary.display().to_string(),
            "listeners": listeners,
            "listeners_inherited": self.listeners.is_inherited(),
            "listeners_adopted": self.listeners.is_adopted(),
            "handoffs": {
                "committed": self.stats.committed,
                "aborted": self.stats.aborted,
                "failed": self.stats.failed,
            },
            "restarts": self.stats.restarts,
            "rollbacks": self.stats.rollbacks,
            "previous_binary": self.previous.as_ref().map(|(b, _)| b.display().to_string()),
            "probation_remaining_ms": self.previous.as_ref().map(|(_, end)| {
                end.saturating_duration_since(Instant::now()).as_millis() as u64
            }),
            "rolled_back": self.rolled_back,
            "retiring_pids": self.retired.iter().map(|r| r.child.id()).collect::<Vec<_>>(),
            "last_handoff": self.last_handoff,
            "notify_socket": self.notifier.is_active(),
            "uptime_ms": self.started_at.elapsed().as_millis() as u64,
        })
    }
}

/// Signal the incumbent (an adopted one through its pidfd) and every
/// retiring one (our children, not yet reaped: their pids are still theirs).
fn signal_all(incumbent: &Incumbent, retired: &[Retired], sig: Signal) {
    match incumbent {
        Incumbent::None => {}
        Incumbent::Owned(child) => {
            let _ = signal::kill(Pid::from_raw(child.id() as i32), sig);
        }
        Incumbent::Adopted(pidfd) => {
            let _ = pidfd.send_signal(sig);
        }
    }
    for r in retired {
        let _ = signal::kill(Pid::from_raw(r.child.id() as i32), sig);
    }
}

fn child_pids(incumbent: &Incumbent, retired: &[Retired]) -> Vec<u32> {
    incumbent
        .pid()
        .into_iter()
        .chain(retired.iter().map(|r| r.child.id()))
        .collect()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!(
            "was killed by signal {}",
            Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string())
        ),
        _ => status.to_string(),
    }
}
