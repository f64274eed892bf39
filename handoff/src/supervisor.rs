//! Supervisor side: spawn the successor, drive the protocol, handle abort and
//! resume, journal every phase.
//!
//! This module is sync: run [`Supervisor::perform_handoff`] on any thread.
//! The protocol itself is [`crate::machine::supervisor::SupervisorMachine`],
//! free of I/O; `drive_handoff` here is its thin driver (sockets, spawn,
//! journal writer, crash points, child guard). It follows the original design (`seeds/supervisor.rs`) step for step — the
//! same phases, messages, timeouts, child guard, journal writes and crash
//! points — with these differences, each deliberate:
//!
//! - the journal's `incumbent_pid` is the incumbent's pid from its `Hello`
//!   (the seed recorded the supervisor's own pid);
//! - every timeout is configurable through [`SupervisorTimeouts`] (the seed's
//!   values are the defaults) so tests drive hung peers in milliseconds;
//! - every frame after `HelloAck` must carry the negotiated version and the
//!   session's handoff_id;
//! - `resume_from_journal` survives a corrupt journal and waits (bounded) for
//!   the incumbent to answer instead of probing once;
//! - only the `Negotiating` journal write is waited for (before
//!   `PrepareHandoff`, overlapped with the successor's start-up); later
//!   phases are made durable in order by a background writer
//!   (`journal_writer.rs`; ARCHITECTURE.md says why).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::events;
use crate::fd::pass_listener_fds_on_spawn;
use crate::frame::{read_message, write_message};
use crate::journal_writer::{JournalOp, JournalWriter, When};
pub use crate::machine::supervisor::SupervisorTimeouts;
use crate::machine::supervisor::{Action, Input, Params, SupervisorMachine};
use crate::protocol::{HandoffId, Message, Side, short_name};
use crate::state::StateJournal;
use crate::util::{is_timeout, now_unix_ms};

/// One supervised service: the incumbent's control socket, the listeners the
/// successor inherits, the journal.
pub struct Supervisor {
    socket_path: PathBuf,
    /// Listener FDs the successor inherits, keyed by logical name, in
    /// insertion order so FD assignment is stable across spawns.
    listener_fds: Vec<(String, RawFd)>,
    journal: Option<JournalWriter>,
    build_id: Vec<u8>,
    timeouts: SupervisorTimeouts,
    /// At most one in-flight handoff per service.
    in_flight: Mutex<()>,
}

/// How to start a process: the successor of a handoff, or the first
/// incumbent of a cold start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The binary to run.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment for the child, on top of the inherited one (the
    /// handoff envelope — `HANDOFF_*`, `LISTEN_*` — is set by the library and
    /// never inherited).
    pub env: Vec<(String, String)>,
    /// Wall-clock cap on the whole handoff, from `perform_handoff` through the
    /// `Commit` send. Reads for `SealComplete` and `Ready` may run up to
    /// `wire_slack` past it. Tune to `p99(drain) + p99(seal) + 30 s`.
    /// Default: 5 minutes.
    pub deadline: Duration,
    /// Cap on the drain phase; the read for `Drained` may run up to
    /// `wire_slack` past it. Default: 60 seconds.
    pub drain_grace: Duration,
}

impl SpawnSpec {
    /// A spec for `binary` with the recommended defaults: 5 minute
    /// `deadline`, 60 second `drain_grace`, no extra args or env.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            args: Vec::new(),
            env: Vec::new(),
            deadline: Duration::from_secs(300),
            drain_grace: Duration::from_secs(60),
        }
    }
}

/// How a handoff ended (when it did not end in an error).
#[derive(Debug)]
pub struct HandoffOutcome {
    /// The handoff.
    pub handoff_id: HandoffId,
    /// True when the successor is the incumbent now.
    pub committed: bool,
    /// Why the handoff was aborted, when it was.
    pub abort_reason: Option<String>,
    /// On commit, the new incumbent's process: the caller owns it from here.
    /// `None` otherwise (the successor was killed and reaped).
    pub child: Option<Child>,
}

/// Kills and reaps the successor on drop unless disarmed, so an early return
/// after the spawn never leaks it.
struct ChildGuard {
    child: Option<Child>,
    pid: u32,
}

impl ChildGuard {
    fn new(child: Child) -> Self {
        let pid = child.id();
        Self {
            child: Some(child),
            pid,
        }
    }

    fn id(&self) -> u32 {
        self.pid
    }

    /// Hand the child over without killing it (commit path).
    fn disarm(mut self) -> Child {
        self.child
            .take()
            .expect("BUG: ChildGuard holds its child until disarm or drop")
    }

