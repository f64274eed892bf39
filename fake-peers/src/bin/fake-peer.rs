//! `fake-peer`: a key-value service built on `handoff`, used as incumbent
//! and successor in tests. See `fake-peers/README.md`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use fake_peers::misbehaviour::HELP;
use fake_peers::peer::{EXIT_BAD_ENV, PeerConfig, die_with_parent_if_asked, parse_listen, run};

/// A key-value service that can be handed off with zero downtime.
///
/// Started with no handoff environment (or with listeners inherited through
/// LISTEN_FDS), it is the first incumbent: it takes the data-dir lock, binds
/// the control socket and serves. Spawned by a supervisor
/// (HANDOFF_ROLE=successor), it takes over from the incumbent.
///
/// Protocol on every listener, one request per line:
/// `PUT <key> <value>` -> `OK <seq>` (after fsync); `GET <key>` ->
/// `VALUE <value>` or `NOTFOUND`; `PING` -> `PONG <pid>`; else `ERR <reason>`.
#[derive(Debug, Parser)]
#[command(name = "fake-peer", version, after_help = HELP)]
struct Cli {
    /// Data directory: holds handoff.lock, handoff.pid and kv.log.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Path of the incumbent's Unix control socket (bound when this process
    /// becomes the incumbent).
    #[arg(long, value_name = "PATH")]
    control_socket: PathBuf,
    /// A listener to bind on a cold start that inherited none (repeatable).
    /// The main listener is named `kv`.
    #[arg(long = "listen", value_name = "NAME=HOST:PORT", value_parser = parse_listen)]
    listen: Vec<(String, String)>,
    /// Build identity announced in Hello.
    #[arg(long, value_name = "STR", default_value = concat!("fake-peer-", env!("CARGO_PKG_VERSION")))]
    build_id: String,
}

fn main() {
    if let Err(e) = die_with_parent_if_asked() {
        eprintln!("fake-peer: {e}");
        std::process::exit(EXIT_BAD_ENV);
    }
    if let Err(e) = handoff::crash::check_env() {
        eprintln!("fake-peer: {e}");
        std::process::exit(EXIT_BAD_ENV);
    }
    handoff::events::init_from_env();
    let cli = Cli::parse();
    let code = run(PeerConfig {
        data_dir: cli.data_dir,
        control_socket: cli.control_socket,
        listen: cli.listen,
        build_id: cli.build_id,
    });
    std::process::exit(code);
}
