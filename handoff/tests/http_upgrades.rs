//! The embedding examples under the daemon, each upgraded 20 times while
//! keep-alive and one-shot HTTP clients send requests back to back: not one
//! request may fail, and every acknowledged write must be in the final
//! state.
//!
//! Real processes throughout: `handoff-supervisor daemon` holds the listener
//! and runs the example (`http_server.rs` on std, `http_server_tokio.rs` on
//! tokio and hyper); the upgrades go through the trigger socket with the real
//! `handoff-supervisor trigger handoff` client. The clients (`http_load`)
//! speak HTTP/1.1 over `TcpStream`; `POST /counter` is the write. A failed
//! request is a refused connection, a reset or end of stream after part of
//! a response, a timeout, a non-200 answer or a short body; a keep-alive
//! client resends only what the drain contract says is safe (no byte of
//! response on a reused connection), and one-shot clients never resend.
//!
//! Reproduce: `cargo test -p handoff --test http_upgrades -- --nocapture`.

mod daemon_support;
mod http_load;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use daemon_support::{
    DEADLINE, Setup, alive, example_binary, example_binary_with_features, supervisor_binary,
    wait_for,
};
use http_load::Load;

const UPGRADES: usize = 20;
const KEEP_ALIVE_CLIENTS: usize = 2;
const ONE_SHOT_CLIENTS: usize = 2;
/// Requests that must complete between two upgrades, so every upgrade
/// happens under load and every incumbent is seen serving.
const REQUESTS_BETWEEN_UPGRADES: u64 = 10;

/// The two examples take turns: on a 2-core machine, both at once would
/// measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn std_example_upgraded_twenty_times_under_keep_alive_and_one_shot_clients_fails_no_request() {
    upgrades_under_load("http_server", Setup::example(example_binary("http_server")));
}

#[test]
fn tokio_example_upgraded_twenty_times_under_keep_alive_and_one_shot_clients_fails_no_request() {
    let binary = example_binary_with_features("http_server_tokio", &["tokio"]);
    upgrades_under_load("http_server_tokio", Setup::example(binary));
}

fn upgrades_under_load(example: &str, setup: Setup) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut daemon = setup.start();
    let addr = daemon.listener_addr("http");
    let load = Arc::new(Load::default());
    let started = Instant::now();
    let clients: Vec<_> = (0..KEEP_ALIVE_CLIENTS + ONE_SHOT_CLIENTS)
        .map(|i| {
            let (load, addr) = (Arc::clone(&load), addr.clone());
            std::thread::spawn(move || {
                if i < KEEP_ALIVE_CLIENTS {
                    load.keep_alive_client(&addr)
                } else {
                    load.one_shot_client(&addr)
                }
            })
        })
        .collect();
    let wait_for_more_requests = |what: &str| {
        let target = load.ok.load(Ordering::SeqCst) + REQUESTS_BETWEEN_UPGRADES;
        wait_for(what, DEADLINE, || {
            (load.ok.load(Ordering::SeqCst) >= target).then_some(())
        });
    };
    wait_for_more_requests("the first requests to be served");

    let mut incumbents = vec![daemon.status().unwrap()["incumbent_pid"].as_u64().unwrap() as u32];
    let mut handoff_ms = Vec::with_capacity(UPGRADES);
    for i in 0..UPGRADES {
        let t = Instant::now();
        let out = std::process::Command::new(supervisor_binary())
            .args(["trigger", "--socket"])
            .arg(&daemon.trigger_socket)
            .arg("handoff")
            .output()
            .expect("run the trigger client");
        handoff_ms.push(t.elapsed().as_millis());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("committed "),
            "{example} upgrade {i}: {} {stdout} {}\ndaemon stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            daemon.stderr_text()
        );
        let pid: u32 = stdout
            .trim()
            .rsplit_once("pid=")
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {stdout:?}"));
        assert!(!incumbents.contains(&pid), "upgrade {i} reused pid {pid}");
        incumbents.push(pid);
        wait_for_more_requests(&format!("requests after upgrade {i}"));
    }

    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let elapsed = started.elapsed();
    let ok = load.ok.load(Ordering::SeqCst);
    let resent = load.resent.load(Ordering::SeqCst);
    let resent_writes = load.resent_writes.load(Ordering::SeqCst);
    let failures = load.failures.lock().unwrap().clone();
    let servers = load.servers.lock().unwrap().clone();
    let mut acked = load.acked.lock().unwrap().clone();
    acked.sort_unstable();
    let final_count = http_load::counter(&addr).expect("GET /counter");
    handoff_ms.sort_unstable();
    println!(
        "{example}: {UPGRADES} upgrades, {ok} requests ok, {} failed, {resent} resent under the \
         rule ({resent_writes} of them writes), {} writes acknowledged and {final_count} in the final state, {} distinct \
         incumbents served, {:.2} s wall; handoff round trip ms p50 {} max {}",
        failures.len(),
        acked.len(),
        servers.len(),
        elapsed.as_secs_f64(),
        handoff_ms[handoff_ms.len() / 2],
        handoff_ms[handoff_ms.len() - 1],
    );
    assert!(
        failures.is_empty(),
        "{example}: {} of {} requests failed, first ones: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(10)]
    );
    // Counts are handed out one by one by whichever process holds the
    // flock: a lost write would be handed out again (a duplicate) or leave
    // the final count short of the acknowledged ones.
    let expected: Vec<u64> = (1..=final_count).collect();
    assert_eq!(
        acked, expected,
        "{example}: the acknowledged counts are exactly 1..={final_count}"
    );
    let expected: std::collections::BTreeSet<u32> = incumbents.iter().copied().collect();
    assert_eq!(servers, expected, "every incumbent, and only those, served");

    let status = daemon.status().unwrap();
    assert_eq!(status["handoffs"]["committed"], UPGRADES as u64, "{status}");
    assert_eq!(status["handoffs"]["failed"], 0, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
    let exit = daemon.terminate();
    assert!(
        exit.success(),
        "daemon exit {exit}:\n{}",
        daemon.stderr_text()
    );
    for pid in &incumbents {
        assert!(!alive(*pid), "incumbent {pid} outlived the daemon");
    }
}

