//! The supervisor's journal writer: one background thread that makes journal
//! phases durable while the handoff goes on.
//!
//! Every operation is the same durable step as before (temp file, fsync,
//! rename, directory fsync; or unlink and directory fsync); only *who waits
//! for it* changes. The caller records the state the journal should reach
//! and carries on; the writer catches up in order. Requests are coalesced:
//! the journal only ever needs to reach the latest state, so a phase still
//! waiting when a later one is recorded is skipped (`Committed` followed at
//! once by the clear is never written). A write in progress is never
//! overtaken: the file on disk moves forward through the recorded states,
//! never backwards.
//!
//! The writer waits up to [`COALESCE_WINDOW`] after a state is recorded
//! before it starts writing, so that a handoff which moves on within that
//! window (the usual case: a whole handoff takes a few ms) costs one durable
//! write at its end instead of one per phase, and those fsyncs do not
//! compete with the incumbent's own seal fsync. Where the handoff must not
//! go on before the journal is durable (before the first message that
//! changes a peer's state), the supervisor calls [`JournalWriter::flush`],
//! which writes at once. See ARCHITECTURE.md, "The journal is
//! write-ahead for the handoff, not for each phase".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::events;
use crate::state::StateJournal;

/// What the journal file should become.
#[derive(Debug, Clone)]
pub(crate) enum JournalOp {
    /// Atomically replace it with this entry.
    Write(StateJournal),
    /// Remove it.
    Clear,
}

impl JournalOp {
    fn describe(&self) -> String {
        match self {
            JournalOp::Write(j) => format!("write phase {:?}", j.phase),
            JournalOp::Clear => "clear".to_string(),
        }
    }
}

/// When the writer starts on a recorded state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// After the coalescing window, unless a newer state supersedes it.
    Coalesced,
    /// At once.
    Now,
}

/// How long a recorded state may wait for a newer one before the writer
/// makes it durable. Bounds how far the journal on disk lags behind the
/// handoff (recovery does not depend on the phase; see ARCHITECTURE.md).
pub(crate) const COALESCE_WINDOW: Duration = Duration::from_millis(5);

