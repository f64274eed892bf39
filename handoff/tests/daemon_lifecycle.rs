//! `handoff-supervisor daemon` with real processes: start-up, systemd
//! notifications, the trigger socket, restarts, adoption, journal recovery,
//! inherited listeners and shutdown. The service is `examples/http_server`.
//!
//! Reproduce one: `cargo test -p handoff --test daemon_lifecycle <name>`.

mod daemon_support;

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Instant;

use daemon_support::{DEADLINE, Setup, alive, http_get, notifications_until, served_by, wait_exit};

fn incumbent_pid(status: &serde_json::Value) -> u32 {
    status["incumbent_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no incumbent in {status}")) as u32
}

#[test]
fn under_type_notify_it_reports_ready_mainpid_status_and_stopping() {
    let setup = Setup::http();
    let notify_path = setup.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let child = setup
        .daemon_command()
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .unwrap();
    let daemon_pid = child.id();
    let mut daemon = setup.adopt(child);
    let mainpid = format!("MAINPID={daemon_pid}");

    let ready = notifications_until(&notify, "READY=1", |m| m.contains("READY=1"));
    let last = ready.last().unwrap();
    assert!(last.lines().any(|l| l == mainpid), "{last:?}");
    assert!(last.contains("STATUS=serving: incumbent pid"), "{last:?}");

    assert!(daemon.request("handoff").unwrap().starts_with("committed "));
    let after = notifications_until(&notify, "a status after the handoff", |m| {
        m.contains("handoffs 1 committed")
    });
    // The daemon stays the main process across handoffs: every datagram
    // names it, never the service.
    for m in ready.iter().chain(&after) {
        assert!(m.lines().any(|l| l == mainpid), "{m:?} lacks {mainpid}");
    }
    assert!(daemon.status().unwrap()["notify_socket"] == true);

    let incumbent = incumbent_pid(&daemon.status().unwrap());
    assert!(daemon.terminate().success());
    notifications_until(&notify, "STOPPING=1", |m| m.contains("STOPPING=1"));
    assert!(!alive(incumbent), "the incumbent outlived the stop");
    assert!(
        !setup.trigger_socket().exists(),
        "trigger socket left behind"
    );
}

