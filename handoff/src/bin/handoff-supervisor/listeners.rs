//! The listening sockets the supervisor holds for as long as it runs: bound
//! from the command line or the config file, or inherited through
//! `LISTEN_FDS` (systemd socket activation, `systemd-socket-activate`, a
//! harness).

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Mode of a Unix-socket listener the daemon binds: connectable by every
/// user, as systemd's `SocketMode=` default; restrict access with the
/// directory's permissions.
pub const UNIX_LISTENER_MODE: u32 = 0o666;

/// One listening socket: TCP, or a Unix stream socket.
pub enum Socket {
    /// `host:port`.
    Tcp(TcpListener),
    /// A path.
    Unix(UnixListener),
}

impl Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Unix(l) => l.as_raw_fd(),
        }
    }

    fn address(&self) -> String {
        match self {
            Socket::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string()),
            Socket::Unix(l) => unix_address(l),
        }
    }

    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Socket::Tcp(l) => Socket::Tcp(l.try_clone()?),
            Socket::Unix(l) => Socket::Unix(l.try_clone()?),
        })
    }
}

/// Where a listening socket is bound, to match it against the config.
enum Local {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Local::Tcp(a) => write!(f, "{a}"),
            Local::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The listening sockets, kept open until the process exits.
pub enum Listeners {
    /// Received through `LISTEN_FDS`, named by `LISTEN_FDNAMES`.
    Inherited(Vec<(String, OwnedFd)>),
    /// Bound by this process.
    Bound(Vec<(String, Socket)>),
    /// Copied out of a running incumbent (`pidfd_getfd`): the same sockets,
    /// so their accept queues never closed.
    Adopted(Vec<(String, Socket)>),
}

impl Listeners {
    /// Inherited listeners when the environment carries `LISTEN_FDS`, else
    /// bind `specs` (`name`, `host:port`). Giving both is an error: `what`
    /// names where `specs` came from, for the message.
    pub fn take(specs: &[(String, String)], what: &str) -> Result<Self, String> {
        if let Some(inherited) = Self::inherited()? {
            if !specs.is_empty() {
                return Err(format!(
                    "listeners are inherited through LISTEN_FDS; drop {what} (or start \
                     without socket activation)"
                ));
            }
            return Ok(inherited);
        }
        Self::bind(specs, what)
    }

    /// The listeners of `LISTEN_FDS`, taken and cleared from the
    /// environment; `None` when it carries none. Call before any thread
    /// exists (see [`handoff::fd::take_handoff_env`]).
    pub fn inherited() -> Result<Option<Self>, String> {
        if std::env::var_os("LISTEN_FDS").is_none() {
            return Ok(None);
        }
        let (fds, control) = handoff::fd::take_handoff_env()
            .map_err(|e| format!("cannot take the inherited listeners: {e}"))?;
        if control.is_some() {
            return Err("HANDOFF_ROLE=successor is set: a supervisor is never a successor".into());
        }
        Ok(Some(Listeners::Inherited(fds)))
    }

