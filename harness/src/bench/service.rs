//! One supervised fake-peer service, driven in-process: the bench holds the
//! listener and a `handoff::Supervisor` (as the real supervisor does),
//! cold-starts the first incumbent, and hands off to a fresh `fake-peer`
//! as often as asked. Every old incumbent is reaped by a thread of its own
//! that stamps the moment it exited.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use handoff::events;
use handoff::util::monotonic_ns;
use handoff::{SpawnSpec, Supervisor, SupervisorTimeouts};

use super::BenchError;
use super::capture::{CaptureBuffer, Captured};

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The `fake-peer` binary.
    pub fake_peer: PathBuf,
    /// A fresh directory for the data dir, journal, control socket and logs.
    pub dir: PathBuf,
    /// Whether the children write the JSON event log (`HANDOFF_EVENT_LOG`).
    pub child_event_log: bool,
    /// The supervisor's timeouts.
    pub timeouts: SupervisorTimeouts,
    /// Cap on one handoff.
    pub deadline: Duration,
    /// Cap on the incumbent's drain.
    pub drain_grace: Duration,
    /// Environment for every child, on top of ours.
    pub child_env: Vec<(String, String)>,
    /// Bound on the new incumbent's first answer, and on an old one's exit.
    pub settle_timeout: Duration,
}

/// Marks on the supervisor's timeline (indices into [`HandoffRecord::sup`]).
pub mod mark {
    /// `handoff.hello` role=incumbent.
    pub const O_HELLO: usize = 0;
    /// `handoff.spawn`.
    pub const SPAWN: usize = 1;
    /// `handoff.hello` role=successor.
    pub const N_HELLO: usize = 2;
    /// `handoff.journal` Negotiating.
    pub const J_NEGOTIATING: usize = 3;
    /// `handoff.prepare`.
    pub const PREPARE: usize = 4;
    /// `handoff.drained`.
    pub const DRAINED: usize = 5;
    /// `handoff.journal` Draining.
    pub const J_DRAINING: usize = 6;
    /// `handoff.seal`.
    pub const SEAL: usize = 7;
    /// `handoff.seal_complete`.
    pub const SEAL_COMPLETE: usize = 8;
    /// `handoff.journal` Sealing.
    pub const J_SEALING: usize = 9;
    /// `handoff.journal` AwaitingReady (after `Begin` was written).
    pub const J_AWAITING_READY: usize = 10;
    /// `handoff.ready`.
    pub const READY: usize = 11;
    /// `handoff.commit` (just before `Commit` is written).
    pub const COMMIT: usize = 12;
    /// `handoff.journal` Committed.
    pub const J_COMMITTED: usize = 13;
    /// `handoff.journal` cleared.
    pub const J_CLEARED: usize = 14;
    /// `handoff.outcome`.
    pub const OUTCOME: usize = 15;
    /// Number of supervisor marks.
    pub const COUNT: usize = 16;

    /// Names of the supervisor marks, by index.
    pub const SUPERVISOR_NAMES: [&str; COUNT] = [
        "S.hello_incumbent",
        "S.spawn",
        "S.hello_successor",
        "S.journal_negotiating",
        "S.prepare",
        "S.drained",
        "S.journal_draining",
        "S.seal",
        "S.seal_complete",
        "S.journal_sealing",
        "S.journal_awaiting_ready",
        "S.ready",
        "S.commit",
        "S.journal_committed",
        "S.journal_cleared",
        "S.outcome",
    ];

    /// Incumbent (old process) marks, from the event log.
    pub const INCUMBENT_EVENTS: [&str; 10] = [
        handoff::events::INCUMBENT_SESSION,
        handoff::events::INCUMBENT_DRAIN,
        handoff::events::INCUMBENT_DRAINED,
        handoff::events::INCUMBENT_SEAL,
        handoff::events::INCUMBENT_FLOCK_RELEASED,
        handoff::events::INCUMBENT_SEAL_COMPLETE,
        handoff::events::INCUMBENT_COMMIT,
        // The fake peer's own: end of `Server::drain`, `serve` returned,
        // about to exit.
        "fake_peer.drain",
        "fake_peer.handed_off",
        "fake_peer.exit",
    ];
    /// Successor (new process) marks, from the event log.
    pub const SUCCESSOR_EVENTS: [&str; 6] = [
        handoff::events::SUCCESSOR_HELLO,
        handoff::events::SUCCESSOR_BEGIN,
        handoff::events::SUCCESSOR_FLOCK_TAKEN,
        handoff::events::SUCCESSOR_READY,
        handoff::events::SUCCESSOR_BOUND,
        // The fake peer's own: its accept thread started.
        "fake_peer.serving",
    ];
}

