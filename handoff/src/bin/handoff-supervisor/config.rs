//! The daemon's config file (TOML), parsed and checked without I/O.
//!
//! ```toml
//! control_socket = "/run/svc/control.sock"   # the incumbent's control socket
//! trigger_socket = "/run/svc/trigger.sock"   # where `trigger` commands arrive
//! journal = "/var/lib/svc/handoff.journal"   # optional
//! build_id = "supervisor-1"                  # optional, for logs
//!
//! [listeners]              # name = "host:port" or a Unix socket path
//! http = "0.0.0.0:8080"    # ("/path" or "unix:/path"), in FD order; with
//! api = "unix:/run/svc/api.sock"  # LISTEN_FDS the inherited names must match
//!
//! [service]
//! binary = "/usr/bin/svc"
//! args = ["--data-dir", "/var/lib/svc", "--control-socket", "/run/svc/control.sock"]
//! env = { RUST_LOG = "info" }
//!
//! [timeouts]               # milliseconds; every key optional
//! drain_grace_ms = 60000
//! deadline_ms = 300000
//! liveness_ms = 10000
//! hello_timeout_ms = 5000
//! wire_slack_ms = 1000
//! probe_timeout_ms = 5000
//! stop_timeout_ms = 10000      # SIGTERM to SIGKILL of the incumbent on shutdown
//! retire_timeout_ms = 30000    # a committed-away incumbent must exit by then
//!
//! [restart]                # when the incumbent dies outside a handoff
//! policy = "always"        # always | on-failure | never
//! delay_ms = 100
//! burst = 5                # at most `burst` restarts per `interval_ms`,
//! interval_ms = 10000      # then the daemon gives up and exits 1
//!
//! [rollback]               # a committed build that dies on probation
//! probation_ms = 30000     # is replaced by the build it replaced
//! enabled = true
//! ```
//!
//! Relative paths (sockets, journal, and a binary containing `/`) are
//! resolved against the config file's directory; a bare binary name is
//! looked up in `PATH` when spawned. Unknown keys are errors, so a typo never
//! silently keeps a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Longest a single timeout may be: one day.
const MAX_MS: u64 = 24 * 3600 * 1000;

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// The incumbent's control socket.
    pub control_socket: PathBuf,
    /// The trigger socket this daemon binds (mode 0600).
    pub trigger_socket: PathBuf,
    /// The handoff journal, if any.
    pub journal: Option<PathBuf>,
    /// Build identity, for logs.
    pub build_id: Option<String>,
    /// `(name, address)` in FD order: `host:port`, or a Unix socket path
    /// (see [`unix_path`]).
    pub listeners: Vec<(String, String)>,
    /// The service binary.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment for every child.
    pub env: Vec<(String, String)>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// What to do when the incumbent dies outside a handoff.
    pub restart: Restart,
    /// What to do when a newly committed build dies soon after its commit.
    pub rollback: Rollback,
}

/// Rollback of a bad build: an incumbent that dies within `probation` of
/// the commit that made its binary the service's binary is replaced by the
/// previous binary rather than restarted as itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// False: such a death is a plain restart.
    pub enabled: bool,
    /// How long after a commit a death counts against the new build.
    pub probation: Duration,
}

/// Every timeout of the daemon; `None` keeps the library's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Cap on the incumbent's drain.
    pub drain_grace: Duration,
    /// Cap on a whole handoff.
    pub deadline: Duration,
    /// Longest silence accepted from a peer on a read.
    pub liveness: Option<Duration>,
    /// Bound on a peer's first frame.
    pub hello_read: Option<Duration>,
    /// Slack past a cap for a reply already on the wire.
    pub wire_slack: Option<Duration>,
    /// Bound on waiting for an incumbent to answer (cold start, recovery).
    pub probe: Option<Duration>,
    /// On shutdown: SIGTERM to the incumbent, SIGKILL after this.
    pub stop: Duration,
    /// After a commit: the old incumbent must exit by then, or is killed.
    pub retire: Duration,
}

