//! Metrics from the handoff events: a `tracing` layer that turns the
//! [`events`](mod@crate::events) the supervisor and incumbent emit into counters
//! and histograms, behind a two-method trait any metrics library fits.
//!
//! ```no_run
//! use std::sync::Arc;
//! use handoff::metrics::{MetricsLayer, PrometheusText};
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! let metrics = Arc::new(PrometheusText::new());
//! tracing_subscriber::registry()
//!     .with(MetricsLayer::new(Arc::clone(&metrics)))
//!     .init();
//! // ... run handoffs; then serve this on /metrics:
//! print!("{}", metrics.render());
//! ```
//!
//! The names (see [`names`]) and what feeds them are listed in
//! `docs/events.md`. Durations are in seconds. The layer keeps no state of
//! its own: each event maps to at most two sink calls, so it is cheap on
//! every process (supervisor or service).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::events;

/// Where the metrics go. Implement it for your metrics library (the
/// `metrics` crate facade, a Prometheus registry, StatsD...); the names are
/// `'static` and stable.
pub trait MetricsSink: Send + Sync + 'static {
    /// Add one to the counter `name`.
    fn increment(&self, name: &'static str);
    /// Record one observation, in seconds, in the histogram `name`.
    fn observe_seconds(&self, name: &'static str, seconds: f64);
}

impl<S: MetricsSink> MetricsSink for Arc<S> {
    fn increment(&self, name: &'static str) {
        (**self).increment(name);
    }
    fn observe_seconds(&self, name: &'static str, seconds: f64) {
        (**self).observe_seconds(name, seconds);
    }
}

/// The metric names. Counters end in `_total`; histograms in `_seconds`.
pub mod names {
    /// Handoffs that ended, whatever the result (`handoff.outcome`).
    pub const HANDOFFS_TOTAL: &str = "handoff_handoffs_total";
    /// Handoffs that committed: the successor is the incumbent.
    pub const COMMITTED_TOTAL: &str = "handoff_committed_total";
    /// Handoffs aborted and rolled back: the incumbent resumed serving.
    pub const ABORTED_TOTAL: &str = "handoff_aborted_total";
    /// Handoffs that ended in an error (`handoff.outcome` with
    /// `failed = true`, emitted by the daemon).
    pub const FAILED_TOTAL: &str = "handoff_failed_total";
    /// Seals that failed: the supervisor's `handoff.abort` for a
    /// `SealFailed`, or the incumbent's own `handoff.incumbent.seal_failed`.
    pub const SEAL_FAILURES_TOTAL: &str = "handoff_seal_failures_total";
    /// From the start of a handoff to `Commit` (committed handoffs only).
    pub const HANDOFF_DURATION: &str = "handoff_duration_seconds";
    /// From `PrepareHandoff` to `Drained`.
    pub const DRAIN_DURATION: &str = "handoff_drain_duration_seconds";
    /// From `SealRequest` to `SealComplete`.
    pub const SEAL_DURATION: &str = "handoff_seal_duration_seconds";
    /// From `Begin` to the successor's `Ready`.
    pub const BEGIN_TO_READY: &str = "handoff_begin_to_ready_seconds";

    /// Every counter, for sinks that register them up front.
    pub const COUNTERS: [&str; 5] = [
        HANDOFFS_TOTAL,
        COMMITTED_TOTAL,
        ABORTED_TOTAL,
        FAILED_TOTAL,
        SEAL_FAILURES_TOTAL,
    ];
    /// Every histogram.
    pub const HISTOGRAMS: [&str; 4] = [
        HANDOFF_DURATION,
        DRAIN_DURATION,
        SEAL_DURATION,
        BEGIN_TO_READY,
    ];
}

/// The `cause` field of the supervisor's abort event for a failed seal.
const SEAL_FAILED_CAUSE: &str = "seal_failed";

/// A `tracing_subscriber` layer feeding a [`MetricsSink`] from the handoff
/// events. Add it beside any other layer (the JSON event log, `fmt`).
pub struct MetricsLayer<S> {
    sink: S,
}

impl<S: MetricsSink> MetricsLayer<S> {
    /// A layer writing to `sink`.
    pub fn new(sink: S) -> Self {
        Self { sink }
    }
}

/// The fields of one event that matter for metrics.
#[derive(Default)]
struct Fields {
    committed: Option<bool>,
    failed: Option<bool>,
    seconds: Option<f64>,
    cause: Option<String>,
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "committed" => self.committed = Some(value),
            "failed" => self.failed = Some(value),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name().ends_with("_seconds") {
            self.seconds = Some(value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "cause" {
            self.cause = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "cause" {
            self.cause = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

impl<S: MetricsSink> MetricsLayer<S> {
    /// Map one event (by target and fields) to sink calls. Pure apart from
    /// the sink, so it is tested without a subscriber too.
    fn record(&self, target: &str, fields: &Fields) {
        let observe = |name| {
            if let Some(seconds) = fields.seconds {
                self.sink.observe_seconds(name, seconds);
            }
        };
        match target {
            events::OUTCOME => {
                self.sink.increment(names::HANDOFFS_TOTAL);
                self.sink
                    .increment(match (fields.committed, fields.failed) {
                        (_, Some(true)) => names::FAILED_TOTAL,
                        (Some(true), _) => names::COMMITTED_TOTAL,
                        _ => names::ABORTED_TOTAL,
                    });
            }
            events::ABORT if fields.cause.as_deref() == Some(SEAL_FAILED_CAUSE) => {
                self.sink.increment(names::SEAL_FAILURES_TOTAL);
            }
            events::INCUMBENT_SEAL_FAILED => self.sink.increment(names::SEAL_FAILURES_TOTAL),
            events::COMMIT => observe(names::HANDOFF_DURATION),
            events::DRAINED => observe(names::DRAIN_DURATION),
            events::SEAL_COMPLETE => observe(names::SEAL_DURATION),
            events::READY => observe(names::BEGIN_TO_READY),
            _ => {}
        }
    }
}

impl<S: MetricsSink, Sub: tracing::Subscriber> Layer<Sub> for MetricsLayer<S> {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, Sub>) {
        let target = event.metadata().target();
        if !target.starts_with("handoff.") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.record(target, &fields);
    }
}

/// Histogram bucket bounds, in seconds: from a millisecond (tests) to the
/// default 300 s handoff deadline.
pub const BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// Observations at or below each bound of [`BUCKETS_SECONDS`].
    buckets: [u64; BUCKETS_SECONDS.len()],
    count: u64,
    sum: f64,
}

/// An in-memory [`MetricsSink`] that renders the Prometheus text exposition
/// format; every metric is present (at zero) from the start.
#[derive(Debug, Default)]
pub struct PrometheusText {
    state: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    counters: BTreeMap<&'static str, u64>,
    histograms: BTreeMap<&'static str, Histogram>,
}

impl PrometheusText {
    /// Every counter at zero, every histogram empty.
    pub fn new() -> Self {
        let counters = names::COUNTERS.iter().map(|n| (*n, 0)).collect();
        let histograms = names::HISTOGRAMS
            .iter()
            .map(|n| (*n, Histogram::default()))
            .collect();
        Self {
            state: Mutex::new(Recorded {
                counters,
                histograms,
            }),
        }
    }

    /// The value of counter `name` (0 if never incremented).
    pub fn counter(&self, name: &str) -> u64 {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.counters.get(name).copied().unwrap_or(0)
    }

    /// How many observations histogram `name` holds, and their sum.
    pub fn histogram(&self, name: &str) -> (u64, f64) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .histograms
            .get(name)
            .map_or((0, 0.0), |h| (h.count, h.sum))
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, value) in &state.counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
        }
        for (name, h) in &state.histograms {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (bound, n) in BUCKETS_SECONDS.iter().zip(h.buckets) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
        }
        out
    }
}

impl MetricsSink for PrometheusText {
    fn increment(&self, name: &'static str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state.counters.entry(name).or_insert(0) += 1;
    }

    fn observe_seconds(&self, name: &'static str, seconds: f64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let h = state.histograms.entry(name).or_default();
        for (bound, n) in BUCKETS_SECONDS.iter().zip(h.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Emit events exactly as the library does (same targets and field
    /// types) through a real subscriber.
    fn with_layer(f: impl FnOnce()) -> Arc<PrometheusText> {
        let sink = Arc::new(PrometheusText::new());
        let subscriber = tracing_subscriber::registry().with(MetricsLayer::new(Arc::clone(&sink)));
        tracing::subscriber::with_default(subscriber, f);
        sink
    }

    #[test]
    fn outcomes_are_counted_by_result() {
        let sink = with_layer(|| {
            tracing::info!(target: events::OUTCOME, committed = true, successor_pid = 7u32, "handoff committed");
            tracing::info!(target: events::OUTCOME, committed = false, reason = %"timeout", "handoff aborted");
            tracing::warn!(target: events::OUTCOME, committed = false, failed = true, error = %"refused", "handoff failed");
            tracing::info!(target: events::OUTCOME, committed = true, "handoff committed");
        });
        assert_eq!(sink.counter(names::HANDOFFS_TOTAL), 4);
        assert_eq!(sink.counter(names::COMMITTED_TOTAL), 2);
        assert_eq!(sink.counter(names::ABORTED_TOTAL), 1);
        assert_eq!(sink.counter(names::FAILED_TOTAL), 1);
    }

    #[test]
    fn seal_failures_count_from_either_side_and_other_aborts_do_not() {
        let sink = with_layer(|| {
            tracing::warn!(target: events::ABORT, handoff_id = %"x", cause = SEAL_FAILED_CAUSE, reason = %"seal failed: disk full", "seal failed; aborting handoff");
            tracing::warn!(target: events::ABORT, handoff_id = %"x", cause = "not_ready", reason = %"expected Ready, got Hello", "aborting");
            tracing::warn!(target: events::INCUMBENT_SEAL_FAILED, handoff_id = %"y", error = %"EIO", "seal failed");
        });
        assert_eq!(sink.counter(names::SEAL_FAILURES_TOTAL), 2);
        assert_eq!(sink.counter(names::HANDOFFS_TOTAL), 0);
    }

    #[test]
    fn durations_land_in_their_histograms() {
        let sink = with_layer(|| {
            tracing::info!(target: events::DRAINED, open_conns_remaining = 0u64, accept_closed = true, drain_seconds = 0.004, "drain complete");
            tracing::info!(target: events::SEAL_COMPLETE, seal_seconds = 0.5, "seal complete");
            tracing::info!(target: events::READY, healthz_ok = true, begin_to_ready_seconds = 2.0, "successor ready");
            tracing::info!(target: events::COMMIT, total_seconds = 3.0, "commit");
            tracing::info!(target: "my_service.request", latency_seconds = 1.0, "not ours");
        });
        assert_eq!(sink.histogram(names::DRAIN_DURATION), (1, 0.004));
        assert_eq!(sink.histogram(names::SEAL_DURATION), (1, 0.5));
        assert_eq!(sink.histogram(names::BEGIN_TO_READY), (1, 2.0));
        assert_eq!(sink.histogram(names::HANDOFF_DURATION), (1, 3.0));
        let text = sink.render();
        assert!(
            text.contains("handoff_drain_duration_seconds_bucket{le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("handoff_drain_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("handoff_drain_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("handoff_duration_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn every_metric_is_rendered_from_the_start() {
        let text = PrometheusText::new().render();
        for name in names::COUNTERS {
            assert!(
                text.contains(&format!("# TYPE {name} counter\n{name} 0\n")),
                "{name}"
            );
        }
        for name in names::HISTOGRAMS {
            assert!(text.contains(&format!("{name}_count 0\n")), "{name}");
        }
    }
}
