//! The durability model, pure: what has been done that is not yet durable,
//! and what a crash leaves of it.
//!
//! The backing directory always holds *everything* that was done (the view
//! of a machine that never loses power). The model keeps, for what is not
//! durable yet, what is needed to take it back:
//!
//! - per file (by inode), every change to its data or size since its last
//!   `fsync`/`fdatasync`, each with the bytes it overwrote (an append
//!   overwrites nothing, so nothing is copied for it);
//! - per directory (by inode), every entry operation (create, mkdir, link,
//!   symlink, unlink, rmdir, rename) since its last directory `fsync`, in
//!   order. A rename across directories is pending in both until both are
//!   synced.
//!
//! A crash state ([`Model::crash_state`]) picks, per directory, an in-order
//! prefix of its pending entry operations to keep, and per file the synced
//! data, all of it, or a torn prefix of the unsynced changes; it returns the
//! [`Undo`] steps that turn the backing directory into that state, in the
//! order to apply them. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// An inode number of the mounted file system.
pub type Ino = u64;

/// One change to a file's data or size, not yet covered by an fsync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChange {
    /// Where the change starts.
    pub offset: u64,
    /// Bytes written at `offset` (0 for a change of size alone).
    pub written_len: u64,
    /// The file's size before the change.
    pub old_len: u64,
    /// The bytes the change overwrote or cut off, from `offset`.
    pub old_bytes: Vec<u8>,
}

impl DataChange {
    /// A `pwrite` of `written_len` bytes at `offset` into a file of size
    /// `old_len`; `old_bytes` are the bytes it overwrote (those below
    /// `old_len`).
    pub fn write(offset: u64, written_len: u64, old_len: u64, old_bytes: Vec<u8>) -> Self {
        debug_assert_eq!(
            old_bytes.len() as u64,
            old_len.saturating_sub(offset).min(written_len)
        );
        Self {
            offset,
            written_len,
            old_len,
            old_bytes,
        }
    }

    /// A truncate from `old_len` to `new_len`; `old_bytes` are the bytes cut
    /// off (empty when the file grows).
    pub fn set_len(old_len: u64, new_len: u64, old_bytes: Vec<u8>) -> Self {
        debug_assert_eq!(old_bytes.len() as u64, old_len.saturating_sub(new_len));
        Self {
            offset: new_len.min(old_len),
            written_len: 0,
            old_len,
            old_bytes,
        }
    }

    /// The undo steps that keep only the first `kept` written bytes of this
    /// change (0: none of it), for a file whose later changes were undone.
    fn undo(&self, ino: Ino, kept: u64) -> Vec<Undo> {
        debug_assert!(kept == 0 || kept < self.written_len);
        let mut steps = Vec::new();
        let restore_from = kept.min(self.old_bytes.len() as u64) as usize;
        if restore_from < self.old_bytes.len() {
            steps.push(Undo::WriteBack {
                ino,
                offset: self.offset + restore_from as u64,
                bytes: self.old_bytes[restore_from..].to_vec(),
            });
        }
        let len = if kept == 0 {
            self.old_len
        } else {
            self.old_len.max(self.offset + kept)
        };
        steps.push(Undo::SetLen { ino, len });
        steps
    }
}

/// One entry operation, as the directory it changed records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOp {
    /// `name` appeared in `dir` (create, mknod, mkdir, link, symlink).
    Created {
        /// The directory.
        dir: Ino,
        /// The new name.
        name: OsString,
        /// It is a directory (its removal takes what is inside with it).
        is_dir: bool,
    },
    /// `name` disappeared from `dir` (unlink, rmdir).
    Removed {
        /// The directory.
        dir: Ino,
        /// The removed name.
        name: OsString,
        /// Where the removed inode is kept until the removal is durable
        /// (`None` for a directory: it was empty, it is made again).
        grave: Option<u64>,
        /// Its permission bits.
        mode: u32,
    },
    /// `from_dir/from_name` became `to_dir/to_name`.
    Renamed {
        /// The source directory.
        from_dir: Ino,
        /// The source name.
        from_name: OsString,
        /// The target directory.
        to_dir: Ino,
        /// The target name.
        to_name: OsString,
        /// Where the inode the rename replaced is kept until the rename is
        /// durable, if it replaced a file.
        replaced_grave: Option<u64>,
        /// It replaced an empty directory with these permission bits.
        replaced_dir_mode: Option<u32>,
    },
}