    fn kill_and_reap(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            tracing::warn!(
                target: events::ABORT,
                cause = "error",
                successor_pid = self.pid,
                "killing the successor: the handoff ended in an error"
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Supervisor {
    /// A supervisor for the incumbent whose control socket is `socket_path`.
    /// Fails if `HANDOFF_CRASH_AT` is set but invalid.
    pub fn new(socket_path: &Path) -> Result<Self> {
        crate::crash::check_env()?;
        Ok(Self {
            socket_path: socket_path.to_path_buf(),
            listener_fds: Vec::new(),
            journal: None,
            build_id: Vec::new(),
            timeouts: SupervisorTimeouts::default(),
            in_flight: Mutex::new(()),
        })
    }

    /// Register a listener the successor inherits (at FD `3 + index`, named
    /// `name` in `LISTEN_FDNAMES`). The caller keeps the socket open.
    ///
    /// ```no_run
    /// # use std::os::fd::AsRawFd;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
    /// let sup = handoff::Supervisor::new("/run/svc/control.sock".as_ref())?
    ///     .with_listener("http", listener.as_raw_fd())
    ///     .with_journal("/var/lib/svc/handoff.journal".into());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_listener(mut self, name: impl Into<String>, fd: RawFd) -> Self {
        self.listener_fds.push((name.into(), fd));
        self
    }

    /// Journal the in-flight handoff's phase at `path`.
    pub fn with_journal(mut self, path: PathBuf) -> Self {
        self.journal = Some(JournalWriter::new(path));
        self
    }

    /// Build identity announced nowhere yet, kept for logs.
    pub fn with_build_id(mut self, build_id: Vec<u8>) -> Self {
        self.build_id = build_id;
        self
    }

    /// Override the timeouts.
    pub fn with_timeouts(mut self, timeouts: SupervisorTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The registered listeners, in FD order.
    pub fn listeners(&self) -> &[(String, RawFd)] {
        &self.listener_fds
    }

    /// Start the first incumbent with this supervisor's listeners, as
    /// systemd's socket activation would (`LISTEN_FDS` at 3..). Used by the
    /// `handoff-supervisor` binary and by the harness.
    pub fn cold_start(&self, spec: &SpawnSpec) -> Result<Child> {
        let mut cmd = Command::new(&spec.binary);
        cmd.args(&spec.args);
        strip_handoff_env(&mut cmd);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        pass_listener_fds_on_spawn(&mut cmd, &self.listener_fds, None);
        Ok(cmd.spawn()?)
    }

    /// Drive one handoff from the current incumbent to a successor spawned
    /// from `spec`. Returns `Ok` with `committed: false` when the handoff was
    /// aborted and the incumbent resumed; `Err` when it could not run.
    pub fn perform_handoff(&self, spec: SpawnSpec) -> Result<HandoffOutcome> {
        let result = self
            .in_flight
            .try_lock()
            .map_err(|_| Error::HandoffInProgress)
            .and_then(|_in_flight| {
                // The previous handoff's clear may still be in flight.
                if let Err(e) = self.sync_journal() {
                    tracing::warn!(target: events::JOURNAL, error = %e, "the previous handoff's journal clear failed; this handoff overwrites the journal");
                }
                // A journal that cannot be written would fail the handoff
                // half-way; find out before any peer changes state.
                self.check_journal_writable()?;
                // The machine clears the journal it wrote whichever way
                // the handoff ends (DESIGN section 5).
                self.drive_handoff(spec)
            });
        if let Err(e) = &result {
            tracing::warn!(target: events::OUTCOME, committed = false, failed = true, error = %e, "handoff failed");
        }
        result
    }

    /// The handoff itself, under the in-flight mutex: the thin driver of
    /// [`SupervisorMachine`], doing the I/O each action asks for.
    fn drive_handoff(&self, spec: SpawnSpec) -> Result<HandoffOutcome> {
        let handoff_id = HandoffId::new();
        let params = Params {
            handoff_id,
            deadline: spec.deadline,
            drain_grace: spec.drain_grace,
            timeouts: self.timeouts.clone(),
            started_unix_ms: now_unix_ms(),
            binary: spec.binary.display().to_string(),
        };
        let (mut machine, mut action) = SupervisorMachine::start(params, Instant::now());
        let mut o_stream: Option<UnixStream> = None;
        let mut n_stream: Option<UnixStream> = None;
        let mut guard: Option<ChildGuard> = None;
        let mut child: Option<Child> = None;
        loop {
            let input = match action {
                Action::Finish(result) => {
                    return result.map(|f| HandoffOutcome {
                        handoff_id,
                        committed: f.committed,
                        abort_reason: f.abort_reason,
                        child: child.take(),
                    });
                }
                Action::Connect => match UnixStream::connect(&self.socket_path) {
                    Ok(s) => {
                        o_stream = Some(s);
                        Input::Done
                    }
                    Err(e) => Input::Failed(e.into()),
                },
                Action::Pause(d) => {
                    // Pacing between refused attempts while the old session
                    // closes.
                    std::thread::sleep(d);
                    Input::Done
                }
                Action::Spawn => match self.spawn_with_channel(&spec) {
                    Ok((g, s)) => {
                        let pid = g.id();
                        guard = Some(g);
                        n_stream = Some(s);
                        Input::Spawned(pid)
                    }
                    Err(e) => Input::Failed(e),
                },
                Action::Read { from, until } => {
                    match stream_of(from, &mut o_stream, &mut n_stream) {
                        Ok(s) => read_until(s, until),
                        Err(e) => Input::Failed(e),
                    }
                }
                Action::Send { to, version, msg } => {
                    match stream_of(to, &mut o_stream, &mut n_stream)
                        .and_then(|s| write_message(s, version, &msg))
                    {
                        Ok(()) => Input::Done,
                        Err(e) => Input::Failed(e),
                    }
                }
                Action::Journal { entry, at_once } => {
                    let when = if at_once { When::Now } else { When::Coalesced };
                    match self.journal_record(entry, when) {
                        Ok(()) => Input::Done,
                        Err(e) => Input::Failed(e),
                    }
                }
                Action::JournalFlush { entry } => match self.journal_flush(&entry) {
                    Ok(()) => Input::Done,
                    Err(e) => Input::Failed(e),
                },
                Action::JournalClear => {
                    self.journal_clear(handoff_id);
                    Input::Done
                }
                Action::CrashPoint(point) => {
                    self.crash_point(point);
                    Input::Done
                }
                Action::KillSuccessor => {
                    if let Some(g) = guard.take() {
                        g.kill_and_reap();
                    }
                    Input::Done
                }
                Action::DisarmGuard => {
                    child = guard.take().map(ChildGuard::disarm);
                    Input::Done
                }
            };
            action = machine.next(Instant::now(), input);
        }
    }

    /// Spawn the successor with its end of a fresh control channel; return
    /// it under a guard, with the supervisor's end.
    fn spawn_with_channel(&self, spec: &SpawnSpec) -> Result<(ChildGuard, UnixStream)> {
        let (s_end, n_end) = make_socketpair()?;
        let child = self.spawn_successor(spec, n_end.as_raw_fd())?;
        // The child has its own copy now; ours must go so N's EOF detection
        // sees only S's end.
        drop(n_end);
        Ok((ChildGuard::new(child), s_end))
    }

    /// Call once before the first `perform_handoff` after a supervisor
    /// restart: read any journal left by a supervisor that died mid-handoff,
    /// wait (bounded by `timeouts.probe`) until the incumbent answers, and
    /// clear the journal.
    ///
    /// The incumbent recovers from a lost supervisor by itself (drained →
    /// resume; sealed → retake the flock or, if the successor holds it,
    /// concede), so this only has to make sure that recovery has settled.
    /// A corrupt journal is logged and removed, and recovery proceeds:
    /// `Ok(None)` is returned for it as for an absent one.
    pub fn resume_from_journal(&self) -> Result<Option<StateJournal>> {
        let Some(writer) = &self.journal else {
            return Ok(None);
        };
        let path = writer.path();
        // Our own recorded phases first: the file must be what we last said.
        if let Err(e) = writer.flush() {
            tracing::warn!(target: events::JOURNAL, error = %e, "an earlier journal write failed");
        }
        let journal = match StateJournal::read(path) {
            Ok(None) => return Ok(None),
            Ok(Some(j)) => {
                tracing::warn!(target: events::RECOVER, handoff_id = %j.handoff_id, phase = ?j.phase, incumbent_pid = j.incumbent_pid, successor_pid = ?j.successor_pid, "found an in-flight handoff on disk; waiting for the incumbent, then clearing it");
                Some(j)
            }
            Err(e) => {
                tracing::warn!(target: events::RECOVER, error = %e, "journal unreadable; recovery proceeds without it");
                None
            }
        };
        match self.probe_incumbent() {
            Ok(pid) => {
                tracing::info!(target: events::RECOVER, incumbent_pid = pid, "incumbent answers");
            }
            Err(Error::Refused(reason)) => {
                // Still refused after the probe's bound: another supervisor
                // is alive and driving a handoff. Its journal is not ours to
                // clear, and we must not start a second handoff.
                tracing::warn!(target: events::RECOVER, reason = %reason, "incumbent refuses: another supervisor is driving a handoff; leaving its journal alone");
                return Err(Error::Refused(reason));
            }
            Err(e) => {
                // Nobody answers at all: the incumbent is gone, and its
                // replacement (a cold start) starts from the data dir, not
                // from this journal.
                tracing::warn!(target: events::RECOVER, error = %e, "incumbent did not answer during journal recovery");
            }
        }
        StateJournal::delete(path)?;
        tracing::info!(target: events::JOURNAL, phase = "cleared", "journal cleared after recovery");
        Ok(journal)
    }

    /// Connect to the control socket until an incumbent answers with `Hello`
    /// (not `Refused`: it may still be recovering from the lost session),
    /// then close the session and wait for the incumbent to close its side,
    /// so the next connection is not refused as a second session.
    fn probe_incumbent(&self) -> Result<u32> {
        let mut last_err = Error::Timeout("incumbent Hello");
        // The incumbent's recovery is not announced: ask until it answers.
        let answered =
            crate::util::poll_until(self.timeouts.probe, Duration::from_millis(10), || {
                match UnixStream::connect(&self.socket_path) {
                    Ok(mut stream) => {
                        let _ = stream.set_read_timeout(Some(self.timeouts.hello_read));
                        match read_message(&mut stream) {
                            Ok((_, Message::Hello { pid, .. })) => {
                                let _ = stream.shutdown(std::net::Shutdown::Write);
                                let _ = stream.set_read_timeout(Some(self.timeouts.hello_read));
                                let mut sink = [0u8; 64];
                                // Wait for the incumbent to end the session (EOF).
                                while let Ok(n) = std::io::Read::read(&mut stream, &mut sink) {
                                    if n == 0 {
                                        break;
                                    }
                                }
                                Some(pid)
                            }
                            Ok((_, Message::Refused { reason })) => {
                                last_err = Error::Refused(reason);
                                None
                            }
                            Ok((_, other)) => {
                                last_err = Error::UnexpectedMessage {
                                    expected: "Hello",
                                    got: short_name(&other),
                                };
                                None
                            }
                            Err(e) => {
                                last_err = e;
                                None
                            }
                        }
                    }
                    Err(e) => {
                        last_err = Error::Io(e);
                        None
                    }
                }
            });
        answered.ok_or(last_err)
    }

    fn spawn_successor(&self, spec: &SpawnSpec, n_sock_fd: RawFd) -> Result<Child> {
        let sock_target_fd = 3 + self.listener_fds.len() as RawFd;
        let mut cmd = Command::new(&spec.binary);
        cmd.args(&spec.args);
        strip_handoff_env(&mut cmd);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        cmd.env("HANDOFF_ROLE", "successor");
        cmd.env("HANDOFF_SOCK_FD", sock_target_fd.to_string());
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // Listeners land at 3.., the control socket at 3 + n, nothing else.
        pass_listener_fds_on_spawn(&mut cmd, &self.listener_fds, Some(n_sock_fd));
        Ok(cmd.spawn()?)
    }

    /// Check that the journal's directory exists and that this process may
    /// create files in it (`access(2)`, with the effective ids: write and
    /// search permission, a read-only file system is refused too), without
    /// touching the file system's journal. Disk space is not checked: the
    /// `Negotiating` write, waited for before any peer changes state, is.
    fn check_journal_writable(&self) -> Result<()> {
        let Some(path) = self.journal.as_ref().map(JournalWriter::path) else {
            return Ok(());
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // access(2) answers for a file too: the journal needs a directory.
        let writable = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => nix::unistd::faccessat(
                None,
                dir,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                nix::fcntl::AtFlags::AT_EACCESS,
            ),
            Ok(_) => Err(nix::errno::Errno::ENOTDIR),
            Err(e) => Err(e
                .raw_os_error()
                .map_or(nix::errno::Errno::EIO, nix::errno::Errno::from_raw)),
        };
        writable.map_err(|errno| {
            let e = std::io::Error::from(errno);
            Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "journal directory {} is not writable ({e}); fix it or change --journal before handing off",
                    dir.display()
                ),
            ))
        })
    }

