//! The mounted file system, with real processes and real fsync: what a power
//! cut keeps and loses, the journal written the library's way and its broken
//! variants, the fake peer's log, and injected I/O faults.
//!
//! The binary enters a private mount namespace first (while it has one
//! thread), so every mount vanishes with it. Writers that must be dead at
//! the cut run as child processes: this binary again, with
//! `POWERFS_TEST_WRITER=<mode>`.
//!
//! Where it cannot mount, it says "power loss: not measured" and passes,
//! unless CI=true.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fake_peers::store::{LOG_FILE, Store};
use handoff::{Phase, StateJournal};
use libtest_mimic::{Arguments, Failed, Trial};
use powerfs::{FaultEffect, FaultOp, IoFault, PowerFs};

/// Seeds tried per crash-state check.
const SEEDS: u64 = 48;

fn main() {
    if let Ok(mode) = std::env::var(WRITER_ENV) {
        let dir = PathBuf::from(std::env::args().nth(1).expect("writer: a directory"));
        writer(&mode, &dir);
        return;
    }
    let args = Arguments::from_args();
    if let Err(e) = powerfs::enter_private_mount_namespace() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{e}");
        }
        eprintln!("{e}");
        return;
    }
    let trials = vec![
        trial(
            "data_without_fsync_is_lost_and_fsync_keeps_it",
            data_without_fsync_is_lost_and_fsync_keeps_it,
        ),
        trial(
            "a_rename_without_a_directory_fsync_is_lost",
            a_rename_without_a_directory_fsync_is_lost,
        ),
        trial("a_torn_tail_is_a_prefix", a_torn_tail_is_a_prefix),
        trial(
            "an_unlink_without_a_directory_fsync_is_undone",
            an_unlink_without_a_directory_fsync_is_undone,
        ),
        trial(
            "journal_written_the_library_way_survives_every_crash_state",
            journal_written_the_library_way_survives_every_crash_state,
        ),
        trial(
            "journal_renamed_without_a_file_fsync_is_lost_in_some_crash_state",
            journal_renamed_without_a_file_fsync_is_lost_in_some_crash_state,
        ),
        trial(
            "journal_without_a_directory_fsync_is_lost_in_some_crash_state",
            journal_without_a_directory_fsync_is_lost_in_some_crash_state,
        ),
        trial(
            "fake_peer_puts_survive_every_crash_state",
            fake_peer_puts_survive_every_crash_state,
        ),
        trial(
            "fake_peer_acking_before_fsync_loses_puts_in_some_crash_state",
            fake_peer_acking_before_fsync_loses_puts_in_some_crash_state,
        ),
        trial(
            "a_log_whose_creator_died_before_the_directory_fsync_keeps_the_next_writers_puts",
            a_log_whose_creator_died_before_the_directory_fsync_keeps_the_next_writers_puts,
        ),
        trial(
            "a_seal_makes_records_a_dead_writer_left_unsynced_durable",
            a_seal_makes_records_a_dead_writer_left_unsynced_durable,
        ),
        trial(
            "a_flock_and_a_unix_socket_work_through_the_mount",
            a_flock_and_a_unix_socket_work_through_the_mount,
        ),
        trial(
            "a_mount_is_private_and_vanishes_when_its_process_is_killed",
            a_mount_is_private_and_vanishes_when_its_process_is_killed,
        ),
        trial(
            "the_powerfs_binary_takes_commands_on_stdin",
            the_powerfs_binary_takes_commands_on_stdin,
        ),
        trial(
            "renames_across_and_of_directories_are_undone_as_the_model_says",
            renames_across_and_of_directories_are_undone_as_the_model_says,
        ),
        trial(
            "injected_faults_fail_or_stall_the_chosen_operation_once",
            injected_faults_fail_or_stall_the_chosen_operation_once,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn trial(name: &'static str, test: fn() -> Result<(), Failed>) -> Trial {
    Trial::test(name, test)
}

macro_rules! check {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+).into());
        }
    };
}

