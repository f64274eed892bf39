//! # handoff: zero-downtime process handoff
//!
//! A running service process (the *incumbent*) hands its listening sockets,
//! its data-directory lock and its control socket to a freshly spawned
//! process (the *successor*), driven by a *supervisor* that holds the
//! listening sockets throughout so the kernel's accept queue never closes.
//! No connection is refused, no acknowledged write is lost, and at every
//! instant at most one process holds the data-dir flock (is the writer).
//!
//! A service implements [`Drainable`] and calls [`detect_role`] at start-up:
//!
//! ```no_run
//! use std::time::Instant;
//! use handoff::{DataDirLock, Drainable, DrainReport, Incumbent, Readiness, Role, SealError, SealReport};
//!
//! struct Service; // your server: listeners, connections, storage
//! impl Drainable for Service {
//!     fn drain(&mut self, _deadline: Instant) -> DrainReport {
//!         // stop accepting, finish in-flight requests
//!         DrainReport { open_conns_remaining: 0, accept_closed: true }
//!     }
//!     fn seal(&mut self) -> Result<SealReport, SealError> {
//!         // fsync and close what you write
//!         Ok(SealReport::default())
//!     }
//!     fn resume_after_abort(&mut self) { /* reopen, accept again */ }
//! }
//!
//! fn main() -> handoff::Result<()> {
//!     let (data_dir, control) = (std::path::Path::new("/var/lib/svc"), std::path::Path::new("/run/svc.sock"));
//!     let incumbent = match handoff::detect_role()? {
//!         Role::ColdStart { listeners: _ } => {
//!             let lock = DataDirLock::acquire(data_dir)?;
//!             // open state, start serving on the inherited listeners ...
//!             Incumbent::bind_cold_start(control, lock)?
//!         }
//!         Role::Successor(successor) => {
//!             let begun = successor.handshake(b"v2".to_vec())?.wait_for_begin()?;
//!             let mut begun = begun;
//!             let _listener = begun.take_listener("http")?;
//!             let lock = begun.acquire_lock(data_dir)?;
//!             // open the sealed state, start serving ...
//!             begun.announce_and_bind(Readiness { healthz_ok: true, ..Default::default() }, control, lock)?
//!         }
//!     };
//!     incumbent.serve(&mut Service)?; // returns once a successor took over
//!     Ok(())
//! }
//! ```
//!
//! The supervisor side is [`Supervisor`]; the `handoff-supervisor` binary
//! wraps it. Module map: [`protocol`] (messages), [`frame`] (wire format),
//! [`supervisor`], [`incumbent`], [`successor`], [`lock`] (flock),
//! [`state`] (journal), [`fd`] (FD inheritance, the only `unsafe`),
//! [`crash`] (named crash points), [`events`] (stable event names, JSON
//! event log), [`metrics`] (counters and histograms from the events). See
//! ARCHITECTURE.md for the invariants.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod crash;
pub mod drain;
pub mod drainable;
pub mod error;
pub mod events;
pub mod fd;
pub mod frame;
mod id;
pub mod incumbent;
mod journal_writer;
pub mod lock;
pub mod machine;
pub mod metrics;
pub mod protocol;
pub mod state;
pub mod successor;
pub mod supervisor;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod util;

pub use drainable::{DrainReport, Drainable, SealError, SealReport};
pub use error::{Error, Result};
pub use incumbent::{Incumbent, IncumbentConfig, ServeOutcome};
pub use lock::DataDirLock;
pub use protocol::{HandoffId, Message, Side};
pub use state::{Phase, StateJournal};
pub use successor::{
    BegunSuccessor, HandshookSuccessor, Readiness, Role, Successor, SuccessorConfig, detect_role,
};
pub use supervisor::{HandoffOutcome, SpawnSpec, Supervisor, SupervisorTimeouts};
