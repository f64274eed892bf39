//! The incumbent side: the process that serves now, holds the data-dir flock
//! and answers supervisor sessions on its control socket.
//!
//! [`Incumbent::serve`] runs sessions one at a time; a supervisor that
//! connects while a session is in progress gets `Refused` and is closed. In a
//! session the incumbent drains, seals, releases the flock after a successful
//! seal and *before* `SealComplete`, then waits for `Commit` (return, the
//! caller exits) or `ResumeAfterAbort` (retake the flock, serve again).
//! While the service's `drain`/`seal` hooks run, a heartbeat thread keeps the
//! supervisor's liveness clock fresh. There is one such thread per `serve()`
//! call, armed around `drain`/`seal` and disarmed before the next protocol
//! frame is written: it writes only while holding the mutex that disarming
//! takes, so there is only ever one writer.
//!
//! A session's protocol is [`crate::machine::incumbent::SessionMachine`],
//! free of I/O; `Incumbent::session` is its thin driver (socket, heartbeat,
//! `Drainable` hooks, flock, crash points).
//!
//! Recovery on a lost supervisor (DESIGN.md section 5): drained but not
//! sealed → resume; sealed → poll for the flock (`reacquire_step`); if the
//! successor has bound the control socket path it is the incumbent and this
//! process concedes; see [`IncumbentConfig::reacquire_window`] for the bound.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::crash::points;
use crate::crash_here;
use crate::drainable::Drainable;
use crate::error::{Error, Result};
use crate::events;
use crate::frame::{read_frame, write_message};
use crate::lock::DataDirLock;
use crate::machine::incumbent::{Action, End, Input, Params, Retake, SessionMachine};
use crate::protocol::{HandoffId, Message, PROTO_MAX, ProtoVersion};
use crate::util::now_unix_ms;

/// Timeouts of the incumbent side. Defaults are the seed's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncumbentConfig {
    /// Interval between heartbeats while `drain`/`seal` run. Default 2 s.
    pub heartbeat_interval: Duration,
    /// Bound on the wait for `HelloAck` after sending `Hello`. Default 5 s.
    pub hello_timeout: Duration,
    /// Bound on supervisor silence between protocol steps, and on each
    /// write to the supervisor (one that stops reading is as lost as one
    /// that stops writing). Default 10 s.
    pub liveness_timeout: Duration,
    /// After losing the supervisor once sealed: how long to try to retake
    /// the flock before conceding to a successor that holds it. Default 2 s.
    /// The incumbent concedes early when the successor has already bound the
    /// control socket path (proof it sent `Ready`), and past the window it
    /// keeps waiting (up to the handoff's deadline) for one of the two to
    /// happen, so a slow successor never leaves the service without a writer.
    pub reacquire_window: Duration,
    /// Poll step while retaking the flock. Default 25 ms.
    pub reacquire_step: Duration,
    /// Accept supervisors running as another uid (checked with
    /// `SO_PEERCRED`). Default false: a peer of another uid is refused and
    /// the refusal logged. Root (uid 0) is always accepted.
    pub allow_other_uids: bool,
    /// Cap on the handoff deadline a supervisor may set in
    /// `PrepareHandoff`: past it, a sealed incumbent that lost its
    /// supervisor stops waiting for the successor. A larger request is
    /// clamped (and logged). Default 10 minutes, twice the supervisor's
    /// default deadline.
    pub max_deadline: Duration,
}

impl Default for IncumbentConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
            liveness_timeout: Duration::from_secs(10),
            reacquire_window: Duration::from_secs(2),
            reacquire_step: Duration::from_millis(25),
            allow_other_uids: false,
            max_deadline: Duration::from_secs(600),
        }
    }
}

