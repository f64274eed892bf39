//! The control channel of the `powerfs` binary, for a caller in another
//! process: one command per line on its stdin, one answer per line on its
//! stdout. Parsing is pure; the binary applies each [`Command`] to its
//! [`crate::PowerFs`].
//!
//! ```text
//! durable                                     count everything as durable
//! drop                                        cut the power, keep nothing not durable
//! cut <seed>                                  cut the power, crash state of <seed>
//! fault <write|fsync|rename> <skip> <eio|enospc|stall-ms=<ms>> [<path part>]
//! clear-faults                                disarm the faults not fired
//! counters                                    what it has seen
//! unmount                                     unmount and exit (as does end of input)
//! ```
//!
//! Answers: `ok`, `ok <what survived>`, `ok <counters>`, or `error <why>`.

use std::time::Duration;

use crate::fault::{FaultEffect, FaultOp, IoFault};

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// [`crate::PowerFs::make_durable`].
    Durable,
    /// [`crate::PowerFs::drop_undurable`].
    Drop,
    /// [`crate::PowerFs::power_cut`] with this seed.
    Cut(u64),
    /// [`crate::PowerFs::inject`].
    Fault(IoFault),
    /// [`crate::PowerFs::clear_faults`].
    ClearFaults,
    /// [`crate::PowerFs::counters`].
    Counters,
    /// [`crate::PowerFs::unmount`], then exit.
    Unmount,
}

/// Parse one line; the error says what was expected.
pub fn parse_command(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |word: &str, what: &str| {
        word.parse::<u64>()
            .map_err(|_| format!("{what} must be a non-negative integer, got {word:?}"))
    };
    match words.as_slice() {
        ["durable"] => Ok(Command::Durable),
        ["drop"] => Ok(Command::Drop),
        ["cut", seed] => Ok(Command::Cut(number(seed, "the seed")?)),
        ["clear-faults"] => Ok(Command::ClearFaults),
        ["counters"] => Ok(Command::Counters),
        ["unmount"] => Ok(Command::Unmount),
        ["fault", op, skip, effect, rest @ ..] if rest.len() <= 1 => {
            let op = match *op {
                "write" => FaultOp::Write,
                "fsync" => FaultOp::Fsync,
                "rename" => FaultOp::Rename,
                other => return Err(format!("fault: write, fsync or rename, got {other:?}")),
            };
            let effect = match *effect {
                "eio" => FaultEffect::Eio,
                "enospc" => FaultEffect::Enospc,
                other => match other.strip_prefix("stall-ms=") {
                    Some(ms) => FaultEffect::Stall(Duration::from_millis(number(ms, "stall-ms")?)),
                    None => {
                        return Err(format!(
                            "fault: eio, enospc or stall-ms=<ms>, got {other:?}"
                        ));
                    }
                },
            };
            Ok(Command::Fault(IoFault {
                op,
                skip: number(skip, "the skip count")?,
                path_contains: rest.first().map(|part| (*part).to_owned()),
                effect,
            }))
        }
        _ => Err(format!(
            "expected durable, drop, cut <seed>, fault <op> <skip> <effect> [<path part>], \
             clear-faults, counters or unmount, got {line:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses() {
        assert_eq!(parse_command("durable"), Ok(Command::Durable));
        assert_eq!(parse_command(" drop "), Ok(Command::Drop));
        assert_eq!(parse_command("cut 42"), Ok(Command::Cut(42)));
        assert_eq!(parse_command("clear-faults"), Ok(Command::ClearFaults));
        assert_eq!(parse_command("counters"), Ok(Command::Counters));
        assert_eq!(parse_command("unmount"), Ok(Command::Unmount));
        assert_eq!(
            parse_command("fault fsync 2 stall-ms=30 kv.log"),
            Ok(Command::Fault(IoFault {
                op: FaultOp::Fsync,
                skip: 2,
                path_contains: Some("kv.log".into()),
                effect: FaultEffect::Stall(Duration::from_millis(30)),
            }))
        );
        assert_eq!(
            parse_command("fault rename 0 enospc"),
            Ok(Command::Fault(IoFault {
                op: FaultOp::Rename,
                skip: 0,
                path_contains: None,
                effect: FaultEffect::Enospc,
            }))
        );
    }

    #[test]
    fn a_bad_command_says_what_was_expected() {
        for (line, expected) in [
            ("cut x", "the seed must be a non-negative integer"),
            ("fault mkdir 0 eio", "write, fsync or rename"),
            ("fault write 0 boom", "eio, enospc or stall-ms"),
            ("fault write 0 eio a b", "expected durable"),
            ("", "expected durable"),
        ] {
            let e = parse_command(line).unwrap_err();
            assert!(e.contains(expected), "{line:?}: {e}");
        }
    }
}
