//! The fake peer's durable state: an append-only log `<data-dir>/kv.log` of
//! records `<seq> <key> <value>\n`, replayed into a map on open.
//!
//! Guarantees:
//! - a `PUT` is acknowledged only after its record is appended and fsynced;
//! - a torn last line (a crash in the middle of an append) is ignored by
//!   [`replay`] and truncated away by [`Store::open`]; any other damage is an
//!   error, never silently skipped;
//! - after [`Store::seal`] nothing is written until [`Store::resume`], which
//!   replays the log from disk again (while sealed, the flock was released,
//!   and a successor may have appended);
//! - a successor may replay the log *before* it holds the flock
//!   ([`Store::preload`]) and, once it does, replay only what was appended
//!   since ([`Store::open_preloaded`]); the result is that of [`Store::open`].
//!
//! [`replay`] and [`Fingerprint`] are pure.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// File name of the log inside the data dir.
pub const LOG_FILE: &str = "kv.log";

/// A cheap, incremental fingerprint of the log's bytes: length and FNV-1a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes covered.
    pub len: u64,
    /// FNV-1a 64 over those bytes.
    pub fnv1a64: u64,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self {
            len: 0,
            fnv1a64: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Fingerprint {
    /// Extend the fingerprint with `bytes` appended to the log.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.fnv1a64 ^= u64::from(*b);
            self.fnv1a64 = self.fnv1a64.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.len += bytes.len() as u64;
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "len={} fnv1a64={:016x}", self.len, self.fnv1a64)
    }
}

/// What [`replay`] rebuilt from the log's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Key → latest value.
    pub map: HashMap<String, String>,
    /// Sequence number of the last record (0 when the log is empty).
    pub last_seq: u64,
    /// Bytes of whole records: everything after this is a torn last line.
    pub valid_len: u64,
    /// Bytes of the torn last line (0 when the log ends with `\n`).
    pub torn_tail_len: u64,
    /// Fingerprint of the first `valid_len` bytes.
    pub fingerprint: Fingerprint,
}

/// A log that cannot be trusted: a complete line that is not a record, or
/// records out of sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kv.log is corrupt at byte {offset} (line {line_no}): {reason}")]
pub struct ReplayError {
    /// Byte offset of the bad line.
    pub offset: u64,
    /// 1-based line number.
    pub line_no: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Render one record, newline included.
pub fn render_record(seq: u64, key: &str, value: &str) -> String {
    format!("{seq} {key} {value}\n")
}

/// Rebuild the map from the log's bytes (pure).
///
/// Records must be numbered 1, 2, 3, ... in order. A final line without its
/// `\n` is a torn append and is reported in `torn_tail_len`, not replayed.
pub fn replay(bytes: &[u8]) -> Result<Replay, ReplayError> {
    replay_from(Replay::default(), bytes)
}

/// Continue a replay (pure): `bytes` are the log's bytes from `prev.valid_len`
/// on. `prev`'s torn tail, if any, is forgotten (those bytes are the start of
/// `bytes`). Offsets and line numbers in errors are the whole log's.
/// `replay_from(replay(a)?, b)` equals `replay(a ++ b)` whenever `a` ends
/// with `\n` (or is empty).
pub fn replay_from(prev: Replay, bytes: &[u8]) -> Result<Replay, ReplayError> {
    let mut out = prev;
    out.torn_tail_len = 0;
    let base = out.valid_len;
    let mut offset = 0usize;
    // One record per line, numbered from 1.
    let mut line_no = out.last_seq;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            out.torn_tail_len = rest.len() as u64;
            break;
        };
        line_no += 1;
        let line = &rest[..nl];
        let bad = |reason: String| ReplayError {
            offset: base + offset as u64,
            line_no,
            reason,
        };
        let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8".into()))?;
        let mut tokens = text.split(' ');
        let (Some(seq), Some(key), Some(value), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(bad(format!("expected `<seq> <key> <value>`, got {text:?}")));
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| bad(format!("sequence number {seq:?} is not a number")))?;
        if seq != out.last_seq + 1 {
            return Err(bad(format!(
                "sequence number {seq} follows {}; expected {}",
                out.last_seq,
                out.last_seq + 1
            )));
        }
        if key.is_empty() || value.is_empty() {
            return Err(bad("empty key or value".into()));
        }
        out.map.insert(key.to_string(), value.to_string());
        out.last_seq = seq;
        offset += nl + 1;
        out.fingerprint.update(&rest[..=nl]);
    }
    out.valid_len = base + offset as u64;
    debug_assert_eq!(out.valid_len, out.fingerprint.len);
    Ok(out)
}

