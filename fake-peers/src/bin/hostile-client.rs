//! `hostile-client <control-socket>`: connect to an incumbent's control
//! socket as whatever user runs it, read the first frame, and print one line
//! on stdout saying what came:
//!
//! - `refused <reason>` for a `Refused` message,
//! - `hello <pid>` for a `Hello`,
//! - `message <name>` for any other message,
//! - `error <error>` when the connection or the read failed (for example
//!   `Permission denied` when the socket file's mode keeps this user out).
//!
//! The hostile-peer suite runs it as another uid (`nobody`) to check that
//! the incumbent refuses a supervisor of another uid (`SO_PEERCRED`). Exits 0
//! whenever it printed a line, 2 on bad usage.
#![forbid(unsafe_code)]

use std::os::unix::net::UnixStream;
use std::time::Duration;

use handoff::Message;
use handoff::frame::read_message;
use handoff::protocol::short_name;

/// Bound on the wait for the first frame.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: hostile-client <control-socket>");
        std::process::exit(2);
    };
    let line = match UnixStream::connect(&path) {
        Err(e) => format!("error connect: {e}"),
        Ok(mut stream) => {
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            match read_message(&mut stream) {
                Ok((_, Message::Refused { reason })) => format!("refused {reason}"),
                Ok((_, Message::Hello { pid, .. })) => format!("hello {pid}"),
                Ok((_, other)) => format!("message {}", short_name(&other)),
                Err(e) => format!("error read: {e}"),
            }
        }
    };
    println!("{line}");
}
