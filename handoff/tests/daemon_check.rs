//! `handoff-supervisor daemon --check` against a table of bad configs: each
//! one the daemon would fail on at start or at its first handoff is caught
//! (exit 3) with a message naming the key, the value and what is wrong; a
//! good config passes (exit 0). The daemon itself refuses to start on the
//! same configs.

mod daemon_support;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use daemon_support::{DEADLINE, example_binary, supervisor_binary, wait_exit};

/// One config: everything in `dir`, the pieces a case changes given.
struct Config<'a> {
    trigger_socket: &'a str,
    journal: &'a str,
    listeners: &'a str,
    binary: &'a str,
}

fn good(binary: &str) -> Config<'_> {
    Config {
        trigger_socket: "trigger.sock",
        journal: "handoff.journal",
        listeners: "http = \"127.0.0.1:0\"",
        binary,
    }
}

fn write(dir: &Path, c: &Config<'_>) -> std::path::PathBuf {
    let text = format!(
        "control_socket = \"control.sock\"\ntrigger_socket = \"{}\"\njournal = \"{}\"\n\
         [listeners]\n{}\n[service]\nbinary = \"{}\"\n",
        c.trigger_socket, c.journal, c.listeners, c.binary
    );
    let path = dir.join("daemon.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check(config: &Path, as_uid: Option<u32>) -> Output {
    let mut cmd = Command::new(supervisor_binary());
    cmd.arg("daemon").arg("--check").arg("--config").arg(config);
    if let Some(uid) = as_uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.output().expect("run daemon --check")
}

#[test]
fn check_catches_every_bad_config_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let http = example_binary("http_server");
    let http = http.to_str().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_line = format!("http = \"{}\"", busy.local_addr().unwrap());
    let busy_unix_path = dir.path().join("busy.sock");
    let _busy_unix = std::os::unix::net::UnixListener::bind(&busy_unix_path).unwrap();
    let busy_unix_line = format!("api = \"unix:{}\"", busy_unix_path.display());
    let file_unix_line = format!("api = \"{}\"", dir.path().join("plain-file").display());
    std::fs::write(dir.path().join("plain-file"), b"").unwrap();
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let not_executable = not_executable.to_str().unwrap().to_string();

    // (what, config, expected in stderr)
    let cases: Vec<(&str, Config<'_>, &[&str])> = vec![
        (
            "a port that is not a number",
            Config {
                listeners: "http = \"127.0.0.1:notaport\"",
                ..good(http)
            },
            &["listeners.http", "notaport", "not a port number"],
        ),
        (
            "an IPv4 address out of range",
            Config {
                listeners: "http = \"999.1.1.1:80\"",
                ..good(http)
            },
            &["listeners.http", "999.1.1.1", "not an IPv4 address"],
        ),
        (
            "no port",
            Config {
                listeners: "http = \"127.0.0.1\"",
                ..good(http)
            },
            &["listeners.http", "no port"],
        ),
        (
            "a port in use",
            Config {
                listeners: &busy_line,
                ..good(http)
            },
            &["listeners.http", "in use", "pick another port"],
        ),
        (
            "a Unix socket path another process listens on",
            Config {
                listeners: &busy_unix_line,
                ..good(http)
            },
            &["listeners.api", "busy.sock", "a process listens there"],
        ),
        (
            "a Unix socket path that is a plain file",
            Config {
                listeners: &file_unix_line,
                ..good(http)
            },
            &["listeners.api", "plain-file", "not a socket"],
        ),
        (
            "a relative Unix socket path",
            Config {
                listeners: "api = \"unix:api.sock\"",
                ..good(http)
            },
            &["listeners.api", "must be absolute"],
        ),
        (
            "the same address twice",
            Config {
                listeners: "a = \"127.0.0.1:7301\"\nb = \"127.0.0.1:7301\"",
                ..good(http)
            },
            &["listeners.b", "same address as listeners.a"],
        ),
        (
            "a trigger socket in a missing directory",
            Config {
                trigger_socket: "missing/trigger.sock",
                ..good(http)
            },
            &["trigger_socket", "missing", "create it first"],
        ),
        (
            "a missing service binary",
            good("/nonexistent/svc"),
            &["service.binary", "/nonexistent/svc", "No such file"],
        ),
        (
            "a service binary that is not executable",
            good(&not_executable),
            &["service.binary", "not-executable", "not executable"],
        ),
        (
            "a journal whose directory is a file",
            Config {
                journal: "plain-file/handoff.journal",
                ..good(http)
            },
            &["journal", "plain-file", "not a directory"],
        ),
        (
            "a journal under /proc",
            Config {
                journal: "/proc/handoff.journal",
                ..good(http)
            },
            &["journal", "/proc", "kernel file system"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, config, expected) in &cases {
        let path = write(dir.path(), config);
        let out = check(&path, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{what}:\n  {}", stderr.trim_end().replace('\n', "\n  "));
        if out.status.code() != Some(3) {
            failures.push(format!(
                "{what}: exit {:?}, want 3; stderr {stderr}",
                out.status
            ));
        }
        for e in *expected {
            if !stderr.contains(e) {
                failures.push(format!("{what}: stderr lacks {e:?}: {stderr}"));
            }
        }
    }

    // Read-only for the daemon's user (root writes anywhere: check as
    // another uid, which can read the config and run the binary).
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let path = write(
        dir.path(),
        &Config {
            journal: "read-only/handoff.journal",
            binary: "/bin/true",
            ..good(http)
        },
    );
    let out = check(&path, Some(65534));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "a read-only journal directory (as uid 65534):\n  {}",
        stderr.trim_end()
    );
    if out.status.code() != Some(3)
        || !stderr.contains("read-only")
        || !stderr.contains("cannot write")
    {
        failures.push(format!(
            "read-only journal directory: {:?} {stderr}",
            out.status
        ));
    }

    // A good config passes.
    let out = check(&write(dir.path(), &good(http)), None);
    if !out.status.success() {
        failures.push(format!(
            "good config: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_daemon_refuses_to_start_on_what_check_catches() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &good("/nonexistent/svc"));
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = Command::new(supervisor_binary())
        .arg("daemon")
        .arg("--config")
        .arg(&path)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let exit = wait_exit(&mut child, "the daemon to refuse to start", DEADLINE);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(exit.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("service.binary") && stderr.contains("/nonexistent/svc"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("trigger.sock").exists(),
        "nothing was bound"
    );
}

#[test]
fn a_trigger_that_times_out_after_sending_does_not_ask_whether_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trigger.sock");
    // Takes the request and never answers, as a daemon in a long handoff.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = Command::new(supervisor_binary())
        .args(["trigger", "--timeout-ms", "100", "--socket"])
        .arg(&socket)
        .arg("handoff")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no reply within --timeout-ms 100"),
        "{stderr}"
    );
    assert!(stderr.contains("status"), "{stderr}");
    assert!(!stderr.contains("is the daemon running"), "{stderr}");
}
