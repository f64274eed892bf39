//! The exit codes the harness judges, by name: `handoff-supervisor`'s
//! contract and the fake peer's. [`crate::rules::check_exits`] says which
//! process may end with which.

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
