//! The scenario suite lives in `tests/scenarios.rs`.