    /// Record a journal phase for the background writer and go on (see
    /// [`crate::journal_writer`]): it starts on it `when` said. Fails with
    /// an earlier background failure.
    fn journal_record(&self, entry: StateJournal, when: When) -> Result<()> {
        let Some(writer) = &self.journal else {
            return Ok(());
        };
        let (handoff_id, phase) = (entry.handoff_id, entry.phase);
        let result = writer.record(JournalOp::Write(entry), when);
        tracing::info!(target: events::JOURNAL, %handoff_id, phase = ?phase, "journal phase recorded; the background writer makes it durable");
        result
    }

    /// Wait until `entry`, recorded earlier, is durable.
    fn journal_flush(&self, entry: &StateJournal) -> Result<()> {
        let Some(writer) = &self.journal else {
            return Ok(());
        };
        writer.flush()?;
        tracing::info!(target: events::JOURNAL, handoff_id = %entry.handoff_id, phase = ?entry.phase, durable = true, "journal written");
        Ok(())
    }

    /// Record the journal's removal: the handoff is over either way.
    fn journal_clear(&self, handoff_id: HandoffId) {
        let Some(writer) = &self.journal else {
            return;
        };
        match writer.record(JournalOp::Clear, When::Coalesced) {
            Ok(()) => {
                tracing::info!(target: events::JOURNAL, %handoff_id, phase = "cleared", "journal clear recorded; the background writer makes it durable")
            }
            // An earlier phase's write failed; the clear is recorded all the
            // same and supersedes it.
            Err(e) => tracing::warn!(
                target: events::JOURNAL,
                %handoff_id,
                error = %e,
                path = %writer.path().display(),
                "an earlier journal write failed; the clear is still recorded, and the next supervisor start recovers from whatever is on disk"
            ),
        }
    }

