//! The trait an embedding service implements to be handed off.

use std::time::Instant;

/// What `drain` achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still open when drain returned (0 when all finished).
    pub open_conns_remaining: u64,
    /// Whether the service stopped accepting new connections.
    pub accept_closed: bool,
}

/// What `seal` made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Last durable revision of each shard.
    pub last_revision_per_shard: Vec<u64>,
    /// A fingerprint of the sealed data dir (free form, e.g. a checksum).
    pub data_dir_fingerprint: String,
}

/// Why `seal` failed, and what state it left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealError {
    /// What went wrong.
    pub error: String,
    /// What the service knows of its partial state (free form).
    pub partial_state: String,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (partial state: {})", self.error, self.partial_state)
    }
}

/// The hooks the incumbent side of the library calls during a handoff.
///
/// Called from the thread running [`crate::Incumbent::serve`], one at a time.
/// While `drain` and `seal` run, the library sends heartbeats to the
/// supervisor from another thread, so they may take as long as they need
/// within the handoff's deadline.
pub trait Drainable {
    /// Stop accepting new connections and finish in-flight work, by
    /// `deadline` at the latest. Listeners stay open (the kernel keeps
    /// queueing connections for the successor); only accepting stops.
    fn drain(&mut self, deadline: Instant) -> DrainReport;

    /// Make every acknowledged write durable (flush, fsync) and stop writing.
    /// On success the library releases the data-dir flock; on failure it
    /// keeps the flock and calls [`Drainable::resume_after_abort`].
    fn seal(&mut self) -> Result<SealReport, SealError>;

    /// Undo `drain` (and `seal`): reopen what seal closed, accept again.
    /// Must be idempotent: it may run after a drain only, after a seal, or
    /// twice.
    fn resume_after_abort(&mut self);

    /// A description of the current state, for logs (free form).
    fn snapshot_state(&self) -> String {
        String::new()
    }
}
