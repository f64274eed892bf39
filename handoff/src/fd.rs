//! FD inheritance: listeners and the control socket cross `exec` here, and
//! nothing else does.
//!
//! This is the only module of the crate with `unsafe` code; every block says
//! why it is sound in a `// SAFETY:` comment.
//!
//! # The contract with the child
//!
//! A child spawned through [`pass_listener_fds_on_spawn`] (or
//! [`spawn_with_listeners`]) with `n` listeners and an optional `extra` FD
//! (the supervisor's end of the control socketpair) starts with:
//!
//! - listener `i` at FD `3 + i`, and `extra` at FD `3 + n`;
//! - `LISTEN_FDS=n`, `LISTEN_FDNAMES=name0:name1:...` and `LISTEN_PID=<its
//!   own pid>`, exactly as `sd_listen_fds(3)` defines them, so a successor
//!   written with libsystemd or the `listenfd` crate sees its listeners. With
//!   no listeners none of the three is set;
//! - no other FD above 2: everything from `3 + n + (extra ? 1 : 0)` up is
//!   close-on-exec when `execve` runs.
//!
//! `HANDOFF_ROLE` and `HANDOFF_SOCK_FD` are the caller's to set.
//!
//! # How, and why this way
//!
//! `LISTEN_PID` must name the child, whose pid exists only after `fork`. In
//! the child, between `fork` and `exec`, a multithreaded parent's child may
//! only call async-signal-safe functions: no allocation (another thread may
//! have held the allocator's lock at the fork), no `setenv`. So all the work
//! that allocates is done in the parent, and the child only runs syscalls on
//! memory prepared for it:
//!
//! 1. In the parent, [`pass_listener_fds_on_spawn`] builds the final `argv`
//!    and `envp` itself: the program (resolved through the child's `PATH`
//!    when it has no `/`, trying each candidate in order as `execvp` does),
//!    `cmd.get_args()`, and the parent's environment with `cmd.get_envs()`
//!    applied, minus any stale `LISTEN_*` (and any `HANDOFF_ROLE` /
//!    `HANDOFF_SOCK_FD` not set explicitly on `cmd`), plus `LISTEN_FDS`,
//!    `LISTEN_FDNAMES` and a preallocated `LISTEN_PID=` buffer with room for
//!    the digits.
//! 2. In the child (`pre_exec`, after std has set up stdio, the working
//!    directory and the signal mask): every source FD is first duplicated
//!    (`F_DUPFD_CLOEXEC`) above the highest target, so a source whose number
//!    is another's target cannot be clobbered; each copy is `dup2`ed onto its
//!    target (which clears close-on-exec there); every FD from the first
//!    free number up is marked close-on-exec with
//!    `close_range(first, ~0U, CLOSE_RANGE_CLOEXEC)` (Linux 5.11+), falling
//!    back to `fcntl` on each number below `RLIMIT_NOFILE`; `getpid()`'s
//!    digits are written into the preallocated buffer; and `execve` runs with
//!    the prebuilt pointer arrays. If every `execve` fails, the closure
//!    returns the error and `Command::spawn` reports it.
//!
//! FDs are marked close-on-exec rather than closed so std's own
//! close-on-exec pipe, which reports a failed `exec` to the parent, stays
//! open until `exec` succeeds.
//!
//! # Limits
//!
//! - The environment, arguments and program are snapshotted when
//!   [`pass_listener_fds_on_spawn`] is called: call it last, after every
//!   `env`, `arg` and `current_dir`, and only once per `Command`.
//!   `Command::env_clear` and `CommandExt::arg0` are not honoured (the
//!   `Command` does not expose them); argv\[0\] is the program as given.
//! - A source FD below 3 is read after std has installed the child's stdio,
//!   so pass one only with inherited stdio.
//! - If `execve` fails and std's internal error pipe happened to occupy one
//!   of the target numbers in the child, `dup2` replaced it and the failure
//!   shows as the child dying (status 127 or `SIGABRT`) rather than as an
//!   error from `spawn`. A successful `exec` is unaffected.
//!
//! # The receiving side
//!
//! [`parse_handoff_env`] is the pure parser; [`take_handoff_env`] applies it
//! to the real environment, takes ownership of the FDs and clears the
//! variables, like `sd_listen_fds(unset_environment = 1)`.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// The first inherited FD, `SD_LISTEN_FDS_START` in libsystemd.
pub const LISTEN_FDS_START: RawFd = 3;

/// The most listeners (plus the extra FD) passed to or accepted from a parent.
pub const MAX_LISTEN_FDS: usize = 1024;

/// The longest listener name `LISTEN_FDNAMES` may carry (systemd's limit).
pub const MAX_LISTEN_FDNAME_LEN: usize = 255;

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// `u32::MAX` has 10 digits; one more byte for the NUL.
const LISTEN_PID_BUFFER_LEN: usize = LISTEN_PID_PREFIX.len() + 10 + 1;
/// Cap on the fallback close-on-exec sweep when `RLIMIT_NOFILE` is unlimited.
const FALLBACK_FD_SWEEP_CAP: RawFd = 1 << 20;

/// The environment variables this module writes and reads.
const HANDOFF_ENV_VARS: [&str; 5] = [
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "HANDOFF_ROLE",
    "HANDOFF_SOCK_FD",
];

