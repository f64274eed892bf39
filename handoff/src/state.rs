//! The supervisor's journal of the in-flight handoff (DESIGN.md section 6).
//!
//! One small JSON file records which handoff is in flight, how far it got and
//! which processes take part, so a supervisor that restarts mid-handoff
//! (`Supervisor::resume_from_journal`) knows what it left behind.
//!
//! Guarantees:
//!
//! - **Atomic replace.** [`StateJournal::write_atomic`] writes a temporary file
//!   in the journal's directory, fsyncs it, renames it over the journal and
//!   fsyncs the directory. After a crash the journal is the old version or the
//!   new one, never a mix (on a file system that honours `rename(2)` and
//!   `fsync(2)`).
//! - **Versioned.** The file carries a format version (`"v": 1`); a journal
//!   written by a future build is reported as such, not as garbage.
//! - **Never trusted blindly.** [`StateJournal::read`] returns
//!   [`Error::JournalCorrupt`] for an empty, truncated, garbage, oversized or
//!   future-version file, or one whose fields contradict each other, with a
//!   reason that says which. Nothing in this module panics on any input.
//!
//! Encoding and decoding are pure ([`StateJournal::encode`],
//! [`StateJournal::decode`]); the file operations are thin layers around them.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::HandoffId;

/// The phase of the in-flight handoff, as last journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Both hellos done.
    Negotiating,
    /// `Drained` received.
    Draining,
    /// `SealComplete` received: O released the flock.
    Sealing,
    /// `Begin` sent.
    AwaitingReady,
    /// `Commit` sent.
    Committed,
    /// Aborted after the seal; `ResumeAfterAbort` sent.
    ResumingAfterAbort,
}

/// What the journal records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateJournal {
    /// The in-flight handoff.
    pub handoff_id: HandoffId,
    /// Its phase.
    pub phase: Phase,
    /// The incumbent's pid, from its `Hello`.
    pub incumbent_pid: u32,
    /// The successor's pid, once spawned.
    pub successor_pid: Option<u32>,
    /// When the handoff started.
    pub started_at_unix_ms: u64,
}

/// The journal format this build writes, and the only one it reads.
pub const JOURNAL_FORMAT_VERSION: u64 = 1;

/// A journal larger than this is not one we wrote; reading stops there, so a
/// huge file in the journal's place costs no more than this much memory.
pub const MAX_JOURNAL_LEN: usize = 64 * 1024;

/// The on-disk shape of version 1: the journal plus its format version.
/// Unknown fields are rejected: within one version the shape is fixed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFileV1 {
    v: u64,
    handoff_id: HandoffId,
    phase: Phase,
    incumbent_pid: u32,
    successor_pid: Option<u32>,
    started_at_unix_ms: u64,
}

