//! Named crash points: the places where the harness makes a process die.
//!
//! Every point has a kebab-case name starting with its side (`s-`, `o-`,
//! `n-`) and a one-line description, declared once in [`REGISTRY`]. Code marks
//! a point with [`crash_here!`](crate::crash_here). With the `crash-points`
//! feature on, `HANDOFF_CRASH_AT=<spec>` arms points; without it every mark
//! compiles to nothing, and a set `HANDOFF_CRASH_AT` is a start-up error (so a
//! test never silently tests nothing).
//!
//! Spec syntax (parsed by [`parse_spec`], pure):
//!
//! ```text
//! spec   := entry ("," entry)*
//! entry  := name ["@" k] ["=" action]
//! action := "exit" | "hang" | "delay(" ms ")"
//! ```
//!
//! `exit` (the default) records the point and terminates at once with
//! `_exit(99)`: no destructors, no flush, like a crash. `hang` blocks the
//! thread forever (the harness kills the process). `delay(ms)` stalls then
//! continues. `@k` fires on the k-th time the point is reached (default 1st).

use std::time::Duration;

use crate::error::{Error, Result};

/// The exit code of a process that died at an armed crash point.
pub const CRASH_EXIT_CODE: i32 = 99;
/// Environment variable that arms crash points.
pub const ENV_CRASH_AT: &str = "HANDOFF_CRASH_AT";
/// Optional file to which a firing point appends its name (one `write`).
pub const ENV_CRASH_RECORD: &str = "HANDOFF_CRASH_RECORD";

/// Which process a crash point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashSide {
    /// The supervisor, S.
    Supervisor,
    /// The incumbent, O.
    Incumbent,
    /// The successor, N.
    Successor,
}

impl CrashSide {
    /// The name prefix of this side's points.
    pub fn prefix(self) -> &'static str {
        match self {
            CrashSide::Supervisor => "s-",
            CrashSide::Incumbent => "o-",
            CrashSide::Successor => "n-",
        }
    }
}

/// One declared crash point.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CrashPoint {
    /// Kebab-case name, prefixed by its side.
    pub name: &'static str,
    /// Where it sits.
    pub side: CrashSide,
    /// One line: what has happened when the point is reached.
    pub description: &'static str,
}

macro_rules! declare_points {
    ($( $side:ident $konst:ident = $name:literal : $desc:literal ;)*) => {
        /// The names of every crash point, as constants.
        pub mod points {
            $( #[doc = $desc] pub const $konst: &str = $name; )*
        }
        /// Every crash point, in protocol order per side.
        pub static REGISTRY: &[CrashPoint] = &[
            $( CrashPoint { name: $name, side: CrashSide::$side, description: $desc }, )*
        ];
    };
}

declare_points! {
    Supervisor S_AFTER_O_HELLO = "s-after-o-hello": "S exchanged Hello/HelloAck with the incumbent";
    Supervisor S_AFTER_SPAWN_SUCCESSOR = "s-after-spawn-successor": "S spawned the successor process";
    Supervisor S_AFTER_N_HELLO = "s-after-n-hello": "S exchanged Hello/HelloAck with the successor";
    Supervisor S_AFTER_JOURNAL_NEGOTIATING = "s-after-journal-negotiating": "S wrote the journal in phase Negotiating";
    Supervisor S_AFTER_PREPARE_SENT = "s-after-prepare-sent": "S sent PrepareHandoff to the incumbent";
    Supervisor S_AFTER_DRAINED_RECV = "s-after-drained-recv": "S received Drained from the incumbent";
    Supervisor S_AFTER_JOURNAL_DRAINING = "s-after-journal-draining": "S wrote the journal in phase Draining";
    Supervisor S_AFTER_SEAL_REQUEST_SENT = "s-after-seal-request-sent": "S sent SealRequest to the incumbent";
    Supervisor S_AFTER_SEAL_COMPLETE_RECV = "s-after-seal-complete-recv": "S received SealComplete: the incumbent released the flock";
    Supervisor S_AFTER_JOURNAL_SEALING = "s-after-journal-sealing": "S wrote the journal in phase Sealing";
    Supervisor S_AFTER_BEGIN_SENT = "s-after-begin-sent": "S sent Begin to the successor";
    Supervisor S_AFTER_READY_RECV = "s-after-ready-recv": "S received Ready from the successor";
    Supervisor S_AFTER_COMMIT_SENT = "s-after-commit-sent": "S sent Commit to the incumbent";
    Supervisor S_AFTER_JOURNAL_CLEAR = "s-after-journal-clear": "S cleared the journal after a commit";
    Supervisor S_AFTER_ABORT_SENT = "s-after-abort-sent": "S sent Abort to the successor after the seal, before killing it";
    Supervisor S_AFTER_RESUME_SENT = "s-after-resume-sent": "S sent ResumeAfterAbort to the incumbent";
    Incumbent O_AFTER_CONTROL_BOUND = "o-after-control-bound": "a cold-started incumbent bound its control socket";
    Incumbent O_AFTER_HELLO_SENT = "o-after-hello-sent": "O sent Hello to a supervisor";
    Incumbent O_AFTER_HELLO_ACK_RECV = "o-after-hello-ack-recv": "O received HelloAck";
    Incumbent O_AFTER_PREPARE_RECV = "o-after-prepare-recv": "O received PrepareHandoff, before draining";
    Incumbent O_AFTER_DRAIN = "o-after-drain": "O finished drain(), before sending Drained";
    Incumbent O_AFTER_DRAINED_SENT = "o-after-drained-sent": "O sent Drained";
    Incumbent O_AFTER_SEAL_REQUEST_RECV = "o-after-seal-request-recv": "O received SealRequest, before sealing";
    Incumbent O_AFTER_SEAL = "o-after-seal": "O's seal() succeeded, flock still held";
    Incumbent O_AFTER_FLOCK_RELEASED = "o-after-flock-released": "O released the flock, before sending SealComplete";
    Incumbent O_AFTER_SEAL_COMPLETE_SENT = "o-after-seal-complete-sent": "O sent SealComplete";
    Incumbent O_AFTER_SEAL_FAILED_SENT = "o-after-seal-failed-sent": "O sent SealFailed, before resuming";
    Incumbent O_AFTER_COMMIT_RECV = "o-after-commit-recv": "O received Commit, before exiting";
    Incumbent O_AFTER_RESUME_RECV = "o-after-resume-recv": "O received ResumeAfterAbort, before retaking the flock";
    Incumbent O_AFTER_FLOCK_REACQUIRED = "o-after-flock-reacquired": "O took the flock back after an abort or a lost supervisor";
    Successor N_AFTER_HELLO_SENT = "n-after-hello-sent": "N sent Hello to the supervisor";
    Successor N_AFTER_HELLO_ACK_RECV = "n-after-hello-ack-recv": "N received HelloAck";
    Successor N_AFTER_BEGIN_RECV = "n-after-begin-recv": "N received Begin, before taking the flock";
    Successor N_AFTER_FLOCK_TAKEN = "n-after-flock-taken": "N took the data-dir flock, before Ready";
    Successor N_AFTER_TEMP_BOUND = "n-after-temp-bound": "N bound its control socket under a temporary name, before Ready";
    Successor N_AFTER_READY_SENT = "n-after-ready-sent": "N sent Ready, before renaming its control socket into place";
    Successor N_AFTER_CONTROL_BOUND = "n-after-control-bound": "N renamed its control socket over the path: it is the incumbent";
}

/// Every declared crash point.
pub fn registry() -> &'static [CrashPoint] {
    REGISTRY
}

