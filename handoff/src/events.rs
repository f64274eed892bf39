//! Stable event names, and the JSON-lines event log.
//!
//! Every protocol step emits a `tracing` event whose *target* is one of the
//! constants below and which carries the `handoff_id` field. Names never
//! change once published: dashboards, the harness's snapshots and operators'
//! grep patterns depend on them.
//!
//! [`init_from_env`] installs a subscriber that writes each event as one JSON
//! line (one `write(2)` per line, `O_APPEND`, so a crash leaves only whole
//! lines) to the file named by `HANDOFF_EVENT_LOG`, and human-readable lines
//! to stderr filtered by `RUST_LOG` (default `warn`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::util::{monotonic_ns, now_unix_ms};

/// Environment variable naming the JSON-lines event log file.
pub const ENV_EVENT_LOG: &str = "HANDOFF_EVENT_LOG";

// Supervisor side (the seed's names).
/// S sent `PrepareHandoff`.
pub const PREPARE: &str = "handoff.prepare";
/// S received `Drained`.
pub const DRAINED: &str = "handoff.drained";
/// S sent `SealRequest`.
pub const SEAL: &str = "handoff.seal";
/// S received `SealComplete`.
pub const SEAL_COMPLETE: &str = "handoff.seal_complete";
/// S received `Ready`.
pub const READY: &str = "handoff.ready";
/// S is sending `Commit`.
pub const COMMIT: &str = "handoff.commit";
/// S is aborting the handoff.
pub const ABORT: &str = "handoff.abort";
/// S sent `ResumeAfterAbort`.
pub const RESUME: &str = "handoff.resume";
/// S exchanged Hello/HelloAck with a peer.
pub const HELLO: &str = "handoff.hello";
/// S spawned the successor.
pub const SPAWN: &str = "handoff.spawn";
/// S wrote or cleared the journal.
pub const JOURNAL: &str = "handoff.journal";
/// S found a journal at start-up and recovered from it.
pub const RECOVER: &str = "handoff.recover";
/// S finished a handoff (field `committed`).
pub const OUTCOME: &str = "handoff.outcome";

// Incumbent side.
/// O bound its control socket (cold start).
pub const INCUMBENT_BOUND: &str = "handoff.incumbent.bound";
/// O accepted a supervisor session.
pub const INCUMBENT_SESSION: &str = "handoff.incumbent.session";
/// O refused a second supervisor.
pub const INCUMBENT_REFUSED: &str = "handoff.incumbent.refused";
/// O received `PrepareHandoff` and is draining.
pub const INCUMBENT_DRAIN: &str = "handoff.incumbent.drain";
/// O sent `Drained`.
pub const INCUMBENT_DRAINED: &str = "handoff.incumbent.drained";
/// O received `SealRequest` and is sealing.
pub const INCUMBENT_SEAL: &str = "handoff.incumbent.seal";
/// O released the data-dir flock.
pub const INCUMBENT_FLOCK_RELEASED: &str = "handoff.incumbent.flock_released";
/// O sent `SealComplete`.
pub const INCUMBENT_SEAL_COMPLETE: &str = "handoff.incumbent.seal_complete";
/// O's seal failed; it sent `SealFailed` and keeps serving.
pub const INCUMBENT_SEAL_FAILED: &str = "handoff.incumbent.seal_failed";
/// O received `Commit` and is exiting.
pub const INCUMBENT_COMMIT: &str = "handoff.incumbent.commit";
/// O resumed serving (after an abort, a failed seal or a lost supervisor).
pub const INCUMBENT_RESUME: &str = "handoff.incumbent.resume";
/// O took the flock back.
pub const INCUMBENT_FLOCK_REACQUIRED: &str = "handoff.incumbent.flock_reacquired";
/// O lost its supervisor mid-handoff.
pub const INCUMBENT_SUPERVISOR_LOST: &str = "handoff.incumbent.supervisor_lost";
/// O found the successor serving after losing its supervisor, and exits.
pub const INCUMBENT_SUPERSEDED: &str = "handoff.incumbent.superseded";
/// O ended a session on a protocol error.
pub const INCUMBENT_PROTOCOL_ERROR: &str = "handoff.incumbent.protocol_error";

// Successor side.
/// N exchanged Hello/HelloAck with the supervisor.
pub const SUCCESSOR_HELLO: &str = "handoff.successor.hello";
/// N received `Begin`.
pub const SUCCESSOR_BEGIN: &str = "handoff.successor.begin";
/// N took the data-dir flock.
pub const SUCCESSOR_FLOCK_TAKEN: &str = "handoff.successor.flock_taken";
/// N sent `Ready`.
pub const SUCCESSOR_READY: &str = "handoff.successor.ready";
/// N bound the control socket path: it is the incumbent.
pub const SUCCESSOR_BOUND: &str = "handoff.successor.bound";
/// N received `Abort`.
pub const SUCCESSOR_ABORTED: &str = "handoff.successor.aborted";
/// N lost its supervisor before `Ready`.
pub const SUCCESSOR_SUPERVISOR_LOST: &str = "handoff.successor.supervisor_lost";

