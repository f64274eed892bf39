//! powerfs: a FUSE file system that can lose power.
//!
//! A pass-through to a backing directory with a strict POSIX durability
//! model, so a test can cut the power and see what a real crash could leave:
//!
//! - file data is durable only up to what an `fsync`/`fdatasync` of that
//!   file covered;
//! - a create, rename, unlink, link, symlink, mkdir or rmdir is durable only
//!   once its directory is fsynced (a rename across directories: both);
//! - a power cut ([`PowerFs::power_cut`]) applies a seeded crash state: per
//!   directory an in-order prefix of its pending entry operations, per file
//!   the synced data, all of it, or a torn prefix of the unsynced tail;
//!   [`PowerFs::drop_undurable`] keeps nothing that was not durable;
//! - I/O faults on command ([`PowerFs::inject`]): a chosen write, fsync or
//!   rename fails with `EIO` or `ENOSPC`, or stalls.
//!
//! The model ([`model`]) and the faults ([`fault`]) are pure; the FUSE layer
//! around them is thin. The file system is served by a thread of the
//! process that mounts it; the `powerfs` binary serves it from a process of
//! its own, with the same commands on its stdin ([`control`]). Nothing is cached by the kernel (zero TTLs, direct
//! I/O), so every operation reaches the model.
//!
//! Mounting needs root and `/dev/fuse`. Where it cannot mount, every entry
//! point returns [`Error::NotMeasured`], whose message starts with
//! "power loss: not measured"; the caller decides whether that fails the
//! run. Mount in a private mount namespace ([`enter_private_mount_namespace`],
//! called first thing in `main`), so the mounts vanish with the process
//! that made them.
//!
//! ```no_run
//! # fn main() -> Result<(), powerfs::Error> {
//! powerfs::enter_private_mount_namespace()?;
//! let fs = powerfs::PowerFs::mount("/tmp/backing".as_ref(), "/tmp/data".as_ref())?;
//! // ... set up, then count the set-up as durable:
//! fs.make_durable()?;
//! // ... run the roles on /tmp/data, kill them all, then:
//! let survived = fs.power_cut(42)?;
//! println!("{survived}");
//! fs.unmount()?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod fault;
mod fs;
pub mod model;
mod namespace;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use fault::{FaultEffect, FaultOp, IoFault};
pub use fs::GRAVEYARD;
pub use model::{CrashSummary, FileCrash, FileFate};
pub use namespace::enter_private_mount_namespace;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file system cannot be mounted here: no power-loss figure can be
    /// measured. The caller decides (under `CI=true` it is a failure).
    #[error("power loss: not measured: {reason}")]
    NotMeasured {
        /// Why (no /dev/fuse, no permission, a multi-threaded process).
        reason: String,
    },
    /// A control command failed on the backing directory.
    #[error("powerfs: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn not_measured(reason: impl Into<String>) -> Self {
        Error::NotMeasured {
            reason: reason.into(),
        }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// What the file system has seen, since it was mounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Writes to files.
    pub writes: u64,
    /// Bytes they wrote.
    pub bytes_written: u64,
    /// `fsync`/`fdatasync` of files.
    pub file_syncs: u64,
    /// `fsync` of directories.
    pub dir_syncs: u64,
    /// Entry operations (create, mkdir, link, symlink, unlink, rmdir,
    /// rename).
    pub entry_ops: u64,
    /// Injected faults that fired.
    pub faults_fired: u64,
    /// Power cuts (and drops of everything not durable).
    pub power_cuts: u64,
    /// Entry operations not durable now.
    pub pending_entry_ops: u64,
    /// Bytes written and not durable now.
    pub pending_bytes: u64,
}

/// A mounted powerfs. Unmounted by [`PowerFs::unmount`] or on drop.
pub struct PowerFs {
    shared: Arc<fs::Shared>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl PowerFs {
    /// Mount a pass-through to `backing` (created if missing) at
    /// `mountpoint` (which must exist), served by a thread of this process.
    /// What `backing` holds when mounted counts as durable.
    ///
    /// [`Error::NotMeasured`] when it cannot mount: no `/dev/fuse`, not
    /// permitted.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<Self, Error> {
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            return Err(Error::not_measured(format!("cannot open /dev/fuse: {e}")));
        }
        std::fs::create_dir_all(backing)
            .map_err(Error::io(format!("create {}", backing.display())))?;
        let shared = Arc::new(
            fs::Shared::new(backing)
                .map_err(Error::io(format!("prepare {}", backing.display())))?,
        );
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powerfs".into()),
            fuser::MountOption::Subtype("powerfs".into()),
        ];
        config.n_threads = Some(1);
        let session = fuser::Session::new(
            fs::PowerFsFilesystem(Arc::clone(&shared)),
            mountpoint,
            &config,
        )
        .and_then(fuser::Session::spawn)
        .map_err(|e| {
            Error::not_measured(format!(
                "cannot mount a FUSE file system at {}: {e}",
                mountpoint.display()
            ))
        })?;
        Ok(Self {
            shared,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cut the power: apply the crash state drawn from `seed` (the same
    /// operations and seed give the same state), then count what is left
    /// as durable, as after a reboot. Kill every process that uses the file
    /// system first: files they still hold open are closed by the cut.
    pub fn power_cut(&self, seed: u64) -> Result<CrashSummary, Error> {
        self.shared
            .crash(|model| model.crash_state(seed))
            .map_err(Error::io("apply a crash state"))
    }

    /// Cut the power keeping nothing that was not durable.
    pub fn drop_undurable(&self) -> Result<CrashSummary, Error> {
        self.shared
            .crash(model::Model::drop_everything)
            .map_err(Error::io("drop what is not durable"))
    }

    /// Count everything done so far as durable (after the set-up).
    pub fn make_durable(&self) -> Result<(), Error> {
        self.shared
            .make_durable()
            .map_err(Error::io("make everything durable"))
    }

    /// Arm an I/O fault: it fires once.
    pub fn inject(&self, fault: IoFault) {
        self.shared.inject(fault);
    }

    /// Disarm every fault that has not fired.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// What it has seen.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// Unmount and stop serving. Fails (`EBUSY`) while a process still has
    /// a file open under the mount point.
    pub fn unmount(mut self) -> Result<(), Error> {
        match self.session.take() {
            Some(session) => session
                .umount_and_join()
                .map_err(Error::io(format!("unmount {}", self.mountpoint.display()))),
            None => Ok(()),
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Best effort: a mount left behind vanishes with the private
            // mount namespace when this process exits.
            let _ = session.umount_and_join();
        }
    }
}