impl EntryOp {
    /// The directories whose entries it changed.
    fn dirs(&self) -> Vec<Ino> {
        match self {
            EntryOp::Created { dir, .. } | EntryOp::Removed { dir, .. } => vec![*dir],
            EntryOp::Renamed {
                from_dir, to_dir, ..
            } if from_dir == to_dir => vec![*from_dir],
            EntryOp::Renamed {
                from_dir, to_dir, ..
            } => vec![*from_dir, *to_dir],
        }
    }

    /// What brings the directories back to before it.
    fn undo(&self) -> Vec<Undo> {
        match self {
            EntryOp::Created { dir, name, is_dir } => vec![Undo::RemoveEntry {
                dir: *dir,
                name: name.clone(),
                is_dir: *is_dir,
            }],
            EntryOp::Removed {
                dir,
                name,
                grave: Some(grave),
                ..
            } => vec![Undo::Unbury {
                grave: *grave,
                dir: *dir,
                name: name.clone(),
            }],
            EntryOp::Removed {
                dir,
                name,
                grave: None,
                mode,
            } => vec![Undo::MakeDir {
                dir: *dir,
                name: name.clone(),
                mode: *mode,
            }],
            EntryOp::Renamed {
                from_dir,
                from_name,
                to_dir,
                to_name,
                replaced_grave,
                replaced_dir_mode,
            } => {
                let mut steps = vec![Undo::MoveBack {
                    from_dir: *to_dir,
                    from_name: to_name.clone(),
                    to_dir: *from_dir,
                    to_name: from_name.clone(),
                }];
                if let Some(grave) = replaced_grave {
                    steps.push(Undo::Unbury {
                        grave: *grave,
                        dir: *to_dir,
                        name: to_name.clone(),
                    });
                } else if let Some(mode) = replaced_dir_mode {
                    steps.push(Undo::MakeDir {
                        dir: *to_dir,
                        name: to_name.clone(),
                        mode: *mode,
                    });
                }
                steps
            }
        }
    }

    /// The graveyard slots it holds.
    fn graves(&self) -> Option<u64> {
        match self {
            EntryOp::Removed { grave, .. } => *grave,
            EntryOp::Renamed { replaced_grave, .. } => *replaced_grave,
            EntryOp::Created { .. } => None,
        }
    }
}

/// One step that takes back something not durable, applied in order by the
/// file system layer (which knows where each inode is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Remove `dir/name` (a directory with everything in it).
    RemoveEntry {
        /// The directory.
        dir: Ino,
        /// The name.
        name: OsString,
        /// It is a directory.
        is_dir: bool,
    },
    /// Put the inode kept in graveyard slot `grave` back at `dir/name`.
    Unbury {
        /// The slot.
        grave: u64,
        /// The directory.
        dir: Ino,
        /// The name.
        name: OsString,
    },
    /// Make the empty directory `dir/name` again.
    MakeDir {
        /// The directory.
        dir: Ino,
        /// The name.
        name: OsString,
        /// Its permission bits.
        mode: u32,
    },
    /// Rename `from_dir/from_name` back to `to_dir/to_name`.
    MoveBack {
        /// Where it is now.
        from_dir: Ino,
        /// Its name now.
        from_name: OsString,
        /// Where it was.
        to_dir: Ino,
        /// Its name then.
        to_name: OsString,
    },
    /// Write `bytes` back at `offset` of the file.
    WriteBack {
        /// The file.
        ino: Ino,
        /// Where.
        offset: u64,
        /// The old bytes.
        bytes: Vec<u8>,
    },
    /// Set the file's size.
    SetLen {
        /// The file.
        ino: Ino,
        /// The size.
        len: u64,
    },
}

/// What a crash keeps of one file's unsynced changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFate {
    /// Only what an fsync covered.
    Synced,
    /// Everything written.
    All,
    /// The first `changes` changes whole, then `bytes` bytes of the next
    /// write: a prefix of the unsynced tail.
    Torn {
        /// Changes kept whole.
        changes: usize,
        /// Bytes kept of the next one.
        bytes: u64,
    },
}

/// How a crash state was chosen: every choice, so a run can say what
/// survived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashSummary {
    /// The seed it was drawn from (`None`: everything not durable dropped).
    pub seed: Option<u64>,
    /// Pending entry operations kept.
    pub entry_ops_kept: usize,
    /// Pending entry operations dropped.
    pub entry_ops_dropped: usize,
    /// Per file with unsynced changes, what became of them.
    pub files: Vec<FileCrash>,
}

