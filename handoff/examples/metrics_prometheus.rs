//! Handoff metrics in the Prometheus text format: run one handoff with
//! [`handoff::metrics::MetricsLayer`] installed, then print what it counted.
//!
//! `metrics_prometheus CONTROL_SOCKET BINARY [ARGS]...` hands the service
//! whose incumbent answers on CONTROL_SOCKET off to `BINARY ARGS`, passing on
//! any listeners this process inherited (`LISTEN_FDS`), like a one-shot
//! `handoff-supervisor`. A long-running supervisor serves
//! `PrometheusText::render()` on its `/metrics` endpoint instead.
//!
//! Any other metrics library plugs in through the two-method
//! [`handoff::metrics::MetricsSink`]; for the `metrics` crate facade:
//!
//! ```ignore
//! struct Facade;
//! impl handoff::metrics::MetricsSink for Facade {
//!     fn increment(&self, name: &'static str) {
//!         metrics::counter!(name).increment(1);
//!     }
//!     fn observe_seconds(&self, name: &'static str, seconds: f64) {
//!         metrics::histogram!(name).record(seconds);
//!     }
//! }
//! ```
use std::os::fd::AsRawFd;
use std::sync::Arc;

use handoff::metrics::{MetricsLayer, PrometheusText};
use handoff::{SpawnSpec, Supervisor};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (listeners, _) = handoff::fd::take_handoff_env()?; // before any thread
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [control, binary, rest @ ..] = &args[..] else {
        return Err("usage: metrics_prometheus CONTROL_SOCKET BINARY [ARGS]...".into());
    };
    let metrics = Arc::new(PrometheusText::new());
    tracing_subscriber::registry()
        .with(MetricsLayer::new(Arc::clone(&metrics)))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();

    let mut supervisor = Supervisor::new(control.as_ref())?;
    for (name, fd) in &listeners {
        supervisor = supervisor.with_listener(name.clone(), fd.as_raw_fd());
    }
    let mut spec = SpawnSpec::new(binary);
    spec.args = rest.to_vec();
    match supervisor.perform_handoff(spec) {
        Ok(outcome) => eprintln!("committed: {}", outcome.committed),
        Err(e) => {
            // The library returns errors without an outcome event; count it
            // the way the daemon does (docs/events.md).
            tracing::warn!(target: handoff::events::OUTCOME, committed = false, failed = true, error = %e, "handoff failed");
        }
    }
    print!("{}", metrics.render());
    Ok(())
}
