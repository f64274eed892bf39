//! Stop accepting and drain connections, without touching the shared listener.
//!
//! A listening socket a service inherits is the *same open file description*
//! the supervisor and the successor hold: closing it or `shutdown(2)` would
//! refuse connections, and its `O_NONBLOCK` flag is shared by every holder.
//! [`Drain`] stops a service's accepting with a wake-up socket that
//! `poll(2)` watches beside the listener, so the listener is never closed,
//! shut down, or switched between blocking and non-blocking behind another
//! process's back. Connections the kernel queued and nobody accepted stay
//! queued for the successor.
//!
//! # The drain contract
//!
//! What [`Drain::drain`] (and so [`Drainable::drain`](crate::Drainable::drain) of a service that
//! delegates to it) does, in order:
//!
//! 1. **Stop accepting.** No [`Drain::accept`] returns a connection after
//!    `drain` started; one that `accept(2)` returned before is counted as
//!    open and served.
//! 2. **Finish every request already read**, and answer it as the last one
//!    on its connection ([`Connection::keep_alive`] turns false: an HTTP
//!    service sends `Connection: close`).
//! 3. **Idle keep-alive connections** (a connection that already carried a
//!    response, waiting for the next request) close at once:
//!    [`Connection::wait_for_request`] returns `false` and the service closes
//!    the socket without reading from it.
//! 4. **Accepted connections that never carried a request** (a client that
//!    connected but whose first request has not arrived yet) get
//!    [`DrainPolicy::first_request_grace`] (bounded by the drain deadline)
//!    for it to arrive: the client opened the connection to send one, and
//!    has no reason to expect the connection to close before its first
//!    answer. A request that arrives is served as in 2; a connection still
//!    silent after the grace closes, as in 3.
//! 5. Return once every connection closed, or at the deadline with the
//!    number still open.
//!
//! # When a client may resend
//!
//! The server closes a connection only after a complete response, or
//! without having read a single byte of the next request (3 and 4). So:
//! **a request on a connection that closes (end of stream or reset) before
//! the first byte of its response was not read by the server, and resending
//! it on a new connection is safe, whatever its method.** HTTP clients
//! already resend idempotent requests on a reused keep-alive connection that
//! closes this way (RFC 9112, section 9.3.1); with this contract a `POST`
//! may be resent too. A connection that closes *after* part of a response,
//! or a server that crashed (rather than drained) while holding a request,
//! gives no such guarantee: there only an idempotency key makes a resend
//! safe.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Instant;
//! use handoff::drain::Drain;
//! use handoff::{DrainReport, Drainable, SealError, SealReport};
//!
//! struct Service { drain: Drain }
//! impl Drainable for Service {
//!     fn drain(&mut self, deadline: Instant) -> DrainReport {
//!         self.drain.drain(deadline) // stop accepting, finish, close idle connections
//!     }
//!     fn seal(&mut self) -> Result<SealReport, SealError> {
//!         Ok(SealReport::default()) // fsync what was acknowledged
//!     }
//!     fn resume_after_abort(&mut self) {
//!         self.drain.resume() // accept again
//!     }
//! }
//!
//! # fn serve(listener: std::net::TcpListener) -> std::io::Result<()> {
//! let drain = Drain::new();
//! let acceptor = drain.clone();
//! std::thread::spawn(move || loop {
//!     let Ok((stream, mut conn)) = acceptor.accept(&listener) else { continue };
//!     std::thread::spawn(move || {
//!         while conn.wait_for_request(&stream).unwrap_or(false) {
//!             // read one request, answer it with `Connection: close` unless
//!             // `conn.keep_alive()`, and stop after that answer if not
//!             if !conn.keep_alive() { break; }
//!         }
//!     }); // dropping `conn` tells the drain this connection is done
//! });
//! # Ok(()) }
//! ```

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::drainable::DrainReport;

/// How [`Drain`] treats connections while it drains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPolicy {
    /// How long an accepted connection that has not yet carried a request
    /// may take to deliver its first one once the drain started (never past
    /// the drain deadline). Default 1 s.
    pub first_request_grace: Duration,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self {
            first_request_grace: Duration::from_secs(1),
        }
    }
}

