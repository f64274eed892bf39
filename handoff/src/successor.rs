//! Role detection and the successor side, as a chain of types so an
//! out-of-order step does not compile:
//!
//! ```text
//! detect_role() -> Role::Successor(Successor)
//!   .handshake(build_id)        -> HandshookSuccessor   (Hello / HelloAck)
//!   .wait_for_begin()           -> BegunSuccessor       (Begin)
//!   .take_listener(..), .acquire_lock(..)
//!   .announce_and_bind(..)      -> Incumbent            (Ready, then bind)
//! ```
//!
//! `announce_and_bind` binds the control socket under a temporary name,
//! sends `Ready`, and only then renames the socket over the control path: an
//! abort before `Ready` never leaves the path pointing at a dead successor.
//! If the supervisor is gone before `Ready`, every step returns an error and
//! the flock the caller took is released when the caller drops it (the
//! caller then exits).

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::crash::points;
use crate::crash_here;
use crate::error::{Error, Result};
use crate::events;
use crate::fd;
use crate::frame::{read_frame, write_message};
use crate::incumbent::{
    Incumbent, IncumbentConfig, bind_temporary, discard_temporary, override_ms, publish_keeping_dir,
};
use crate::lock::DataDirLock;
use crate::protocol::{HandoffId, Message, PROTO_MAX, PROTO_MIN, ProtoVersion, Side, short_name};

/// What this process is, per its environment.
pub enum Role {
    /// Not spawned for a handoff: start from scratch, with any listeners
    /// inherited through `LISTEN_FDS` (socket activation, or a supervisor's
    /// cold start).
    ColdStart {
        /// Inherited listeners, by name, in FD order.
        listeners: Vec<(String, TcpListener)>,
    },
    /// Spawned by a supervisor to take over from the incumbent.
    Successor(Successor),
}

/// Read the handoff environment (`HANDOFF_ROLE`, `HANDOFF_SOCK_FD`,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), take the FDs it names, and
/// clear it so children do not inherit it when that is sound: see
/// [`fd::take_handoff_env`] (call it at start-up, before spawning threads,
/// for the clearing). Also validates `HANDOFF_CRASH_AT` and the successor's
/// `HANDOFF_*_MS` settings.
pub fn detect_role() -> Result<Role> {
    crate::crash::check_env()?;
    let (listeners, sock) = fd::take_handoff_env()?;
    match sock {
        None => Ok(Role::ColdStart {
            listeners: listeners
                .into_iter()
                .map(|(name, fd)| (name, TcpListener::from(fd)))
                .collect(),
        }),
        Some(sock) => Ok(Role::Successor(Successor {
            stream: UnixStream::from(sock),
            listeners: listeners.into_iter().map(|(n, f)| (n, Some(f))).collect(),
            config: SuccessorConfig::from_env()?,
            prebound: None,
        })),
    }
}

/// Timeouts of the successor side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessorConfig {
    /// Bound on the wait for `HelloAck`. Default 5 s.
    pub hello_timeout: Duration,
    /// Bound on the wait for `Begin` (the incumbent drains and seals first).
    /// Default 301 s: the supervisor's default deadline plus its wire slack.
    /// A supervisor that dies is seen at once as end-of-stream.
    pub begin_timeout: Duration,
    /// Bound on taking the flock after `Begin` (the incumbent released it
    /// before `SealComplete`, so this is normally instant). Default 2 s.
    pub lock_timeout: Duration,
}

impl Default for SuccessorConfig {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            begin_timeout: Duration::from_secs(301),
            lock_timeout: Duration::from_secs(2),
        }
    }
}

impl SuccessorConfig {
    /// The defaults, overridden by `HANDOFF_HELLO_TIMEOUT_MS`,
    /// `HANDOFF_BEGIN_TIMEOUT_MS` and `HANDOFF_LOCK_TIMEOUT_MS` where set.
    pub fn from_env() -> Result<Self> {
        let mut c = Self::default();
        override_ms(&mut c.hello_timeout, "HANDOFF_HELLO_TIMEOUT_MS")?;
        override_ms(&mut c.begin_timeout, "HANDOFF_BEGIN_TIMEOUT_MS")?;
        override_ms(&mut c.lock_timeout, "HANDOFF_LOCK_TIMEOUT_MS")?;
        Ok(c)
    }
}

/// What the successor tells the supervisor in `Ready`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// The successor's own health check passed.
    pub healthz_ok: bool,
    /// Revision of each shard it opened.
    pub advertised_revision_per_shard: Vec<u64>,
}