#[test]
fn the_trigger_socket_is_private_and_answers_status_and_errors() {
    let setup = Setup::http();
    let daemon = setup.start();
    let mode = std::fs::metadata(setup.trigger_socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "trigger socket mode {mode:o}");

    let status = daemon.status().unwrap();
    assert_eq!(status["state"], "serving");
    assert_eq!(status["daemon_pid"], daemon.pid());
    assert_eq!(status["listeners"][0]["name"], "http");
    assert_eq!(status["listeners_inherited"], false);
    assert_eq!(status["incumbent_adopted"], false);

    let reply = daemon.request("reload everything").unwrap();
    assert!(reply.starts_with("error: unknown request"), "{reply}");
    // A handoff to a binary that does not exist is refused before anything
    // starts (no handoff is counted); the incumbent serves on.
    let before = incumbent_pid(&status);
    let reply = daemon.request("handoff /nonexistent/successor").unwrap();
    assert!(
        reply.starts_with("error: cannot hand off to /nonexistent/successor: "),
        "{reply}"
    );
    let status = daemon.status().unwrap();
    assert_eq!(incumbent_pid(&status), before);
    assert_eq!(status["handoffs"]["failed"], 0, "{status}");
    assert_eq!(status["last_handoff"], serde_json::Value::Null, "{status}");
    let body = http_get(&daemon.listener_addr("http")).expect("still serving");
    assert_eq!(served_by(&body), before);
    // An executable file the kernel cannot run fails at the spawn; the
    // error names it.
    let garbage = setup.path("not-a-program");
    std::fs::write(&garbage, b"\x01\x02 not a program\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reply = daemon
        .request(&format!("handoff {}", garbage.display()))
        .unwrap();
    assert!(
        reply.starts_with(&format!("error: handoff to {}: ", garbage.display())),
        "{reply}"
    );
    assert_eq!(incumbent_pid(&daemon.status().unwrap()), before);

    // The client subcommand maps the reply to its exit code.
    let out = std::process::Command::new(daemon_support::supervisor_binary())
        .arg("trigger")
        .arg("--socket")
        .arg(setup.trigger_socket())
        .args(["handoff", "/nonexistent/successor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // Another uid is refused by its peer credentials, even when the file
    // mode would let it connect (needs root to act as another user).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(setup.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            setup.trigger_socket(),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let out = std::process::Command::new(daemon_support::supervisor_binary())
            .arg("trigger")
            .arg("--socket")
            .arg(setup.trigger_socket())
            .arg("status")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(stderr.contains("serves its own uid only"), "{stderr}");
        assert!(setup.stderr().contains("handoff.daemon.trigger_refused"));
        std::fs::set_permissions(
            setup.trigger_socket(),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    } else {
        eprintln!("NOTE: not root; the other-uid refusal (SO_PEERCRED) is not exercised");
    }

    // A second daemon on the same trigger socket is refused at start-up.
    let out = setup
        .daemon_command()
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_handoff_to_another_binary_makes_it_the_service_binary() {
    let mut setup = Setup::http();
    let original = setup.binary.clone();
    // The same program under another path stands for "the new release".
    let release = setup.path("http_server-v2");
    std::fs::copy(&original, &release).unwrap();
    setup.binary = original;
    let daemon = setup.start();
    let reply = daemon
        .request(&format!("handoff {}", release.display()))
        .unwrap();
    assert!(reply.starts_with("committed "), "{reply}");
    let status = daemon.status().unwrap();
    assert_eq!(status["binary"], release.display().to_string());
    let exe = std::fs::read_link(format!("/proc/{}/exe", incumbent_pid(&status))).unwrap();
    assert_eq!(exe, release);
}

#[test]
fn a_killed_incumbent_is_restarted_on_the_same_listener() {
    let setup = Setup::http();
    let mut daemon = setup.start();
    let addr = daemon.listener_addr("http");
    let first = incumbent_pid(&daemon.status().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = daemon.wait_status("a restarted incumbent", |s| {
        s["state"] == "serving"
            && s["incumbent_pid"]
                .as_u64()
                .is_some_and(|p| p as u32 != first)
    });
    assert_eq!(status["restarts"], 1, "{status}");
    let second = incumbent_pid(&status);
    assert_eq!(
        daemon.listener_addr("http"),
        addr,
        "the listener is the same socket"
    );
    assert_eq!(served_by(&http_get(&addr).unwrap()), second);
    // And it can be handed off as usual.
    assert!(daemon.request("handoff").unwrap().starts_with("committed "));
}

#[test]
fn a_service_that_cannot_start_hits_the_restart_limit_and_the_daemon_exits_1() {
    let mut setup = Setup::http();
    setup.binary = "/bin/false".into();
    setup.extra = "[restart]\ndelay_ms = 5\nburst = 2\ninterval_ms = 60000\n".into();
    let mut child = setup.daemon_command().spawn().unwrap();
    let exit = wait_exit(&mut child, "the daemon to give up", DEADLINE);
    let stderr = setup.stderr();
    assert_eq!(exit.code(), Some(1), "{exit}\n{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
    assert_eq!(
        stderr.matches("cold start failed").count(),
        3,
        "the first start and two restarts:\n{stderr}"
    );
}

#[test]
fn after_a_daemon_crash_the_journal_is_recovered_and_the_incumbent_adopted() {
    let setup = Setup::http();
    let mut first = setup.start();
    let orphan = incumbent_pid(&first.status().unwrap());
    let addr = first.listener_addr("http");
    // The first daemon dies without stopping its service.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(&mut first.child, "the first daemon to die", DEADLINE);
    assert!(alive(orphan));
    // As if it died mid-handoff, with its journal torn by the crash.
    std::fs::write(setup.path("handoff.journal"), b"{ torn").unwrap();

    let mut second = setup.start();
    assert!(
        !setup.path("handoff.journal").exists(),
        "journal not cleared"
    );
    assert!(
        setup.stderr().contains("handoff.recover"),
        "{}",
        setup.stderr()
    );
    let status = second.status().unwrap();
    assert_eq!(incumbent_pid(&status), orphan, "{status}");
    assert_eq!(status["incumbent_adopted"], true, "{status}");
    // The config's port 0 would bind a new port: the incumbent's own socket
    // is adopted instead.
    assert_eq!(status["listeners_adopted"], true, "{status}");
    assert_eq!(second.listener_addr("http"), addr);
    let reply = second.request("handoff").unwrap();
    assert!(reply.starts_with("committed "), "{reply}");
    let status = second.status().unwrap();
    assert_eq!(status["incumbent_adopted"], false, "{status}");
    let successor = incumbent_pid(&status);
    assert_ne!(successor, orphan);
    assert_eq!(served_by(&http_get(&addr).unwrap()), successor);
    assert!(second.terminate().success());
    assert!(!alive(successor));
    drop(first); // kills the first daemon's process group: nothing is left
}

#[test]
fn inherited_listeners_are_served_and_their_names_checked() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // As systemd would: the listener at FD 3, LISTEN_FDNAMES=<name>.
    let spawn = |setup: &Setup, name: &str| {
        let mut cmd = setup.daemon_command();
        let fds = [(name.to_string(), listener.as_raw_fd())];
        handoff::fd::pass_listener_fds_on_spawn(&mut cmd, &fds, None);
        cmd.spawn().unwrap()
    };

    // The config names `http`; so does LISTEN_FDNAMES.
    let mut setup = Setup::http();
    let mut daemon = setup.adopt(spawn(&setup, "http"));
    let status = daemon.status().unwrap();
    assert_eq!(status["listeners_inherited"], true, "{status}");
    assert_eq!(daemon.listener_addr("http"), addr);
    let served = served_by(&http_get(&addr).unwrap());
    assert_eq!(served, incumbent_pid(&status));
    assert!(daemon.terminate().success());

    // Without [listeners] any inherited name is taken as it is.
    setup.listeners = String::new();
    let mut daemon = setup.adopt(spawn(&setup, "http"));
    assert_eq!(daemon.listener_addr("http"), addr);
    assert!(daemon.terminate().success());

    // A config that names other listeners than systemd passed is an error.
    setup.listeners = "web = \"127.0.0.1:0\"\n".into();
    let mut child = spawn(&setup, "http");
    let exit = wait_exit(&mut child, "the daemon to refuse the names", DEADLINE);
    assert_eq!(exit.code(), Some(3));
}

#[test]
fn sigterm_during_a_handoff_lets_it_finish_then_stops_the_service() {
    use std::io::{Read, Write};
    let setup = Setup::http();
    let mut daemon = setup.start();
    let addr = daemon.listener_addr("http");
    let old = incumbent_pid(&daemon.status().unwrap());
    // A request the incumbent has accepted but not read in full: its drain
    // waits for it. (The accept queue is FIFO: once a later request is
    // answered, this one was accepted.)
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n").unwrap();
    assert_eq!(served_by(&http_get(&addr).unwrap()), old);

    let socket = setup.trigger_socket();
    let handoff = std::thread::spawn(move || {
        daemon_support::trigger_line(&socket, "handoff").expect("handoff reply")
    });
    daemon.wait_status("the handoff to start draining", |s| {
        s["state"] == "handing-off"
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Shutdown has begun: no new triggers, but the handoff is still running.
    daemon_support::wait_for("the trigger socket to be removed", DEADLINE, || {
        (!setup.trigger_socket().exists()).then_some(())
    });
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "exited mid-handoff"
    );

    // The held request completes, served by the draining incumbent.
    slow.write_all(b"\r\n").unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with(&format!("pid={old}\n")), "{response}");

    let reply = handoff.join().unwrap();
    assert!(
        reply.starts_with("committed "),
        "{reply}\n{}",
        setup.stderr()
    );
    let new: u32 = reply.rsplit_once("pid=").unwrap().1.parse().unwrap();
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit}\n{}", setup.stderr());
    assert!(
        !alive(old) && !alive(new),
        "the service outlived the daemon"
    );
}

#[test]
fn an_adopted_incumbent_that_dies_is_noticed_at_once_and_never_reported_serving() {
    let setup = Setup::http();
    let mut first = setup.start();
    let orphan = incumbent_pid(&first.status().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(&mut first.child, "the first daemon to die", DEADLINE);
    let mut second = setup.start();
    assert_eq!(incumbent_pid(&second.status().unwrap()), orphan);

    let watched = handoff::fd::PidFd::open(orphan).unwrap();
    watched
        .send_signal(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    assert!(
        watched.wait_exited(Some(DEADLINE)).unwrap(),
        "the orphan to die"
    );
    let died = Instant::now();
    // The daemon notices by itself, through the pidfd, not at a poll (no
    // status request in between: answering one reaps first).
    let noticed = daemon_support::wait_for("the exit in the daemon's log", DEADLINE, || {
        setup
            .stderr()
            .contains("gone (adopted: exit status unknown)")
            .then(Instant::now)
    });
    eprintln!("noticed {:?} after the exit", noticed - died);
    assert!(noticed - died < std::time::Duration::from_millis(300));
    let status = second.status().unwrap();
    assert!(
        !(status["state"] == "serving" && status["incumbent_pid"] == orphan),
        "{status}"
    );
    second.wait_status("a restarted incumbent", |s| {
        s["state"] == "serving" && s["incumbent_pid"].as_u64() != Some(u64::from(orphan))
    });
    drop(first);
}

#[test]
fn a_successor_with_a_bad_setting_fails_before_ready_and_the_incumbent_serves_on() {
    let setup = Setup::http();
    let mut daemon = setup.start();
    let before = daemon.status().unwrap();
    let incumbent = incumbent_pid(&before);
    // The same service, with a setting it can only reject.
    let wrapper = setup.path("bad-heartbeat.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nHANDOFF_HEARTBEAT_MS=soon exec {} \"$@\"\n",
            setup.binary.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reply = daemon
        .request(&format!("handoff {}", wrapper.display()))
        .unwrap();
    assert!(!reply.starts_with("committed"), "{reply}");
    let status = daemon.status().unwrap();
    assert_eq!(incumbent_pid(&status), incumbent, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    assert!(served_by(&http_get(&daemon.listener_addr("http")).unwrap()) == incumbent);
    assert!(daemon.terminate().success());
}
