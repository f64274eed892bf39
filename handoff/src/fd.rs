//! FD inheritance. STUB: to be implemented.
#![allow(unsafe_code)]

use std::os::fd::{OwnedFd, RawFd};
use std::process::Command;

use crate::error::Result;

/// Prepare `cmd` so the child gets `listeners` at 3.. and `extra` at 3+n.
pub fn pass_listener_fds_on_spawn(
    _cmd: &mut Command,
    _listeners: &[(String, RawFd)],
    _extra: Option<RawFd>,
) {
    todo!()
}

/// What `LISTEN_*` / `HANDOFF_*` say (pure parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffEnv {
    /// `(name, fd)` of each listener.
    pub listeners: Vec<(String, RawFd)>,
    /// `HANDOFF_SOCK_FD` when `HANDOFF_ROLE=successor`.
    pub successor_sock_fd: Option<RawFd>,
}

/// Parse the handoff environment from a lookup function (pure).
pub fn parse_handoff_env(
    _get: &dyn Fn(&str) -> Option<String>,
    _my_pid: u32,
) -> Result<HandoffEnv> {
    todo!()
}

/// Read, validate and clear the process's handoff environment; take
/// ownership of the FDs it names (marking them close-on-exec).
pub fn take_handoff_env() -> Result<(Vec<(String, OwnedFd)>, Option<OwnedFd>)> {
    todo!()
}
