//! The bench's results: one serialisable value (written by `--json`) and
//! its rendering as the table printed on stdout.

use std::fmt::Write as _;

use serde::Serialize;

use super::analysis::{Latencies, RecordOut, SegmentRow, Trend};
use super::load::{DurabilityCheck, SlowRequests, StepCount, TroubleCounts};
use super::stats::Summary;
use crate::procs::ProcessSample;

/// Everything one run of the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// How to run it again.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// With what settings.
    pub settings: Settings,
    /// The floor, measured in the same run.
    pub floor: Floor,
    /// Handoffs with no client load, children not writing an event log:
    /// the headline latencies.
    pub idle: RunReport,
    /// The same with the children writing the JSON event log: where the
    /// time goes in the incumbent and the successor.
    pub idle_logged: RunReport,
    /// Handoffs under a live client load (the soak).
    pub load: RunReport,
    /// What the clients saw during the load run.
    pub clients: ClientsReport,
    /// The targets, each checked.
    pub targets: Vec<TargetCheck>,
}

/// Where the bench ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `uname -sr`.
    pub kernel: String,
    /// File system of the bench's directory (journal, data dir, sockets).
    pub bench_dir_fs: String,
    /// `release` or `debug` (of the bench process, the supervisor).
    pub build_profile: &'static str,
    /// The `fake-peer` binary used.
    pub fake_peer: String,
    /// `/proc/loadavg` (1, 5, 15 min) when the bench started: other work
    /// on the machine shows here.
    pub loadavg_at_start: String,
    /// The same when it ended.
    pub loadavg_at_end: String,
}

/// Settings of this run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Idle handoffs.
    pub idle_handoffs: usize,
    /// Handoffs under load.
    pub load_handoffs: usize,
    /// Client threads.
    pub clients: usize,
    /// Requests per second per client.
    pub rate_per_client_hz: f64,
    /// Share of PUTs.
    pub put_percent: u32,
    /// Iterations of each floor measurement.
    pub floor_iterations: usize,
    /// Baseline (and after) phase length.
    pub baseline_secs: f64,
    /// Short run.
    pub quick: bool,
    /// Environment given to every child.
    pub child_env: Vec<(String, String)>,
    /// What the spawn-only windows fork+exec.
    pub spawn_only: String,
}

/// The floor.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// `fake-peer --version`, spawn → first byte, std's default spawn. The
    /// reference for the ratios.
    pub spawn_fake_peer: Summary,
    /// The same, forced `fork`+`exec` (as with `handoff::fd`'s `pre_exec`).
    pub spawn_fake_peer_fork_exec: Summary,
    /// `/bin/echo`, spawn → first byte.
    pub spawn_echo: Summary,
    /// `fake-peer --version` measured again at the end of the run (drift).
    pub spawn_fake_peer_at_end: Summary,
    /// One frame's round trip over a Unix socketpair.
    pub unix_round_trip: Summary,
    /// `StateJournal::write_atomic`.
    pub journal_write: Summary,
    /// `StateJournal::delete`.
    pub journal_clear: Summary,
    /// `DataDirLock::acquire` + release.
    pub flock_cycle: Summary,
    /// 32-byte append + `fdatasync` (the fake peer's `PUT`).
    pub append_fdatasync: Summary,
}

/// One look at the long-lived processes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Handoffs done when sampled (0: after the cold start).
    pub after_handoff: usize,
    /// The bench process: the supervisor (plus the clients and recorder).
    pub supervisor: ProcessSample,
    /// The incumbent at that moment.
    pub incumbent: ProcessSample,
}

/// One run of handoffs.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Handoffs committed.
    pub handoffs: usize,
    /// End to end.
    pub latencies: Latencies,
    /// Median trigger → commit / median spawn floor.
    pub commit_p50_over_spawn_p50: f64,
    /// Median trigger → Ready / median spawn floor.
    pub ready_p50_over_spawn_p50: f64,
    /// The supervisor's critical path, segment by segment.
    pub critical_path: Vec<SegmentRow>,
    /// The other processes' side, and after the commit.
    pub detail: Vec<SegmentRow>,
    /// Supervisor journal writes on the critical path, summed per handoff.
    pub journal_time: Summary,
    /// Handoffs where the successor waited >= 4 ms for the flock.
    pub slow_flock_waits: usize,
    /// First vs last handoffs.
    pub trend: Trend,
    /// Wall time of all handoffs (first trigger → last new incumbent
    /// answering), seconds.
    pub wall_s: f64,
    /// Wall time of the first 100, when there were 100.
    pub first_100_wall_s: Option<f64>,
    /// FD / RSS samples.
    pub samples: Vec<Sample>,
    /// Supervisor warnings (first few).
    pub supervisor_warnings: Vec<String>,
    /// WARN+ lines in the children's event log.
    pub child_warnings: usize,
    /// The first few.
    pub child_warning_examples: Vec<String>,
    /// Old incumbents that did not exit 0.
    pub bad_exits: Vec<String>,
    /// PINGs after a commit answered by another process than the new
    /// incumbent.
    pub stale_answers: u64,
    /// Handoffs after which some client had not completed a request on the
    /// new incumbent within the settle bound (load run only).
    pub slow_reconnects: usize,
    /// Every handoff, mark by mark (JSON only).
    pub records: Vec<RecordOut>,
}

