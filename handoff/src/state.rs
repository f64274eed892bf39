//! The supervisor's journal of the in-flight handoff (DESIGN.md section 6).
//! STUB: to be implemented.

use std::path::Path;

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

impl StateJournal {
    /// Encode (pure).
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }
    /// Decode (pure); the error string says what is wrong.
    pub fn decode(_bytes: &[u8]) -> std::result::Result<Self, String> {
        todo!()
    }
    /// Atomic replace: temp file in the same dir, fsync, rename, fsync dir.
    pub fn write_atomic(&self, _path: &Path) -> Result<()> {
        todo!()
    }
    /// `Ok(None)` when absent; [`Error::JournalCorrupt`] when unreadable.
    pub fn read(_path: &Path) -> Result<Option<Self>> {
        let _ = Error::HandoffInProgress;
        todo!()
    }
    /// Remove (absent is fine), fsync the dir.
    pub fn delete(_path: &Path) -> Result<()> {
        todo!()
    }
}
