//! What a chaos run adds up to: counts over every episode, the role × phase
//! matrix of kills, latency percentiles, the table printed at the end and
//! the `--json` report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::episode::{DataChecks, EpisodeResult};
use super::schedule::{FaultKind, Misbehaviour};
use super::stage::{Party, Stage};
use crate::evidence::RunOutcome;

/// Totals over the episodes of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Episodes run.
    pub episodes: u64,
    /// Episodes with a violation or a harness error.
    pub episodes_failed: u64,
    /// Supervisor runs, by outcome.
    pub runs: BTreeMap<RunOutcome, u64>,
    /// Runs that recovered a journal a dead supervisor left.
    pub journal_recoveries: u64,
    /// Incumbents that lost their supervisor and recovered on their own.
    pub self_recoveries: u64,
    /// Service restarts by cold start.
    pub restarts: u64,
    /// Kills sent.
    pub kills_sent: u64,
    /// Kills scheduled but not sent (trigger never came, victim gone).
    pub kills_not_sent: u64,
    /// Kills by role and measured phase.
    #[serde(serialize_with = "matrix_json")]
    pub kill_matrix: BTreeMap<(Party, Stage), u64>,
    /// Crash points armed (process × point).
    pub crash_points_armed: u64,
    /// Crash points that fired.
    pub crash_points_fired: u64,
    /// Distinct points that fired.
    pub distinct_points_fired: std::collections::BTreeSet<String>,
    /// Misbehaviours scheduled, by kind.
    pub misbehaviours: BTreeMap<String, u64>,
    /// Invariant checks that held.
    pub checks_passed: u64,
    /// Invariant checks that failed.
    pub checks_failed: u64,
    /// Acknowledged writes verified at the end of their episode.
    pub acked_writes_verified: u64,
    /// Reads during the faults that returned the acknowledged value.
    pub reads_verified: u64,
    /// Requests answered (the reader's).
    pub requests_answered: u64,
    /// Failed requests by attributed cause.
    pub requests_failed: BTreeMap<String, u64>,
    /// Connections that ended under the reader and were replaced (the
    /// request retried within its deadline), by attributed cause.
    pub connections_retried: BTreeMap<String, u64>,
    /// Refused connections.
    pub refused: u64,
    /// Episodes by how their data was checked.
    pub data_checks: BTreeMap<String, u64>,
    /// `PrepareHandoff` → `Commit` of every committed run, ms.
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
    /// Wall time of the run.
    #[serde(skip)]
    pub wall: Duration,
}

fn matrix_json<S: serde::Serializer>(
    m: &BTreeMap<(Party, Stage), u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut nested: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for ((role, phase), n) in m {
        nested
            .entry(role.name())
            .or_default()
            .insert(phase.name(), *n);
    }
    nested.serialize(s)
}

/// The `p`-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn misbehaviour_name(m: Misbehaviour) -> &'static str {
    match m {
        Misbehaviour::SealFailsOnce => "seal fails",
        Misbehaviour::SlowDrain { .. } => "slow drain",
        Misbehaviour::SlowSeal { .. } => "slow seal",
        Misbehaviour::NeverReady => "never ready",
        Misbehaviour::ExitBeforeHello => "exit before hello",
        Misbehaviour::Impostor => "impostor",
    }
}