impl IncumbentConfig {
    /// The defaults, overridden by `HANDOFF_HEARTBEAT_MS`,
    /// `HANDOFF_HELLO_TIMEOUT_MS`, `HANDOFF_LIVENESS_MS`,
    /// `HANDOFF_REACQUIRE_WINDOW_MS`, `HANDOFF_REACQUIRE_STEP_MS` and
    /// `HANDOFF_MAX_DEADLINE_MS` where set. Lets a test harness run any service in milliseconds.
    pub fn from_env() -> Result<Self> {
        let mut c = Self::default();
        override_ms(&mut c.heartbeat_interval, "HANDOFF_HEARTBEAT_MS")?;
        override_ms(&mut c.hello_timeout, "HANDOFF_HELLO_TIMEOUT_MS")?;
        override_ms(&mut c.liveness_timeout, "HANDOFF_LIVENESS_MS")?;
        override_ms(&mut c.reacquire_window, "HANDOFF_REACQUIRE_WINDOW_MS")?;
        override_ms(&mut c.reacquire_step, "HANDOFF_REACQUIRE_STEP_MS")?;
        override_ms(&mut c.max_deadline, "HANDOFF_MAX_DEADLINE_MS")?;
        Ok(c)
    }
}

/// Replace `slot` with the millisecond duration in the environment variable
/// `name`, when it is set; a malformed value is an error naming it.
pub(crate) fn override_ms(slot: &mut Duration, name: &str) -> Result<()> {
    let Ok(v) = std::env::var(name) else {
        return Ok(());
    };
    let ms = v
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0 && *ms <= 24 * 3600 * 1000)
        .ok_or_else(|| {
            Error::Environment(format!(
                "{name}={v:?} must be a whole number of milliseconds between 1 and 86400000"
            ))
        })?;
    *slot = Duration::from_millis(ms);
    Ok(())
}

/// How [`Incumbent::serve`] ended. Either way the caller finishes what is
/// left and exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeOutcome {
    /// The supervisor committed the handoff.
    Committed {
        /// The handoff.
        handoff_id: HandoffId,
    },
    /// The supervisor vanished after the seal and the successor took over:
    /// it holds the flock and has bound the control socket.
    Superseded {
        /// The handoff.
        handoff_id: HandoffId,
    },
}

/// The process that serves now: holds the flock and the control socket.
pub struct Incumbent {
    listener: UnixListener,
    socket_path: PathBuf,
    /// Inode of our socket file, to tell when a successor has renamed its
    /// own over the path.
    socket_ino: u64,
    lock: Option<DataDirLock>,
    /// Where the flock lives, to retake it after a seal.
    data_dir: PathBuf,
    build_id: Vec<u8>,
    config: IncumbentConfig,
    /// The emptied private directory the control socket was bound in
    /// (successor path): removed when `serve` starts, after the service
    /// does, not on the path where no process accepts.
    leftover_dir: Option<PathBuf>,
}