/// What a crash did to one file's unsynced changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCrash {
    /// The file.
    pub ino: Ino,
    /// Where it was before the crash, relative to the mount point, if the
    /// file system knew (filled in by the file system layer).
    pub path: Option<String>,
    /// How many unsynced changes it had.
    pub unsynced_changes: usize,
    /// What was kept of them.
    pub fate: FileFate,
}

impl fmt::Display for CrashSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seed {
            Some(seed) => write!(f, "crash state of seed {seed}: ")?,
            None => write!(f, "everything not durable dropped: ")?,
        }
        write!(
            f,
            "{} entry ops kept, {} dropped",
            self.entry_ops_kept, self.entry_ops_dropped
        )?;
        for file in &self.files {
            match &file.path {
                Some(path) => write!(f, "; {path}")?,
                None => write!(f, "; inode {}", file.ino)?,
            }
            write!(f, " ({} unsynced changes): ", file.unsynced_changes)?;
            match file.fate {
                FileFate::Synced => write!(f, "synced data only")?,
                FileFate::All => write!(f, "all data")?,
                FileFate::Torn { changes, bytes } => {
                    write!(f, "torn after {changes} changes + {bytes} bytes")?
                }
            }
        }
        Ok(())
    }
}

/// A crash state: the steps to apply, in order, and what was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashState {
    /// Entry steps first (newest first), then data steps.
    pub undo: Vec<Undo>,
    /// What survived.
    pub summary: CrashSummary,
}

/// Everything done and not yet durable.
#[derive(Debug, Default, Clone)]
pub struct Model {
    next_seq: u64,
    /// Pending entry operations by sequence number, with the directories
    /// still to be synced for each.
    ops: BTreeMap<u64, (EntryOp, BTreeSet<Ino>)>,
    /// Per directory, its pending entry operations in order.
    dirs: HashMap<Ino, Vec<u64>>,
    /// Per file, its unsynced changes in order.
    files: HashMap<Ino, Vec<DataChange>>,
    /// Per file with unsynced changes, when its first one was recorded:
    /// crash states draw in this order, not in inode order, so the same
    /// operations and seed give the same state on another run (inode
    /// numbers differ between runs).
    file_order: HashMap<Ino, u64>,
}

impl Model {
    /// Nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a change to a file's data or size.
    pub fn record_data(&mut self, ino: Ino, change: DataChange) {
        let order = self.next_seq;
        self.next_seq += 1;
        self.file_order.entry(ino).or_insert(order);
        self.files.entry(ino).or_default().push(change);
    }