/// Check what [`pass_listener_fds_on_spawn`] needs of its arguments: at most
/// [`MAX_LISTEN_FDS`] FDs, none negative, and names `LISTEN_FDNAMES` can
/// carry (1 to 255 printable ASCII characters, no `:`).
///
/// [`pass_listener_fds_on_spawn`] cannot return an error, so it makes
/// `spawn` fail with `EINVAL` on arguments this rejects; call this first for
/// a message that says what is wrong.
pub fn validate_listeners(listeners: &[(String, RawFd)], extra: Option<RawFd>) -> Result<()> {
    let count = listeners.len() + usize::from(extra.is_some());
    if count > MAX_LISTEN_FDS {
        return Err(Error::Environment(format!(
            "{count} FDs to pass, more than the {MAX_LISTEN_FDS} allowed"
        )));
    }
    for (name, fd) in listeners {
        validate_fdname(name)?;
        if *fd < 0 {
            return Err(Error::Environment(format!(
                "listener {name:?} has invalid FD {fd}"
            )));
        }
    }
    if let Some(fd) = extra
        && fd < 0
    {
        return Err(Error::Environment(format!("extra FD {fd} is invalid")));
    }
    Ok(())
}

fn validate_fdname(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_LISTEN_FDNAME_LEN
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b':');
    if valid {
        Ok(())
    } else {
        Err(Error::Environment(format!(
            "listener name {name:?} cannot be carried in LISTEN_FDNAMES: \
             it needs 1 to {MAX_LISTEN_FDNAME_LEN} printable ASCII characters and no ':'"
        )))
    }
}

/// Prepare `cmd` so the child gets `listeners` at 3.. and `extra` at 3+n.
///
/// Sets `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (the child's own pid)
/// when there is at least one listener, and leaves no other FD above 2 open
/// in the child; see the [module documentation](self) for the contract and
/// how it is kept. Call it after setting the program, arguments, environment
/// and working directory of `cmd`, and once: later changes to those are not
/// seen by the child. The source FDs must stay open until `spawn` returns.
///
/// Arguments [`validate_listeners`] rejects make `spawn` fail with `EINVAL`
/// (and log an `error` event saying why).
pub fn pass_listener_fds_on_spawn(
    cmd: &mut Command,
    listeners: &[(String, RawFd)],
    extra: Option<RawFd>,
) {
    let mut plan = match ExecPlan::build(cmd, listeners, extra) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!(error = %e, program = ?cmd.get_program(),
                "cannot pass listener FDs; the spawn will fail with EINVAL");
            ExecPlan::failing(libc::EINVAL)
        }
    };
    // SAFETY: the closure runs in the forked child before `exec`. It calls
    // only async-signal-safe syscalls (`fcntl`, `dup2`, `close`,
    // `close_range`, `getpid`, `execve`) and writes only into memory `plan`
    // allocated in the parent, never allocating or taking a lock; see
    // `ExecPlan::exec_in_child`.
    unsafe {
        cmd.pre_exec(move || Err(plan.exec_in_child()));
    }
}

/// Spawn `binary` with `args`, the parent's environment plus `env`, and
/// stdio inherited, passing `listeners` and `extra` as
/// [`pass_listener_fds_on_spawn`] does. For cold-starting the first
/// incumbent and for test harnesses.
///
/// `HANDOFF_ROLE` and `HANDOFF_SOCK_FD` reach the child only when given in
/// `env`.
pub fn spawn_with_listeners(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    listeners: &[(String, RawFd)],
    extra: Option<RawFd>,
) -> io::Result<Child> {
    validate_listeners(listeners, extra)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    pass_listener_fds_on_spawn(&mut cmd, listeners, extra);
    cmd.spawn()
}

/// Everything the child needs between `fork` and `exec`, allocated in the
/// parent.
struct ExecPlan {
    /// If set, fail with this errno instead of exec'ing.
    invalid_errno: Option<i32>,
    /// The FDs to pass, in target order: listeners, then `extra`.
    sources: Vec<RawFd>,
    /// Scratch: where each source was moved above the targets.
    moved: Vec<RawFd>,
    /// Paths to try with `execve`, in order.
    programs: Vec<CString>,
    /// Owns the strings `argv` points into.
    _argv_strings: Vec<CString>,
    /// Null-terminated.
    argv: Vec<*const c_char>,
    /// Owns the strings `envp` points into (all but `LISTEN_PID`).
    _envp_strings: Vec<CString>,
    /// Null-terminated; slot `listen_pid_slot` points at `listen_pid`.
    envp: Vec<*const c_char>,
    /// `LISTEN_PID=` followed by zeros, digits written in the child.
    listen_pid: Vec<u8>,
    listen_pid_slot: Option<usize>,
    /// Upper bound for the fallback close-on-exec sweep.
    fallback_fd_limit: RawFd,
}

// SAFETY: the raw pointers in `argv` and `envp` point into heap buffers owned
// by the same `ExecPlan` (`_argv_strings`, `_envp_strings`, `listen_pid`),
// which are never mutated or dropped while the plan lives, except
// `listen_pid`, which is written only in the single-threaded forked child.
// Sending or sharing the plan between threads therefore cannot create a data
// race through them.
unsafe impl Send for ExecPlan {}
// SAFETY: see `Send` above; `&ExecPlan` gives no way to mutate anything.
unsafe impl Sync for ExecPlan {}

