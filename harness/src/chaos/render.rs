//! The texts and files of a chaos episode: its failure text, the timeline
//! with the kills marked, the copy of its logs.

use std::path::Path;

use super::episode::{EpisodeConfig, EpisodeResult};
use crate::eventlog::{Event, ProcessLog};
use crate::evidence::{KillRecord, RunOutcome};
use crate::report::Observed;
use crate::timeline;

/// Put each kill in its victim's column of the timeline, at the instant it
/// was sent.
pub fn mark_kills(logs: &mut Vec<ProcessLog>, kills: &[KillRecord]) {
    for k in kills {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "after".to_string(),
            serde_json::Value::from(k.trigger.clone()),
        );
        fields.insert("delay".to_string(), serde_json::Value::from(k.delay_ms));
        fields.insert("fault".to_string(), serde_json::Value::from(k.fault_id));
        let event = Event {
            process: k.process.clone(),
            mono_ns: k.at_ns,
            pid: k.pid,
            level: "WARN".into(),
            name: "⚡ CHAOS SIGKILL".into(),
            message: String::new(),
            fields,
        };
        match logs.iter_mut().find(|l| l.process == k.process) {
            Some(log) => {
                log.events.push(event);
                log.events.sort_by_key(|e| e.mono_ns);
            }
            None => logs.push(ProcessLog {
                process: k.process.clone(),
                events: vec![event],
                ..ProcessLog::default()
            }),
        }
    }
    logs.sort_by_key(|l| crate::eventlog::process_order(&l.process));
}

/// Copy the regular files of `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let target = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
        // Sockets and the like are not logs.
    }
    Ok(())
}

/// Everything a human needs about one episode: its verdict, schedule,
/// supervisor runs, kills, crash points, restarts, processes, checks, the
/// S/O/N `timeline` and the replay command.
pub fn episode_text(
    cfg: &EpisodeConfig,
    r: &EpisodeResult,
    seen: &Observed,
    timeline: &str,
) -> String {
    let mut out = format!(
        "chaos episode {} of run seed {:#x} {} (episode seed {:#x}, {:.2} s)\n\n",
        cfg.index,
        cfg.run_seed,
        if r.passed() { "passed" } else { "FAILED" },
        cfg.schedule.seed,
        r.duration.as_secs_f64()
    );
    out.push_str("schedule: ");
    out.push_str(&cfg.schedule.words());
    let violations = r.violations();
    if !violations.is_empty() {
        out.push_str("\nviolations:\n");
        for v in &violations {
            out.push_str(&format!("  {}\n", seen.normaliser.text(v)));
        }
    }
    out.push_str("\nsupervisor runs:\n");
    for run in &r.runs {
        out.push_str(&format!(
            "  {} (run {}, {}): incumbent {} → {:?} ({}), then {}{}{}\n",
            run.supervisor,
            run.index + 1,
            if run.planned {
                "planned"
            } else {
                "clean verification"
            },
            run.incumbent.as_deref().unwrap_or("none"),
            run.outcome,
            run.exit.map_or("no exit".into(), |e| e.to_string()),
            run.settled
                .as_deref()
                .unwrap_or("the service did not settle"),
            if run.journal_left {
                "; left a journal"
            } else {
                ""
            },
            run.stderr_tail
                .as_deref()
                .filter(|_| run.outcome != RunOutcome::Committed)
                .map(|l| format!("; it said: {l}"))
                .unwrap_or_default(),
        ));
    }
    if !r.kills.is_empty() || !r.missed.is_empty() {
        out.push_str("\nkills:\n");
        for k in &r.kills {
            out.push_str(&format!(
                "  [{}] SIGKILL {} (the {} of run {}) in the {} phase, {} ms after {}\n",
                k.fault_id,
                k.process,
                k.victim.name(),
                k.run + 1,
                k.phase.name(),
                k.delay_ms,
                k.trigger
            ));
        }
        for m in &r.missed {
            out.push_str(&format!("  [{}] not sent: {}\n", m.fault_id, m.why));
        }
    }
    if !r.fired.is_empty() {
        out.push_str("\ncrash points fired:\n");
        for (point, process) in &r.fired {
            out.push_str(&format!("  {point} in {process}\n"));
        }
    }
    if !r.restarts.is_empty() {
        out.push_str("\nrestarts:\n");
        for s in &r.restarts {
            out.push_str(&format!("  {}\n", s.why));
        }
    }
    out.push_str("\nprocesses:\n");
    out.push_str(&timeline::processes_lines(&seen.processes, |pid| {
        r.kills.iter().any(|k| k.pid == pid)
    }));
    out.push_str("\ninvariants:\n");
    out.push_str(&timeline::checks_lines(&r.checks, &seen.normaliser));
    out.push('\n');
    out.push_str(timeline);
    if let Some(dir) = &r.artifacts {
        out.push_str(&format!(
            "\nlogs: {} (event logs *.jsonl, outputs *.stdout/*.stderr, failure.txt, \
             schedule.json)\n",
            dir.display()
        ));
    }
    out.push_str(&format!("replay: {}\n", cfg.replay));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::samples::kill;

    #[test]
    fn a_kill_lands_in_its_victims_column_in_time_order() {
        let event = |t: u64| Event {
            process: "peer-0".into(),
            mono_ns: t,
            pid: 5,
            level: "INFO".into(),
            name: "fake_peer.serving".into(),
            message: String::new(),
            fields: Default::default(),
        };
        let mut logs = vec![ProcessLog {
            process: "peer-0".into(),
            events: vec![event(10), event(30)],
            ..ProcessLog::default()
        }];
        mark_kills(
            &mut logs,
            &[kill("peer-0", 5, 20), kill("supervisor-1", 7, 5)],
        );
        let names: Vec<(&str, u64)> = logs[1]
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.mono_ns))
            .collect();
        assert_eq!(
            names,
            [
                ("fake_peer.serving", 10),
                ("⚡ CHAOS SIGKILL", 20),
                ("fake_peer.serving", 30)
            ]
        );
        // A victim with no log gets a column of its own, supervisors first.
        assert_eq!(logs[0].process, "supervisor-1");
    }
}