    /// Let the background writer finish, so a crash point dies with every
    /// recorded phase on disk (see [`crate::crash::hit_settled`]).
    fn crash_point(&self, point: &'static str) {
        crate::crash::hit_settled(point, || {
            if let Some(writer) = &self.journal {
                writer.settle();
            }
        });
    }

    /// Wait until the journal on disk reflects every phase recorded so far:
    /// after [`perform_handoff`](Self::perform_handoff) returns, until its
    /// clear is durable. `perform_handoff` returns once the outcome is
    /// decided and does not wait for the clear; the next `perform_handoff`,
    /// [`resume_from_journal`](Self::resume_from_journal) and dropping the
    /// supervisor all wait for it. Reports a failed background write.
    pub fn sync_journal(&self) -> Result<()> {
        match &self.journal {
            Some(writer) => writer.flush(),
            None => Ok(()),
        }
    }
}

/// Variables a child must never inherit from the supervisor's own
/// environment: the handoff envelope is set explicitly per child, and crash
/// points are armed per process.
const STRIPPED_ENV: &[&str] = &[
    "HANDOFF_ROLE",
    "HANDOFF_SOCK_FD",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    crate::crash::ENV_CRASH_AT,
    // systemd's notification socket is the supervisor's: a service that
    // wrote to it would be taken for the main process.
    "NOTIFY_SOCKET",
];

