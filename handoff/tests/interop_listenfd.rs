//! Interop: a successor that reads its listeners with the `listenfd` crate,
//! not with this library, gets them from `handoff::fd::spawn_with_listeners`
//! under the right names.
//!
//! The child is this test binary re-executed in helper mode
//! (`HANDOFF_LISTENFD_HELPER`, see [`listenfd_helper_entry_point`]). It takes
//! each listener with `listenfd` (which reads `LISTEN_FDS`/`LISTEN_PID`) and
//! its name from `LISTEN_FDNAMES` (which `listenfd` leaves to the caller, as
//! `sd_listen_fds_with_names(3)` does), then accepts one connection on each
//! and writes back what it found.
//!
//! Reproduce: `cargo test -p handoff --test interop_listenfd`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Child;
use std::time::Duration;

mod daemon_support;
use daemon_support::DEADLINE;

const HELPER_ENV: &str = "HANDOFF_LISTENFD_HELPER";
const HELPER_TEST: &str = "listenfd_helper_entry_point";

/// Not a test: the helper process. Without `HANDOFF_LISTENFD_HELPER` it
/// does nothing.
#[test]
fn listenfd_helper_entry_point() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let count = fds.len();
    let listeners: Vec<TcpListener> = (0..count)
        .map(|i| {
            fds.take_tcp_listener(i)
                .expect("listenfd: a TCP listener")
                .expect("listenfd: the listener was not taken before")
        })
        .collect();
    for (i, listener) in listeners.iter().enumerate() {
        let (mut conn, _) = listener.accept().expect("accept");
        let name = names.get(i).map_or("<unnamed>", String::as_str);
        let addr = listener.local_addr().expect("local_addr");
        write!(conn, "index={i} count={count} name={name} addr={addr}").expect("reply");
    }
}

/// Kills the helper if the test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_listenfd_successor_finds_the_listeners_under_their_names() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let exe = std::env::current_exe().unwrap();
    let args: Vec<String> = [HELPER_TEST, "--exact", "--nocapture", "--test-threads=1"]
        .map(String::from)
        .to_vec();
    let child = handoff::fd::spawn_with_listeners(
        &exe,
        &args,
        &[(HELPER_ENV.into(), "1".into())],
        &[
            ("web".into(), web.as_raw_fd()),
            ("admin".into(), admin.as_raw_fd()),
        ],
        None,
    )
    .unwrap();
    let mut guard = Guard(child);

    for (index, (name, listener)) in [("web", &web), ("admin", &admin)].into_iter().enumerate() {
        let addr = listener.local_addr().unwrap();
        // The kernel queues the connection on the shared socket; the child
        // accepts it (we never do).
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("no reply from the listenfd child on {name}: {e}"));
        assert_eq!(
            reply,
            format!("index={index} count=2 name={name} addr={addr}"),
            "what listenfd found at index {index}"
        );
    }
    let status = daemon_support::wait_exit(&mut guard.0, "the listenfd child to exit", DEADLINE);
    assert!(status.success(), "listenfd child: {status}");
}