impl Incumbent {
    /// First incumbent: bind the control socket at `socket_path` while
    /// holding `lock`. The socket is created with mode 0600 under a
    /// temporary name and renamed into place, so it is never reachable with
    /// wider permissions. A stale socket file (nobody answers) is replaced; a
    /// live one is an error.
    pub fn bind_cold_start(socket_path: &Path, lock: DataDirLock) -> Result<Self> {
        crate::crash::check_env()?;
        if socket_path.exists() {
            match UnixStream::connect(socket_path) {
                Ok(_) => {
                    return Err(Error::Protocol(format!(
                        "control socket {} is answered by a live process; \
                         is another incumbent running?",
                        socket_path.display()
                    )));
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        let listener = bind_private_socket(socket_path)?;
        crash_here!(points::O_AFTER_CONTROL_BOUND);
        tracing::info!(target: events::INCUMBENT_BOUND, path = %socket_path.display(), pid = std::process::id(), "control socket bound");
        Self::from_parts(listener, socket_path, lock)
    }

    /// Assemble an incumbent from a control socket already bound at
    /// `socket_path` (the successor's path into this role).
    pub(crate) fn from_parts(
        listener: UnixListener,
        socket_path: &Path,
        lock: DataDirLock,
    ) -> Result<Self> {
        let socket_ino = std::fs::symlink_metadata(socket_path)?.ino();
        Ok(Self {
            listener,
            socket_path: socket_path.to_path_buf(),
            socket_ino,
            data_dir: lock.data_dir().to_path_buf(),
            lock: Some(lock),
            build_id: Vec::new(),
            config: IncumbentConfig::default(),
            leftover_dir: None,
        })
    }

    /// Remove `dir` (the emptied private directory of a published temporary
    /// socket) when `serve` starts.
    pub(crate) fn with_leftover_dir(mut self, dir: PathBuf) -> Self {
        self.leftover_dir = Some(dir);
        self
    }

    /// Set the build id announced in `Hello`.
    pub fn with_build_id(mut self, build_id: Vec<u8>) -> Self {
        self.build_id = build_id;
        self
    }

    /// Override the timeouts.
    pub fn with_config(mut self, config: IncumbentConfig) -> Self {
        self.config = config;
        self
    }

    /// The control socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// True while this process holds the data-dir flock.
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// Serve supervisor sessions, one at a time, until a handoff commits or
    /// a successor supersedes this process. Sessions that fail (a protocol
    /// error, a lost or silent supervisor, an aborted handoff) leave the
    /// service serving with the flock, and the next session is accepted.
    pub fn serve<D: Drainable>(mut self, drainable: &mut D) -> Result<ServeOutcome> {
        // A successor's take-over left these for now, when it serves.
        if let Some(dir) = self.leftover_dir.take() {
            // Best effort: an empty directory left behind is litter only.
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(lock) = self.lock.as_mut() {
            lock.record_holder_pid();
        }
        // One heartbeat thread for all the sessions of this call; dropping
        // it (on every way out of this function) stops and joins it.
        let heartbeat = Heartbeat::start()?;
        let listener = Arc::new(self.listener.try_clone()?);
        let slot = Arc::new(SessionSlot::default());
        let (tx, rx) = mpsc::sync_channel::<UnixStream>(0);
        let acceptor = {
            let listener = Arc::clone(&listener);
            let slot = Arc::clone(&slot);
            let allow_other_uids = self.config.allow_other_uids;
            // A supervisor that connects just as the previous session ends
            // (it closed its side, the incumbent is still resuming) waits
            // for that end instead of being refused; well inside the
            // supervisor's wait for Hello, so a real second supervisor
            // still gets its clear refusal.
            let end_grace = (self.config.hello_timeout / 4).min(SESSION_END_GRACE);
            thread::Builder::new()
                .name("handoff-control".into())
                .spawn(move || accept_loop(&listener, &slot, end_grace, allow_other_uids, tx))?
        };

        let result = loop {
            let Ok(stream) = rx.recv() else {
                break Err(Error::Protocol(
                    "control socket acceptor stopped unexpectedly".into(),
                ));
            };
            // A second handle keeps the connection open until the session
            // is marked over: a supervisor that sees it close (end of
            // stream) may connect again at once and must not be refused as
            // a second session.
            let held_open = stream.try_clone().ok();
            let end = self.session(stream, drainable, &slot, &heartbeat);
            slot.release();
            drop(held_open);
            match end {
                SessionEnd::Continue => continue,
                SessionEnd::Done(outcome) => break Ok(outcome),
            }
        };

        // Stop the acceptor: shutting the listening socket down makes a
        // blocked accept(2) return.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&*listener),
            nix::sys::socket::Shutdown::Both,
        );
        drop(rx);
        let _ = acceptor.join();
        drop(heartbeat);
        result
    }

    /// One supervisor session: the thin driver of [`SessionMachine`].
    /// Whatever happens, on return the service is either serving with the
    /// flock (`Continue`) or handed off (`Done`).
    fn session<D: Drainable>(
        &mut self,
        mut stream: UnixStream,
        drainable: &mut D,
        slot: &SessionSlot,
        heartbeat: &Heartbeat,
    ) -> SessionEnd {
        let cfg = self.config.clone();
        let params = Params {
            pid: std::process::id(),
            build_id: self.build_id.clone(),
            hello_timeout: cfg.hello_timeout,
            liveness_timeout: cfg.liveness_timeout,
            max_deadline: cfg.max_deadline,
            holds_flock: self.lock.is_some(),
        };
        let (mut machine, mut action) = SessionMachine::start(params, Instant::now());
        loop {
            let input = match action {
                Action::Finish(end) => {
                    return match end {
                        End::Continue => SessionEnd::Continue,
                        End::Committed(handoff_id) => {
                            SessionEnd::Done(ServeOutcome::Committed { handoff_id })
                        }
                        End::Superseded(handoff_id) => {
                            SessionEnd::Done(ServeOutcome::Superseded { handoff_id })
                        }
                    };
                }
                // A supervisor that stops reading is as lost as one that
                // stops writing: bound every write on this socket, the
                // heartbeat's included (a clone shares the socket, and
                // `SO_SNDTIMEO` with it), so a full socket buffer cannot hold
                // the heartbeat's mutex, and with it the end of
                // `drain`/`seal`, for ever.
                Action::SetWriteTimeout(t) => match stream.set_write_timeout(Some(t)) {
                    Ok(()) => Input::Done,
                    Err(e) => Input::Failed(e.into()),
                },
                Action::Send { version, msg } => match write_message(&mut stream, version, &msg) {
                    Ok(()) => Input::Done,
                    Err(e) => Input::Failed(e),
                },
                Action::Read {
                    session,
                    timeout,
                    awaiting,
                } => match read_frame(&mut stream, session, timeout, awaiting) {
                    Ok((version, msg)) => Input::Frame { version, msg },
                    Err(e) => Input::ReadFailed(e),
                },
                Action::SetCurrent(handoff_id) => {
                    slot.lock().current = Some(handoff_id);
                    Input::Done
                }
                Action::Drain { deadline } => {
                    match heartbeat.beat_while(
                        &stream,
                        machine.version(),
                        cfg.heartbeat_interval,
                        || drainable.drain(deadline),
                    ) {
                        Ok(report) => Input::Drained(report),
                        Err(e) => Input::Failed(e),
                    }
                }
                Action::Seal => {
                    match heartbeat.beat_while(
                        &stream,
                        machine.version(),
                        cfg.heartbeat_interval,
                        || drainable.seal(),
                    ) {
                        Ok(result) => Input::Sealed(result),
                        Err(e) => Input::Failed(e),
                    }
                }
                Action::ReleaseFlock => {
                    if let Some(lock) = self.lock.take() {
                        lock.release_to_successor();
                    }
                    Input::Done
                }
                Action::RetakeFlock { give_up_at } => {
                    slot.lock().winding_up = true;
                    Input::Retake(self.retake_lock(give_up_at))
                }
                Action::Resume => {
                    slot.lock().winding_up = true;
                    drainable.resume_after_abort();
                    Input::Done
                }
                Action::CrashPoint(point) => {
                    crate::crash::hit(point);
                    Input::Done
                }
            };
            action = machine.next(Instant::now(), input);
        }
    }

    /// Poll for the flock every `reacquire_step`. Concede when the control
    /// socket path has been rebound by another process while the flock stays
    /// held, or when the flock is still held once both the reacquire window
    /// and the handoff's deadline have passed.
    fn retake_lock(&mut self, deadline: Option<Instant>) -> Retake {
        let data_dir = self.data_dir.clone();
        let window_end = Instant::now() + self.config.reacquire_window;
        let give_up_at = deadline.map_or(window_end, |d| d.max(window_end));
        // Neither a flock released by another process nor a rename over our
        // path is announced to us: look until one happens or the bound
        // passes.
        let outcome = crate::util::poll_until(
            crate::util::remaining(give_up_at),
            self.config.reacquire_step,
            || {
                // A successor that renamed its control socket over the path
                // has sent Ready: it is the incumbent, even if it has died
                // since (a process manager restarts the service then).
                // Resuming here would serve without a reachable control
                // socket.
                if self.path_rebound() {
                    return Some(Retake::PathRebound);
                }
                match DataDirLock::acquire(&data_dir) {
                    Ok(lock) => {
                        self.lock = Some(lock);
                        Some(Retake::Taken)
                    }
                    Err(e) if self.path_rebound() => {
                        tracing::debug!(error = %e, "flock held by a successor that rebound the path");
                        Some(Retake::PathRebound)
                    }
                    Err(_) => None,
                }
            },
        );
        outcome.unwrap_or_else(|| {
            tracing::debug!("flock still held by the successor past the bound");
            Retake::GaveUp
        })
    }

    fn path_rebound(&self) -> bool {
        match std::fs::symlink_metadata(&self.socket_path) {
            Ok(m) => m.ino() != self.socket_ino,
            Err(_) => false,
        }
    }
}

enum SessionEnd {
    Continue,
    Done(ServeOutcome),
}

/// The heartbeat thread of one [`Incumbent::serve`] call. It sleeps on a
/// condition variable until armed; while armed it writes a `Heartbeat` every
/// `interval` to the session's socket. It writes only while holding the
/// state mutex, and [`Heartbeat::beat_while`] disarms by clearing the writer
/// under that mutex: once disarming returned, no heartbeat can be written
/// any more and the caller is again the socket's only writer. Dropping the
/// `Heartbeat` stops and joins the thread.
struct Heartbeat {
    shared: Arc<HeartbeatShared>,
    thread: Option<JoinHandle<()>>,
}

struct HeartbeatShared {
    state: Mutex<HeartbeatState>,
    /// Signalled on arm and on shutdown.
    wake: Condvar,
}

#[derive(Default)]
struct HeartbeatState {
    /// `Some` while armed.
    armed: Option<Armed>,
    shutdown: bool,
}

/// What an armed heartbeat writes to, and when.
struct Armed {
    /// A clone of the session's socket, dropped on disarm (or on a write
    /// error), so none outlives the drain or seal it covered.
    writer: UnixStream,
    version: ProtoVersion,
    interval: Duration,
    next_beat: Instant,
}

impl Heartbeat {
    fn start() -> Result<Self> {
        let shared = Arc::new(HeartbeatShared {
            state: Mutex::new(HeartbeatState::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("handoff-heartbeat".into())
                .spawn(move || shared.run())?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Run `f` with the heartbeat armed on `stream`; disarmed before this
    /// returns (or unwinds), so the caller is then the only writer.
    fn beat_while<T>(
        &self,
        stream: &UnixStream,
        version: ProtoVersion,
        interval: Duration,
        f: impl FnOnce() -> T,
    ) -> Result<T> {
        let writer = stream.try_clone()?;
        {
            let mut state = self.shared.lock();
            state.armed = Some(Armed {
                writer,
                version,
                interval,
                next_beat: Instant::now() + interval,
            });
        }
        self.shared.wake.notify_one();
        let _disarm = Disarm(&self.shared);
        Ok(f())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.shutdown = true;
            state.armed = None;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Disarms the heartbeat when dropped: takes the state mutex (waiting for a
/// heartbeat being written, if any) and drops the writer.
struct Disarm<'a>(&'a HeartbeatShared);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        // No wake-up: a thread waiting for its next beat finds nothing to do
        // when it wakes and goes back to waiting for the next arm.
        let armed = self.0.lock().armed.take();
        // Close the clone outside the lock.
        drop(armed);
    }
}

impl HeartbeatShared {
    fn lock(&self) -> MutexGuard<'_, HeartbeatState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread's body: wait to be armed, beat on time while armed, return
    /// on shutdown.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            if state.shutdown {
                return;
            }
            let Some(armed) = state.armed.as_mut() else {
                state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let now = Instant::now();
            if now < armed.next_beat {
                let wait = armed.next_beat - now;
                state = self
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            // Written with the mutex held: disarming waits for this write.
            let hb = Message::Heartbeat {
                ts_ms: now_unix_ms(),
            };
            if write_message(&mut armed.writer, armed.version, &hb).is_ok() {
                armed.next_beat = now + armed.interval;
            } else {
                // The supervisor is gone; the session's next read will say
                // so. Stop beating for this session; the thread stays for
                // the next one.
                state.armed = None;
            }
        }
    }
}

/// Upper bound on how long a connecting supervisor waits for the session in
/// progress to end before it is refused (a quarter of the hello timeout when
/// that is shorter).
const SESSION_END_GRACE: Duration = Duration::from_millis(250);

/// The one supervisor session an incumbent runs at a time, shared by the
/// session loop (which releases it) and the acceptor (which claims it, or
/// refuses a second supervisor).
#[derive(Default)]
struct SessionSlot {
    state: Mutex<SlotState>,
    /// Signalled when a session ends.
    ended: Condvar,
}

/// What the acceptor knows of the session in progress.
#[derive(Default, Clone, Copy)]
struct SlotState {
    busy: bool,
    /// The handoff of the session in progress, once its supervisor said it.
    current: Option<HandoffId>,
    /// The session is winding up: the incumbent resumes or retakes its flock.
    winding_up: bool,
}

impl SessionSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the slot for a new session, waiting up to `grace` for the one in
    /// progress to end; `Err` with what that session is when it does not.
    fn claim_within(&self, grace: Duration) -> std::result::Result<(), SlotState> {
        let (mut state, _) = self
            .ended
            .wait_timeout_while(self.lock(), grace, |s| s.busy)
            .unwrap_or_else(|p| p.into_inner());
        if state.busy {
            return Err(*state);
        }
        *state = SlotState {
            busy: true,
            ..SlotState::default()
        };
        Ok(())
    }

    /// The session is over: the next supervisor may have the slot.
    fn release(&self) {
        *self.lock() = SlotState::default();
        self.ended.notify_all();
    }
}

/// Accept supervisor connections; hand one at a time to the session loop and
/// refuse the rest while it is busy.
fn accept_loop(
    listener: &UnixListener,
    slot: &SessionSlot,
    end_grace: Duration,
    allow_other_uids: bool,
    tx: mpsc::SyncSender<UnixStream>,
) {
    let refuse = |mut stream: UnixStream, reason: String| {
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = write_message(&mut stream, PROTO_MAX, &Message::Refused { reason });
    };
    let our_uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                tracing::warn!(error = %e, "control socket accept failed; retrying");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            // Shut down (serve is returning) or broken: stop.
            Err(_) => return,
        };
        if !allow_other_uids {
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            {
                Ok(cred) if cred.uid() == our_uid || cred.uid() == 0 => {}
                Ok(cred) => {
                    let reason = format!(
                        "peer uid {} (pid {}) is not this process's uid {our_uid}; \
                         run the supervisor as the same user or set allow_other_uids",
                        cred.uid(),
                        cred.pid()
                    );
                    tracing::warn!(target: events::INCUMBENT_REFUSED, peer_uid = cred.uid(), peer_pid = cred.pid(), reason = %reason, "refused a supervisor of another uid");
                    refuse(stream, reason);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(target: events::INCUMBENT_REFUSED, error = %e, "cannot read peer credentials; refusing");
                    refuse(stream, format!("cannot read peer credentials: {e}"));
                    continue;
                }
            }
        }
        if let Err(busy) = slot.claim_within(end_grace) {
            let reason = match (busy.current, busy.winding_up) {
                (Some(id), true) => format!(
                    "the session of handoff {id} is ending (the incumbent is resuming); retry in a moment"
                ),
                (Some(id), false) => {
                    format!("another supervisor is driving handoff {id}; retry when it ends")
                }
                (None, _) => {
                    "another supervisor session is in progress; retry when it ends".to_string()
                }
            };
            tracing::warn!(target: events::INCUMBENT_REFUSED, reason = %reason, "refused a second supervisor");
            refuse(stream, reason);
            continue;
        }
        if tx.send(stream).is_err() {
            return;
        }
    }
}

/// Bind a Unix listener at `path` that is never reachable with a mode wider
/// than 0600: bound in a private 0700 directory, set to 0600 there, then
/// renamed into place (atomically replacing whatever was at `path`). Used
/// for the control socket, and by the supervisor daemon for its trigger
/// socket.
pub fn bind_private_socket(path: &Path) -> Result<UnixListener> {
    let (listener, temp) = bind_temporary(path)?;
    publish(&temp, path)?;
    Ok(listener)
}

/// Bind a Unix listener that only its owner can reach, under a temporary
/// name next to `path`, for [`publish`] (or [`discard_temporary`]).
///
/// `bind(2)` creates the socket file with the mode the umask leaves
/// (0777 under umask 0), and another user may connect to it until the mode
/// is narrowed. So the socket is bound inside a directory created for it
/// with mode 0700 (`.<name>.tmp.<pid>/s`), and set to 0600 there: at no
/// instant is it reachable by another user, whatever the umask.
pub(crate) fn bind_temporary(path: &Path) -> Result<(UnixListener, PathBuf)> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Protocol(format!("{} is not a socket path", path.display())))?;
    let mut dir_name = std::ffi::OsString::from(".");
    dir_name.push(file_name);
    dir_name.push(format!(".tmp.{}", std::process::id()));
    let private_dir = path.with_file_name(dir_name);
    // Left behind by a crashed process that had our pid: a socket (older
    // builds) or a directory.
    let _ = std::fs::remove_file(&private_dir);
    let _ = std::fs::remove_dir_all(&private_dir);
    sweep_temporaries(path);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private_dir)?;
    let temp = private_dir.join("s");
    let bound = UnixListener::bind(&temp)
        .and_then(|listener| {
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
            Ok(listener)
        })
        .map_err(Error::Io);
    match bound {
        Ok(listener) => Ok((listener, temp)),
        Err(e) => {
            discard_temporary(&temp);
            Err(e)
        }
    }
}

