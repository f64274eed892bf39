//! Fake peers: see `src/bin`.