impl Summary {
    /// Count one episode in.
    pub fn add(&mut self, r: &EpisodeResult) {
        self.episodes += 1;
        if !r.passed() {
            self.episodes_failed += 1;
        }
        for run in &r.runs {
            *self.runs.entry(run.outcome).or_default() += 1;
            if run.recovered_journal {
                self.journal_recoveries += 1;
            }
            if let Some(ms) = run.latency_ms {
                self.latencies_ms.push(ms);
            }
        }
        self.self_recoveries += r.self_recoveries;
        self.restarts += r.restarts.len() as u64;
        self.kills_sent += r.kills.len() as u64;
        self.kills_not_sent += r.missed.len() as u64;
        for k in &r.kills {
            *self.kill_matrix.entry((k.victim, k.phase)).or_default() += 1;
        }
        self.crash_points_armed += r.armed.len() as u64;
        self.crash_points_fired += r.fired.len() as u64;
        self.distinct_points_fired
            .extend(r.fired.iter().map(|(p, _)| p.clone()));
        for f in &r.schedule.faults {
            let name = match f.kind {
                FaultKind::Misbehave(m) => misbehaviour_name(m),
                FaultKind::Stall { .. } => "stall at a point",
                _ => continue,
            };
            *self.misbehaviours.entry(name.to_string()).or_default() += 1;
        }
        for c in &r.checks {
            if c.ok {
                self.checks_passed += 1;
            } else {
                self.checks_failed += 1;
            }
        }
        self.acked_writes_verified += r.acked_writes_verified;
        self.reads_verified += r.reads_verified;
        self.requests_answered += r.accounting.answered;
        for (cause, n) in &r.accounting.failed {
            *self.requests_failed.entry(cause.clone()).or_default() += n;
        }
        for (cause, n) in &r.accounting.retried {
            *self.connections_retried.entry(cause.clone()).or_default() += n;
        }
        self.refused += r.accounting.refused;
        let data = match r.data_checks {
            DataChecks::BuiltIn => "built-in client and reader (fake peer)",
            DataChecks::Workload => "the --workload command",
            DataChecks::Skipped => "skipped (no --workload for this service)",
        };
        *self.data_checks.entry(data.to_string()).or_default() += 1;
    }

