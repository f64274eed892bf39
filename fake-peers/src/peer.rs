//! The two ways a fake peer starts: cold (first incumbent) or as the
//! successor of a handoff. Each returns the process's exit code.

use std::net::TcpListener;
use std::os::fd::RawFd;
use std::path::PathBuf;

use handoff::{
    DataDirLock, Error, Incumbent, IncumbentConfig, Readiness, Role, ServeOutcome, Successor,
};

use crate::misbehaviour::{EXIT_BEFORE_HELLO_CODE, Misbehaviour};
use crate::server::Server;
use crate::store::Store;

/// Exit code: handed off, or superseded.
pub const EXIT_OK: i32 = 0;
/// Exit code: any failure (lock held, bad set-up, aborted successor, serve
/// error).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: invalid `HANDOFF_CRASH_AT` or `FAKE_*` value.
pub const EXIT_BAD_ENV: i32 = 2;

/// What the command line says.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The data dir: `handoff.lock`, `handoff.pid`, `kv.log`.
    pub data_dir: PathBuf,
    /// The control socket path the incumbent binds.
    pub control_socket: PathBuf,
    /// `--listen name=host:port`: bound on a cold start that inherited none.
    pub listen: Vec<(String, String)>,
    /// Announced in `Hello`.
    pub build_id: String,
}

/// `HANDOFF_SOCK_FD`, read before [`handoff::detect_role`] clears it: the
/// successor's end of the control socketpair, watched by `FAKE_NEVER_READY`.
fn successor_sock_fd() -> Option<RawFd> {
    std::env::var("HANDOFF_SOCK_FD").ok()?.parse().ok()
}

/// Run the process: detect the role, then serve until handed off.
pub fn run(config: PeerConfig) -> i32 {
    let misbehaviour = match Misbehaviour::from_env() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fake-peer: {e}");
            return EXIT_BAD_ENV;
        }
    };
    let incumbent_config = match IncumbentConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fake-peer: {e}");
            return EXIT_BAD_ENV;
        }
    };
    let sock_fd = successor_sock_fd();
    let code = match handoff::detect_role() {
        Ok(Role::ColdStart { listeners }) => cold_start(
            &config,
            &incumbent_config,
            listeners,
            misbehaviour.for_cold_start(),
        ),
        Ok(Role::Successor(successor)) => {
            run_successor(&config, &incumbent_config, successor, sock_fd, misbehaviour)
        }
        Err(e) => fail("detect role", &e),
    };
    tracing::info!(target: "fake_peer.exit", code, "exiting");
    code
}

fn cold_start(
    config: &PeerConfig,
    incumbent_config: &IncumbentConfig,
    inherited: Vec<(String, TcpListener)>,
    misbehaviour: Misbehaviour,
) -> i32 {
    let listeners = if inherited.is_empty() {
        match bind_listeners(&config.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fake-peer: {e}");
                return EXIT_FAILURE;
            }
        }
    } else {
        inherited
    };
    if listeners.is_empty() {
        eprintln!(
            "fake-peer: no listeners: none inherited through LISTEN_FDS and no --listen given"
        );
        return EXIT_FAILURE;
    }
    let lock = match DataDirLock::acquire(&config.data_dir) {
        Ok(lock) => lock,
        Err(e @ Error::LockHeld { .. }) => {
            eprintln!(
                "fake-peer: {e}: another process serves {}; stop it or hand off to this one",
                config.data_dir.display()
            );
            return EXIT_FAILURE;
        }
        Err(e) => return fail("take the data-dir lock", &e),
    };
    let store = match Store::open(&config.data_dir) {
        Ok(s) => s,
        Err(e) => return fail("open kv.log", &e),
    };
    let incumbent = match Incumbent::bind_cold_start(&config.control_socket, lock) {
        Ok(i) => i,
        Err(e) => return fail("bind the control socket", &e),
    };
    let server = match Server::start(store, listeners, misbehaviour) {
        Ok(s) => s,
        Err(e) => return fail("start serving", &e),
    };
    serve_as_incumbent(config, incumbent_config, incumbent, server)
}

