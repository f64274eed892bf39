//! The handoff protocol's vocabulary: messages, roles, ids, version
//! negotiation. Pure: no I/O here (framing lives in [`crate::frame`]).

use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub use crate::id::{HandoffId, ProtoVersion};

/// Lowest protocol version this build speaks.
pub const PROTO_MIN: ProtoVersion = 1;
/// Highest protocol version this build speaks.
pub const PROTO_MAX: ProtoVersion = 1;

/// The role a peer announces in its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The process serving now (O).
    Incumbent,
    /// The freshly spawned process taking over (N).
    Successor,
}

impl FromStr for HandoffId {
    type Err = Error;
    /// Exactly the UUID text form: 36 characters, `-` at 8, 13, 18 and 23,
    /// hex digits (either case) everywhere else. (`u128::from_str_radix`
    /// alone would also take a `+` sign, and the dashes anywhere.)
    fn from_str(s: &str) -> Result<Self> {
        let well_formed = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !well_formed {
            return Err(Error::Decode(format!("handoff_id {s:?} is not a UUID")));
        }
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        u128::from_str_radix(&hex, 16)
            .map(HandoffId::from_u128)
            .map_err(|_| Error::Decode(format!("handoff_id {s:?} is not a UUID")))
    }
}

impl Serialize for HandoffId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HandoffId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every message of the protocol. See DESIGN.md section 3 for who sends what
/// and when. `Hello` and `HelloAck` keep their shape in every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Message {
    /// O→S, N→S: the first frame on every session.
    Hello {
        /// Who is speaking.
        role: Side,
        /// The speaker's pid (for N, must equal the child S spawned).
        pid: u32,
        /// Opaque build identity, hex on the wire.
        #[serde(with = "hex_bytes")]
        build_id: Vec<u8>,
        /// Lowest version the speaker supports.
        proto_min: ProtoVersion,
        /// Highest version the speaker supports.
        proto_max: ProtoVersion,
        /// Optional features the speaker offers.
        capabilities: Vec<String>,
    },
    /// S→O, S→N: the chosen version and the id of this handoff.
    HelloAck {
        /// Highest version both sides support.
        proto_version_chosen: ProtoVersion,
        /// The handoff this session belongs to.
        handoff_id: HandoffId,
    },
    /// O→S instead of `Hello` when the incumbent cannot take a session now
    /// (another supervisor is already driving a handoff). Not in the seed:
    /// see ARCHITECTURE.md, "Decisions".
    Refused {
        /// Why, in words for an operator.
        reason: String,
    },
    /// S→O: start draining.
    PrepareHandoff {
        /// The handoff.
        handoff_id: HandoffId,
        /// Pid of the successor that will take over.
        successor_pid: u32,
        /// What is left of the overall handoff budget, in milliseconds.
        deadline_ms: u64,
        /// Cap on the drain, in milliseconds.
        drain_grace_ms: u64,
    },
    /// O→S: drain finished (accepting stopped, in-flight work done).
    Drained {
        /// Connections still open when drain returned.
        open_conns_remaining: u64,
        /// Whether the incumbent stopped accepting.
        accept_closed: bool,
    },
    /// S→O: flush, fsync and release the flock.
    SealRequest {
        /// The handoff.
        handoff_id: HandoffId,
    },
    /// O→S: progress while sealing (a liveness signal too).
    SealProgress {
        /// Shards sealed so far.
        shards_sealed: u64,
        /// Shards in total.
        shards_total: u64,
        /// Last durable revision seen.
        last_revision: u64,
    },
    /// O→S: sealed, and the flock is released.
    SealComplete {
        /// The handoff.
        handoff_id: HandoffId,
        /// Last durable revision of each shard.
        last_revision_per_shard: Vec<u64>,
        /// A fingerprint of the sealed data dir.
        data_dir_fingerprint: String,
    },
    /// O→S: seal failed; O keeps the flock and resumes.
    SealFailed {
        /// The handoff.
        handoff_id: HandoffId,
        /// What failed.
        error: String,
        /// What the service says about its partial state.
        partial_state: String,
    },
    /// S→N: take over.
    Begin {
        /// The handoff.
        handoff_id: HandoffId,
    },
    /// N→S: serving; the flock is held.
    Ready {
        /// The handoff.
        handoff_id: HandoffId,
        /// Names of the listeners N serves on.
        listening_on: Vec<String>,
        /// N's own health check.
        healthz_ok: bool,
        /// Revision of each shard N opened.
        advertised_revision_per_shard: Vec<u64>,
    },
    /// S→O: N is serving; finish and exit.
    Commit {
        /// The handoff.
        handoff_id: HandoffId,
    },
    /// S→N: give up; N exits.
    Abort {
        /// The handoff.
        handoff_id: HandoffId,
        /// Why.
        reason: String,
    },
    /// S→O: the handoff was aborted after the seal; retake the flock, serve.
    ResumeAfterAbort {
        /// The handoff.
        handoff_id: HandoffId,
    },
    /// O→S: still alive while `drain`/`seal` run.
    Heartbeat {
        /// Sender's wall clock.
        ts_ms: u64,
    },
}

