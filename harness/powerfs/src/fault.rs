//! I/O faults on command: a chosen write, fsync or rename fails with `EIO`
//! or `ENOSPC`, or stalls, once. Pure: the file system asks
//! [`Faults::on`] before each such operation and does what it says.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// The operation a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// A `write` to a file.
    Write,
    /// An `fsync`/`fdatasync` of a file or a directory.
    Fsync,
    /// A `rename`.
    Rename,
}

/// What the hit operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultEffect {
    /// Fails with `EIO` and changes nothing (a dying disk).
    Eio,
    /// Fails with `ENOSPC` and changes nothing (a full disk).
    Enospc,
    /// Waits this long, then succeeds.
    Stall(Duration),
}

impl FaultEffect {
    /// The error number it fails with, if it fails.
    pub fn errno(self) -> Option<i32> {
        match self {
            FaultEffect::Eio => Some(libc::EIO),
            FaultEffect::Enospc => Some(libc::ENOSPC),
            FaultEffect::Stall(_) => None,
        }
    }
}

/// One fault: the `skip + 1`-th operation of kind `op` (counted from when
/// the fault is injected) whose path contains `path_contains` has `effect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFault {
    /// The operation it hits.
    pub op: FaultOp,
    /// Matching operations let through before it fires.
    pub skip: u64,
    /// Only operations on a path (relative to the mount) containing this.
    pub path_contains: Option<String>,
    /// What happens.
    pub effect: FaultEffect,
}

impl IoFault {
    /// A fault drawn from `seed`: any of the three operations, one of the
    /// first `max_skip + 1` of them, failing with `EIO` or `ENOSPC` or
    /// stalling for `stall`. The same seed gives the same fault.
    pub fn seeded(seed: u64, max_skip: u64, stall: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let op = [FaultOp::Write, FaultOp::Fsync, FaultOp::Rename][rng.random_range(0..3)];
        let effect = [
            FaultEffect::Eio,
            FaultEffect::Enospc,
            FaultEffect::Stall(stall),
        ][rng.random_range(0..3)];
        Self {
            op,
            skip: rng.random_range(0..=max_skip),
            path_contains: None,
            effect,
        }
    }
}

/// The faults injected and not fired yet.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Vec<IoFault>,
    fired: u64,
}

impl Faults {
    /// Arm `fault`.
    pub fn inject(&mut self, fault: IoFault) {
        self.armed.push(fault);
    }

    /// Disarm every fault not fired yet.
    pub fn clear(&mut self) {
        self.armed.clear();
    }

    /// Faults fired so far.
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// An `op` on `path` is about to happen: what it must do instead, if a
    /// fault fires (the first armed one that matches; it is disarmed).
    pub fn on(&mut self, op: FaultOp, path: &str) -> Option<FaultEffect> {
        let mut fire = None;
        for (i, fault) in self.armed.iter_mut().enumerate() {
            let matches = fault.op == op
                && fault
                    .path_contains
                    .as_deref()
                    .is_none_or(|part| path.contains(part));
            if !matches {
                continue;
            }
            if fault.skip == 0 {
                fire = Some(i);
                break;
            }
            fault.skip -= 1;
        }
        let fault = self.armed.remove(fire?);
        self.fired += 1;
        Some(fault.effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_once_on_the_chosen_matching_operation() {
        let mut faults = Faults::default();
        faults.inject(IoFault {
            op: FaultOp::Fsync,
            skip: 1,
            path_contains: Some("kv.log".into()),
            effect: FaultEffect::Eio,
        });
        assert_eq!(faults.on(FaultOp::Write, "data/kv.log"), None);
        assert_eq!(faults.on(FaultOp::Fsync, "journal"), None, "other path");
        assert_eq!(faults.on(FaultOp::Fsync, "data/kv.log"), None, "skipped");
        assert_eq!(
            faults.on(FaultOp::Fsync, "data/kv.log"),
            Some(FaultEffect::Eio)
        );
        assert_eq!(faults.on(FaultOp::Fsync, "data/kv.log"), None, "once");
        assert_eq!(faults.fired(), 1);
    }

    #[test]
    fn a_seeded_fault_replays_and_seeds_cover_every_kind() {
        let stall = Duration::from_millis(5);
        assert_eq!(IoFault::seeded(3, 10, stall), IoFault::seeded(3, 10, stall));
        let drawn: Vec<_> = (0..60).map(|s| IoFault::seeded(s, 10, stall)).collect();
        for op in [FaultOp::Write, FaultOp::Fsync, FaultOp::Rename] {
            assert!(drawn.iter().any(|f| f.op == op), "{op:?}");
        }
        for effect in [
            FaultEffect::Eio,
            FaultEffect::Enospc,
            FaultEffect::Stall(stall),
        ] {
            assert!(drawn.iter().any(|f| f.effect == effect), "{effect:?}");
        }
        assert!(drawn.iter().all(|f| f.skip <= 10));
    }
}
