//! Supervisor side: spawn the successor, drive the protocol, handle abort and
//! resume, journal every phase.
//!
//! This module is sync: run [`Supervisor::perform_handoff`] on any thread. It
//! follows the original design (`seeds/supervisor.rs`) step for step — the
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

use crate::crash::points;
use crate::error::{Error, Result};
use crate::events;
use crate::fd::pass_listener_fds_on_spawn;
use crate::frame::{read_message, write_message};
use crate::journal_writer::{JournalOp, JournalWriter, When};
use crate::protocol::{
    HandoffId, Message, PROTO_MAX, PROTO_MIN, ProtoVersion, Side, check_handoff_id,
    negotiate_version, short_name,
};
use crate::state::{Phase, StateJournal};
use crate::util::{is_timeout, now_unix_ms};

/// Timeouts of the supervisor side. The defaults are the seed's values; tests
/// shrink them to milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorTimeouts {
    /// Maximum wait on any one read from a peer before declaring it dead.
    /// Every frame, heartbeats included, resets it. Default 10 s (five
    /// heartbeat intervals).
    pub liveness: Duration,
    /// Bound on a peer's first frame, `Hello`. Default 5 s.
    pub hello_read: Duration,
    /// Slack added past a cap for a reply already on the wire when the cap
    /// expires. Default 1 s.
    pub wire_slack: Duration,
    /// Floor for any read timeout. Default 100 ms.
    pub min_read: Duration,
    /// Bound on `resume_from_journal`'s wait for the incumbent to answer.
    /// Default 5 s.
    pub probe: Duration,
}

impl Default for SupervisorTimeouts {
    fn default() -> Self {
        Self {
            liveness: Duration::from_secs(10),
            hello_read: Duration::from_secs(5),
            wire_slack: Duration::from_secs(1),
            min_read: Duration::from_millis(100),
            probe: Duration::from_secs(5),
        }
    }
}

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
    /// The handoff whose journal this supervisor wrote and has not cleared:
    /// only that journal is ours to clear when a handoff fails.
    journal_owned: Mutex<Option<HandoffId>>,
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

