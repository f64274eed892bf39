//! What powerfs costs: an append + fdatasync, a journal write
//! (`StateJournal::write_atomic`) and a fake-peer PUT (`Store::put`), each
//! through a mounted powerfs and on the plain disk it is backed by, in one
//! run, and a mount + unmount; median and p99 in microseconds.
//!
//! ```text
//! cargo run --release -p powerfs --example cost [-- <iterations> [<backing parent dir>]]
//! ```
//!
//! The backing directory is on the same disk as the plain one unless a
//! parent for it is given (`/dev/shm`: a tmpfs, which is all a test needs,
//! since durability is the model's).
//!
//! An fsync through powerfs updates the model and does not reach the disk
//! (durability is the model's), so the figures compare a FUSE round trip
//! per operation with a device flush per sync.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use fake_peers::store::Store;
use handoff::{HandoffId, Phase, StateJournal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2000,
    };
    powerfs::enter_private_mount_namespace()?;
    let dir = tempfile::tempdir()?;
    let (plain, mnt) = (dir.path().join("plain"), dir.path().join("mnt"));
    std::fs::create_dir(&plain)?;
    std::fs::create_dir(&mnt)?;
    let backing_parent = match std::env::args().nth(2) {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir_in(dir.path())?,
    };
    let fs = powerfs::PowerFs::mount(&backing_parent.path().join("backing"), &mnt)?;

    println!(
        "{iterations} iterations, plain in {}, backing in {}",
        dir.path().display(),
        backing_parent.path().display()
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "operation", "plain p50", "plain p99", "powerfs p50", "powerfs p99"
    );
    for (name, op) in [
        ("append 64 B + fdatasync", append_and_fdatasync as Bench),
        ("journal write_atomic", journal_write),
        ("fake-peer PUT", fake_peer_put),
    ] {
        let on_plain = op(&plain, iterations)?;
        let through = op(&mnt, iterations)?;
        println!(
            "{name:<28} {:>9.1} us {:>9.1} us {:>9.1} us {:>9.1} us",
            percentile(&on_plain, 50),
            percentile(&on_plain, 99),
            percentile(&through, 50),
            percentile(&through, 99)
        );
    }
    println!("{:?}", fs.counters());
    fs.unmount()?;

    // What a mount per episode costs.
    let cycles = (iterations / 20).max(10);
    let backing = backing_parent.path().join("cycled");
    let mut mount_us = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let started = Instant::now();
        let fs = powerfs::PowerFs::mount(&backing, &mnt)?;
        fs.unmount()?;
        mount_us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "{:<28} {:>12} {:>12} {:>9.1} us {:>9.1} us   ({cycles} cycles)",
        "mount + unmount",
        "",
        "",
        percentile(&mount_us, 50),
        percentile(&mount_us, 99)
    );
    Ok(())
}

/// Runs the operation `iterations` times in `dir`; each duration in µs.
type Bench = fn(&Path, usize) -> std::io::Result<Vec<f64>>;

fn timed(
    iterations: usize,
    mut op: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<Vec<f64>> {
    // A few rounds first, so both sides start warm.
    for _ in 0..10 {
        op()?;
    }
    (0..iterations)
        .map(|_| {
            let started = Instant::now();
            op().map(|()| started.elapsed().as_secs_f64() * 1e6)
        })
        .collect()
}

fn append_and_fdatasync(dir: &Path, iterations: usize) -> std::io::Result<Vec<f64>> {
    let path = dir.join("append.log");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    File::open(dir)?.sync_all()?;
    let record = [b'x'; 64];
    timed(iterations, || {
        file.write_all(&record)?;
        file.sync_data()
    })
}

fn journal_write(dir: &Path, iterations: usize) -> std::io::Result<Vec<f64>> {
    let journal = StateJournal {
        handoff_id: HandoffId::new(),
        phase: Phase::Draining,
        incumbent_pid: 10,
        successor_pid: Some(11),
        started_at_unix_ms: 1,
    };
    let path = dir.join("handoff.journal");
    timed(iterations, || {
        journal.write_atomic(&path).map_err(std::io::Error::other)
    })
}

fn fake_peer_put(dir: &Path, iterations: usize) -> std::io::Result<Vec<f64>> {
    let data = dir.join("peer");
    std::fs::create_dir(&data)?;
    let mut store = Store::open(&data)?;
    let mut i = 0u64;
    timed(iterations, || {
        i += 1;
        store
            .put(&format!("key{}", i % 100), "value")
            .map(drop)
            .map_err(std::io::Error::other)
    })
}

fn percentile(samples: &[f64], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