/// When to start the service again after its incumbent died on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status.
    Always,
    /// Only after a non-zero exit or a signal; a clean exit stops the daemon.
    OnFailure,
    /// Never: the daemon stops (exit 1) when the incumbent dies.
    Never,
}

/// Restart policy and its rate limit (systemd's `Restart=`,
/// `RestartSec=`, `StartLimitBurst=`, `StartLimitIntervalSec=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Wait before each restart.
    pub delay: Duration,
    /// Most restarts within `interval`.
    pub burst: u32,
    /// The window of `burst`.
    pub interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    control_socket: PathBuf,
    trigger_socket: PathBuf,
    journal: Option<PathBuf>,
    build_id: Option<String>,
    #[serde(default)]
    listeners: toml::Table,
    service: RawService,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    rollback: RawRollback,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollback {
    enabled: Option<bool>,
    probation_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    binary: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    drain_grace_ms: Option<u64>,
    deadline_ms: Option<u64>,
    liveness_ms: Option<u64>,
    hello_timeout_ms: Option<u64>,
    wire_slack_ms: Option<u64>,
    probe_timeout_ms: Option<u64>,
    stop_timeout_ms: Option<u64>,
    retire_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RestartPolicy>,
    delay_ms: Option<u64>,
    burst: Option<u32>,
    interval_ms: Option<u64>,
}

impl DaemonConfig {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// Parse `text`, resolving relative paths against `base` (pure).
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let listeners = string_table(raw.listeners, "listeners")?;
        for (name, addr) in &listeners {
            check_listener_name(name)?;
            check_listener_address(name, addr)?;
        }
        let binary = if raw.service.binary.components().count() > 1 {
            resolve(raw.service.binary)
        } else {
            raw.service.binary
        };
        if binary.as_os_str().is_empty() {
            return Err("service.binary is empty".into());
        }
        let ms = |v: Option<u64>, key: &str| -> Result<Option<Duration>, String> {
            match v {
                None => Ok(None),
                Some(ms) if (1..=MAX_MS).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
                Some(ms) => Err(format!("{key} = {ms}: expected 1 to {MAX_MS} milliseconds")),
            }
        };
        let t = raw.timeouts;
        let timeouts = Timeouts {
            drain_grace: ms(t.drain_grace_ms, "timeouts.drain_grace_ms")?
                .unwrap_or(Duration::from_secs(60)),
            deadline: ms(t.deadline_ms, "timeouts.deadline_ms")?
                .unwrap_or(Duration::from_secs(300)),
            liveness: ms(t.liveness_ms, "timeouts.liveness_ms")?,
            hello_read: ms(t.hello_timeout_ms, "timeouts.hello_timeout_ms")?,
            wire_slack: ms(t.wire_slack_ms, "timeouts.wire_slack_ms")?,
            probe: ms(t.probe_timeout_ms, "timeouts.probe_timeout_ms")?,
            stop: ms(t.stop_timeout_ms, "timeouts.stop_timeout_ms")?
                .unwrap_or(Duration::from_secs(10)),
            retire: ms(t.retire_timeout_ms, "timeouts.retire_timeout_ms")?
                .unwrap_or(Duration::from_secs(30)),
        };
        let r = raw.restart;
        let restart = Restart {
            policy: r.policy.unwrap_or(RestartPolicy::Always),
            delay: ms(r.delay_ms, "restart.delay_ms")?.unwrap_or(Duration::from_millis(100)),
            burst: match r.burst {
                None => 5,
                Some(b) if (1..=1000).contains(&b) => b,
                Some(b) => return Err(format!("restart.burst = {b}: expected 1 to 1000")),
            },
            interval: ms(r.interval_ms, "restart.interval_ms")?.unwrap_or(Duration::from_secs(10)),
        };
        let rollback = Rollback {
            enabled: raw.rollback.enabled.unwrap_or(true),
            probation: ms(raw.rollback.probation_ms, "rollback.probation_ms")?
                .unwrap_or(Duration::from_secs(30)),
        };
        Ok(DaemonConfig {
            control_socket: resolve(raw.control_socket),
            trigger_socket: resolve(raw.trigger_socket),
            journal: raw.journal.map(resolve),
            build_id: raw.build_id,
            listeners,
            binary,
            args: raw.service.args,
            env: string_table(raw.service.env, "service.env")?,
            timeouts,
            restart,
            rollback,
        })
    }

    /// With listeners inherited through `LISTEN_FDS`, the config may still
    /// list listeners (one file serves both ways), but then the names must
    /// be the same set: a unit file and a config that disagree are an error,
    /// not a guess.
    pub fn check_inherited_names(&self, inherited: &[String]) -> Result<(), String> {
        if self.listeners.is_empty() {
            return Ok(());
        }
        let mut configured: Vec<&str> = self.listeners.iter().map(|(n, _)| n.as_str()).collect();
        let mut given: Vec<&str> = inherited.iter().map(String::as_str).collect();
        configured.sort_unstable();
        given.sort_unstable();
        if configured == given {
            Ok(())
        } else {
            Err(format!(
                "LISTEN_FDNAMES gives listeners {given:?} but the config's [listeners] names \
                 {configured:?}; make them agree (FileDescriptorName= in the .socket unit, \
                 --fdname for systemd-socket-activate) or drop [listeners]"
            ))
        }
    }
}

