//! handoff: zero-downtime process handoff.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod crash;
pub mod drainable;
pub mod error;
pub mod events;
pub mod fd;
pub mod frame;
pub mod lock;
pub mod protocol;
pub mod state;
pub mod util;

pub use drainable::{DrainReport, Drainable, SealError, SealReport};
pub use error::{Error, Result};
pub use lock::DataDirLock;
pub use protocol::{HandoffId, Message, Side};
pub use state::{Phase, StateJournal};
pub mod incumbent;
pub mod successor;
pub use incumbent::{Incumbent, IncumbentConfig, ServeOutcome};
pub use successor::{
    BegunSuccessor, HandshookSuccessor, Readiness, Role, Successor, SuccessorConfig, detect_role,
};
pub mod supervisor;
pub use supervisor::{HandoffOutcome, SpawnSpec, Supervisor, SupervisorTimeouts};
