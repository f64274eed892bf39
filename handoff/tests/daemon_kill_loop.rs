//! The daemon comes back from a SIGKILL of any process, at any moment, with
//! clients connecting all along: a loop of `trigger handoff` plus a SIGKILL
//! of the daemon, the incumbent or the successor at a random moment, with
//! and without socket activation. The service is `examples/http_server`.
//!
//! One death at a time: each iteration waits until its victim is gone and
//! the daemon serves again (without socket activation, a daemon killed while
//! no incumbent runs takes the last copy of the listeners with it; see
//! docs/daemon.md).
//!
//! Checked after every iteration: the daemon serves (a restarted one adopted
//! the incumbent and its listeners) and, after a daemon kill, hands off.
//! Checked over the run: no connection was refused, no acknowledged write
//! is missing from the service's log (one client writes: `POST /write`,
//! fsynced before the `200`), and the longest gap
//! between two served requests (printed with the counts; bounded by
//! `HANDOFF_KILL_LOOP_MAX_GAP_MS`, default 2000 here for a loaded debug
//! build; the figure to quote comes from a release run).
//!
//! `HANDOFF_KILL_LOOP_ITERATIONS` (default 12) sets the iterations per
//! set-up: `HANDOFF_KILL_LOOP_ITERATIONS=100 cargo test -p handoff --test
//! daemon_kill_loop -- --nocapture`.

mod daemon_support;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use daemon_support::{
    DEADLINE, Daemon, Setup, http_get, http_request, trigger_line, wait_exit, wait_for,
};
use nix::sys::signal::Signal;
use rand::Rng;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: a number"))
        })
        .unwrap_or(default)
}

/// What the client threads saw.
#[derive(Default)]
struct ClientLog {
    served: u64,
    refused: u64,
    /// Accepted, then cut (the process answering it was killed).
    cut: u64,
    longest_gap: Duration,
    last_errors: Vec<String>,
    /// The counts acknowledged by `POST /counter`.
    acked: Vec<u64>,
}

/// Clients that connect back to back until stopped: `GET /`, and one
/// thread `POST /counter` (a durable increment, acknowledged with the new
/// count).
struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<ClientLog>>,
    /// When the last request was served, by any thread.
    last_served: Arc<std::sync::Mutex<Instant>>,
    /// When the clients started (errors are timed from here).
    began: Instant,
}

impl Clients {
    fn start(addr: &str, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let last_served = Arc::new(std::sync::Mutex::new(began));
        let threads = (0..n)
            .map(|thread| {
                let (addr, stop, last_served) = (
                    addr.to_string(),
                    Arc::clone(&stop),
                    Arc::clone(&last_served),
                );
                std::thread::spawn(move || {
                    let mut log = ClientLog::default();
                    while !stop.load(Ordering::Relaxed) {
                        let writes = thread == 0;
                        let request = if writes { "POST /counter" } else { "GET /" };
                        match http_request(&addr, request) {
                            Ok(body) => {
                                log.served += 1;
                                if writes {
                                    log.acked.push(acknowledged_count(&body));
                                }
                                let now = Instant::now();
                                let mut last = last_served.lock().unwrap();
                                log.longest_gap = log.longest_gap.max(now - *last);
                                *last = now;
                            }
                            Err(e) if e.contains("Connection refused") => {
                                log.refused += 1;
                                if log.last_errors.len() < 5 {
                                    log.last_errors
                                        .push(format!("at {:?}: {e}", began.elapsed()));
                                }
                            }
                            Err(e) => {
                                log.cut += 1;
                                if log.last_errors.len() < 5 {
                                    log.last_errors
                                        .push(format!("at {:?}: {e}", began.elapsed()));
                                }
                            }
                        }
                    }
                    log
                })
            })
            .collect();
        Clients {
            stop,
            threads,
            last_served,
            began,
        }
    }

    fn finish(self) -> ClientLog {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = ClientLog::default();
        for t in self.threads {
            let log = t.join().expect("client thread");
            total.served += log.served;
            total.refused += log.refused;
            total.cut += log.cut;
            total.longest_gap = total.longest_gap.max(log.longest_gap);
            total.last_errors.extend(log.last_errors);
            total.acked.extend(log.acked);
        }
        drop(self.last_served);
        total
    }
}

/// The daemon's children that were started as successors (their initial
/// environment says so), from every thread's `children` list.
fn successors_of(daemon: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{daemon}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|v| v == b"HANDOFF_ROLE=successor")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILL `pid` through a pidfd (never a recycled pid); the pidfd, to wait
/// for the death, when the process was still there.
fn sigkill(pid: u32) -> Option<handoff::fd::PidFd> {
    let pidfd = handoff::fd::PidFd::open(pid).ok()?;
    pidfd.send_signal(Signal::SIGKILL).ok()?;
    Some(pidfd)
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    Daemon,
    Incumbent,
    Successor,
}

