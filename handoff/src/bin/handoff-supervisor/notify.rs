//! `sd_notify(3)` without libsystemd: one datagram per state change to the
//! `AF_UNIX` socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace).
//!
//! Under `Type=notify` the daemon sends `READY=1` once the first incumbent
//! answers, `MAINPID=<its own pid>` with every state change (the daemon is
//! the unit's main process for its whole life, whichever child serves), a
//! one-line `STATUS=` that `systemctl status` shows, and `STOPPING=1` on
//! shutdown. Without `$NOTIFY_SOCKET` every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go, if anywhere.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. An unusable value is reported on stderr and
    /// notifications are dropped (systemd then times the start out, which
    /// names the problem in its own log too).
    pub fn from_env() -> Self {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { target: None };
        };
        match Self::connect(&value.to_string_lossy()) {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(e) => {
                eprintln!("handoff-supervisor: NOTIFY_SOCKET={value:?} is unusable: {e}");
                Self { target: None }
            }
        }
    }

    fn connect(value: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let addr = if let Some(name) = value.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if value.starts_with('/') {
            SocketAddr::from_pathname(value)?
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected an absolute path or @abstract-name",
            ));
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// True when notifications are sent somewhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Send `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!(error = %e, "sd_notify datagram not delivered");
        }
    }

    /// `READY=1`, `MAINPID` and a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&message(&["READY=1"], status));
    }

    /// `MAINPID` and a status line.
    pub fn status(&self, status: &str) {
        self.notify(&message(&[], status));
    }

    /// `STOPPING=1` and a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&message(&["STOPPING=1"], status));
    }
}

/// Build the datagram: `extra` lines, `MAINPID=<our pid>`, `STATUS=<status>`
/// (newlines in `status` would start new assignments, so they become
/// spaces). Pure.
pub fn message(extra: &[&str], status: &str) -> String {
    let mut lines: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    lines.push(format!("MAINPID={}", std::process::id()));
    lines.push(format!("STATUS={}", status.replace(['\n', '\r'], " ")));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_mainpid_and_a_one_line_status() {
        let m = message(&["READY=1"], "serving\npid 7");
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], "READY=1");
        assert_eq!(lines[1], format!("MAINPID={}", std::process::id()));
        assert_eq!(lines[2], "STATUS=serving pid 7");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Notifier::connect(path.to_str().unwrap()).unwrap()),
        };
        n.ready("up");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..len])
                .unwrap()
                .starts_with("READY=1\nMAINPID=")
        );
    }

    #[test]
    fn a_relative_path_is_rejected() {
        assert!(Notifier::connect("relative/sock").is_err());
    }
}
