//! Framing: a little-endian `u32` payload length, a little-endian `u16`
//! protocol version, then the payload (a JSON-encoded [`Message`]).
//!
//! [`encode`] and [`decode`] are pure functions over bytes; [`read_message`]
//! and [`write_message`] are thin I/O wrappers around them. A frame larger
//! than [`MAX_FRAME_LEN`], a truncated frame or an undecodable payload is a
//! typed error; nothing is ever allocated at the size a peer announces before
//! that size has been checked against the cap.

use std::io::{ErrorKind, Read, Write};

use crate::error::{Error, Result};
use crate::protocol::{HandoffId, Message, ProtoVersion, check_handoff_id};

/// Bytes in a frame header: `u32` length + `u16` version.
pub const HEADER_LEN: usize = 6;
/// Largest payload accepted or sent: 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Encode `msg` as one frame stamped with `version`.
pub fn encode(version: ProtoVersion, msg: &Message) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(msg).map_err(|e| Error::Decode(e.to_string()))?;
    if payload.len() > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len: payload.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parse a frame header: payload length (checked against the cap) and version.
pub fn decode_header(header: [u8; HEADER_LEN]) -> Result<(usize, ProtoVersion)> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let version = u16::from_le_bytes([header[4], header[5]]);
    if len as u64 > MAX_FRAME_LEN as u64 {
        return Err(Error::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    Ok((len as usize, version))
}

/// Decode a message payload.
pub fn decode_payload(payload: &[u8]) -> Result<Message> {
    serde_json::from_slice(payload).map_err(|e| Error::Decode(e.to_string()))
}

/// Decode one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (more bytes are
/// needed), or `Ok(Some((consumed, version, message)))`.
pub fn decode(buf: &[u8]) -> Result<Option<(usize, ProtoVersion, Message)>> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let (len, version) = decode_header(*header)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((HEADER_LEN + len, version, decode_payload(payload)?)))
}

/// Write `msg` as one frame, in a single `write_all` of the whole buffer.
pub fn write_message<W: Write>(w: &mut W, version: ProtoVersion, msg: &Message) -> Result<()> {
    let frame = encode(version, msg)?;
    w.write_all(&frame)?;
    Ok(())
}

/// Read one frame. A clean end of stream before the first header byte is
/// [`Error::PeerClosed`]; an end of stream inside a frame is
/// [`Error::TruncatedFrame`]; a socket read timeout surfaces as
/// [`Error::Io`] with kind `WouldBlock`/`TimedOut` (see [`Error::is_timeout`]).
///
/// The reader's own timeouts bound each read, not the frame: on a socket,
/// use [`read_message_within`] or [`read_frame`], which bound the frame.
pub fn read_message<R: Read>(r: &mut R) -> Result<(ProtoVersion, Message)> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Err(Error::PeerClosed("the next frame"));
    }
    if got < HEADER_LEN {
        return Err(Error::TruncatedFrame {
            expected: HEADER_LEN,
            got,
        });
    }
    let (len, version) = decode_header(header)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(Error::TruncatedFrame {
            expected: HEADER_LEN + len,
            got: HEADER_LEN + got,
        });
    }
    Ok((version, decode_payload(&payload)?))
}

/// Read one frame from a socket, the *whole frame* within `timeout`: the
/// socket's read timeout is set to the time left before every read, so a
/// peer that sends a byte now and then cannot stretch one frame past it. A
/// frame not complete in time is [`Error::Io`] with kind `TimedOut`, as
/// [`read_message`]'s socket timeouts are. The socket's read timeout is
/// left unset afterwards.
///
/// Use this (or [`read_frame`]) on sockets: [`read_message`] over a socket
/// with `SO_RCVTIMEO` bounds each read, not the frame.
pub fn read_message_within(
    stream: &mut std::os::unix::net::UnixStream,
    timeout: std::time::Duration,
) -> Result<(ProtoVersion, Message)> {
    let mut bounded = DeadlineStream {
        stream,
        deadline: std::time::Instant::now() + timeout,
    };
    let r = read_message(&mut bounded);
    let _ = bounded.stream.set_read_timeout(None);
    r
}

/// A socket whose every read is bounded by what is left before one
/// deadline.
struct DeadlineStream<'a> {
    stream: &'a mut std::os::unix::net::UnixStream,
    deadline: std::time::Instant,
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = crate::util::remaining(self.deadline);
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "the frame did not arrive whole before its deadline",
            ));
        }
        // SO_RCVTIMEO has microsecond resolution and zero means "none".
        self.stream
            .set_read_timeout(Some(left.max(std::time::Duration::from_micros(1))))?;
        self.stream.read(buf)
    }
}