fn strip_handoff_env(cmd: &mut Command) {
    for k in STRIPPED_ENV {
        cmd.env_remove(k);
    }
}

/// The stream to `side`, once there is one.
fn stream_of<'a>(
    side: Side,
    o: &'a mut Option<UnixStream>,
    n: &'a mut Option<UnixStream>,
) -> Result<&'a mut UnixStream> {
    let stream = match side {
        Side::Incumbent => o.as_mut(),
        Side::Successor => n.as_mut(),
    };
    stream.ok_or_else(|| Error::Protocol(format!("BUG: no connection to the {side:?} yet")))
}

/// Read one frame, giving up at `until`.
fn read_until(stream: &mut UnixStream, until: Instant) -> Input {
    // A zero read timeout means "block": never pass one.
    let timeout = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        return Input::ReadFailed(e.into());
    }
    let input = match read_message(stream) {
        Ok((version, msg)) => Input::Frame { version, msg },
        Err(Error::Io(e)) if is_timeout(&e) => Input::Timeout,
        Err(Error::PeerClosed(_)) => Input::Closed,
        Err(e) => Input::ReadFailed(e),
    };
    let _ = stream.set_read_timeout(None);
    input
}

/// A connected pair of Unix stream sockets, both close-on-exec: the child's
/// end reaches it only through the explicit FD placement in
/// [`pass_listener_fds_on_spawn`].
fn make_socketpair() -> Result<(UnixStream, UnixStream)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((UnixStream::from(a), UnixStream::from(b)))
}
