//! The journal survives its writer being killed at any instant: what is on
//! disk afterwards is a whole journal, old or new, never a torn one.
//!
//! The writer is this test binary, re-executed in a helper mode selected by
//! `HANDOFF_JOURNAL_TEST_HELPER` (see [`helper_process_entry_point`]).
//!
//! Reproduce: `cargo test -p handoff --test journal_crash`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use handoff::{HandoffId, Phase, StateJournal};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HELPER_ENV: &str = "HANDOFF_JOURNAL_TEST_HELPER";
const HELPER_TEST: &str = "helper_process_entry_point";
const DEADLINE: Duration = Duration::from_secs(30);
/// Bound on the helper's rewrites, so a helper nobody kills still ends.
const MAX_REWRITES: u64 = 1_000_000;

fn journal(step: u64) -> StateJournal {
    StateJournal {
        handoff_id: "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8c".parse().unwrap(),
        phase: if step.is_multiple_of(2) {
            Phase::Draining
        } else {
            Phase::Sealing
        },
        incumbent_pid: 100,
        successor_pid: Some(200),
        started_at_unix_ms: step,
    }
}

/// Not a test: the entry point of the writer process. Without
/// `HANDOFF_JOURNAL_TEST_HELPER` it does nothing. It rewrites the journal
/// over and over, saying so after the first write.
#[test]
fn helper_process_entry_point() {
    let Ok(path) = std::env::var(HELPER_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    for step in 0..MAX_REWRITES {
        journal(step).write_atomic(&path).unwrap();
        if step == 0 {
            println!("WRITING");
        }
    }
}

#[test]
fn a_writer_killed_mid_rewrite_leaves_a_whole_journal() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                HELPER_TEST,
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(HELPER_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "WRITING" {
                    let _ = tx.send(());
                }
            }
        });
        let pid = Pid::from_raw(child.id() as i32);
        if rx.recv_timeout(DEADLINE).is_err() {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("round {round}: the writer never started within {DEADLINE:?}");
        }
        kill(pid, Signal::SIGKILL).unwrap();
        // SIGKILL cannot be caught: the wait ends promptly.
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: writer finished before the kill"
        );

        let survived = StateJournal::read(&path)
            .unwrap_or_else(|e| panic!("round {round}: torn journal after a crash: {e}"))
            .expect("the journal was written at least once");
        assert_eq!(survived, journal(survived.started_at_unix_ms));
        // A temporary file may be left behind by the crash; the journal
        // itself is what recovery reads.
        let litter = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "journal.json")
            .count();
        assert!(litter <= 1, "round {round}: {litter} temporary files left");
    }
}

#[test]
fn journal_of_a_real_handoff_id_round_trips_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.json");
    let written = StateJournal {
        handoff_id: HandoffId::new(),
        phase: Phase::ResumingAfterAbort,
        incumbent_pid: std::process::id(),
        successor_pid: Some(std::process::id() + 1),
        started_at_unix_ms: handoff::util::now_unix_ms(),
    };
    written.write_atomic(&path).unwrap();
    assert_eq!(StateJournal::read(&path).unwrap(), Some(written));
    StateJournal::delete(&path).unwrap();
    assert_eq!(StateJournal::read(&path).unwrap(), None);
}
