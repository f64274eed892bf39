//! The one-shot command: perform one handoff (or one cold start) and exit.
//!
//! The supervisor holds the listening sockets for the duration of the run
//! (bound from `--listen`, or inherited through `LISTEN_FDS` when systemd or
//! a harness starts it), spawns the successor with them, drives the protocol
//! against the incumbent's control socket and leaves the new incumbent
//! running.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use handoff::{Error, SpawnSpec, Supervisor, SupervisorTimeouts};

use crate::listeners::Listeners;
use crate::probe::wait_until_answers;

/// Exit code: the handoff committed (or the cold start answered).
pub const EXIT_COMMITTED: i32 = 0;
/// Exit code: the handoff was aborted; the incumbent serves on.
pub const EXIT_ABORTED: i32 = 2;
/// Exit code: the handoff could not run, or the cold start failed.
pub const EXIT_ERROR: i32 = 3;

const AFTER_HELP: &str = "\
LISTENERS:
  With --listen, the supervisor binds each NAME=HOST:PORT itself (SO_REUSEADDR)
  and passes them to the child in that order. When its own environment carries
  LISTEN_FDS (systemd socket activation, or a harness), it takes the listeners
  from there instead, named by LISTEN_FDNAMES; --listen is then an error.
  The child finds them at FD 3.. with LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID.

COLD START:
  --cold-start spawns the binary as the first incumbent (no handoff), waits at
  most --probe-timeout-ms for it to answer Hello on --control-socket, prints
  `started pid=<n>` and exits 0, leaving it running: the listening sockets
  stay open in the child, which is then the only process holding them. A
  child that exits or never answers is killed and reaped (exit 3). The
  journal is not consulted.

OUTPUT AND EXIT CODES:
  0   committed: stdout `committed <handoff-id> pid=<new incumbent pid>`; the new
      incumbent keeps running (it is not waited for)
  2   aborted: stdout `aborted <handoff-id>: <reason>`; the incumbent serves on.
      Also clap's exit code for a usage error (message on stderr)
  3   the handoff could not run: the error and a hint on stderr
  99  an injected crash (HANDOFF_CRASH_AT)

ENVIRONMENT:
  HANDOFF_EVENT_LOG=<path>  JSON-lines event log
  HANDOFF_CRASH_AT=<spec>   arm a crash point (builds with handoff/crash-points)
  RUST_LOG=<filter>         stderr log filter (default warn)

EXAMPLE:
  handoff-supervisor --control-socket /run/svc/control.sock \\
      --journal /var/lib/svc/handoff.journal --listen kv=127.0.0.1:7000 \\
      -- /usr/bin/svc --data-dir /var/lib/svc --control-socket /run/svc/control.sock

SUBCOMMANDS:
  handoff-supervisor daemon --config <FILE>     run as a long-lived supervisor
  handoff-supervisor trigger [--socket <PATH>] handoff [BINARY] | status
  (see `handoff-supervisor daemon --help`, `handoff-supervisor trigger --help`)";

/// Hand a running service off to a new process with zero downtime: one
/// handoff per run.
///
/// Connects to the incumbent's control socket, spawns the successor with the
/// listeners, drains and seals the incumbent, lets the successor take over,
/// and commits. On an abort the incumbent resumes serving.
#[derive(Debug, Parser)]
#[command(name = "handoff-supervisor", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The incumbent's Unix control socket.
    #[arg(long, value_name = "PATH")]
    control_socket: PathBuf,

    /// Journal of the in-flight handoff's phase. When given, a journal left by
    /// a crashed supervisor is recovered (and cleared) first.
    #[arg(long, value_name = "PATH")]
    journal: Option<PathBuf>,

    /// A listener to bind and pass to the child, named NAME in LISTEN_FDNAMES
    /// (repeatable, in FD order). Not allowed when LISTEN_FDS is inherited.
    #[arg(long = "listen", value_name = "NAME=HOST:PORT", value_parser = parse_key_value)]
    listen: Vec<(String, String)>,

    /// Cap on the incumbent's drain phase.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    drain_grace_ms: u64,

    /// Cap on the whole handoff.
    #[arg(long, value_name = "MS", default_value_t = 300_000)]
    deadline_ms: u64,

    /// Longest silence accepted from a peer on any read (heartbeats reset it).
    /// Default 10000.
    #[arg(long, value_name = "MS")]
    liveness_ms: Option<u64>,

    /// Bound on a peer's first frame, Hello. Default 5000.
    #[arg(long, value_name = "MS")]
    hello_timeout_ms: Option<u64>,

    /// Slack past a cap for a reply already on the wire. Default 1000.
    #[arg(long, value_name = "MS")]
    wire_slack_ms: Option<u64>,

    /// Bound on waiting for the incumbent to answer: when recovering a
    /// journal, and after --cold-start. Default 5000.
    #[arg(long, value_name = "MS")]
    probe_timeout_ms: Option<u64>,

    /// Extra environment for the child (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    env: Vec<(String, String)>,

    /// Build identity of this supervisor, for logs.
    #[arg(long, value_name = "STR")]
    build_id: Option<String>,

    /// Start the binary as the first incumbent instead of handing off.
    #[arg(long)]
    cold_start: bool,

    /// The successor (or, with --cold-start, the first incumbent): binary and
    /// arguments, after `--`.
    #[arg(last = true, required = true, value_name = "BINARY [ARGS]...")]
    command: Vec<String>,
}

/// Parse `KEY=VALUE` (both non-empty).
pub fn parse_key_value(spec: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{spec:?}: expected <key>=<value>")),
    }
}