/// A mounted powerfs over a fresh backing directory; unmounted on drop.
struct Mounted {
    fs: PowerFs,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

fn mount() -> Mounted {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("mnt");
    fs::create_dir(&root).expect("mount point");
    let fs = PowerFs::mount(&dir.path().join("backing"), &root).expect("mount");
    Mounted {
        fs,
        root,
        _dir: dir,
    }
}

fn fsync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

fn append(path: &Path, bytes: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(bytes).expect("append");
    file
}

fn data_without_fsync_is_lost_and_fsync_keeps_it() -> Result<(), Failed> {
    let m = mount();
    let path = m.root.join("log");
    append(&path, b"kept\n").sync_data()?;
    fsync_dir(&m.root);
    append(&path, b"lost\n");
    let summary = m.fs.drop_undurable()?.to_string();
    check!(
        fs::read(&path)? == b"kept\n",
        "{:?} after {summary}",
        fs::read(&path)?
    );
    check!(
        summary
            == "everything not durable dropped: 0 entry ops kept, 0 dropped; \
                log (1 unsynced changes): synced data only",
        "the summary names the file by its path: {summary}"
    );
    append(&path, b"synced\n").sync_data()?;
    m.fs.drop_undurable()?;
    check!(
        fs::read(&path)? == b"kept\nsynced\n",
        "{:?}",
        fs::read(&path)?
    );
    Ok(())
}

fn a_rename_without_a_directory_fsync_is_lost() -> Result<(), Failed> {
    let m = mount();
    let (tmp, target) = (m.root.join(".tmp"), m.root.join("target"));
    append(&tmp, b"new").sync_all()?;
    fs::rename(&tmp, &target)?;
    m.fs.drop_undurable()?;
    check!(
        !target.exists() && !tmp.exists(),
        "the rename and the create are lost"
    );
    append(&tmp, b"new").sync_all()?;
    fs::rename(&tmp, &target)?;
    fsync_dir(&m.root);
    m.fs.drop_undurable()?;
    check!(fs::read(&target)? == b"new", "a synced rename is kept");
    check!(!tmp.exists(), "and its source is gone");
    Ok(())
}

fn an_unlink_without_a_directory_fsync_is_undone() -> Result<(), Failed> {
    let m = mount();
    let path = m.root.join("f");
    append(&path, b"data").sync_all()?;
    fsync_dir(&m.root);
    fs::remove_file(&path)?;
    check!(!path.exists(), "removed");
    m.fs.drop_undurable()?;
    check!(fs::read(&path)? == b"data", "an unsynced unlink is undone");
    fs::remove_file(&path)?;
    fsync_dir(&m.root);
    m.fs.drop_undurable()?;
    check!(!path.exists(), "a synced unlink is kept");
    let listing: Vec<_> = fs::read_dir(&m.root)?.collect::<Result<_, _>>()?;
    check!(
        listing.is_empty(),
        "the graveyard is not visible: {listing:?}"
    );
    Ok(())
}

fn a_torn_tail_is_a_prefix() -> Result<(), Failed> {
    let m = mount();
    let path = m.root.join("log");
    let synced = b"synced record\n";
    let mut lengths = std::collections::BTreeSet::new();
    let mut written = synced.to_vec();
    for seed in 0..SEEDS {
        fs::write(&path, synced)?;
        m.fs.make_durable()?;
        written.truncate(synced.len());
        let mut file = append(&path, b"");
        for i in 0..4 {
            let record = format!("unsynced record {i} of seed {seed}\n");
            file.write_all(record.as_bytes())?;
            written.extend_from_slice(record.as_bytes());
        }
        drop(file);
        let summary = m.fs.power_cut(seed)?;
        let after = fs::read(&path)?;
        check!(
            written.starts_with(&after) && after.starts_with(synced),
            "seed {seed}: {after:?} is not a prefix of what was written at least as long as the synced data ({summary})"
        );
        lengths.insert(after.len());
    }
    let whole_records = lengths
        .iter()
        .filter(|len| written[..**len].ends_with(b"\n"))
        .count();
    check!(
        lengths.len() > 4 && whole_records < lengths.len(),
        "torn prefixes of several lengths, some inside a record: {lengths:?}"
    );
    Ok(())
}

// The journal: one version durable, a child writes the next and says so
// once its write returned, then the power is cut.

/// One handoff's journal at `phase`; the id is fixed so a writer process
/// and the checker agree on it.
fn journal(phase: Phase) -> StateJournal {
    StateJournal {
        handoff_id: serde_json::from_str("\"6f1c4d3a-8e2b-4c1d-9a7e-0b5f3c2d1e4f\"")
            .expect("a handoff id"),
        phase,
        incumbent_pid: 10,
        successor_pid: Some(11),
        started_at_unix_ms: 1,
    }
}

/// For each seed: the old journal durable, `mode`'s writer writes the new
/// one, power cut. Returns the first seed whose crash state lost the
/// written journal, with what was found.
fn journal_loss(mode: &str) -> Result<Option<String>, Failed> {
    let m = mount();
    let path = m.root.join("journal");
    for seed in 0..SEEDS {
        journal(Phase::Negotiating).write_atomic(&path)?;
        m.fs.make_durable()?;
        run_writer(mode, &m.root)?;
        let summary = m.fs.power_cut(seed)?;
        match StateJournal::read(&path) {
            Ok(Some(found)) if found == journal(Phase::Committed) => {}
            found => return Ok(Some(format!("seed {seed}: {found:?} ({summary})"))),
        }
        let litter: Vec<_> = fs::read_dir(&m.root)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        check!(
            litter.len() == 1,
            "seed {seed}: only the journal is left: {litter:?}"
        );
    }
    Ok(None)
}

fn journal_written_the_library_way_survives_every_crash_state() -> Result<(), Failed> {
    match journal_loss("journal")? {
        None => Ok(()),
        Some(loss) => Err(format!("the written journal was lost: {loss}").into()),
    }
}

fn journal_renamed_without_a_file_fsync_is_lost_in_some_crash_state() -> Result<(), Failed> {
    match journal_loss("journal-no-file-fsync")? {
        Some(loss) => {
            eprintln!("caught: {loss}");
            Ok(())
        }
        None => Err(format!("no crash state of {SEEDS} seeds lost the journal").into()),
    }
}

fn journal_without_a_directory_fsync_is_lost_in_some_crash_state() -> Result<(), Failed> {
    match journal_loss("journal-no-dir-fsync")? {
        Some(loss) => {
            eprintln!("caught: {loss}");
            Ok(())
        }
        None => Err(format!("no crash state of {SEEDS} seeds lost the journal").into()),
    }
}

// The fake peer's log: a child puts records and prints each one's sequence
// number once it is acknowledged; after the cut every acknowledged record
// must be there.

/// For each seed: a fresh log, `mode`'s writer puts, power cut. The first
/// seed whose crash state lost an acknowledged put, with what was lost.
fn puts_lost(mode: &str) -> Result<Option<String>, Failed> {
    let m = mount();
    for seed in 0..SEEDS {
        let _ = fs::remove_file(m.root.join(LOG_FILE));
        m.fs.make_durable()?;
        let acked = run_writer(mode, &m.root)?;
        let summary = m.fs.power_cut(seed)?;
        let store = Store::open(&m.root)?;
        for line in acked.lines() {
            let seq: u64 = line.parse()?;
            if store.last_seq() < seq || store.get(&format!("k{seq}")) != Some("v") {
                return Ok(Some(format!(
                    "seed {seed}: acknowledged put {seq} lost, the log has {} ({summary})",
                    store.describe()
                )));
            }
        }
        check!(acked.lines().count() == PUTS, "seed {seed}: {acked:?}");
    }
    Ok(None)
}

const PUTS: usize = 5;

fn fake_peer_puts_survive_every_crash_state() -> Result<(), Failed> {
    match puts_lost("puts")? {
        None => Ok(()),
        Some(loss) => Err(loss.into()),
    }
}

fn fake_peer_acking_before_fsync_loses_puts_in_some_crash_state() -> Result<(), Failed> {
    match puts_lost("puts-ack-before-fsync")? {
        Some(loss) => {
            eprintln!("caught: {loss}");
            Ok(())
        }
        None => Err(format!("no crash state of {SEEDS} seeds lost a put").into()),
    }
}

fn a_log_whose_creator_died_before_the_directory_fsync_keeps_the_next_writers_puts()
-> Result<(), Failed> {
    let m = mount();
    // A process that created the log and died before its directory fsync.
    File::create(m.root.join(LOG_FILE))?;
    let acked = run_writer("puts", &m.root)?;
    m.fs.drop_undurable()?;
    let store = Store::open(&m.root)?;
    check!(
        store.last_seq() == PUTS as u64,
        "acknowledged {} puts, the log after the cut has {}",
        acked.lines().count(),
        store.describe()
    );
    Ok(())
}

/// A process that mounts in its own namespace (as the harness does) and is
/// killed leaves nothing mounted: its mount is never seen outside, and it is
/// gone with the namespace.
fn a_mount_is_private_and_vanishes_when_its_process_is_killed() -> Result<(), Failed> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg(dir.path())
        .env(WRITER_ENV, "mount-and-wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    check!(line == "mounted\n", "the child says {line:?}");
    let mounted_at = |mountinfo: &str| {
        mountinfo
            .lines()
            .any(|l| l.contains(&*mnt.to_string_lossy()) && l.contains("powerfs"))
    };
    let child_view = fs::read_to_string(format!("/proc/{}/mountinfo", child.id()))?;
    check!(mounted_at(&child_view), "mounted in the child's namespace");
    check!(
        !mounted_at(&fs::read_to_string("/proc/self/mountinfo")?),
        "not in ours"
    );
    child.kill()?;
    child.wait()?;
    check!(
        !mounted_at(&fs::read_to_string("/proc/self/mountinfo")?),
        "nothing left"
    );
    fs::remove_dir(&mnt)?;
    Ok(())
}

/// The out-of-process control channel: the `powerfs` binary mounts in our
/// namespace and obeys commands on stdin.
fn the_powerfs_binary_takes_commands_on_stdin() -> Result<(), Failed> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_powerfs"))
        .arg(dir.path().join("backing"))
        .arg(&mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut first = String::new();
    stdout.read_line(&mut first)?;
    check!(
        first == "mounted\n",
        "the first line says it mounted: {first:?}"
    );
    let mut ask = |command: &str| -> Result<String, Failed> {
        writeln!(stdin, "{command}")?;
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    };
    append(&mnt.join("f"), b"unsynced");
    check!(ask("fault write 0 eio")? == "ok", "a fault is armed");
    let answer = ask("drop")?;
    check!(
        answer.starts_with("ok everything not durable dropped: 0 entry ops kept, 1 dropped"),
        "{answer}"
    );
    check!(!mnt.join("f").exists(), "the unsynced create is gone");
    check!(ask("counters")?.starts_with("ok Counters"), "counters");
    check!(
        ask("cut x")?.starts_with("error the seed must be"),
        "a bad command"
    );
    drop(stdin);
    check!(child.wait()?.success(), "it exits at the end of its input");
    check!(
        !fs::read_to_string("/proc/self/mountinfo")?.contains(&*mnt.to_string_lossy()),
        "unmounted"
    );
    Ok(())
}

fn renames_across_and_of_directories_are_undone_as_the_model_says() -> Result<(), Failed> {
    let m = mount();
    let (a, b) = (m.root.join("a"), m.root.join("b"));
    fs::create_dir(&a)?;
    fs::create_dir(&b)?;
    fs::write(a.join("x"), "data")?;
    m.fs.make_durable()?;
    // Pending in both directories until both are synced.
    fs::rename(a.join("x"), b.join("y"))?;
    fsync_dir(&b);
    m.fs.drop_undurable()?;
    check!(
        fs::read(a.join("x"))? == b"data" && !b.join("y").exists(),
        "a rename synced in one directory only is undone"
    );
    fs::rename(a.join("x"), b.join("y"))?;
    fsync_dir(&a);
    fsync_dir(&b);
    m.fs.drop_undurable()?;
    check!(
        fs::read(b.join("y"))? == b"data" && !a.join("x").exists(),
        "synced in both, it is kept"
    );
    // A directory whose creation is lost takes what is in it along.
    let c = m.root.join("c");
    fs::create_dir(&c)?;
    append(&c.join("z"), b"z").sync_all()?;
    fsync_dir(&c);
    m.fs.drop_undurable()?;
    check!(!c.exists(), "an unsynced mkdir is lost with its contents");
    // A renamed directory comes back with what was made durable inside it.
    fs::rename(&a, m.root.join("a2"))?;
    append(&m.root.join("a2").join("new"), b"n").sync_all()?;
    fsync_dir(&m.root.join("a2"));
    m.fs.drop_undurable()?;
    check!(
        !m.root.join("a2").exists() && fs::read(a.join("new"))? == b"n",
        "the directory is back under its old name, with its synced entry"
    );
    // Unsynced data in a file whose directory was renamed since it was
    // opened is still found, and lost.
    let file = append(&a.join("new"), b"lost");
    fs::rename(&a, m.root.join("a3"))?;
    fsync_dir(&m.root);
    drop(file);
    m.fs.drop_undurable()?;
    check!(
        fs::read(m.root.join("a3").join("new"))? == b"n",
        "the unsynced append is lost: {:?}",
        fs::read(m.root.join("a3").join("new"))?
    );
    Ok(())
}

/// The roles lock the data dir with flock and talk over Unix sockets; both
/// work on the mount (the kernel keeps the locks and the socket bindings).
fn a_flock_and_a_unix_socket_work_through_the_mount() -> Result<(), Failed> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::Read;
    use std::os::unix::net::{UnixListener, UnixStream};
    let m = mount();
    let lock_path = m.root.join("handoff.lock");
    let held = Flock::lock(File::create(&lock_path)?, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)?;
    let second = Flock::lock(File::open(&lock_path)?, FlockArg::LockExclusiveNonblock);
    check!(
        matches!(second, Err((_, nix::errno::Errno::EWOULDBLOCK))),
        "a second exclusive flock is refused: {:?}",
        second.map(drop)
    );
    drop(held);
    let socket_path = m.root.join("control.sock");
    let listener = UnixListener::bind(&socket_path)?;
    let mut client = UnixStream::connect(&socket_path)?;
    client.write_all(b"x")?;
    let mut byte = [0];
    listener.accept()?.0.read_exact(&mut byte)?;
    check!(byte == *b"x", "{byte:?}");
    Ok(())
}

