//! `harness bench` end to end, small: the real binary, the real fake peer,
//! the clients in their own process. It checks what the figures rest on,
//! not the figures (a debug build on a shared CI machine measures nothing):
//! every phase holds requests, the windows sample them, no acknowledged
//! write is lost, no connection is refused, and the JSON says so.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Bound on the whole small run (it takes about 2 s).
const BENCH_BOUND: Duration = Duration::from_secs(120);

fn phase<'a>(report: &'a Value, prefix: &str) -> &'a Value {
    report["clients"]["phases"]
        .as_array()
        .expect("clients.phases is an array")
        .iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no phase row starting with {prefix:?}"))
}

#[test]
fn a_small_bench_run_samples_every_phase_and_loses_nothing() {
    let bins = harness::bins::ensure_built().expect("fake-peer builds");
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args([
        "bench",
        "--quick",
        "--handoffs",
        "3",
        "--load-handoffs",
        "30",
    ])
    .args(["--floor-iterations", "3", "--baseline-secs", "0.3"])
    .arg("--fake-peer")
    .arg(&bins.fake_peer)
    .arg("--json")
    .arg(&json)
    .stdout(File::create(&stdout).unwrap())
    .stderr(File::create(&stderr).unwrap());
    // Through the harness's reaper: `ensure_built` started it, and it reaps
    // every child of this process (a `Command::output` here would race it
    // for the exit status and get ECHILD).
    let exit =
        harness::reaper::run_to_completion(&mut cmd, BENCH_BOUND).expect("harness bench runs");
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        exit,
        harness::reaper::ExitKind::Code(0),
        "harness bench failed\nstdout:\n{}\nstderr:\n{}",
        read(&stdout),
        read(&stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&json)).expect("the JSON report"))
            .expect("the JSON report parses");

    assert_eq!(
        report["load"]["handoffs"], 30,
        "every loaded handoff is recorded"
    );
    let clients = &report["clients"];
    assert_eq!(clients["durability"]["lost"], 0, "{clients}");
    assert!(
        clients["durability"]["acked"].as_u64().unwrap_or(0) > 0,
        "the clients wrote: {clients}"
    );
    assert_eq!(clients["troubles_seen"]["refused"], 0, "{clients}");
    assert_eq!(clients["stale_reads"], 0, "{clients}");
    // 4 clients × 250 req/s over 30 windows of a few ms each, at a random
    // phase of the clients' slots: some requests must land in them.
    for name in [
        "baseline",
        "before handoffs",
        "after handoffs",
        "inside handoff windows",
        "inside spawn-only windows",
    ] {
        let row = phase(&report, name);
        assert!(
            row["latency"]["count"].as_u64().unwrap_or(0) > 0,
            "no request measured {name}: {row}"
        );
    }
    // The baseline pools the phases before and after the handoffs.
    let count = |name| phase(&report, name)["latency"]["count"].as_u64();
    assert_eq!(
        count("baseline"),
        Some(count("before handoffs").unwrap_or(0) + count("after handoffs").unwrap_or(0))
    );
    // The breakdown of slow requests by step covers exactly the requests
    // measured inside the windows.
    for (rows, name) in [
        ("handoff", "inside handoff windows"),
        ("spawn_only", "inside spawn-only windows"),
    ] {
        let placed: u64 = clients["slow_inside_windows"][rows]
            .as_array()
            .expect("a breakdown by step")
            .iter()
            .map(|r| r["requests"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            Some(placed),
            phase(&report, name)["latency"]["count"].as_u64(),
            "{rows} breakdown vs {name}"
        );
    }
    assert!(
        clients["window_p99_over_baseline_p99"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
            && clients["spawn_window_p99_over_baseline_p99"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0,
        "both ratios are measured: {clients}"
    );
}