/// The declared point called `name`.
pub fn lookup(name: &str) -> Option<&'static CrashPoint> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// What an armed point does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Record and `_exit(99)`.
    Exit,
    /// Block forever.
    Hang,
    /// Stall, then continue.
    Delay(Duration),
}

/// One armed point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    /// The point.
    pub point: &'static str,
    /// Fire on the `nth` time the point is reached (1-based).
    pub nth: u32,
    /// What to do.
    pub action: Action,
}

/// Parse a `HANDOFF_CRASH_AT` value. Unknown names are an error that lists
/// every valid name.
pub fn parse_spec(spec: &str) -> Result<Vec<Armed>> {
    let mut out = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (head, action) = match entry.split_once('=') {
            Some((h, a)) => (h.trim(), parse_action(a.trim())?),
            None => (entry, Action::Exit),
        };
        let (name, nth) = match head.split_once('@') {
            Some((n, k)) => {
                let k: u32 = k.trim().parse().map_err(|_| {
                    Error::CrashSpec(format!("{entry:?}: '@' must be followed by a count >= 1"))
                })?;
                if k == 0 {
                    return Err(Error::CrashSpec(format!("{entry:?}: counts start at 1")));
                }
                (n.trim(), k)
            }
            None => (head, 1),
        };
        let point = lookup(name).ok_or_else(|| {
            let valid: Vec<&str> = REGISTRY.iter().map(|p| p.name).collect();
            Error::CrashSpec(format!(
                "unknown crash point {name:?}; valid points are: {}",
                valid.join(", ")
            ))
        })?;
        out.push(Armed {
            point: point.name,
            nth,
            action,
        });
    }
    if out.is_empty() {
        return Err(Error::CrashSpec(format!("{spec:?} arms no crash point")));
    }
    Ok(out)
}

fn parse_action(a: &str) -> Result<Action> {
    match a {
        "exit" => Ok(Action::Exit),
        "hang" => Ok(Action::Hang),
        _ => {
            let ms = a
                .strip_prefix("delay(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::CrashSpec(format!(
                        "unknown action {a:?}; expected exit, hang or delay(<ms>)"
                    ))
                })?;
            Ok(Action::Delay(Duration::from_millis(ms)))
        }
    }
}

/// Validate `HANDOFF_CRASH_AT` at start-up. Every entry point of the library
/// (and every binary) calls this so a typo fails loudly before anything runs.
pub fn check_env() -> Result<()> {
    let Some(spec) = std::env::var_os(ENV_CRASH_AT) else {
        return Ok(());
    };
    let spec = spec
        .into_string()
        .map_err(|_| Error::CrashSpec("HANDOFF_CRASH_AT is not UTF-8".into()))?;
    parse_spec(&spec)?;
    if !cfg!(feature = "crash-points") {
        return Err(Error::CrashSpec(format!(
            "{spec:?} is set but crash points are compiled out of this build; \
             rebuild with `--features handoff/crash-points`"
        )));
    }
    Ok(())
}