/// Where a captured supervisor event goes on the timeline (pure).
pub fn supervisor_mark(target: &str, detail: &str) -> Option<usize> {
    use mark::*;
    Some(match (target, detail) {
        (events::HELLO, "incumbent") => O_HELLO,
        (events::HELLO, "successor") => N_HELLO,
        (events::SPAWN, _) => SPAWN,
        (events::PREPARE, _) => PREPARE,
        (events::DRAINED, _) => DRAINED,
        (events::SEAL, _) => SEAL,
        (events::SEAL_COMPLETE, _) => SEAL_COMPLETE,
        (events::READY, _) => READY,
        (events::COMMIT, _) => COMMIT,
        (events::OUTCOME, _) => OUTCOME,
        // The Negotiating entry is recorded when N is spawned and waited for
        // after N's Hello: the wait is what the critical path sees.
        (events::JOURNAL, "Negotiating durable") => J_NEGOTIATING,
        (events::JOURNAL, "Draining") => J_DRAINING,
        (events::JOURNAL, "Sealing") => J_SEALING,
        (events::JOURNAL, "AwaitingReady") => J_AWAITING_READY,
        (events::JOURNAL, "Committed") => J_COMMITTED,
        (events::JOURNAL, "cleared") => J_CLEARED,
        _ => return None,
    })
}

/// Everything measured about one handoff. `Copy` and heap-free, so a
/// preallocated vector of them does not grow the bench process.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandoffRecord {
    /// 1-based position in its run.
    pub index: usize,
    /// The handoff's id (`HandoffId::as_u128`).
    pub handoff_id: u128,
    /// The incumbent handed off from.
    pub old_pid: u32,
    /// The successor, incumbent now.
    pub new_pid: u32,
    /// `perform_handoff` called (`mono_ns`).
    pub trigger_ns: u64,
    /// `perform_handoff` returned, committed.
    pub commit_ns: u64,
    /// The journal's clear was durable (`Supervisor::sync_journal`, called
    /// right after `perform_handoff` returned).
    pub journal_synced_ns: u64,
    /// The new incumbent answered its first `PING` on the listener.
    pub serves_ns: u64,
    /// The old incumbent exited (0 until known).
    pub old_exit_ns: u64,
    /// The old incumbent's exit code (-1 until known, or killed).
    pub old_exit_code: i32,
    /// Supervisor marks (`mono_ns`, 0 when missing); see [`mark`].
    pub sup: [u64; mark::COUNT],
    /// Incumbent marks; see [`mark::INCUMBENT_EVENTS`].
    pub inc: [u64; mark::INCUMBENT_EVENTS.len()],
    /// Successor marks; see [`mark::SUCCESSOR_EVENTS`].
    pub suc: [u64; mark::SUCCESSOR_EVENTS.len()],
    /// WARN events the supervisor emitted during this handoff.
    pub sup_warnings: u32,
}

impl HandoffRecord {
    /// Trigger → `Ready` received.
    pub fn to_ready_ns(&self) -> Option<u64> {
        let ready = self.sup[mark::READY];
        (ready != 0).then(|| ready.saturating_sub(self.trigger_ns))
    }

    /// Trigger → `perform_handoff` returned.
    pub fn to_commit_ns(&self) -> u64 {
        self.commit_ns.saturating_sub(self.trigger_ns)
    }

    /// Trigger → the journal's clear durable.
    pub fn to_journal_synced_ns(&self) -> u64 {
        self.journal_synced_ns.saturating_sub(self.trigger_ns)
    }

    /// Trigger → old incumbent exited.
    pub fn to_old_exit_ns(&self) -> Option<u64> {
        (self.old_exit_ns != 0).then(|| self.old_exit_ns.saturating_sub(self.trigger_ns))
    }

    /// Trigger → new incumbent answered a request.
    pub fn to_serves_ns(&self) -> u64 {
        self.serves_ns.saturating_sub(self.trigger_ns)
    }
}

struct Exit {
    pid: u32,
    mono_ns: u64,
    status: io::Result<ExitStatus>,
}

/// A running service.
pub struct Service {
    config: ServiceConfig,
    listener: TcpListener,
    addr: SocketAddr,
    supervisor: Supervisor,
    spec: SpawnSpec,
    incumbent: Option<Child>,
    exits_tx: Sender<Exit>,
    exits_rx: Receiver<Exit>,
    /// Old incumbents not yet seen exiting: pid → when it was handed off.
    pending_exits: HashMap<u32, u64>,
    /// Scratch for captured events, reused.
    captured: Vec<Captured>,
    /// Supervisor warnings, first few.
    pub warnings: Vec<String>,
    /// Old incumbents that exited with a code other than 0.
    pub bad_exits: Vec<String>,
    /// `PING`s after a commit answered by a process other than the new
    /// incumbent.
    pub stale_answers: u64,
}