/// Why a `PUT` was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The store is sealed for a handoff: this process no longer writes.
    #[error("sealed for handoff; retry on a new connection")]
    Sealed,
    /// An earlier append failed and could not be rolled back: the store
    /// refuses writes rather than risk a damaged log.
    #[error("store is read-only after a failed append: {0}")]
    Poisoned(String),
    /// The append or fsync failed (rolled back; nothing acknowledged).
    #[error("append failed: {0}")]
    Io(#[from] io::Error),
}

/// What [`Store::seal`] made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Sequence number of the last record.
    pub last_seq: u64,
    /// Fingerprint of the whole log.
    pub fingerprint: Fingerprint,
}

/// The log as [`Store::preload`] read it, without the flock: whole records
/// only. Hand it to [`Store::open_preloaded`] once the flock is held.
#[derive(Debug, Clone, Default)]
pub struct Preloaded {
    /// The replay of the whole records read (`torn_tail_len` is 0).
    replay: Replay,
    /// Device and inode of the log that was read.
    file_id: Option<(u64, u64)>,
    /// The last record read, newline included: it must still be there, at
    /// `replay.valid_len - last_record.len()`, for the preload to be reused.
    last_record: Vec<u8>,
}

impl Preloaded {
    /// Bytes of whole records replayed.
    pub fn len(&self) -> u64 {
        self.replay.valid_len
    }

    /// True when nothing was replayed (no log, or an empty one).
    pub fn is_empty(&self) -> bool {
        self.replay.valid_len == 0
    }

    /// Sequence number of the last record replayed.
    pub fn last_seq(&self) -> u64 {
        self.replay.last_seq
    }
}

/// The open store. Not synchronised: the server wraps it in a mutex, which
/// also serialises appends.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    map: HashMap<String, String>,
    last_seq: u64,
    fingerprint: Fingerprint,
    /// `None` while sealed.
    log: Option<File>,
    poisoned: Option<String>,
    /// Something may have reached the log since its last successful
    /// `fdatasync` (true from opening until a sync succeeds).
    unsynced: bool,
}

impl Store {
    /// Open `<data_dir>/kv.log` (created if missing), replay it, truncate a
    /// torn last line away, and open it for appending.
    ///
    /// The caller must hold the data-dir flock.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        // Make the log's directory entry durable, also when the log existed:
        // the process that created it may have died before its directory
        // fsync, and then every record fdatasync'ed into it from here on
        // would be lost with the entry at a power cut. Once per open, off
        // the PUT path.
        File::open(data_dir)?.sync_all()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let replayed = replay(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Self::from_replay(path, file, replayed)
    }

