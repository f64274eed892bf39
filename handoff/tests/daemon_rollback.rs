//! Rollback of a bad build, with real processes: the daemon serves the
//! `http_server` example, hands off to a build that dies (exit 1) as soon
//! as the daemon has committed it, and must start the previous binary
//! instead, with clients connecting throughout and none refused.
//!
//! The bad build is this test binary itself: a script execs it with
//! `BAD_BUILD` set, and its `bad_build` test then runs as the successor.

mod daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use daemon_support::{
    DEADLINE, Setup, http_get, notifications_until, served_by, trigger_line, wait_for,
};

/// Set (to the daemon's trigger socket) only in the bad build's process.
const BAD_BUILD: &str = "DAEMON_ROLLBACK_BAD_BUILD";

/// The bad build's body, run only when the daemon starts this binary as a
/// successor (`BAD_BUILD` set); a no-op in a normal test run. It completes
/// the handoff, waits until the daemon's `status` names it as the
/// incumbent (the commit is recorded), then exits 1.
#[test]
fn bad_build() {
    let Some(trigger) = std::env::var_os(BAD_BUILD) else {
        return;
    };
    let var = |name: &str| std::path::PathBuf::from(std::env::var_os(name).expect(name));
    let (control, data) = (var("BAD_BUILD_CONTROL"), var("BAD_BUILD_DATA"));
    let handoff::Role::Successor(successor) = handoff::detect_role().expect("role") else {
        std::process::exit(2); // only ever a successor
    };
    let mut handshook = successor
        .handshake(b"bad-build".to_vec())
        .expect("handshake");
    handshook
        .prepare_control_socket(&control)
        .expect("control socket");
    let mut begun = handshook.wait_for_begin().expect("begin");
    let _listener = begun.take_listener("http").expect("listener");
    let lock = begun.acquire_lock(&data).expect("flock");
    let ready = handoff::Readiness {
        healthz_ok: true,
        ..handoff::Readiness::default()
    };
    let _incumbent = begun
        .announce_and_bind(ready, &control, lock)
        .expect("ready");
    let me = u64::from(std::process::id());
    wait_for("the daemon to record the commit", DEADLINE, || {
        let reply = trigger_line(std::path::Path::new(&trigger), "status").ok()?;
        let status: serde_json::Value = serde_json::from_str(&reply).ok()?;
        (status["incumbent_pid"].as_u64() == Some(me)).then_some(())
    });
    std::process::exit(1);
}

#[test]
fn a_build_that_dies_after_its_commit_is_rolled_back_with_no_refused_connection() {
    let mut setup = Setup::http();
    setup.extra = "[restart]\ndelay_ms = 20\n[rollback]\nprobation_ms = 10000\n".into();
    let bad = setup.path("bad-build");
    let script = format!(
        "#!/bin/sh\nexec env {BAD_BUILD}={trigger} BAD_BUILD_CONTROL=\"$1\" BAD_BUILD_DATA=\"$2\" \
         {exe} --exact bad_build --nocapture --test-threads=1\n",
        trigger = setup.trigger_socket().display(),
        exe = std::env::current_exe().expect("test binary").display(),
    );
    std::fs::write(&bad, script).expect("write the bad build");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let notify =
        std::os::unix::net::UnixDatagram::bind(setup.path("notify.sock")).expect("notify socket");
    let child = setup
        .daemon_command()
        .env("NOTIFY_SOCKET", setup.path("notify.sock"))
        .spawn()
        .expect("spawn the daemon");
    let mut daemon = setup.adopt(child);
    let good = setup.binary.display().to_string();
    let addr = daemon.listener_addr("http");

    // One client after another for the whole test; every failure is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let (mut served, mut failed) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match http_get(&addr) {
                    Ok(body) => served.push(served_by(&body)),
                    Err(e) => failed.push(e),
                }
            }
            (served, failed)
        })
    };

    let reply = daemon
        .request(&format!("handoff {}", bad.display()))
        .expect("handoff trigger");
    assert!(
        reply.starts_with("committed"),
        "the bad build must commit first: {reply}\n{}",
        daemon.stderr_text()
    );
    let status = daemon.wait_status("the previous binary to serve after a rollback", |s| {
        s["state"] == "serving" && s["rolled_back"].is_object() && s["binary"] == good.as_str()
    });
    let rolled_back = &status["rolled_back"];
    assert_eq!(rolled_back["bad_binary"], bad.display().to_string());
    assert_eq!(rolled_back["binary"], good.as_str());
    let reason = rolled_back["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exited with code 1"), "{status}");
    assert_eq!(status["rollbacks"], 1, "{status}");
    assert!(status["previous_binary"].is_null(), "used once: {status}");
    let restored = status["incumbent_pid"].as_u64().expect("incumbent pid") as u32;
    wait_for("a client served by the restored build", DEADLINE, || {
        (http_get(&addr).ok().map(|b| served_by(&b)) == Some(restored)).then_some(())
    });

    stop.store(true, Ordering::Relaxed);
    let (served, failed) = clients.join().expect("client thread");
    eprintln!(
        "clients: {} served ({} by the restored build), {} failed",
        served.len(),
        served.iter().filter(|p| **p == restored).count(),
        failed.len()
    );
    assert!(failed.is_empty(), "refused or failed: {failed:?}");
    assert!(
        served.contains(&restored),
        "no client reached pid {restored}"
    );
    let rolling_back = format!("rolling back from {}", bad.display());
    notifications_until(&notify, "STATUS= naming the rollback", |m| {
        m.contains("STATUS=") && m.contains(&rolling_back)
    });
    // No loop: the restored build dying too is a plain restart of it. (A
    // SIGKILL drops the requests it had accepted: the clients stopped above.)
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(restored as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the restored incumbent");
    let status = daemon.wait_status("a plain restart of the restored build", |s| {
        s["state"] == "serving" && s["incumbent_pid"].as_u64() != Some(u64::from(restored))
    });
    assert_eq!(status["binary"], good.as_str(), "{status}");
    assert_eq!(status["rollbacks"], 1, "{status}");
    let restarted = status["incumbent_pid"].as_u64().expect("incumbent pid") as u32;
    wait_for("a client served by the restarted build", DEADLINE, || {
        (http_get(&addr).ok().map(|b| served_by(&b)) == Some(restarted)).then_some(())
    });

    let events = std::fs::read_to_string(setup.path("events.jsonl")).unwrap_or_default();
    assert!(
        events.contains("handoff.daemon.rolled_back"),
        "no rollback event in the log"
    );
    assert!(daemon.terminate().success());
}