/// A writer appended a record and died before its fdatasync (never
/// acknowledged). The next incumbent replays it, may serve it, and seals:
/// the seal must make it durable, for the successor serves it too.
fn a_seal_makes_records_a_dead_writer_left_unsynced_durable() -> Result<(), Failed> {
    let m = mount();
    drop(Store::open(&m.root)?);
    m.fs.make_durable()?;
    append(&m.root.join(LOG_FILE), b"1 k v\n");
    let mut store = Store::open(&m.root)?;
    check!(
        store.get("k") == Some("v"),
        "replayed: {}",
        store.describe()
    );
    store.seal()?;
    m.fs.drop_undurable()?;
    let store = Store::open(&m.root)?;
    check!(
        store.get("k") == Some("v"),
        "a record served before the seal is durable after it: {}",
        store.describe()
    );
    Ok(())
}

fn injected_faults_fail_or_stall_the_chosen_operation_once() -> Result<(), Failed> {
    let m = mount();
    let mut store = Store::open(&m.root)?;
    m.fs.make_durable()?;
    store.put("a", "1")?;
    let fault = |op, effect| IoFault {
        op,
        skip: 0,
        path_contains: Some(LOG_FILE.into()),
        effect,
    };
    m.fs.inject(fault(FaultOp::Fsync, FaultEffect::Eio));
    let e = store.put("b", "2").expect_err("fdatasync fails with EIO");
    check!(e.to_string().contains("Input/output error"), "{e}");
    m.fs.inject(fault(FaultOp::Write, FaultEffect::Enospc));
    let e = store
        .put("b", "2")
        .expect_err("the write fails with ENOSPC");
    check!(e.to_string().contains("No space left"), "{e}");
    store.put("c", "3")?;
    m.fs.inject(fault(
        FaultOp::Fsync,
        FaultEffect::Stall(Duration::from_millis(50)),
    ));
    let started = Instant::now();
    store.put("d", "4")?;
    check!(
        started.elapsed() >= Duration::from_millis(50),
        "the stalled fdatasync took {:?}",
        started.elapsed()
    );
    drop(store);
    m.fs.drop_undurable()?;
    let store = Store::open(&m.root)?;
    check!(
        store.get("a") == Some("1") && store.get("b").is_none() && store.get("d") == Some("4"),
        "failed puts rolled back, the others durable: {}",
        store.describe()
    );
    let journal_path = m.root.join("journal");
    m.fs.inject(IoFault {
        op: FaultOp::Rename,
        skip: 0,
        path_contains: Some("journal".into()),
        effect: FaultEffect::Eio,
    });
    check!(
        journal(Phase::Draining)
            .write_atomic(&journal_path)
            .is_err(),
        "the rename fails"
    );
    check!(
        fs::read_dir(&m.root)?.count() == 1,
        "no temporary file is left (only the log)"
    );
    let counters = m.fs.counters();
    check!(counters.faults_fired == 4, "{counters:?}");
    check!(
        counters.power_cuts == 1 && counters.file_syncs >= 4,
        "{counters:?}"
    );
    Ok(())
}