    /// Replay what `<data_dir>/kv.log` holds now, read-only and *without*
    /// the flock: start-up work a successor does before `Begin`.
    ///
    /// This is a correct prefix of what the successor will find once it holds
    /// the flock: the incumbent only appends, and only while it holds the
    /// flock; an append not yet complete is a last line without its `\n`,
    /// which is left out here. The one exception, a record whose fsync
    /// failed and that the incumbent truncated away again (see
    /// [`Store::put`]), can only be the last whole record, which
    /// [`Store::open_preloaded`] therefore checks is still there.
    ///
    /// A missing log preloads as empty; a corrupt one is an error (and
    /// [`Store::open`] will say so again under the flock).
    pub fn preload(data_dir: &Path) -> io::Result<Preloaded> {
        let mut file = match File::open(data_dir.join(LOG_FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Preloaded::default()),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut replayed =
            replay(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Possibly an append in progress: not ours to judge without the flock.
        replayed.torn_tail_len = 0;
        let whole = &bytes[..replayed.valid_len as usize];
        let last_start = match whole.len().checked_sub(1) {
            Some(before_nl) => whole[..before_nl]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |nl| nl + 1),
            None => 0,
        };
        Ok(Preloaded {
            last_record: whole[last_start..].to_vec(),
            file_id: Some((meta.dev(), meta.ino())),
            replay: replayed,
        })
    }

    /// [`Store::open`] after a [`Store::preload`]: replay only the bytes
    /// appended since the preload, with the same torn-tail handling. Falls
    /// back to a full [`Store::open`] when the preload is not a prefix of the
    /// log any more (another file, shorter, its last record changed) or the
    /// rest does not continue it (does not parse, or breaks the sequence).
    ///
    /// The caller must hold the data-dir flock.
    pub fn open_preloaded(data_dir: &Path, pre: Preloaded) -> io::Result<Self> {
        if pre.is_empty() {
            return Self::open(data_dir);
        }
        let preloaded = pre.len();
        let stale = |why: &str| Self::open_after_stale_preload(data_dir, preloaded, why);
        let path = data_dir.join(LOG_FILE);
        let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return stale("the log is gone");
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if pre.file_id != Some((meta.dev(), meta.ino())) {
            return stale("the log was replaced");
        }
        if meta.len() < pre.len() {
            return stale("the log got shorter");
        }
        // Re-read the last preloaded record along with what follows it.
        let last_start = pre.len() - pre.last_record.len() as u64;
        file.seek(SeekFrom::Start(last_start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let Some(rest) = bytes.strip_prefix(pre.last_record.as_slice()) else {
            return stale("its last record changed");
        };
        match replay_from(pre.replay, rest) {
            Ok(replayed) => Self::from_replay(path, file, replayed),
            Err(e) => {
                drop(file);
                stale(&format!("what follows does not continue it ({e})"))
            }
        }
    }

    fn open_after_stale_preload(
        data_dir: &Path,
        preloaded_bytes: u64,
        why: &str,
    ) -> io::Result<Self> {
        tracing::info!(
            target: "fake_peer.preload_stale",
            preloaded_bytes,
            why,
            "preloaded kv.log is not a prefix of the log; replaying all of it"
        );
        Self::open(data_dir)
    }

    /// The end of [`Store::open`]: truncate a torn last line away and keep
    /// `file` (opened for appending) as the log.
    fn from_replay(path: PathBuf, file: File, replayed: Replay) -> io::Result<Self> {
        if replayed.torn_tail_len > 0 {
            tracing::warn!(
                target: "fake_peer.torn_tail",
                path = %path.display(),
                torn_bytes = replayed.torn_tail_len,
                "truncating a torn last record"
            );
            file.set_len(replayed.valid_len)?;
            file.sync_all()?;
        }
        Ok(Self {
            path,
            map: replayed.map,
            last_seq: replayed.last_seq,
            fingerprint: replayed.fingerprint,
            log: Some(file),
            poisoned: None,
            unsynced: true,
        })
    }

    /// Append `key = value`, fsync, and return the record's sequence number.
    pub fn put(&mut self, key: &str, value: &str) -> Result<u64, PutError> {
        if let Some(why) = &self.poisoned {
            return Err(PutError::Poisoned(why.clone()));
        }
        let Some(log) = self.log.as_mut() else {
            return Err(PutError::Sealed);
        };
        debug_assert!(!key.is_empty() && !key.contains(char::is_whitespace));
        debug_assert!(!value.is_empty() && !value.contains(char::is_whitespace));
        let seq = self.last_seq + 1;
        let record = render_record(seq, key, value);
        self.unsynced = true;
        if let Err(e) = log
            .write_all(record.as_bytes())
            .and_then(|()| log.sync_data())
        {
            // Roll a partial append back so the log stays replayable.
            match log
                .set_len(self.fingerprint.len)
                .and_then(|()| log.sync_data())
            {
                Ok(()) => self.unsynced = false,
                Err(rollback) => {
                    self.poisoned =
                        Some(format!("append failed ({e}), rollback failed ({rollback})"));
                }
            }
            return Err(PutError::Io(e));
        }
        self.unsynced = false;
        self.fingerprint.update(record.as_bytes());
        self.last_seq = seq;
        self.map.insert(key.to_string(), value.to_string());
        Ok(seq)
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Sequence number of the last durable record.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Number of distinct keys.
    pub fn key_count(&self) -> usize {
        self.map.len()
    }

    /// True between [`Store::seal`] and [`Store::resume`].
    pub fn is_sealed(&self) -> bool {
        self.log.is_none()
    }

    /// Fsync and close the log; refuse writes from now on. Idempotent.
    pub fn seal(&mut self) -> io::Result<Sealed> {
        if let Some(log) = self.log.as_ref() {
            // What the seal must guarantee is that every acknowledged record
            // is durable, also across a power cut. Each was already
            // fdatasync'ed before its PUT was acknowledged (see `put`), and
            // fdatasync covers the file size; `sync_all` would add only the
            // mtime, which nothing needs. The log's directory entry was
            // made durable by `open`. What may not be durable is what
            // reached the log since the last successful sync: records a
            // previous writer appended and died before syncing (replayed,
            // so `unsynced` starts true), or a failed append. So
            // `sync_data`, and only then: on a clean file it still costs a
            // device cache flush (about 0.05 ms here), in the window in
            // which no process serves.
            if self.unsynced || self.poisoned.is_some() {
                log.sync_data()?;
                self.unsynced = false;
            }
        }
        self.log = None;
        Ok(Sealed {
            last_seq: self.last_seq,
            fingerprint: self.fingerprint,
        })
    }

    /// Undo [`Store::seal`]: replay the log from disk again (another process
    /// may have appended while this one did not hold the flock) and reopen it
    /// for appending. Does nothing when not sealed. On error the store stays
    /// sealed (reads still work, writes are refused).
    pub fn resume(&mut self) -> io::Result<()> {
        if !self.is_sealed() {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        *self = Store::open(&dir)?;
        Ok(())
    }

    /// A one-line description for logs: `seq=N keys=M sealed=B`.
    pub fn describe(&self) -> String {
        format!(
            "seq={} keys={} sealed={} log=[{}]",
            self.last_seq,
            self.map.len(),
            self.is_sealed(),
            self.fingerprint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_path(dir: &Path) -> PathBuf {
        dir.join(LOG_FILE)
    }

    fn append(dir: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(log_path(dir)).unwrap();
        f.write_all(bytes).unwrap();
    }

    /// A second data dir holding a copy of `dir`'s log, for a full open to
    /// compare with (a full open may truncate the log it opens).
    fn copy_of(dir: &Path) -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(log_path(dir), log_path(copy.path())).unwrap();
        copy
    }

    /// Same state, and same log bytes left on disk.
    fn assert_same(preloaded: &Store, full: &Store, what: &str) {
        assert_eq!(preloaded.map, full.map, "{what}");
        assert_eq!(preloaded.last_seq, full.last_seq, "{what}");
        assert_eq!(preloaded.fingerprint, full.fingerprint, "{what}");
        assert_eq!(
            std::fs::read(&preloaded.path).unwrap(),
            std::fs::read(&full.path).unwrap(),
            "{what}: log bytes"
        );
    }

    #[test]
    fn preload_then_appends_then_open_preloaded_equals_a_full_open() {
        let dir = tempfile::tempdir().unwrap();
        // The incumbent writes; the successor preloads meanwhile, once
        // between records and once in the middle of an append.
        let mut incumbent = Store::open(dir.path()).unwrap();
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            incumbent.put(k, v).unwrap();
        }
        let pre = Store::preload(dir.path()).unwrap();
        assert_eq!((pre.last_seq(), pre.len()), (3, 18));
        for (k, v) in [("c", "4"), ("b", "5")] {
            incumbent.put(k, v).unwrap();
        }
        append(dir.path(), b"6 d");
        let mid_append = Store::preload(dir.path()).unwrap();
        assert_eq!(
            (mid_append.last_seq(), mid_append.len()),
            (5, 30),
            "a record being appended is left out"
        );
        append(dir.path(), b" 6\n7 a 7\n");
        incumbent.seal().unwrap();

        let full = Store::open(dir.path()).unwrap();
        assert_eq!(full.last_seq(), 7);
        for pre in [pre, mid_append] {
            let store = Store::open_preloaded(dir.path(), pre).unwrap();
            assert_same(&store, &full, "preloaded");
        }
        // It appends where a full open would.
        let mut store = Store::open_preloaded(dir.path(), Preloaded::default()).unwrap();
        assert_eq!(store.put("e", "8").unwrap(), 8);
    }

    #[test]
    fn a_preload_that_is_no_longer_a_prefix_falls_back_to_a_full_open() {
        let records = b"1 a x\n2 b y\n3 c z\n";
        type Change = fn(&Path);
        let changes: &[(&str, Change)] = &[
            ("truncated", |dir| {
                std::fs::write(log_path(dir), b"1 a x\n").unwrap();
            }),
            // Same length or longer, but the last preloaded record is not
            // the one there now (an append rolled back and another written):
            // replaying only what follows would keep `c z` and miss `c w`.
            ("last record rewritten", |dir| {
                std::fs::write(log_path(dir), b"1 a x\n2 b y\n3 c w\n4 d v\n").unwrap();
            }),
            ("rewritten from the middle", |dir| {
                std::fs::write(log_path(dir), b"1 a x\n2 q qq\n3 c z\n4 d v\n").unwrap();
            }),
            // Identical bytes and more, but another file.
            ("replaced", |dir| {
                let new = dir.join("new.log");
                std::fs::write(&new, b"1 a x\n2 b y\n3 c z\n4 d v\n").unwrap();
                std::fs::rename(new, log_path(dir)).unwrap();
            }),
            ("removed", |dir| {
                std::fs::remove_file(log_path(dir)).unwrap();
            }),
        ];
        for (what, change) in changes {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(log_path(dir.path()), records).unwrap();
            let pre = Store::preload(dir.path()).unwrap();
            assert_eq!(pre.last_seq(), 3);
            let preloaded_map = pre.replay.map.clone();
            change(dir.path());
            let store = Store::open_preloaded(dir.path(), pre).unwrap();
            let full = Store::open(dir.path()).unwrap();
            assert_same(&store, &full, what);
            assert_ne!(store.map, preloaded_map, "{what}: the change shows");
        }
    }

    #[test]
    fn a_continuation_that_breaks_the_sequence_fails_as_a_full_open_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), b"1 a x\n2 b y\n").unwrap();
        let pre = Store::preload(dir.path()).unwrap();
        append(dir.path(), b"4 c z\n");
        let e = Store::open_preloaded(dir.path(), pre).unwrap_err();
        let full = Store::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), full.to_string());
        assert!(e.to_string().contains("at byte 12 (line 3)"), "{e}");
    }

