//! `handoff::metrics` fed by real handoffs: the supervisor runs in this
//! process with a [`MetricsLayer`]; the incumbent and successor are real
//! `http_server` processes (or, for a failing seal, an in-process incumbent
//! whose `seal` fails). Pins the event names and fields the layer reads to
//! what the library really emits.
//!
//! Reproduce: `cargo test -p handoff --test http_metrics -- --nocapture`.

mod daemon_support;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_support::{DEADLINE, example_binary, wait_exit, wait_for};
use handoff::metrics::{MetricsLayer, PrometheusText, names};
use handoff::{
    DataDirLock, DrainReport, Drainable, HandoffOutcome, Incumbent, SealError, SealReport,
    SpawnSpec, Supervisor,
};
use tracing_subscriber::layer::SubscriberExt;

/// Kills and reaps a service process the test started.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spec(control: &Path, data: &Path) -> SpawnSpec {
    let mut spec = SpawnSpec::new(example_binary("http_server"));
    spec.args = vec![control.display().to_string(), data.display().to_string()];
    spec.env = vec![("HANDOFF_HEARTBEAT_MS".into(), "50".into())];
    spec.deadline = Duration::from_secs(15);
    spec.drain_grace = Duration::from_secs(5);
    spec
}

/// Run one handoff with the metrics layer as this thread's subscriber.
fn handoff_with_metrics(
    supervisor: &Supervisor,
    spec: SpawnSpec,
) -> (HandoffOutcome, Arc<PrometheusText>) {
    let sink = Arc::new(PrometheusText::new());
    let subscriber = tracing_subscriber::registry().with(MetricsLayer::new(Arc::clone(&sink)));
    let outcome =
        tracing::subscriber::with_default(subscriber, || supervisor.perform_handoff(spec))
            .expect("the handoff runs to an outcome");
    (outcome, sink)
}

#[test]
fn a_committed_handoff_feeds_the_counters_and_every_duration() {
    let dir = tempfile::tempdir().unwrap();
    let (control, data) = (dir.path().join("control.sock"), dir.path().join("data"));
    std::fs::create_dir(&data).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let supervisor = Supervisor::new(&control)
        .unwrap()
        .with_listener("http", listener.as_raw_fd());
    let mut first = Guard(Some(supervisor.cold_start(&spec(&control, &data)).unwrap()));
    wait_for(
        "the cold-started incumbent's control socket",
        DEADLINE,
        || control.exists().then_some(()),
    );

    let (outcome, sink) = handoff_with_metrics(&supervisor, spec(&control, &data));
    assert!(outcome.committed, "{outcome:?}");
    let _second = Guard(outcome.child);
    let old = first.0.as_mut().unwrap();
    assert!(wait_exit(old, "the old incumbent to exit after Commit", DEADLINE).success());

    assert_eq!(sink.counter(names::HANDOFFS_TOTAL), 1);
    assert_eq!(sink.counter(names::COMMITTED_TOTAL), 1);
    assert_eq!(sink.counter(names::ABORTED_TOTAL), 0);
    for name in names::HISTOGRAMS {
        let (count, sum) = sink.histogram(name);
        assert_eq!(count, 1, "{name}");
        assert!(sum > 0.0 && sum < DEADLINE.as_secs_f64(), "{name}: {sum}");
    }
    println!("{}", sink.render());
}

/// Drains at once; its seal always fails.
struct SealAlwaysFails;

impl Drainable for SealAlwaysFails {
    fn drain(&mut self, _deadline: Instant) -> DrainReport {
        DrainReport {
            open_conns_remaining: 0,
            accept_closed: true,
        }
    }
    fn seal(&mut self) -> Result<SealReport, SealError> {
        Err(SealError {
            error: "injected: disk full".into(),
            partial_state: "nothing written".into(),
        })
    }
    fn resume_after_abort(&mut self) {}
}

#[test]
fn a_failed_seal_counts_as_a_seal_failure_and_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (control, data) = (dir.path().join("control.sock"), dir.path().join("data"));
    std::fs::create_dir(&data).unwrap();
    let incumbent =
        Incumbent::bind_cold_start(&control, DataDirLock::acquire(&data).unwrap()).unwrap();
    // Serves sessions until the test process ends (it never commits).
    std::thread::spawn(move || incumbent.serve(&mut SealAlwaysFails));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let supervisor = Supervisor::new(&control)
        .unwrap()
        .with_listener("http", listener.as_raw_fd());

    let (outcome, sink) = handoff_with_metrics(&supervisor, spec(&control, &data));
    assert!(!outcome.committed);
    let reason = outcome.abort_reason.unwrap_or_default();
    assert!(reason.contains("injected: disk full"), "{reason}");
    assert_eq!(sink.counter(names::SEAL_FAILURES_TOTAL), 1);
    assert_eq!(sink.counter(names::ABORTED_TOTAL), 1);
    assert_eq!(sink.counter(names::HANDOFFS_TOTAL), 1);
    assert_eq!(sink.counter(names::COMMITTED_TOTAL), 0);
    assert_eq!(sink.histogram(names::DRAIN_DURATION).0, 1);
    assert_eq!(sink.histogram(names::SEAL_DURATION).0, 0, "no SealComplete");
}
