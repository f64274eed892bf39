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

/// Longest [`JournalWriter::flush`] waits for the disk unless told
/// otherwise ([`JournalWriter::set_deadline`]): a hung `fsync` becomes
/// `Timeout` instead of hanging the supervisor.
pub(crate) const DEFAULT_FLUSH_DEADLINE: Duration = Duration::from_secs(30);

/// What `flush` names when the disk does not answer in time.
pub(crate) const FLUSH_TIMEOUT: &str = "the journal's durable write (fsync)";

/// The durable operation itself; replaced in tests to stall or panic.
type Perform = dyn Fn(&JournalOp, &Path) -> Result<()> + Send + Sync;

pub(crate) struct JournalWriter {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    perform: Arc<Perform>,
    deadline: Mutex<Duration>,
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
    /// The writer thread has ended (it only does on shutdown, unless a bug
    /// killed it): waiting for it would never end.
    dead: bool,
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
        Self::with_operation(path, Arc::new(perform_durably))
    }

    fn with_operation(path: PathBuf, perform: Arc<Perform>) -> Self {
        Self {
            path,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            thread: Mutex::new(None),
            perform,
            deadline: Mutex::new(DEFAULT_FLUSH_DEADLINE),
        }
    }

    /// How long [`flush`](Self::flush) (and dropping the writer) waits for
    /// the disk before giving up with [`Error::Timeout`].
    #[allow(dead_code)] // for the supervisor to bound a flush by its handoff
    pub(crate) fn set_deadline(&self, deadline: Duration) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    fn deadline(&self) -> Duration {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
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
    ///
    /// If the writer thread cannot be started, the operation is carried out
    /// here, at once, and the start failure is returned: nothing recorded
    /// is ever left without a writer.
    pub(crate) fn record(&self, op: JournalOp, when: When) -> Result<()> {
        let write_now = when == When::Now;
        if let Err(e) = self.ensure_thread() {
            tracing::warn!(target: events::JOURNAL, error = %e, op = %op.describe(), "cannot start the journal writer thread; writing on the caller's thread");
            (self.perform)(&op, &self.path)?;
            return Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start the journal writer thread ({e}); {} was done synchronously",
                    op.describe()
                ),
            )));
        }
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

    /// Wait until every recorded operation is on disk, at most the
    /// writer's deadline ([`set_deadline`](Self::set_deadline)); report the
    /// first failure since the last report. A disk that does not finish in
    /// time is `Timeout(FLUSH_TIMEOUT)` (the write goes on in the
    /// background); a writer thread that died is an error.
    pub(crate) fn flush(&self) -> Result<()> {
        self.flush_within(self.deadline())
    }

    /// [`flush`](Self::flush), waiting at most `timeout`.
    pub(crate) fn flush_within(&self, timeout: Duration) -> Result<()> {
        let mut st = self.wait_idle(timeout)?;
        match st.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until every recorded operation is done (at most the writer's
    /// deadline), leaving any failure for the next [`flush`](Self::flush)
    /// or [`record`](Self::record).
    pub(crate) fn settle(&self) {
        if let Err(e) = self.wait_idle(self.deadline()) {
            tracing::warn!(target: events::JOURNAL, error = %e, path = %self.path.display(), "the journal writer did not settle");
        }
    }

    fn wait_idle(&self, timeout: Duration) -> Result<MutexGuard<'_, State>> {
        let mut st = self.shared.lock();
        if st.pending.is_none() && !st.busy {
            return Ok(st);
        }
        st.urgent += 1;
        self.shared.changed.notify_all();
        // `urgent` makes the writer skip the coalescing window; the disk
        // itself is bounded by `timeout`.
        let (mut st, waited) = self
            .shared
            .changed
            .wait_timeout_while(st, timeout, |st| {
                (st.pending.is_some() || st.busy) && !st.dead
            })
            .unwrap_or_else(|p| p.into_inner());
        st.urgent -= 1;
        if st.pending.is_some() || st.busy {
            if st.dead {
                return Err(Error::Protocol(format!(
                    "the journal writer thread ended with work left; {} may lag behind \
                     (a bug: please report it)",
                    self.path.display()
                )));
            }
            debug_assert!(waited.timed_out());
            return Err(Error::Timeout(FLUSH_TIMEOUT));
        }
        Ok(st)
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

    /// Start the writer thread if none runs (first use, or it died).
    fn ensure_thread(&self) -> std::io::Result<()> {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        if let Some(old) = thread.take() {
            let _ = old.join();
        }
        let shared = Arc::clone(&self.shared);
        let path = self.path.clone();
        let perform = Arc::clone(&self.perform);
        #[cfg(test)]
        if FAIL_THREAD_START.with(|f| f.get()) {
            return Err(std::io::Error::other("thread start refused by the test"));
        }
        *thread = Some(
            std::thread::Builder::new()
                .name("handoff-journal".into())
                .spawn(move || run(&shared, &path, &*perform))?,
        );
        self.shared.lock().dead = false;
        Ok(())
    }
}

impl Drop for JournalWriter {
    /// Finish what was recorded (a one-shot supervisor exits right after its
    /// handoff: the clear must land first), then stop the thread.
    fn drop(&mut self) {
        let flushed = self.flush();
        if let Err(e) = &flushed {
            tracing::warn!(target: events::JOURNAL, error = %e, path = %self.path.display(), "journal write failed; the next supervisor start will recover from what is on disk");
        }
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // A writer stuck in the disk is left behind rather than waited for.
        if let Some(t) = thread
            && !matches!(flushed, Err(Error::Timeout(_)))
        {
            let _ = t.join();
        }
    }
}

/// The durable operation: atomic replace, or unlink; each with its fsyncs.
fn perform_durably(op: &JournalOp, path: &Path) -> Result<()> {
    match op {
        JournalOp::Write(j) => j.write_atomic(path),
        JournalOp::Clear => StateJournal::delete(path),
    }
}

#[cfg(test)]
thread_local! {
    /// Makes [`JournalWriter::ensure_thread`] fail, as `spawn` can.
    static FAIL_THREAD_START: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the writer dead when its thread ends, however it ends, and wakes
/// whoever waits for it.
struct Ended<'a>(&'a Shared);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.dead = true;
        st.busy = false;
        drop(st);
        self.0.changed.notify_all();
    }
}

