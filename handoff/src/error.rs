//! The one error type of the library.
//!
//! Every variant says what was expected and what came, so an operator's log
//! names the protocol step that failed. Errors a peer can provoke (bad frames,
//! wrong ids, wrong pids, silence) all land here: none of them panics.

use std::path::PathBuf;

use crate::id::{HandoffId, ProtoVersion};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a handoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// No frame arrived in time; names the message that was awaited
    /// (for example `Timeout("Drained")`).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),

    /// `perform_handoff` was called while another one is in flight on the
    /// same `Supervisor`.
    #[error("a handoff is already in progress on this supervisor; wait for it to finish")]
    HandoffInProgress,

    /// The incumbent refused the session, most often because another
    /// supervisor is already driving a handoff.
    #[error("incumbent refused the session: {0}")]
    Refused(String),

    /// A well-formed message arrived that is not valid at this step.
    #[error("unexpected message: expected {expected}, got {got}")]
    UnexpectedMessage {
        /// What the protocol allows at this step.
        expected: &'static str,
        /// What the peer sent.
        got: &'static str,
    },

    /// The peer broke the protocol in a way not covered by a more precise
    /// variant (wrong role, `Commit` before `SealComplete`, ...).
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// A message carried a handoff_id other than the one of this session.
    #[error("wrong handoff_id: expected {expected}, got {got}")]
    WrongHandoffId {
        /// The id negotiated in `HelloAck`.
        expected: HandoffId,
        /// The id the message carried.
        got: HandoffId,
    },

    /// The successor's `Hello` announced a pid other than the child's.
    #[error("successor announced pid {announced}, but the spawned child is pid {expected}")]
    PidMismatch {
        /// Pid of the child the supervisor spawned.
        expected: u32,
        /// Pid in the successor's `Hello`.
        announced: u32,
    },

    /// The two sides support no common protocol version.
    #[error(
        "no common protocol version: we support {ours_min}..={ours_max}, \
         the peer supports {theirs_min}..={theirs_max}"
    )]
    VersionMismatch {
        /// Our lowest supported version.
        ours_min: ProtoVersion,
        /// Our highest supported version.
        ours_max: ProtoVersion,
        /// The peer's lowest supported version.
        theirs_min: ProtoVersion,
        /// The peer's highest supported version.
        theirs_max: ProtoVersion,
    },

    /// A frame after the handshake carried a version other than the
    /// negotiated one.
    #[error("frame carries protocol version {got}, but version {expected} was negotiated")]
    WrongFrameVersion {
        /// The negotiated version.
        expected: ProtoVersion,
        /// The version in the frame header.
        got: ProtoVersion,
    },

    /// A frame announced a payload larger than [`crate::frame::MAX_FRAME_LEN`].
    /// Nothing of that size is ever allocated.
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The cap.
        max: usize,
    },

    /// The stream ended in the middle of a frame.
    #[error("truncated frame: expected {expected} bytes, got {got} before end of stream")]
    TruncatedFrame {
        /// Bytes the frame needed.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },

    /// The peer closed the connection cleanly between frames.
    #[error("peer closed the connection while we awaited {0}")]
    PeerClosed(&'static str),

    /// A frame's payload is not a message this version knows.
    #[error("undecodable message payload: {0}")]
    Decode(String),

    /// The handoff journal exists but cannot be trusted.
    #[error("handoff journal {path} is unreadable: {reason}")]
    JournalCorrupt {
        /// The journal file.
        path: PathBuf,
        /// What is wrong with it (empty, truncated, garbage, future version).
        reason: String,
    },

    /// The data-dir lock is held by another process.
    #[error("data-dir lock {path} is held by another process{}", holder_hint(*.holder_pid))]
    LockHeld {
        /// The lock file.
        path: PathBuf,
        /// The pid recorded in the advisory pid file, if any.
        holder_pid: Option<u32>,
    },

    /// `HANDOFF_CRASH_AT` names no registered crash point, or cannot be parsed,
    /// or crash points are compiled out.
    #[error("invalid HANDOFF_CRASH_AT: {0}")]
    CrashSpec(String),

    /// The handoff environment (`HANDOFF_*`, `LISTEN_*`) is inconsistent.
    #[error("invalid handoff environment: {0}")]
    Environment(String),

    /// The supervisor told the successor to abort.
    #[error("handoff aborted by the supervisor: {0}")]
    Aborted(String),

    /// A listener name was asked for that was not inherited.
    #[error("no inherited listener named {name:?} (inherited: {available:?})")]
    NoSuchListener {
        /// The name asked for.
        name: String,
        /// The names that were inherited.
        available: Vec<String>,
    },

    /// An error reported by the embedding service's [`crate::Drainable`] hooks.
    #[error("service hook failed: {0}")]
    Service(String),
}

fn holder_hint(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid file names {pid})"),
        None => String::new(),
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io(std::io::Error::from(e))
    }
}

impl Error {
    /// True when the error is a read or write timeout on a socket.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Io(e) => crate::util::is_timeout(e),
            _ => false,
        }
    }
}
