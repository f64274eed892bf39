//! `StateJournal::decode` on any bytes: a value that passes its own
//! invariants and round-trips through `encode`, or a reason in words.
#![no_main]

use handoff::StateJournal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match StateJournal::decode(data) {
        Ok(journal) => {
            assert_eq!(journal.check_invariants(), Ok(()));
            let bytes = journal.encode();
            assert_eq!(StateJournal::decode(&bytes), Ok(journal));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
