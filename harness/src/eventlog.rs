//! Event capture: parse each process's JSON-lines event log, merge them on
//! the shared monotonic clock, and normalise what varies from run to run.
//!
//! Every process of a scenario writes its own file (`supervisor-<k>.jsonl`,
//! `peer-<k>.jsonl`), one `write(2)` per line, so a crash leaves whole lines
//! only; a torn last line is tolerated and reported. `mono_ns` is the
//! system-wide `CLOCK_MONOTONIC`, so lines of different processes can be
//! merged for a human timeline. Snapshots never use that merge: they hold
//! each process's own sequence, which is deterministic, while the
//! interleaving of processes is not.
//!
//! Normalisation (all pure):
//! - handoff ids (UUIDs) become `<id1>`, `<id2>`, ... in order of first
//!   appearance, scanning processes in a fixed order (supervisors by index,
//!   then peers by index), so the numbering does not depend on timing;
//! - pids become the process names (`peer-0`, `supervisor-1`);
//! - the scenario's temporary directory becomes `<dir>`;
//! - timestamps, durations and data-dependent counters are dropped
//!   ([`is_volatile_field`]);
//! - I/O errors whose wording depends on which side of a dying socket won a
//!   race (EOF, `EPIPE`, `ECONNRESET`) become `<peer gone>`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// One event line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The process that wrote it (`peer-0`, `supervisor-1`).
    pub process: String,
    /// System-wide `CLOCK_MONOTONIC`, nanoseconds.
    pub mono_ns: u64,
    /// Writer's pid.
    pub pid: u32,
    /// `INFO`, `WARN`, ...
    pub level: String,
    /// The event name (the tracing target), e.g. `handoff.prepare`.
    pub name: String,
    /// The human message.
    pub message: String,
    /// Every other field.
    pub fields: BTreeMap<String, Value>,
}

impl Event {
    /// A string field.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// One process's parsed log.
#[derive(Debug, Clone, Default)]
pub struct ProcessLog {
    /// The process name.
    pub process: String,
    /// Its events, in file order.
    pub events: Vec<Event>,
    /// Bytes of an unterminated last line (a crash mid-write), if any.
    pub torn_tail_bytes: usize,
    /// Complete lines that are not valid events: each is a finding.
    pub bad_lines: Vec<String>,
}

impl ProcessLog {
    /// The pid the process logged under (from its first event).
    pub fn pid(&self) -> Option<u32> {
        self.events.first().map(|e| e.pid)
    }

    /// True when an event called `name` is in the log.
    pub fn has(&self, name: &str) -> bool {
        self.events.iter().any(|e| e.name == name)
    }
}

/// Parse the bytes of one JSON-lines log.
pub fn parse_log(process: &str, bytes: &[u8]) -> ProcessLog {
    let mut log = ProcessLog {
        process: process.to_string(),
        ..ProcessLog::default()
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            log.torn_tail_bytes = rest.len();
            break;
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(process, line) {
            Some(ev) => log.events.push(ev),
            None => log
                .bad_lines
                .push(String::from_utf8_lossy(line).into_owned()),
        }
    }
    log
}

fn parse_line(process: &str, line: &[u8]) -> Option<Event> {
    let Value::Object(mut obj) = serde_json::from_slice::<Value>(line).ok()? else {
        return None;
    };
    let mono_ns = obj.remove("mono_ns")?.as_u64()?;
    let pid = u32::try_from(obj.remove("pid")?.as_u64()?).ok()?;
    let name = obj.remove("event")?.as_str()?.to_string();
    let level = obj
        .remove("level")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let message = obj
        .remove("message")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    obj.remove("unix_ms");
    Some(Event {
        process: process.to_string(),
        mono_ns,
        pid,
        level,
        name,
        message,
        fields: obj.into_iter().collect(),
    })
}

/// Sort key of a process name: supervisors first, then peers, each by index;
/// anything else last, by name.
pub fn process_order(name: &str) -> (u8, u64, String) {
    let index = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|k| k.parse::<u64>().ok())
    };
    if let Some(k) = index("supervisor-") {
        (0, k, String::new())
    } else if let Some(k) = index("peer-") {
        (1, k, String::new())
    } else {
        (2, 0, name.to_string())
    }
}

