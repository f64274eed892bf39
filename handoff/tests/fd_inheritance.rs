//! FD inheritance with real processes: what a spawned child really has open,
//! and what its environment really says.
//!
//! The children are this test binary itself, re-executed in a helper mode
//! selected by `HANDOFF_FD_TEST_HELPER` (see [`helper_process_entry_point`]):
//! `report` writes what the child inherited into a file; `overlap` is a
//! throw-away parent that places FDs at fixed low numbers, which a test
//! thread cannot do safely in a process where other tests run concurrently.
//!
//! Reproduce one test: `cargo test -p handoff --test fd_inheritance <name>`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use handoff::fd::{open_fds, pass_listener_fds_on_spawn, spawn_with_listeners, take_handoff_env};

const HELPER_ENV: &str = "HANDOFF_FD_TEST_HELPER";
const REPORT_ENV: &str = "HANDOFF_FD_TEST_REPORT";
const TAKE_ENV: &str = "HANDOFF_FD_TEST_TAKE";
const HELPER_TEST: &str = "helper_process_entry_point";
const CHILD_DEADLINE: Duration = Duration::from_secs(30);

/// Not a test: the entry point of the helper processes. Without
/// `HANDOFF_FD_TEST_HELPER` it does nothing.
#[test]
fn helper_process_entry_point() {
    match std::env::var(HELPER_ENV).as_deref() {
        Ok("report") => report_inheritance(),
        Ok("overlap") => overlap_parent(),
        Ok(other) => panic!("unknown helper mode {other:?}"),
        Err(_) => {}
    }
}

/// A command that re-executes this test binary in helper `mode`.
fn helper_command(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        "--exact",
        HELPER_TEST,
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(HELPER_ENV, mode)
    // Keep libtest's own chatter out of the test output; panics still
    // reach stderr.
    .stdout(Stdio::null());
    cmd
}

/// Wait for `child`, failing the test (and killing the child) past `limit`.
fn wait_with_deadline(mut child: Child, limit: Duration) -> ExitStatus {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("child {pid} still running after {limit:?}");
        }
    }
}

fn identity(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

fn read_report(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).expect("the child wrote no report");
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn join(fds: &[RawFd]) -> String {
    fds.iter()
        .map(RawFd::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Helper mode `report`: record, before opening anything, which FDs are open
/// and what the environment says; optionally take the handoff environment
/// and use what it yields.
fn report_inheritance() {
    let fds = open_fds();
    let identities: Vec<(RawFd, String)> = fds.iter().map(|fd| (*fd, identity(*fd))).collect();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "<unset>".to_owned());
    let mut report = String::new();
    report.push_str(&format!("pid={}\n", std::process::id()));
    report.push_str(&format!("fds={}\n", join(&fds)));
    for (fd, id) in &identities {
        report.push_str(&format!("fd{fd}={id}\n"));
    }
    for name in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "HANDOFF_ROLE",
        "HANDOFF_SOCK_FD",
        "HANDOFF_FD_TEST_MARK",
    ] {
        report.push_str(&format!("{name}={}\n", var(name)));
    }
    if std::env::var(TAKE_ENV).is_ok() {
        let threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .map(|n| n.trim().to_string())
            })
            .unwrap_or_default();
        report.push_str(&format!("threads_at_take={threads}\n"));
        let (listeners, control) = take_handoff_env().expect("take_handoff_env");
        let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
        report.push_str(&format!("taken={}\n", names.join(":")));
        report.push_str(&format!("after_take_LISTEN_FDS={}\n", var("LISTEN_FDS")));
        report.push_str(&format!(
            "after_take_HANDOFF_ROLE={}\n",
            var("HANDOFF_ROLE")
        ));
        let cloexec: Vec<String> = listeners
            .iter()
            .map(|(_, fd)| fd)
            .chain(control.as_ref())
            .map(|fd| {
                let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)
                    .expect("F_GETFD");
                (flags & libc::FD_CLOEXEC != 0).to_string()
            })
            .collect();
        report.push_str(&format!("cloexec={}\n", cloexec.join(",")));
        // Prove the FDs are the live objects the parent meant.
        let http = listeners
            .into_iter()
            .find(|(name, _)| name == "http")
            .map(|(_, fd)| TcpListener::from(fd))
            .expect("an http listener");
        let (mut conn, _) = http.accept().expect("accept");
        conn.write_all(b"accepted-by-child")
            .expect("write to client");
        let mut control = UnixStream::from(control.expect("a control socket"));
        control
            .write_all(b"hello-supervisor")
            .expect("write to supervisor");
    }
    let path = std::env::var(REPORT_ENV).expect("HANDOFF_FD_TEST_REPORT");
    std::fs::write(path, report).expect("write report");
}