/// Remove the temporary sockets of dead processes next to `path`: a
/// successor killed before it announced itself (an aborted handoff: the
/// supervisor SIGKILLs it) cannot remove its own. Each bind sweeps what the
/// ones before it left. A live process's, or an unparsable name, is left
/// alone.
fn sweep_temporaries(path: &Path) {
    let (Some(dir), Some(file_name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp.");
    let prefix = prefix.as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .as_encoded_bytes()
            .strip_prefix(prefix)
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .and_then(|rest| rest.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !crate::lock::process_is_running(pid) {
            discard_temporary(&entry.path().join("s"));
        }
    }
}

/// Move a socket bound by [`bind_temporary`] onto its final path (atomic
/// replace of whatever was there), and remove its private directory.
pub(crate) fn publish(temp: &Path, path: &Path) -> Result<()> {
    let private_dir = publish_keeping_dir(temp, path)?;
    // Best effort: an empty directory left behind is litter only.
    let _ = std::fs::remove_dir(private_dir);
    Ok(())
}

/// [`publish`], except that the emptied private directory is returned for
/// the caller to remove later (an rmdir is a metadata update that need not
/// delay anything). On failure everything is removed.
pub(crate) fn publish_keeping_dir(temp: &Path, path: &Path) -> Result<PathBuf> {
    match std::fs::rename(temp, path) {
        Ok(()) => Ok(temp
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))),
        Err(e) => {
            discard_temporary(temp);
            Err(Error::Io(e))
        }
    }
}

/// Remove a socket bound by [`bind_temporary`] (if still there) and its
/// private directory. Best effort: what is left is litter, never reachable.
pub(crate) fn discard_temporary(temp: &Path) {
    let _ = std::fs::remove_file(temp);
    if let Some(private_dir) = temp.parent() {
        let _ = std::fs::remove_dir(private_dir);
    }
}