/// Any process is about to release the data-dir flock (logged just before
/// the unlock, whatever the role or the reason).
pub const FLOCK_RELEASING: &str = "handoff.flock_releasing";

/// A crash point fired (field `point`).
pub const CRASH: &str = "handoff.crash";

/// Every event name above, for documentation and checks.
pub const ALL: &[&str] = &[
    PREPARE,
    DRAINED,
    SEAL,
    SEAL_COMPLETE,
    READY,
    COMMIT,
    ABORT,
    RESUME,
    HELLO,
    SPAWN,
    JOURNAL,
    RECOVER,
    OUTCOME,
    INCUMBENT_BOUND,
    INCUMBENT_SESSION,
    INCUMBENT_REFUSED,
    INCUMBENT_DRAIN,
    INCUMBENT_DRAINED,
    INCUMBENT_SEAL,
    INCUMBENT_FLOCK_RELEASED,
    INCUMBENT_SEAL_COMPLETE,
    INCUMBENT_SEAL_FAILED,
    INCUMBENT_COMMIT,
    INCUMBENT_RESUME,
    INCUMBENT_FLOCK_REACQUIRED,
    INCUMBENT_SUPERVISOR_LOST,
    INCUMBENT_SUPERSEDED,
    INCUMBENT_PROTOCOL_ERROR,
    SUCCESSOR_HELLO,
    SUCCESSOR_BEGIN,
    SUCCESSOR_FLOCK_TAKEN,
    SUCCESSOR_READY,
    SUCCESSOR_BOUND,
    SUCCESSOR_ABORTED,
    SUCCESSOR_SUPERVISOR_LOST,
    FLOCK_RELEASING,
    CRASH,
];

/// A `tracing` layer writing one JSON object per event, one `write` per line.
///
/// Fields: `mono_ns` (system-wide `CLOCK_MONOTONIC`), `unix_ms`, `pid`,
/// `level`, `event` (the target), `message`, then the event's own fields.
pub struct JsonLinesLayer {
    file: File,
    pid: u32,
}

impl JsonLinesLayer {
    /// Append to `path` (created if missing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file,
            pid: std::process::id(),
        })
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

/// Render one event as a JSON line (with the trailing newline). Pure, so the
/// format is tested without a subscriber.
pub fn render_line(
    mono_ns: u64,
    unix_ms: u64,
    pid: u32,
    level: &str,
    target: &str,
    fields: Map<String, Value>,
) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("mono_ns".into(), mono_ns.into());
    obj.insert("unix_ms".into(), unix_ms.into());
    obj.insert("pid".into(), pid.into());
    obj.insert("level".into(), level.into());
    obj.insert("event".into(), target.into());
    for (k, v) in fields {
        obj.entry(k).or_insert(v);
    }
    let mut line = serde_json::to_vec(&Value::Object(obj)).unwrap_or_default();
    line.push(b'\n');
    line
}

impl<S: tracing::Subscriber> Layer<S> for JsonLinesLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let line = render_line(
            monotonic_ns(),
            now_unix_ms(),
            self.pid,
            meta.level().as_str(),
            meta.target(),
            fields,
        );
        // One write per line: with O_APPEND the line lands whole or not at all
        // (regular files; lines are far below any partial-write threshold).
        let _ = (&self.file).write_all(&line);
    }
}

/// Install the process-wide subscriber: JSON lines to `HANDOFF_EVENT_LOG`
/// when set (every event at INFO and above: the library's `handoff.*` and
/// the service's own), and a human-readable stderr log filtered by `RUST_LOG`
/// (default `warn`). Safe to call once; later calls do nothing.
pub fn init_from_env() {
    let json =
        std::env::var_os(ENV_EVENT_LOG).and_then(|p| match JsonLinesLayer::open(Path::new(&p)) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "handoff: cannot open event log {}: {e}; events go to stderr only",
                    Path::new(&p).display()
                );
                None
            }
        });
    let json = json.map(|l| {
        l.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            *m.level() <= tracing::Level::INFO
        }))
    });
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_filter(stderr_filter);
    let _ = tracing_subscriber::registry()
        .with(json)
        .with(stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_namespaced() {
        let mut seen = std::collections::HashSet::new();
        for n in ALL {
            assert!(n.starts_with("handoff."), "{n}");
            assert!(seen.insert(*n), "duplicate {n}");
        }
    }

    #[test]
    fn a_line_is_one_json_object_ending_in_newline() {
        let mut f = Map::new();
        f.insert("handoff_id".into(), "x".into());
        f.insert("pid".into(), "must not override".into());
        let line = render_line(1, 2, 3, "INFO", PREPARE, f);
        assert_eq!(*line.last().unwrap(), b'\n');
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["event"], PREPARE);
        assert_eq!(v["pid"], 3);
        assert_eq!(v["handoff_id"], "x");
    }
}
