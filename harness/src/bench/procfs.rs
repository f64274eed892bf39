//! What a long-lived process holds, read from `/proc`: open file
//! descriptors (by kind), resident memory and threads.

use std::io;

use serde::Serialize;

/// One look at a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessSample {
    /// The process.
    pub pid: u32,
    /// Open file descriptors (`/proc/<pid>/fd`), the sampler's own
    /// directory handle excluded.
    pub fds: usize,
    /// Of which sockets.
    pub fd_sockets: usize,
    /// Of which pipes.
    pub fd_pipes: usize,
    /// Of which anything else (files, anonymous inodes).
    pub fd_other: usize,
    /// `VmRSS` from `/proc/<pid>/status`, KiB.
    pub rss_kib: u64,
    /// Of which anonymous memory (`RssAnon`: heap, stacks), KiB.
    pub rss_anon_kib: u64,
    /// Of which file-backed pages (`RssFile`: the binary and libraries, as
    /// code paths are first run), KiB.
    pub rss_file_kib: u64,
    /// `Threads` from `/proc/<pid>/status`.
    pub threads: u64,
}

/// Sample `pid` (this process when it is our own pid).
pub fn sample(pid: u32) -> io::Result<ProcessSample> {
    let own = pid == std::process::id();
    let dir = if own {
        "/proc/self/fd".to_string()
    } else {
        format!("/proc/{pid}/fd")
    };
    let mut out = ProcessSample {
        pid,
        ..Default::default()
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        // A descriptor closed between readdir and readlink is gone: skip it.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            entries.push(target.to_string_lossy().into_owned());
        }
    }
    for target in &entries {
        classify(target, &mut out);
    }
    if own {
        // read_dir's own handle on /proc/self/fd shows up in the listing.
        out.fds = out.fds.saturating_sub(1);
        out.fd_other = out.fd_other.saturating_sub(1);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    out.rss_kib = status_field(&status, "VmRSS:").unwrap_or(0);
    out.rss_anon_kib = status_field(&status, "RssAnon:").unwrap_or(0);
    out.rss_file_kib = status_field(&status, "RssFile:").unwrap_or(0);
    out.threads = status_field(&status, "Threads:").unwrap_or(0);
    Ok(out)
}

fn classify(target: &str, out: &mut ProcessSample) {
    out.fds += 1;
    if target.starts_with("socket:") {
        out.fd_sockets += 1;
    } else if target.starts_with("pipe:") {
        out.fd_pipes += 1;
    } else {
        out.fd_other += 1;
    }
}

/// The first number after `name` in a `/proc/<pid>/status` text (pure).
pub fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        let s = "Name:\tx\nVmRSS:\t   1234 kB\nThreads:\t7\n";
        assert_eq!(status_field(s, "VmRSS:"), Some(1234));
        assert_eq!(status_field(s, "Threads:"), Some(7));
        assert_eq!(status_field(s, "VmHWM:"), None);
    }

    #[test]
    fn own_process_has_stdio_and_memory() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.threads >= 1);
        assert_eq!(s.fds, s.fd_sockets + s.fd_pipes + s.fd_other);
    }
}
