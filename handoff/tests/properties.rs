//! Property tests with fixed seeds: every decoder a peer, a file or the
//! environment can reach ends in a value or a typed error — never a panic,
//! never an allocation past the frame cap. Each property runs `CASES` cases
//! (override with PROPTEST_CASES).

use handoff::crash::parse_spec;
use handoff::fd::parse_handoff_env;
use handoff::frame::{HEADER_LEN, MAX_FRAME_LEN, decode, encode, read_message};
use handoff::protocol::{HandoffId, Message, Side};
use handoff::state::{Phase, StateJournal};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

const CASES: u32 = 2_000;

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x5eed_0f4a_4d0f),
        failure_persistence: None,
        ..Config::default()
    }
}

fn id() -> impl Strategy<Value = HandoffId> {
    any::<u128>().prop_map(|raw| {
        // Any 128 bits formatted as a UUID round-trip.
        format!("{:032x}", raw)
            .chars()
            .enumerate()
            .fold(String::new(), |mut s, (i, c)| {
                if matches!(i, 8 | 12 | 16 | 20) {
                    s.push('-');
                }
                s.push(c);
                s
            })
            .parse()
            .unwrap()
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..32),
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(".{0,8}", 0..3),
            any::<bool>()
        )
            .prop_map(|(pid, build_id, proto_min, proto_max, capabilities, n)| {
                Message::Hello {
                    role: if n { Side::Successor } else { Side::Incumbent },
                    pid,
                    build_id,
                    proto_min,
                    proto_max,
                    capabilities,
                }
            }),
        (any::<u16>(), id()).prop_map(|(v, handoff_id)| Message::HelloAck {
            proto_version_chosen: v,
            handoff_id
        }),
        (id(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(handoff_id, successor_pid, deadline_ms, drain_grace_ms)| Message::PrepareHandoff {
                handoff_id,
                successor_pid,
                deadline_ms,
                drain_grace_ms
            }
        ),
        (any::<u64>(), any::<bool>()).prop_map(|(open_conns_remaining, accept_closed)| {
            Message::Drained {
                open_conns_remaining,
                accept_closed,
            }
        }),
        (
            id(),
            proptest::collection::vec(any::<u64>(), 0..8),
            ".{0,40}"
        )
            .prop_map(
                |(handoff_id, last_revision_per_shard, data_dir_fingerprint)| {
                    Message::SealComplete {
                        handoff_id,
                        last_revision_per_shard,
                        data_dir_fingerprint,
                    }
                }
            ),
        (id(), ".{0,40}", ".{0,40}").prop_map(|(handoff_id, error, partial_state)| {
            Message::SealFailed {
                handoff_id,
                error,
                partial_state,
            }
        }),
        (
            id(),
            proptest::collection::vec("[a-z]{1,8}", 0..4),
            any::<bool>(),
            proptest::collection::vec(any::<u64>(), 0..4)
        )
            .prop_map(
                |(handoff_id, listening_on, healthz_ok, advertised_revision_per_shard)| {
                    Message::Ready {
                        handoff_id,
                        listening_on,
                        healthz_ok,
                        advertised_revision_per_shard,
                    }
                }
            ),
        (id(), ".{0,40}").prop_map(|(handoff_id, reason)| Message::Abort { handoff_id, reason }),
        id().prop_map(|handoff_id| Message::Commit { handoff_id }),
        any::<u64>().prop_map(|ts_ms| Message::Heartbeat { ts_ms }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_message_round_trips_through_a_frame(msg in message(), version in any::<u16>()) {
        let bytes = encode(version, &msg).unwrap();
        let (used, v, back) = decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(v, version);
        prop_assert_eq!(&back, &msg);
        let (v, back) = read_message(&mut &bytes[..]).unwrap();
        prop_assert_eq!((v, back), (version, msg));
    }

    #[test]
    fn arbitrary_bytes_decode_to_a_value_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = read_message(&mut &bytes[..]);
    }

    #[test]
    fn arbitrary_headers_never_allocate_past_the_cap(len in any::<u32>(), version in any::<u16>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let r = read_message(&mut &bytes[..]);
        if len as usize > MAX_FRAME_LEN {
            let too_large = matches!(r, Err(handoff::Error::FrameTooLarge { .. }));
            prop_assert!(too_large);
        } else if (len as usize) > tail.len() {
            let truncated = matches!(r, Err(handoff::Error::TruncatedFrame { .. }));
            prop_assert!(truncated);
        }
        prop_assert!(bytes.len() >= HEADER_LEN);
    }

    #[test]
    fn mutated_valid_frames_never_panic(msg in message(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = encode(1, &msg).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        let _ = decode(&bytes);
        let _ = read_message(&mut &bytes[..]);
    }

    #[test]
    fn journals_round_trip_and_arbitrary_bytes_are_typed_errors(
        handoff_id in id(), phase in 0usize..6, incumbent_pid in 1u32.., successor_pid in proptest::option::of(1u32..), started in any::<u64>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let phase = [Phase::Negotiating, Phase::Draining, Phase::Sealing, Phase::AwaitingReady, Phase::Committed, Phase::ResumingAfterAbort][phase];
        let successor_pid = successor_pid.filter(|s| *s != incumbent_pid);
        let j = StateJournal { handoff_id, phase, incumbent_pid, successor_pid, started_at_unix_ms: started };
        // Only journals the supervisor could write (it checks before writing).
        prop_assume!(j.check_invariants().is_ok());
        let bytes = j.encode();
        prop_assert_eq!(StateJournal::decode(&bytes).unwrap(), j);
        // Every strict prefix of a journal is rejected (torn write), except
        // the one that lacks only the trailing newline: that is whole JSON.
        prop_assert_eq!(bytes.last(), Some(&b'\n'));
        for cut in 0..bytes.len() - 1 {
            prop_assert!(StateJournal::decode(&bytes[..cut]).is_err());
        }
        let _ = StateJournal::decode(&garbage);
    }

    #[test]
    fn crash_specs_parse_or_fail_cleanly(spec in ".{0,64}") {
        let _ = parse_spec(&spec);
    }

    #[test]
    fn crash_specs_built_from_the_registry_parse(i in 0usize..handoff::crash::REGISTRY.len(), k in 1u32..5, action in 0usize..3, ms in 0u64..10_000) {
        let p = handoff::crash::REGISTRY[i].name;
        let action = ["exit".to_string(), "hang".to_string(), format!("delay({ms})")][action].clone();
        let spec = format!("{p}@{k}={action}");
        let armed = parse_spec(&spec).unwrap();
        prop_assert_eq!(armed.len(), 1);
        prop_assert_eq!(armed[0].point, p);
        prop_assert_eq!(armed[0].nth, k);
    }

    #[test]
    fn handoff_env_parses_or_fails_cleanly(
        fds in proptest::option::of(".{0,12}"), names in proptest::option::of(".{0,40}"),
        pid in proptest::option::of(".{0,12}"), role in proptest::option::of(".{0,12}"), sock in proptest::option::of(".{0,12}"),
    ) {
        let get = |k: &str| match k {
            "LISTEN_FDS" => fds.clone(),
            "LISTEN_FDNAMES" => names.clone(),
            "LISTEN_PID" => pid.clone(),
            "HANDOFF_ROLE" => role.clone(),
            "HANDOFF_SOCK_FD" => sock.clone(),
            _ => None,
        };
        let _ = parse_handoff_env(&get, 4242);
    }

    #[test]
    fn well_formed_handoff_env_is_accepted(n in 0usize..8, successor in any::<bool>()) {
        let names: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
        let get = |k: &str| match k {
            "LISTEN_FDS" if n > 0 => Some(n.to_string()),
            "LISTEN_FDNAMES" if n > 0 => Some(names.join(":")),
            "LISTEN_PID" if n > 0 => Some("4242".to_string()),
            "HANDOFF_ROLE" if successor => Some("successor".to_string()),
            "HANDOFF_SOCK_FD" if successor => Some((3 + n).to_string()),
            _ => None,
        };
        let env = parse_handoff_env(&get, 4242).unwrap();
        prop_assert_eq!(env.listeners.len(), n);
        prop_assert_eq!(env.successor_sock_fd.is_some(), successor);
    }
}
