//! The kernel's view, read from `/proc`: which processes a fixture started,
//! which FDs they hold, who holds which `flock`, which path a Unix socket is
//! bound to.
//!
//! Parsers are pure functions over the text of a `/proc` file; the readers
//! around them are thin. A process that vanishes while it is being read is
//! simply not listed: every reader tolerates `ENOENT`/`ESRCH`.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of `/proc/<pid>/stat`, the parts the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The process.
    pub pid: u32,
    /// Its parent.
    pub ppid: u32,
    /// State letter: `R`, `S`, `D`, `Z` (zombie), `T`, `X` (dead), ...
    pub state: char,
    /// `comm`, up to 15 bytes.
    pub comm: String,
}

impl ProcStat {
    /// Not a zombie and not dead: the process still runs code.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parse `/proc/<pid>/stat`. `comm` may contain spaces and parentheses, so
/// it is delimited by the first `(` and the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        state,
        comm,
    })
}

/// Every process visible in `/proc`.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let text = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        parse_stat(&text)
    })
    .collect()
}

/// The processes below `root` in the process tree (not `root` itself).
pub fn descendants(root: u32, all: &[ProcStat]) -> Vec<ProcStat> {
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child.pid) {
                out.push((*child).clone());
                stack.push(child.pid);
            }
        }
    }
    out
}

/// True when `/proc/<pid>/environ` contains the `KEY=value` entry exactly.
pub fn environ_contains(pid: u32, entry: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(bytes) => bytes.split(|b| *b == 0).any(|e| e == entry.as_bytes()),
        Err(_) => false,
    }
}

/// Live descendants of this process whose initial environment carries
/// `marker` (`KEY=value`): every process a fixture started, directly or
/// through a supervisor, wherever it has been reparented.
pub fn marked_live_processes(marker: &str) -> Vec<ProcStat> {
    let all = all_processes();
    descendants(std::process::id(), &all)
        .into_iter()
        .filter(|p| p.is_live() && environ_contains(p.pid, marker))
        .collect()
}

/// `(fd number, readlink target)` of every open FD of `pid`.
pub fn fd_targets(pid: u32) -> std::io::Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // An FD closed between readdir and readlink is just gone.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            out.push((fd, target.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    Ok(out)
}

/// The inode of a `socket:[<inode>]` FD target.
pub fn socket_inode_of_target(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The socket inode of one of our own FDs (as `/proc/*/fd` shows it).
pub fn socket_inode(fd: &impl AsRawFd) -> std::io::Result<u64> {
    let stat = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok(stat.st_ino)
}

/// One entry of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    /// `FLOCK`, `POSIX`, `OFDLCK`, `LEASE`, ...
    pub class: String,
    /// `WRITE` or `READ`.
    pub mode: String,
    /// The pid the kernel shows (the process that took it).
    pub pid: u32,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode of the locked file.
    pub inode: u64,
    /// A waiter (`->`), not a holder.
    pub blocked: bool,
}

/// Parse `/proc/locks`. Lines look like
/// `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`, waiters as
/// `1: -> FLOCK  ADVISORY  WRITE ...`.
pub fn parse_proc_locks(text: &str) -> Vec<LockEntry> {
    text.lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace().peekable();
            tokens.next()?; // "N:"
            let blocked = tokens.peek() == Some(&"->");
            if blocked {
                tokens.next();
            }
            let class = tokens.next()?.to_string();
            let _advisory = tokens.next()?;
            let mode = tokens.next()?.to_string();
            let pid = tokens.next()?.parse().ok()?;
            let mut dev = tokens.next()?.split(':');
            let dev_major = u32::from_str_radix(dev.next()?, 16).ok()?;
            let dev_minor = u32::from_str_radix(dev.next()?, 16).ok()?;
            let inode = dev.next()?.parse().ok()?;
            Some(LockEntry {
                class,
                mode,
                pid,
                dev_major,
                dev_minor,
                inode,
                blocked,
            })
        })
        .collect()
}

/// Read `/proc/locks` in one `read(2)` where it fits. The kernel walks its
/// lock lists once per `read`; reading in small chunks while other
/// processes take and release locks can show one lock twice or miss one.
pub fn read_proc_locks() -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/locks")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = file.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The `flock` holders (not waiters) of the file at `path`, per the kernel.
///
/// `/proc/locks` is walked in chunks (one kernel buffer per `read`), so
/// while other processes take and release locks one lock may show twice or
/// not at all. Identical entries are merged (two exclusive flocks on one
/// inode cannot coexist), and the answer is the one two consecutive reads
/// agree on (bounded retries).
pub fn flock_holders(path: &Path) -> std::io::Result<Vec<LockEntry>> {
    let mut last = flock_holders_once(path)?;
    for _ in 0..8 {
        let again = flock_holders_once(path)?;
        if again == last {
            return Ok(again);
        }
        last = again;
    }
    Ok(last)
}