/// Mark a crash point. Compiles to nothing without the `crash-points` feature.
#[macro_export]
macro_rules! crash_here {
    ($point:expr) => {
        $crate::crash::hit($point)
    };
}

/// Reach the point `name`: fire if it is armed. Prefer [`crash_here!`](crate::crash_here).
#[inline(always)]
pub fn hit(name: &'static str) {
    hit_settled(name, || {});
}

/// Reach the point `name`; when it fires (and only then), run `settle`
/// first. The supervisor settles its background journal writer there, so a
/// crash point always dies with every journal phase recorded before it on
/// disk, whatever the writer's timing: the process state a crash point
/// leaves behind stays deterministic.
#[inline(always)]
pub fn hit_settled(name: &'static str, settle: impl FnOnce()) {
    #[cfg(feature = "crash-points")]
    if let Some(action) = armed::count(name) {
        settle();
        armed::fire(name, action);
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = (name, settle);
}

#[cfg(feature = "crash-points")]
mod armed {
    use std::io::Write;
    use std::sync::Mutex;
    use std::sync::OnceLock;

    use super::*;

    struct State {
        armed: Vec<Armed>,
        hits: Vec<u32>,
    }

    fn state() -> &'static Mutex<State> {
        static STATE: OnceLock<Mutex<State>> = OnceLock::new();
        STATE.get_or_init(|| {
            let armed = match std::env::var(ENV_CRASH_AT) {
                Ok(spec) => match parse_spec(&spec) {
                    Ok(a) => a,
                    Err(e) => {
                        // Never silently test nothing: a bad spec that slipped
                        // past start-up validation stops the process here.
                        eprintln!("handoff: {e}");
                        crate::fd::exit_immediately(2)
                    }
                },
                Err(_) => Vec::new(),
            };
            let hits = vec![0; armed.len()];
            Mutex::new(State { armed, hits })
        })
    }

    /// Count a hit of `name`; the action to take if this hit fires it.
    pub(super) fn count(name: &'static str) -> Option<Action> {
        let mut st = state().lock().unwrap_or_else(|p| p.into_inner());
        let mut fired = None;
        let State { armed, hits } = &mut *st;
        for (a, count) in armed.iter().zip(hits.iter_mut()) {
            if a.point == name {
                *count += 1;
                if *count == a.nth {
                    fired = Some(a.action);
                }
            }
        }
        fired
    }

    pub(super) fn fire(name: &'static str, action: Action) {
        tracing::warn!(target: crate::events::CRASH, point = name, action = ?action, "crash point fired");
        match action {
            Action::Exit => {
                if let Some(path) = std::env::var_os(ENV_CRASH_RECORD)
                    && let Ok(mut f) = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(path)
                {
                    let _ = f.write_all(format!("{name} {}\n", std::process::id()).as_bytes());
                }
                let _ = std::io::stderr().write_all(
                    format!("handoff: crash point {name} fired; _exit(99)\n").as_bytes(),
                );
                crate::fd::exit_immediately(CRASH_EXIT_CODE)
            }
            Action::Hang => loop {
                std::thread::park();
            },
            Action::Delay(d) => std::thread::sleep(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_kebab_case_with_its_side_prefix_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in REGISTRY {
            assert!(p.name.starts_with(p.side.prefix()), "{}", p.name);
            assert!(
                p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                p.name
            );
            assert!(!p.description.is_empty() && !p.description.contains('\n'));
            assert!(seen.insert(p.name), "duplicate {}", p.name);
        }
        let count = |side| REGISTRY.iter().filter(|p| p.side == side).count();
        assert!(count(CrashSide::Supervisor) >= 11);
        assert!(count(CrashSide::Incumbent) >= 8);
        assert!(count(CrashSide::Successor) >= 6);
        assert_eq!(
            points::S_AFTER_SEAL_REQUEST_SENT,
            "s-after-seal-request-sent"
        );
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse_spec("s-after-begin-sent").unwrap(),
            vec![Armed {
                point: "s-after-begin-sent",
                nth: 1,
                action: Action::Exit
            }]
        );
        let v = parse_spec("o-after-seal@3=hang, n-after-ready-sent=delay(25)").unwrap();
        assert_eq!(v[0].nth, 3);
        assert_eq!(v[0].action, Action::Hang);
        assert_eq!(v[1].action, Action::Delay(Duration::from_millis(25)));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = parse_spec("s-after-seal-requets-sent")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown crash point"), "{e}");
        assert!(e.contains("s-after-seal-request-sent"), "{e}");
    }

    #[test]
    fn bad_specs_are_errors() {
        for bad in [
            "",
            ",",
            "o-after-seal@0",
            "o-after-seal@x",
            "o-after-seal=boom",
            "o-after-seal=delay(x)",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad:?}");
        }
    }
}