impl ExecPlan {
    fn failing(errno: i32) -> Self {
        ExecPlan {
            invalid_errno: Some(errno),
            sources: Vec::new(),
            moved: Vec::new(),
            programs: Vec::new(),
            _argv_strings: Vec::new(),
            argv: Vec::new(),
            _envp_strings: Vec::new(),
            envp: Vec::new(),
            listen_pid: Vec::new(),
            listen_pid_slot: None,
            fallback_fd_limit: 0,
        }
    }

    fn build(cmd: &Command, listeners: &[(String, RawFd)], extra: Option<RawFd>) -> Result<Self> {
        validate_listeners(listeners, extra)?;
        let nul_error = |what: &str| Error::Environment(format!("{what} contains a NUL byte"));

        let mut sources: Vec<RawFd> = listeners.iter().map(|(_, fd)| *fd).collect();
        sources.extend(extra);

        let env = child_environment(cmd, listeners);
        let path_var = env
            .iter()
            .find(|(k, _)| k.as_bytes() == b"PATH")
            .map(|(_, v)| v.as_os_str());
        let programs = program_candidates(cmd.get_program(), path_var)
            .into_iter()
            .map(|p| CString::new(p.into_vec()).map_err(|_| nul_error("the program path")))
            .collect::<Result<Vec<_>>>()?;

        let mut argv_strings = Vec::new();
        for arg in std::iter::once(cmd.get_program()).chain(cmd.get_args()) {
            argv_strings.push(CString::new(arg.as_bytes()).map_err(|_| nul_error("an argument"))?);
        }
        let mut envp_strings = Vec::new();
        for (key, value) in &env {
            let mut entry = Vec::with_capacity(key.len() + 1 + value.len());
            entry.extend_from_slice(key.as_bytes());
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp_strings.push(CString::new(entry).map_err(|_| nul_error("the environment"))?);
        }

        let argv: Vec<*const c_char> = argv_strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let mut envp: Vec<*const c_char> = envp_strings.iter().map(|s| s.as_ptr()).collect();
        let mut listen_pid = vec![0u8; LISTEN_PID_BUFFER_LEN];
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        let listen_pid_slot = if listeners.is_empty() {
            None
        } else {
            envp.push(listen_pid.as_ptr().cast());
            Some(envp.len() - 1)
        };
        envp.push(std::ptr::null());

        Ok(ExecPlan {
            invalid_errno: None,
            moved: vec![-1; sources.len()],
            sources,
            programs,
            _argv_strings: argv_strings,
            argv,
            _envp_strings: envp_strings,
            envp,
            listen_pid,
            listen_pid_slot,
            fallback_fd_limit: fd_sweep_limit(),
        })
    }