#[test]
fn child_receives_listeners_with_sd_listen_fds_variables_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report");
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut supervisor_end, successor_end) = UnixStream::pair().unwrap();
    // Queued in the backlog before the child exists: the child accepts it.
    let mut client = TcpStream::connect(http.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(CHILD_DEADLINE)).unwrap();
    supervisor_end
        .set_read_timeout(Some(CHILD_DEADLINE))
        .unwrap();

    let sources = [
        ("http".to_owned(), http.as_raw_fd()),
        ("admin".to_owned(), admin.as_raw_fd()),
    ];
    let expected_identities = [
        identity(http.as_raw_fd()),
        identity(admin.as_raw_fd()),
        identity(successor_end.as_raw_fd()),
    ];
    let mut cmd = helper_command("report");
    cmd.env(REPORT_ENV, &report_path)
        .env(TAKE_ENV, "1")
        .env("HANDOFF_ROLE", "successor")
        .env("HANDOFF_SOCK_FD", "5")
        .env("HANDOFF_FD_TEST_MARK", "from-cmd")
        // Stale values set by mistake are replaced, not passed on.
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "9");
    pass_listener_fds_on_spawn(&mut cmd, &sources, Some(successor_end.as_raw_fd()));
    let child = cmd.spawn().expect("spawn");
    let child_pid = child.id();
    drop(successor_end);
    assert!(wait_with_deadline(child, CHILD_DEADLINE).success());

    let report = read_report(&report_path);
    let get = |key: &str| report.get(key).map(String::as_str).unwrap_or("<missing>");
    assert_eq!(get("pid"), child_pid.to_string());
    assert_eq!(get("LISTEN_PID"), child_pid.to_string());
    assert_eq!(get("LISTEN_FDS"), "2");
    assert_eq!(get("LISTEN_FDNAMES"), "http:admin");
    assert_eq!(get("HANDOFF_ROLE"), "successor");
    assert_eq!(get("HANDOFF_SOCK_FD"), "5");
    assert_eq!(get("HANDOFF_FD_TEST_MARK"), "from-cmd");
    assert_eq!(get("fds"), "0,1,2,3,4,5", "report: {report:#?}");
    for (offset, expected) in expected_identities.iter().enumerate() {
        assert_eq!(
            get(&format!("fd{}", 3 + offset)),
            expected,
            "FD {}",
            3 + offset
        );
    }
    assert_eq!(get("taken"), "http:admin");
    // Cleared only when that is sound: in a process with one thread. (The
    // helper runs inside libtest, which may have started others.)
    let (fds, role) = match get("threads_at_take") {
        "1" => ("<unset>", "<unset>"),
        _ => ("2", "successor"),
    };
    assert_eq!(get("after_take_LISTEN_FDS"), fds, "report: {report:#?}");
    assert_eq!(get("after_take_HANDOFF_ROLE"), role, "report: {report:#?}");
    assert_eq!(get("cloexec"), "true,true,true");

    let mut from_child = String::new();
    client.read_to_string(&mut from_child).unwrap();
    assert_eq!(from_child, "accepted-by-child");
    let mut from_successor = String::new();
    supervisor_end.read_to_string(&mut from_successor).unwrap();
    assert_eq!(from_successor, "hello-supervisor");
}

