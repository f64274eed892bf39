//! Parsing of the `FAKE_*` variables.

use std::collections::HashMap;
use std::time::Duration;

use fake_peers::misbehaviour::{Misbehaviour, SealFail};

fn parse(vars: &[(&str, &str)]) -> Result<Misbehaviour, String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Misbehaviour::from_lookup(&|k| map.get(k).cloned())
}

#[test]
fn nothing_set_behaves() {
    assert_eq!(parse(&[]).unwrap(), Misbehaviour::default());
}

#[test]
fn every_variable_parses() {
    let m = parse(&[
        ("FAKE_SEAL_FAIL", "once"),
        ("FAKE_DRAIN_MS", "25"),
        ("FAKE_SEAL_MS", "40"),
        ("FAKE_NEVER_READY", "1"),
        ("FAKE_EXIT_BEFORE_HELLO", "1"),
    ])
    .unwrap();
    assert_eq!(m.seal_fail, SealFail::Once);
    assert_eq!(m.extra_drain, Duration::from_millis(25));
    assert_eq!(m.extra_seal, Duration::from_millis(40));
    assert!(m.never_ready && m.exit_before_hello);
    assert_eq!(
        parse(&[("FAKE_SEAL_FAIL", "always")]).unwrap().seal_fail,
        SealFail::Always
    );
}

#[test]
fn successor_only_variables_do_not_reach_a_cold_start() {
    let m = parse(&[
        ("FAKE_NEVER_READY", "1"),
        ("FAKE_EXIT_BEFORE_HELLO", "1"),
        ("FAKE_SEAL_FAIL", "always"),
    ])
    .unwrap()
    .for_cold_start();
    assert!(!m.never_ready && !m.exit_before_hello);
    assert_eq!(m.seal_fail, SealFail::Always);
}

#[test]
fn typos_are_errors_naming_the_variable() {
    for (k, v) in [
        ("FAKE_SEAL_FAIL", "twice"),
        ("FAKE_DRAIN_MS", "1s"),
        ("FAKE_SEAL_MS", "-5"),
        ("FAKE_NEVER_READY", "yes"),
        ("FAKE_EXIT_BEFORE_HELLO", "true"),
    ] {
        let e = parse(&[(k, v)]).unwrap_err();
        assert!(e.contains(k), "{e}");
    }
}