    /// Record an entry operation.
    pub fn record_entry(&mut self, op: EntryOp) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let dirs: BTreeSet<Ino> = op.dirs().into_iter().collect();
        for dir in &dirs {
            self.dirs.entry(*dir).or_default().push(seq);
        }
        self.ops.insert(seq, (op, dirs));
    }

    /// An `fsync`/`fdatasync` of a file: all its data is durable.
    pub fn sync_file(&mut self, ino: Ino) {
        self.files.remove(&ino);
        self.file_order.remove(&ino);
    }

    /// An `fsync` of a directory: its entry operations are durable (a
    /// rename across directories once both are synced). Returns the
    /// graveyard slots no crash can bring back any more.
    pub fn sync_dir(&mut self, dir: Ino) -> Vec<u64> {
        let mut freed = Vec::new();
        for seq in self.dirs.remove(&dir).unwrap_or_default() {
            let Some((_, pending)) = self.ops.get_mut(&seq) else {
                continue;
            };
            pending.remove(&dir);
            if pending.is_empty()
                && let Some((op, _)) = self.ops.remove(&seq)
            {
                freed.extend(op.graves());
            }
        }
        freed
    }

    /// Pending entry operations.
    pub fn pending_entry_ops(&self) -> usize {
        self.ops.len()
    }

    /// Unsynced bytes written, over all files.
    pub fn pending_bytes(&self) -> u64 {
        self.files
            .values()
            .flatten()
            .map(|change| change.written_len)
            .sum()
    }

    /// Everything is durable now (the set-up is done, or a crash was
    /// applied). Returns the graveyard slots to empty.
    pub fn make_durable(&mut self) -> Vec<u64> {
        let graves = self
            .ops
            .values()
            .filter_map(|(op, _)| op.graves())
            .collect();
        *self = Self {
            next_seq: self.next_seq,
            ..Self::default()
        };
        graves
    }

    /// The crash state that drops everything not durable.
    pub fn drop_everything(&self) -> CrashState {
        let cuts = self.dirs.keys().map(|dir| (*dir, 0)).collect();
        let fates = self
            .files
            .keys()
            .map(|ino| (*ino, FileFate::Synced))
            .collect();
        self.state(None, cuts, fates)
    }

    /// A crash state drawn from `seed`: per directory a random in-order
    /// prefix of its pending entry operations, per file the synced data,
    /// all of it, or a random torn prefix of the unsynced changes. The same
    /// model and seed give the same state.
    pub fn crash_state(&self, seed: u64) -> CrashState {
        let mut rng = StdRng::seed_from_u64(seed);
        // In the order of their first pending operation, so the draws
        // depend neither on hash order nor on inode numbers.
        let mut dirs: Vec<_> = self.dirs.iter().collect();
        dirs.sort_by_key(|(_, seqs)| seqs.first().copied());
        let cuts = dirs
            .into_iter()
            .map(|(dir, seqs)| (*dir, rng.random_range(0..=seqs.len())))
            .collect();
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by_key(|(ino, _)| self.file_order.get(*ino).copied());
        let fates = files
            .into_iter()
            .map(|(ino, changes)| {
                let fate = match rng.random_range(0..3) {
                    0 => FileFate::Synced,
                    1 => FileFate::All,
                    _ => {
                        let kept = rng.random_range(0..changes.len());
                        let next = changes[kept].written_len;
                        let bytes = if next > 1 {
                            rng.random_range(0..next)
                        } else {
                            0
                        };
                        FileFate::Torn {
                            changes: kept,
                            bytes,
                        }
                    }
                };
                (*ino, fate)
            })
            .collect();
        self.state(Some(seed), cuts, fates)
    }

    /// The crash state that keeps, per directory, the first `cuts[dir]`
    /// pending operations (fewer where a rename is cut in its other
    /// directory) and per file its fate.
    fn state(
        &self,
        seed: Option<u64>,
        mut cuts: HashMap<Ino, usize>,
        fates: HashMap<Ino, FileFate>,
    ) -> CrashState {
        // An operation is kept when every directory it is pending in keeps
        // it; cut each directory at its first operation not kept, until
        // nothing changes (the cuts only shrink).
        let kept = |cuts: &HashMap<Ino, usize>, seq: u64| {
            self.ops[&seq].1.iter().all(|dir| {
                let position = self.dirs[dir].iter().position(|s| *s == seq);
                position.is_some_and(|p| p < cuts[dir])
            })
        };
        loop {
            let mut changed = false;
            for (dir, seqs) in &self.dirs {
                let cut = cuts[dir];
                if let Some(first_dropped) = seqs[..cut].iter().position(|s| !kept(&cuts, *s)) {
                    cuts.insert(*dir, first_dropped);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut summary = CrashSummary {
            seed,
            ..CrashSummary::default()
        };
        let mut undo = Vec::new();
        for (seq, (op, _)) in self.ops.iter().rev() {
            if kept(&cuts, *seq) {
                summary.entry_ops_kept += 1;
            } else {
                summary.entry_ops_dropped += 1;
                undo.extend(op.undo());
            }
        }
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by_key(|(ino, _)| self.file_order.get(*ino).copied());
        for (ino, changes) in files {
            let fate = fates[ino];
            summary.files.push(FileCrash {
                ino: *ino,
                path: None,
                unsynced_changes: changes.len(),
                fate,
            });
            let (whole, torn_bytes) = match fate {
                FileFate::Synced => (0, 0),
                FileFate::All => (changes.len(), 0),
                FileFate::Torn { changes, bytes } => (changes, bytes),
            };
            for (i, change) in changes.iter().enumerate().skip(whole).rev() {
                let kept = if i == whole { torn_bytes } else { 0 };
                undo.extend(change.undo(*ino, kept));
            }
        }
        CrashState { undo, summary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies undo steps to an in-memory file: the model's own check.
    fn apply(file: &mut Vec<u8>, steps: &[Undo]) {
        for step in steps {
            match step {
                Undo::WriteBack { offset, bytes, .. } => {
                    let end = *offset as usize + bytes.len();
                    if file.len() < end {
                        file.resize(end, 0);
                    }
                    file[*offset as usize..end].copy_from_slice(bytes);
                }
                Undo::SetLen { len, .. } => file.resize(*len as usize, 0),
                other => panic!("not a data step: {other:?}"),
            }
        }
    }

    /// Writes `data` at `offset` into `file`, recording it.
    fn write(model: &mut Model, file: &mut Vec<u8>, offset: usize, data: &[u8]) {
        let old_len = file.len();
        let end = offset + data.len();
        let old_bytes = file[offset.min(old_len)..end.min(old_len)].to_vec();
        model.record_data(
            7,
            DataChange::write(offset as u64, data.len() as u64, old_len as u64, old_bytes),
        );
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset..end].copy_from_slice(data);
    }

    fn name(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn data_without_fsync_is_lost_and_fsync_keeps_it() {
        let mut model = Model::new();
        let mut file = Vec::new();
        write(&mut model, &mut file, 0, b"synced ");
        model.sync_file(7);
        write(&mut model, &mut file, 7, b"lost");
        let mut crashed = file.clone();
        apply(&mut crashed, &model.drop_everything().undo);
        assert_eq!(crashed, b"synced ");
        model.sync_file(7);
        let mut crashed = file.clone();
        apply(&mut crashed, &model.drop_everything().undo);
        assert_eq!(crashed, b"synced lost");
    }

    #[test]
    fn an_overwrite_without_fsync_gets_its_old_bytes_back() {
        let mut model = Model::new();
        let mut file = b"0123456789".to_vec();
        write(&mut model, &mut file, 2, b"abc");
        write(&mut model, &mut file, 8, b"xyzw");
        model.record_data(7, DataChange::set_len(12, 4, file[4..].to_vec()));
        file.truncate(4);
        apply(&mut file, &model.drop_everything().undo);
        assert_eq!(file, b"0123456789");
    }

    #[test]
    fn every_crash_state_of_appends_is_a_prefix_at_least_as_long_as_the_synced_data() {
        let mut model = Model::new();
        let mut file = Vec::new();
        write(&mut model, &mut file, 0, b"one\n");
        model.sync_file(7);
        for record in [&b"two\n"[..], b"three\n", b"four\n"] {
            let at = file.len();
            write(&mut model, &mut file, at, record);
        }
        let mut fates = BTreeSet::new();
        for seed in 0..200 {
            let state = model.crash_state(seed);
            assert_eq!(state, model.crash_state(seed), "seed {seed} replays");
            let mut crashed = file.clone();
            apply(&mut crashed, &state.undo);
            assert!(file.starts_with(&crashed), "seed {seed}: {crashed:?}");
            assert!(crashed.starts_with(b"one\n"), "seed {seed}: {crashed:?}");
            fates.insert(crashed.len());
        }
        assert!(
            fates.len() > 8,
            "torn prefixes of many lengths are drawn: {fates:?}"
        );
        assert!(fates.contains(&4) && fates.contains(&file.len()));
    }

    #[test]
    fn a_rename_without_a_directory_fsync_is_undone_and_the_replaced_file_returns() {
        let mut model = Model::new();
        model.record_entry(EntryOp::Created {
            dir: 1,
            name: name(".tmp"),
            is_dir: false,
        });
        model.record_entry(EntryOp::Renamed {
            from_dir: 1,
            from_name: name(".tmp"),
            to_dir: 1,
            to_name: name("journal"),
            replaced_grave: Some(3),
            replaced_dir_mode: None,
        });
        let state = model.drop_everything();
        assert_eq!(
            state.undo,
            vec![
                Undo::MoveBack {
                    from_dir: 1,
                    from_name: name("journal"),
                    to_dir: 1,
                    to_name: name(".tmp"),
                },
                Undo::Unbury {
                    grave: 3,
                    dir: 1,
                    name: name("journal"),
                },
                Undo::RemoveEntry {
                    dir: 1,
                    name: name(".tmp"),
                    is_dir: false,
                },
            ]
        );
        assert_eq!(model.sync_dir(1), vec![3], "the replaced file is freed");
        assert!(model.drop_everything().undo.is_empty());
    }

    #[test]
    fn a_directory_keeps_an_in_order_prefix_of_its_entry_operations() {
        let mut model = Model::new();
        for i in 0..6 {
            model.record_entry(EntryOp::Created {
                dir: 1,
                name: name(&format!("f{i}")),
                is_dir: false,
            });
        }
        let mut kept_counts = BTreeSet::new();
        for seed in 0..100 {
            let state = model.crash_state(seed);
            let removed: Vec<_> = state
                .undo
                .iter()
                .map(|step| match step {
                    Undo::RemoveEntry { name, .. } => name.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            let kept = 6 - removed.len();
            let expected: Vec<_> = (kept..6).rev().map(|i| name(&format!("f{i}"))).collect();
            assert_eq!(removed, expected, "seed {seed}: the newest are dropped");
            kept_counts.insert(kept);
        }
        assert_eq!(kept_counts.len(), 7, "every prefix is drawn");
    }

    #[test]
    fn a_rename_across_directories_is_durable_once_both_are_synced() {
        let mut model = Model::new();
        let rename = EntryOp::Renamed {
            from_dir: 2,
            from_name: name("a"),
            to_dir: 3,
            to_name: name("b"),
            replaced_grave: None,
            replaced_dir_mode: None,
        };
        model.record_entry(rename);
        model.record_entry(EntryOp::Created {
            dir: 2,
            name: name("later"),
            is_dir: false,
        });
        model.sync_dir(3);
        assert_eq!(model.pending_entry_ops(), 2, "still pending in dir 2");
        // Dir 2 keeps a prefix of [rename, later]: `later` never without
        // the rename before it.
        let mut dropped_counts = BTreeSet::new();
        for seed in 0..50 {
            let state = model.crash_state(seed);
            let dropped = state.summary.entry_ops_dropped;
            if dropped == 1 {
                assert!(
                    matches!(&state.undo[..], [Undo::RemoveEntry { name, .. }] if name == "later"),
                    "seed {seed}: {state:?}"
                );
            }
            dropped_counts.insert(dropped);
        }
        assert_eq!(dropped_counts, BTreeSet::from([0, 1, 2]));
        model.sync_dir(2);
        assert_eq!(model.pending_entry_ops(), 0);
    }

    #[test]
    fn a_cut_in_one_directory_cuts_a_rename_in_the_other() {
        let mut model = Model::new();
        model.record_entry(EntryOp::Created {
            dir: 2,
            name: name("x"),
            is_dir: false,
        });
        model.record_entry(EntryOp::Renamed {
            from_dir: 2,
            from_name: name("x"),
            to_dir: 3,
            to_name: name("y"),
            replaced_grave: None,
            replaced_dir_mode: None,
        });
        model.record_entry(EntryOp::Created {
            dir: 3,
            name: name("z"),
            is_dir: false,
        });
        // Dir 3 keeps everything, dir 2 nothing: the rename goes, and with
        // it `z`, which came after it in dir 3.
        let cuts = HashMap::from([(2, 0), (3, 2)]);
        let state = model.state(None, cuts, HashMap::new());
        assert_eq!(state.summary.entry_ops_kept, 0, "{state:?}");
        assert_eq!(state.summary.entry_ops_dropped, 3);
    }

    #[test]
    fn a_seed_draws_the_same_crash_state_whatever_the_inode_numbers() {
        // The same operations on two runs, where the inode numbers differ.
        let run = |first: Ino, second: Ino, dir_a: Ino, dir_b: Ino| {
            let mut model = Model::new();
            for (ino, dir) in [(first, dir_a), (second, dir_b)] {
                model.record_entry(EntryOp::Created {
                    dir,
                    name: name("f"),
                    is_dir: false,
                });
                for i in 0..5 {
                    model.record_data(ino, DataChange::write(i * 8, 8, i * 8, Vec::new()));
                }
            }
            model
        };
        let (one, other) = (run(10, 20, 1, 2), run(900, 30, 800, 3));
        for seed in 0..40 {
            let (a, b) = (
                one.crash_state(seed).summary,
                other.crash_state(seed).summary,
            );
            let fates = |s: &CrashSummary| s.files.iter().map(|f| f.fate).collect::<Vec<_>>();
            assert_eq!(fates(&a), fates(&b), "seed {seed}");
            assert_eq!(a.entry_ops_kept, b.entry_ops_kept, "seed {seed}");
        }
    }

    #[test]
    fn make_durable_frees_every_grave_and_leaves_nothing_to_undo() {
        let mut model = Model::new();
        model.record_entry(EntryOp::Removed {
            dir: 1,
            name: name("gone"),
            grave: Some(9),
            mode: 0o644,
        });
        model.record_data(5, DataChange::write(0, 3, 0, Vec::new()));
        assert_eq!(model.pending_bytes(), 3);
        assert_eq!(model.make_durable(), vec![9]);
        assert!(model.drop_everything().undo.is_empty());
        assert_eq!(model.pending_bytes(), 0);
    }
}
