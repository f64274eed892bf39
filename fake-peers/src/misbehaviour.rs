//! Misbehaviour on request, from environment variables.
//!
//! | variable | role | effect |
//! | --- | --- | --- |
//! | `FAKE_SEAL_FAIL=once\|always` | incumbent | `seal` fails (`once`: only this process's first seal) |
//! | `FAKE_DRAIN_MS=<ms>` | incumbent | `drain` takes this much longer |
//! | `FAKE_SEAL_MS=<ms>` | incumbent | `seal` takes this much longer |
//! | `FAKE_NEVER_READY=1` | successor | after `Begin` (and the flock), never send `Ready` |
//! | `FAKE_EXIT_BEFORE_HELLO=1` | successor | exit with code 3 before the handshake |
//!
//! Parsing is pure ([`Misbehaviour::from_lookup`]); a malformed value is an
//! error, so a typo never silently tests nothing.

use std::time::Duration;

/// `FAKE_SEAL_FAIL`.
pub const ENV_SEAL_FAIL: &str = "FAKE_SEAL_FAIL";
/// `FAKE_DRAIN_MS`.
pub const ENV_DRAIN_MS: &str = "FAKE_DRAIN_MS";
/// `FAKE_SEAL_MS`.
pub const ENV_SEAL_MS: &str = "FAKE_SEAL_MS";
/// `FAKE_NEVER_READY`.
pub const ENV_NEVER_READY: &str = "FAKE_NEVER_READY";
/// `FAKE_EXIT_BEFORE_HELLO`.
pub const ENV_EXIT_BEFORE_HELLO: &str = "FAKE_EXIT_BEFORE_HELLO";

/// The exit code of a successor told to exit before its handshake.
pub const EXIT_BEFORE_HELLO_CODE: i32 = 3;

/// When `seal` fails on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SealFail {
    /// Never (the default).
    #[default]
    Never,
    /// The first seal of this process only.
    Once,
    /// Every seal.
    Always,
}

/// Every requested misbehaviour. The default behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// `FAKE_SEAL_FAIL`.
    pub seal_fail: SealFail,
    /// `FAKE_DRAIN_MS`: extra time spent in `drain`.
    pub extra_drain: Duration,
    /// `FAKE_SEAL_MS`: extra time spent in `seal`.
    pub extra_seal: Duration,
    /// `FAKE_NEVER_READY=1` (successor only).
    pub never_ready: bool,
    /// `FAKE_EXIT_BEFORE_HELLO=1` (successor only).
    pub exit_before_hello: bool,
}

impl Misbehaviour {
    /// Read the process environment.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Parse from a lookup function (pure).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let seal_fail = match get(ENV_SEAL_FAIL).as_deref() {
            None | Some("") => SealFail::Never,
            Some("once") => SealFail::Once,
            Some("always") => SealFail::Always,
            Some(other) => {
                return Err(format!(
                    "{ENV_SEAL_FAIL}={other:?}: expected `once` or `always`"
                ));
            }
        };
        Ok(Self {
            seal_fail,
            extra_drain: millis(get, ENV_DRAIN_MS)?,
            extra_seal: millis(get, ENV_SEAL_MS)?,
            never_ready: flag(get, ENV_NEVER_READY)?,
            exit_before_hello: flag(get, ENV_EXIT_BEFORE_HELLO)?,
        })
    }

    /// The misbehaviours that apply to a cold-started incumbent: the
    /// successor-only ones are dropped.
    pub fn for_cold_start(mut self) -> Self {
        self.never_ready = false;
        self.exit_before_hello = false;
        self
    }
}

fn millis(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Duration, String> {
    match get(name).as_deref() {
        None | Some("") => Ok(Duration::ZERO),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}={v:?}: expected a number of milliseconds")),
    }
}

fn flag(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<bool, String> {
    match get(name).as_deref() {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(format!("{name}={v:?}: expected 1 or 0")),
    }
}

/// The `--help` text describing the variables above (also in README.md).
pub const HELP: &str = "\
MISBEHAVIOUR ON REQUEST (environment variables):
  FAKE_SEAL_FAIL=once|always  incumbent: seal() fails (once: only the first seal
                              of this process); the flock is kept and serving resumes
  FAKE_DRAIN_MS=<ms>          incumbent: drain() takes this much longer
  FAKE_SEAL_MS=<ms>           incumbent: seal() takes this much longer (heartbeats
                              keep the supervisor patient)
  FAKE_NEVER_READY=1          successor: after Begin (listeners and flock taken)
                              never send Ready; exit 1 when the supervisor closes
                              the control socketpair
  FAKE_EXIT_BEFORE_HELLO=1    successor: exit with code 3 before the handshake
  HANDOFF_CRASH_AT=<point>[=exit|hang|delay(ms)]
                              any role: die (exit 99) or hang at a named crash point
Successor-only variables are ignored by a cold-started incumbent.

OTHER ENVIRONMENT:
  FAKE_DIE_WITH_PARENT=<pid>  die (SIGKILL) when the parent <pid> dies: for a
                              harness that is itself the supervisor
  HANDOFF_EVENT_LOG=<path>    JSON-lines event log
  RUST_LOG=<filter>           stderr log filter (default warn)
  HANDOFF_HEARTBEAT_MS, HANDOFF_LIVENESS_MS, HANDOFF_HELLO_TIMEOUT_MS,
  HANDOFF_REACQUIRE_WINDOW_MS, HANDOFF_REACQUIRE_STEP_MS
                              incumbent timeouts, in milliseconds
  HANDOFF_BEGIN_TIMEOUT_MS, HANDOFF_LOCK_TIMEOUT_MS
                              successor timeouts, in milliseconds

EXIT CODES:
  0  handed off (Committed or Superseded)   1  error, lock held, or aborted successor
  2  bad HANDOFF_CRASH_AT, HANDOFF_*_MS or FAKE_* value, or bad usage
  3  FAKE_EXIT_BEFORE_HELLO
  4  FAKE_DIE_WITH_PARENT names a parent that is gone
  99 injected crash";