/// The accept-stop switch and the count of open connections of one service.
/// Cheap to clone: every clone is the same switch.
#[derive(Clone)]
pub struct Drain {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Notified on every change of `state`.
    changed: Condvar,
    /// Readable while accepting is stopped: wakes a `poll(2)` in
    /// [`Drain::accept`] or [`Connection::wait_for_request`].
    wake_rx: UnixStream,
    wake_tx: UnixStream,
    policy: DrainPolicy,
    /// Async wake-ups (the `tokio` feature): the stopped flag, watched.
    #[cfg(feature = "tokio")]
    pub(crate) stopped_tx: ::tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Accepting is stopped (between `drain` and `resume`).
    pub(crate) stopped: bool,
    /// When the current drain must be over.
    pub(crate) deadline: Option<Instant>,
    /// Threads or tasks between "not stopped" and "the connection is
    /// counted": `drain` waits for them, so every connection accepted before
    /// it is counted before it waits for the count to reach zero.
    pub(crate) accepting: usize,
    /// Connections accepted and not yet dropped.
    pub(crate) open: u64,
    /// Listeners set non-blocking for an async runtime: blocking again while
    /// drained (a successor may accept with blocking calls), non-blocking
    /// again on resume.
    pub(crate) nonblocking_listeners: Vec<TcpListener>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A switch that accepts, with the default [`DrainPolicy`].
    ///
    /// # Panics
    ///
    /// If the process cannot create a socket pair (out of file descriptors
    /// at start-up); use [`Drain::with_policy`] to handle that error.
    pub fn new() -> Self {
        Self::with_policy(DrainPolicy::default()).expect("create the drain's wake-up socket pair")
    }

