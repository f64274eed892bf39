//! `FAKE_DIE_WITH_PARENT=<pid>`: a fake peer whose parent is killed with
//! SIGKILL (nothing of the parent runs to clean up) dies with it.
//!
//! Reproduce: `cargo test -p fake-peers --test die_with_parent`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Bound on each wait.
const WAIT: Duration = Duration::from_secs(10);

/// Whether `pid` is gone, or a zombie waiting for whoever adopted it.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn run_under_a_shell_that_is_killed(die_with_parent: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let control = dir.path().join("control.sock");
    let variable = if die_with_parent {
        "FAKE_DIE_WITH_PARENT=$$ "
    } else {
        ""
    };
    // The shell is the fake peer's parent; it prints the fake peer's pid.
    let script = format!(
        "{variable}\"$0\" --data-dir \"$1\" --control-socket \"$2\" --listen kv=127.0.0.1:0 & echo $!; wait"
    );
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_fake-peer"))
        .arg(&data)
        .arg(&control)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the shell prints the fake peer's pid");
    let peer: i32 = line.trim().parse().expect("a pid");
    let serving = handoff::util::poll_until(WAIT, Duration::from_millis(5), || {
        Path::new(&control).exists().then_some(())
    });
    assert!(
        serving.is_some(),
        "the fake peer did not bind its control socket"
    );

    shell.kill().unwrap(); // SIGKILL
    shell.wait().unwrap();
    let died =
        handoff::util::poll_until(WAIT, Duration::from_millis(5), || dead(peer).then_some(()))
            .is_some();
    if !died {
        let _ = kill(Pid::from_raw(peer), Signal::SIGKILL);
    }
    died
}

#[test]
fn a_fake_peer_dies_with_its_parent_when_asked() {
    assert!(
        run_under_a_shell_that_is_killed(true),
        "the fake peer outlived its SIGKILLed parent for {WAIT:?}"
    );
}

/// The exit code of a fake peer started with `FAKE_DIE_WITH_PARENT=value`
/// (and arguments that would fail later, if it got that far).
fn exit_code_with(value: &str) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_fake-peer"))
        .args([
            "--data-dir",
            "/nonexistent",
            "--control-socket",
            "/nonexistent/s",
        ])
        .env("FAKE_DIE_WITH_PARENT", value)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
}

#[test]
fn a_parent_that_is_not_the_one_named_ends_the_fake_peer_at_once() {
    assert_eq!(
        exit_code_with("1"),
        Some(fake_peers::peer::EXIT_PARENT_GONE)
    );
    assert_eq!(
        exit_code_with("not-a-pid"),
        Some(fake_peers::peer::EXIT_BAD_ENV)
    );
}
