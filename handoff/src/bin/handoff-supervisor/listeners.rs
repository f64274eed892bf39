//! The listening sockets the supervisor holds for as long as it runs: bound
//! from the command line or the config file, or inherited through
//! `LISTEN_FDS` (systemd socket activation, `systemd-socket-activate`, a
//! harness).

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

/// The listening sockets, kept open until the process exits.
pub enum Listeners {
    /// Received through `LISTEN_FDS`, named by `LISTEN_FDNAMES`.
    Inherited(Vec<(String, OwnedFd)>),
    /// Bound by this process.
    Bound(Vec<(String, TcpListener)>),
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

    /// Bind each `(name, host:port)` (std sets `SO_REUSEADDR`).
    pub fn bind(specs: &[(String, String)], what: &str) -> Result<Self, String> {
        specs
            .iter()
            .map(|(name, addr)| {
                TcpListener::bind(addr.as_str())
                    .map(|l| (name.clone(), l))
                    .map_err(|e| format!("cannot bind {what} {name}={addr}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Listeners::Bound)
    }

    /// `(name, fd)` in FD order, for [`handoff::Supervisor::with_listener`].
    pub fn named_fds(&self) -> Vec<(String, RawFd)> {
        match self {
            Listeners::Inherited(v) => v.iter().map(|(n, f)| (n.clone(), f.as_raw_fd())).collect(),
            Listeners::Bound(v) => v.iter().map(|(n, l)| (n.clone(), l.as_raw_fd())).collect(),
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

    /// `(name, local address)` of each listener, for `status`.
    pub fn addresses(&self) -> Vec<(String, String)> {
        match self {
            Listeners::Inherited(v) => v
                .iter()
                .map(|(n, f)| (n.clone(), local_address(f)))
                .collect(),
            Listeners::Bound(v) => v
                .iter()
                .map(|(n, l)| {
                    (
                        n.clone(),
                        l.local_addr()
                            .map_or_else(|e| format!("unknown ({e})"), |a| a.to_string()),
                    )
                })
                .collect(),
        }
    }
}

/// The local address of an inherited socket: TCP, or a Unix socket path.
fn local_address(fd: &OwnedFd) -> String {
    let Ok(copy) = fd.try_clone() else {
        return "unknown".into();
    };
    match TcpListener::from(copy).local_addr() {
        Ok(a) => a.to_string(),
        Err(_) => match fd
            .try_clone()
            .map(UnixListener::from)
            .and_then(|u| u.local_addr())
        {
            Ok(a) => a.as_pathname().map_or_else(
                || "unix (unnamed)".into(),
                |p| format!("unix:{}", p.display()),
            ),
            Err(e) => format!("unknown ({e})"),
        },
    }
}
