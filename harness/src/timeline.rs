//! The texts a human reads about a run: the failure text, the invariant
//! results, and a side-by-side timeline: one column per process,
//! headed `S` (a supervisor), `O` (a cold-started incumbent) or `N` (a
//! successor), rows merged on the shared monotonic clock, with each
//! process's exit as the harness saw it. For humans reproducing a failure;
//! the interleaving it shows is one run's, never something to assert on.

use crate::eventlog::{self, Normaliser};
use crate::fixture::ProcEntry;
use crate::fixture::ProcKind;
use crate::invariants::Check;
use crate::report::{Observed, Report};

/// Width of one column.
const COLUMN: usize = 34;
/// More processes than this are listed in one column, labelled.
const MAX_COLUMNS: usize = 6;

struct Row {
    mono_ns: u64,
    column: usize,
    text: String,
}

fn role_letter(kind: Option<ProcKind>) -> &'static str {
    match kind {
        Some(ProcKind::Supervisor) => "S",
        Some(ProcKind::ColdStart) => "O",
        Some(ProcKind::Successor) => "N",
        None => "?",
    }
}

/// Render the timeline of what was observed in the run called `title`.
pub fn render(title: &str, seen: &Observed) -> String {
    let mut columns: Vec<String> = seen.logs.iter().map(|l| l.process.clone()).collect();
    for p in &seen.processes {
        if p.exit.is_some() && !columns.contains(&p.name) {
            columns.push(p.name.clone());
        }
    }
    columns.sort_by_key(|c| eventlog::process_order(c));
    // Supervisors first reads oddly across generations; order S, then peers
    // by index is what `process_order` gives, which keeps O left of N.
    let kind_of = |name: &str| {
        seen.processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.kind)
    };
    let col_of = |name: &str| columns.iter().position(|c| c == name).unwrap_or(0);

    let mut rows: Vec<Row> = Vec::new();
    for log in &seen.logs {
        for ev in &log.events {
            let line = seen.normaliser.event(ev);
            let line = line.strip_prefix("handoff.").unwrap_or(&line).to_string();
            rows.push(Row {
                mono_ns: ev.mono_ns,
                column: col_of(&log.process),
                text: line,
            });
        }
    }
    for p in &seen.processes {
        if let Some(exit) = p.exit {
            rows.push(Row {
                mono_ns: exit.reaped_mono_ns,
                column: col_of(&p.name),
                text: format!(
                    "✝ {}{}",
                    exit.kind,
                    if p.killed_by_harness {
                        " (harness teardown)"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
    rows.sort_by_key(|r| (r.mono_ns, r.column));
    let t0 = rows.first().map_or(0, |r| r.mono_ns);

    let mut out = format!(
        "timeline of {title} (ms since the first event; S supervisor, O cold-started \
         incumbent, N successor)\n"
    );
    if columns.len() > MAX_COLUMNS {
        for r in &rows {
            let name = &columns[r.column];
            out.push_str(&format!(
                "{:>9.3}  {} {:<14} {}\n",
                (r.mono_ns - t0) as f64 / 1e6,
                role_letter(kind_of(name)),
                name,
                r.text
            ));
        }
        return out;
    }
    out.push_str(&format!("{:>9}  ", ""));
    for c in &columns {
        out.push_str(&format!(
            "| {:<w$}",
            format!("{} {c}", role_letter(kind_of(c))),
            w = COLUMN - 2
        ));
    }
    out.push('\n');
    out.push_str(&format!("{}\n", "-".repeat(11 + columns.len() * COLUMN)));
    for r in &rows {
        let pieces = wrap(&r.text, COLUMN - 3);
        for (i, piece) in pieces.iter().enumerate() {
            if i == 0 {
                out.push_str(&format!("{:>9.3}  ", (r.mono_ns - t0) as f64 / 1e6));
            } else {
                out.push_str(&format!("{:>9}  ", ""));
            }
            for c in 0..columns.len() {
                let cell = if c == r.column { piece.as_str() } else { "" };
                out.push_str(&format!("| {:<w$}", cell, w = COLUMN - 2));
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        }
    }
    out
}

/// Split `text` into pieces of at most `width` characters, at spaces when
/// possible.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            out.push(head);
        }
        let needed = if line.is_empty() { 0 } else { 1 } + word.chars().count();
        if line.chars().count() + needed > width && !line.is_empty() {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

/// The invariant results, one per line.
pub fn checks_text(report: &Report) -> String {
    checks_lines(&report.checks, &report.observed.normaliser)
}

/// `checks`, one per line, pids and paths named by `normaliser`.
pub fn checks_lines(checks: &[Check], normaliser: &Normaliser) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "  [{}] {}: {}\n",
            if c.ok { "ok" } else { "FAILED" },
            c.name,
            normaliser.text(&c.detail)
        ));
    }
    out
}

/// Every process, its pid, kind, armed points and end, one per line; an
/// end `killed` says was a chaos kill is marked so.
pub fn processes_lines(processes: &[ProcEntry], killed: impl Fn(u32) -> bool) -> String {
    let mut out = String::new();
    for p in processes {
        out.push_str(&format!(
            "  {:<14} pid {:<8} {:?}{} → {}\n",
            p.name,
            p.pid.map_or("?".into(), |p| p.to_string()),
            p.kind,
            p.armed
                .as_ref()
                .map(|a| format!(" armed {a}"))
                .unwrap_or_default(),
            p.exit.map_or("not reaped by the harness".into(), |e| {
                format!("{}{}", e.kind, if killed(e.pid) { " (chaos)" } else { "" })
            })
        ));
    }
    out
}

/// Everything a human needs when the scenario failed, ending with the
/// one command that reproduces it.
pub fn failure_text(report: &Report) -> String {
    let mut out = format!("scenario {} FAILED\n", report.scenario.name);
    if let Some(e) = &report.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    for c in report.checks.iter().filter(|c| !c.ok) {
        out.push_str(&format!("  {}: {}\n", c.name, c.detail));
    }
    out.push_str("\nsupervisor runs:\n");
    for h in &report.handoffs {
        out.push_str(&format!(
            "  {} → {:?} ({}), then {}\n",
            h.supervisor,
            h.outcome,
            h.exit.map_or("no exit".into(), |e| e.to_string()),
            h.settled.as_deref().unwrap_or("?")
        ));
    }
    out.push_str("\nprocesses:\n");
    out.push_str(&processes_lines(&report.observed.processes, |_| false));
    out.push_str("\ninvariants:\n");
    out.push_str(&checks_text(report));
    out.push('\n');
    out.push_str(&render(&report.scenario.name, &report.observed));
    if report.dir_kept {
        out.push_str(&format!(
            "\nlogs kept in {} (event logs *.jsonl, outputs *.stdout/*.stderr)\n",
            report.dir.display()
        ));
    }
    out.push_str(&format!("reproduce: {}\n", report.scenario.repro_command()));
    out
}

/// What a supervisor said about its run: its own last `handoff-supervisor:`
/// line on stderr (its successor writes to the same stderr, and the log
/// lines carry colours), else the first line of its stdout, else the last
/// line of its stderr.
pub fn supervisor_says(stdout: &str, stderr: &str) -> Option<String> {
    let plain = strip_ansi(stderr);
    let lines = || plain.lines().rev().filter(|l| !l.trim().is_empty());
    lines()
        .find(|l| l.starts_with("handoff-supervisor:") && !l.contains("next:"))
        .or_else(|| stdout.lines().find(|l| !l.trim().is_empty()))
        .or_else(|| lines().next())
        .map(|l| l.trim().to_string())
}

/// Remove ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_and_splits_long_ones() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn a_supervisor_says_its_own_last_line() {
        let stderr = "\u{1b}[2mhandoff-supervisor: next: x\u{1b}[0m\nhandoff-supervisor: aborted\npeer noise\n";
        assert_eq!(
            supervisor_says("", stderr).as_deref(),
            Some("handoff-supervisor: aborted")
        );
        assert_eq!(
            supervisor_says("committed 1\n", "").as_deref(),
            Some("committed 1")
        );
        assert_eq!(
            supervisor_says("", "refused\n\n").as_deref(),
            Some("refused")
        );
    }
}