fn run_successor(
    config: &PeerConfig,
    incumbent_config: &IncumbentConfig,
    successor: Successor,
    sock_fd: Option<RawFd>,
    misbehaviour: Misbehaviour,
) -> i32 {
    if misbehaviour.exit_before_hello {
        eprintln!("fake-peer: FAKE_EXIT_BEFORE_HELLO=1: exiting before the handshake");
        return EXIT_BEFORE_HELLO_CODE;
    }
    // Start-up work that needs no flock, before the handshake: kv.log
    // replayed as it is now (the incumbent only appends, and only while it
    // holds the flock; a record still being appended is left out), so that
    // after Begin only what was appended since is left to replay. Before
    // Hello, not merely before Begin: the supervisor starts the incumbent's
    // drain as soon as it has our Hello, and from that drain to our first
    // accept no process accepts, so a replay still running when Begin
    // arrives (0.5 ms for 7,000 records here) would lengthen that window.
    // A preload that fails costs nothing: the full open under the flock
    // decides.
    let preloaded = match Store::preload(&config.data_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(error = %e, "kv.log preload failed; replaying it after Begin");
            None
        }
    };
    let mut handshook = match successor.handshake(config.build_id.as_bytes().to_vec()) {
        Ok(h) => h,
        Err(e) => return fail("handshake with the supervisor", &e),
    };
    // The control socket under its private temporary name.
    if let Err(e) = handshook.prepare_control_socket(&config.control_socket) {
        return fail("bind the control socket", &e);
    }
    let mut begun = match handshook.wait_for_begin() {
        Ok(b) => b,
        Err(e) => return fail("wait for Begin", &e),
    };
    let names = begun.listener_names();
    if names.is_empty() {
        eprintln!("fake-peer: the supervisor passed no listeners");
        return EXIT_FAILURE;
    }
    let mut listeners = Vec::with_capacity(names.len());
    for name in names {
        match begun.take_listener(&name) {
            Ok(l) => listeners.push((name, l)),
            Err(e) => return fail("take the inherited listeners", &e),
        }
    }
    let lock = match begun.acquire_lock(&config.data_dir) {
        Ok(l) => l,
        Err(e) => return fail("take the data-dir lock", &e),
    };
    let opened = match preloaded {
        Some(pre) => Store::open_preloaded(&config.data_dir, pre),
        None => Store::open(&config.data_dir),
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            drop(lock);
            return fail("open the sealed kv.log", &e);
        }
    };
    if misbehaviour.never_ready {
        eprintln!("fake-peer: FAKE_NEVER_READY=1: holding the flock, never sending Ready");
        wait_for_supervisor_to_go(sock_fd);
        drop(store);
        drop(lock);
        eprintln!("fake-peer: supervisor gone before Ready; released the flock");
        return EXIT_FAILURE;
    }
    let readiness = Readiness {
        healthz_ok: true,
        advertised_revision_per_shard: vec![store.last_seq()],
    };
    // Serving starts only once Ready is sent and the control socket is ours:
    // on failure `announce_and_bind` releases the flock, and no thread of
    // this process may be writing then.
    let incumbent = match begun.announce_and_bind(readiness, &config.control_socket, lock) {
        Ok(i) => i,
        Err(e) => return fail("announce Ready", &e),
    };
    let server = match Server::start(store, listeners, misbehaviour) {
        Ok(s) => s,
        Err(e) => return fail("start serving", &e),
    };
    serve_as_incumbent(config, incumbent_config, incumbent, server)
}