/// A successor before its handshake.
pub struct Successor {
    stream: UnixStream,
    listeners: Vec<(String, Option<OwnedFd>)>,
    config: SuccessorConfig,
    /// The control socket, bound under its temporary name before `Begin`
    /// ([`HandshookSuccessor::prepare_control_socket`]).
    prebound: Option<TemporarySocket>,
}

/// A control socket bound by `bind_temporary` and not yet published:
/// removed again if this process never gets to announce itself.
struct TemporarySocket {
    /// The final path it is meant for.
    for_path: PathBuf,
    /// `None` once handed over by [`TemporarySocket::take`].
    bound: Option<(UnixListener, PathBuf)>,
}

impl TemporarySocket {
    fn bind(socket_path: &Path) -> Result<Self> {
        Ok(Self {
            for_path: socket_path.to_owned(),
            bound: Some(bind_temporary(socket_path)?),
        })
    }

    /// The listener and its temporary path; no longer removed on drop.
    fn take(mut self) -> Option<(UnixListener, PathBuf)> {
        self.bound.take()
    }
}

impl Drop for TemporarySocket {
    fn drop(&mut self) {
        if let Some((_, temp)) = &self.bound {
            discard_temporary(temp);
        }
    }
}

/// A successor that has exchanged Hello/HelloAck: it may warm up (load
/// state that needs no flock, open connections) before `Begin`.
pub struct HandshookSuccessor {
    inner: Successor,
    version: ProtoVersion,
    handoff_id: HandoffId,
    build_id: Vec<u8>,
}

/// A successor told to take over: take the listeners, the flock, open the
/// sealed state, then announce readiness.
pub struct BegunSuccessor {
    inner: Successor,
    version: ProtoVersion,
    handoff_id: HandoffId,
    build_id: Vec<u8>,
}

impl Successor {
    /// Override the timeouts.
    pub fn with_config(mut self, config: SuccessorConfig) -> Self {
        self.config = config;
        self
    }

    /// Names of the inherited listeners, in FD order.
    pub fn listener_names(&self) -> Vec<String> {
        self.listeners.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Send `Hello` with this process's pid, read `HelloAck`.
    pub fn handshake(mut self, build_id: Vec<u8>) -> Result<HandshookSuccessor> {
        let sent = write_message(
            &mut self.stream,
            PROTO_MAX,
            &Message::Hello {
                role: Side::Successor,
                pid: std::process::id(),
                build_id: build_id.clone(),
                proto_min: PROTO_MIN,
                proto_max: PROTO_MAX,
                capabilities: Vec::new(),
            },
        );
        lost_if_err(sent, None)?;
        crash_here!(points::N_AFTER_HELLO_SENT);
        let timeout = self.config.hello_timeout;
        let (version, handoff_id) = match lost_if_err(
            read_frame(&mut self.stream, None, timeout, "HelloAck"),
            None,
        )?
        .1
        {
            Message::HelloAck {
                proto_version_chosen,
                handoff_id,
            } => (proto_version_chosen, handoff_id),
            other => {
                return Err(Error::UnexpectedMessage {
                    expected: "HelloAck",
                    got: short_name(&other),
                });
            }
        };
        if !(PROTO_MIN..=PROTO_MAX).contains(&version) {
            return Err(Error::VersionMismatch {
                ours_min: PROTO_MIN,
                ours_max: PROTO_MAX,
                theirs_min: version,
                theirs_max: version,
            });
        }
        crash_here!(points::N_AFTER_HELLO_ACK_RECV);
        tracing::info!(target: events::SUCCESSOR_HELLO, %handoff_id, proto_version = version, "handshake done");
        Ok(HandshookSuccessor {
            inner: self,
            version,
            handoff_id,
            build_id,
        })
    }
}

impl HandshookSuccessor {
    /// Start-up work that needs no flock: bind the control socket for
    /// `socket_path` now, under its private temporary name, so that
    /// [`BegunSuccessor::announce_and_bind`] with the same path only has to
    /// send `Ready` and rename it. Nothing can connect to it before that
    /// rename. Removed again if this successor never announces itself.
    pub fn prepare_control_socket(&mut self, socket_path: &Path) -> Result<()> {
        self.inner.prebound = Some(TemporarySocket::bind(socket_path)?);
        Ok(())
    }

    /// The handoff this successor belongs to.
    pub fn handoff_id(&self) -> HandoffId {
        self.handoff_id
    }