    /// Runs in the forked child; returns only on failure.
    ///
    /// Async-signal-safe: syscalls only, on memory allocated in the parent.
    /// `io::Error::last_os_error` and `from_raw_os_error` do not allocate.
    fn exec_in_child(&mut self) -> io::Error {
        if let Some(errno) = self.invalid_errno {
            return io::Error::from_raw_os_error(errno);
        }
        let count = self.sources.len();
        // `validate_listeners` bounds `count` by MAX_LISTEN_FDS.
        let first_free = LISTEN_FDS_START + count as RawFd;

        // Move every source above all targets first, so a source whose number
        // is another source's target is not overwritten before it is placed.
        for (source, moved) in self.sources.iter().zip(self.moved.iter_mut()) {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an integer FD only reads the
            // FD table; an invalid `source` yields EBADF, reported below.
            let fd = unsafe { libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, first_free) };
            if fd < 0 {
                return io::Error::last_os_error();
            }
            *moved = fd;
        }
        for (index, moved) in self.moved.iter().enumerate() {
            let target = LISTEN_FDS_START + index as RawFd;
            // `moved >= first_free > target`, so dup2 really duplicates, and
            // the duplicate at `target` is *not* close-on-exec.
            loop {
                // SAFETY: dup2 on integer FDs; `target` is deliberately
                // replaced, nothing in this child refers to what it held
                // except possibly std's error pipe (see the module docs).
                if unsafe { libc::dup2(*moved, target) } >= 0 {
                    break;
                }
                let error = io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::EINTR) {
                    return error;
                }
            }
            // SAFETY: `moved` was created above and is used by nothing else.
            unsafe { libc::close(*moved) };
        }
        if let Err(error) = mark_cloexec_from(first_free, self.fallback_fd_limit) {
            return error;
        }

        if let Some(slot) = self.listen_pid_slot {
            // SAFETY: getpid cannot fail and touches no memory.
            let pid = unsafe { libc::getpid() };
            write_decimal(
                &mut self.listen_pid[LISTEN_PID_PREFIX.len()..],
                pid.unsigned_abs(),
            );
            self.envp[slot] = self.listen_pid.as_ptr().cast();
        }

        // Like execvp: try each candidate; remember EACCES; stop at an error
        // that is not about this candidate being absent.
        let mut errno = libc::ENOENT;
        let mut saw_eacces = false;
        for program in &self.programs {
            // SAFETY: `program`, `argv` and `envp` are NUL-terminated strings
            // and null-terminated pointer arrays built in the parent and kept
            // alive by `self` (see `ExecPlan::build`).
            unsafe { libc::execve(program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
            errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOENT);
            match errno {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if saw_eacces && matches!(errno, libc::ENOENT | libc::ENOTDIR) {
            errno = libc::EACCES;
        }
        io::Error::from_raw_os_error(errno)
    }
}

/// Mark every FD `>= first` close-on-exec. Async-signal-safe.
fn mark_cloexec_from(first: RawFd, fallback_limit: RawFd) -> io::Result<()> {
    // SAFETY: close_range only changes FD flags; it takes plain integers. The
    // raw syscall avoids depending on a glibc new enough to wrap it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if result == 0 {
        return Ok(());
    }
    // ENOSYS (before Linux 5.9) or EINVAL (no CLOSE_RANGE_CLOEXEC before
    // 5.11): sweep by hand.
    for fd in first..fallback_limit {
        // SAFETY: fcntl(F_GETFD/F_SETFD) on an integer FD; EBADF for a number
        // not in use is expected and ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Write `value`'s decimal digits at the start of `out`, then a NUL if room
/// remains. No allocation (runs in the forked child).
fn write_decimal(out: &mut [u8], mut value: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (slot, digit) in out.iter_mut().zip(digits[..len].iter().rev()) {
        *slot = *digit;
    }
    if let Some(nul) = out.get_mut(len) {
        *nul = 0;
    }
}

/// The soft `RLIMIT_NOFILE`, capped: the fallback sweep's upper bound.
fn fd_sweep_limit() -> RawFd {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => RawFd::try_from(soft)
            .unwrap_or(FALLBACK_FD_SWEEP_CAP)
            .min(FALLBACK_FD_SWEEP_CAP),
        Err(_) => FALLBACK_FD_SWEEP_CAP,
    }
}

/// The child's environment: the parent's, with `cmd`'s changes applied, stale
/// handoff variables removed and `LISTEN_FDS` / `LISTEN_FDNAMES` added (the
/// `LISTEN_PID` entry is added by the caller, in the child).
fn child_environment(cmd: &Command, listeners: &[(String, RawFd)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut explicit: Vec<&OsStr> = Vec::new();
    for (key, value) in cmd.get_envs() {
        env.retain(|(k, _)| k.as_os_str() != key);
        explicit.push(key);
        if let Some(value) = value {
            env.push((key.to_owned(), value.to_owned()));
        }
    }
    env.retain(|(k, _)| {
        let key = k.as_bytes();
        match key {
            // Ours to set, always.
            b"LISTEN_FDS" | b"LISTEN_FDNAMES" | b"LISTEN_PID" => false,
            // Inherited ones are stale; the caller sets them on `cmd`.
            b"HANDOFF_ROLE" | b"HANDOFF_SOCK_FD" => explicit.contains(&k.as_os_str()),
            _ => true,
        }
    });
    if !listeners.is_empty() {
        env.push(("LISTEN_FDS".into(), listeners.len().to_string().into()));
        let names: Vec<&str> = listeners.iter().map(|(name, _)| name.as_str()).collect();
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    }
    env
}

/// Where `execvp` would look for `program`, in order: itself when it contains
/// a `/`, otherwise each `PATH` entry (default `/bin:/usr/bin`; an empty
/// entry is the working directory).
fn program_candidates(program: &OsStr, path_var: Option<&OsStr>) -> Vec<OsString> {
    let bytes = program.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') {
        return vec![program.to_owned()];
    }
    let path = path_var.map_or(&b"/bin:/usr/bin"[..], OsStrExt::as_bytes);
    path.split(|b| *b == b':')
        .map(|dir| {
            let mut candidate = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            candidate.push(b'/');
            candidate.extend_from_slice(bytes);
            OsString::from_vec(candidate)
        })
        .collect()
}

/// What `LISTEN_*` / `HANDOFF_*` say (pure parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffEnv {
    /// `(name, fd)` of each listener.
    pub listeners: Vec<(String, RawFd)>,
    /// `HANDOFF_SOCK_FD` when `HANDOFF_ROLE=successor`.
    pub successor_sock_fd: Option<RawFd>,
}