fn flock_holders_once(path: &Path) -> std::io::Result<Vec<LockEntry>> {
    let meta = std::fs::metadata(path)?;
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()) as u32,
        nix::sys::stat::minor(meta.dev()) as u32,
    );
    let text = read_proc_locks()?;
    let mut holders: Vec<LockEntry> = parse_proc_locks(&text)
        .into_iter()
        .filter(|l| {
            !l.blocked
                && l.class == "FLOCK"
                && l.inode == meta.ino()
                && l.dev_major == major
                && l.dev_minor == minor
        })
        .collect();
    let mut unique: Vec<LockEntry> = Vec::with_capacity(holders.len());
    for h in holders.drain(..) {
        if !unique.contains(&h) {
            unique.push(h);
        }
    }
    Ok(unique)
}

/// Parse `/proc/net/unix` into `inode → bound path` (bound sockets only;
/// abstract names start with `@`).
pub fn parse_proc_net_unix(text: &str) -> HashMap<u64, String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode [Path]
            let inode = tokens.get(6)?.parse().ok()?;
            let path = tokens.get(7)?;
            Some((inode, (*path).to_string()))
        })
        .collect()
}

/// `inode → path` of every bound Unix socket on the machine.
pub fn unix_socket_paths() -> HashMap<u64, String> {
    std::fs::read_to_string("/proc/net/unix")
        .map(|t| parse_proc_net_unix(&t))
        .unwrap_or_default()
}

/// What a long-lived process holds: open file descriptors (by kind),
/// resident memory and threads (the bench samples its processes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
pub fn sample(pid: u32) -> std::io::Result<ProcessSample> {
    let mut out = ProcessSample {
        pid,
        ..Default::default()
    };
    for (_, target) in fd_targets(pid)? {
        out.fds += 1;
        if target.starts_with("socket:") {
            out.fd_sockets += 1;
        } else if target.starts_with("pipe:") {
            out.fd_pipes += 1;
        } else {
            out.fd_other += 1;
        }
    }
    if pid == std::process::id() {
        // The listing's own handle on /proc/<pid>/fd shows up in it.
        out.fds = out.fds.saturating_sub(1);
        out.fd_other = out.fd_other.saturating_sub(1);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name| status_field(&status, name).unwrap_or(0);
    out.rss_kib = field("VmRSS:");
    out.rss_anon_kib = field("RssAnon:");
    out.rss_file_kib = field("RssFile:");
    out.threads = field("Threads:");
    Ok(out)
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
    fn stat_parses_even_with_parentheses_in_comm() {
        let s = parse_stat("4242 (fake (peer)) S 17 4242 4242 0 -1 4194560 ...").unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.ppid, 17);
        assert_eq!(s.state, 'S');
        assert_eq!(s.comm, "fake (peer)");
        assert!(s.is_live());
        assert!(!parse_stat("1 (x) Z 0").unwrap().is_live());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn descendants_follow_the_tree() {
        let p = |pid, ppid| ProcStat {
            pid,
            ppid,
            state: 'S',
            comm: String::new(),
        };
        let all = vec![p(10, 1), p(11, 10), p(12, 11), p(13, 1)];
        let mut d: Vec<u32> = descendants(10, &all).iter().map(|p| p.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12]);
    }

    #[test]
    fn proc_locks_parse_holders_and_waiters() {
        let text = "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF\n\
                    2: POSIX  ADVISORY  READ 77 08:02:42 0 EOF\n";
        let l = parse_proc_locks(text);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].pid, 1234);
        assert_eq!(
            (l[0].dev_major, l[0].dev_minor, l[0].inode),
            (0xfd, 1, 5678)
        );
        assert!(!l[0].blocked);
        assert!(l[1].blocked);
        assert_eq!(l[2].class, "POSIX");
        assert_eq!(l[2].mode, "READ");
    }

    #[test]
    fn kernel_flock_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let file = std::fs::File::create(&path).unwrap();
        assert!(flock_holders(&path).unwrap().is_empty());
        let _held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        let holders = flock_holders(&path).unwrap();
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].pid, std::process::id());
        assert_eq!(holders[0].mode, "WRITE");
    }

    #[test]
    fn unix_sockets_map_inode_to_path() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                    0000000000000000: 00000002 00000000 00010000 0001 01 31337 /tmp/x/control.sock\n\
                    0000000000000000: 00000002 00000000 00000000 0001 03 31338\n";
        let m = parse_proc_net_unix(text);
        assert_eq!(
            m.get(&31337).map(String::as_str),
            Some("/tmp/x/control.sock")
        );
        assert!(!m.contains_key(&31338));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let ino = socket_inode(&listener).unwrap();
        assert_eq!(
            unix_socket_paths().get(&ino).map(String::as_str),
            Some(path.to_str().unwrap())
        );
        let own = fd_targets(std::process::id()).unwrap();
        assert!(
            own.iter()
                .any(|(_, t)| socket_inode_of_target(t) == Some(ino))
        );
    }

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