    /// Borrow an inherited listener's FD for warm-up (do not accept on it
    /// before `Begin`: the incumbent still serves).
    pub fn listener_fd(&self, name: &str) -> Option<&OwnedFd> {
        self.inner
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, f)| f.as_ref())
    }

    /// Wait for `Begin`. `Abort` is [`Error::Aborted`]; a vanished
    /// supervisor is [`Error::PeerClosed`]; silence past
    /// [`SuccessorConfig::begin_timeout`] is [`Error::Timeout`].
    pub fn wait_for_begin(mut self) -> Result<BegunSuccessor> {
        let id = self.handoff_id;
        let timeout = self.inner.config.begin_timeout;
        let msg = lost_if_err(
            read_frame(
                &mut self.inner.stream,
                Some((self.version, id)),
                timeout,
                "Begin",
            ),
            Some(id),
        )?
        .1;
        match msg {
            Message::Begin { .. } => {}
            Message::Abort { reason, .. } => {
                tracing::warn!(target: events::SUCCESSOR_ABORTED, handoff_id = %id, reason = %reason, "aborted before Begin");
                return Err(Error::Aborted(reason));
            }
            other => {
                return Err(Error::UnexpectedMessage {
                    expected: "Begin",
                    got: short_name(&other),
                });
            }
        }
        crash_here!(points::N_AFTER_BEGIN_RECV);
        tracing::info!(target: events::SUCCESSOR_BEGIN, handoff_id = %id, "begin");
        Ok(BegunSuccessor {
            inner: self.inner,
            version: self.version,
            handoff_id: id,
            build_id: self.build_id,
        })
    }
}

impl BegunSuccessor {
    /// The handoff this successor belongs to.
    pub fn handoff_id(&self) -> HandoffId {
        self.handoff_id
    }

    /// Names of the inherited listeners, in FD order.
    pub fn listener_names(&self) -> Vec<String> {
        self.inner.listener_names()
    }

    /// Take an inherited TCP listener by name.
    pub fn take_listener(&mut self, name: &str) -> Result<TcpListener> {
        self.take_listener_fd(name).map(TcpListener::from)
    }

    /// Take an inherited listener's FD by name (for non-TCP listeners).
    pub fn take_listener_fd(&mut self, name: &str) -> Result<OwnedFd> {
        let available = self.listener_names();
        self.inner
            .listeners
            .iter_mut()
            .find(|(n, _)| n == name)
            .and_then(|(_, f)| f.take())
            .ok_or_else(|| Error::NoSuchListener {
                name: name.to_string(),
                available,
            })
    }

    /// Take the data-dir flock the incumbent released before `SealComplete`
    /// (bounded by [`SuccessorConfig::lock_timeout`]).
    pub fn acquire_lock(&self, data_dir: &Path) -> Result<DataDirLock> {
        // The pid file is written once the new incumbent serves
        // (`Incumbent::serve`), not here where no process accepts.
        let lock = DataDirLock::acquire_within_unrecorded(
            data_dir,
            self.inner.config.lock_timeout,
            Duration::from_millis(5),
        )?;
        crash_here!(points::N_AFTER_FLOCK_TAKEN);
        tracing::info!(target: events::SUCCESSOR_FLOCK_TAKEN, handoff_id = %self.handoff_id, "flock taken");
        Ok(lock)
    }

    fn send_ready(&mut self, readiness: Readiness) -> Result<()> {
        let id = self.handoff_id;
        let listening_on = self.listener_names();
        let sent = write_message(
            &mut self.inner.stream,
            self.version,
            &Message::Ready {
                handoff_id: id,
                listening_on,
                healthz_ok: readiness.healthz_ok,
                advertised_revision_per_shard: readiness.advertised_revision_per_shard,
            },
        );
        lost_if_err(sent, Some(id))?;
        crash_here!(points::N_AFTER_READY_SENT);
        tracing::info!(target: events::SUCCESSOR_READY, handoff_id = %id, "ready sent");
        Ok(())
    }

    /// Send `Ready` without taking over the control socket (for services
    /// that are never handed off again). After `Ready` this process is the
    /// incumbent; its pid goes into `lock`'s pid file.
    pub fn announce_ready(mut self, readiness: Readiness, lock: &mut DataDirLock) -> Result<()> {
        self.send_ready(readiness)?;
        lock.record_holder_pid();
        Ok(())
    }

