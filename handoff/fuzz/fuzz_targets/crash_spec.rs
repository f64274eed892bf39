//! `crash::parse_spec` (the `HANDOFF_CRASH_AT` syntax) on any UTF-8 text.
//!
//! Checks: no panic; every error is `Error::CrashSpec`; every accepted spec
//! arms only registered points with counts from 1, and its canonical form
//! (`name@k=action,...`) parses back to the same list.
#![no_main]

use handoff::Error;
use handoff::crash::{Action, lookup, parse_spec};
use libfuzzer_sys::fuzz_target;

fn action_text(action: Action) -> String {
    match action {
        Action::Exit => "exit".to_owned(),
        Action::Hang => "hang".to_owned(),
        Action::Delay(d) => format!("delay({})", d.as_millis()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    match parse_spec(spec) {
        Ok(armed) => {
            assert!(!armed.is_empty(), "{spec:?} parsed to no point");
            for a in &armed {
                assert!(lookup(a.point).is_some(), "{} is not registered", a.point);
                assert!(a.nth >= 1);
            }
            let canonical: Vec<String> = armed
                .iter()
                .map(|a| format!("{}@{}={}", a.point, a.nth, action_text(a.action)))
                .collect();
            let canonical = canonical.join(",");
            assert_eq!(
                parse_spec(&canonical).expect("the canonical form parses"),
                armed,
                "{spec:?} vs its canonical form {canonical:?}"
            );
        }
        Err(Error::CrashSpec(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("{spec:?}: not a CrashSpec error: {other:?}"),
    }
});