/// `O_NONBLOCK` on the open file description of `pid`'s FD `fd`, from
/// `/proc/<pid>/fdinfo`.
fn nonblocking(pid: u32, fd: u32) -> bool {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap_or_else(|e| panic!("fdinfo of fd {fd} of {pid}: {e}"));
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .unwrap_or_else(|| panic!("no flags in {info:?}"));
    flags & libc::O_NONBLOCK as u32 != 0
}

/// The listener's `O_NONBLOCK` flag is shared by every holder. A tokio
/// incumbent sets it; its drain clears it, so a std successor gets the
/// blocking listener it may rely on; a tokio successor sets it again.
#[test]
fn the_listener_is_non_blocking_only_while_a_tokio_service_accepts_on_it() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tokio_binary = example_binary_with_features("http_server_tokio", &["tokio"]);
    let std_binary = example_binary("http_server");
    let setup = Setup::example(tokio_binary.clone());
    let daemon = setup.start();
    let addr = daemon.listener_addr("http");
    // The inherited listener is at FD 3 in the service (`LISTEN_FDS`).
    const LISTENER_FD: u32 = 3;
    // One `GET /` on a new connection: the pid that answered.
    let served_by = || {
        let stream = std::net::TcpStream::connect(&addr).expect("connect");
        let mut conn = std::io::BufReader::new(stream);
        let response = http_load::exchange(&mut conn, "GET", "/", true)
            .unwrap_or_else(|e| panic!("GET /: {}", e.why));
        let pid = response
            .body
            .trim()
            .strip_prefix("pid=")
            .and_then(|p| p.parse().ok());
        pid.unwrap_or_else(|| panic!("unexpected body {:?}", response.body))
    };
    let handoff_to = |binary: &std::path::Path| -> u32 {
        let reply = daemon
            .request(&format!("handoff {}", binary.display()))
            .expect("trigger a handoff");
        reply
            .rsplit_once("pid=")
            .and_then(|(_, p)| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("handoff reply {reply:?}\n{}", daemon.stderr_text()))
    };

    let first = served_by();
    wait_for(
        "the tokio incumbent's listener to be non-blocking",
        DEADLINE,
        || nonblocking(first, LISTENER_FD).then_some(()),
    );

    let std_successor = handoff_to(&std_binary);
    // Cleared by the tokio incumbent's drain, before `Drained`: already so
    // when the std successor took over.
    assert!(
        !nonblocking(std_successor, LISTENER_FD),
        "the std successor got a non-blocking listener"
    );
    assert_eq!(served_by(), std_successor);

    let tokio_successor = handoff_to(&tokio_binary);
    wait_for(
        "the tokio successor's listener to be non-blocking",
        DEADLINE,
        || nonblocking(tokio_successor, LISTENER_FD).then_some(()),
    );
    assert_eq!(served_by(), tokio_successor);
}

/// An aborted handoff after the seal: the tokio incumbent resumes, with
/// its listener non-blocking again, accepting and writing. The successor
/// is the std example run by a script that gives it a data dir that does
/// not exist: it passes `Begin` and fails to take the flock.
#[test]
fn a_tokio_incumbent_resumes_after_an_aborted_handoff_with_its_listener_non_blocking() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::example(example_binary_with_features(
        "http_server_tokio",
        &["tokio"],
    ));
    let daemon = setup.start();
    let addr = daemon.listener_addr("http");
    const LISTENER_FD: u32 = 3;
    let request = |method: &str, path: &str| {
        let stream = std::net::TcpStream::connect(&addr).expect("connect");
        let mut conn = std::io::BufReader::new(stream);
        let response = http_load::exchange(&mut conn, method, path, true)
            .unwrap_or_else(|e| panic!("{method} {path}: {}", e.why));
        assert_eq!(response.status, "HTTP/1.1 200 OK", "{:?}", response.body);
        response.body
    };
    let incumbent = daemon.status().unwrap()["incumbent_pid"].as_u64().unwrap() as u32;
    assert_eq!(
        request("POST", "/counter"),
        format!("pid={incumbent} count=1\n")
    );

    let script = setup.path("successor-without-its-data-dir");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} \"$1\" {}\n",
            example_binary("http_server").display(),
            setup.path("no-such-data-dir").display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();
    let reply = daemon
        .request(&format!("handoff {}", script.display()))
        .expect("trigger a handoff");
    assert!(!reply.starts_with("committed "), "{reply}");
    let status = daemon.status().unwrap();
    assert_eq!(status["incumbent_pid"], incumbent, "{status}");
    // Aborted after Begin: the incumbent had drained and sealed.
    assert_eq!(status["handoffs"]["aborted"], 1, "{status}");
    assert_eq!(status["last_handoff"]["result"], "aborted", "{status}");
    // The drain made it blocking; the resume makes it non-blocking again.
    wait_for("the resumed listener to be non-blocking", DEADLINE, || {
        nonblocking(incumbent, LISTENER_FD).then_some(())
    });
    assert_eq!(request("GET", "/"), format!("pid={incumbent}\n"));
    assert_eq!(
        request("POST", "/counter"),
        format!("pid={incumbent} count=2\n")
    );
}