#[test]
fn without_listeners_the_extra_fd_lands_at_3_and_no_listen_variables_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report");
    let (_supervisor_end, successor_end) = UnixStream::pair().unwrap();
    let mut cmd = helper_command("report");
    cmd.env(REPORT_ENV, &report_path);
    pass_listener_fds_on_spawn(&mut cmd, &[], Some(successor_end.as_raw_fd()));
    let child = cmd.spawn().expect("spawn");
    assert!(wait_with_deadline(child, CHILD_DEADLINE).success());
    let report = read_report(&report_path);
    assert_eq!(report["fds"], "0,1,2,3", "report: {report:#?}");
    assert_eq!(report["fd3"], identity(successor_end.as_raw_fd()));
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "HANDOFF_ROLE"] {
        assert_eq!(report[name], "<unset>", "{name}");
    }
}

#[test]
fn nothing_at_all_passes_when_there_is_nothing_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report");
    let mut cmd = helper_command("report");
    cmd.env(REPORT_ENV, &report_path);
    pass_listener_fds_on_spawn(&mut cmd, &[], None);
    assert!(wait_with_deadline(cmd.spawn().unwrap(), CHILD_DEADLINE).success());
    assert_eq!(read_report(&report_path)["fds"], "0,1,2");
}

/// Helper mode `overlap`: in a process of its own, put the sources at the
/// very numbers that are other sources' targets, leak non-close-on-exec FDs
/// just above the targets and far above, then check what a child receives.
fn overlap_parent() {
    let listener_a = TcpListener::bind("127.0.0.1:0").unwrap();
    let listener_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (peer, extra) = UnixStream::pair().unwrap();
    let leak = std::fs::File::open("/dev/null").unwrap();
    // Park everything far away, so fixed low numbers can be assigned freely.
    let park = |fd: RawFd| -> OwnedFd {
        let parked = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(200)).unwrap();
        // SAFETY: fcntl just created this descriptor; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(parked) }
    };
    let parked = [
        park(listener_a.as_raw_fd()),
        park(listener_b.as_raw_fd()),
        park(extra.as_raw_fd()),
        park(leak.as_raw_fd()),
        park(peer.as_raw_fd()),
    ];
    let ids: Vec<String> = parked[..3]
        .iter()
        .map(|fd| identity(fd.as_raw_fd()))
        .collect();
    // Every FD this process owns now lives at 200 and above.
    drop((listener_a, listener_b, extra, leak, peer));

    // (a's source, b's source, extra's source); targets are 3, 4, 5.
    let layouts: [(&str, [RawFd; 3]); 4] = [
        ("rotation", [4, 5, 3]),
        ("reversed", [5, 4, 3]),
        ("identity-and-swap", [3, 5, 4]),
        ("far-away", [150, 151, 152]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, sources) in layouts {
        for (parked_fd, source) in parked.iter().zip(sources) {
            nix::unistd::dup2(parked_fd.as_raw_fd(), source).unwrap();
        }
        // Non-close-on-exec leaks (dup2 clears the flag): right after the
        // targets, and far above them.
        let leaks = [6, 77, 1000];
        for fd in leaks {
            nix::unistd::dup2(parked[3].as_raw_fd(), fd).unwrap();
        }
        let report_path = dir.path().join(name);
        let mut cmd = helper_command("report");
        cmd.env(REPORT_ENV, &report_path);
        let listeners = [("a".to_owned(), sources[0]), ("b".to_owned(), sources[1])];
        pass_listener_fds_on_spawn(&mut cmd, &listeners, Some(sources[2]));
        let child = cmd.spawn().expect("spawn");
        let child_pid = child.id();
        assert!(
            wait_with_deadline(child, CHILD_DEADLINE).success(),
            "{name}"
        );
        let report = read_report(&report_path);
        assert_eq!(report["fds"], "0,1,2,3,4,5", "{name}: {report:#?}");
        for (offset, id) in ids.iter().enumerate() {
            assert_eq!(
                &report[&format!("fd{}", 3 + offset)],
                id,
                "{name}: FD {}",
                3 + offset
            );
        }
        assert_eq!(report["LISTEN_PID"], child_pid.to_string(), "{name}");
        assert_eq!(report["LISTEN_FDNAMES"], "a:b", "{name}");
        for fd in sources.into_iter().chain(leaks) {
            nix::unistd::close(fd).unwrap();
        }
    }
}

