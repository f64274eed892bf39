//! `hostile-successor`: a successor that misbehaves on the control
//! socketpair, for the hostile-peer suite (`scenarios/tests/hostile.rs`).
//!
//! Spawned by a real supervisor (`HANDOFF_ROLE=successor`, its end of the
//! socketpair at `HANDOFF_SOCK_FD`), it does what `HOSTILE_MODE` says:
//!
//! | mode | what it sends in place of a valid `Hello` |
//! | --- | --- |
//! | `wrong-pid` | a `Hello` announcing pid + 1 (not the child the supervisor spawned) |
//! | `garbage` | bytes that are not a frame (an ASCII "header", then junk) |
//! | `silent` | nothing at all |
//! | `wrong-version` | a `Hello` supporting only versions 90..=99, in a version-99 frame |
//! | `unknown-variant` | a well-formed frame whose payload is `{"type":"Gossip",...}` |
//! | `huge-length` | a frame header announcing a 4 GiB payload |
//! | `report-fds` | nothing hostile: writes its open FDs to `HOSTILE_FD_REPORT`, then `exec`s `HOSTILE_EXEC` (the real successor, e.g. `fake-peer`) with its own arguments, so the FDs it inherited are what the real successor gets |
//!
//! After misbehaving it waits for the supervisor to close the socketpair
//! (or to kill it), at most `HOSTILE_MAX_MS` (default 30 000), then exits 4.
//! `HOSTILE_PID_FILE`, if set, receives its pid first thing, so a test can
//! check it was reaped.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use handoff::frame::write_message;
use handoff::{Message, Side};

/// Exit code after the supervisor hung up (or the wait bound passed).
const EXIT_DONE: i32 = 4;
/// Exit code for a usage or environment error.
const EXIT_USAGE: i32 = 2;

fn main() {
    if let Some(path) = std::env::var_os("HOSTILE_PID_FILE") {
        let _ = std::fs::write(path, std::process::id().to_string());
    }
    let mode = std::env::var("HOSTILE_MODE").unwrap_or_default();
    if mode == "report-fds" {
        report_fds_then_exec();
    }
    let max_wait = std::env::var("HOSTILE_MAX_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);

    let (_listeners, control) = match handoff::fd::take_handoff_env() {
        Ok((listeners, Some(control))) => (listeners, control),
        Ok((_, None)) => usage("not spawned as a successor: HANDOFF_ROLE/HANDOFF_SOCK_FD unset"),
        Err(e) => usage(&format!("bad handoff environment: {e}")),
    };
    let mut stream = UnixStream::from(control);
    let pid = std::process::id();
    let hello = |pid: u32, proto_min: u16, proto_max: u16| Message::Hello {
        role: Side::Successor,
        pid,
        build_id: b"hostile".to_vec(),
        proto_min,
        proto_max,
        capabilities: Vec::new(),
    };
    let sent = match mode.as_str() {
        "wrong-pid" => write_message(&mut stream, 1, &hello(pid.wrapping_add(1), 1, 1)),
        "garbage" => stream
            .write_all(b"this is not a frame\x00\xff\xfe")
            .map_err(Into::into),
        "silent" => Ok(()),
        "wrong-version" => write_message(&mut stream, 99, &hello(pid, 90, 99)),
        "unknown-variant" => {
            let payload = format!(r#"{{"type":"Gossip","pid":{pid}}}"#);
            let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&1u16.to_le_bytes());
            frame.extend_from_slice(payload.as_bytes());
            stream.write_all(&frame).map_err(Into::into)
        }
        "huge-length" => {
            let mut frame = u32::MAX.to_le_bytes().to_vec();
            frame.extend_from_slice(&1u16.to_le_bytes());
            stream.write_all(&frame).map_err(Into::into)
        }
        other => usage(&format!(
            "HOSTILE_MODE={other:?}: expected wrong-pid, garbage, silent, wrong-version, \
             unknown-variant, huge-length or report-fds"
        )),
    };
    if let Err(e) = sent {
        eprintln!("hostile-successor: sending in mode {mode} failed: {e}");
    }
    wait_for_hangup(&mut stream, max_wait);
    std::process::exit(EXIT_DONE);
}

/// Read (and drop) whatever the supervisor sends until it closes its end or
/// `max_wait` passes.
fn wait_for_hangup(stream: &mut UnixStream, max_wait: Duration) {
    let deadline = Instant::now() + max_wait;
    let mut sink = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "hostile-successor: the supervisor kept the socketpair open for {max_wait:?}"
            );
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Write one line per open FD (`<fd> <readlink target>`) to
/// `HOSTILE_FD_REPORT`, then become `HOSTILE_EXEC` with our arguments. The
/// environment (`LISTEN_*` naming our pid, `HANDOFF_*`) and the inherited
/// FDs carry over: `exec` keeps the pid and every FD without close-on-exec.
fn report_fds_then_exec() -> ! {
    // List first: nothing of ours is open yet but stdio (`open_fds` leaves
    // out the directory handle it reads through).
    let fds = handoff::fd::open_fds();
    let mut report = String::new();
    for fd in fds {
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        report.push_str(&format!("{fd} {target}\n"));
    }
    let Some(report_path) = std::env::var_os("HOSTILE_FD_REPORT") else {
        usage("HOSTILE_MODE=report-fds needs HOSTILE_FD_REPORT");
    };
    // Write to a temporary name and rename, so a reader never sees half.
    let temp = std::path::PathBuf::from(format!("{}.tmp", report_path.to_string_lossy()));
    if let Err(e) =
        std::fs::write(&temp, report).and_then(|()| std::fs::rename(&temp, &report_path))
    {
        usage(&format!("cannot write the FD report: {e}"));
    }
    let Some(program) = std::env::var_os("HOSTILE_EXEC") else {
        usage("HOSTILE_MODE=report-fds needs HOSTILE_EXEC");
    };
    let error = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .env_remove("HOSTILE_MODE")
        .exec();
    usage(&format!(
        "cannot exec {}: {error}",
        program.to_string_lossy()
    ))
}

fn usage(message: &str) -> ! {
    eprintln!("hostile-successor: {message}");
    std::process::exit(EXIT_USAGE)
}
