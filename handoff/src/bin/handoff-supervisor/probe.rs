//! Asking the control socket who the incumbent is.
//!
//! A probe connects, reads the incumbent's `Hello` and closes the session
//! politely (shut down our side, wait for the incumbent to end its own), so
//! the next supervisor is not refused as a second session. Used after a cold
//! start (wait until the new process answers) and by the daemon at start-up
//! (is an incumbent already running that it should adopt?).

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use handoff::frame::read_message_within;
use handoff::{Error, Message, Side, SupervisorTimeouts};

/// What one connection to the control socket found.
#[derive(Debug)]
pub enum Answer {
    /// An incumbent answered `Hello` with this pid.
    Incumbent(u32),
    /// Nobody listens at the path (no socket file, or a stale one).
    Nobody,
    /// The incumbent refused the session (another one is open, or it is
    /// recovering from a lost supervisor): the reason it gave.
    Refused(String),
    /// Something answered, but not as an incumbent should.
    Unexpected(String),
}

/// Connect once and read the first frame, bounded by `timeout`.
pub fn ask(control_socket: &Path, timeout: Duration) -> Answer {
    let mut stream = match UnixStream::connect(control_socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Answer::Nobody;
        }
        Err(e) => return Answer::Unexpected(format!("connect: {e}")),
    };
    // The whole Hello within `timeout`, however slowly it drips in.
    match read_message_within(&mut stream, timeout) {
        Ok((
            _,
            Message::Hello {
                role: Side::Incumbent,
                pid,
                ..
            },
        )) => {
            close_politely(&mut stream, timeout);
            // The kernel's word on who listens, not the peer's.
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            {
                Ok(cred) if cred.pid() as u32 == pid => Answer::Incumbent(pid),
                Ok(cred) => Answer::Unexpected(format!(
                    "its Hello names pid {pid}, but the socket belongs to pid {}",
                    cred.pid()
                )),
                Err(e) => Answer::Unexpected(format!("cannot read SO_PEERCRED: {e}")),
            }
        }
        Ok((_, Message::Refused { reason })) => Answer::Refused(reason),
        Ok((_, other)) => Answer::Unexpected(format!(
            "got {} instead of Hello",
            handoff::protocol::short_name(&other)
        )),
        Err(Error::Io(e)) if handoff::util::is_timeout(&e) => {
            Answer::Unexpected("no Hello in time".into())
        }
        Err(e) => Answer::Unexpected(e.to_string()),
    }
}

/// End a probe session: shut down our side, then read until the incumbent
/// closes its own, at most `timeout` in all (a peer that keeps sending is cut
/// off there).
fn close_politely(stream: &mut UnixStream, timeout: Duration) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + timeout;
    let mut sink = [0u8; 64];
    loop {
        let left = handoff::util::remaining(deadline);
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            return;
        }
    }
}

/// Ask until the answer is not a refusal (the incumbent refuses a session
/// while another one closes, or while it recovers from a lost supervisor),
/// at most `timeout`; the last answer otherwise.
pub fn ask_until_not_refused(control_socket: &Path, timeout: Duration) -> Answer {
    const POLL_STEP: Duration = Duration::from_millis(10);
    let deadline = Instant::now() + timeout;
    let mut last = Answer::Nobody;
    let answered = handoff::util::poll_until(timeout, POLL_STEP, || {
        let left = handoff::util::remaining(deadline).max(Duration::from_millis(1));
        match ask(control_socket, left) {
            Answer::Refused(why) => {
                last = Answer::Refused(why);
                None
            }
            other => Some(other),
        }
    });
    answered.unwrap_or(last)
}

/// Poll the control socket until `child` answers `Hello` as the incumbent,
/// bounded by `timeouts.probe`; fails early if the child exits. The error
/// names the bound as `probe_setting` (the flag or config key that sets it).
pub fn wait_until_answers(
    child: &mut Child,
    control_socket: &Path,
    timeouts: &SupervisorTimeouts,
    probe_setting: &str,
) -> Result<(), String> {
    const POLL_STEP: Duration = Duration::from_millis(10);
    let deadline = Instant::now() + timeouts.probe;
    let pid = child.id();
    let mut last = String::from("never answered");
    // The child's listening is not announced to us: ask until it answers,
    // it exits, or the bound passes.
    let answered = handoff::util::poll_until(timeouts.probe, POLL_STEP, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(format!("exited ({status}) before answering")));
        }
        let left = handoff::util::remaining(deadline).max(Duration::from_millis(1));
        match ask(control_socket, left.min(timeouts.hello_read)) {
            Answer::Incumbent(answered) if answered == pid => return Some(Ok(())),
            Answer::Incumbent(answered) => {
                last = format!("pid {answered} answers on the socket, not the child");
            }
            Answer::Nobody => last = "nothing listens on the control socket yet".into(),
            Answer::Refused(why) => last = format!("refused: {why}"),
            Answer::Unexpected(why) => last = why,
        }
        None
    });
    answered.unwrap_or_else(|| {
        Err(format!(
            "did not answer within {probe_setting}={} ({last})",
            timeouts.probe.as_millis()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Serve one connection on `path`, answering `Hello` with `pid`.
    fn incumbent_claiming(path: &Path, pid: u32) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let hello = Message::Hello {
                role: Side::Incumbent,
                pid,
                build_id: Vec::new(),
                proto_min: 1,
                proto_max: 1,
                capabilities: Vec::new(),
            };
            handoff::frame::write_message(&mut s, 1, &hello).unwrap();
            let mut sink = [0u8; 16];
            // Until the probe hangs up.
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        })
    }

    #[test]
    fn a_hello_is_believed_only_when_the_kernel_agrees_on_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = incumbent_claiming(&path, std::process::id());
        match ask(&path, Duration::from_secs(5)) {
            Answer::Incumbent(pid) => assert_eq!(pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        server.join().unwrap();

        std::fs::remove_file(&path).unwrap();
        let server = incumbent_claiming(&path, 1);
        match ask(&path, Duration::from_secs(5)) {
            Answer::Unexpected(why) => assert!(why.contains("belongs to pid"), "{why}"),
            other => panic!("a Hello naming pid 1 was believed: {other:?}"),
        }
        server.join().unwrap();
    }
}
