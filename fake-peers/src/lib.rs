//! Fake peers: a real key-value service built on `handoff`, used as the
//! incumbent and the successor in tests, misbehaving on request.
//!
//! The binary `fake-peer` ([`peer::run`]) serves a line protocol
//! ([`line_protocol`]) over every inherited listener, keeps its data in an
//! fsynced append-only log ([`store`]), implements [`handoff::Drainable`]
//! honestly ([`server`]), and misbehaves when environment variables ask it
//! to ([`misbehaviour`]). See `README.md` for the command-line contract.
//!
//! ```
//! use fake_peers::line_protocol::{Request, parse_request};
//! assert_eq!(parse_request(b"GET k\n"), Ok(Request::Get { key: "k".into() }));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod line_protocol;
pub mod misbehaviour;
pub mod peer;
pub mod server;
pub mod store;