/// One phase of the client load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PhaseRow {
    /// Phase.
    pub name: &'static str,
    /// Length, seconds.
    pub duration_s: f64,
    /// Successful requests completed in it.
    pub requests: u64,
    /// Per second.
    pub requests_per_s: f64,
    /// Latency of the requests that ran in it.
    pub latency: Summary,
}

/// What the clients saw.
#[derive(Debug, Clone, Serialize)]
pub struct ClientsReport {
    /// Phases: the baseline (before and after, pooled), before, during
    /// (all), in windows, between windows, after, in spawn-only windows.
    pub phases: Vec<PhaseRow>,
    /// Offered load, requests per second.
    pub offered_rps: f64,
    /// Troubles met and retried past.
    pub troubles_seen: TroubleCounts,
    /// Requests that could not complete, by last trouble.
    pub failed: TroubleCounts,
    /// Requests that needed a retry.
    pub retried_requests: u64,
    /// Most attempts one request needed.
    pub max_attempts: u64,
    /// GETs that missed an acknowledged write.
    pub stale_reads: u64,
    /// Replies that made no sense.
    pub bad_replies: u64,
    /// Acknowledged writes checked against the data dir.
    pub durability: DurabilityCheck,
    /// p99 inside handoff windows / baseline p99.
    pub window_p99_over_baseline_p99: f64,
    /// p99 inside spawn-only windows / baseline p99: what merely starting
    /// a process does to the clients, for comparison.
    pub spawn_window_p99_over_baseline_p99: f64,
    /// Where the slow requests inside windows started.
    pub slow_inside_windows: SlowRequests,
}

/// One target of the issue.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is checked.
    pub name: String,
    /// The bound.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it holds.
    pub met: bool,
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1_000.0)
}

fn summary_row(out: &mut String, name: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "  {name:<58} {:>6} {:>9} {:>9} {:>9} {:>9}",
        s.count,
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        ms(s.mean_us)
    );
}

fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "\n{title:<60} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "n", "p50 ms", "p99 ms", "max ms", "mean ms"
    );
}

fn run_section(out: &mut String, title: &str, run: &RunReport) {
    header(out, title);
    let l = &run.latencies;
    summary_row(out, "trigger → Ready received", &l.trigger_to_ready);
    summary_row(out, "trigger → commit returned", &l.trigger_to_commit);
    summary_row(
        out,
        "trigger → journal clear durable",
        &l.trigger_to_journal_synced,
    );
    summary_row(out, "trigger → old process exited", &l.trigger_to_old_exit);
    summary_row(
        out,
        "trigger → new incumbent answers",
        &l.trigger_to_new_serves,
    );
    let _ = writeln!(
        out,
        "  median / spawn floor median: commit {:.2}×, Ready {:.2}×",
        run.commit_p50_over_spawn_p50, run.ready_p50_over_spawn_p50
    );
    let first_100 = run
        .first_100_wall_s
        .map_or_else(|| "n/a".to_string(), |s| format!("{s:.3} s"));
    let _ = writeln!(
        out,
        "  wall time: {} handoffs {:.3} s; first 100 {first_100}",
        run.handoffs, run.wall_s
    );
}