fn serve_as_incumbent(
    config: &PeerConfig,
    incumbent_config: &IncumbentConfig,
    incumbent: Incumbent,
    mut server: Server,
) -> i32 {
    let incumbent = incumbent
        .with_build_id(config.build_id.as_bytes().to_vec())
        .with_config(incumbent_config.clone());
    match incumbent.serve(&mut server) {
        Ok(outcome) => {
            // Drain already finished in-flight requests and seal closed the
            // log; make sure nothing writes while the process winds down.
            server.stop_writes();
            let reason = match &outcome {
                ServeOutcome::Committed { .. } => "committed",
                ServeOutcome::Superseded { .. } => "superseded",
            };
            tracing::info!(target: "fake_peer.handed_off", reason, outcome = ?outcome, "handed off");
            EXIT_OK
        }
        Err(e) => {
            server.stop_writes();
            fail("serve the control socket", &e)
        }
    }
}

/// Bind `name=host:port` listeners (SO_REUSEADDR, as std does on Unix).
fn bind_listeners(specs: &[(String, String)]) -> Result<Vec<(String, TcpListener)>, String> {
    specs
        .iter()
        .map(|(name, addr)| {
            TcpListener::bind(addr.as_str())
                .map(|l| (name.clone(), l))
                .map_err(|e| format!("cannot bind --listen {name}={addr}: {e}"))
        })
        .collect()
}

/// Parse `name=host:port` (for `--listen`).
pub fn parse_listen(spec: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((name, addr)) if !name.is_empty() && !addr.is_empty() && !name.contains(':') => {
            Ok((name.to_string(), addr.to_string()))
        }
        _ => Err(format!(
            "{spec:?}: expected <name>=<host:port>, e.g. kv=127.0.0.1:7000 (names cannot contain ':')"
        )),
    }
}

/// Block until the supervisor's end of the control socketpair closes (or it
/// sends anything, e.g. `Abort`). Without a known descriptor, block forever
/// (until killed).
fn wait_for_supervisor_to_go(sock_fd: Option<RawFd>) {
    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::socket::{MsgFlags, recv};
    let Some(fd) = sock_fd else {
        loop {
            std::thread::park();
        }
    };
    // The socketpair end is this process's alone; blocking mode keeps the
    // wait below from spinning if the library left it non-blocking.
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(blocking));
    }
    let mut byte = [0u8; 1];
    loop {
        // MSG_PEEK: leave whatever arrived for nobody; we only wait. A read
        // timeout set by the library surfaces as EAGAIN and we wait again.
        match recv(fd, &mut byte, MsgFlags::MSG_PEEK) {
            Ok(_) => return,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

fn fail(what: &str, e: &dyn std::fmt::Display) -> i32 {
    tracing::error!(target: "fake_peer.error", step = what, error = %e, "failed");
    eprintln!("fake-peer: cannot {what}: {e}");
    EXIT_FAILURE
}

/// `FAKE_DIE_WITH_PARENT=<pid>`: die with the process `<pid>`, this
/// process's parent (`PR_SET_PDEATHSIG` = `SIGKILL`). For a harness that
/// *is* the supervisor (the bench): a `kill -9` of it then leaves no fake
/// peer serving on. Not for a separate supervisor process, which a
/// successor must outlive.
pub const ENV_DIE_WITH_PARENT: &str = "FAKE_DIE_WITH_PARENT";

/// Honour [`ENV_DIE_WITH_PARENT`] if it is set. Call it first in `main`.
/// An error says what is wrong with the variable; a parent that is already
/// gone (or is not `<pid>`) ends this process at once.
pub fn die_with_parent_if_asked() -> Result<(), String> {
    let Ok(value) = std::env::var(ENV_DIE_WITH_PARENT) else {
        return Ok(());
    };
    let parent: i32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{ENV_DIE_WITH_PARENT}={value:?} is not a pid"))?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("{ENV_DIE_WITH_PARENT}: prctl(PR_SET_PDEATHSIG): {e}"))?;
    // Set after the fork: a parent that died before it would not signal.
    if nix::unistd::getppid().as_raw() != parent {
        std::process::exit(EXIT_PARENT_GONE);
    }
    Ok(())
}

/// Exit code when [`ENV_DIE_WITH_PARENT`] names a parent that is gone.
pub const EXIT_PARENT_GONE: i32 = 4;