pub(crate) struct JournalWriter {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The latest recorded state not yet started by the writer.
    pending: Option<JournalOp>,
    /// When the oldest state not yet written was recorded.
    pending_since: Option<Instant>,
    /// Someone waits for the writer to catch up: write now.
    urgent: u32,
    /// The pending state is to be written without waiting for a newer one.
    write_now: bool,
    /// The writer is carrying out an operation now.
    busy: bool,
    /// The first failure not yet reported to the caller.
    failed: Option<Error>,
    shutdown: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JournalWriter {
    /// A writer for the journal at `path`. Its thread starts with the first
    /// recorded operation.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            thread: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Record the state the journal should reach and return at once; the
    /// writer starts on it after the coalescing window, or at once with
    /// [`When::Now`] (for a state the caller will [`flush`](Self::flush)
    /// soon and wants written in the meantime). An earlier background
    /// failure not yet reported is returned instead (and the operation is
    /// still recorded, so a clear always goes through).
    pub(crate) fn record(&self, op: JournalOp, when: When) -> Result<()> {
        let write_now = when == When::Now;
        self.ensure_thread()?;
        let mut st = self.shared.lock();
        st.pending = Some(op);
        st.write_now |= write_now;
        st.pending_since.get_or_insert_with(Instant::now);
        let failed = st.failed.take();
        drop(st);
        self.shared.changed.notify_all();
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until every recorded operation is on disk; report the first
    /// failure since the last report.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut st = self.wait_idle();
        match st.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until every recorded operation is done, leaving any failure for
    /// the next [`flush`](Self::flush) or [`record`](Self::record).
    pub(crate) fn settle(&self) {
        drop(self.wait_idle());
    }

    fn wait_idle(&self) -> MutexGuard<'_, State> {
        let mut st = self.shared.lock();
        if st.pending.is_none() && !st.busy {
            return st;
        }
        st.urgent += 1;
        self.shared.changed.notify_all();
        // Bounded by the writer's own I/O: each operation is one durable
        // write or unlink, nothing else runs on that thread, and `urgent`
        // makes it skip the coalescing window.
        let mut st = self
            .shared
            .changed
            .wait_while(st, |st| st.pending.is_some() || st.busy)
            .unwrap_or_else(|p| p.into_inner());
        st.urgent -= 1;
        st
    }

    /// Wait, at most `timeout`, until the writer has caught up on its own
    /// (without making it urgent). True when it has.
    #[cfg(test)]
    fn caught_up_within(&self, timeout: Duration) -> bool {
        let st = self.shared.lock();
        let (_st, waited) = self
            .shared
            .changed
            .wait_timeout_while(st, timeout, |st| st.pending.is_some() || st.busy)
            .unwrap_or_else(|p| p.into_inner());
        !waited.timed_out()
    }

    fn ensure_thread(&self) -> Result<()> {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() {
            let shared = Arc::clone(&self.shared);
            let path = self.path.clone();
            *thread = Some(
                std::thread::Builder::new()
                    .name("handoff-journal".into())
                    .spawn(move || run(&shared, &path))?,
            );
        }
        Ok(())
    }
}

impl Drop for JournalWriter {
    /// Finish what was recorded (a one-shot supervisor exits right after its
    /// handoff: the clear must land first), then stop the thread.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(target: events::JOURNAL, error = %e, path = %self.path.display(), "journal write failed; the next supervisor start will recover from what is on disk");
        }
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, path: &Path) {
    loop {
        let op = {
            let mut st = shared.lock();
            loop {
                if st.pending.is_some() {
                    let due = *st.pending_since.get_or_insert_with(Instant::now) + COALESCE_WINDOW;
                    let now = Instant::now();
                    if st.urgent > 0 || st.write_now || st.shutdown || now >= due {
                        st.pending_since = None;
                        st.write_now = false;
                        if let Some(op) = st.pending.take() {
                            st.busy = true;
                            break op;
                        }
                    }
                    // Coalescing: a newer state may supersede this one.
                    st = shared
                        .changed
                        .wait_timeout(st, due - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
                if st.shutdown {
                    return;
                }
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = match &op {
            JournalOp::Write(j) => j.write_atomic(path),
            JournalOp::Clear => StateJournal::delete(path),
        };
        match &result {
            Ok(()) => {
                tracing::debug!(target: events::JOURNAL, op = %op.describe(), "journal durable")
            }
            Err(e) => {
                tracing::warn!(target: events::JOURNAL, op = %op.describe(), error = %e, path = %path.display(), "background journal operation failed")
            }
        }
        let mut st = shared.lock();
        st.busy = false;
        if let Err(e) = result
            && st.failed.is_none()
        {
            st.failed = Some(e);
        }
        drop(st);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HandoffId;
    use crate::state::Phase;

    fn entry(phase: Phase) -> StateJournal {
        StateJournal {
            handoff_id: HandoffId::new(),
            phase,
            incumbent_pid: 10,
            successor_pid: Some(11),
            started_at_unix_ms: 1,
        }
    }

    #[test]
    fn flush_leaves_the_latest_recorded_state_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let w = JournalWriter::new(path.clone());
        w.record(JournalOp::Write(entry(Phase::Negotiating)), When::Coalesced)
            .unwrap();
        w.record(JournalOp::Write(entry(Phase::Draining)), When::Coalesced)
            .unwrap();
        w.record(JournalOp::Write(entry(Phase::Sealing)), When::Coalesced)
            .unwrap();
        w.flush().unwrap();
        assert_eq!(
            StateJournal::read(&path).unwrap().unwrap().phase,
            Phase::Sealing
        );
        w.record(JournalOp::Write(entry(Phase::Committed)), When::Coalesced)
            .unwrap();
        w.record(JournalOp::Clear, When::Coalesced).unwrap();
        w.flush().unwrap();
        assert!(StateJournal::read(&path).unwrap().is_none());
    }

    #[test]
    fn a_recorded_state_is_written_after_the_window_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let w = JournalWriter::new(path.clone());
        w.record(JournalOp::Write(entry(Phase::Draining)), When::Coalesced)
            .unwrap();
        assert!(
            w.caught_up_within(Duration::from_secs(5)),
            "the writer never wrote the recorded Draining phase on its own"
        );
        assert_eq!(
            StateJournal::read(&path).unwrap().unwrap().phase,
            Phase::Draining
        );
    }

    #[test]
    fn drop_finishes_what_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        {
            let w = JournalWriter::new(path.clone());
            w.record(
                JournalOp::Write(entry(Phase::AwaitingReady)),
                When::Coalesced,
            )
            .unwrap();
        }
        assert_eq!(
            StateJournal::read(&path).unwrap().unwrap().phase,
            Phase::AwaitingReady
        );
    }

    #[test]
    fn a_background_failure_is_reported_once_by_the_next_call() {
        let dir = tempfile::tempdir().unwrap();
        // The journal's directory does not exist: every write fails.
        let path = dir.path().join("missing").join("journal");
        let w = JournalWriter::new(path);
        w.record(JournalOp::Write(entry(Phase::Draining)), When::Coalesced)
            .unwrap();
        w.settle();
        // Reported by the next record (which is still carried out) ...
        assert!(
            w.record(JournalOp::Write(entry(Phase::Sealing)), When::Coalesced)
                .is_err()
        );
        // ... whose own failure the flush then reports.
        assert!(w.flush().is_err());
        assert!(w.flush().is_ok(), "each failure is reported once");
    }
}
