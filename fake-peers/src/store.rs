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
//!   and a successor may have appended).
//!
//! [`replay`] and [`Fingerprint`] are pure.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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
    let mut out = Replay::default();
    let mut offset = 0usize;
    let mut line_no = 0u64;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            out.torn_tail_len = rest.len() as u64;
            break;
        };
        line_no += 1;
        let line = &rest[..nl];
        let bad = |reason: String| ReplayError {
            offset: offset as u64,
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
    out.valid_len = offset as u64;
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
}

impl Store {
    /// Open `<data_dir>/kv.log` (created if missing), replay it, truncate a
    /// torn last line away, and open it for appending.
    ///
    /// The caller must hold the data-dir flock.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join(LOG_FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if created {
            // Make the new directory entry durable too.
            File::open(data_dir)?.sync_all()?;
        }
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        let replayed = replay(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
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
        if let Err(e) = log
            .write_all(record.as_bytes())
            .and_then(|()| log.sync_data())
        {
            // Roll a partial append back so the log stays replayable.
            if let Err(rollback) = log
                .set_len(self.fingerprint.len)
                .and_then(|()| log.sync_data())
            {
                self.poisoned = Some(format!("append failed ({e}), rollback failed ({rollback})"));
            }
            return Err(PutError::Io(e));
        }
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
            // is durable. Each was already fdatasync'ed before its PUT was
            // acknowledged (see `put`), and fdatasync covers the file size;
            // `sync_all` would add only the mtime, which nothing needs. So
            // `sync_data`, which is then all but free, on the critical path.
            log.sync_data()?;
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
