//! The supervisor's events, captured in-process.
//!
//! The bench drives `Supervisor::perform_handoff` on its own thread under a
//! [`CaptureSubscriber`] (installed with `tracing::subscriber::with_default`,
//! so nothing global changes). Each `handoff*` event is stamped with
//! `handoff::util::monotonic_ns()`, the same system-wide `CLOCK_MONOTONIC`
//! the JSON event log of the child processes carries as `mono_ns`, so the
//! two compare directly. Events are kept in memory (no write per event, no
//! file to parse) in a buffer the bench clears after each handoff, so the
//! capture neither grows nor adds I/O to the path it measures.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// One captured event.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// `CLOCK_MONOTONIC`, ns.
    pub mono_ns: u64,
    /// The event name (tracing target), e.g. `handoff.ready`.
    pub target: &'static str,
    /// The `handoff_id` field, when present.
    pub handoff_id: String,
    /// The `role` field (`handoff.hello`) or the `phase` field
    /// (`handoff.journal`), when present.
    pub detail: String,
    /// WARN and above: the message, so the report can show it.
    pub warning: Option<String>,
}

/// Shared buffer of captured events.
#[derive(Clone, Default)]
pub struct CaptureBuffer(Arc<Mutex<Vec<Captured>>>);

impl CaptureBuffer {
    /// A buffer with room for `capacity` events before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Vec::with_capacity(capacity))))
    }

    /// Move every captured event into `into` (cleared first); the buffer
    /// keeps its capacity.
    pub fn drain_into(&self, into: &mut Vec<Captured>) {
        into.clear();
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        into.append(&mut events);
    }

    fn push(&self, e: Captured) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }
}

/// A minimal `tracing` subscriber recording `handoff*` events.
pub struct CaptureSubscriber {
    buffer: CaptureBuffer,
}

impl CaptureSubscriber {
    /// Record into `buffer`.
    pub fn new(buffer: CaptureBuffer) -> Self {
        Self { buffer }
    }
}

fn wanted(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("handoff")
}

impl Subscriber for CaptureSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mono_ns = handoff::util::monotonic_ns();
        let meta = event.metadata();
        let mut visitor = Visitor::default();
        event.record(&mut visitor);
        let warning = (*meta.level() <= tracing::Level::WARN)
            .then(|| format!("{}: {}", meta.target(), visitor.message));
        self.buffer.push(Captured {
            mono_ns,
            target: meta.target(),
            handoff_id: visitor.handoff_id,
            detail: if visitor.durable {
                format!("{} durable", visitor.detail)
            } else {
                visitor.detail
            },
            warning,
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[derive(Default)]
struct Visitor {
    handoff_id: String,
    detail: String,
    message: String,
    /// `durable = true`: a journal phase the supervisor waited for.
    durable: bool,
}

impl Visitor {
    fn field(&mut self, name: &str, value: &dyn std::fmt::Display) {
        let slot = match name {
            "handoff_id" => &mut self.handoff_id,
            "role" | "phase" => &mut self.detail,
            "message" => &mut self.message,
            "durable" => {
                self.durable = value.to_string() == "true";
                return;
            }
            // A warning's other fields (error, reason) say what went wrong.
            "error" | "reason" => {
                let _ = write!(self.message, " {name}={value}");
                return;
            }
            _ => return,
        };
        slot.clear();
        let _ = write!(slot, "{value}");
    }
}

/// Shows a `Debug` value through `Display` (tracing hands `%x` fields to
/// `record_debug` with a `Debug` that prints their `Display`).
struct AsDisplay<'a>(&'a dyn std::fmt::Debug);

impl std::fmt::Display for AsDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field.name(), &AsDisplay(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_handoff_events_with_their_fields_and_nothing_else() {
        let buffer = CaptureBuffer::with_capacity(8);
        let subscriber = CaptureSubscriber::new(buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let id = "abc";
            tracing::info!(target: "handoff.journal", handoff_id = %id, phase = ?handoff::Phase::Sealing, "journal written");
            tracing::info!(target: "handoff.hello", handoff_id = %id, role = "successor", "hello");
            tracing::info!(target: "handoff.journal", handoff_id = %id, phase = ?handoff::Phase::Negotiating, durable = true, "journal written");
            tracing::info!(target: "elsewhere", "ignored");
            tracing::warn!(target: "handoff.abort", handoff_id = %id, reason = "late", "aborting");
        });
        let mut got = Vec::new();
        buffer.drain_into(&mut got);
        assert_eq!(got.len(), 4);
        assert_eq!(
            (
                got[0].target,
                got[0].handoff_id.as_str(),
                got[0].detail.as_str()
            ),
            ("handoff.journal", "abc", "Sealing")
        );
        assert_eq!(got[1].detail, "successor");
        assert_eq!(got[2].detail, "Negotiating durable");
        assert!(got[0].mono_ns <= got[1].mono_ns);
        assert!(got[3].warning.as_deref().unwrap().contains("late"));
    }
}
