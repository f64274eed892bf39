//! A `[listeners]` entry that is a Unix socket path: bound by the daemon
//! with mode 0666, passed to every incumbent beside the TCP one, held
//! across a handoff (clients connecting throughout are never refused), and
//! still served after the daemon itself is killed and a new one adopts the
//! incumbent (`http_server` never takes this listener, so the new daemon
//! finds it in no FD table and binds the path afresh).

mod daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use daemon_support::{DEADLINE, Setup, alive, wait_exit};

#[test]
fn a_unix_listener_is_bound_passed_held_across_a_handoff_and_adopted_by_path() {
    let mut setup = Setup::http();
    let path = setup.path("svc.sock");
    setup.listeners = format!(
        "http = \"127.0.0.1:0\"\nsock = \"unix:{}\"\n",
        path.display()
    );
    // A socket file left by a stopped daemon: replaced, not an error.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));

    let mut first = setup.start();
    assert_eq!(
        first.listener_addr("sock"),
        format!("unix:{}", path.display())
    );
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666, "mode {mode:o}");

    // Clients connect throughout a handoff. `http_server` serves only its
    // TCP listener, so nothing accepts here: a connection that completes is
    // one the kernel queued on the daemon's socket, and it stays queued
    // (each is kept open), well under the backlog.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (stop, path) = (Arc::clone(&stop), path.clone());
        std::thread::spawn(move || {
            let (mut held, mut refused) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) && held.len() < 64 {
                match UnixStream::connect(&path) {
                    Ok(s) => held.push(s),
                    Err(e) => refused.push(e.to_string()),
                }
                std::thread::yield_now();
            }
            (held.len(), refused)
        })
    };
    let reply = first.request("handoff").expect("handoff trigger");
    assert!(reply.starts_with("committed"), "{reply}");
    stop.store(true, Ordering::Relaxed);
    let (connected, refused) = clients.join().expect("client thread");
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(connected > 0, "no client connected");

    // The daemon dies without stopping its service; the next one adopts the
    // incumbent, and the Unix socket nobody held any more is bound again.
    let status = first.status().expect("status");
    let incumbent = status["incumbent_pid"].as_u64().expect("incumbent") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the daemon");
    wait_exit(&mut first.child, "the first daemon to die", DEADLINE);
    assert!(alive(incumbent));
    let mut second = setup.start();
    let status = second.status().expect("status");
    assert_eq!(status["listeners_adopted"], true, "{status}");
    assert_eq!(
        second.listener_addr("sock"),
        format!("unix:{}", path.display())
    );
    UnixStream::connect(&path).expect("the Unix listener accepts connections again");
    assert!(second.terminate().success());
}
