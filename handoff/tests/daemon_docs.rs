//! The documentation stays in step with the code: every event name (the
//! library's and the daemon's) and every metric name is documented in
//! `docs/events.md`, and the example config in `docs/` is one the daemon
//! accepts.
//!
//! Reproduce: `cargo test -p handoff --test daemon_docs`.

use std::path::{Path, PathBuf};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

#[test]
fn every_event_and_metric_name_is_documented() {
    let doc = read("docs/events.md");
    let daemon_source = read("handoff/src/bin/handoff-supervisor/daemon.rs");
    let daemon_events: Vec<&str> = daemon_source
        .split('"')
        .filter(|s| s.starts_with("handoff.daemon."))
        .collect();
    assert!(daemon_events.len() >= 10, "found {daemon_events:?}");
    let metric_names = handoff::metrics::names::COUNTERS
        .iter()
        .chain(handoff::metrics::names::HISTOGRAMS.iter());
    let missing: Vec<&str> = handoff::events::ALL
        .iter()
        .copied()
        .chain(daemon_events)
        .chain(metric_names.copied())
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not documented in docs/events.md: {missing:?}"
    );
}

#[test]
fn the_example_config_is_accepted_by_the_daemon() {
    // `--check` also checks the machine (directories, the binary, the
    // port): give the example's paths and port ones that exist here.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let lib = dir.path().join("lib");
    std::fs::create_dir(&run).unwrap();
    std::fs::create_dir(&lib).unwrap();
    let example = read("docs/handoff-supervisor.toml");
    let here = example
        .replace("/run/svc", run.to_str().unwrap())
        .replace("/var/lib/svc", lib.to_str().unwrap())
        .replace("/usr/bin/svc", "/bin/true")
        .replace("0.0.0.0:8080", "127.0.0.1:0");
    assert_ne!(
        here, example,
        "the example's paths changed: update this test"
    );
    let config = dir.path().join("handoff-supervisor.toml");
    std::fs::write(&config, here).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff-supervisor"))
        .args(["daemon", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("run handoff-supervisor daemon --check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("\"http\""), "{shown}");
}