    /// The table printed at the end of a run.
    pub fn table(&self, header: &str) -> String {
        let n = |v: u64| group(v);
        let run = |o: RunOutcome| self.runs.get(&o).copied().unwrap_or(0);
        let total_runs: u64 = self.runs.values().sum();
        let failed_requests: u64 = self.requests_failed.values().sum();
        let cause = |c: &str| self.requests_failed.get(c).copied().unwrap_or(0);
        let retried: u64 = self.connections_retried.values().sum();
        let retried_cause = |c: &str| self.connections_retried.get(c).copied().unwrap_or(0);
        let mut rows: Vec<(&str, String)> = vec![
            (
                "episodes",
                format!(
                    "{} run, {} passed, {} failed",
                    n(self.episodes),
                    n(self.episodes - self.episodes_failed),
                    n(self.episodes_failed)
                ),
            ),
            (
                "supervisor runs",
                format!(
                    "{}: {} committed, {} aborted, {} failed (exit 3), {} crashed at a point, {} \
                     killed{}",
                    n(total_runs),
                    n(run(RunOutcome::Committed)),
                    n(run(RunOutcome::Aborted)),
                    n(run(RunOutcome::Failed)),
                    n(run(RunOutcome::Crashed)),
                    n(run(RunOutcome::Killed)),
                    match run(RunOutcome::Other) {
                        0 => String::new(),
                        k => format!(", {k} other"),
                    }
                ),
            ),
            (
                "recoveries",
                format!(
                    "{} journals recovered by a restarted supervisor, {} incumbents recovered \
                     from a lost supervisor, {} service restarts (cold start)",
                    n(self.journal_recoveries),
                    n(self.self_recoveries),
                    n(self.restarts)
                ),
            ),
            (
                "kills",
                format!(
                    "{} SIGKILLs sent, {} not sent (trigger never came, or victim already gone)",
                    n(self.kills_sent),
                    n(self.kills_not_sent)
                ),
            ),
            (
                "crash points",
                format!(
                    "{} armed, {} fired ({} distinct of {})",
                    n(self.crash_points_armed),
                    n(self.crash_points_fired),
                    self.distinct_points_fired.len(),
                    handoff::crash::REGISTRY.len()
                ),
            ),
            (
                "misbehaviours",
                if self.misbehaviours.is_empty() {
                    "none".to_string()
                } else {
                    self.misbehaviours
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            (
                "invariant checks",
                format!(
                    "{} passed, {} failed",
                    n(self.checks_passed),
                    n(self.checks_failed)
                ),
            ),
            (
                "acknowledged writes",
                format!(
                    "{} verified at the end (in kv.log at their number, read back); {} reads \
                     during the faults returned the acknowledged value",
                    n(self.acked_writes_verified),
                    n(self.reads_verified)
                ),
            ),
            (
                "client accounting",
                format!(
                    "{} refused; {} reader requests answered, {} failed: {} holder killed, {} \
                     holder handing off, {} unexplained",
                    n(self.refused),
                    n(self.requests_answered),
                    n(failed_requests),
                    n(cause("HolderKilled")),
                    n(cause("HolderHandedOff")),
                    n(cause("Unexplained"))
                ),
            ),
            (
                "reader retries",
                format!(
                    "{} connections ended under the reader and were replaced, the request sent \
                     again: {} holder killed, {} holder handing off, {} unexplained",
                    n(retried),
                    n(retried_cause("HolderKilled")),
                    n(retried_cause("HolderHandedOff")),
                    n(retried_cause("Unexplained"))
                ),
            ),
            (
                "handoff latency",
                match (
                    percentile(&self.latencies_ms, 50.0),
                    percentile(&self.latencies_ms, 99.0),
                ) {
                    (Some(p50), Some(p99)) => format!(
                        "p50 {p50:.1} ms, p99 {p99:.1} ms (PrepareHandoff → Commit, {} committed \
                         handoffs)",
                        self.latencies_ms.len()
                    ),
                    _ => "no committed handoff".to_string(),
                },
            ),
            (
                "data checks",
                self.data_checks
                    .iter()
                    .map(|(k, v)| format!("{k} ({v} episodes)"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        rows.push(("violations", n(self.checks_failed)));
        let mut out = format!("{header}\n");
        for (k, v) in rows {
            out.push_str(&format!("  {k:<21} {v}\n"));
        }
        out.push('\n');
        out.push_str(&self.matrix());
        out
    }

    /// The kills by role and phase, as a table.
    pub fn matrix(&self) -> String {
        let mut out = String::from(
            "kills by role × phase (the phase the handoff was in when the SIGKILL was sent; \
             — : the role has no process then):\n",
        );
        out.push_str(&format!("  {:<12}", ""));
        for p in Stage::ALL {
            out.push_str(&format!("{:>8}", p.name()));
        }
        out.push_str(&format!("{:>8}\n", "total"));
        for role in Party::ALL {
            out.push_str(&format!("  {:<12}", role.name()));
            let mut total = 0;
            for phase in Stage::ALL {
                let v = self.kill_matrix.get(&(role, phase)).copied().unwrap_or(0);
                total += v;
                // A supervisor or successor killed just after its handoff
                // ended is counted as idle: show it.
                if role.can_be_in(phase) || v > 0 {
                    out.push_str(&format!("{v:>8}"));
                } else {
                    out.push_str(&format!("{:>8}", "—"));
                }
            }
            out.push_str(&format!("{total:>8}\n"));
        }
        out
    }

    /// Cells of the matrix (possible ones) that got no kill.
    pub fn empty_cells(&self) -> Vec<String> {
        let mut out = Vec::new();
        for role in Party::ALL {
            for phase in Stage::ALL {
                if role.can_be_in(phase) && !self.kill_matrix.contains_key(&(role, phase)) {
                    out.push(format!("{}×{}", role.name(), phase.name()));
                }
            }
        }
        out
    }
}

/// `12345` → `12,345`.
pub fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn the_matrix_marks_impossible_cells() {
        let mut s = Summary::default();
        s.kill_matrix.insert((Party::Incumbent, Stage::Idle), 2);
        let m = s.matrix();
        assert!(m.contains("incumbent"));
        assert!(m.lines().nth(2).unwrap().contains('—'), "{m}");
        assert!(s.empty_cells().contains(&"supervisor×hello".to_string()));
        assert!(!s.empty_cells().contains(&"incumbent×idle".to_string()));
    }
}