/// Run the loop against daemons started by `spawn`; returns the clients'
/// log and how many kills of each victim landed.
fn kill_loop(setup: &Setup, addr: &str, spawn: &dyn Fn() -> std::process::Child) {
    let iterations = env_number("HANDOFF_KILL_LOOP_ITERATIONS", 12);
    let max_gap = Duration::from_millis(env_number("HANDOFF_KILL_LOOP_MAX_GAP_MS", 2000));
    let mut rng = rand::rng();
    // Killed daemons stay here: dropping one kills its process group, where
    // the incumbent it left (and now adopted by the next daemon) may live.
    let mut killed: Vec<Daemon> = Vec::new();
    let mut daemon = setup.adopt(spawn());
    let clients = Clients::start(addr, 2);
    let mut landed = [0u32; 3];
    let started = Instant::now();
    for i in 0..iterations {
        let victim = match rng.random_range(0..3) {
            0 => Victim::Daemon,
            1 => Victim::Incumbent,
            _ => Victim::Successor,
        };
        // A successor killed after its commit was the incumbent: wait for
        // its restart.
        let incumbent = daemon.wait_status("a serving incumbent", |s| {
            s["state"] == "serving" && s["incumbent_pid"].is_u64()
        })["incumbent_pid"]
            .as_u64()
            .expect("an incumbent") as u32;
        let socket = daemon.trigger_socket.clone();
        let trigger = std::thread::spawn(move || trigger_line(&socket, "handoff"));
        // A random moment in the handoff (pacing that is the point).
        std::thread::sleep(Duration::from_micros(rng.random_range(0..15_000)));
        let dying: Vec<handoff::fd::PidFd> = match victim {
            Victim::Daemon => sigkill(daemon.pid()).into_iter().collect(),
            Victim::Incumbent => sigkill(incumbent).into_iter().collect(),
            // Started as a successor, and not the incumbent this iteration
            // began with (which may have been one once).
            Victim::Successor => successors_of(daemon.pid())
                .into_iter()
                .filter(|p| *p != incumbent)
                .filter_map(sigkill)
                .collect(),
        };
        let hit = !dying.is_empty();
        landed[victim as usize] += u32::from(hit);
        let reply = trigger.join().expect("trigger thread");
        // One death at a time: the next iteration starts once this one's
        // victim is gone and the daemon serves again.
        for pidfd in &dying {
            assert!(
                pidfd.wait_exited(Some(DEADLINE)).expect("pidfd poll"),
                "iteration {i}: pid {} survived SIGKILL",
                pidfd.pid()
            );
        }
        if let Victim::Daemon = victim {
            wait_exit(&mut daemon.child, "the killed daemon", DEADLINE);
            let next = setup.adopt(spawn());
            killed.push(std::mem::replace(&mut daemon, next));
            let reply = daemon.request("handoff").expect("handoff after restart");
            assert!(
                reply.starts_with("committed "),
                "iteration {i}: the restarted daemon did not hand off: {reply}\n{}",
                daemon.stderr_text()
            );
        } else {
            daemon.wait_status("a serving incumbent", |s| {
                s["state"] == "serving" && s["incumbent_pid"].is_u64()
            });
        }
        eprintln!(
            "iteration {i} (at {:?}): killed {victim:?} (landed: {hit}); trigger: {reply:?}",
            clients.began.elapsed()
        );
    }
    let elapsed = started.elapsed();
    // The service still answers once the loop is over.
    wait_for("a request served after the loop", DEADLINE, || {
        http_get(addr).ok()
    });
    let log = clients.finish();
    let final_count = http_request(addr, "GET /counter").expect("the counter");
    let final_count: u64 = final_count
        .trim()
        .strip_prefix("count=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("GET /counter answered {final_count:?}"));
    // Every acknowledged increment is counted: none above the final count,
    // and no count acknowledged twice (a lost write would have its count
    // handed out again).
    let lost: Vec<&u64> = log.acked.iter().filter(|n| **n > final_count).collect();
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&u64> = log.acked.iter().filter(|n| !seen.insert(**n)).collect();
    assert!(twice.is_empty(), "counts acknowledged twice: {twice:?}");
    eprintln!(
        "{iterations} iterations in {elapsed:?}: kills landed daemon={} incumbent={} successor={}; \
         requests served={} refused={} cut={}; writes acknowledged={} lost={}; longest gap \
         without a served request {:?}",
        landed[0],
        landed[1],
        landed[2],
        log.served,
        log.refused,
        log.cut,
        log.acked.len(),
        lost.len(),
        log.longest_gap
    );
    assert!(!log.acked.is_empty(), "no write was acknowledged");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        log.refused,
        0,
        "connections refused: {:?}\n{}",
        log.last_errors,
        daemon.stderr_text()
    );
    assert!(
        log.longest_gap < max_gap,
        "longest gap {:?} >= {max_gap:?}",
        log.longest_gap
    );
    assert!(daemon.terminate().success());
    drop(killed);
}

fn loop_setup() -> Setup {
    let mut setup = Setup::http();
    // Restarts are part of the loop: no burst limit in reach, no delay.
    setup.extra = "[restart]\ndelay_ms = 1\nburst = 1000\ninterval_ms = 1000\n".into();
    setup
}

/// A port that was free a moment ago (the daemon binds it itself).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn without_socket_activation_the_daemon_comes_back_from_any_kill() {
    let mut setup = loop_setup();
    let addr = format!("127.0.0.1:{}", free_port());
    setup.listeners = format!("http = \"{addr}\"\n");
    kill_loop(&setup, &addr, &|| {
        setup.daemon_command().spawn().expect("spawn daemon")
    });
}

#[test]
fn with_socket_activation_the_daemon_comes_back_from_any_kill() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut setup = loop_setup();
    setup.listeners = format!("http = \"{addr}\"\n");
    let spawn = || {
        let mut cmd = setup.daemon_command();
        let fds = [("http".to_string(), listener.as_raw_fd())];
        handoff::fd::pass_listener_fds_on_spawn(&mut cmd, &fds, None);
        cmd.spawn().expect("spawn daemon")
    };
    kill_loop(&setup, &addr, &spawn);
}

/// The count in a `POST /counter` answer (`pid=<pid> count=<n>`).
fn acknowledged_count(body: &str) -> u64 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("count="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("POST /counter answered {body:?}"))
}