fn breakdown_section(out: &mut String, title: &str, run: &RunReport) {
    let _ = writeln!(
        out,
        "\n{title:<60} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "n", "p50 ms", "p99 ms", "max ms", "mean ms", "share"
    );
    for row in &run.critical_path {
        let s = &row.summary;
        let share = row
            .share_of_commit
            .map_or_else(String::new, |f| format!("{:.0}%", f * 100.0));
        let _ = writeln!(
            out,
            "  {:<58} {:>6} {:>9} {:>9} {:>9} {:>9} {share:>6}",
            row.name,
            s.count,
            ms(s.p50_us),
            ms(s.p99_us),
            ms(s.max_us),
            ms(s.mean_us)
        );
    }
    summary_row(
        out,
        "= S journal writes on the critical path (sum)",
        &run.journal_time,
    );
    let _ = writeln!(out, "  other processes, and after the commit:");
    for row in &run.detail {
        summary_row(out, row.name, &row.summary);
    }
    let t = &run.trend;
    if t.window > 0 {
        let _ = writeln!(
            out,
            "  first vs last {} handoffs, p50: trigger → commit {} → {} ms; N flock → Ready {} → {} ms",
            t.window,
            ms(t.commit_p50_first_us),
            ms(t.commit_p50_last_us),
            ms(t.successor_open_p50_first_us),
            ms(t.successor_open_p50_last_us)
        );
    }
    let _ = writeln!(
        out,
        "  successor flock waits >= 4 ms (acquire_lock's 5 ms poll step): {}",
        run.slow_flock_waits
    );
}

fn samples_section(out: &mut String, title: &str, run: &RunReport) {
    let _ = writeln!(
        out,
        "\n{title:<34} {:>8} {:>7} {:>5} {:>5} {:>5} {:>10} {:>9} {:>9} {:>7}",
        "after", "pid", "fds", "sock", "pipe", "RSS KiB", "anon KiB", "file KiB", "threads"
    );
    for s in &run.samples {
        for (who, p) in [
            ("supervisor (bench)", &s.supervisor),
            ("incumbent", &s.incumbent),
        ] {
            let _ = writeln!(
                out,
                "  {who:<32} {:>8} {:>7} {:>5} {:>5} {:>5} {:>10} {:>9} {:>9} {:>7}",
                s.after_handoff,
                p.pid,
                p.fds,
                p.fd_sockets,
                p.fd_pipes,
                p.rss_kib,
                p.rss_anon_kib,
                p.rss_file_kib,
                p.threads
            );
        }
    }
}

