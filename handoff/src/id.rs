//! The identifiers the protocol and its errors share: the handoff id and
//! the protocol version. A leaf module: errors name them, and the protocol
//! (which returns errors) re-exports them, so neither depends on the other
//! for them.

use std::fmt;

/// A protocol version number, carried in every frame header.
pub type ProtoVersion = u16;

/// Identifies one handoff attempt: 128 random bits, shown as a UUIDv4.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandoffId(u128);

impl HandoffId {
    /// A fresh random id (UUID version 4, RFC 9562 variant bits).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let raw: u128 = rand::random();
        let v4 = (raw & !(0xF000u128 << 64)) | (0x4000u128 << 64);
        let v4 = (v4 & !(0xC000u128 << 48)) | (0x8000u128 << 48);
        HandoffId(v4)
    }

    /// The nil id, used before a handoff has one (never sent on the wire
    /// after `HelloAck`).
    pub const fn nil() -> Self {
        HandoffId(0)
    }

    /// The raw 128 bits.
    pub fn as_u128(&self) -> u128 {
        self.0
    }

    /// The id with these 128 bits (the text form is parsed in
    /// [`crate::protocol`]).
    pub(crate) const fn from_u128(raw: u128) -> Self {
        HandoffId(raw)
    }
}

impl fmt::Display for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandoffId({self})")
    }
}
