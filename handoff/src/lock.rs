//! The data-dir lock. STUB: to be implemented.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;

/// Exclusive `flock` on `<data_dir>/handoff.lock`, plus advisory pid file.
#[derive(Debug)]
pub struct DataDirLock {
    data_dir: PathBuf,
}

impl DataDirLock {
    /// Name of the lock file inside the data dir.
    pub const LOCK_FILE: &'static str = "handoff.lock";
    /// Name of the advisory pid file inside the data dir.
    pub const PID_FILE: &'static str = "handoff.pid";

    /// Take the lock without waiting.
    pub fn acquire(_data_dir: &Path) -> Result<Self> {
        todo!()
    }
    /// Take the lock, treating a lying pid file as stale.
    pub fn acquire_or_break_stale(_data_dir: &Path) -> Result<Self> {
        todo!()
    }
    /// Poll `acquire` every `step` until `timeout`.
    pub fn acquire_within(_data_dir: &Path, _timeout: Duration, _step: Duration) -> Result<Self> {
        todo!()
    }
    /// Release the flock now.
    pub fn release(self) {
        todo!()
    }
    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// True when some process holds the flock on `data_dir` right now.
pub fn is_locked(_data_dir: &Path) -> Result<bool> {
    todo!()
}

/// The pid the advisory pid file names, if any.
pub fn holder_pid(_data_dir: &Path) -> Option<u32> {
    todo!()
}