/// Distinguishes temporary files written concurrently by threads of one
/// process (the pid in the name distinguishes processes).
static TEMP_FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl StateJournal {
    /// Encode (pure): pretty JSON with a format version field, ending in a
    /// newline.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(
            self.check_invariants().is_ok(),
            "encoding an inconsistent journal: {:?}",
            self.check_invariants()
        );
        let file = JournalFileV1 {
            v: JOURNAL_FORMAT_VERSION,
            handoff_id: self.handoff_id,
            phase: self.phase,
            incumbent_pid: self.incumbent_pid,
            successor_pid: self.successor_pid,
            started_at_unix_ms: self.started_at_unix_ms,
        };
        // Serializing plain integers, strings and enums into memory cannot fail.
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Decode (pure); the error string says what is wrong: `"empty file"`,
    /// `"truncated or not JSON: ..."`, `"written by format version 7, this
    /// build reads 1"`, a missing or ill-typed field, or a broken invariant.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(if bytes.is_empty() {
                "empty file".to_owned()
            } else {
                format!("only whitespace ({} bytes)", bytes.len())
            });
        }
        if bytes.len() > MAX_JOURNAL_LEN {
            return Err(format!(
                "{} bytes, larger than any journal ({MAX_JOURNAL_LEN}-byte cap)",
                bytes.len()
            ));
        }
        // Two steps, so a future version is named as such even when its
        // fields differ from ours.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("truncated or not JSON: {e}"))?;
        let Some(object) = value.as_object() else {
            return Err(format!("not a JSON object but {}", json_kind(&value)));
        };
        let version = match object.get("v") {
            None => return Err("no format version field \"v\"".to_owned()),
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("format version field \"v\" is {v}, not a non-negative integer")
            })?,
        };
        if version != JOURNAL_FORMAT_VERSION {
            return Err(format!(
                "written by format version {version}, this build reads {JOURNAL_FORMAT_VERSION}"
            ));
        }
        let file: JournalFileV1 = serde_json::from_value(value)
            .map_err(|e| format!("format version 1 but malformed: {e}"))?;
        let journal = StateJournal {
            handoff_id: file.handoff_id,
            phase: file.phase,
            incumbent_pid: file.incumbent_pid,
            successor_pid: file.successor_pid,
            started_at_unix_ms: file.started_at_unix_ms,
        };
        journal
            .check_invariants()
            .map_err(|e| format!("inconsistent: {e}"))?;
        Ok(journal)
    }

    /// Check what must hold of any journal the supervisor writes: a real
    /// handoff id, real and distinct pids, and a successor once `Begin` has
    /// been sent. Checked after every read and (in debug builds) before every
    /// write.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        if self.handoff_id == HandoffId::nil() {
            return Err("handoff_id is the nil id".to_owned());
        }
        if self.incumbent_pid == 0 {
            return Err("incumbent_pid is 0".to_owned());
        }
        match self.successor_pid {
            Some(0) => return Err("successor_pid is 0".to_owned()),
            Some(pid) if pid == self.incumbent_pid => {
                return Err(format!(
                    "successor_pid and incumbent_pid are both {pid}: one process cannot hand off to itself"
                ));
            }
            None if matches!(self.phase, Phase::AwaitingReady | Phase::Committed) => {
                return Err(format!("phase {:?} but no successor_pid", self.phase));
            }
            _ => {}
        }
        Ok(())
    }

    /// Atomic replace: temp file in the same dir, fsync, rename, fsync dir.
    ///
    /// The temporary file is named `.<journal name>.tmp.<pid>.<n>`, so
    /// concurrent writers never share one, and it is removed if any step
    /// before the rename fails.
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        debug_assert!(
            self.check_invariants().is_ok(),
            "writing an inconsistent journal: {:?}",
            self.check_invariants()
        );
        let bytes = self.encode();
        let dir = parent_dir(path);
        let file_name = path
            .file_name()
            .ok_or_else(|| {
                std::io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("journal path {} names no file", path.display()),
                )
            })?
            .to_string_lossy();
        let temp_path = dir.join(format!(
            ".{file_name}.tmp.{}.{}",
            std::process::id(),
            TEMP_FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));

        let written = (|| -> std::io::Result<()> {
            let mut temp = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)?;
            temp.write_all(&bytes)?;
            temp.sync_all()?;
            fs::rename(&temp_path, path)
        })();
        if let Err(e) = written {
            // Best effort: the rename did not happen, so the temp file is ours
            // alone; failing to remove it only leaves litter.
            let _ = fs::remove_file(&temp_path);
            return Err(Error::Io(e));
        }
        sync_dir(&dir)?;
        Ok(())
    }

    /// `Ok(None)` when absent; [`Error::JournalCorrupt`] when unreadable.
    ///
    /// Other I/O failures (permission denied, a directory in the journal's
    /// place) are [`Error::Io`]. At most [`MAX_JOURNAL_LEN`] + 1 bytes are read.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_JOURNAL_LEN as u64 + 1)
            .read_to_end(&mut bytes)?;
        Self::decode(&bytes)
            .map(Some)
            .map_err(|reason| Error::JournalCorrupt {
                path: path.to_owned(),
                reason,
            })
    }

    /// Remove (absent is fine), fsync the dir.
    ///
    /// The directory is synced even when the journal was already absent, so a
    /// removal that an earlier crash left unsynced becomes durable too.
    pub fn delete(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io(e)),
        }
        sync_dir(&parent_dir(path))
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Make a rename or unlink in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateJournal {
        StateJournal {
            handoff_id: "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8c".parse().unwrap(),
            phase: Phase::AwaitingReady,
            incumbent_pid: 4242,
            successor_pid: Some(4343),
            started_at_unix_ms: 1_700_000_000_123,
        }
    }

    fn reason_of(bytes: &[u8]) -> String {
        StateJournal::decode(bytes).expect_err("must not decode")
    }

    #[test]
    fn encode_then_decode_round_trips_every_phase() {
        for phase in [
            Phase::Negotiating,
            Phase::Draining,
            Phase::Sealing,
            Phase::AwaitingReady,
            Phase::Committed,
            Phase::ResumingAfterAbort,
        ] {
            let journal = StateJournal { phase, ..sample() };
            assert_eq!(StateJournal::decode(&journal.encode()), Ok(journal));
        }
    }

    #[test]
    fn encoding_carries_the_format_version() {
        let text = String::from_utf8(sample().encode()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["phase"], "awaiting_ready");
        assert_eq!(value["handoff_id"], "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8c");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn empty_file_is_reported_as_empty() {
        assert_eq!(reason_of(b""), "empty file");
        assert!(reason_of(b"  \n").contains("only whitespace"));
    }

    #[test]
    fn every_strict_prefix_of_a_journal_is_rejected() {
        let bytes = sample().encode();
        let complete = bytes.trim_ascii_end().len();
        for len in 0..complete {
            let prefix = &bytes[..len];
            let reason = reason_of(prefix);
            assert!(
                reason == "empty file" || reason.starts_with("truncated or not JSON"),
                "prefix of {len} bytes: unexpected reason {reason:?}"
            );
        }
        // Losing only the final newline loses nothing.
        assert_eq!(StateJournal::decode(&bytes[..complete]), Ok(sample()));
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert!(reason_of(b"\x00\xff\xfe garbage").starts_with("truncated or not JSON"));
        assert!(reason_of(b"[1, 2]").contains("not a JSON object but an array"));
        assert!(reason_of(b"\"hello\"").contains("a string"));
        assert!(reason_of(b"{}").contains("no format version"));
        assert!(reason_of(br#"{"v": "one"}"#).contains("not a non-negative integer"));
        assert!(reason_of(br#"{"v": 1}"#).contains("malformed"));
        assert!(reason_of(br#"{"v": -1}"#).contains("not a non-negative integer"));
        let mut value: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        value["phase"] = "sideways".into();
        assert!(reason_of(&serde_json::to_vec(&value).unwrap()).contains("malformed"));
        value["phase"] = "sealing".into();
        value["surprise"] = 1.into();
        assert!(reason_of(&serde_json::to_vec(&value).unwrap()).contains("unknown field"));
        // Every single-byte corruption either decodes to something consistent
        // or is an error; none panics.
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for replacement in [b'0', b'"', b'}', 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[i] = replacement;
                if let Ok(journal) = StateJournal::decode(&corrupt) {
                    assert_eq!(journal.check_invariants(), Ok(()));
                }
            }
        }
    }

    #[test]
    fn oversized_file_is_rejected() {
        let big = vec![b' '; MAX_JOURNAL_LEN + 2];
        let mut big_json = b"{\"v\":1".to_vec();
        big_json.extend_from_slice(&big);
        big_json.push(b'}');
        assert!(reason_of(&big_json).contains("cap"));
    }

    #[test]
    fn future_version_is_named() {
        let mut value: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        value["v"] = 7.into();
        value["new_field"] = "from the future".into();
        assert_eq!(
            reason_of(&serde_json::to_vec(&value).unwrap()),
            "written by format version 7, this build reads 1"
        );
        assert_eq!(
            reason_of(br#"{"v": 0}"#),
            "written by format version 0, this build reads 1"
        );
    }

    #[test]
    fn inconsistent_journals_are_rejected_after_reading() {
        let cases = [
            (
                StateJournal {
                    successor_pid: Some(4242),
                    ..sample()
                },
                "hand off to itself",
            ),
            (
                StateJournal {
                    incumbent_pid: 0,
                    ..sample()
                },
                "incumbent_pid is 0",
            ),
            (
                StateJournal {
                    successor_pid: Some(0),
                    ..sample()
                },
                "successor_pid is 0",
            ),
            (
                StateJournal {
                    successor_pid: None,
                    phase: Phase::Committed,
                    ..sample()
                },
                "no successor_pid",
            ),
            (
                StateJournal {
                    handoff_id: HandoffId::nil(),
                    ..sample()
                },
                "nil id",
            ),
        ];
        for (journal, expected) in cases {
            // Bypass `encode`'s debug assertion: a buggy or hostile writer.
            let text = serde_json::json!({
                "v": 1,
                "handoff_id": journal.handoff_id,
                "phase": journal.phase,
                "incumbent_pid": journal.incumbent_pid,
                "successor_pid": journal.successor_pid,
                "started_at_unix_ms": journal.started_at_unix_ms,
            });
            let reason = reason_of(&serde_json::to_vec(&text).unwrap());
            assert!(
                reason.starts_with("inconsistent") && reason.contains(expected),
                "{reason:?} should mention {expected:?}"
            );
        }
        // A successor is not required before `Begin`.
        let early = StateJournal {
            successor_pid: None,
            phase: Phase::Negotiating,
            ..sample()
        };
        assert_eq!(StateJournal::decode(&early.encode()), Ok(early));
    }

    #[test]
    fn read_of_an_absent_journal_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            StateJournal::read(&dir.path().join("journal.json"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        sample().write_atomic(&path).unwrap();
        assert_eq!(StateJournal::read(&path).unwrap(), Some(sample()));
    }

    #[test]
    fn read_reports_corrupt_files_with_path_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        for (content, expected) in [
            (&b""[..], "empty file"),
            (&sample().encode()[..20], "truncated or not JSON"),
            (&b"\x7fELF\x02\x01"[..], "truncated or not JSON"),
            (&br#"{"v":9}"#[..], "format version 9"),
        ] {
            fs::write(&path, content).unwrap();
            match StateJournal::read(&path) {
                Err(Error::JournalCorrupt { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
                }
                other => panic!("expected JournalCorrupt, got {other:?}"),
            }
        }
    }

    /// The names in `dir`: proves no temporary file was left behind.
    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn atomic_replace_overwrites_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut journal = sample();
        for phase in [Phase::Negotiating, Phase::Draining, Phase::Sealing] {
            journal.phase = phase;
            journal.write_atomic(&path).unwrap();
            assert_eq!(StateJournal::read(&path).unwrap(), Some(journal.clone()));
        }
        assert_eq!(entries(dir.path()), vec!["journal.json"]);
    }

    #[test]
    fn failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory in the journal's place: rename must fail.
        let path = dir.path().join("journal.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("occupant"), b"x").unwrap();
        assert!(matches!(sample().write_atomic(&path), Err(Error::Io(_))));
        assert_eq!(entries(dir.path()), vec!["journal.json"]);
    }

    #[test]
    fn delete_removes_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        StateJournal::delete(&path).unwrap();
        sample().write_atomic(&path).unwrap();
        StateJournal::delete(&path).unwrap();
        assert!(!path.exists());
        assert!(StateJournal::read(&path).unwrap().is_none());
        StateJournal::delete(&path).unwrap();
    }

    #[test]
    fn bare_file_name_uses_the_current_directory() {
        assert_eq!(parent_dir(Path::new("journal.json")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("/journal.json")), PathBuf::from("/"));
    }
}