/// Parse the handoff environment from a lookup function (pure).
///
/// Listeners, as `sd_listen_fds(3)` reads them:
///
/// - `LISTEN_PID` absent, or naming another process: the variables are not
///   for us; no listeners (they were meant for a parent, or leaked).
/// - `LISTEN_PID` not a pid: error.
/// - `LISTEN_FDS` absent: no listeners; otherwise a count from 1 to
///   [`MAX_LISTEN_FDS`], or an error.
/// - `LISTEN_FDNAMES` absent: every name is `unknown`; otherwise exactly
///   `LISTEN_FDS` valid names separated by `:`, or an error.
///
/// The handoff role: `HANDOFF_ROLE` absent means no supervisor spawned us for
/// a handoff (and `HANDOFF_SOCK_FD` must be absent too); `successor` requires
/// `HANDOFF_SOCK_FD` to equal `3 + n` for the `n` listeners found (0 when no
/// `LISTEN_*` is for us); any other value is an error.
///
/// Every error is [`Error::Environment`] naming the variable and its value.
pub fn parse_handoff_env(get: &dyn Fn(&str) -> Option<String>, my_pid: u32) -> Result<HandoffEnv> {
    let listeners = parse_listen_fds(get, my_pid)?;
    let role = get("HANDOFF_ROLE");
    let sock_fd = get("HANDOFF_SOCK_FD");
    let successor_sock_fd = match (role.as_deref(), sock_fd) {
        (None, None) => None,
        (None, Some(fd)) => {
            return Err(Error::Environment(format!(
                "HANDOFF_SOCK_FD={fd:?} is set but HANDOFF_ROLE is not"
            )));
        }
        (Some("successor"), None) => {
            return Err(Error::Environment(
                "HANDOFF_ROLE=successor but HANDOFF_SOCK_FD is not set".to_owned(),
            ));
        }
        (Some("successor"), Some(fd_text)) => {
            let expected = LISTEN_FDS_START + listeners.len() as RawFd;
            match fd_text.parse::<RawFd>() {
                Ok(fd) if fd == expected => Some(fd),
                _ => {
                    return Err(Error::Environment(format!(
                        "HANDOFF_SOCK_FD={fd_text:?}, but with {} inherited listener(s) \
                         (LISTEN_FDS={:?}, LISTEN_PID={:?}, our pid {my_pid}) the control \
                         socket must be at FD {expected}",
                        listeners.len(),
                        get("LISTEN_FDS"),
                        get("LISTEN_PID"),
                    )));
                }
            }
        }
        (Some(other), _) => {
            return Err(Error::Environment(format!(
                "HANDOFF_ROLE={other:?}: the only role a process can be spawned in is \"successor\""
            )));
        }
    };
    Ok(HandoffEnv {
        listeners,
        successor_sock_fd,
    })
}

fn parse_listen_fds(
    get: &dyn Fn(&str) -> Option<String>,
    my_pid: u32,
) -> Result<Vec<(String, RawFd)>> {
    let Some(pid_text) = get("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    let pid: u32 = match pid_text.trim().parse() {
        Ok(pid) if pid != 0 => pid,
        _ => {
            return Err(Error::Environment(format!(
                "LISTEN_PID={pid_text:?} is not a pid"
            )));
        }
    };
    if pid != my_pid {
        return Ok(Vec::new());
    }
    let Some(count_text) = get("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let count: usize = match count_text.trim().parse() {
        Ok(count) if (1..=MAX_LISTEN_FDS).contains(&count) => count,
        _ => {
            return Err(Error::Environment(format!(
                "LISTEN_FDS={count_text:?}: expected a count from 1 to {MAX_LISTEN_FDS}"
            )));
        }
    };
    let names: Vec<String> = match get("LISTEN_FDNAMES") {
        None => vec!["unknown".to_owned(); count],
        Some(joined) => {
            let names: Vec<String> = joined.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(Error::Environment(format!(
                    "LISTEN_FDNAMES={joined:?} has {} name(s), but LISTEN_FDS={count}",
                    names.len()
                )));
            }
            if let Some(bad) = names.iter().find(|name| validate_fdname(name).is_err()) {
                return Err(Error::Environment(format!(
                    "LISTEN_FDNAMES={joined:?}: invalid name {bad:?} (1 to \
                     {MAX_LISTEN_FDNAME_LEN} printable ASCII characters)"
                )));
            }
            names
        }
    };
    Ok(names
        .into_iter()
        .zip(LISTEN_FDS_START..)
        .collect::<Vec<_>>())
}

/// What [`take_handoff_env`] hands over: the listeners by name, and a
/// successor's end of the control socketpair.
pub type InheritedFds = (Vec<(String, OwnedFd)>, Option<OwnedFd>);

/// Set once the process's handoff FDs have been taken.
static HANDOFF_ENV_TAKEN: AtomicBool = AtomicBool::new(false);

