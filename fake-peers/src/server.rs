//! The fake peer's TCP server and its [`Drainable`] implementation.
//!
//! One accept thread polls every listener plus a wake-up socket; one thread
//! per connection (at most [`MAX_CONNECTIONS`]) serves persistent
//! connections, one request line at a time.
//!
//! Draining never closes a listening socket: the supervisor and the
//! successor hold the same socket, and a resume after an abort accepts on it
//! again. Draining only parks the accept thread (it stops polling the
//! listeners), lets every request already read be answered, then shuts the
//! read side of idle connections so their threads see end-of-stream and
//! exit. `O_NONBLOCK` belongs to the open file description that every holder
//! of a listener shares, so this module never changes it and treats
//! `EAGAIN` from `accept` (another process won the connection) as normal.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use handoff::{DrainReport, Drainable, SealError, SealReport};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::line_protocol::{
    LineRead, MAX_LINE_BYTES, Request, Response, parse_request, read_request_line,
};
use crate::misbehaviour::{Misbehaviour, SealFail};
use crate::store::{PutError, Store};

/// Most connections served at once; past it a new connection is answered
/// `ERR busy` and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// A client that does not read its replies for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off of the accept loop after a resource error (`EMFILE`, `ENOBUFS`,
/// ...), which would otherwise leave the listener readable and spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Bookkeeping shared by the accept thread, the connection threads and the
/// [`Drainable`] hooks.
#[derive(Debug)]
struct Control {
    /// Whether the accept thread should accept (false from drain to resume).
    accept_wanted: bool,
    /// Set by the accept thread once it has seen `accept_wanted == false`
    /// and stopped polling the listeners: from then on it accepts nothing.
    accept_parked: bool,
    /// Set by drain: a connection going idle shuts its read side.
    draining: bool,
    /// Open connections by id.
    conns: HashMap<u64, Conn>,
    next_conn_id: u64,
}

#[derive(Debug)]
struct Conn {
    /// A second handle on the socket, to shut it down from drain.
    stream: TcpStream,
    /// A request line has been read and is not answered yet.
    busy: bool,
    /// Drain sent end-of-stream (FIN) on it: requests that still arrive are
    /// discarded unanswered (so never applied) until the client closes.
    closing: bool,
}

struct Shared {
    control: Mutex<Control>,
    /// Signalled whenever `accept_parked` or `conns` changes.
    changed: Condvar,
    /// Writing a byte wakes the accept thread from `poll`.
    wake_tx: UnixStream,
    store: Mutex<Store>,
    pid: u32,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait on `changed` until `done` holds or `deadline` passes; the
    /// guard either way.
    fn wait_until<'a>(
        &self,
        control: MutexGuard<'a, Control>,
        deadline: Instant,
        mut done: impl FnMut(&Control) -> bool,
    ) -> MutexGuard<'a, Control> {
        self.changed
            .wait_timeout_while(
                control,
                deadline.saturating_duration_since(Instant::now()),
                |c| !done(c),
            )
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    fn wake_accept_thread(&self) {
        // WouldBlock means a wake-up is already pending: good enough.
        let _ = (&self.wake_tx).write(&[1]);
    }
}

/// The running server: owns the store and serves every listener.
pub struct Server {
    shared: Arc<Shared>,
    misbehaviour: Misbehaviour,
    seals_attempted: u32,
}

impl Server {
    /// Start the accept thread on `listeners` (all served the same way).
    pub fn start(
        store: Store,
        listeners: Vec<(String, TcpListener)>,
        misbehaviour: Misbehaviour,
    ) -> io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                accept_wanted: true,
                accept_parked: false,
                draining: false,
                conns: HashMap::new(),
                next_conn_id: 0,
            }),
            changed: Condvar::new(),
            wake_tx,
            store: Mutex::new(store),
            pid: std::process::id(),
        });
        let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(target: "fake_peer.serving", listeners = ?names, "serving");
        let accept_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&accept_shared, &listeners, &wake_rx))?;
        Ok(Self {
            shared,
            misbehaviour,
            seals_attempted: 0,
        })
    }

    /// Sequence number of the last durable record.
    pub fn last_seq(&self) -> u64 {
        self.shared.store().last_seq()
    }

    /// Refuse every further write (seal the store), before this process
    /// gives up the flock or exits.
    pub fn stop_writes(&self) {
        if let Err(e) = self.shared.store().seal() {
            tracing::warn!(target: "fake_peer.seal", error = %e, "fsync on stop failed");
        }
    }
}