impl Message {
    /// The handoff_id the message carries, if its shape has one.
    pub fn handoff_id(&self) -> Option<HandoffId> {
        match self {
            Message::HelloAck { handoff_id, .. }
            | Message::PrepareHandoff { handoff_id, .. }
            | Message::SealRequest { handoff_id }
            | Message::SealComplete { handoff_id, .. }
            | Message::SealFailed { handoff_id, .. }
            | Message::Begin { handoff_id }
            | Message::Ready { handoff_id, .. }
            | Message::Commit { handoff_id }
            | Message::Abort { handoff_id, .. }
            | Message::ResumeAfterAbort { handoff_id } => Some(*handoff_id),
            Message::Hello { .. }
            | Message::Refused { .. }
            | Message::Drained { .. }
            | Message::SealProgress { .. }
            | Message::Heartbeat { .. } => None,
        }
    }
}

/// The message's variant name, for logs and errors.
pub fn short_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::HelloAck { .. } => "HelloAck",
        Message::Refused { .. } => "Refused",
        Message::PrepareHandoff { .. } => "PrepareHandoff",
        Message::Drained { .. } => "Drained",
        Message::SealRequest { .. } => "SealRequest",
        Message::SealProgress { .. } => "SealProgress",
        Message::SealComplete { .. } => "SealComplete",
        Message::SealFailed { .. } => "SealFailed",
        Message::Begin { .. } => "Begin",
        Message::Ready { .. } => "Ready",
        Message::Commit { .. } => "Commit",
        Message::Abort { .. } => "Abort",
        Message::ResumeAfterAbort { .. } => "ResumeAfterAbort",
        Message::Heartbeat { .. } => "Heartbeat",
    }
}

/// Pick the highest version in both `[ours_min, ours_max]` and
/// `[theirs_min, theirs_max]`, or fail naming both ranges.
pub fn negotiate_version(
    ours_min: ProtoVersion,
    ours_max: ProtoVersion,
    theirs_min: ProtoVersion,
    theirs_max: ProtoVersion,
) -> Result<ProtoVersion> {
    let mismatch = || Error::VersionMismatch {
        ours_min,
        ours_max,
        theirs_min,
        theirs_max,
    };
    if ours_min > ours_max || theirs_min > theirs_max {
        return Err(mismatch());
    }
    let chosen = ours_max.min(theirs_max);
    if chosen < ours_min.max(theirs_min) {
        return Err(mismatch());
    }
    Ok(chosen)
}

/// Check that a message carries the session's handoff_id (messages without
/// one pass).
pub fn check_handoff_id(expected: HandoffId, m: &Message) -> Result<()> {
    match m.handoff_id() {
        Some(got) if got != expected => Err(Error::WrongHandoffId { expected, got }),
        _ => Ok(()),
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex string"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    // Digits only: from_str_radix alone would take "+f".
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("invalid hex digit"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate_version(1, 3, 2, 5).unwrap(), 3);
        assert_eq!(negotiate_version(2, 5, 1, 3).unwrap(), 3);
        assert_eq!(negotiate_version(1, 1, 1, 1).unwrap(), 1);
    }

    #[test]
    fn negotiation_fails_on_disjoint_ranges_naming_both() {
        let e = negotiate_version(1, 2, 3, 4).unwrap_err();
        assert!(matches!(
            e,
            Error::VersionMismatch {
                ours_min: 1,
                ours_max: 2,
                theirs_min: 3,
                theirs_max: 4
            }
        ));
        assert!(e.to_string().contains("1..=2") && e.to_string().contains("3..=4"));
        assert!(negotiate_version(3, 4, 1, 2).is_err());
        // An inverted range is never "common" with anything.
        assert!(negotiate_version(1, 5, 4, 2).is_err());
    }

    #[test]
    fn handoff_id_is_a_uuid_v4_and_round_trips() {
        let id = HandoffId::new();
        let s = id.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(s.parse::<HandoffId>().unwrap(), id);
        assert!("not-a-uuid".parse::<HandoffId>().is_err());
        assert_ne!(HandoffId::new(), HandoffId::new());
    }

    #[test]
    fn wrong_handoff_id_is_rejected() {
        let a = HandoffId::new();
        let b = HandoffId::new();
        assert!(check_handoff_id(a, &Message::Commit { handoff_id: a }).is_ok());
        assert!(matches!(
            check_handoff_id(a, &Message::Commit { handoff_id: b }),
            Err(Error::WrongHandoffId { .. })
        ));
        assert!(check_handoff_id(a, &Message::Heartbeat { ts_ms: 1 }).is_ok());
    }
}
