//! Supervisor side. STUB.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::error::Result;
use crate::protocol::HandoffId;
use crate::state::StateJournal;

/// Timeouts of the supervisor side; defaults are the seed's values.
#[derive(Debug, Clone)]
pub struct SupervisorTimeouts {
    /// Per-read liveness bound, reset by any frame (10 s).
    pub liveness: Duration,
    /// Bound on a peer's `Hello` (5 s).
    pub hello_read: Duration,
    /// Slack past a cap for replies already on the wire (1 s).
    pub wire_slack: Duration,
    /// Floor for any read timeout (100 ms).
    pub min_read: Duration,
    /// Bound on `resume_from_journal`'s wait for the incumbent to answer (5 s).
    pub probe: Duration,
}

impl Default for SupervisorTimeouts {
    fn default() -> Self {
        Self {
            liveness: Duration::from_secs(10),
            hello_read: Duration::from_secs(5),
            wire_slack: Duration::from_secs(1),
            min_read: Duration::from_millis(100),
            probe: Duration::from_secs(5),
        }
    }
}

/// One supervised service.
pub struct Supervisor {
    #[allow(dead_code)]
    socket_path: PathBuf,
}

/// How to start a process (successor or cold-start incumbent).
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The binary.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Cap on the whole handoff (300 s).
    pub deadline: Duration,
    /// Cap on the drain (60 s).
    pub drain_grace: Duration,
}

impl SpawnSpec {
    /// Defaults: 300 s deadline, 60 s drain grace.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
            deadline: Duration::from_secs(300),
            drain_grace: Duration::from_secs(60),
        }
    }
}

/// How a handoff ended.
#[derive(Debug)]
pub struct HandoffOutcome {
    /// The handoff.
    pub handoff_id: HandoffId,
    /// Whether N is now the incumbent.
    pub committed: bool,
    /// Why not, when not.
    pub abort_reason: Option<String>,
    /// The new incumbent's process, on commit.
    pub child: Option<Child>,
}

impl Supervisor {
    /// A supervisor for the incumbent whose control socket is `socket_path`.
    pub fn new(socket_path: &Path) -> Result<Self> {
        Ok(Self {
            socket_path: socket_path.to_path_buf(),
        })
    }
    /// Register a listener the successor inherits.
    pub fn with_listener(self, _name: impl Into<String>, _fd: RawFd) -> Self {
        self
    }
    /// Journal path.
    pub fn with_journal(self, _path: PathBuf) -> Self {
        self
    }
    /// Build id.
    pub fn with_build_id(self, _build_id: Vec<u8>) -> Self {
        self
    }
    /// Timeouts.
    pub fn with_timeouts(self, _t: SupervisorTimeouts) -> Self {
        self
    }
    /// Start the first incumbent with this supervisor's listeners (cold start).
    pub fn cold_start(&self, _spec: &SpawnSpec) -> Result<Child> {
        todo!()
    }
    /// Drive one handoff.
    pub fn perform_handoff(&self, _spec: SpawnSpec) -> Result<HandoffOutcome> {
        todo!()
    }
    /// Recover after a restart.
    pub fn resume_from_journal(&self) -> Result<Option<StateJournal>> {
        todo!()
    }
}