/// The table printed on stdout.
pub fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(out, "handoff bench: {}", r.command);
    let _ = writeln!(
        out,
        "machine: {} ({} CPUs), {}, bench dir on {}, {} build; fake-peer {}",
        m.cpu_model, m.cpus, m.kernel, m.bench_dir_fs, m.build_profile, m.fake_peer
    );
    let _ = writeln!(
        out,
        "load average at start {}, at end {}",
        m.loadavg_at_start, m.loadavg_at_end
    );
    if m.build_profile != "release" {
        let _ = writeln!(
            out,
            "WARNING: debug build: run `cargo run --release -p harness -- bench` for figures"
        );
    }
    let s = &r.settings;
    let _ = writeln!(
        out,
        "settings: {} idle handoffs, {} under load, {} clients × {} req/s ({}% PUT), floor × {}; spawn-only windows run `{}`",
        s.idle_handoffs,
        s.load_handoffs,
        s.clients,
        s.rate_per_client_hz,
        s.put_percent,
        s.floor_iterations,
        s.spawn_only
    );

    let f = &r.floor;
    header(&mut out, "FLOOR (same run)");
    summary_row(
        &mut out,
        "spawn → first byte: fake-peer --version (reference)",
        &f.spawn_fake_peer,
    );
    summary_row(
        &mut out,
        "spawn → first byte: fake-peer --version, fork+exec",
        &f.spawn_fake_peer_fork_exec,
    );
    summary_row(&mut out, "spawn → first byte: /bin/echo", &f.spawn_echo);
    summary_row(
        &mut out,
        "spawn → first byte: fake-peer --version, at the end",
        &f.spawn_fake_peer_at_end,
    );
    summary_row(
        &mut out,
        "Unix socketpair round trip (one frame)",
        &f.unix_round_trip,
    );
    summary_row(
        &mut out,
        "journal write (write_atomic: 2 fsyncs)",
        &f.journal_write,
    );
    summary_row(
        &mut out,
        "journal clear (unlink + dir fsync)",
        &f.journal_clear,
    );
    summary_row(
        &mut out,
        "flock acquire + release (with pid file)",
        &f.flock_cycle,
    );
    summary_row(
        &mut out,
        "append 32 B + fdatasync (fake peer PUT)",
        &f.append_fdatasync,
    );

    run_section(
        &mut out,
        "IDLE HANDOFFS (children without event log)",
        &r.idle,
    );
    run_section(
        &mut out,
        "IDLE HANDOFFS (children writing the event log)",
        &r.idle_logged,
    );
    run_section(&mut out, "HANDOFFS UNDER LOAD", &r.load);

    let c = &r.clients;
    let _ = writeln!(
        out,
        "\n{:<60} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        format!("CLIENTS (offered {:.0} req/s)", c.offered_rps),
        "secs",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for p in &c.phases {
        let _ = writeln!(
            out,
            "  {:<58} {:>6.2} {:>9} {:>9.0} {:>9} {:>9} {:>9}",
            p.name,
            p.duration_s,
            p.requests,
            p.requests_per_s,
            ms(p.latency.p50_us),
            ms(p.latency.p99_us),
            ms(p.latency.max_us)
        );
    }
    let t = &c.troubles_seen;
    let _ = writeln!(
        out,
        "  seen and retried: refused {}, reset {}, timed out {}, end of stream {}, ERR sealed {}, other {}; idle connections closed by the server {}",
        t.refused, t.reset, t.timed_out, t.eof, t.sealed, t.other, t.closed_idle
    );
    let fl = &c.failed;
    let _ = writeln!(
        out,
        "  failed requests: refused {}, reset {}, timed out {}, end of stream {}, other {}; retried requests {}, max attempts {}",
        fl.refused,
        fl.reset,
        fl.timed_out,
        fl.eof + fl.sealed,
        fl.other,
        c.retried_requests,
        c.max_attempts
    );
    let d = &c.durability;
    let _ = writeln!(
        out,
        "  acknowledged writes {}: lost {}; stale reads {}; bad replies {}",
        d.acked, d.lost, c.stale_reads, c.bad_replies
    );
    let _ = writeln!(
        out,
        "  p99 / baseline p99: inside handoff windows {:.2}×, inside spawn-only windows {:.2}×",
        c.window_p99_over_baseline_p99, c.spawn_window_p99_over_baseline_p99
    );
    slow_section(&mut out, &c.slow_inside_windows);

    samples_section(&mut out, "LONG-LIVED PROCESSES (load run)", &r.load);
    let _ = writeln!(
        out,
        "  (the clients run in a process of their own; the bench process is the supervisor)"
    );
    samples_section(&mut out, "LONG-LIVED PROCESSES (idle run)", &r.idle);

    breakdown_section(
        &mut out,
        "WHERE THE TIME GOES: idle (event log on)",
        &r.idle_logged,
    );
    breakdown_section(&mut out, "WHERE THE TIME GOES: under load", &r.load);

    for (name, run) in [
        ("idle", &r.idle),
        ("idle-logged", &r.idle_logged),
        ("load", &r.load),
    ] {
        for w in run
            .supervisor_warnings
            .iter()
            .chain(&run.bad_exits)
            .chain(&run.child_warning_examples)
            .take(10)
        {
            let _ = writeln!(out, "  {name} warning: {w}");
        }
        if run.stale_answers > 0 || run.slow_reconnects > 0 || run.child_warnings > 0 {
            let _ = writeln!(
                out,
                "  {name}: stale PING answers {}, slow client reconnects {}, child WARN lines {}",
                run.stale_answers, run.slow_reconnects, run.child_warnings
            );
        }
    }

    let _ = writeln!(out, "\nTARGETS");
    for t in &r.targets {
        let _ = writeln!(
            out,
            "  [{}] {:<60} target {:<16} measured {}",
            if t.met { " met " } else { "MISSED" },
            t.name,
            t.target,
            t.measured
        );
    }
    out
}

/// Where the slow requests inside windows started. The share is of all the
/// requests inside windows of that kind: for the in-window p99 to be below
/// the threshold, the shares must add up to at most 1 %.
fn slow_section(out: &mut String, slow: &SlowRequests) {
    let _ = writeln!(
        out,
        "\nSLOW REQUESTS INSIDE WINDOWS: slower than {:.3} ms (3× the baseline p99), by the step under way when they started",
        slow.threshold_us / 1e3
    );
    let _ = writeln!(
        out,
        "  {:<62} {:>8} {:>6} {:>11}",
        "", "requests", "slow", "slow share"
    );
    for (kind, rows) in [
        ("handoff windows", &slow.handoff),
        ("spawn-only windows", &slow.spawn_only),
    ] {
        let total: u64 = rows.iter().map(|r| r.requests).sum();
        let share = |n: u64| {
            if total == 0 {
                0.0
            } else {
                100.0 * n as f64 / total as f64
            }
        };
        let _ = writeln!(out, "  {kind}");
        for StepCount {
            step,
            requests,
            slow,
        } in rows
        {
            let _ = writeln!(
                out,
                "    {step:<60} {requests:>8} {slow:>6} {:>10.2}%",
                share(*slow)
            );
        }
        let slow_total: u64 = rows.iter().map(|r| r.slow).sum();
        let _ = writeln!(
            out,
            "    {:<60} {total:>8} {slow_total:>6} {:>10.2}%",
            "all",
            share(slow_total)
        );
    }
}
