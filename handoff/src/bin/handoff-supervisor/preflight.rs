//! What the daemon would fail on at start or at its first handoff, found
//! before it runs: `daemon --check` reports all of it, and `daemon` refuses
//! to start on any of it (exit 3) rather than failing later, or restarting a
//! service that can never start.
//!
//! Each problem names the config key, the value and what to do. The checks
//! touch the system as the daemon would (resolve and bind each listener and
//! release it, create and remove a file in the journal's directory, look up
//! and stat the binary), and change nothing.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::config::DaemonConfig;

/// The problems found in `config`, in config order; empty when there are
/// none. `bind_listeners`: try each `[listeners]` address (false when the
/// listeners are inherited, or already held).
pub fn problems(config: &DaemonConfig, bind_listeners: bool) -> Vec<String> {
    let mut found = Vec::new();
    found.extend(listener_problems(config, bind_listeners));
    // The daemon binds the trigger socket; the service binds the control
    // socket (perhaps as another user): its directory must only exist.
    for (key, path, writable) in [
        ("control_socket", &config.control_socket, false),
        ("trigger_socket", &config.trigger_socket, true),
    ] {
        if let Err(why) = socket_directory(path, writable) {
            found.push(format!("{key} = {:?}: {why}", path.display().to_string()));
        }
    }
    if let Some(journal) = &config.journal
        && let Err(why) = journal_directory(journal)
    {
        found.push(format!(
            "journal = {:?}: {why}",
            journal.display().to_string()
        ));
    }
    if let Err(why) = executable(&config.binary) {
        found.push(format!(
            "service.binary = {:?}: {why}",
            config.binary.display().to_string()
        ));
    }
    found
}

/// The resolved addresses of each listener; an unresolvable one, a
/// duplicate or (with `bind`) one that cannot be bound is a problem.
fn listener_problems(config: &DaemonConfig, bind: bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut seen: Vec<(String, SocketAddr)> = Vec::new();
    let mut seen_paths: Vec<(String, &Path)> = Vec::new();
    for (name, addr) in &config.listeners {
        let key = format!("listeners.{name} = {addr:?}");
        if let Some(path) = crate::config::unix_path(addr) {
            if let Some((other, _)) = seen_paths.iter().find(|(_, p)| *p == path) {
                found.push(format!(
                    "{key}: the same path as listeners.{other}: each listener needs its own"
                ));
                continue;
            }
            seen_paths.push((name.clone(), path));
            if let Err(why) = socket_directory(path, true) {
                found.push(format!("{key}: {why}"));
            } else if bind && let Err(why) = unix_listener_free(path, &config.control_socket) {
                found.push(format!("{key}: {why}"));
            }
            continue;
        }
        let resolved: Vec<SocketAddr> = match addr.to_socket_addrs() {
            Ok(r) => r.collect(),
            Err(e) => {
                found.push(format!(
                    "{key}: cannot resolve it ({e}): give \"host:port\""
                ));
                continue;
            }
        };
        let Some(first) = resolved.first().copied() else {
            found.push(format!("{key}: resolves to no address"));
            continue;
        };
        if first.port() != 0 {
            if let Some((other, _)) = seen.iter().find(|(_, a)| resolved.contains(a)) {
                found.push(format!(
                    "{key}: the same address as listeners.{other}: each listener needs its own"
                ));
                continue;
            }
            seen.push((name.clone(), first));
        }
        if !bind {
            continue;
        }
        match TcpListener::bind(resolved.as_slice()) {
            Ok(_released) => {}
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                if UnixStream::connect(&config.control_socket).is_err() {
                    found.push(format!(
                        "{key}: the port is in use ({e}) and no service answers on \
                         control_socket: stop the process that holds it, or pick another port"
                    ));
                }
                // Else the running service holds it: a daemon started now
                // adopts it with its listeners.
            }
            Err(e) => found.push(format!("{key}: cannot bind it: {e}")),
        }
    }
    found
}

/// A Unix listener's path is free (absent, or a socket nobody listens on,
/// which the start replaces), or held by the running service (which a
/// daemon started now adopts). Changes nothing.
fn unix_listener_free(path: &Path, control_socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot look at it: {e}")),
        Ok(m) if !m.file_type().is_socket() => {
            Err("the path exists and is not a socket: remove it, or pick another path".into())
        }
        Ok(_) => match UnixStream::connect(path) {
            Err(_) => Ok(()),
            Ok(_) if UnixStream::connect(control_socket).is_ok() => Ok(()),
            Ok(_) => Err(
                "a process listens there and no service answers on control_socket: stop it, \
                 or pick another path"
                    .into(),
            ),
        },
    }
}

/// The directory a socket is bound in must exist (and, when we bind it, be
/// writable).
fn socket_directory(socket: &Path, writable: bool) -> Result<(), String> {
    let dir = parent(socket);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() && !writable => Ok(()),
        Ok(m) if m.is_dir() => nix::unistd::access(
            dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .map_err(|e| {
            format!(
                "its directory {} is not writable ({e}): fix its permissions",
                dir.display()
            )
        }),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(e) => Err(format!(
            "its directory {} cannot be used ({e}): create it first",
            dir.display()
        )),
    }
}

/// The journal is replaced atomically in its directory (temporary file,
/// fsync, rename, directory fsync): that directory must be a real, writable
/// one. Tried for real, with a file created and removed.
pub fn journal_directory(journal: &Path) -> Result<(), String> {
    let dir = parent(journal);
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "its directory {} cannot be used ({e}): create it, or set journal elsewhere",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a directory: set journal to a file in a directory",
            dir.display()
        ));
    }
    if let Ok(fs) = nix::sys::statfs::statfs(dir)
        && matches!(
            fs.filesystem_type(),
            nix::sys::statfs::PROC_SUPER_MAGIC | nix::sys::statfs::SYSFS_MAGIC
        )
    {
        return Err(format!(
            "{} is in a kernel file system (/proc or /sys), where no file can be kept: \
             set journal on a disk (e.g. under /var/lib)",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".handoff-check.{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|f| f.sync_all());
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| {
        format!(
            "cannot write in its directory {} ({e}): make it writable for this user, or set \
             journal elsewhere",
            dir.display()
        )
    })
}

/// `binary` (looked up in `PATH` without a `/`, as the spawn does) is an
/// executable regular file. The error says which file and why.
pub fn executable(binary: &Path) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if binary.components().count() > 1 {
        vec![binary.to_path_buf()]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(binary))
            .collect()
    };
    let mut last = format!(
        "not found in PATH ({})",
        std::env::var("PATH").unwrap_or_default()
    );
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(m) if !m.is_file() => last = format!("{} is not a file", candidate.display()),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                last = format!(
                    "{} is not executable (mode {:o}): chmod +x it",
                    candidate.display(),
                    m.permissions().mode() & 0o7777
                )
            }
            Ok(_) => match nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK) {
                Ok(()) => return Ok(candidate),
                Err(e) => {
                    last = format!(
                        "{} cannot be executed by this user: {e}",
                        candidate.display()
                    )
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound && binary.components().count() <= 1 => {}
            Err(e) => last = format!("{}: {e}", candidate.display()),
        }
    }
    Err(last)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
