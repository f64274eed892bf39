//! The explorer drives the library's supervisor and incumbent machines
//! through every interleaving within its bound, in a CI-sized budget, and
//! catches the deliberate defects of its successor model.

use std::time::Duration;

use harness::explore::{self, Config, ModelDefects};

#[test]
fn every_run_within_the_bound_keeps_the_invariants() {
    let summary = explore::explore(&Config {
        budget: Duration::from_secs(3),
        ..Config::default()
    });
    println!("{}", summary.text());
    assert!(summary.failure.is_none(), "{}", summary.text());
    assert!(
        summary.exhaustive_complete,
        "the bound was not explored in the budget:\n{}",
        summary.text()
    );
}

fn caught(defects: ModelDefects, expect: &str) {
    let summary = explore::explore(&Config {
        budget: Duration::from_secs(10),
        defects,
        ..Config::default()
    });
    let failure = summary
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("{defects:?} not caught:\n{}", summary.text()));
    println!("{}", summary.text());
    assert!(
        failure.violation.contains(expect),
        "{defects:?}: expected a violation about {expect:?}, got {}",
        failure.violation
    );
    // The replay line reproduces the shrunk run.
    let choices = explore::parse_replay(&failure.replay()).unwrap();
    assert_eq!(
        explore::describe(&choices, defects).violation,
        failure.violation
    );
}

#[test]
fn a_successor_serving_without_a_busy_flock_is_caught() {
    caught(
        ModelDefects {
            successor_ignores_busy_flock: true,
            ..ModelDefects::default()
        },
        "without the flock",
    );
}

#[test]
fn a_successor_ready_before_the_flock_is_caught() {
    caught(
        ModelDefects {
            successor_ready_before_flock: true,
            ..ModelDefects::default()
        },
        "Ready sent without the flock",
    );
}

#[test]
fn replay_strings_round_trip() {
    let choices = vec![0, 0, 3, 0, 1];
    let s = explore::replay_string(&choices);
    assert_eq!(s, "2:3,4:1");
    assert_eq!(explore::parse_replay(&s).unwrap(), choices);
    assert_eq!(explore::parse_replay("-").unwrap(), Vec::<usize>::new());
    assert!(explore::parse_replay("x").is_err());
}