/// Read, validate and clear the process's handoff environment; take
/// ownership of the FDs it names (marking them close-on-exec).
///
/// Returns the listeners by name and, for a successor, its end of the
/// control socketpair. Each FD is checked to be open before anything is
/// taken; on any error nothing is taken.
///
/// The variables (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`,
/// `HANDOFF_ROLE`, `HANDOFF_SOCK_FD`) are removed from the environment
/// whatever the outcome, like `sd_listen_fds(unset_environment = 1)`, so no
/// process spawned later inherits them, **when this is the process's only
/// thread** (checked in `/proc/self/status`; changing the environment while
/// another thread may read it is undefined behaviour). With other threads
/// running they are left as they are, which is sound and harmless for the
/// FDs: this process takes them once (calls after the first find nothing),
/// a child sees `LISTEN_PID` naming another process, and
/// [`pass_listener_fds_on_spawn`] strips them from every child it starts.
/// Call it at start-up, before spawning threads, to have them cleared, or
/// clear them later with [`clear_handoff_env`].
pub fn take_handoff_env() -> Result<InheritedFds> {
    if HANDOFF_ENV_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok((Vec::new(), None));
    }
    let get = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let parsed = parse_handoff_env(&get, std::process::id());
    if is_single_threaded() {
        // SAFETY: this is the process's only thread (checked just above, and
        // only this thread could start another one), so nothing reads the
        // environment concurrently.
        unsafe { clear_handoff_env() };
    } else if HANDOFF_ENV_VARS
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        tracing::debug!("other threads run: the handoff environment variables are left set");
    }
    let parsed = parsed?;

    let named = parsed
        .listeners
        .iter()
        .map(|(name, fd)| (format!("listener {name:?}"), *fd))
        .chain(
            parsed
                .successor_sock_fd
                .map(|fd| ("the control socket (HANDOFF_SOCK_FD)".to_owned(), fd)),
        );
    for (what, fd) in named {
        // SAFETY: F_GETFD on an integer FD only reads the FD table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::Environment(format!(
                "the environment names FD {fd} as {what}, but it is not open: {}",
                io::Error::last_os_error()
            )));
        }
    }
    let take = |fd: RawFd| -> Result<OwnedFd> {
        // SAFETY: `fd` is open (checked above) and was placed there for this
        // process by its parent; the environment naming it has been cleared
        // and `HANDOFF_ENV_TAKEN` makes this the only call that takes it, so
        // nothing else in the process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD on an FD we now own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        Ok(owned)
    };
    let mut listeners = Vec::with_capacity(parsed.listeners.len());
    for (name, fd) in parsed.listeners {
        listeners.push((name, take(fd)?));
    }
    let control = parsed.successor_sock_fd.map(take).transpose()?;
    Ok((listeners, control))
}

/// Remove the handoff environment variables (`LISTEN_FDS`,
/// `LISTEN_FDNAMES`, `LISTEN_PID`, `HANDOFF_ROLE`, `HANDOFF_SOCK_FD`).
///
/// # Safety
///
/// No other thread may read or write the environment while this runs
/// (`std::env::remove_var`'s contract): call it while the process has one
/// thread, or when every other thread is known not to touch the
/// environment (including through C's `getenv`).
pub unsafe fn clear_handoff_env() {
    for name in HANDOFF_ENV_VARS {
        // SAFETY: passed on from this function's own contract.
        unsafe { std::env::remove_var(name) };
    }
}

/// True when the calling thread is the only one in the process, per the
/// `Threads:` line of `/proc/self/status`; false when it cannot be read.
fn is_single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        == Some(1)
}

/// The FDs open in this process, ascending, from `/proc/self/fd` (without the
/// one used to read it). Falls back to probing `0..1024` with `F_GETFD`
/// when `/proc` is not mounted. For tests and leak checks.
pub fn open_fds() -> Vec<RawFd> {
    let mut fds = Vec::new();
    // SAFETY: opendir gets a valid NUL-terminated path; a null result is
    // handled. glibc opens it close-on-exec.
    let dir = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
    if dir.is_null() {
        for fd in 0..1024 {
            // SAFETY: F_GETFD on an integer FD only reads the FD table.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                fds.push(fd);
            }
        }
        return fds;
    }
    // SAFETY: `dir` is a valid, open directory stream.
    let own = unsafe { libc::dirfd(dir) };
    loop {
        // SAFETY: `dir` is valid; readdir returns null at the end (or on an
        // error, which ends the listing too).
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: a non-null entry points at a dirent whose d_name is
        // NUL-terminated, valid until the next readdir on `dir`.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<RawFd>().ok())
            && fd != own
        {
            fds.push(fd);
        }
    }
    // SAFETY: `dir` is valid and closed exactly once.
    unsafe { libc::closedir(dir) };
    fds.sort_unstable();
    fds
}

/// A process handle that a recycled pid cannot fool: `pidfd_open(2)`
/// (Linux 5.3+; [`PidFd::take_fd`] needs 5.6+).
///
/// Used to watch a process that is not our child (its exit makes the pidfd
/// readable, so it is noticed at once rather than at a polling interval), to
/// signal it without racing pid reuse, and to copy FDs out of its table
/// (`pidfd_getfd(2)`: the same open file description, as `dup` makes).
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// Open a pidfd for `pid`. `ESRCH` when no such process exists.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let raw = i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new
        // FD (close-on-exec, per the man page) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this FD to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(PidFd { fd, pid })
    }

    /// The pid this handle was opened for.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A second handle on the same process (for a thread that waits on it).
    pub fn try_clone(&self) -> io::Result<PidFd> {
        Ok(PidFd {
            fd: self.fd.try_clone()?,
            pid: self.pid,
        })
    }

    /// A copy of FD `target` of the process (`pidfd_getfd(2)`), close-on-exec.
    /// Needs ptrace access to the process (`PTRACE_MODE_ATTACH_REALCREDS`):
    /// `EPERM` otherwise.
    pub fn take_fd(&self, target: RawFd) -> io::Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_getfd takes two integer FDs and flags by value and
        // returns a new FD (close-on-exec) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.fd.as_raw_fd(), target, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this FD to us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// Send `signal` to the process, never to a later process with its pid.
    pub fn send_signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal takes an FD, a signal number, a null
        // siginfo (allowed: the kernel fills in a kill(2)-like one) and flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait until the process has exited, at most `timeout` (`None`: no
    /// bound). `Ok(true)` once it has; `Ok(false)` when the bound passed.
    /// Exit is what makes a pidfd readable; `EINTR` is retried.
    pub fn wait_exited(&self, timeout: Option<std::time::Duration>) -> io::Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let wait = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = crate::util::remaining(d);
                    // Round up so a sub-millisecond rest does not spin.
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(0) if deadline.is_some_and(|d| crate::util::remaining(d).is_zero()) => {
                    return Ok(false);
                }
                Ok(0) => {}
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// True once the process has exited (zombie or reaped).
    pub fn has_exited(&self) -> bool {
        self.wait_exited(Some(std::time::Duration::ZERO))
            .unwrap_or(false)
    }
}

impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Terminate the process at once with `code`, as a crash does: `_exit(2)`
/// runs no destructors, no `atexit` handlers and flushes no buffers. Used by
/// crash points; lives here because this is the crate's one `unsafe` module.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions: it is async-signal-safe, takes
    // any status, and never returns, so no Rust invariant can be observed
    // broken afterwards.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)], my_pid: u32) -> Result<HandoffEnv> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_handoff_env(&|name| map.get(name).cloned(), my_pid)
    }

    fn environment_error(vars: &[(&str, &str)], my_pid: u32) -> String {
        match parse(vars, my_pid) {
            Err(Error::Environment(message)) => message,
            other => panic!("expected an Environment error, got {other:?}"),
        }
    }

    fn listeners(names: &[&str]) -> Vec<(String, RawFd)> {
        names
            .iter()
            .zip(3..)
            .map(|(name, fd)| (name.to_string(), fd))
            .collect()
    }

    #[test]
    fn empty_environment_is_a_cold_start_without_listeners() {
        assert_eq!(
            parse(&[], 42).unwrap(),
            HandoffEnv {
                listeners: vec![],
                successor_sock_fd: None
            }
        );
    }

    #[test]
    fn socket_activation_with_names() {
        let env = parse(
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:admin"),
            ],
            42,
        )
        .unwrap();
        assert_eq!(env.listeners, listeners(&["http", "admin"]));
        assert_eq!(env.successor_sock_fd, None);
    }

    #[test]
    fn missing_names_are_unknown() {
        let env = parse(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "2")], 42).unwrap();
        assert_eq!(env.listeners, listeners(&["unknown", "unknown"]));
    }

    #[test]
    fn listen_pid_of_another_process_means_not_for_us() {
        let env = parse(
            &[
                ("LISTEN_PID", "41"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "a:b"),
            ],
            42,
        )
        .unwrap();
        assert!(env.listeners.is_empty());
        // Without LISTEN_PID, libsystemd ignores LISTEN_FDS too.
        assert!(
            parse(&[("LISTEN_FDS", "2")], 42)
                .unwrap()
                .listeners
                .is_empty()
        );
        // LISTEN_PID alone: nothing.
        assert!(
            parse(&[("LISTEN_PID", "42")], 42)
                .unwrap()
                .listeners
                .is_empty()
        );
    }

    #[test]
    fn successor_with_listeners() {
        let env = parse(
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:admin"),
                ("HANDOFF_ROLE", "successor"),
                ("HANDOFF_SOCK_FD", "5"),
            ],
            42,
        )
        .unwrap();
        assert_eq!(env.listeners, listeners(&["http", "admin"]));
        assert_eq!(env.successor_sock_fd, Some(5));
    }

    #[test]
    fn successor_without_listeners_finds_its_socket_at_3() {
        let env = parse(
            &[("HANDOFF_ROLE", "successor"), ("HANDOFF_SOCK_FD", "3")],
            42,
        )
        .unwrap();
        assert!(env.listeners.is_empty());
        assert_eq!(env.successor_sock_fd, Some(3));
    }

    #[test]
    fn bad_listen_pid_is_named() {
        for bad in ["", "abc", "-1", "0", "99999999999"] {
            let message = environment_error(&[("LISTEN_PID", bad), ("LISTEN_FDS", "1")], 42);
            assert!(message.contains("LISTEN_PID") && message.contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn bad_listen_fds_is_named() {
        for bad in ["0", "-1", "two", "", "1025", "99999999999999999999999"] {
            let message = environment_error(&[("LISTEN_PID", "42"), ("LISTEN_FDS", bad)], 42);
            assert!(
                message.contains("LISTEN_FDS") && message.contains(&format!("{bad:?}")),
                "{message}"
            );
        }
        assert_eq!(
            parse(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "1024")], 42)
                .unwrap()
                .listeners
                .len(),
            1024
        );
    }

    #[test]
    fn names_must_match_the_count() {
        let message = environment_error(
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http"),
            ],
            42,
        );
        assert!(message.contains("LISTEN_FDNAMES=\"http\" has 1 name(s), but LISTEN_FDS=2"));
        let message = environment_error(
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDNAMES", "a:b:c"),
            ],
            42,
        );
        assert!(message.contains("3 name(s)"));
        let message = environment_error(
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:"),
            ],
            42,
        );
        assert!(message.contains("invalid name \"\""), "{message}");
    }

    #[test]
    fn successor_sock_fd_must_follow_the_listeners() {
        let message = environment_error(
            &[
                ("LISTEN_PID", "42"),
                ("LISTEN_FDS", "2"),
                ("HANDOFF_ROLE", "successor"),
                ("HANDOFF_SOCK_FD", "3"),
            ],
            42,
        );
        assert!(
            message.contains("HANDOFF_SOCK_FD=\"3\"") && message.contains("must be at FD 5"),
            "{message}"
        );
        let message = environment_error(
            &[("HANDOFF_ROLE", "successor"), ("HANDOFF_SOCK_FD", "three")],
            42,
        );
        assert!(message.contains("HANDOFF_SOCK_FD=\"three\""));
        // LISTEN_* meant for another pid: no listeners, so the socket is at 3.
        let message = environment_error(
            &[
                ("LISTEN_PID", "41"),
                ("LISTEN_FDS", "1"),
                ("HANDOFF_ROLE", "successor"),
                ("HANDOFF_SOCK_FD", "4"),
            ],
            42,
        );
        assert!(message.contains("must be at FD 3") && message.contains("our pid 42"));
    }

    #[test]
    fn successor_needs_its_socket() {
        let message = environment_error(&[("HANDOFF_ROLE", "successor")], 42);
        assert!(message.contains("HANDOFF_SOCK_FD is not set"));
    }

    #[test]
    fn unknown_role_is_an_error() {
        for role in ["incumbent", "", "Successor"] {
            let message = environment_error(&[("HANDOFF_ROLE", role)], 42);
            assert!(
                message.contains(&format!("HANDOFF_ROLE={role:?}")),
                "{message}"
            );
        }
    }

    #[test]
    fn socket_without_role_is_an_error() {
        let message = environment_error(&[("HANDOFF_SOCK_FD", "3")], 42);
        assert!(message.contains("HANDOFF_ROLE is not"));
    }

    #[test]
    fn listener_names_are_validated_before_spawning() {
        assert!(validate_listeners(&listeners(&["http", "admin api"]), Some(9)).is_ok());
        for bad in ["", "a:b", "tab\there", "caf\u{e9}"] {
            let err = validate_listeners(&[(bad.to_owned(), 3)], None).unwrap_err();
            assert!(err.to_string().contains("LISTEN_FDNAMES"), "{err}");
        }
        assert!(validate_listeners(&[("x".repeat(256), 3)], None).is_err());
        assert!(validate_listeners(&[("http".to_owned(), -1)], None).is_err());
        assert!(validate_listeners(&[], Some(-1)).is_err());
        let too_many = vec![("l".to_owned(), 3); MAX_LISTEN_FDS];
        assert!(validate_listeners(&too_many, None).is_ok());
        assert!(validate_listeners(&too_many, Some(3)).is_err());
    }

    #[test]
    fn decimal_digits_without_allocation() {
        let mut buffer = [b'x'; 11];
        write_decimal(&mut buffer, 0);
        assert_eq!(&buffer[..2], b"0\0");
        write_decimal(&mut buffer, 4_294_967_295);
        assert_eq!(&buffer, b"4294967295\0");
        write_decimal(&mut buffer, 1234);
        assert_eq!(&buffer[..5], b"1234\0");
    }

    #[test]
    fn program_candidates_follow_execvp() {
        let candidates = |program: &str, path: Option<&str>| -> Vec<String> {
            program_candidates(OsStr::new(program), path.map(OsStr::new))
                .into_iter()
                .map(|c| c.into_string().unwrap())
                .collect()
        };
        assert_eq!(candidates("./x", Some("/bin")), ["./x"]);
        assert_eq!(candidates("/usr/bin/env", None), ["/usr/bin/env"]);
        assert_eq!(candidates("sh", Some("/a::/b")), ["/a/sh", "./sh", "/b/sh"]);
        assert_eq!(candidates("sh", None), ["/bin/sh", "/usr/bin/sh"]);
    }

    #[test]
    fn child_environment_drops_stale_variables_and_adds_listen_vars() {
        let mut cmd = Command::new("x");
        cmd.env("HANDOFF_ROLE", "successor")
            .env("LISTEN_FDS", "9")
            .env("KEEP", "1")
            .env_remove("PATH");
        let env = child_environment(&cmd, &listeners(&["a", "b"]));
        let get = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("HANDOFF_ROLE").as_deref(), Some("successor"));
        assert_eq!(get("LISTEN_FDS").as_deref(), Some("2"));
        assert_eq!(get("LISTEN_FDNAMES").as_deref(), Some("a:b"));
        assert_eq!(get("KEEP").as_deref(), Some("1"));
        assert_eq!(get("PATH"), None);
        assert_eq!(get("LISTEN_PID"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "LISTEN_FDS").count(), 1);
        let env = child_environment(&Command::new("x"), &[]);
        assert!(
            env.iter()
                .all(|(k, _)| k != "LISTEN_FDS" && k != "HANDOFF_ROLE")
        );
    }

    #[test]
    fn open_fds_lists_standard_streams_and_new_files() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
        let fds = open_fds();
        assert!(fds.contains(&raw), "{raw} missing from {fds:?}");
        assert!(fds.windows(2).all(|w| w[0] < w[1]), "{fds:?}");
    }
}
