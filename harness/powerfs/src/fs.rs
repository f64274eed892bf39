//! The FUSE layer: a pass-through to the backing directory that tells the
//! [`Model`] what it did, asks [`Faults`] before each write, fsync and
//! rename, and applies crash states.
//!
//! Thin on purpose: each operation does the one syscall on the backing
//! directory and records it; every decision about durability is the
//! model's. Nothing is cached by the kernel: entries and attributes have a
//! zero TTL and every file is opened with `FOPEN_DIRECT_IO`, so every
//! write and every sync reaches this layer. An fsync does *not* fsync the
//! backing directory: the machine that holds it does not lose power in a
//! test, so durability is the model's alone, and a sync costs a round trip.
//!
//! Inodes are the backing directory's own (`st_ino`; its root is inode 1).
//! What an unlink or a rename removes is kept, hard-linked, in a hidden
//! graveyard under the backing root until no crash can bring it back.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::Counters;
use crate::fault::{FaultEffect, FaultOp, Faults, IoFault};
use crate::model::{CrashState, DataChange, EntryOp, Ino, Model, Undo};

/// The graveyard's name under the backing root; invisible through the
/// mount.
pub const GRAVEYARD: &str = ".powerfs-graveyard";

/// Nothing is cached by the kernel.
const TTL: Duration = Duration::ZERO;

/// The state shared by the FUSE session thread and the control API.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
}

struct Inner {
    backing: PathBuf,
    root_st_ino: u64,
    /// Where each inode the kernel knows is, relative to the backing root.
    paths: HashMap<Ino, PathBuf>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    next_grave: u64,
    model: Model,
    faults: Faults,
    counters: Counters,
    /// Graves no crash can bring back, for the reaper thread to remove off
    /// the path of the fsync that freed them (an unlink costs more than the
    /// rest of a directory fsync).
    reaper: mpsc::Sender<PathBuf>,
}

struct Handle {
    file: File,
    ino: Ino,
}