    /// Bind the control socket under a temporary name (mode 0600), send
    /// `Ready`, then rename the socket over `socket_path`: from here on this
    /// process is the incumbent and answers the next supervisor. `lock` is
    /// the flock from [`BegunSuccessor::acquire_lock`].
    pub fn announce_and_bind(
        mut self,
        readiness: Readiness,
        socket_path: &Path,
        lock: DataDirLock,
    ) -> Result<Incumbent> {
        let prebound = self
            .inner
            .prebound
            .take()
            .filter(|t| t.for_path == socket_path)
            .and_then(TemporarySocket::take);
        let (listener, temp) = match prebound {
            Some(bound) => bound,
            None => bind_temporary(socket_path)?,
        };
        crash_here!(points::N_AFTER_TEMP_BOUND);
        // Everything that can fail is done before `Ready`: once it is sent
        // the supervisor commits and the old incumbent exits, so a failure
        // after it would leave no writer at all.
        let before_ready = IncumbentConfig::from_env().and_then(|config| {
            check_rename_target(socket_path)?;
            Ok(config)
        });
        let config = match before_ready {
            Ok(config) => config,
            Err(e) => {
                discard_temporary(&temp);
                return Err(e);
            }
        };
        if let Err(e) = self.send_ready(readiness) {
            discard_temporary(&temp);
            drop(lock);
            return Err(e);
        }
        // Same directory (no EXDEV), a directory we just bound in, and a
        // target checked above: only another process interfering between
        // here and the check can make these fail.
        let leftover_dir = publish_keeping_dir(&temp, socket_path)?;
        crash_here!(points::N_AFTER_CONTROL_BOUND);
        tracing::info!(target: events::SUCCESSOR_BOUND, handoff_id = %self.handoff_id, path = %socket_path.display(), "control socket bound: incumbent now");
        Ok(Incumbent::from_parts(listener, socket_path, lock)?
            .with_leftover_dir(leftover_dir)
            .with_build_id(self.build_id)
            .with_config(config))
    }
}

/// The control path must be replaceable by a rename of our socket: absent,
/// or anything but a directory (rename(2) over a directory fails).
fn check_rename_target(socket_path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(socket_path) {
        Ok(m) if m.is_dir() => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            format!(
                "the control socket path {} is a directory: the new control socket cannot \
                 replace it",
                socket_path.display()
            ),
        ))),
        _ => Ok(()),
    }
}

/// Log a lost supervisor (before `Ready`) and pass the error on.
fn lost_if_err<T>(r: Result<T>, id: Option<HandoffId>) -> Result<T> {
    if let Err(e) = &r
        && (matches!(e, Error::PeerClosed(_) | Error::Io(_)) || e.is_timeout())
    {
        let id = id.map(|i| i.to_string()).unwrap_or_default();
        tracing::warn!(target: events::SUCCESSOR_SUPERVISOR_LOST, handoff_id = %id, error = %e, "lost the supervisor before Ready; giving up");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incumbent::publish;

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_prepared_control_socket_is_removed_unless_announced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let prepared = TemporarySocket::bind(&path).unwrap();
        let (_, temp) = prepared.bound.as_ref().unwrap();
        let temp = temp.clone();
        assert!(temp.exists());
        assert!(!path.exists(), "nothing is reachable at the path yet");
        drop(prepared);
        assert!(!temp.exists());
        assert!(!temp.parent().unwrap().exists());

        let prepared = TemporarySocket::bind(&path).unwrap();
        let (_listener, temp) = prepared.take().unwrap();
        assert!(temp.exists(), "taken: publishing it is the taker's job");
        publish(&temp, &path).unwrap();
        assert!(path.exists());
    }

    #[test]
    fn binding_sweeps_the_temporaries_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let litter = |pid: u32| {
            let d = dir.path().join(format!(".control.sock.tmp.{pid}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("s"), b"").unwrap();
            d
        };
        let dead = litter(dead_pid());
        let mut alive_child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let alive = litter(alive_child.id());
        let other = dir.path().join(".other.sock.tmp.1");
        std::fs::create_dir(&other).unwrap();

        let (_listener, temp) = bind_temporary(&path).unwrap();
        let _ = alive_child.kill();
        let _ = alive_child.wait();

        assert!(!dead.exists(), "a dead successor's socket is swept");
        assert!(alive.exists(), "a live process's is left alone");
        assert!(other.exists(), "another path's is left alone");
        assert!(temp.exists(), "our own is kept");
    }
}
