//! The exit codes the harness judges, by name: `handoff-supervisor`'s
//! contract and the fake peer's, and what a supervisor's exit means for its
//! run ([`RunOutcome`]). [`crate::rules::check_exits`] says which
//! process may end with which.

use nix::sys::signal::Signal;
use serde::Serialize;

use crate::reaper::ExitKind;

/// `handoff-supervisor`: the handoff committed; also any service process
/// that ended cleanly (an incumbent that handed off).
pub const EXIT_OK: i32 = 0;
/// `handoff-supervisor`: the handoff was aborted, the incumbent serves on.
pub const SUPERVISOR_ABORTED: i32 = 2;
/// `handoff-supervisor`: the handoff could not run, or stopped on an error.
pub const SUPERVISOR_FAILED: i32 = 3;
/// The fake peer as a successor whose handoff did not commit.
pub const SUCCESSOR_NOT_COMMITTED: i32 = 1;
/// The fake peer as a successor told to exit before its `Hello`
/// (`FAKE_EXIT_BEFORE_HELLO=1`).
pub const SUCCESSOR_EXITED_BEFORE_HELLO: i32 = 3;
/// A crash point fired (`handoff::crash::CRASH_EXIT_CODE`): allowed only in
/// a process armed with it, and only with its line in the crash record.
pub const CRASHED: i32 = handoff::crash::CRASH_EXIT_CODE;

/// How a supervisor run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Exit 0.
    Committed,
    /// Exit 2.
    Aborted,
    /// Exit 3: the handoff could not run, or stopped on an error.
    Failed,
    /// Exit 99: a crash point fired in the supervisor.
    Crashed,
    /// `SIGKILL` by chaos.
    Killed,
    /// Anything else (a violation of its own), or not reaped.
    #[default]
    Other,
}

/// How a supervisor run ended, from its exit and whether chaos killed it.
pub fn run_outcome(exit: Option<ExitKind>, killed_by_chaos: bool) -> RunOutcome {
    match exit {
        Some(ExitKind::Code(EXIT_OK)) => RunOutcome::Committed,
        Some(ExitKind::Code(SUPERVISOR_ABORTED)) => RunOutcome::Aborted,
        Some(ExitKind::Code(SUPERVISOR_FAILED)) => RunOutcome::Failed,
        Some(ExitKind::Code(CRASHED)) => RunOutcome::Crashed,
        Some(ExitKind::Signal(s)) if killed_by_chaos && s == Signal::SIGKILL as i32 => {
            RunOutcome::Killed
        }
        _ => RunOutcome::Other,
    }
}

impl RunOutcome {
    /// What a supervisor that exited with `code` did, if the code is one of
    /// its contract.
    pub fn of_code(code: i32) -> Option<Self> {
        Some(run_outcome(Some(ExitKind::Code(code)), false)).filter(|o| *o != RunOutcome::Other)
    }
}