/// The incumbent's side of a session, as the supervisor sees it.
struct Peer {
    version: ProtoVersion,
    pid: u32,
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
            journal_owned: Mutex::new(None),
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
                let result = self.drive_handoff(spec);
                let owned = self
                    .journal_owned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let (Err(_), Some(handoff_id)) = (&result, owned) {
                    // The journal is cleared at the end either way (DESIGN
                    // section 5): the successor was killed by the child
                    // guard, and the incumbent recovers from the closed
                    // session on its own. Only a journal this call wrote.
                    self.journal_clear(handoff_id);
                }
                result
            });
        if let Err(e) = &result {
            tracing::warn!(target: events::OUTCOME, committed = false, failed = true, error = %e, "handoff failed");
        }
        result
    }

    /// The handoff itself, under the in-flight mutex.
    fn drive_handoff(&self, spec: SpawnSpec) -> Result<HandoffOutcome> {
        let t = &self.timeouts;

        let handoff_id = HandoffId::new();
        let started_instant = Instant::now();
        let started_unix_ms = now_unix_ms();
        let total_deadline_at = started_instant + spec.deadline;

        // 1. Connect to O.
        let (mut o_stream, o) = self.connect_incumbent(handoff_id)?;
        tracing::info!(target: events::HELLO, %handoff_id, role = "incumbent", peer_pid = o.pid, proto_version = o.version, "incumbent hello");
        self.crash_point(points::S_AFTER_O_HELLO);

        // 2. Socketpair for N's control channel; 3. spawn N with it.
        let (s_end, n_end) = make_socketpair()?;
        let child = self.spawn_successor(&spec, n_end.as_raw_fd())?;
        let child_guard = ChildGuard::new(child);
        let successor_pid = child_guard.id();
        // The child has its own copy now; ours must go so N's EOF detection
        // sees only S's end.
        drop(n_end);
        tracing::info!(target: events::SPAWN, %handoff_id, successor_pid, binary = %spec.binary.display(), "spawned successor");
        self.crash_point(points::S_AFTER_SPAWN_SUCCESSOR);

        let journal = |phase| JournalEntry {
            handoff_id,
            phase,
            incumbent_pid: o.pid,
            successor_pid,
            started_unix_ms,
        };
        // The one journal write the handoff waits for: it must be durable
        // before PrepareHandoff, the first message that changes a peer's
        // state. Everything it records is known now, so it runs while N
        // starts up and is waited for after N's Hello.
        self.journal_record(journal(Phase::Negotiating), When::Now)?;

        let mut n_stream = s_end;
        // 4. Hello/HelloAck with N; its announced pid must be the child's.
        let n = self.exchange_hello(
            &mut n_stream,
            handoff_id,
            Side::Successor,
            Some(successor_pid),
        )?;
        tracing::info!(target: events::HELLO, %handoff_id, role = "successor", peer_pid = n.pid, proto_version = n.version, "successor hello");
        self.crash_point(points::S_AFTER_N_HELLO);

        self.journal_flush(journal(Phase::Negotiating))?;
        self.crash_point(points::S_AFTER_JOURNAL_NEGOTIATING);

        // 5. PrepareHandoff → Drained. O gets the budget *remaining*, so its
        // view of the deadline tracks ours.
        let prepare_at = Instant::now();
        let deadline_ms = self.remaining_until(total_deadline_at).as_millis() as u64;
        let drain_grace_ms = spec.drain_grace.as_millis() as u64;
        tracing::info!(target: events::PREPARE, %handoff_id, successor_pid, drain_grace_ms, deadline_ms, "prepare handoff");
        write_message(
            &mut o_stream,
            o.version,
            &Message::PrepareHandoff {
                handoff_id,
                successor_pid,
                deadline_ms,
                drain_grace_ms,
            },
        )?;
        self.crash_point(points::S_AFTER_PREPARE_SENT);
        // O may use all of drain_grace, and its reply still has to cross the
        // wire: read for drain_grace + wire_slack.
        let drained_msg = self.read_until(
            &mut o_stream,
            o.version,
            handoff_id,
            spec.drain_grace + t.wire_slack,
            "Drained",
            |m| matches!(m, Message::Drained { .. }),
        )?;
        let Message::Drained {
            open_conns_remaining,
            accept_closed,
        } = drained_msg
        else {
            unreachable!("read_until's predicate admits only Drained");
        };
        tracing::info!(target: events::DRAINED, %handoff_id, open_conns_remaining, accept_closed, drain_seconds = prepare_at.elapsed().as_secs_f64(), "drain complete");
        self.crash_point(points::S_AFTER_DRAINED_RECV);
        self.journal_record(journal(Phase::Draining), When::Coalesced)?;
        self.crash_point(points::S_AFTER_JOURNAL_DRAINING);

        // 6. SealRequest → SealComplete (or SealFailed).
        let seal_at = Instant::now();
        tracing::info!(target: events::SEAL, %handoff_id, "seal request");
        write_message(
            &mut o_stream,
            o.version,
            &Message::SealRequest { handoff_id },
        )?;
        self.crash_point(points::S_AFTER_SEAL_REQUEST_SENT);
        // Per-read liveness (heartbeats reset it), overall cap at the handoff
        // deadline plus slack: seal() has no internal deadline, so its reply
        // may land arbitrarily close to the cap.
        let seal_read = self.read_until(
            &mut o_stream,
            o.version,
            handoff_id,
            self.remaining_until(total_deadline_at) + t.wire_slack,
            "SealComplete",
            |m| matches!(m, Message::SealComplete { .. } | Message::SealFailed { .. }),
        );
        match seal_read {
            Ok(Message::SealComplete { .. }) => {}
            Ok(Message::SealFailed { error, .. }) => {
                // O keeps the flock and resumes on its own. Abort N.
                let reason = format!("seal failed: {error}");
                tracing::warn!(target: events::ABORT, %handoff_id, cause = "seal_failed", reason = %reason, "seal failed; aborting handoff");
                send_best_effort_abort(&mut n_stream, n.version, handoff_id, reason.clone());
                child_guard.kill_and_reap();
                self.journal_clear(handoff_id);
                tracing::info!(target: events::OUTCOME, %handoff_id, committed = false, reason = %reason, "handoff aborted");
                return Ok(HandoffOutcome {
                    handoff_id,
                    committed: false,
                    abort_reason: Some(reason),
                    child: None,
                });
            }
            Ok(other) => unreachable!("read_until admitted {}", short_name(&other)),
            Err(e) => {
                // O is silent or gone mid-seal: we cannot know whether it
                // released the flock. Abort N; O's own recovery (retake the
                // flock, resume) decides.
                let reason = if e.is_timeout() {
                    "incumbent unresponsive during seal".to_string()
                } else {
                    format!("seal read failed: {e}")
                };
                tracing::warn!(target: events::ABORT, %handoff_id, cause = "seal_unanswered", reason = %reason, "aborting handoff during seal");
                send_best_effort_abort(&mut n_stream, n.version, handoff_id, reason);
                child_guard.kill_and_reap();
                self.journal_clear(handoff_id);
                return Err(e);
            }
        }
        tracing::info!(target: events::SEAL_COMPLETE, %handoff_id, seal_seconds = seal_at.elapsed().as_secs_f64(), "seal complete; flock released by O");
        self.crash_point(points::S_AFTER_SEAL_COMPLETE_RECV);
        self.journal_record(journal(Phase::Sealing), When::Coalesced)?;
        self.crash_point(points::S_AFTER_JOURNAL_SEALING);

        // 7. Begin → Ready. A failure at either step lands in the same
        // abort-and-resume flow: N is unusable, O has sealed and must be told
        // to serve again.
        let begin_at = Instant::now();
        let ready_result =
            match write_message(&mut n_stream, n.version, &Message::Begin { handoff_id }) {
                Ok(()) => {
                    self.crash_point(points::S_AFTER_BEGIN_SENT);
                    self.journal_record(journal(Phase::AwaitingReady), When::Coalesced)?;
                    // N has no internal deadline for its start-up, so Ready may
                    // be in flight when the cap elapses: allow wire_slack.
                    let ready_timeout = self.remaining_until(total_deadline_at) + t.wire_slack;
                    self.read_until(
                        &mut n_stream,
                        n.version,
                        handoff_id,
                        ready_timeout,
                        "Ready",
                        |m| matches!(m, Message::Ready { .. }),
                    )
                }
                Err(e) => Err(e),
            };

        match ready_result {
            Ok(Message::Ready {
                listening_on,
                healthz_ok,
                advertised_revision_per_shard,
                ..
            }) => {
                tracing::info!(target: events::READY, %handoff_id, healthz_ok, listeners = ?listening_on, advertised_revisions = ?advertised_revision_per_shard, begin_to_ready_seconds = begin_at.elapsed().as_secs_f64(), "successor ready");
                self.crash_point(points::S_AFTER_READY_RECV);
                // N holds the flock and is the incumbent from here on,
                // whatever happens to O. Disarm the guard *before* writing
                // Commit so a dead O cannot take N down with it.
                let child = child_guard.disarm();

                // 8. Commit O.
                tracing::info!(target: events::COMMIT, %handoff_id, total_seconds = started_instant.elapsed().as_secs_f64(), "commit");
                if let Err(e) =
                    write_message(&mut o_stream, o.version, &Message::Commit { handoff_id })
                {
                    tracing::warn!(target: events::COMMIT, %handoff_id, error = %e, "failed to send Commit to the incumbent; it may have crashed — the successor is the incumbent regardless, the handoff is committed");
                }
                self.crash_point(points::S_AFTER_COMMIT_SENT);
                // Best effort: if this fails the next supervisor sees
                // AwaitingReady and runs its standard recovery.
                if let Err(e) = self.journal_record(journal(Phase::Committed), When::Coalesced) {
                    tracing::warn!(target: events::JOURNAL, %handoff_id, error = %e, "journal Committed failed");
                }
                self.journal_clear(handoff_id);
                self.crash_point(points::S_AFTER_JOURNAL_CLEAR);
                tracing::info!(target: events::OUTCOME, %handoff_id, committed = true, successor_pid, "handoff committed");
                Ok(HandoffOutcome {
                    handoff_id,
                    committed: true,
                    abort_reason: None,
                    child: Some(child),
                })
            }
            other => {
                let reason = match &other {
                    Ok(m) => format!("expected Ready, got {}", short_name(m)),
                    Err(Error::Timeout(s)) => format!("ready phase timed out waiting for {s}"),
                    Err(e) => format!("ready read failed: {e}"),
                };
                tracing::warn!(target: events::ABORT, %handoff_id, cause = "not_ready", reason = %reason, "aborting handoff before commit");
                send_best_effort_abort(&mut n_stream, n.version, handoff_id, reason.clone());
                self.crash_point(points::S_AFTER_ABORT_SENT);
                child_guard.kill_and_reap();
                write_message(
                    &mut o_stream,
                    o.version,
                    &Message::ResumeAfterAbort { handoff_id },
                )?;
                tracing::info!(target: events::RESUME, %handoff_id, "sent ResumeAfterAbort to O");
                self.crash_point(points::S_AFTER_RESUME_SENT);
                self.journal_record(journal(Phase::ResumingAfterAbort), When::Coalesced)?;
                self.journal_clear(handoff_id);
                tracing::info!(target: events::OUTCOME, %handoff_id, committed = false, reason = %reason, "handoff aborted");
                Ok(HandoffOutcome {
                    handoff_id,
                    committed: false,
                    abort_reason: Some(reason),
                    child: None,
                })
            }
        }
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

    /// Connect to the incumbent and exchange hellos. A `Refused` is retried
    /// for at most `hello_read`: an incumbent may take a moment to notice
    /// that a previous supervisor's session is over. Refused past that, a
    /// second supervisor is alive, and the error says so.
    fn connect_incumbent(&self, handoff_id: HandoffId) -> Result<(UnixStream, Peer)> {
        let give_up_at = Instant::now() + self.timeouts.hello_read;
        // Back off from 5 ms to 100 ms: each refusal is an event on the
        // incumbent's side, so a refused retry loop must not flood it.
        let mut pause = Duration::from_millis(5);
        loop {
            let mut stream = UnixStream::connect(&self.socket_path)?;
            match self.exchange_hello(&mut stream, handoff_id, Side::Incumbent, None) {
                Ok(peer) => return Ok((stream, peer)),
                Err(Error::Refused(reason)) if Instant::now() < give_up_at => {
                    tracing::debug!(reason = %reason, "incumbent refused; retrying");
                    // Pacing between attempts while the old session closes.
                    std::thread::sleep(
                        pause.min(give_up_at.saturating_duration_since(Instant::now())),
                    );
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive the peer's `Hello`, answer `HelloAck` with the chosen version.
    fn exchange_hello(
        &self,
        stream: &mut UnixStream,
        handoff_id: HandoffId,
        expected_role: Side,
        expected_pid: Option<u32>,
    ) -> Result<Peer> {
        stream.set_read_timeout(Some(self.timeouts.hello_read.max(self.timeouts.min_read)))?;
        let read_result = read_message(stream);
        let _ = stream.set_read_timeout(None);
        let (_v, peer_hello) = match read_result {
            Ok(x) => x,
            Err(Error::Io(e)) if is_timeout(&e) => return Err(Error::Timeout("peer Hello")),
            Err(Error::PeerClosed(_)) => return Err(Error::PeerClosed("peer Hello")),
            Err(e) => return Err(e),
        };
        let (role, pid, proto_min, proto_max) = match peer_hello {
            Message::Hello {
                role,
                pid,
                proto_min,
                proto_max,
                ..
            } => (role, pid, proto_min, proto_max),
            Message::Refused { reason } => return Err(Error::Refused(reason)),
            other => {
                return Err(Error::UnexpectedMessage {
                    expected: "Hello",
                    got: short_name(&other),
                });
            }
        };
        if role != expected_role {
            return Err(Error::Protocol(format!(
                "peer announced role {role:?}, expected {expected_role:?}"
            )));
        }
        if let Some(expected) = expected_pid
            && pid != expected
        {
            return Err(Error::PidMismatch {
                expected,
                announced: pid,
            });
        }
        let version = negotiate_version(PROTO_MIN, PROTO_MAX, proto_min, proto_max)?;
        write_message(
            stream,
            version,
            &Message::HelloAck {
                proto_version_chosen: version,
                handoff_id,
            },
        )?;
        Ok(Peer { version, pid })
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

    /// Read frames until `pred` matches, skipping `Heartbeat` and
    /// `SealProgress` (liveness signals, never what a caller waits for). Each
    /// read waits at most `liveness` (any frame resets it); the whole call at
    /// most `timeout`. Frames must carry `version` and `handoff_id`.
    fn read_until(
        &self,
        stream: &mut UnixStream,
        version: ProtoVersion,
        handoff_id: HandoffId,
        timeout: Duration,
        awaiting: &'static str,
        pred: impl Fn(&Message) -> bool,
    ) -> Result<Message> {
        let t = &self.timeouts;
        let deadline = Instant::now() + timeout.max(t.min_read);
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break Err(Error::Timeout(awaiting));
            }
            let recv_timeout = t.liveness.min(deadline - now).max(t.min_read);
            stream.set_read_timeout(Some(recv_timeout))?;
            match read_message(stream) {
                Ok((v, _)) if v != version => {
                    break Err(Error::WrongFrameVersion {
                        expected: version,
                        got: v,
                    });
                }
                Ok((_, Message::Heartbeat { .. } | Message::SealProgress { .. })) => continue,
                Ok((_, msg)) => {
                    if let Err(e) = check_handoff_id(handoff_id, &msg) {
                        break Err(e);
                    }
                    if pred(&msg) {
                        break Ok(msg);
                    }
                    break Err(Error::UnexpectedMessage {
                        expected: awaiting,
                        got: short_name(&msg),
                    });
                }
                Err(Error::Io(e)) if is_timeout(&e) => break Err(Error::Timeout(awaiting)),
                Err(Error::PeerClosed(_)) => break Err(Error::PeerClosed(awaiting)),
                Err(e) => break Err(e),
            }
        };
        let _ = stream.set_read_timeout(None);
        result
    }

    fn remaining_until(&self, deadline: Instant) -> Duration {
        deadline
            .checked_duration_since(Instant::now())
            .unwrap_or(self.timeouts.min_read)
            .max(self.timeouts.min_read)
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
    fn journal_record(&self, entry: JournalEntry, when: When) -> Result<()> {
        let Some(writer) = &self.journal else {
            return Ok(());
        };
        *self.journal_owned.lock().unwrap_or_else(|p| p.into_inner()) = Some(entry.handoff_id);
        let result = writer.record(JournalOp::Write(entry.to_journal()), when);
        tracing::info!(target: events::JOURNAL, handoff_id = %entry.handoff_id, phase = ?entry.phase, "journal phase recorded; the background writer makes it durable");
        result
    }

    /// Wait until `entry`, recorded earlier, is durable.
    fn journal_flush(&self, entry: JournalEntry) -> Result<()> {
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
        *self.journal_owned.lock().unwrap_or_else(|p| p.into_inner()) = None;
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

#[derive(Clone, Copy)]
struct JournalEntry {
    handoff_id: HandoffId,
    phase: Phase,
    incumbent_pid: u32,
    successor_pid: u32,
    started_unix_ms: u64,
}

impl JournalEntry {
    fn to_journal(self) -> StateJournal {
        StateJournal {
            handoff_id: self.handoff_id,
            phase: self.phase,
            // The incumbent's pid from its Hello (the seed wrote S's own).
            incumbent_pid: self.incumbent_pid,
            successor_pid: Some(self.successor_pid),
            started_at_unix_ms: self.started_unix_ms,
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

/// Best-effort `Abort` to a successor we are about to kill; a failure is
/// expected (N may be dead) but logged, so a diverging view is visible.
fn send_best_effort_abort(
    stream: &mut UnixStream,
    version: ProtoVersion,
    handoff_id: HandoffId,
    reason: String,
) {
    if let Err(e) = write_message(
        stream,
        version,
        &Message::Abort {
            handoff_id,
            reason: reason.clone(),
        },
    ) {
        tracing::warn!(target: events::ABORT, %handoff_id, reason = %reason, error = %e, "best-effort Abort to the successor failed; it will be killed and reaped anyway");
    }
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