    /// Bind each `(name, address)`: `host:port` (std sets `SO_REUSEADDR`),
    /// or a Unix socket path (see [`bind_unix`]).
    pub fn bind(specs: &[(String, String)], what: &str) -> Result<Self, String> {
        specs
            .iter()
            .map(|(name, addr)| {
                if let Some(path) = crate::config::unix_path(addr) {
                    return bind_unix(path)
                        .map(|l| (name.clone(), Socket::Unix(l)))
                        .map_err(|e| format!("cannot bind {what} {name}={addr}: {e}"));
                }
                TcpListener::bind(addr.as_str())
                    .map(|l| (name.clone(), Socket::Tcp(l)))
                    .map_err(|e| {
                        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                            ": another process listens there; stop it, or pick another address"
                        } else {
                            ""
                        };
                        format!("cannot bind {what} {name}={addr}: {e}{hint}")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Listeners::Bound)
    }

    /// Copy the listeners `specs` (`name`, address) out of the running
    /// process `incumbent`: each is the listening socket in its FD table
    /// bound to that address (with port 0, to that IP on any port, which
    /// must then be unique; a Unix socket by its path). The copies are the
    /// same sockets (`pidfd_getfd` duplicates the open file description), so
    /// clients queued on them are never refused. `what` names where `specs` came from.
    pub fn adopt(
        incumbent: &handoff::fd::PidFd,
        specs: &[(String, String)],
        what: &str,
    ) -> Result<Self, String> {
        let pid = incumbent.pid();
        let listening = listening_sockets_of(incumbent)?;
        let mut adopted = Vec::with_capacity(specs.len());
        for (name, addr) in specs {
            let unix = crate::config::unix_path(addr);
            let wanted: Vec<SocketAddr> = match unix {
                Some(_) => Vec::new(),
                None => addr
                    .to_socket_addrs()
                    .map_err(|e| format!("{what} {name}={addr}: not an address: {e}"))?
                    .collect(),
            };
            let matches: Vec<&(Local, Socket)> = listening
                .iter()
                .filter(|(local, _)| match (local, unix) {
                    (Local::Unix(path), Some(want)) => path == want,
                    (Local::Tcp(local), None) => wanted.iter().any(|w| {
                        w.ip() == local.ip() && (w.port() == 0 || w.port() == local.port())
                    }),
                    _ => false,
                })
                .collect();
            let listener = match matches.as_slice() {
                [(_, one)] => one
                    .try_clone()
                    .map_err(|e| format!("cannot duplicate the adopted {name}: {e}"))?,
                // A Unix socket the incumbent does not hold (it never took
                // that listener) has no queue left: bind it afresh, which
                // fails if anything else listens there.
                [] if let Some(path) = unix => bind_unix(path)
                    .map(Socket::Unix)
                    .map_err(|e| format!("cannot bind {what} {name}={addr}: {e}"))?,
                [] => {
                    let held: Vec<String> = listening.iter().map(|(a, _)| a.to_string()).collect();
                    return Err(format!(
                        "incumbent pid {pid} holds no listening socket on {what} {name}={addr} \
                         (it listens on {held:?}): was the config changed while it ran? Stop \
                         it, or restore the address it was started with"
                    ));
                }
                several => {
                    let held: Vec<String> = several.iter().map(|(a, _)| a.to_string()).collect();
                    return Err(format!(
                        "incumbent pid {pid} listens on several sockets matching {what} \
                         {name}={addr} ({held:?}): give the listener a fixed port"
                    ));
                }
            };
            adopted.push((name.clone(), listener));
        }
        Ok(Listeners::Adopted(adopted))
    }

    /// `(name, fd)` in FD order, for [`handoff::Supervisor::with_listener`].
    pub fn named_fds(&self) -> Vec<(String, RawFd)> {
        match self {
            Listeners::Inherited(v) => v.iter().map(|(n, f)| (n.clone(), f.as_raw_fd())).collect(),
            Listeners::Bound(v) | Listeners::Adopted(v) => {
                v.iter().map(|(n, l)| (n.clone(), l.as_raw_fd())).collect()
            }
        }
    }

    /// The names, in FD order.
    pub fn names(&self) -> Vec<String> {
        self.named_fds().into_iter().map(|(n, _)| n).collect()
    }

    /// True when the listeners came through `LISTEN_FDS`.
    pub fn is_inherited(&self) -> bool {
        matches!(self, Listeners::Inherited(_))
    }

    /// True when the listeners were copied out of a running incumbent.
    pub fn is_adopted(&self) -> bool {
        matches!(self, Listeners::Adopted(_))
    }

    /// `(name, local address)` of each listener, for `status`.
    pub fn addresses(&self) -> Vec<(String, String)> {
        match self {
            Listeners::Inherited(v) => v
                .iter()
                .map(|(n, f)| (n.clone(), local_address(f)))
                .collect(),
            Listeners::Bound(v) | Listeners::Adopted(v) => {
                v.iter().map(|(n, l)| (n.clone(), l.address())).collect()
            }
        }
    }
}

/// Every listening TCP or Unix-path socket in the FD table of `process`,
/// once each (a socket open at several FD numbers is one socket), copied
/// into ours.
fn listening_sockets_of(process: &handoff::fd::PidFd) -> Result<Vec<(Local, Socket)>, String> {
    let pid = process.pid();
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {dir} (incumbent pid {pid}): {e}"))?;
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // `socket:[inode]`; the FD may be gone by now, which is fine.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if !target.starts_with("socket:[") || !seen.insert(target) {
            continue;
        }
        let copy = match process.take_fd(fd) {
            Ok(copy) => copy,
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue, // closed meanwhile
            Err(e) => return Err(take_fd_error(pid, fd, &e)),
        };
        let listening = nix::sys::socket::getsockopt(&copy, nix::sys::socket::sockopt::AcceptConn)
            .unwrap_or(false);
        if !listening {
            continue;
        }
        let domain = nix::sys::socket::getsockopt(&copy, nix::sys::socket::sockopt::SockType)
            .ok()
            .filter(|t| *t == nix::sys::socket::SockType::Stream)
            .and_then(|_| {
                nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(copy.as_raw_fd())
                    .ok()
            })
            .and_then(|a| nix::sys::socket::SockaddrLike::family(&a));
        match domain {
            Some(nix::sys::socket::AddressFamily::Unix) => {
                let listener = UnixListener::from(copy);
                if let Some(path) = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                {
                    found.push((Local::Unix(path), Socket::Unix(listener)));
                }
            }
            Some(_) => {
                let listener = TcpListener::from(copy);
                if let Ok(local) = listener.local_addr() {
                    found.push((Local::Tcp(local), Socket::Tcp(listener)));
                }
            }
            None => {}
        }
    }
    Ok(found)
}

/// Bind a Unix stream listener at `path`, mode [`UNIX_LISTENER_MODE`]. A
/// socket file nobody listens on (left by a daemon that was stopped) is
/// replaced; one that answers, or a file that is not a socket, is an error.
pub fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    stale_unix_socket(path)?;
    let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_LISTENER_MODE))
        .map_err(|e| format!("cannot set mode {UNIX_LISTENER_MODE:o} on it: {e}"))?;
    Ok(listener)
}

