//! Role detection and the successor side. STUB.

use std::net::TcpListener;
use std::path::Path;

use crate::error::Result;
use crate::incumbent::Incumbent;
use crate::lock::DataDirLock;
use crate::protocol::HandoffId;

/// What this process is, per its environment.
pub enum Role {
    /// Not spawned by a supervisor for a handoff: start from scratch, with
    /// any listeners inherited through `LISTEN_FDS` (socket activation).
    ColdStart {
        /// Inherited listeners by name.
        listeners: Vec<(String, TcpListener)>,
    },
    /// Spawned by a supervisor to take over.
    Successor(Successor),
}

/// Read and clear the handoff environment.
pub fn detect_role() -> Result<Role> {
    todo!()
}

/// What N tells S in `Ready`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// N's own health check.
    pub healthz_ok: bool,
    /// Revision of each shard N opened.
    pub advertised_revision_per_shard: Vec<u64>,
}

/// A successor before its handshake.
pub struct Successor {}
/// A successor that has exchanged Hello/HelloAck.
pub struct HandshookSuccessor {}
/// A successor that received `Begin`.
pub struct BegunSuccessor {}

impl Successor {
    /// Send `Hello`, read `HelloAck`.
    pub fn handshake(self, _build_id: Vec<u8>) -> Result<HandshookSuccessor> {
        todo!()
    }
}

impl HandshookSuccessor {
    /// The handoff.
    pub fn handoff_id(&self) -> HandoffId {
        todo!()
    }
    /// Borrow an inherited listener (for warm-up before `Begin`).
    pub fn listener(&self, _name: &str) -> Option<&TcpListener> {
        todo!()
    }
    /// Wait for `Begin` (or `Abort`, an error).
    pub fn wait_for_begin(self) -> Result<BegunSuccessor> {
        todo!()
    }
}

impl BegunSuccessor {
    /// Take an inherited listener.
    pub fn take_listener(&mut self, _name: &str) -> Result<TcpListener> {
        todo!()
    }
    /// Take the data-dir flock the incumbent released.
    pub fn acquire_lock(&self, _data_dir: &Path) -> Result<DataDirLock> {
        todo!()
    }
    /// Send `Ready` without taking the control socket.
    pub fn announce_ready(self, _readiness: Readiness) -> Result<()> {
        todo!()
    }
    /// Bind the control socket under a temporary name, send `Ready`, rename
    /// it over `socket_path`: become the incumbent.
    pub fn announce_and_bind(
        self,
        _readiness: Readiness,
        _socket_path: &Path,
        _lock: DataDirLock,
    ) -> Result<Incumbent> {
        todo!()
    }
}