/// Keep at most this many warnings verbatim.
const MAX_WARNINGS_KEPT: usize = 20;

impl Service {
    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.config.dir.join("data")
    }

    /// The children's JSON event log.
    pub fn event_log(&self) -> Option<PathBuf> {
        self.config
            .child_event_log
            .then(|| self.config.dir.join("events.jsonl"))
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current incumbent's pid.
    pub fn incumbent_pid(&self) -> u32 {
        self.incumbent.as_ref().map_or(0, Child::id)
    }

    /// Bind the listener, cold-start the first incumbent, wait until it
    /// answers.
    pub fn start(config: ServiceConfig) -> Result<Self, BenchError> {
        let data_dir = config.dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let control = config.dir.join("control.sock");
        let supervisor = Supervisor::new(&control)?
            .with_listener("kv", listener.as_raw_fd())
            .with_journal(config.dir.join("journal.json"))
            .with_timeouts(config.timeouts.clone())
            .with_build_id(b"bench".to_vec());
        let mut spec = SpawnSpec::new(&config.fake_peer);
        spec.args = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--control-socket".into(),
            control.display().to_string(),
        ];
        spec.env = config.child_env.clone();
        if config.child_event_log {
            spec.env.push((
                events::ENV_EVENT_LOG.into(),
                config.dir.join("events.jsonl").display().to_string(),
            ));
        }
        spec.deadline = config.deadline;
        spec.drain_grace = config.drain_grace;
        let child = supervisor.cold_start(&spec)?;
        let (exits_tx, exits_rx) = mpsc::channel();
        let mut service = Self {
            listener,
            addr,
            supervisor,
            spec,
            incumbent: Some(child),
            exits_tx,
            exits_rx,
            pending_exits: HashMap::new(),
            captured: Vec::with_capacity(64),
            warnings: Vec::new(),
            bad_exits: Vec::new(),
            stale_answers: 0,
            config,
        };
        let pid = service.incumbent_pid();
        let deadline = Instant::now() + service.config.settle_timeout;
        if let Err(e) = service.wait_answered_by(pid, deadline) {
            service.shutdown();
            return Err(BenchError::Setup(format!(
                "the cold-started fake-peer (pid {pid}) did not answer PING: {e}"
            )));
        }
        Ok(service)
    }

    /// One handoff to a fresh successor, measured. `capture` must be the
    /// buffer of the subscriber in force on this thread.
    pub fn handoff(
        &mut self,
        index: usize,
        capture: &CaptureBuffer,
    ) -> Result<HandoffRecord, BenchError> {
        let old_pid = self.incumbent_pid();
        capture.drain_into(&mut self.captured);
        let trigger_ns = monotonic_ns();
        let outcome = self.supervisor.perform_handoff(self.spec.clone());
        let commit_ns = monotonic_ns();
        // perform_handoff returns without waiting for the journal's clear;
        // measure when it is durable too, so no handoff starts (and no FD
        // count is sampled) with the previous one's clear in flight.
        let synced = self.supervisor.sync_journal();
        let journal_synced_ns = monotonic_ns();
        capture.drain_into(&mut self.captured);
        let mut record = HandoffRecord {
            index,
            old_pid,
            trigger_ns,
            commit_ns,
            journal_synced_ns,
            old_exit_code: -1,
            ..Default::default()
        };
        for e in &self.captured {
            if let Some(m) = supervisor_mark(e.target, &e.detail)
                && record.sup[m] == 0
            {
                record.sup[m] = e.mono_ns;
            }
            if let Some(w) = &e.warning {
                record.sup_warnings += 1;
                if self.warnings.len() < MAX_WARNINGS_KEPT {
                    self.warnings.push(format!("handoff #{index}: {w}"));
                }
            }
        }
        let outcome = outcome.map_err(|e| BenchError::Handoff {
            index,
            error: e.to_string(),
        })?;
        synced.map_err(|e| BenchError::Handoff {
            index,
            error: format!("the journal's clear failed: {e}"),
        })?;
        record.handoff_id = outcome.handoff_id.as_u128();
        let Some(child) = outcome.child.filter(|_| outcome.committed) else {
            return Err(BenchError::Handoff {
                index,
                error: format!(
                    "aborted: {}",
                    outcome.abort_reason.unwrap_or_else(|| "no reason".into())
                ),
            });
        };
        record.new_pid = child.id();
        if let Some(old) = self.incumbent.replace(child) {
            self.reap_in_background(old, trigger_ns);
        }
        let deadline = Instant::now() + self.config.settle_timeout;
        record.serves_ns = self
            .wait_answered_by(record.new_pid, deadline)
            .map_err(|e| BenchError::Handoff {
                index,
                error: format!(
                    "the new incumbent (pid {}) did not answer after the commit: {e}",
                    record.new_pid
                ),
            })?;
        Ok(record)
    }

    fn reap_in_background(&mut self, mut old: Child, handed_off_ns: u64) {
        let pid = old.id();
        let tx = self.exits_tx.clone();
        self.pending_exits.insert(pid, handed_off_ns);
        let spawned = std::thread::Builder::new()
            .name("bench-reaper".into())
            .spawn(move || {
                let status = old.wait();
                let mono_ns = monotonic_ns();
                let _ = tx.send(Exit {
                    pid,
                    mono_ns,
                    status,
                });
            });
        if let Err(e) = spawned {
            self.bad_exits
                .push(format!("cannot start a reaper thread for pid {pid}: {e}"));
        }
    }

    /// Collect exits already reported, without waiting. Returns `(pid,
    /// mono_ns, exit code)` of each.
    pub fn collect_exits(&mut self) -> Vec<(u32, u64, i32)> {
        let mut out = Vec::new();
        while let Ok(exit) = self.exits_rx.try_recv() {
            out.push(self.note_exit(exit));
        }
        out
    }

    /// Wait (bounded by `settle_timeout`) until every old incumbent has
    /// exited. Returns the exits seen.
    pub fn wait_exits(&mut self) -> Result<Vec<(u32, u64, i32)>, BenchError> {
        let deadline = Instant::now() + self.config.settle_timeout;
        let mut out = self.collect_exits();
        while !self.pending_exits.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exits_rx.recv_timeout(left) {
                Ok(exit) => out.push(self.note_exit(exit)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let pids: Vec<u32> = self.pending_exits.keys().copied().collect();
                    return Err(BenchError::Check(format!(
                        "old incumbent(s) {pids:?} still running {:?} after their handoff committed",
                        self.config.settle_timeout
                    )));
                }
            }
        }
        Ok(out)
    }

    fn note_exit(&mut self, exit: Exit) -> (u32, u64, i32) {
        self.pending_exits.remove(&exit.pid);
        let code = match &exit.status {
            Ok(s) => s.code().unwrap_or(-1),
            Err(_) => -1,
        };
        if code != 0 && self.bad_exits.len() < MAX_WARNINGS_KEPT {
            self.bad_exits.push(format!(
                "old incumbent pid {} exited with {:?}",
                exit.pid, exit.status
            ));
        }
        (exit.pid, exit.mono_ns, code)
    }

    /// `PING` the listener until `pid` answers (bounded by `deadline`);
    /// returns when it first did. Each `PING` goes on a new connection that
    /// is closed by both sides before the next step, so it leaves nothing
    /// open in the incumbent.
    fn wait_answered_by(&mut self, pid: u32, deadline: Instant) -> io::Result<u64> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("pid {pid} did not answer PING in time"),
                ));
            }
            let answered = crate::client::ping(self.addr, left)?;
            let at = monotonic_ns();
            if answered == pid {
                return Ok(at);
            }
            self.stale_answers += 1;
        }
    }

    /// Kill the current incumbent and wait for every process this service
    /// started. Safe to call twice.
    pub fn shutdown(&mut self) {
        if let Some(mut child) = self.incumbent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.wait_exits();
    }

    /// The listener stays open as long as the service (for the record: it is
    /// what keeps clients from being refused).
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// The service's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supervisor_event_has_one_mark() {
        let mut seen = [false; mark::COUNT];
        for (t, d) in [
            (events::HELLO, "incumbent"),
            (events::SPAWN, ""),
            (events::HELLO, "successor"),
            (events::JOURNAL, "Negotiating durable"),
            (events::PREPARE, ""),
            (events::DRAINED, ""),
            (events::JOURNAL, "Draining"),
            (events::SEAL, ""),
            (events::SEAL_COMPLETE, ""),
            (events::JOURNAL, "Sealing"),
            (events::JOURNAL, "AwaitingReady"),
            (events::READY, ""),
            (events::COMMIT, ""),
            (events::JOURNAL, "Committed"),
            (events::JOURNAL, "cleared"),
            (events::OUTCOME, ""),
        ] {
            let m = supervisor_mark(t, d).unwrap();
            assert!(!seen[m], "{t} {d}");
            seen[m] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(supervisor_mark(events::ABORT, ""), None);
        // Recorded at spawn; only the wait for it is a mark.
        assert_eq!(supervisor_mark(events::JOURNAL, "Negotiating"), None);
    }
}
