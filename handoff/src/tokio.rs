//! Async services on tokio (feature `tokio`).
//!
//! The same hand-over as a std service, in the forms a tokio service uses:
//!
//! - [`listener`] turns an inherited listener into a
//!   [`tokio::net::TcpListener`]. tokio needs the listener non-blocking, and
//!   `O_NONBLOCK` lives on the open file description that the supervisor,
//!   this process and its successor share, so the listener is registered
//!   with the service's [`Drain`]: the drain makes it blocking again once
//!   accepting stopped (a successor may accept with blocking calls), and
//!   [`Drain::resume`] makes it non-blocking again before accepting resumes
//!   after an aborted handoff.
//! - [`Drain::accept_async`] and [`Connection::wait_for_request_async`] are
//!   the accept-stop primitive and the idle-connection rule of the
//!   [drain contract](crate::drain), awaited instead of blocked on;
//!   [`Connection::draining`] resolves when a connection should finish its
//!   current request and close (hyper: `graceful_shutdown`).
//! - [`serve`] runs [`crate::Incumbent::serve`] on a blocking thread of the
//!   runtime and bridges its hooks: the drain is the [`Drain`]'s, and
//!   [`AsyncDrainable::seal`] and [`AsyncDrainable::resume_after_abort`] run
//!   on the runtime.
//!
//! The runtime must have I/O and time enabled (`#[tokio::main]` does).
//! `handoff/examples/http_server_tokio.rs` is a complete service on hyper.

use std::future::Future;
use std::io;

use ::tokio::net::{TcpListener, TcpStream};
use ::tokio::runtime::Handle;

use crate::drain::{Connection, Drain};
use crate::drainable::{DrainReport, Drainable, SealError, SealReport};
use crate::error::{Error, Result};
use crate::incumbent::{Incumbent, ServeOutcome};

/// An inherited listener in the form tokio wants: set non-blocking, and
/// registered with `drain` so the flag follows the hand-over (blocking while
/// drained, non-blocking while this process accepts). Call it from inside
/// the runtime.
pub fn listener(drain: &Drain, listener: std::net::TcpListener) -> io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    drain.register_nonblocking(listener.try_clone()?);
    TcpListener::from_std(listener)
}

/// Decrements the count of accepts under way when dropped, so an
/// [`Drain::accept_async`] future cancelled by its caller cannot hold a
/// drain until its deadline.
struct Accepting<'a>(&'a Drain);

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        let shared = self.0.shared();
        let mut state = shared.lock();
        state.accepting -= 1;
        drop(state);
        shared.notify();
    }
}

impl Drain {
    /// The async form of [`Drain::accept`]: the next connection on
    /// `listener`, counted as open until the [`Connection`] is dropped.
    /// While accepting is stopped it waits (the connection stays in the
    /// kernel's queue for whoever accepts next), and accepts again after
    /// [`Drain::resume`]. Cancel-safe.
    pub async fn accept_async(
        &self,
        listener: &TcpListener,
    ) -> io::Result<(TcpStream, Connection)> {
        let shared = self.shared();
        let mut stopped = shared.stopped_tx.subscribe();
        loop {
            let _ = stopped.wait_for(|stopped| !*stopped).await;
            let guard = {
                let mut state = shared.lock();
                if state.stopped {
                    continue;
                }
                state.accepting += 1;
                Accepting(self)
            };
            // A stop wins over a connection that is ready at the same
            // moment: that connection stays queued for the successor.
            let accepted = ::tokio::select! {
                biased;
                _ = stopped.wait_for(|stopped| *stopped) => None,
                accepted = listener.accept() => Some(accepted),
            };
            match accepted {
                None => drop(guard),
                Some(Err(e)) => return Err(e),
                Some(Ok((stream, _))) => {
                    // Counted before the accept stops being "under way":
                    // a drain that saw none under way sees this one open.
                    shared.lock().open += 1;
                    drop(guard);
                    return Ok((stream, self.connection()));
                }
            }
        }
    }