// Writers, in child processes.

const WRITER_ENV: &str = "POWERFS_TEST_WRITER";

/// Run this binary as `mode`'s writer on `dir`; its stdout.
fn run_writer(mode: &str, dir: &Path) -> Result<String, Failed> {
    let output = Command::new(std::env::current_exe()?)
        .arg(dir)
        .env(WRITER_ENV, mode)
        .output()?;
    check!(
        output.status.success(),
        "writer {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn writer(mode: &str, dir: &Path) {
    let path = dir.join("journal");
    let new = journal(Phase::Committed);
    match mode {
        "journal" => new.write_atomic(&path).expect("write_atomic"),
        "journal-no-file-fsync" => write_journal(&path, &new.encode(), false, true),
        "journal-no-dir-fsync" => write_journal(&path, &new.encode(), true, false),
        "mount-and-wait" => {
            powerfs::enter_private_mount_namespace().expect("namespace");
            let _fs = PowerFs::mount(&dir.join("backing"), &dir.join("mnt")).expect("mount");
            println!("mounted");
            // Until killed, or until the parent closes stdin.
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        "puts" => {
            let mut store = Store::open(dir).expect("open the log");
            for i in 1..=PUTS as u64 {
                let seq = store.put(&format!("k{i}"), "v").expect("put");
                println!("{seq}");
            }
        }
        "puts-ack-before-fsync" => {
            // What `Store::put` does, acknowledging before the fdatasync
            // (which never comes).
            drop(Store::open(dir).expect("open the log"));
            let log = dir.join(LOG_FILE);
            for seq in 1..=PUTS as u64 {
                let len = fs::metadata(&log).expect("stat").len();
                let file = OpenOptions::new().write(true).open(&log).expect("open");
                file.write_all_at(format!("{seq} k{seq} v\n").as_bytes(), len)
                    .expect("append");
                println!("{seq}");
            }
        }
        other => panic!("unknown writer {other}"),
    }
}

/// `StateJournal::write_atomic` with a step left out.
fn write_journal(path: &Path, bytes: &[u8], file_fsync: bool, dir_fsync: bool) {
    let dir = path.parent().expect("a parent");
    let temp = dir.join(".journal.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .expect("create the temporary file");
    file.write_all(bytes).expect("write");
    if file_fsync {
        file.sync_all().expect("fsync");
    }
    fs::rename(&temp, path).expect("rename");
    if dir_fsync {
        fsync_dir(dir);
    }
}