/// A TOML table of strings, in file order.
fn string_table(table: toml::Table, key: &str) -> Result<Vec<(String, String)>, String> {
    table
        .into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            other => Err(format!(
                "{key}.{k}: expected a string, got {}",
                other.type_str()
            )),
        })
        .collect()
}

/// Names `LISTEN_FDNAMES` can carry: 1 to 255 printable ASCII characters,
/// no `:`.
/// `host:port` with a port number and, for a dotted numeric host, a real
/// IPv4 address (else it would go to DNS as a name). Pure: resolving and
/// binding are `--check`'s.
fn check_listener_address(name: &str, addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "listeners.{name} = {addr:?}: {why} (want \"host:port\", \"/path\" or \"unix:/path\")"
        ))
    };
    if let Some(path) = addr
        .strip_prefix("unix:")
        .or(addr.starts_with('/').then_some(addr))
    {
        if !path.starts_with('/') {
            return bad("a Unix socket path must be absolute");
        }
        // sun_path holds 108 bytes, the last one a NUL.
        if path.len() > 107 {
            return bad("a Unix socket path is at most 107 bytes");
        }
        return Ok(());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("no host");
    }
    if port.parse::<u16>().is_err() {
        return bad(&format!("{port:?} is not a port number (0 to 65535)"));
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.')
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return bad(&format!("{host:?} is not an IPv4 address"));
    }
    if host.starts_with('[') != host.ends_with(']')
        || (host.starts_with('[')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_err())
    {
        return bad(&format!("{host:?} is not an IPv6 address"));
    }
    Ok(())
}

/// The path of a Unix-socket listener address (`/path` or `unix:/path`),
/// `None` for `host:port`.
pub fn unix_path(addr: &str) -> Option<&Path> {
    addr.strip_prefix("unix:")
        .or(addr.starts_with('/').then_some(addr))
        .map(Path::new)
}

