//! The private mount namespace the file system is mounted in.
//!
//! `unshare(CLONE_NEWNS)` is refused to a multi-threaded process, so the
//! harness's and the scenario suite's `main` call
//! [`enter_private_mount_namespace`] first, while they have one thread.
//! From then on every mount the process makes is seen by the processes it
//! spawns and by no one else, and when the last of them exits the
//! namespace, with its mounts, is gone: nothing is left mounted on the
//! host, also when the harness is killed.

use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::Error;

/// Move this process into a new mount namespace whose mounts do not
/// propagate to the host's (`/` made recursively private). Call it while
/// the process has a single thread. [`Error::NotMeasured`] when it cannot:
/// more than one thread, or not permitted (not root).
pub fn enter_private_mount_namespace() -> Result<(), Error> {
    let threads = thread_count();
    if threads != Some(1) {
        return Err(Error::not_measured(format!(
            "a private mount namespace needs a single-threaded process, this one has {}",
            threads.map_or("an unknown number of".to_owned(), |n| n.to_string())
        )));
    }
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::not_measured(format!("unshare(CLONE_NEWNS): {e}")))?;
    mount(
        None::<&str>,
        Path::new("/"),
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::not_measured(format!("making / rprivate: {e}")))
}

/// The number of threads of this process, from `/proc/self/status`.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}
