//! The embedding example under the daemon, upgraded 20 times while HTTP
//! clients hammer it: not one request may fail.
//!
//! Real processes throughout: `handoff-supervisor daemon` holds the listener
//! and runs `examples/http_server.rs`; the upgrades go through the trigger
//! socket with the real `handoff-supervisor trigger handoff` client; the
//! clients speak HTTP/1.1 over `TcpStream`, one request per connection. A
//! failed request is a refused or reset connection, a timeout, a non-200
//! answer or a short body; none is retried.
//!
//! Reproduce: `cargo test -p handoff --test http_upgrades -- --nocapture`.

mod daemon_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use daemon_support::{DEADLINE, Setup, alive, http_get, served_by, supervisor_binary, wait_for};

const UPGRADES: usize = 20;
const CLIENTS: usize = 2;
/// Requests that must complete between two upgrades, so every upgrade
/// happens under load and every incumbent is seen serving.
const REQUESTS_BETWEEN_UPGRADES: u64 = 5;
/// Upper bound on requests per client, so the loop stops by itself even if
/// the test thread died.
const MAX_REQUESTS_PER_CLIENT: u64 = 1_000_000;

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    servers: Mutex<BTreeSet<u32>>,
}

#[test]
fn twenty_upgrades_under_continuous_http_load_fail_no_request() {
    let setup = Setup::http();
    let mut daemon = setup.start();
    let addr = daemon.listener_addr("http");
    let load = Arc::new(Load::default());
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (load, addr) = (Arc::clone(&load), addr.clone());
            std::thread::spawn(move || {
                for n in 0..MAX_REQUESTS_PER_CLIENT {
                    if load.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match http_get(&addr) {
                        Ok(body) => {
                            load.servers.lock().unwrap().insert(served_by(&body));
                            load.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => load
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("request {n}: {e}")),
                    }
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
            "upgrade {i}: {} {stdout} {}\ndaemon stderr:\n{}",
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
    let failures = load.failures.lock().unwrap().clone();
    let servers = load.servers.lock().unwrap().clone();
    handoff_ms.sort_unstable();
    println!(
        "http_upgrades: {UPGRADES} upgrades, {ok} requests ok, {} failed, {} distinct \
         incumbents served, {:.2} s wall; handoff round trip ms p50 {} max {}",
        failures.len(),
        servers.len(),
        elapsed.as_secs_f64(),
        handoff_ms[handoff_ms.len() / 2],
        handoff_ms[handoff_ms.len() - 1],
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first ones: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(10)]
    );
    let expected: BTreeSet<u32> = incumbents.iter().copied().collect();
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
