//! `handoff-supervisor`: drive zero-downtime handoffs of a service.
//!
//! Three ways to run it:
//!
//! - `handoff-supervisor [FLAGS] -- BINARY [ARGS]...`: the one-shot command
//!   ([`oneshot`]): perform one handoff (or, with `--cold-start`, start the
//!   first incumbent) and exit. Its flags, output and exit codes are a
//!   contract the harness and scripts rely on.
//! - `handoff-supervisor daemon --config FILE`: the long-running supervisor
//!   ([`daemon`]) for systemd (`Type=notify`, socket activation) or any
//!   process manager.
//! - `handoff-supervisor trigger [--socket PATH] handoff [BINARY] | status`:
//!   the client of a running daemon's trigger socket ([`trigger`]).
#![deny(unsafe_code)]

mod config;
mod daemon;
mod listeners;
mod notify;
mod oneshot;
mod preflight;
mod probe;
mod trigger;

use clap::Parser;

fn main() {
    if let Err(e) = handoff::crash::check_env() {
        eprintln!("handoff-supervisor: {e}");
        std::process::exit(oneshot::EXIT_ERROR);
    }
    handoff::events::init_from_env();
    // The subcommands are dispatched by hand so the one-shot command's
    // interface (flags, `--` and the binary, help, exit codes) stays exactly
    // what it was: its first argument is always a flag.
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "handoff-supervisor".into());
    let rest: Vec<_> = args.collect();
    let code = match rest.first().and_then(|a| a.to_str()) {
        Some("daemon") => daemon::run(daemon::DaemonCli::parse_from(
            std::iter::once(program).chain(rest.into_iter().skip(1)),
        )),
        Some("trigger") => trigger::run_client(trigger::TriggerCli::parse_from(
            std::iter::once(program).chain(rest.into_iter().skip(1)),
        )),
        _ => oneshot::run(oneshot::Cli::parse()),
    };
    std::process::exit(code);
}
