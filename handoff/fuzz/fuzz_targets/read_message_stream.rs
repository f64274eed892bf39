//! `frame::read_message` on a byte stream that arrives in arbitrary pieces
//! (short reads, `EINTR`), checked against the pure `frame::decode`.
//!
//! The first bytes of the input choose the read sizes and where `Interrupted`
//! errors are injected; the rest is the stream. Reading frame after frame
//! until an error must produce exactly the messages that walking the same
//! bytes with `decode` produces, and end in the matching typed error:
//! `PeerClosed` at a frame boundary, `TruncatedFrame` inside a frame,
//! `FrameTooLarge` or `Decode` where `decode` says so.
#![no_main]

use std::io::{self, Read};

use handoff::Error;
use handoff::frame::{HEADER_LEN, decode, read_message};
use libfuzzer_sys::fuzz_target;

/// How many leading bytes describe the read pattern.
const PATTERN_LEN: usize = 8;
/// Bound on frames read per input.
const MAX_FRAMES_PER_INPUT: usize = 256;

/// Serves `data` in pieces whose sizes cycle through `pattern`; a pattern
/// byte of 0 injects one `Interrupted` error instead of a read.
struct ChoppyReader<'a> {
    data: &'a [u8],
    pattern: &'a [u8],
    step: usize,
}

impl Read for ChoppyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self
            .pattern
            .get(self.step % self.pattern.len().max(1))
            .copied();
        self.step += 1;
        let size = match size {
            Some(0) => return Err(io::Error::from(io::ErrorKind::Interrupted)),
            Some(n) => usize::from(n),
            None => usize::MAX,
        };
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let split = PATTERN_LEN.min(data.len());
    let (pattern, stream) = data.split_at(split);
    // Never a pattern of only zeros: that reader would never make progress.
    if !pattern.is_empty() && pattern.iter().all(|b| *b == 0) {
        return;
    }
    let mut reader = ChoppyReader {
        data: stream,
        pattern,
        step: 0,
    };
    let mut rest = stream;
    for _ in 0..MAX_FRAMES_PER_INPUT {
        let expected = decode(rest);
        let got = read_message(&mut reader);
        match (expected, got) {
            (Ok(Some((used, version, message))), Ok((got_version, got_message))) => {
                assert_eq!((got_version, &got_message), (version, &message));
                rest = &rest[used..];
            }
            (Ok(None), Err(Error::PeerClosed(_))) => {
                assert!(rest.is_empty(), "PeerClosed with {} bytes left", rest.len());
                return;
            }
            (Ok(None), Err(Error::TruncatedFrame { expected, got })) => {
                assert!(!rest.is_empty(), "TruncatedFrame on an empty stream");
                assert_eq!(got, rest.len(), "TruncatedFrame must count what arrived");
                assert!(expected > got && expected >= HEADER_LEN.min(expected));
                return;
            }
            (
                Err(Error::FrameTooLarge { len, .. }),
                Err(Error::FrameTooLarge { len: got_len, .. }),
            ) => {
                assert_eq!(len, got_len);
                return;
            }
            (Err(Error::Decode(_)), Err(Error::Decode(_))) => return,
            (expected, got) => {
                panic!("decode says {expected:?} but read_message says {got:?}")
            }
        }
    }
});
