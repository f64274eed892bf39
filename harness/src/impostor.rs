//! A successor that lies about its pid.
//!
//! The fake peer always tells the truth, so "the supervisor checks that the
//! successor's `Hello` names the child it spawned" (DESIGN.md section 3)
//! needs a liar. Any binary embedding the harness becomes one when started
//! with `HARNESS_IMPOSTOR=1`: it takes the control socketpair from the
//! handoff environment, says `Hello` as a successor with pid 1, and then
//! gives up (exit 1) at the first frame after `HelloAck` or at end of
//! stream. The supervisor must refuse it at the handshake (`PidMismatch`);
//! a supervisor that does not check goes on to drain and seal the incumbent
//! for a successor it never verified.
//!
//! Call [`run_if_requested`] first thing in `main`, before any thread starts
//! (it reads and clears the handoff environment).

use std::os::unix::net::UnixStream;

use handoff::frame::{read_message, write_message};
use handoff::protocol::{Message, PROTO_MAX, PROTO_MIN, Side};

/// Environment variable that turns a process into the impostor.
pub const ENV_IMPOSTOR: &str = "HARNESS_IMPOSTOR";
/// The pid the impostor announces.
pub const LIED_PID: u32 = 1;

/// If `HARNESS_IMPOSTOR=1`, act as the impostor and exit; otherwise return.
pub fn run_if_requested() {
    if std::env::var_os(ENV_IMPOSTOR).as_deref() != Some(std::ffi::OsStr::new("1")) {
        return;
    }
    handoff::events::init_from_env();
    let code = match impersonate() {
        Ok(()) => 1,
        Err(e) => {
            eprintln!("impostor: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn impersonate() -> Result<(), String> {
    let (_listeners, control) =
        handoff::fd::take_handoff_env().map_err(|e| format!("handoff environment: {e}"))?;
    let control = control.ok_or("no HANDOFF_SOCK_FD: not spawned as a successor")?;
    let mut stream = UnixStream::from(control);
    write_message(
        &mut stream,
        PROTO_MAX,
        &Message::Hello {
            role: Side::Successor,
            pid: LIED_PID,
            build_id: b"impostor".to_vec(),
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            capabilities: vec![],
        },
    )
    .map_err(|e| format!("Hello: {e}"))?;
    // HelloAck (if the supervisor accepted the lie), then whatever comes
    // next: either way, give up.
    for _ in 0..2 {
        if read_message(&mut stream).is_err() {
            break;
        }
    }
    Ok(())
}