/// Read one frame from a socket within `timeout` (the whole frame, as
/// [`read_message_within`]), for a session in which we await `awaiting`. Timeouts become [`Error::Timeout`] and a clean end
/// of stream [`Error::PeerClosed`], both naming `awaiting`. With `session`
/// set (after the handshake), the frame must carry the negotiated version
/// and, if its message has one, the session's handoff_id.
pub fn read_frame(
    stream: &mut std::os::unix::net::UnixStream,
    session: Option<(ProtoVersion, HandoffId)>,
    timeout: std::time::Duration,
    awaiting: &'static str,
) -> Result<(ProtoVersion, Message)> {
    let (v, msg) = match read_message_within(stream, timeout) {
        Ok(x) => x,
        Err(Error::Io(e)) if crate::util::is_timeout(&e) => return Err(Error::Timeout(awaiting)),
        Err(Error::PeerClosed(_)) => return Err(Error::PeerClosed(awaiting)),
        Err(e) => return Err(e),
    };
    if let Some((version, handoff_id)) = session {
        if v != version {
            return Err(Error::WrongFrameVersion {
                expected: version,
                got: v,
            });
        }
        check_handoff_id(handoff_id, &msg)?;
    }
    Ok((v, msg))
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HandoffId, Side};

    fn samples() -> Vec<Message> {
        let id = HandoffId::new();
        vec![
            Message::Hello {
                role: Side::Successor,
                pid: 42,
                build_id: vec![0xde, 0xad],
                proto_min: 1,
                proto_max: 1,
                capabilities: vec!["x".into()],
            },
            Message::HelloAck {
                proto_version_chosen: 1,
                handoff_id: id,
            },
            Message::PrepareHandoff {
                handoff_id: id,
                successor_pid: 7,
                deadline_ms: 300_000,
                drain_grace_ms: 60_000,
            },
            Message::SealComplete {
                handoff_id: id,
                last_revision_per_shard: vec![1, 2, 3],
                data_dir_fingerprint: "abc".into(),
            },
            Message::Ready {
                handoff_id: id,
                listening_on: vec!["http".into()],
                healthz_ok: true,
                advertised_revision_per_shard: vec![3],
            },
            Message::Heartbeat { ts_ms: 5 },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for msg in samples() {
            let bytes = encode(1, &msg).unwrap();
            let (used, v, back) = decode(&bytes).unwrap().unwrap();
            assert_eq!((used, v, &back), (bytes.len(), 1, &msg));
            let (v, back) = read_message(&mut &bytes[..]).unwrap();
            assert_eq!((v, back), (1, msg));
        }
    }

    #[test]
    fn partial_buffers_ask_for_more() {
        let bytes = encode(1, &samples()[0]).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        // A 4 GiB length prefix: must be refused from the header alone.
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        let e = read_message(&mut &bytes[..]).unwrap_err();
        assert!(matches!(e, Error::FrameTooLarge { len, .. } if len == u32::MAX as u64));
        assert!(matches!(decode(&bytes), Err(Error::FrameTooLarge { .. })));
        let just_over = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes();
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&just_over);
        assert!(decode_header(h).is_err());
        h[..4].copy_from_slice(&(MAX_FRAME_LEN as u32).to_le_bytes());
        assert!(decode_header(h).is_ok());
    }

    #[test]
    fn truncated_frames_are_typed_errors() {
        let bytes = encode(1, &samples()[2]).unwrap();
        let e = read_message(&mut &bytes[..3]).unwrap_err();
        assert!(matches!(
            e,
            Error::TruncatedFrame {
                expected: 6,
                got: 3
            }
        ));
        let e = read_message(&mut &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(e, Error::TruncatedFrame { .. }), "{e}");
        let e = read_message(&mut &[][..]).unwrap_err();
        assert!(matches!(e, Error::PeerClosed(_)));
    }

    #[test]
    fn undecodable_payloads_are_typed_errors() {
        for payload in [
            &b"garbage"[..],
            br#"{"type":"NoSuchMessage"}"#,
            br#"{"type":"Commit"}"#,
            br#"{"type":"Commit","handoff_id":"nope"}"#,
            br#"{"type":"Heartbeat","ts_ms":1,"extra":2}"#,
            b"",
        ] {
            let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&1u16.to_le_bytes());
            bytes.extend_from_slice(payload);
            assert!(
                matches!(read_message(&mut &bytes[..]), Err(Error::Decode(_))),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn version_is_carried_in_the_header() {
        let bytes = encode(7, &Message::Heartbeat { ts_ms: 1 }).unwrap();
        assert_eq!(read_message(&mut &bytes[..]).unwrap().0, 7);
    }
}
