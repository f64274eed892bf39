//! Regression tests for what hostile input to the decoders found (issue 6).
//! The decoders' general properties are in `properties.rs` (proptest) and
//! `handoff/fuzz/` (cargo-fuzz).
//!
//! Reproduce: `cargo test -p handoff --test hostile_decoding`.

use handoff::frame::{decode, encode};
use handoff::{HandoffId, Message};

/// Found reviewing the id parser for the fuzzers: `HandoffId` accepted any
/// 36-character string with 32 hex digits and 4 dashes *anywhere*, and a
/// leading `+` (which `u128::from_str_radix` takes as a sign), so one id had
/// many spellings on the wire. Only the UUID text form is an id now.
#[test]
fn handoff_ids_accept_only_the_uuid_text_form() {
    let canonical = "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8c";
    let id: HandoffId = canonical.parse().unwrap();
    assert_eq!(id.to_string(), canonical);
    // Upper case is the same UUID (RFC 9562 says parse either case).
    assert_eq!(canonical.to_uppercase().parse::<HandoffId>().unwrap(), id);
    for bad in [
        "+1234567-89ab-cdef-0123-456789abcdef",
        "0123456789ab-cdef-0123-4567-89abcdef",
        "----0123456789abcdef0123456789abcdef",
        "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8",
        "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8cc",
        "5f0c2a1e 9b7d-4c3e-8a21-0d4e5f6a7b8c",
        "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7b8g",
        "5f0c2a1e-9b7d-4c3e-8a21-0d4e5f6a7bé",
    ] {
        assert!(
            bad.parse::<HandoffId>().is_err(),
            "{bad:?} was taken as an id"
        );
    }
}

/// Same root cause in the `build_id` hex of `Hello`: `"+f"` decoded as
/// `0x0f`. It must be a decode error, as any other non-hex byte is.
#[test]
fn build_id_hex_accepts_only_hex_digits() {
    let hello = |build_id: &str| {
        let payload = format!(
            r#"{{"type":"Hello","role":"successor","pid":1,"build_id":"{build_id}","proto_min":1,"proto_max":1,"capabilities":[]}}"#
        );
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&1u16.to_le_bytes());
        frame.extend_from_slice(payload.as_bytes());
        decode(&frame)
    };
    match hello("0fA0") {
        Ok(Some((_, _, Message::Hello { build_id, .. }))) => assert_eq!(build_id, [0x0f, 0xa0]),
        other => panic!("valid hex rejected: {other:?}"),
    }
    for bad in ["+f", "+f+a", "-1", " f", "0x"] {
        assert!(hello(bad).is_err(), "build_id {bad:?} was accepted");
    }
    // And what we encode still decodes.
    let frame = encode(
        1,
        &Message::Hello {
            role: handoff::Side::Successor,
            pid: 1,
            build_id: vec![0, 0xff, 0x10],
            proto_min: 1,
            proto_max: 1,
            capabilities: vec![],
        },
    )
    .unwrap();
    assert!(decode(&frame).unwrap().is_some());
}
