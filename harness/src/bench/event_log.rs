//! The JSON-lines event log written by the incumbents and successors
//! (`HANDOFF_EVENT_LOG`, see `handoff::events`): parsed after a run and
//! grouped by handoff, so a successor's `begin`/`flock_taken`/`ready` and an
//! incumbent's `drain`/`seal` can be placed on the supervisor's timeline
//! (`mono_ns` is the system-wide `CLOCK_MONOTONIC`). The fake peer's own
//! events (`fake_peer.drain`, `fake_peer.serving`, ...) carry no handoff id;
//! they are placed by the pid that wrote them (each process is the
//! successor of one handoff and the incumbent of the next).

use std::collections::HashMap;
use std::path::Path;

/// One event of a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEvent {
    /// Event name (`handoff.successor.begin`, ...).
    pub event: String,
    /// `CLOCK_MONOTONIC`, ns.
    pub mono_ns: u64,
    /// The process that wrote it.
    pub pid: u32,
    /// Its `handoff_id` field, when it has one (the fake peer's own events,
    /// `fake_peer.*`, have none).
    pub handoff_id: Option<String>,
}

/// A parsed event log.
#[derive(Debug, Default)]
pub struct ChildEvents {
    /// Events by the pid that wrote them, in file order.
    pub by_pid: HashMap<u32, Vec<ChildEvent>>,
    /// WARN-and-above lines, verbatim (first few only).
    pub warnings: Vec<String>,
    /// Number of WARN-and-above lines.
    pub warning_count: usize,
    /// Lines that were not a JSON object with `event` and `mono_ns`.
    pub unparsable_lines: usize,
}

/// Keep at most this many warning lines verbatim.
const MAX_WARNINGS_KEPT: usize = 20;

/// Parse the log's text (pure).
pub fn parse(text: &str) -> ChildEvents {
    let mut out = ChildEvents::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            out.unparsable_lines += 1;
            continue;
        };
        let (Some(event), Some(mono_ns)) = (
            value.get("event").and_then(|v| v.as_str()),
            value.get("mono_ns").and_then(|v| v.as_u64()),
        ) else {
            out.unparsable_lines += 1;
            continue;
        };
        if matches!(
            value.get("level").and_then(|v| v.as_str()),
            Some("WARN" | "ERROR")
        ) {
            out.warning_count += 1;
            if out.warnings.len() < MAX_WARNINGS_KEPT {
                out.warnings.push(line.to_string());
            }
        }
        let handoff_id = value
            .get("handoff_id")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let pid = value.get("pid").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        out.by_pid.entry(pid).or_default().push(ChildEvent {
            event: event.to_string(),
            mono_ns,
            pid,
            handoff_id,
        });
    }
    out
}

/// Read and parse `path`; a missing file is an empty log.
pub fn read(path: &Path) -> std::io::Result<ChildEvents> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ChildEvents::default()),
        Err(e) => Err(e),
    }
}

impl ChildEvents {
    /// The first `event` written by `pid` that belongs to handoff
    /// `handoff_id` (or carries no handoff id: the fake peer's own events).
    pub fn find(&self, handoff_id: &str, pid: u32, event: &str) -> Option<u64> {
        self.by_pid
            .get(&pid)?
            .iter()
            .find(|e| e.event == event && e.handoff_id.as_deref().is_none_or(|id| id == handoff_id))
            .map(|e| e.mono_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_handoff_and_keeps_warnings() {
        let text = concat!(
            r#"{"mono_ns":10,"pid":7,"level":"INFO","event":"handoff.successor.begin","handoff_id":"h1"}"#,
            "\n",
            r#"{"mono_ns":12,"pid":7,"level":"INFO","event":"handoff.successor.ready","handoff_id":"h1"}"#,
            "\n",
            r#"{"mono_ns":13,"pid":6,"level":"WARN","event":"handoff.incumbent.supervisor_lost","handoff_id":"h2"}"#,
            "\n",
            "garbage\n",
            r#"{"mono_ns":14,"pid":6,"level":"INFO","event":"fake_peer.exit"}"#,
            "\n"
        );
        let log = parse(text);
        assert_eq!(log.find("h1", 7, "handoff.successor.ready"), Some(12));
        assert_eq!(log.find("h2", 7, "handoff.successor.ready"), None);
        assert_eq!(log.find("h1", 8, "handoff.successor.ready"), None);
        assert_eq!(log.find("any", 6, "fake_peer.exit"), Some(14));
        assert_eq!(log.warning_count, 1);
        assert_eq!(log.unparsable_lines, 1);
        assert_eq!(log.by_pid.len(), 2);
    }
}