impl Shared {
    /// Serve `backing` (which must exist): the graveyard is emptied, and
    /// everything in it counts as durable.
    pub(crate) fn new(backing: &Path) -> io::Result<Self> {
        let graveyard = backing.join(GRAVEYARD);
        if graveyard.exists() {
            fs::remove_dir_all(&graveyard)?;
        }
        fs::create_dir(&graveyard)?;
        let root_st_ino = fs::metadata(backing)?.ino();
        let (reaper, graves) = mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("powerfs-reaper".into())
            .spawn(move || {
                // Ends when the file system is dropped. Best effort: a grave
                // left behind costs only space, and the next power cut or
                // make-durable empties the graveyard; grave numbers are never
                // reused, so a late removal cannot hit a newer grave.
                for grave in graves {
                    let _ = fs::remove_file(grave);
                }
            })?;
        Ok(Self {
            inner: Mutex::new(Inner {
                backing: backing.to_path_buf(),
                root_st_ino,
                paths: HashMap::from([(INodeNo::ROOT.0, PathBuf::new())]),
                handles: HashMap::new(),
                next_fh: 1,
                next_grave: 0,
                model: Model::new(),
                faults: Faults::default(),
                counters: Counters::default(),
                reaper,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in one operation must not take the control API down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply a crash state (or the one `pick` chooses from the model), then
    /// count everything as durable, as after a reboot.
    pub(crate) fn crash(
        &self,
        pick: impl FnOnce(&Model) -> CrashState,
    ) -> io::Result<crate::CrashSummary> {
        let mut inner = self.lock();
        let mut state = pick(&inner.model);
        for file in &mut state.summary.files {
            file.path = inner
                .paths
                .get(&file.ino)
                .map(|rel| rel.to_string_lossy().into_owned());
        }
        // The processes that held files are gone; what they left open is
        // closed with the device.
        inner.handles.clear();
        for step in &state.undo {
            inner.apply(step)?;
        }
        inner.model.make_durable();
        inner.empty_graveyard()?;
        inner.revalidate_paths();
        inner.counters.power_cuts += 1;
        Ok(state.summary)
    }

    pub(crate) fn make_durable(&self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.model.make_durable();
        inner.empty_graveyard()
    }

    pub(crate) fn inject(&self, fault: IoFault) {
        self.lock().faults.inject(fault);
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub(crate) fn counters(&self) -> Counters {
        let inner = self.lock();
        Counters {
            faults_fired: inner.faults.fired(),
            pending_entry_ops: inner.model.pending_entry_ops() as u64,
            pending_bytes: inner.model.pending_bytes(),
            ..inner.counters
        }
    }

    /// Ask the faults about `op` on `ino`: a stall is waited out here
    /// (without the lock, so the control API stays responsive), a failure
    /// is returned.
    /// The path matched is `ino`'s, or its entry `name`'s for a rename.
    fn before(&self, op: FaultOp, ino: Ino, name: Option<&OsStr>) -> Result<(), Errno> {
        let effect = {
            let mut inner = self.lock();
            let mut path = inner.paths.get(&ino).cloned().unwrap_or_default();
            if let Some(name) = name {
                path.push(name);
            }
            inner.faults.on(op, &path.to_string_lossy())
        };
        match effect {
            None => Ok(()),
            // The fault is the point: a disk that takes this long.
            Some(FaultEffect::Stall(duration)) => {
                std::thread::sleep(duration);
                Ok(())
            }
            Some(failure) => Err(Errno::from_i32(failure.errno().unwrap_or(libc::EIO))),
        }
    }
}

impl Inner {
    fn abs(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn fuse_ino(&self, st_ino: u64) -> Ino {
        if st_ino == self.root_st_ino {
            INodeNo::ROOT.0
        } else {
            st_ino
        }
    }

    fn path_of(&self, ino: Ino) -> Result<PathBuf, Errno> {
        self.paths.get(&ino).cloned().ok_or(Errno::ENOENT)
    }

    /// `parent/name`, relative; the graveyard does not exist for a caller.
    fn child(&self, parent: Ino, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == INodeNo::ROOT.0 && name == GRAVEYARD {
            return Err(Errno::ENOENT);
        }
        Ok(self.path_of(parent)?.join(name))
    }

    /// Stat `rel`, remember where its inode is, and describe it.
    fn attr_of(&mut self, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.abs(rel))?;
        let ino = self.fuse_ino(meta.ino());
        self.paths.insert(ino, rel.to_path_buf());
        Ok(attr(ino, &meta))
    }

    fn grave(&mut self) -> (u64, PathBuf) {
        let grave = self.next_grave;
        self.next_grave += 1;
        (grave, Path::new(GRAVEYARD).join(grave.to_string()))
    }

    /// `rel` is now at `to` (and so is everything under it).
    fn moved(&mut self, from: &Path, to: &Path) {
        for path in self.paths.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    /// Keep the inode at `rel` in a new grave (hard link), for a crash to
    /// bring back; the caller then removes `rel`.
    fn bury(&mut self, rel: &Path) -> io::Result<u64> {
        let (grave, grave_rel) = self.grave();
        fs::hard_link(self.abs(rel), self.abs(&grave_rel))?;
        self.moved(rel, &grave_rel);
        Ok(grave)
    }

    fn record_entry(&mut self, op: EntryOp) {
        self.counters.entry_ops += 1;
        self.model.record_entry(op);
    }

    fn free_graves(&mut self, graves: Vec<u64>) {
        for grave in graves {
            let path = self.abs(&Path::new(GRAVEYARD).join(grave.to_string()));
            // The reaper ends only with the file system.
            let _ = self.reaper.send(path);
        }
    }

    fn empty_graveyard(&mut self) -> io::Result<()> {
        // Only files are buried; the reaper may remove some meanwhile.
        for grave in fs::read_dir(self.backing.join(GRAVEYARD))? {
            match fs::remove_file(grave?.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let prefix = Path::new(GRAVEYARD);
        self.paths.retain(|_, path| !path.starts_with(prefix));
        Ok(())
    }

    /// Forget every inode that is not where the table says any more.
    fn revalidate_paths(&mut self) {
        let backing = self.backing.clone();
        let root = self.root_st_ino;
        self.paths.retain(|ino, rel| {
            fs::symlink_metadata(backing.join(&*rel)).is_ok_and(|meta| {
                let st_ino = meta.ino();
                *ino == if st_ino == root { 1 } else { st_ino }
            })
        });
    }

    /// One undo step on the backing directory. A step whose directory is
    /// gone (a parent was removed by an earlier step) has nothing to do.
    fn apply(&mut self, step: &Undo) -> io::Result<()> {
        let ignore_gone = |result: io::Result<()>| match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        match step {
            Undo::RemoveEntry { dir, name, is_dir } => {
                let Ok(rel) = self.path_of(*dir).map(|d| d.join(name)) else {
                    return Ok(());
                };
                let abs = self.abs(&rel);
                ignore_gone(if *is_dir {
                    fs::remove_dir_all(abs)
                } else {
                    fs::remove_file(abs)
                })?;
                self.paths.retain(|_, path| !path.starts_with(&rel));
            }
            Undo::Unbury { grave, dir, name } => {
                let Ok(rel) = self.path_of(*dir).map(|d| d.join(name)) else {
                    return Ok(());
                };
                let grave_rel = Path::new(GRAVEYARD).join(grave.to_string());
                ignore_gone(fs::rename(self.abs(&grave_rel), self.abs(&rel)))?;
                self.moved(&grave_rel, &rel);
            }
            Undo::MakeDir { dir, name, mode } => {
                let Ok(rel) = self.path_of(*dir).map(|d| d.join(name)) else {
                    return Ok(());
                };
                match fs::create_dir(self.abs(&rel)) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    other => ignore_gone(other)?,
                }
                ignore_gone(fs::set_permissions(
                    self.abs(&rel),
                    fs::Permissions::from_mode(*mode),
                ))?;
            }
            Undo::MoveBack {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                let (Ok(from), Ok(to)) = (self.path_of(*from_dir), self.path_of(*to_dir)) else {
                    return Ok(());
                };
                let (from, to) = (from.join(from_name), to.join(to_name));
                ignore_gone(fs::rename(self.abs(&from), self.abs(&to)))?;
                self.moved(&from, &to);
            }
            Undo::WriteBack { ino, offset, bytes } => {
                if let Ok(rel) = self.path_of(*ino) {
                    let file = OpenOptions::new().write(true).open(self.abs(&rel));
                    ignore_gone(file.and_then(|f| f.write_all_at(bytes, *offset)))?;
                }
            }
            Undo::SetLen { ino, len } => {
                if let Ok(rel) = self.path_of(*ino) {
                    let file = OpenOptions::new().write(true).open(self.abs(&rel));
                    ignore_gone(file.and_then(|f| f.set_len(*len)))?;
                }
            }
        }
        Ok(())
    }

    fn open_handle(&mut self, ino: Ino, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { file, ino });
        fh
    }

    /// Record and perform a change of size of the file at `rel`.
    fn set_len(&mut self, ino: Ino, rel: &Path, fh: Option<u64>, len: u64) -> io::Result<()> {
        let opened;
        let file = match fh.and_then(|fh| self.handles.get(&fh)) {
            Some(handle) => &handle.file,
            None => {
                opened = OpenOptions::new()
                    .write(true)
                    .read(true)
                    .open(self.abs(rel))?;
                &opened
            }
        };
        let old_len = file.metadata()?.len();
        if old_len == len {
            return Ok(());
        }
        let mut old_bytes = vec![0; old_len.saturating_sub(len) as usize];
        file.read_exact_at(&mut old_bytes, len)?;
        file.set_len(len)?;
        self.model
            .record_data(ino, DataChange::set_len(old_len, len, old_bytes));
        Ok(())
    }
}

fn attr(ino: Ino, meta: &Metadata) -> FileAttr {
    let time = |secs: i64, nanos: i64| {
        UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// The FUSE session's view of [`Shared`].
pub(crate) struct PowerFsFilesystem(pub(crate) Arc<Shared>);

impl PowerFsFilesystem {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock()
    }

    /// Create `parent/name` with `make`, record it, reply with its entry.
    fn make_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        is_dir: bool,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<FileAttr, Errno> {
        let mut inner = self.lock();
        let rel = inner.child(parent.0, name)?;
        make(&inner.abs(&rel))?;
        inner.record_entry(EntryOp::Created {
            dir: parent.0,
            name: name.to_owned(),
            is_dir,
        });
        inner.attr_of(&rel)
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerFsFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut inner = self.lock();
        let result = inner
            .child(parent.0, name)
            .and_then(|rel| inner.attr_of(&rel));
        reply_entry(reply, result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut inner = self.lock();
        let by_handle = fh
            .and_then(|fh| inner.handles.get(&fh.0))
            .map(|handle| handle.file.metadata().map(|meta| attr(handle.ino, &meta)));
        let result = match by_handle {
            Some(result) => result.map_err(Errno::from),
            None => inner.path_of(ino.0).and_then(|rel| inner.attr_of(&rel)),
        };
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut inner = self.lock();
        let result = (|| {
            let rel = inner.path_of(ino.0)?;
            if let Some(mode) = mode {
                fs::set_permissions(inner.abs(&rel), fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(len) = size {
                inner.set_len(ino.0, &rel, fh.map(|fh| fh.0), len)?;
            }
            inner.attr_of(&rel)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let inner = self.lock();
        let result = inner
            .path_of(ino.0)
            .and_then(|rel| fs::read_link(inner.abs(&rel)).map_err(Errno::from));
        match result {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = self.make_entry(parent, name, false, |abs| {
            use nix::sys::stat::{Mode, SFlag};
            nix::sys::stat::mknod(
                abs,
                SFlag::from_bits_truncate(mode & libc::S_IFMT),
                Mode::from_bits_truncate(mode & 0o7777 & !umask),
                u64::from(rdev),
            )
            .map_err(io::Error::from)
        });
        reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.make_entry(parent, name, true, |abs| {
            fs::create_dir(abs)?;
            fs::set_permissions(abs, fs::Permissions::from_mode(mode & 0o7777 & !umask))
        });
        reply_entry(reply, result);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self.make_entry(parent, link_name, false, |abs| {
            std::os::unix::fs::symlink(target, abs)
        });
        reply_entry(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut inner = self.lock();
        let result = (|| {
            let source = inner.path_of(ino.0)?;
            let rel = inner.child(newparent.0, newname)?;
            fs::hard_link(inner.abs(&source), inner.abs(&rel))?;
            inner.record_entry(EntryOp::Created {
                dir: newparent.0,
                name: newname.to_owned(),
                is_dir: false,
            });
            // The table keeps the inode at its first name.
            Ok(attr(ino.0, &fs::symlink_metadata(inner.abs(&rel))?))
        })();
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut inner = self.lock();
        let result = (|| {
            let rel = inner.child(parent.0, name)?;
            let mode = fs::symlink_metadata(inner.abs(&rel))?.mode();
            let grave = inner.bury(&rel)?;
            fs::remove_file(inner.abs(&rel))?;
            inner.record_entry(EntryOp::Removed {
                dir: parent.0,
                name: name.to_owned(),
                grave: Some(grave),
                mode,
            });
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut inner = self.lock();
        let result = (|| {
            let rel = inner.child(parent.0, name)?;
            let mode = fs::symlink_metadata(inner.abs(&rel))?.mode() & 0o7777;
            fs::remove_dir(inner.abs(&rel))?;
            inner.paths.retain(|_, path| !path.starts_with(&rel));
            inner.record_entry(EntryOp::Removed {
                dir: parent.0,
                name: name.to_owned(),
                grave: None,
                mode,
            });
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.0.before(FaultOp::Rename, parent.0, Some(name)) {
            return reply.error(e);
        }
        let mut inner = self.lock();
        let result = (|| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            let from = inner.child(parent.0, name)?;
            let to = inner.child(newparent.0, newname)?;
            let source = fs::symlink_metadata(inner.abs(&from))?;
            let (mut replaced_grave, mut replaced_dir_mode) = (None, None);
            match fs::symlink_metadata(inner.abs(&to)) {
                Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                    return Err(Errno::EEXIST);
                }
                Ok(target) if target.ino() == source.ino() => {}
                Ok(target) if target.is_dir() => {
                    replaced_dir_mode = Some(target.mode() & 0o7777);
                }
                Ok(_) => replaced_grave = Some(inner.bury(&to)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = fs::rename(inner.abs(&from), inner.abs(&to)) {
                if let Some(grave) = replaced_grave {
                    let grave_rel = Path::new(GRAVEYARD).join(grave.to_string());
                    inner.moved(&grave_rel, &to);
                    inner.free_graves(vec![grave]);
                }
                return Err(e.into());
            }
            inner
                .paths
                .retain(|_, path| replaced_dir_mode.is_none() || !path.starts_with(&to));
            inner.moved(&from, &to);
            inner.record_entry(EntryOp::Renamed {
                from_dir: parent.0,
                from_name: name.to_owned(),
                to_dir: newparent.0,
                to_name: newname.to_owned(),
                replaced_grave,
                replaced_dir_mode,
            });
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut inner = self.lock();
        let result = (|| {
            let rel = inner.path_of(ino.0)?;
            let writable = flags.acc_mode() != fuser::OpenAccMode::O_RDONLY;
            // O_APPEND is the kernel's business: it sends the offset.
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(inner.abs(&rel))?;
            Ok(inner.open_handle(ino.0, file))
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = self.lock();
        let result = (|| {
            let rel = inner.child(parent.0, name)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777 & !umask)
                .open(inner.abs(&rel))?;
            inner.record_entry(EntryOp::Created {
                dir: parent.0,
                name: name.to_owned(),
                is_dir: false,
            });
            let attr = inner.attr_of(&rel)?;
            Ok((attr, inner.open_handle(attr.ino.0, file)))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let inner = self.lock();
        let Some(handle) = inner.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match handle
                .file
                .read_at(&mut buf[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(e.into()),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.0.before(FaultOp::Write, ino.0, None) {
            return reply.error(e);
        }
        let mut inner = self.lock();
        let result = (|| {
            let file = &inner.handles.get(&fh.0).ok_or(Errno::EBADF)?.file;
            let old_len = file.metadata()?.len();
            let overwritten = old_len.saturating_sub(offset).min(data.len() as u64);
            let mut old_bytes = vec![0; overwritten as usize];
            file.read_exact_at(&mut old_bytes, offset)?;
            // Recorded first: a write that fails half-way is undone too.
            let change = DataChange::write(offset, data.len() as u64, old_len, old_bytes);
            let written = file.write_all_at(data, offset);
            inner.model.record_data(ino.0, change);
            written?;
            inner.counters.writes += 1;
            inner.counters.bytes_written += data.len() as u64;
            Ok(data.len() as u32)
        })();
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.0.before(FaultOp::Fsync, ino.0, None) {
            return reply.error(e);
        }
        let mut inner = self.lock();
        inner.model.sync_file(ino.0);
        inner.counters.file_syncs += 1;
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().path_of(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = self.lock();
        let result = (|| {
            let rel = inner.path_of(ino.0)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for entry in fs::read_dir(inner.abs(&rel))? {
                let entry = entry?;
                if ino == INodeNo::ROOT && entry.file_name() == GRAVEYARD {
                    continue;
                }
                let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
                let meta = entry.metadata()?;
                entries.push((inner.fuse_ino(meta.ino()), kind, entry.file_name()));
            }
            Ok::<_, Errno>(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.0.before(FaultOp::Fsync, ino.0, None) {
            return reply.error(e);
        }
        let mut inner = self.lock();
        let freed = inner.model.sync_dir(ino.0);
        inner.free_graves(freed);
        inner.counters.dir_syncs += 1;
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let backing = self.lock().backing.clone();
        match nix::sys::statvfs::statvfs(&backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let result = self.lock().path_of(ino.0).map(|_| ());
        reply_empty(reply, result);
    }
}