fn run(shared: &Shared, path: &Path, perform: &Perform) {
    let _ended = Ended(shared);
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
        // A panic in the operation (a bug) fails that operation; the
        // writer carries on, and `busy` is always cleared.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| perform(&op, path)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Error::Protocol(format!(
                    "the journal writer panicked during {} ({what}; a bug: please report it)",
                    op.describe()
                )))
            });
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

    /// An operation that blocks until released: a hung `fsync`.
    fn stalled() -> (Arc<Perform>, std::sync::mpsc::Sender<()>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let perform: Arc<Perform> = Arc::new(move |op: &JournalOp, path: &Path| {
            let _ = released.lock().unwrap().recv();
            perform_durably(op, path)
        });
        (perform, release)
    }

    #[test]
    fn a_hung_disk_is_a_named_timeout_and_the_write_lands_once_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (perform, release) = stalled();
        let w = JournalWriter::with_operation(path.clone(), perform);
        w.record(JournalOp::Write(entry(Phase::Draining)), When::Now)
            .unwrap();
        let started = Instant::now();
        let got = w.flush_within(Duration::from_millis(100));
        assert!(matches!(got, Err(Error::Timeout(FLUSH_TIMEOUT))), "{got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        release.send(()).unwrap();
        w.flush().unwrap();
        assert_eq!(
            StateJournal::read(&path).unwrap().unwrap().phase,
            Phase::Draining
        );
    }

    #[test]
    fn dropping_a_writer_stuck_in_the_disk_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let (perform, _release) = stalled();
        let w = JournalWriter::with_operation(dir.path().join("journal"), perform);
        w.set_deadline(Duration::from_millis(50));
        w.record(JournalOp::Clear, When::Now).unwrap();
        let started = Instant::now();
        drop(w);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_panicking_operation_is_an_error_and_the_writer_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let perform: Arc<Perform> = Arc::new(move |op: &JournalOp, path: &Path| {
            if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                panic!("injected");
            }
            perform_durably(op, path)
        });
        let w = JournalWriter::with_operation(path.clone(), perform);
        w.set_deadline(Duration::from_secs(10));
        w.record(JournalOp::Write(entry(Phase::Draining)), When::Now)
            .unwrap();
        let got = w.flush();
        assert!(
            matches!(&got, Err(Error::Protocol(m)) if m.contains("panicked")),
            "{got:?}"
        );
        w.record(JournalOp::Write(entry(Phase::Sealing)), When::Now)
            .unwrap();
        w.flush().unwrap();
        assert_eq!(
            StateJournal::read(&path).unwrap().unwrap().phase,
            Phase::Sealing
        );
    }

    #[test]
    fn a_writer_thread_that_cannot_start_is_an_error_and_a_clear_still_lands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        entry(Phase::Sealing).write_atomic(&path).unwrap();
        let w = JournalWriter::new(path.clone());
        FAIL_THREAD_START.with(|f| f.set(true));
        let got = w.record(JournalOp::Clear, When::Coalesced);
        FAIL_THREAD_START.with(|f| f.set(false));
        assert!(
            matches!(&got, Err(Error::Io(e)) if e.to_string().contains("writer thread")),
            "{got:?}"
        );
        assert!(
            StateJournal::read(&path).unwrap().is_none(),
            "the clear went through"
        );
        w.flush().unwrap();
    }
}