fn check_listener_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "listener name {name:?}: 1 to 255 printable ASCII characters, no ':'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
control_socket = "run/control.sock"
trigger_socket = "/run/svc/trigger.sock"
journal = "handoff.journal"
[listeners]
web = "127.0.0.1:8080"
admin = "127.0.0.1:8081"
api = "unix:/run/svc/api.sock"
raw = "/run/svc/raw.sock"
[service]
binary = "bin/svc"
args = ["--x", "1"]
env = { B = "2", A = "1" }
[timeouts]
drain_grace_ms = 250
deadline_ms = 5000
stop_timeout_ms = 300
[restart]
policy = "on-failure"
burst = 3
[rollback]
probation_ms = 1500
"#;

    #[test]
    fn a_full_config_parses_with_paths_resolved_and_order_kept() {
        let c = DaemonConfig::parse(FULL, Path::new("/etc/svc")).unwrap();
        assert_eq!(c.control_socket, Path::new("/etc/svc/run/control.sock"));
        assert_eq!(c.trigger_socket, Path::new("/run/svc/trigger.sock"));
        assert_eq!(
            c.journal.as_deref(),
            Some(Path::new("/etc/svc/handoff.journal"))
        );
        assert_eq!(c.binary, Path::new("/etc/svc/bin/svc"));
        let names: Vec<_> = c.listeners.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["web", "admin", "api", "raw"],
            "FD order is file order"
        );
        assert_eq!(
            unix_path(&c.listeners[2].1),
            Some(Path::new("/run/svc/api.sock"))
        );
        assert_eq!(
            unix_path(&c.listeners[3].1),
            Some(Path::new("/run/svc/raw.sock"))
        );
        assert_eq!(unix_path(&c.listeners[0].1), None);
        assert_eq!(c.env, [("B".into(), "2".into()), ("A".into(), "1".into())]);
        assert_eq!(c.timeouts.drain_grace, Duration::from_millis(250));
        assert_eq!(c.timeouts.stop, Duration::from_millis(300));
        assert_eq!(c.timeouts.liveness, None);
        assert_eq!(c.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(c.restart.burst, 3);
        assert_eq!(c.restart.delay, Duration::from_millis(100));
        assert_eq!(c.rollback.probation, Duration::from_millis(1500));
        assert!(c.rollback.enabled);
    }

    #[test]
    fn a_bare_binary_name_is_left_for_path_lookup() {
        let text =
            "control_socket = \"/c\"\ntrigger_socket = \"/t\"\n[service]\nbinary = \"svc\"\n";
        let c = DaemonConfig::parse(text, Path::new("/etc")).unwrap();
        assert_eq!(c.binary, Path::new("svc"));
        assert!(c.listeners.is_empty());
        assert_eq!(c.timeouts.deadline, Duration::from_secs(300));
        assert_eq!(c.rollback.probation, Duration::from_secs(30));
    }

    #[test]
    fn typos_and_bad_values_are_errors_that_name_the_key() {
        let cases = [
            (FULL.replace("drain_grace_ms", "drain_grace"), "drain_grace"),
            (FULL.replace("\"on-failure\"", "\"sometimes\""), "sometimes"),
            (
                FULL.replace("deadline_ms = 5000", "deadline_ms = 0"),
                "timeouts.deadline_ms",
            ),
            (FULL.replace("web =", "\"a:b\" ="), "a:b"),
            (
                FULL.replace("\"127.0.0.1:8081\"", "8081"),
                "listeners.admin",
            ),
            (FULL.replace("burst = 3", "burst = 0"), "restart.burst"),
            (
                FULL.replace("unix:/run/svc/api.sock", "unix:api.sock"),
                "listeners.api",
            ),
            (
                FULL.replace("probation_ms = 1500", "probation_ms = 0"),
                "rollback.probation_ms",
            ),
        ];
        for (text, needle) in cases {
            let e = DaemonConfig::parse(&text, Path::new("/")).unwrap_err();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
    }

    #[test]
    fn inherited_names_must_match_configured_ones() {
        let c = DaemonConfig::parse(FULL, Path::new("/")).unwrap();
        assert!(
            c.check_inherited_names(&["raw".into(), "admin".into(), "api".into(), "web".into()])
                .is_ok()
        );
        let e = c.check_inherited_names(&["unknown".into()]).unwrap_err();
        assert!(e.contains("FileDescriptorName"), "{e}");
        let mut bare = c.clone();
        bare.listeners.clear();
        assert!(bare.check_inherited_names(&["anything".into()]).is_ok());
    }
}
