//! Small helpers shared by every role: clocks and timeout classification.

use std::io::ErrorKind;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in nanoseconds. The clock is system-wide, so values from
/// different processes on one machine are comparable: the harness merges
/// event logs on it.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// True for the error kinds a socket read timeout produces.
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Time left until `deadline`, or zero.
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Probe a condition that no kernel event announces (another process's
/// socket, flock, file or FD table) until `probe` yields a value, at most
/// `timeout`, pausing `step` between probes (never past the deadline).
/// `None` when the deadline passed first; the caller names what it waited
/// for. Where an event exists (a child's exit, a condition variable, a
/// readable socket), wait for that instead.
pub fn poll_until<T>(
    timeout: Duration,
    step: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        let left = remaining(deadline);
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(step.min(left));
    }
}

#[cfg(test)]
mod poll_tests {
    use super::*;

    #[test]
    fn poll_until_returns_the_first_value_and_gives_up_at_the_deadline() {
        let mut n = 0;
        let got = poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, Some(3));
        let started = Instant::now();
        let none: Option<()> =
            poll_until(Duration::from_millis(20), Duration::from_millis(5), || None);
        assert!(none.is_none());
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