/// Run the one-shot command; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let listeners = match Listeners::take(&cli.listen, "--listen") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("handoff-supervisor: {e}");
            return EXIT_ERROR;
        }
    };
    let defaults = SupervisorTimeouts::default();
    let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
    let timeouts = SupervisorTimeouts {
        liveness: ms(cli.liveness_ms, defaults.liveness),
        hello_read: ms(cli.hello_timeout_ms, defaults.hello_read),
        wire_slack: ms(cli.wire_slack_ms, defaults.wire_slack),
        probe: ms(cli.probe_timeout_ms, defaults.probe),
        ..defaults
    };
    let mut supervisor = match Supervisor::new(&cli.control_socket) {
        Ok(s) => s.with_timeouts(timeouts.clone()),
        Err(e) => return error_exit(&e, &cli.control_socket),
    };
    for (name, fd) in listeners.named_fds() {
        supervisor = supervisor.with_listener(name, fd);
    }
    if let Some(journal) = &cli.journal {
        supervisor = supervisor.with_journal(journal.clone());
    }
    if let Some(build_id) = &cli.build_id {
        supervisor = supervisor.with_build_id(build_id.as_bytes().to_vec());
    }
    let (binary, args) = cli
        .command
        .split_first()
        .expect("clap requires at least the binary after `--`");
    let mut spec = SpawnSpec::new(binary);
    spec.args = args.to_vec();
    spec.env = cli.env.clone();
    spec.deadline = Duration::from_millis(cli.deadline_ms);
    spec.drain_grace = Duration::from_millis(cli.drain_grace_ms);

    if let Err(why) = crate::preflight::executable(&spec.binary) {
        eprintln!(
            "handoff-supervisor: error: cannot run {}: {why}",
            spec.binary.display()
        );
        return EXIT_ERROR;
    }
    let code = if cli.cold_start {
        cold_start(&supervisor, &spec, &cli.control_socket, &timeouts)
    } else {
        handoff_once(&supervisor, spec, &cli.control_socket)
    };
    drop(listeners);
    code
}

fn handoff_once(supervisor: &Supervisor, spec: SpawnSpec, control_socket: &Path) -> i32 {
    match supervisor.resume_from_journal() {
        Ok(Some(j)) => eprintln!(
            "handoff-supervisor: recovered an interrupted handoff {} (phase {:?}, \
             incumbent pid {}, successor pid {:?}); journal cleared",
            j.handoff_id, j.phase, j.incumbent_pid, j.successor_pid
        ),
        Ok(None) => {}
        Err(e @ handoff::Error::Refused(_)) => {
            eprintln!(
                "handoff-supervisor: {e}\n  another supervisor is driving a handoff of this service; \
                 wait for it to finish, then run this again"
            );
            return EXIT_ERROR;
        }
        Err(e) => eprintln!("handoff-supervisor: journal recovery failed: {e}; handing off anyway"),
    }
    let result = supervisor.perform_handoff(spec);
    // The journal clear lands before this process reports and exits.
    if let Err(e) = supervisor.sync_journal() {
        eprintln!("handoff-supervisor: journal clear failed: {e}; the next start recovers from it");
    }
    match result {
        Ok(outcome) if outcome.committed => {
            let pid = outcome
                .child
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |c| c.id().to_string());
            println!("committed {} pid={pid}", outcome.handoff_id);
            // The new incumbent outlives this process: dropping a `Child`
            // neither kills nor waits for it, and it is reparented on exit.
            drop(outcome.child);
            EXIT_COMMITTED
        }
        Ok(outcome) => {
            println!(
                "aborted {}: {}",
                outcome.handoff_id,
                outcome.abort_reason.as_deref().unwrap_or("no reason given")
            );
            EXIT_ABORTED
        }
        Err(e) => error_exit(&e, control_socket),
    }
}

fn error_exit(e: &Error, control_socket: &Path) -> i32 {
    let socket = control_socket.display();
    let hint = match e {
        Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            format!("is the incumbent running? check --control-socket {socket}")
        }
        Error::Refused(_) | Error::HandoffInProgress => {
            "another supervisor is driving a handoff; retry once it ends".to_string()
        }
        Error::Timeout(_) => "a peer went silent: check its stderr and the event log; \
             raise --liveness-ms / --drain-grace-ms / --deadline-ms if it was only slow"
            .to_string(),
        Error::PidMismatch { .. } | Error::VersionMismatch { .. } => {
            "the successor binary does not speak this supervisor's protocol; check the build"
                .to_string()
        }
        Error::CrashSpec(_) | Error::Environment(_) => {
            "fix the environment (HANDOFF_CRASH_AT, LISTEN_*) and retry".to_string()
        }
        _ => format!(
            "check the incumbent's and successor's stderr and the event log \
             (HANDOFF_EVENT_LOG); the incumbent at {socket} resumes on its own"
        ),
    };
    eprintln!("handoff-supervisor: error: {e}\nhandoff-supervisor: next: {hint}");
    EXIT_ERROR
}

fn cold_start(
    supervisor: &Supervisor,
    spec: &SpawnSpec,
    control_socket: &Path,
    timeouts: &SupervisorTimeouts,
) -> i32 {
    let mut child = match supervisor.cold_start(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "handoff-supervisor: error: cannot start {}: {e}",
                spec.binary.display()
            );
            return EXIT_ERROR;
        }
    };
    match wait_until_answers(&mut child, control_socket, timeouts, "--probe-timeout-ms") {
        Ok(()) => {
            println!("started pid={}", child.id());
            drop(child);
            EXIT_COMMITTED
        }
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "handoff-supervisor: error: the cold-started incumbent (pid {}) {why}; \
                 it was killed. Check its stderr and --control-socket {}",
                child.id(),
                control_socket.display()
            );
            EXIT_ERROR
        }
    }
}