    /// Resolves once accepting is stopped (at once if it is).
    pub async fn stopped(&self) {
        let mut stopped = self.shared().stopped_tx.subscribe();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

impl Connection {
    /// The async form of [`Connection::wait_for_request`]: `true` once
    /// `stream` has something to read, `false` when the drain wants this
    /// idle connection closed (close it without reading from it).
    ///
    /// An HTTP stack that reads the connection itself (hyper) needs this
    /// once, before the first request: it closes idle keep-alive
    /// connections itself on `graceful_shutdown` (see
    /// [`Connection::draining`]), but a connection that has not yet
    /// carried a request gets the drain's first-request grace only here.
    pub async fn wait_for_request_async(&mut self, stream: &TcpStream) -> io::Result<bool> {
        let mut stopped = self.shared_stopped();
        loop {
            ::tokio::select! {
                biased;
                readable = stream.readable() => {
                    readable?;
                    self.requests += 1;
                    return Ok(true);
                }
                _ = stopped.wait_for(|stopped| *stopped) => {}
            }
            let Some(grace) = self.grace() else {
                return Ok(false);
            };
            if let Ok(readable) = ::tokio::time::timeout(grace, stream.readable()).await {
                readable?;
                self.requests += 1;
                return Ok(true);
            }
            if *stopped.borrow() {
                return Ok(false);
            }
            // Resumed during the grace: wait as a serving connection again.
        }
    }

    /// Resolves once the service is draining: finish the current request,
    /// answer it as the last on this connection, close (hyper:
    /// `graceful_shutdown`, which also closes the connection at once if it
    /// is idle between requests).
    pub async fn draining(&self) {
        let mut stopped = self.shared_stopped();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    fn shared_stopped(&self) -> ::tokio::sync::watch::Receiver<bool> {
        self.shared().stopped_tx.subscribe()
    }
}

/// The hooks of an async service that its [`Drain`] does not cover.
pub trait AsyncDrainable: Send + 'static {
    /// Make every acknowledged write durable and stop writing, as
    /// [`Drainable::seal`]. Runs after the drain: no connection is open.
    fn seal(&mut self) -> impl Future<Output = std::result::Result<SealReport, SealError>>;

    /// Undo `seal` after an aborted handoff (reopen what it closed), as
    /// [`Drainable::resume_after_abort`]; accepting resumes right after.
    /// Idempotent.
    fn resume_after_abort(&mut self) -> impl Future<Output = ()> {
        async {}
    }

    /// A description of the current state, for logs (free form).
    fn snapshot_state(&self) -> String {
        String::new()
    }
}

/// Run [`Incumbent::serve`] on a blocking thread of the current runtime,
/// with `drain` as the drain and `service`'s hooks run on the runtime.
/// Resolves once a successor has taken over (or with the error that ended
/// serving), like `serve`.
pub async fn serve<S: AsyncDrainable>(
    incumbent: Incumbent,
    drain: Drain,
    service: S,
) -> Result<ServeOutcome> {
    let runtime = Handle::current();
    let task = ::tokio::task::spawn_blocking(move || {
        let mut bridge = Bridge {
            drain,
            service,
            runtime,
        };
        incumbent.serve(&mut bridge)
    });
    task.await
        .map_err(|e| Error::Io(io::Error::other(format!("the serve thread failed: {e}"))))?
}

/// [`Drainable`] for the serve thread: drains with the [`Drain`], runs the
/// service's async hooks on the runtime.
struct Bridge<S> {
    drain: Drain,
    service: S,
    runtime: Handle,
}

impl<S: AsyncDrainable> Drainable for Bridge<S> {
    fn drain(&mut self, deadline: std::time::Instant) -> DrainReport {
        self.drain.drain(deadline)
    }

    fn seal(&mut self) -> std::result::Result<SealReport, SealError> {
        self.runtime.block_on(self.service.seal())
    }

    fn resume_after_abort(&mut self) {
        self.runtime.block_on(self.service.resume_after_abort());
        self.drain.resume();
    }

    fn snapshot_state(&self) -> String {
        self.service.snapshot_state()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use nix::fcntl::{FcntlArg, OFlag, fcntl};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn nonblocking(listener: &std::net::TcpListener) -> bool {
        use std::os::fd::AsRawFd;
        let flags = fcntl(listener.as_raw_fd(), FcntlArg::F_GETFL).unwrap();
        OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK)
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_makes_the_listener_blocking_and_a_resume_gives_it_back_non_blocking() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let drain = Drain::new();
        let listener = listener(&drain, std_listener.try_clone().unwrap()).unwrap();
        assert!(
            nonblocking(&std_listener),
            "tokio's listener is non-blocking"
        );

        let (acceptor, accept_drain) = (drain.clone(), drain.clone());
        let accepted = ::tokio::spawn(async move {
            let (stream, _conn) = accept_drain.accept_async(&listener).await?;
            stream.peer_addr()
        });
        let report =
            ::tokio::task::spawn_blocking(move || acceptor.drain(Instant::now() + DEADLINE))
                .await
                .unwrap();
        assert!(report.accept_closed);
        assert!(!nonblocking(&std_listener), "blocking again while drained");

        // Queued while drained: not taken by the stopped accept.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let mut accepted = accepted;
        let early = ::tokio::time::timeout(Duration::from_millis(200), &mut accepted).await;
        assert!(early.is_err(), "accepted while drained: {early:?}");

        drain.resume();
        assert!(
            nonblocking(&std_listener),
            "non-blocking again once resumed"
        );
        let peer = ::tokio::time::timeout(DEADLINE, accepted)
            .await
            .expect("accept after resume")
            .unwrap()
            .unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }
}