/// Remove `path` when it is a socket nobody listens on; `Err` when it is in
/// use or not a socket.
pub fn stale_unix_socket(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
        Ok(m) if !m.file_type().is_socket() => {
            Err("the path exists and is not a socket: remove it, or pick another path".into())
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err("another process listens there: stop it, or pick another path".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket: {e}"))
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

/// `unix:<path>` of a Unix listener.
fn unix_address(listener: &UnixListener) -> String {
    match listener.local_addr() {
        Ok(a) => a.as_pathname().map_or_else(
            || "unix (unnamed)".into(),
            |p| format!("unix:{}", p.display()),
        ),
        Err(e) => format!("unknown ({e})"),
    }
}

/// What to do when `pidfd_getfd` is refused.
fn take_fd_error(pid: u32, fd: RawFd, e: &std::io::Error) -> String {
    let what = format!("cannot copy FD {fd} out of incumbent pid {pid} (pidfd_getfd: {e})");
    match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "{what}: the daemon needs ptrace access to the incumbent to adopt its listeners: \
             run it as root or with CAP_SYS_PTRACE (or kernel.yama.ptrace_scope=0 for the same \
             uid), or use socket activation so the listeners outlive the daemon"
        ),
        Some(libc::ENOSYS) => format!(
            "{what}: adopting an incumbent's listeners needs Linux 5.6 or later; use socket \
             activation, or stop the incumbent before starting the daemon"
        ),
        _ => what,
    }
}

/// The local address of an inherited socket: TCP, or a Unix socket path.
fn local_address(fd: &OwnedFd) -> String {
    let Ok(copy) = fd.try_clone() else {
        return "unknown".into();
    };
    match TcpListener::from(copy).local_addr() {
        Ok(a) => a.to_string(),
        Err(_) => match fd.try_clone() {
            Ok(copy) => unix_address(&UnixListener::from(copy)),
            Err(e) => format!("unknown ({e})"),
        },
    }
}