    /// A switch that accepts, with `policy`.
    pub fn with_policy(policy: DrainPolicy) -> std::io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        // Only this process holds these: their flags are ours to set.
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        Ok(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                wake_rx,
                wake_tx,
                policy,
                #[cfg(feature = "tokio")]
                stopped_tx: ::tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Wait for the next connection on `listener` and count it as open
    /// until the returned [`Connection`] is dropped. While accepting is
    /// stopped this blocks (the connection waits in the kernel's queue for
    /// whoever accepts next), and accepts again after [`Drain::resume`].
    ///
    /// One thread accepts at a time per `Drain`, so a readable listener
    /// never leaves a second thread blocked in `accept(2)` to take a
    /// connection after the drain. Works whether the listener is blocking
    /// or not. Errors are those of `accept(2)` (e.g. out of file
    /// descriptors): back off briefly and call again.
    pub fn accept(&self, listener: &TcpListener) -> std::io::Result<(TcpStream, Connection)> {
        loop {
            {
                let mut state = self.shared.lock();
                while state.stopped || state.accepting > 0 {
                    state = wait(&self.shared.changed, state);
                }
                state.accepting += 1;
            }
            let accepted = self.accept_once(listener);
            let mut state = self.shared.lock();
            state.accepting -= 1;
            let result = match accepted {
                Ok(Some(stream)) => {
                    state.open += 1;
                    Ok(Some(stream))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            drop(state);
            self.shared.changed.notify_all();
            if let Some(stream) = result? {
                return Ok((stream, self.connection()));
            }
        }
    }

    /// One `poll(2)` on the listener and the wake-up socket, then at most
    /// one `accept(2)`. `None` when stopped, interrupted, or the connection
    /// vanished.
    fn accept_once(&self, listener: &TcpListener) -> std::io::Result<Option<TcpStream>> {
        let (listener_ready, woken) =
            poll_pair(listener.as_fd(), self.shared.wake_rx.as_fd(), None)?;
        if woken || !listener_ready {
            return Ok(None);
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // Accepted sockets are independent of the listener's flag:
                // the service reads them blocking.
                stream.set_nonblocking(false)?;
                Ok(Some(stream))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A guard that counts one open connection.
    pub(crate) fn connection(&self) -> Connection {
        Connection {
            shared: Arc::clone(&self.shared),
            requests: 0,
        }
    }

    /// Stop accepting, wait for every connection to finish or close (the
    /// drain contract in the [module docs](self)), and report. Returns by
    /// `deadline`.
    pub fn drain(&self, deadline: Instant) -> DrainReport {
        let accept_closed = self.stop_accepting(deadline);
        let mut state = self.shared.lock();
        while state.open > 0 {
            let left = crate::util::remaining(deadline);
            if left.is_zero() {
                break;
            }
            state = wait_timeout(&self.shared.changed, state, left);
        }
        DrainReport {
            open_conns_remaining: state.open,
            accept_closed,
        }
    }

    /// Stop accepting: from now on no [`Drain::accept`] returns a
    /// connection, and idle connections are told to close. Returns `true`
    /// once no accept is under way (every connection accepted so far is
    /// counted), `false` if one still was at `deadline`. The listener itself
    /// is untouched, except that one registered for an async runtime is made
    /// blocking again once accepting stopped.
    pub fn stop_accepting(&self, deadline: Instant) -> bool {
        let mut state = self.shared.lock();
        state.stopped = true;
        state.deadline = Some(deadline);
        // Wake every poll(2): the byte stays unread until `resume`. The
        // socket pair's buffer cannot fill: it holds one byte per drain.
        let _ = std::io::Write::write_all(&mut &self.shared.wake_tx, &[1]);
        #[cfg(feature = "tokio")]
        self.shared.stopped_tx.send_replace(true);
        self.shared.changed.notify_all();
        while state.accepting > 0 {
            let left = crate::util::remaining(deadline);
            if left.is_zero() {
                return false;
            }
            state = wait_timeout(&self.shared.changed, state, left);
        }
        for listener in &state.nonblocking_listeners {
            if let Err(e) = listener.set_nonblocking(false) {
                tracing::warn!(error = %e, "cannot make a drained listener blocking again");
            }
        }
        true
    }

    /// Accept again after a drain (the handoff was aborted). Idempotent.
    pub fn resume(&self) {
        let mut state = self.shared.lock();
        if !state.stopped {
            return;
        }
        for listener in &state.nonblocking_listeners {
            if let Err(e) = listener.set_nonblocking(true) {
                tracing::warn!(error = %e, "cannot make a resumed listener non-blocking again");
            }
        }
        let mut byte = [0u8; 16];
        while matches!((&self.shared.wake_rx).read(&mut byte), Ok(n) if n > 0) {}
        state.stopped = false;
        state.deadline = None;
        #[cfg(feature = "tokio")]
        self.shared.stopped_tx.send_replace(false);
        drop(state);
        self.shared.changed.notify_all();
    }

    /// True between [`Drain::stop_accepting`] (or [`Drain::drain`]) and
    /// [`Drain::resume`].
    pub fn is_draining(&self) -> bool {
        self.shared.lock().stopped
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> u64 {
        self.shared.lock().open
    }

    /// Register a listener whose `O_NONBLOCK` flag this service set (an
    /// async runtime needs it): the drain clears it once accepting stopped
    /// and [`Drain::resume`] sets it again, so a successor that accepts with
    /// blocking calls gets the blocking listener it expects.
    #[cfg(feature = "tokio")]
    pub(crate) fn register_nonblocking(&self, listener: TcpListener) {
        self.shared.lock().nonblocking_listeners.push(listener);
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }
}

/// One open connection, counted by its [`Drain`] until dropped.
pub struct Connection {
    shared: Arc<Shared>,
    /// Requests this connection carried (counted by `wait_for_request`).
    pub(crate) requests: u64,
}

impl Connection {
    /// Wait until `stream` has something to read (the next request, or the
    /// client's end of stream): `true`, read and answer it. `false` when
    /// the drain wants this idle connection closed: close it without
    /// reading from it (that is what makes a client's resend safe).
    ///
    /// A connection that already carried a request closes as soon as the
    /// drain starts; one that never did gets
    /// [`DrainPolicy::first_request_grace`]. An idle connection also closes
    /// (`false`) once the stream's read timeout passed without a request,
    /// if it has one. Data already buffered by the service (a pipelined
    /// request) does not need this call.
    pub fn wait_for_request(&mut self, stream: &TcpStream) -> std::io::Result<bool> {
        // An idle connection waits at most the stream's read timeout.
        let idle_deadline = stream.read_timeout()?.map(|t| Instant::now() + t);
        loop {
            let left = idle_deadline.map(crate::util::remaining);
            if left.is_some_and(|left| left.is_zero()) {
                return Ok(false);
            }
            let (readable, woken) = poll_pair(stream.as_fd(), self.shared.wake_rx.as_fd(), left)?;
            if readable {
                self.requests += 1;
                return Ok(true);
            }
            if !woken {
                continue; // interrupted, or idle past the read timeout
            }
            let Some(grace) = self.grace() else {
                return Ok(false);
            };
            let (readable, _) = poll_pair(stream.as_fd(), stream.as_fd(), Some(grace))?;
            if readable {
                self.requests += 1;
                return Ok(true);
            }
            if self.shared.lock().stopped {
                return Ok(false);
            }
            // Resumed during the grace: wait as a serving connection again.
        }
    }

    /// The time this idle connection may still wait for a request while
    /// draining: `None` to close it now.
    pub(crate) fn grace(&self) -> Option<Duration> {
        if self.requests > 0 {
            return None;
        }
        let deadline = self.shared.lock().deadline;
        let grace = self.shared.policy.first_request_grace;
        let grace = deadline.map_or(grace, |d| grace.min(crate::util::remaining(d)));
        (!grace.is_zero()).then_some(grace)
    }

    /// False once the service is draining: answer the current request as
    /// the last one on this connection (HTTP: `Connection: close`), then
    /// close it.
    pub fn keep_alive(&self) -> bool {
        !self.shared.lock().stopped
    }

    /// Requests this connection carried so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// `poll(2)` `first` and `second` for input, at most `timeout` (`None`:
/// no limit). Returns whether each is readable (end of stream and errors
/// count: the next read reports them). Interrupted: both false.
fn poll_pair(
    first: BorrowedFd<'_>,
    second: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> std::io::Result<(bool, bool)> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
    };
    let mut fds = [
        PollFd::new(first, PollFlags::POLLIN),
        PollFd::new(second, PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(_) => Ok((fds[0].any() == Some(true), fds[1].any() == Some(true))),
        Err(nix::errno::Errno::EINTR) => Ok((false, false)),
        Err(e) => Err(e.into()),
    }
}

fn wait<'a>(changed: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    changed.wait(guard).unwrap_or_else(|p| p.into_inner())
}

fn wait_timeout<'a>(
    changed: &Condvar,
    guard: MutexGuard<'a, State>,
    timeout: Duration,
) -> MutexGuard<'a, State> {
    changed
        .wait_timeout(guard, timeout)
        .map(|(g, _)| g)
        .unwrap_or_else(|p| p.into_inner().0)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::mpsc;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").expect("bind")
    }

    fn connect(listener: &TcpListener) -> TcpStream {
        TcpStream::connect(listener.local_addr().unwrap()).expect("connect")
    }

    fn drain_with_grace(grace: Duration) -> Drain {
        Drain::with_policy(DrainPolicy {
            first_request_grace: grace,
        })
        .unwrap()
    }

    /// Drain on another thread (as `Incumbent::serve` does); returns once it
    /// has stopped accepting.
    fn drain_in_background(drain: &Drain) -> mpsc::Receiver<DrainReport> {
        let (tx, rx) = mpsc::channel();
        let background = drain.clone();
        std::thread::spawn(move || tx.send(background.drain(Instant::now() + DEADLINE)));
        crate::util::poll_until(DEADLINE, Duration::from_millis(1), || {
            drain.is_draining().then_some(())
        })
        .expect("the drain to stop accepting");
        rx
    }

    #[test]
    fn a_connection_that_arrives_while_drained_stays_queued_for_the_successor() {
        let listener = listener();
        let drain = Drain::new();
        assert!(drain.stop_accepting(Instant::now() + DEADLINE));
        let client = connect(&listener);
        let (tx, rx) = mpsc::channel();
        let (acceptor, accept_on) = (drain.clone(), listener.try_clone().unwrap());
        std::thread::spawn(move || {
            let accepted = acceptor
                .accept(&accept_on)
                .map(|(s, _)| s.peer_addr().unwrap());
            let _ = tx.send(accepted);
        });
        // The connection is queued: a drained service must not take it. What
        // must not happen gets a bounded window to happen in.
        let taken = rx.recv_timeout(Duration::from_millis(200));
        assert!(taken.is_err(), "accepted while drained: {taken:?}");
        // The successor, accepting on the same socket, gets it.
        let (ready, _) = poll_pair(listener.as_fd(), listener.as_fd(), Some(DEADLINE)).unwrap();
        assert!(ready, "the connection is still in the listener's queue");
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // Resumed, the service accepts the next one.
        drain.resume();
        let next = connect(&listener);
        let accepted = rx.recv_timeout(DEADLINE).expect("accept after resume");
        assert_eq!(accepted.unwrap(), next.local_addr().unwrap());
    }

    #[test]
    fn an_accepted_connection_gets_its_first_request_served_during_the_drain() {
        let listener = listener();
        let drain = drain_with_grace(DEADLINE);
        let mut client = connect(&listener);
        let (stream, mut conn) = drain.accept(&listener).unwrap();
        let report = drain_in_background(&drain);
        client.write_all(b"GET").unwrap();
        assert!(conn.wait_for_request(&stream).unwrap());
        assert!(!conn.keep_alive(), "the last request on this connection");
        drop(conn);
        let report = report.recv_timeout(DEADLINE).unwrap();
        assert_eq!(
            report,
            DrainReport {
                open_conns_remaining: 0,
                accept_closed: true
            }
        );
    }

    #[test]
    fn an_idle_keep_alive_connection_closes_without_waiting_for_the_grace() {
        let listener = listener();
        let drain = drain_with_grace(DEADLINE);
        let mut client = connect(&listener);
        let (mut stream, mut conn) = drain.accept(&listener).unwrap();
        client.write_all(b"1").unwrap();
        assert!(conn.wait_for_request(&stream).unwrap());
        stream.read_exact(&mut [0u8; 1]).unwrap();
        let _report = drain_in_background(&drain);
        let started = Instant::now();
        assert!(!conn.wait_for_request(&stream).unwrap());
        assert!(
            started.elapsed() < DEADLINE / 2,
            "closed at once, not after the first-request grace ({:?})",
            started.elapsed()
        );
    }

    #[test]
    fn a_silent_new_connection_closes_after_the_grace_and_the_drain_ends() {
        let listener = listener();
        let drain = drain_with_grace(Duration::from_millis(20));
        let _client = connect(&listener);
        let (stream, mut conn) = drain.accept(&listener).unwrap();
        let report = drain_in_background(&drain);
        assert!(!conn.wait_for_request(&stream).unwrap());
        drop(conn);
        assert_eq!(
            report.recv_timeout(DEADLINE).unwrap().open_conns_remaining,
            0
        );
    }

    #[test]
    fn an_idle_connection_closes_after_the_streams_read_timeout() {
        let listener = listener();
        let drain = Drain::new();
        let _client = connect(&listener);
        let (stream, conn) = drain.accept(&listener).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut conn = conn;
            tx.send(conn.wait_for_request(&stream).unwrap())
        });
        let waited = rx
            .recv_timeout(DEADLINE)
            .expect("an answer by the read timeout");
        assert!(!waited, "idle past the read timeout: close");
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(!drain.is_draining());
    }

    #[test]
    fn a_connection_still_busy_at_the_deadline_is_reported_open() {
        let listener = listener();
        let drain = Drain::new();
        let _client = connect(&listener);
        let (_stream, _conn) = drain.accept(&listener).unwrap();
        let report = drain.drain(Instant::now() + Duration::from_millis(20));
        assert_eq!(
            report,
            DrainReport {
                open_conns_remaining: 1,
                accept_closed: true
            }
        );
    }
}