/// All events of all logs on one timeline (by `mono_ns`, ties by process
/// order). For humans only: never snapshot this.
pub fn merge(logs: &[ProcessLog]) -> Vec<&Event> {
    let mut all: Vec<&Event> = logs.iter().flat_map(|l| l.events.iter()).collect();
    all.sort_by(|a, b| {
        (a.mono_ns, process_order(&a.process)).cmp(&(b.mono_ns, process_order(&b.process)))
    });
    all
}

/// Fields that vary from run to run and are dropped from normalised events.
pub fn is_volatile_field(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "mono_ns",
        "unix_ms",
        "ts_ms",
        "last_revision",
        "last_revision_per_shard",
        "advertised_revision_per_shard",
        "advertised_revisions",
        "data_dir_fingerprint",
        "fingerprint",
        "open_conns_remaining",
        "started_at_unix_ms",
        "state",
        "snapshot",
        "seq",
        "last_seq",
        "keys",
        "attempts",
    ];
    const SUFFIXES: &[&str] = &["_ms", "_ns", "_us", "_seconds", "_secs", "_elapsed"];
    EXACT.contains(&key) || SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// Find lowercase-or-uppercase hex UUIDs (8-4-4-4-12) in `s`: byte ranges.
pub fn find_uuids(s: &str) -> Vec<(usize, usize)> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 36 <= b.len() {
        let boundary_before = i == 0 || !b[i - 1].is_ascii_hexdigit();
        let mut j = i;
        let mut ok = boundary_before;
        for (g, len) in GROUPS.iter().enumerate() {
            if !ok {
                break;
            }
            ok = b[j..j + len].iter().all(u8::is_ascii_hexdigit);
            j += len;
            if g < 4 {
                ok = ok && b.get(j) == Some(&b'-');
                j += 1;
            }
        }
        let j = j.min(b.len());
        if ok && (j == b.len() || !b[j].is_ascii_hexdigit()) {
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces what varies from run to run with stable names.
#[derive(Debug, Clone, Default)]
pub struct Normaliser {
    ids: HashMap<String, String>,
    pids: HashMap<u32, String>,
    /// `(literal, replacement)`, longest literal first.
    paths: Vec<(String, String)>,
}

impl Normaliser {
    /// A normaliser that replaces each `(literal, replacement)` path.
    pub fn new(paths: Vec<(String, String)>) -> Self {
        let mut paths: Vec<(String, String)> =
            paths.into_iter().filter(|(l, _)| !l.is_empty()).collect();
        paths.sort_by_key(|(l, _)| std::cmp::Reverse(l.len()));
        Self {
            paths,
            ..Self::default()
        }
    }

    /// The same names for pids and paths, no handoff ids yet.
    pub fn without_ids(&self) -> Self {
        Self {
            ids: HashMap::new(),
            ..self.clone()
        }
    }

    /// Name `pid` (its occurrences become `name`).
    pub fn learn_pid(&mut self, pid: u32, name: &str) {
        self.pids.entry(pid).or_insert_with(|| name.to_string());
    }

    /// Number every UUID in `logs`, scanning processes in [`process_order`]
    /// and each log in file order.
    pub fn learn_ids(&mut self, logs: &[ProcessLog]) {
        let mut ordered: Vec<&ProcessLog> = logs.iter().collect();
        ordered.sort_by_key(|l| process_order(&l.process));
        for log in ordered {
            for ev in &log.events {
                let mut texts: Vec<&str> = vec![&ev.message];
                texts.extend(ev.fields.values().filter_map(Value::as_str));
                for text in texts {
                    // Paths first: a directory name may hold a UUID (a
                    // nextest run id), which is not a handoff id.
                    let text = self.replace_paths(text);
                    for (a, b) in find_uuids(&text) {
                        let id = text[a..b].to_ascii_lowercase();
                        let next = format!("<id{}>", self.ids.len() + 1);
                        self.ids.entry(id).or_insert(next);
                    }
                }
            }
        }
    }

    /// The normalised name of a handoff id, if seen.
    pub fn id_name(&self, id: &str) -> Option<&str> {
        self.ids.get(&id.to_ascii_lowercase()).map(String::as_str)
    }

    fn replace_paths(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (literal, replacement) in &self.paths {
            out = out.replace(literal.as_str(), replacement);
        }
        out
    }

    /// Normalise free text: paths, ids, pids, racy I/O error wording.
    pub fn text(&self, s: &str) -> String {
        let out = self.replace_paths(s);
        // UUIDs.
        let mut with_ids = String::with_capacity(out.len());
        let mut last = 0;
        for (a, b) in find_uuids(&out) {
            with_ids.push_str(&out[last..a]);
            let id = out[a..b].to_ascii_lowercase();
            with_ids.push_str(self.ids.get(&id).map(String::as_str).unwrap_or("<id?>"));
            last = b;
        }
        with_ids.push_str(&out[last..]);
        let out = self.replace_pids(&with_ids);
        scrub_volatile(&canonical_io_error(&out))
    }

    fn replace_pids(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !is_word_byte(bytes[i - 1])) {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let word_follows = i < bytes.len() && is_word_byte(bytes[i]);
                let digits = &s[start..i];
                match digits.parse::<u32>().ok().and_then(|p| self.pids.get(&p)) {
                    Some(name) if !word_follows => out.push_str(name),
                    _ => out.push_str(digits),
                }
            } else {
                let ch = s[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        out
    }

    /// Normalise one field value. Pid fields become process names.
    pub fn value(&self, key: &str, v: &Value) -> String {
        let is_pid_key = key == "pid" || key.ends_with("_pid");
        match v {
            Value::Number(n) if is_pid_key => {
                match n.as_u64().and_then(|p| u32::try_from(p).ok()) {
                    Some(p) => self
                        .pids
                        .get(&p)
                        .cloned()
                        .unwrap_or_else(|| "<unknown-pid>".into()),
                    None => n.to_string(),
                }
            }
            Value::String(s) => self.text(s),
            other => self.text(&other.to_string()),
        }
    }

    /// One event as a stable line: `name key=value ...` (sorted keys, volatile
    /// fields dropped, the message left out: it is prose for humans).
    pub fn event(&self, ev: &Event) -> String {
        let mut line = ev.name.clone();
        for (k, v) in &ev.fields {
            if is_volatile_field(k) {
                continue;
            }
            line.push(' ');
            line.push_str(k);
            line.push('=');
            line.push_str(&self.value(k, v));
        }
        line
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

/// Remove what depends on timing or on how much the client wrote from free
/// text: a service's `(partial state: ...)`, and counts of milliseconds,
/// attempts and bytes.
pub fn scrub_volatile(s: &str) -> String {
    let mut out = s.to_string();
    const PARTIAL: &str = "(partial state:";
    if let Some(start) = out.find(PARTIAL) {
        let mut depth = 0usize;
        let mut end = out.len();
        for (i, c) in out[start..].char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = start + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(start..end, "(partial state: …)");
    }
    const UNITS: &[&str] = &[" ms", "ms", " attempts", " bytes", " connections"];
    let b = out.as_bytes();
    let mut scrubbed = String::with_capacity(out.len());
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !is_word_byte(b[i - 1])) {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let rest = &out[i..];
            let unit_follows = UNITS.iter().any(|u| {
                rest.starts_with(u)
                    && !rest[u.len()..]
                        .bytes()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric())
            });
            scrubbed.push_str(if unit_follows { "<n>" } else { &out[start..i] });
        } else {
            let ch = out[i..].chars().next().unwrap_or(' ');
            scrubbed.push(ch);
            i += ch.len_utf8();
        }
    }
    scrubbed
}

/// Map error wording that depends on a race between two processes to one
/// token. When a peer dies, the survivor may see a clean EOF, a truncated
/// frame, `EPIPE` or `ECONNRESET` depending on timing; the snapshot must not.
pub fn canonical_io_error(s: &str) -> String {
    const PEER_GONE: &[&str] = &[
        "os error 32",  // EPIPE
        "os error 104", // ECONNRESET
        "Broken pipe",
        "Connection reset",
        "peer closed the connection",
        "truncated frame",
    ];
    if PEER_GONE.iter().any(|p| s.contains(p)) {
        "<peer gone>".to_string()
    } else {
        s.to_string()
    }
}

/// A log several processes write to (the bench's service processes share
/// one file), its events grouped by the pid that wrote them, so each
/// process's events can be placed on the timeline of the handoff it took
/// part in (each process is the successor of one handoff and the incumbent
/// of the next).
#[derive(Debug, Default)]
pub struct SharedLog {
    /// Events by the pid that wrote them, in file order.
    pub by_pid: HashMap<u32, Vec<Event>>,
    /// WARN-and-above events, as `LEVEL event: message` (first few only).
    pub warnings: Vec<String>,
    /// Number of WARN-and-above events.
    pub warning_count: usize,
    /// Complete lines that are not valid events.
    pub unparsable_lines: usize,
}

/// Keep at most this many warnings of a [`SharedLog`] verbatim.
const MAX_WARNINGS_KEPT: usize = 20;

impl SharedLog {
    /// Group the events of the bytes of one JSON-lines log by pid (pure).
    pub fn parse(bytes: &[u8]) -> Self {
        let log = parse_log("shared", bytes);
        let mut out = SharedLog {
            unparsable_lines: log.bad_lines.len(),
            ..SharedLog::default()
        };
        for e in log.events {
            if matches!(e.level.as_str(), "WARN" | "ERROR") {
                out.warning_count += 1;
                if out.warnings.len() < MAX_WARNINGS_KEPT {
                    out.warnings
                        .push(format!("{} {}: {}", e.level, e.name, e.message));
                }
            }
            out.by_pid.entry(e.pid).or_default().push(e);
        }
        out
    }

    /// Read and group `path`; a missing file is an empty log.
    pub fn read(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::parse(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// When `pid` first logged `event` for handoff `handoff_id` (or with no
    /// handoff id: the fake peer's own events).
    pub fn find(&self, handoff_id: &str, pid: u32, event: &str) -> Option<u64> {
        self.by_pid
            .get(&pid)?
            .iter()
            .find(|e| {
                e.name == event && e.str_field("handoff_id").is_none_or(|id| id == handoff_id)
            })
            .map(|e| e.mono_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "0f1e2d3c-4b5a-4978-8877-665544332211";
    const ID_B: &str = "aaaaaaaa-bbbb-4ccc-9ddd-eeeeeeeeeeee";

    fn line(mono: u64, pid: u32, event: &str, extra: &str) -> String {
        format!(
            r#"{{"mono_ns":{mono},"unix_ms":1,"pid":{pid},"level":"INFO","event":"{event}","message":"m"{extra}}}"#
        ) + "\n"
    }

    #[test]
    fn logs_parse_and_tolerate_a_torn_tail() {
        let mut bytes = line(5, 10, "handoff.hello", r#","role":"incumbent""#).into_bytes();
        bytes.extend_from_slice(b"not json\n");
        bytes.extend_from_slice(br#"{"mono_ns":6,"pid":10,"ev"#);
        let log = parse_log("supervisor-1", &bytes);
        assert_eq!(log.events.len(), 1);
        assert_eq!(log.events[0].name, "handoff.hello");
        assert_eq!(log.events[0].str_field("role"), Some("incumbent"));
        assert_eq!(log.bad_lines, vec!["not json".to_string()]);
        assert_eq!(log.torn_tail_bytes, 25);
        assert_eq!(log.pid(), Some(10));
    }

    #[test]
    fn merge_orders_by_clock_then_process() {
        let a = parse_log("peer-0", line(20, 1, "b", "").as_bytes());
        let b = parse_log(
            "supervisor-1",
            (line(10, 2, "a", "") + &line(20, 2, "c", "")).as_bytes(),
        );
        let logs = [a, b];
        let merged: Vec<&str> = merge(&logs).iter().map(|e| e.name.as_str()).collect();
        assert_eq!(merged, vec!["a", "c", "b"]);
    }

    #[test]
    fn uuids_are_found_only_whole() {
        let s = format!("x {ID_A} y{ID_B}");
        assert_eq!(find_uuids(&s).len(), 2);
        assert!(find_uuids(&format!("{ID_A}f")).is_empty());
        assert!(find_uuids("0f1e2d3c-4b5a-4978-8877-66554433221").is_empty());
    }

    #[test]
    fn ids_are_numbered_in_process_order_not_clock_order() {
        // The peer logs the id "earlier" on the clock; numbering still
        // follows supervisor-1 first.
        let peer = parse_log(
            "peer-0",
            line(1, 7, "x", &format!(r#","handoff_id":"{ID_B}""#)).as_bytes(),
        );
        let sup = parse_log(
            "supervisor-1",
            (line(5, 8, "y", &format!(r#","handoff_id":"{ID_A}""#))
                + &line(6, 8, "z", &format!(r#","handoff_id":"{ID_B}""#)))
                .as_bytes(),
        );
        let mut n = Normaliser::new(vec![]);
        n.learn_ids(&[peer, sup]);
        assert_eq!(n.id_name(ID_A), Some("<id1>"));
        assert_eq!(n.id_name(ID_B), Some("<id2>"));
    }

    #[test]
    fn uuids_inside_known_paths_are_not_handoff_ids() {
        let extra = format!(r#","binary":"/t/run-{ID_B}/fake-peer","handoff_id":"{ID_A}""#);
        let log = parse_log(
            "supervisor-1",
            line(1, 7, "handoff.spawn", &extra).as_bytes(),
        );
        let mut n = Normaliser::new(vec![(format!("/t/run-{ID_B}"), "<bin>".into())]);
        n.learn_ids(std::slice::from_ref(&log));
        assert_eq!(n.id_name(ID_A), Some("<id1>"));
        assert_eq!(n.id_name(ID_B), None);
        assert_eq!(
            n.event(&log.events[0]),
            "handoff.spawn binary=<bin>/fake-peer handoff_id=<id1>"
        );
    }

    #[test]
    fn events_normalise_pids_paths_ids_and_drop_volatile_fields() {
        let extra = format!(
            r#","handoff_id":"{ID_A}","successor_pid":4321,"incumbent_pid":77,"drain_grace_ms":300,"path":"/tmp/abc/control.sock","error":"I/O error: Broken pipe (os error 32)","committed":true"#
        );
        let log = parse_log(
            "supervisor-1",
            line(1, 1234, "handoff.prepare", &extra).as_bytes(),
        );
        let mut n = Normaliser::new(vec![("/tmp/abc".into(), "<dir>".into())]);
        n.learn_ids(std::slice::from_ref(&log));
        n.learn_pid(4321, "peer-1");
        n.learn_pid(1234, "supervisor-1");
        assert_eq!(
            n.event(&log.events[0]),
            "handoff.prepare committed=true error=<peer gone> handoff_id=<id1> \
             incumbent_pid=<unknown-pid> path=<dir>/control.sock successor_pid=peer-1"
        );
        assert_eq!(
            n.text("successor announced pid 4321, child is 12345, port 43210"),
            "successor announced pid peer-1, child is 12345, port 43210"
        );
    }

    #[test]
    fn timing_and_data_dependent_text_is_scrubbed() {
        assert_eq!(
            scrub_volatile("seal failed (partial state: seq=3 keys=3 log=[len=24 x]) handoff_id=x"),
            "seal failed (partial state: …) handoff_id=x"
        );
        assert_eq!(
            scrub_volatile("still held after waiting 2000 ms (372 attempts); pid 42, 5ms"),
            "still held after waiting <n> ms (<n> attempts); pid 42, <n>ms"
        );
        assert_eq!(scrub_volatile("v2 msg 12 msgs"), "v2 msg 12 msgs");
    }

    #[test]
    fn process_order_is_supervisors_then_peers_numerically() {
        let mut names = vec!["peer-10", "peer-2", "supervisor-2", "supervisor-10", "x"];
        names.sort_by_key(|n| process_order(n));
        assert_eq!(
            names,
            vec!["supervisor-2", "supervisor-10", "peer-2", "peer-10", "x"]
        );
    }
    #[test]
    fn a_shared_log_groups_by_pid_and_handoff_and_keeps_warnings() {
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
        let log = SharedLog::parse(text.as_bytes());
        assert_eq!(log.find("h1", 7, "handoff.successor.ready"), Some(12));
        assert_eq!(log.find("h2", 7, "handoff.successor.ready"), None);
        assert_eq!(log.find("h1", 8, "handoff.successor.ready"), None);
        assert_eq!(log.find("any", 6, "fake_peer.exit"), Some(14));
        assert_eq!(log.warning_count, 1);
        assert_eq!(log.unparsable_lines, 1);
        assert_eq!(log.by_pid.len(), 2);
    }
}