#[test]
fn overlapping_fd_numbers_land_correctly_and_leaked_fds_stay_behind() {
    let mut cmd = helper_command("overlap");
    // The overlap parent's own children inherit stderr, so a mismatch shows.
    cmd.stdin(Stdio::null());
    let status = wait_with_deadline(cmd.spawn().unwrap(), CHILD_DEADLINE * 4);
    assert!(
        status.success(),
        "the overlap helper failed ({status}); its panic message is above. Reproduce: \
         HANDOFF_FD_TEST_HELPER=overlap {} --exact {HELPER_TEST} --nocapture",
        std::env::current_exe().unwrap().display()
    );
}

#[test]
fn program_is_found_on_path_and_listen_pid_names_the_exec_ed_process() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = Command::new("env");
    cmd.stdout(Stdio::piped());
    pass_listener_fds_on_spawn(&mut cmd, &[("web".to_owned(), listener.as_raw_fd())], None);
    let mut child = cmd.spawn().expect("env from PATH");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx
        .recv_timeout(CHILD_DEADLINE)
        .expect("env printed nothing in time");
    assert!(wait_with_deadline(child, CHILD_DEADLINE).success());
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&format!("LISTEN_PID={pid}").as_str()),
        "{text}"
    );
    assert!(lines.contains(&"LISTEN_FDS=1"), "{text}");
    assert!(lines.contains(&"LISTEN_FDNAMES=web"), "{text}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("LISTEN_PID="))
            .count(),
        1
    );
}

#[test]
fn spawn_with_listeners_passes_args_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let script = format!(
        "echo \"$1 $LISTEN_FDS $LISTEN_FDNAMES $HANDOFF_FD_TEST_MARK\" > {}",
        out.display()
    );
    let child = spawn_with_listeners(
        Path::new("/bin/sh"),
        &[
            "-c".to_owned(),
            script,
            "sh".to_owned(),
            "first-arg".to_owned(),
        ],
        &[("HANDOFF_FD_TEST_MARK".to_owned(), "marked".to_owned())],
        &[("main".to_owned(), listener.as_raw_fd())],
        None,
    )
    .expect("spawn /bin/sh");
    assert!(wait_with_deadline(child, CHILD_DEADLINE).success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "first-arg 1 main marked\n"
    );
}

#[test]
fn exec_failure_is_reported_by_spawn() {
    let err = spawn_with_listeners(
        &PathBuf::from("/nonexistent/handoff-binary"),
        &[],
        &[],
        &[],
        None,
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");

    let mut cmd = Command::new("handoff-no-such-program-on-path");
    pass_listener_fds_on_spawn(&mut cmd, &[], None);
    assert_eq!(
        cmd.spawn().unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );

    // A directory is not executable: EACCES, as execvp reports it.
    let mut cmd = Command::new("/");
    pass_listener_fds_on_spawn(&mut cmd, &[], None);
    assert_eq!(
        cmd.spawn().unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
}

#[test]
fn a_source_fd_that_is_not_open_fails_the_spawn() {
    // FD numbers this high are not in use in the test process.
    let mut cmd = Command::new("/bin/true");
    pass_listener_fds_on_spawn(&mut cmd, &[("ghost".to_owned(), 999_999)], None);
    let err = cmd.spawn().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
}

#[test]
fn invalid_listener_names_fail_the_spawn() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = [("a:b".to_owned(), listener.as_raw_fd())];
    let mut cmd = Command::new("/bin/true");
    pass_listener_fds_on_spawn(&mut cmd, &bad, None);
    assert_eq!(cmd.spawn().unwrap_err().raw_os_error(), Some(libc::EINVAL));

    let err = spawn_with_listeners(Path::new("/bin/true"), &[], &[], &bad, None).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("LISTEN_FDNAMES"), "{err}");
}