    #[test]
    fn a_torn_tail_after_the_preload_is_truncated_as_a_full_open_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), b"1 a x\n").unwrap();
        let pre = Store::preload(dir.path()).unwrap();
        append(dir.path(), b"2 b y\n3 c");
        let copy = copy_of(dir.path());
        let full = Store::open(copy.path()).unwrap();
        let mut store = Store::open_preloaded(dir.path(), pre).unwrap();
        assert_same(&store, &full, "torn tail");
        assert_eq!(store.last_seq(), 2);
        assert_eq!(
            std::fs::read(log_path(dir.path())).unwrap(),
            b"1 a x\n2 b y\n"
        );
        assert_eq!(store.put("c", "w").unwrap(), 3);
        assert_eq!(
            std::fs::read(log_path(dir.path())).unwrap(),
            b"1 a x\n2 b y\n3 c w\n"
        );
    }

    #[test]
    fn preload_of_a_missing_log_is_empty_and_a_corrupt_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pre = Store::preload(dir.path()).unwrap();
        assert!(pre.is_empty());
        let store = Store::open_preloaded(dir.path(), pre).unwrap();
        assert_eq!(store.last_seq(), 0);
        assert!(
            log_path(dir.path()).exists(),
            "created, as a full open does"
        );
        std::fs::write(log_path(dir.path()), b"1 a x\nnonsense\n").unwrap();
        let e = Store::preload(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn replay_from_continues_a_replay() {
        let log = b"1 a x\n2 b y\n3 a z\n4 c w";
        for cut in [0, 6, 12, 18] {
            let head = replay(&log[..cut]).unwrap();
            let joined = replay_from(head, &log[cut..]).unwrap();
            assert_eq!(joined, replay(log).unwrap(), "cut at {cut}");
        }
        let e = replay_from(replay(b"1 a x\n").unwrap(), b"2 b y\nbad\n").unwrap_err();
        assert_eq!((e.offset, e.line_no), (12, 3));
    }
}
