//! Follow every event log of an episode as it grows.
//!
//! Each process writes `<name>.jsonl` in the scenario directory, one
//! `write(2)` per line. [`Tail::poll`] reads what was appended since the
//! last call and returns the complete new lines as events, so a kill can
//! follow the event it waits for within a poll step. It also learns each
//! process's pid (from its first event, or from its supervisor's
//! `handoff.spawn`), which a kill needs before the fixture's own refresh.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use handoff::events;

use crate::eventlog::{self, Event};

/// Bound on what one poll reads from one file (a runaway log cannot stall
/// the kill loop).
const MAX_READ_PER_POLL: u64 = 1 << 20;

#[derive(Debug, Default)]
struct FileTail {
    /// Open once the file exists; each read starts where the last ended.
    file: Option<std::fs::File>,
    partial: Vec<u8>,
}

/// The growing logs of one scenario directory.
#[derive(Debug)]
pub struct Tail {
    root: PathBuf,
    files: HashMap<String, FileTail>,
    pids: HashMap<String, u32>,
    /// Supervisor name → the pid of the successor it spawned.
    spawned: HashMap<String, u32>,
}

impl Tail {
    /// Follow the logs in `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            files: HashMap::new(),
            pids: HashMap::new(),
            spawned: HashMap::new(),
        }
    }

    /// Read what `names`' logs gained since the last poll: the new events,
    /// in order of their `mono_ns`.
    pub fn poll<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Vec<Event> {
        let mut out = Vec::new();
        for name in names {
            let tail = self.files.entry(name.to_string()).or_default();
            if tail.file.is_none() {
                tail.file = std::fs::File::open(self.root.join(format!("{name}.jsonl"))).ok();
            }
            let Some(file) = tail.file.as_mut() else {
                continue;
            };
            let mut fresh = Vec::new();
            let Ok(n) = file.take(MAX_READ_PER_POLL).read_to_end(&mut fresh) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            tail.partial.extend_from_slice(&fresh);
            let Some(last_newline) = tail.partial.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = tail.partial.drain(..=last_newline).collect();
            let log = eventlog::parse_log(name, &complete);
            for ev in log.events {
                self.pids.entry(name.to_string()).or_insert(ev.pid);
                if ev.name == events::SPAWN
                    && let Some(pid) = ev
                        .fields
                        .get("successor_pid")
                        .and_then(|v| v.as_u64())
                        .and_then(|p| u32::try_from(p).ok())
                {
                    self.spawned.insert(name.to_string(), pid);
                }
                out.push(ev);
            }
        }
        out.sort_by_key(|e| e.mono_ns);
        out
    }

    /// The pid `name` logged under, once it logged.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.pids.get(name).copied()
    }

    /// The pid of the successor `supervisor` spawned, once it logged the
    /// spawn.
    pub fn spawned_by(&self, supervisor: &str) -> Option<u32> {
        self.spawned.get(supervisor).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_complete_new_lines_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor-1.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        let line = |t: u64, ev: &str, extra: &str| {
            format!(
                r#"{{"mono_ns":{t},"pid":42,"level":"INFO","event":"{ev}","message":""{extra}}}"#
            ) + "\n"
        };
        let mut tail = Tail::new(dir.path());
        assert!(tail.poll(["supervisor-1", "peer-0"]).is_empty());
        f.write_all(line(1, events::HELLO, "").as_bytes()).unwrap();
        let spawn = line(2, events::SPAWN, r#","successor_pid":77"#);
        f.write_all(&spawn.as_bytes()[..10]).unwrap();
        let got = tail.poll(["supervisor-1"]);
        assert_eq!(got.len(), 1);
        assert_eq!(tail.pid_of("supervisor-1"), Some(42));
        assert_eq!(tail.spawned_by("supervisor-1"), None);
        f.write_all(&spawn.as_bytes()[10..]).unwrap();
        let got = tail.poll(["supervisor-1"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, events::SPAWN);
        assert_eq!(tail.spawned_by("supervisor-1"), Some(77));
        assert!(tail.poll(["supervisor-1"]).is_empty());
    }
}