impl Drainable for Server {
    fn drain(&mut self, deadline: Instant) -> DrainReport {
        let mut control = self.shared.control();
        control.accept_wanted = false;
        control.draining = true;
        self.shared.wake_accept_thread();
        control = self
            .shared
            .wait_until(control, deadline, |c| c.accept_parked);
        let accept_closed = control.accept_parked;
        // Idle connections: end-of-stream first (FIN), so the client stops
        // using them before anything is closed under it (closing a socket
        // with an unread request would send a reset); no request is
        // processed on them any more. Busy ones answer the request they
        // hold, then do the same.
        for conn in control.conns.values_mut().filter(|c| !c.busy) {
            let _ = conn.stream.shutdown(Shutdown::Write);
            conn.closing = true;
        }
        control = self.shared.wait_until(control, deadline, |c| {
            c.conns.values().all(|conn| conn.closing)
        });
        let open_conns_remaining = control.conns.values().filter(|c| !c.closing).count() as u64;
        drop(control);
        if !self.misbehaviour.extra_drain.is_zero() {
            // FAKE_DRAIN_MS: a slow drain is the point; pacing, not syncing.
            std::thread::sleep(self.misbehaviour.extra_drain);
        }
        tracing::info!(
            target: "fake_peer.drain",
            open_conns_remaining,
            accept_closed,
            "drained"
        );
        DrainReport {
            open_conns_remaining,
            accept_closed,
        }
    }

    fn seal(&mut self) -> Result<SealReport, SealError> {
        if !self.misbehaviour.extra_seal.is_zero() {
            // FAKE_SEAL_MS: a slow seal is the point; heartbeats must cover it.
            std::thread::sleep(self.misbehaviour.extra_seal);
        }
        self.seals_attempted += 1;
        let injected = match self.misbehaviour.seal_fail {
            SealFail::Never => false,
            SealFail::Once => self.seals_attempted == 1,
            SealFail::Always => true,
        };
        let mut store = self.shared.store();
        if injected {
            return Err(SealError {
                error: "injected seal failure (FAKE_SEAL_FAIL)".into(),
                partial_state: store.describe(),
            });
        }
        match store.seal() {
            Ok(sealed) => Ok(SealReport {
                last_revision_per_shard: vec![sealed.last_seq],
                data_dir_fingerprint: sealed.fingerprint.to_string(),
            }),
            Err(e) => Err(SealError {
                error: format!("fsync of kv.log failed: {e}"),
                partial_state: store.describe(),
            }),
        }
    }

    fn resume_after_abort(&mut self) {
        if let Err(e) = self.shared.store().resume() {
            // Stay sealed: reads are served, writes answer ERR.
            tracing::error!(
                target: "fake_peer.resume",
                error = %e,
                "cannot reopen kv.log; serving read-only"
            );
        }
        let mut control = self.shared.control();
        control.draining = false;
        control.accept_wanted = true;
        drop(control);
        self.shared.wake_accept_thread();
        tracing::info!(target: "fake_peer.resume", "accepting again");
    }

    fn snapshot_state(&self) -> String {
        let store = self.shared.store().describe();
        let control = self.shared.control();
        format!(
            "{store} conns={} accepting={}",
            control.conns.len(),
            control.accept_wanted
        )
    }
}

fn accept_loop(shared: &Arc<Shared>, listeners: &[(String, TcpListener)], wake_rx: &UnixStream) {
    loop {
        let wanted = {
            let mut control = shared.control();
            let wanted = control.accept_wanted;
            if control.accept_parked == wanted {
                control.accept_parked = !wanted;
                shared.changed.notify_all();
            }
            wanted
        };
        let mut fds = vec![PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN)];
        if wanted {
            fds.extend(
                listeners
                    .iter()
                    .map(|(_, l)| PollFd::new(l.as_fd(), PollFlags::POLLIN)),
            );
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(target: "fake_peer.accept", error = %e, "poll failed");
                return;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            let mut sink = [0u8; 64];
            while matches!((&*wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        if !wanted {
            continue;
        }
        for ((name, listener), _) in listeners.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
            // Re-check under the lock: a drain that started since the poll
            // must not see a connection appear after it was told "parked".
            if !shared.control().accept_wanted {
                break;
            }
            match listener.accept() {
                Ok((stream, _peer)) => admit(shared, stream),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    tracing::warn!(target: "fake_peer.accept", listener = %name, error = %e, "accept failed");
                    // Wait on the wake-up socket only, so a drain is still
                    // seen at once, without spinning on a readable listener.
                    let mut fds = [PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN)];
                    let backoff =
                        PollTimeout::try_from(ACCEPT_ERROR_BACKOFF).unwrap_or(PollTimeout::NONE);
                    let _ = poll(&mut fds, backoff);
                }
            }
        }
    }
}

