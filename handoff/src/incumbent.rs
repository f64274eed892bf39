//! The incumbent side. STUB.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::drainable::Drainable;
use crate::error::Result;
use crate::lock::DataDirLock;
use crate::protocol::HandoffId;

/// Timeouts of the incumbent side; defaults are the seed's values.
#[derive(Debug, Clone)]
pub struct IncumbentConfig {
    /// Interval between heartbeats while `drain`/`seal` run (2 s).
    pub heartbeat_interval: Duration,
    /// Bound on waiting for `HelloAck` after sending `Hello` (5 s).
    pub hello_timeout: Duration,
    /// Bound on silence from the supervisor between protocol steps (10 s).
    pub liveness_timeout: Duration,
    /// How long to try to retake the flock after losing the supervisor when
    /// sealed (2 s), polling every `reacquire_step` (25 ms).
    pub reacquire_window: Duration,
    /// Poll step for retaking the flock.
    pub reacquire_step: Duration,
}

impl Default for IncumbentConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
            liveness_timeout: Duration::from_secs(10),
            reacquire_window: Duration::from_secs(2),
            reacquire_step: Duration::from_millis(25),
        }
    }
}

/// How [`Incumbent::serve`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeOutcome {
    /// The supervisor committed the handoff: finish what is left and exit 0.
    Committed {
        /// The handoff.
        handoff_id: HandoffId,
    },
    /// The supervisor vanished after the seal and the successor holds the
    /// flock: it is the incumbent now; exit 0.
    Superseded {
        /// The handoff.
        handoff_id: HandoffId,
    },
}

/// The process that serves now: holds the flock and the control socket.
pub struct Incumbent {
    #[allow(dead_code)]
    listener: UnixListener,
    socket_path: PathBuf,
    #[allow(dead_code)]
    lock: Option<DataDirLock>,
    #[allow(dead_code)]
    build_id: Vec<u8>,
    #[allow(dead_code)]
    config: IncumbentConfig,
}

impl Incumbent {
    /// First incumbent: bind the control socket at `socket_path` (mode 0600,
    /// replacing a stale socket file) while holding `lock`.
    pub fn bind_cold_start(_socket_path: &Path, _lock: DataDirLock) -> Result<Self> {
        todo!()
    }
    /// Set the build id announced in `Hello`.
    pub fn with_build_id(mut self, build_id: Vec<u8>) -> Self {
        self.build_id = build_id;
        self
    }
    /// Override timeouts.
    pub fn with_config(mut self, config: IncumbentConfig) -> Self {
        self.config = config;
        self
    }
    /// The control socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
    /// Serve supervisor sessions one at a time until a handoff commits.
    pub fn serve<D: Drainable>(self, _drainable: &mut D) -> Result<ServeOutcome> {
        todo!()
    }
}
