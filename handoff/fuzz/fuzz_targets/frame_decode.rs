//! `frame::decode` over a buffer holding any bytes, walked frame by frame the
//! way a reader with everything buffered would.
//!
//! Checks, for every input: no panic; `Ok(None)` only when the buffer really
//! holds less than one frame; a decoded frame never exceeds the 1 MiB cap and
//! re-encodes to a frame that decodes to the same version and message; every
//! failure is `FrameTooLarge` or `Decode`. Allocations are bounded by running
//! with `-malloc_limit_mb=2` (see `handoff/fuzz/run-all.sh`): a 4 GiB length
//! prefix that reached an allocation would stop the run.
#![no_main]

use handoff::Error;
use handoff::frame::{HEADER_LEN, MAX_FRAME_LEN, decode, decode_header, encode};
use libfuzzer_sys::fuzz_target;

/// Bound on frames walked per input (inputs are at most a few KiB anyway).
const MAX_FRAMES_PER_INPUT: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    for _ in 0..MAX_FRAMES_PER_INPUT {
        match decode(rest) {
            Ok(None) => {
                if let Some(header) = rest.first_chunk::<HEADER_LEN>() {
                    let (len, _) = decode_header(*header)
                        .expect("decode asked for more bytes after accepting a header");
                    assert!(
                        rest.len() < HEADER_LEN + len,
                        "decode asked for more bytes but the frame ({} bytes) is all there ({})",
                        HEADER_LEN + len,
                        rest.len()
                    );
                }
                return;
            }
            Ok(Some((used, version, message))) => {
                assert!(
                    used >= HEADER_LEN && used <= rest.len(),
                    "consumed {used} of {}",
                    rest.len()
                );
                assert!(used - HEADER_LEN <= MAX_FRAME_LEN);
                let again = encode(version, &message).expect("a decoded message re-encodes");
                let (used_again, version_again, message_again) = decode(&again)
                    .expect("a re-encoded frame decodes")
                    .expect("a re-encoded frame is complete");
                assert_eq!(used_again, again.len());
                assert_eq!(version_again, version);
                assert_eq!(message_again, message);
                rest = &rest[used..];
            }
            Err(Error::FrameTooLarge { len, max }) => {
                assert!(len > max as u64 && max == MAX_FRAME_LEN);
                return;
            }
            Err(Error::Decode(reason)) => {
                assert!(!reason.is_empty());
                return;
            }
            Err(other) => panic!("decode failed with an unexpected error kind: {other:?}"),
        }
    }
});