/// Register a freshly accepted connection and start its thread.
fn admit(shared: &Arc<Shared>, stream: TcpStream) {
    // An accepted socket may inherit O_NONBLOCK on some systems; serve it
    // in blocking mode.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(handle) = stream.try_clone() else {
        return;
    };
    let id = {
        let mut control = shared.control();
        if control.conns.len() >= MAX_CONNECTIONS {
            drop(control);
            let _ = (&stream).write_all(
                Response::Err(format!("busy: {MAX_CONNECTIONS} connections open"))
                    .render()
                    .as_bytes(),
            );
            return;
        }
        let id = control.next_conn_id;
        control.next_conn_id += 1;
        control.conns.insert(
            id,
            Conn {
                stream: handle,
                busy: false,
                closing: false,
            },
        );
        id
    };
    let thread_shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("conn-{id}"))
        .spawn(move || {
            serve_connection(&thread_shared, id, stream);
            let mut control = thread_shared.control();
            control.conns.remove(&id);
            thread_shared.changed.notify_all();
        });
    if spawned.is_err() {
        let mut control = shared.control();
        control.conns.remove(&id);
        shared.changed.notify_all();
    }
}

fn serve_connection(shared: &Shared, id: u64, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(MAX_LINE_BYTES, read_half);
    let mut writer = stream;
    let mut line = Vec::with_capacity(128);
    loop {
        match read_request_line(&mut reader, &mut line, MAX_LINE_BYTES) {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Eof) | Err(_) => return,
            Ok(LineRead::TooLong) => {
                let reply = Response::Err(format!("line longer than {MAX_LINE_BYTES} bytes"));
                let _ = writer.write_all(reply.render().as_bytes());
                return;
            }
        }
        if !begin_request(shared, id) {
            // Closing: discard until the client closes its side.
            continue;
        }
        let reply = handle_request(shared, &line);
        if writer.write_all(reply.render().as_bytes()).is_err() {
            return;
        }
        let draining = set_busy(shared, id, false);
        if draining {
            let _ = writer.shutdown(Shutdown::Write);
            let mut control = shared.control();
            if let Some(conn) = control.conns.get_mut(&id) {
                conn.closing = true;
            }
            shared.changed.notify_all();
            drop(control);
            // Bound the wait for the client to close its side.
            let _ = writer.set_read_timeout(Some(Duration::from_secs(1)));
        }
    }
}

/// Mark connection `id` busy unless it is closing; false when closing.
fn begin_request(shared: &Shared, id: u64) -> bool {
    let mut control = shared.control();
    match control.conns.get_mut(&id) {
        Some(conn) if conn.closing => false,
        Some(conn) => {
            conn.busy = true;
            true
        }
        None => true,
    }
}

/// Mark connection `id` busy or idle; returns whether a drain is running.
fn set_busy(shared: &Shared, id: u64, busy: bool) -> bool {
    let mut control = shared.control();
    if let Some(conn) = control.conns.get_mut(&id) {
        conn.busy = busy;
    }
    control.draining
}

fn handle_request(shared: &Shared, line: &[u8]) -> Response {
    match parse_request(line) {
        Err(reason) => Response::Err(reason),
        Ok(Request::Ping) => Response::Pong { pid: shared.pid },
        Ok(Request::Get { key }) => match shared.store().get(&key) {
            Some(v) => Response::Value(v.to_string()),
            None => Response::NotFound,
        },
        Ok(Request::Put { key, value }) => match shared.store().put(&key, &value) {
            Ok(seq) => Response::Ok { seq },
            Err(e @ (PutError::Sealed | PutError::Poisoned(_) | PutError::Io(_))) => {
                Response::Err(e.to_string())
            }
        },
    }
}
