//! harness: the chaos toolkit around `handoff`.
//!
//! It launches the real `handoff-supervisor` and `fake-peer` binaries as
//! separate processes, arms named crash points through `HANDOFF_CRASH_AT`,
//! asks the fake peer to misbehave, captures every process's JSON-lines
//! event log, and checks the invariants of DESIGN.md section 9 after every
//! scenario.
//!
//! - [`scenario`]: a scenario is a value; [`catalog`] lists them all (the
//!   crash matrix is generated from the crash-point registry).
//! - [`runner::run`]: the one runner, executing any scenario in a
//!   [`fixture::Fixture`] (a temporary directory holding the listening
//!   sockets, as systemd would) and returning a [`report::Report`].
//! - [`invariants`]: single writer (event spans, `kv.log`, `/proc/locks`),
//!   one incumbent, no acknowledged write lost, no leaked process or stray
//!   FD, journal recovered, crash point fired and no other death.
//! - [`eventlog`]: parse, merge on `CLOCK_MONOTONIC`, normalise.
//! - [`reaper`]: the process is a child subreaper and the only reaper.
//! - [`procs`], [`sockdiag`]: the kernel's view (`/proc`, `sock_diag`).
//!
//! ```no_run
//! let scenario = harness::catalog::find("crash::s-after-begin-sent").unwrap();
//! let report = harness::runner::run(&scenario);
//! if !report.passed() {
//!     eprintln!("{}", harness::timeline::failure_text(&report));
//! }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod bins;
pub mod catalog;
pub mod chaos;
pub mod client;
pub mod eventlog;
pub mod evidence;
pub mod exit_code;
pub mod explore;
pub mod fixture;
pub mod impostor;
pub mod invariants;
pub mod procs;
pub mod reaper;
pub mod report;
pub mod rules;
pub mod runner;
pub mod scenario;
pub mod snapshot;
pub mod sockdiag;
pub mod timeline;
