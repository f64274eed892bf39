//! One scenario's world: a temporary directory, the listening sockets (held
//! by the harness, as systemd would, so the accept queue never closes), and
//! every process launched into it.
//!
//! Layout of the directory:
//!
//! ```text
//! data/                 the data dir (handoff.lock, handoff.pid, kv.log)
//! control.sock          the incumbent's control socket
//! journal               the supervisors' journal
//! crash-record          one `<point> <pid>` line per fired crash point
//! supervisor-<k>.jsonl  event log of the k-th supervisor run (k from 1)
//! peer-<k>.jsonl        event log of the k-th service process (k from 0),
//!                       cold-started by the harness or spawned as a successor
//! <name>.stdout/.stderr output of each process the harness launched
//!                       (a successor writes into its supervisor's)
//! supervisor-<k>.canary a file each supervisor inherits open at FD 9 without
//!                       being told; no successor may hold it
//! ```
//!
//! Every process is launched with `HARNESS_FIXTURE=<id>` in its environment,
//! which a successor inherits through its supervisor: the fixture finds all
//! of its processes in `/proc` by that marker, wherever they were
//! reparented, and kills whatever is left on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use handoff::events;
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::bins::{self, Binaries};
use crate::eventlog::{self, ProcessLog};
use crate::procs;
use crate::reaper::{self, Exit};
use crate::scenario::SuccessorBinary;
use crate::sockdiag;

/// Environment variable that marks every process of one fixture.
pub const ENV_MARKER: &str = "HARNESS_FIXTURE";
/// Step of every polling loop (a pacing step, never a synchronisation).
pub const POLL_STEP: Duration = Duration::from_millis(5);
/// Bound on one readiness `PING` while settling.
const PING_STEP: Duration = Duration::from_millis(250);
/// Name of the one listener the fake peer serves.
pub const LISTENER_NAME: &str = "kv";

/// Environment the harness never lets leak from its own environment into
/// the processes it launches.
const SCRUBBED_ENV: &[&str] = &[
    "HANDOFF_CRASH_AT",
    "HANDOFF_CRASH_RECORD",
    "HANDOFF_EVENT_LOG",
    "HANDOFF_ROLE",
    "HANDOFF_SOCK_FD",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "FAKE_SEAL_FAIL",
    "FAKE_DRAIN_MS",
    "FAKE_SEAL_MS",
    "FAKE_NEVER_READY",
    "FAKE_EXIT_BEFORE_HELLO",
    "RUST_LOG",
];

/// What a process is in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcKind {
    /// A service process the harness cold-started (first start or restart).
    ColdStart,
    /// A `handoff-supervisor` run.
    Supervisor,
    /// A service process a supervisor spawned as its successor.
    Successor,
}

/// One process of the scenario.
#[derive(Debug, Clone)]
pub struct ProcEntry {
    /// `peer-<k>` or `supervisor-<k>`.
    pub name: String,
    /// Its pid, once known (a successor's from its log or its supervisor).
    pub pid: Option<u32>,
    /// What it is.
    pub kind: ProcKind,
    /// The `HANDOFF_CRASH_AT` it was given.
    pub armed: Option<String>,
    /// For a successor: the supervisor that spawned it.
    pub spawned_by: Option<String>,
    /// How it ended, when the harness reaped it.
    pub exit: Option<Exit>,
    /// The harness sent it `SIGKILL` (teardown).
    pub killed_by_harness: bool,
}

/// A supervisor run in flight.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    /// `supervisor-<k>`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// The name its successor gets (`peer-<k>`), whether or not it spawns one.
    pub successor: String,
}

/// How the service stands once every transition has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Exactly one service process lives, holds the flock and is bound to
    /// the control socket path.
    Incumbent {
        /// Its name.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// No process of the scenario is alive.
    NoService,
}

/// The service a fixture runs in place of the fake peer (`harness chaos
/// --service`): cold starts and successors run `program args...`, and the
/// fixture holds one listener per name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCommand {
    /// The binary.
    pub program: PathBuf,
    /// Its arguments; `{data_dir}` and `{control_socket}` are replaced by
    /// the fixture's paths.
    pub args: Vec<String>,
    /// The listeners, by name, in FD order (`LISTEN_FDNAMES`).
    pub listeners: Vec<String>,
}

/// Why a wait for [`Fixture::settled_now`] within `bound` failed, ending
/// with what was `observed` last.
pub fn not_settled(bound: Duration, observed: &str) -> String {
    format!(
        "the service did not settle within {bound:?} (waiting for: no supervisor, and one \
         live service process holding the flock, bound to the control socket, with no \
         session open and serving every listener, or none); last observed: {observed}"
    )
}

/// A scenario's world.
pub struct Fixture {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    marker: String,
    listeners: Vec<(String, TcpListener)>,
    bins: &'static Binaries,
    processes: Vec<ProcEntry>,
    next_peer: u32,
    next_supervisor: u32,
    torn_down: bool,
    /// `None`: the fake peer.
    service: Option<ServiceCommand>,
}

impl Fixture {
    /// Build the binaries (once), become a subreaper, and lay out a fresh
    /// directory with a bound listener.
    pub fn new(label: &str) -> Result<Self, String> {
        let bins = bins::ensure_built()?;
        reaper::init().map_err(|e| e.to_string())?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seq = COUNTER.fetch_add(1, Ordering::SeqCst);
        let safe_label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("handoff-{safe_label}-"))
            .tempdir()
            .map_err(|e| format!("cannot create the scenario directory: {e}"))?;
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join("data")).map_err(|e| format!("data dir: {e}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        Ok(Self {
            marker: format!("{ENV_MARKER}={}-{}-{seq}", std::process::id(), safe_label),
            dir: Some(dir),
            root,
            listeners: vec![(LISTENER_NAME.to_string(), listener)],
            bins,
            processes: Vec::new(),
            next_peer: 0,
            next_supervisor: 1,
            torn_down: false,
            service: None,
        })
    }

    /// Like [`Fixture::new`], for another service than the fake peer.
    pub fn with_service(label: &str, service: ServiceCommand) -> Result<Self, String> {
        let mut fx = Self::new(label)?;
        fx.listeners = service
            .listeners
            .iter()
            .map(|name| {
                TcpListener::bind("127.0.0.1:0")
                    .map(|l| (name.clone(), l))
                    .map_err(|e| format!("bind: {e}"))
            })
            .collect::<Result<_, _>>()?;
        fx.service = Some(service);
        Ok(fx)
    }

    /// The service's binary and arguments.
    fn service_command(&self) -> (PathBuf, Vec<String>) {
        let data_dir = self.data_dir().to_string_lossy().into_owned();
        let control = self.control_socket().to_string_lossy().into_owned();
        match &self.service {
            None => (
                self.bins.fake_peer.clone(),
                vec![
                    "--data-dir".into(),
                    data_dir,
                    "--control-socket".into(),
                    control,
                ],
            ),
            Some(s) => (
                s.program.clone(),
                s.args
                    .iter()
                    .map(|a| {
                        a.replace("{data_dir}", &data_dir)
                            .replace("{control_socket}", &control)
                    })
                    .collect(),
            ),
        }
    }

    /// The scenario directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// The lock file the kernel's flock is on.
    pub fn lock_file(&self) -> PathBuf {
        self.data_dir().join(handoff::DataDirLock::LOCK_FILE)
    }
    /// The control socket path.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    /// The journal path.
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }
    /// The crash record path.
    pub fn crash_record(&self) -> PathBuf {
        self.root.join("crash-record")
    }
    /// The binaries.
    pub fn bins(&self) -> &'static Binaries {
        self.bins
    }
    /// `KEY=value` marker of this fixture's processes.
    pub fn marker(&self) -> &str {
        &self.marker
    }
    /// Every process so far.
    pub fn processes(&self) -> &[ProcEntry] {
        &self.processes
    }
    /// The entry called `name`.
    pub fn process(&self, name: &str) -> Option<&ProcEntry> {
        self.processes.iter().find(|p| p.name == name)
    }
    /// The name of `pid`, if it is one of ours.
    pub fn name_of(&self, pid: u32) -> Option<&str> {
        self.processes
            .iter()
            .find(|p| p.pid == Some(pid))
            .map(|p| p.name.as_str())
    }
    /// Address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, l)| l.local_addr().ok())
    }
    /// `(name, socket inode)` of every listener.
    pub fn listener_inodes(&self) -> Vec<(String, u64)> {
        self.listeners
            .iter()
            .filter_map(|(n, l)| procs::socket_inode(l).ok().map(|i| (n.clone(), i)))
            .collect()
    }
    /// `(name, address)` of every listener.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(n, l)| l.local_addr().ok().map(|a| (n.clone(), a)))
            .collect()
    }

    fn raw_listeners(&self) -> Vec<(String, RawFd)> {
        self.listeners
            .iter()
            .map(|(n, l)| (n.clone(), l.as_raw_fd()))
            .collect()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.jsonl"))
    }

    fn base_command(&self, program: &Path, name: &str) -> Result<Command, String> {
        let mut cmd = Command::new(program);
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        let (key, value) = self.marker.split_once('=').ok_or("marker without '='")?;
        cmd.env(key, value)
            .env(handoff::events::ENV_EVENT_LOG, self.log_path(name))
            .env(handoff::crash::ENV_CRASH_RECORD, self.crash_record())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(self.output_file(name, "stdout")?)
            .stderr(self.output_file(name, "stderr")?);
        Ok(cmd)
    }

    fn output_file(&self, name: &str, stream: &str) -> Result<File, String> {
        File::create(self.root.join(format!("{name}.{stream}")))
            .map_err(|e| format!("cannot create {name}.{stream}: {e}"))
    }

    /// Cold-start a service process on the listeners (first start, or a
    /// restart after the service died, as systemd's `Restart=` would).
    pub fn cold_start(&mut self, env: &[(String, String)]) -> Result<String, String> {
        let name = format!("peer-{}", self.next_peer);
        self.next_peer += 1;
        let (program, args) = self.service_command();
        let mut cmd = self.base_command(&program, &name)?;
        cmd.args(args);
        self.spawn_with_listeners(cmd, &name, ProcKind::ColdStart, env)?;
        Ok(name)
    }

    /// Apply `env` (noting an armed crash point), hand `cmd` the listeners
    /// at FD 3.. as systemd would, spawn it under the reaper and record it
    /// as `name`.
    fn spawn_with_listeners(
        &mut self,
        mut cmd: Command,
        name: &str,
        kind: ProcKind,
        env: &[(String, String)],
    ) -> Result<u32, String> {
        let mut armed = None;
        for (k, v) in env {
            if k == handoff::crash::ENV_CRASH_AT {
                armed = Some(v.clone());
            }
            cmd.env(k, v);
        }
        handoff::fd::pass_listener_fds_on_spawn(&mut cmd, &self.raw_listeners(), None);
        let pid = reaper::spawn(&mut cmd).map_err(|e| format!("cannot start {name}: {e}"))?;
        self.processes.push(ProcEntry {
            name: name.to_string(),
            pid: Some(pid),
            kind,
            armed,
            spawned_by: None,
            exit: None,
            killed_by_harness: false,
        });
        Ok(pid)
    }

    /// Start one `handoff-supervisor` run. `supervisor_env` is its own
    /// environment (the successor inherits it, minus `HANDOFF_CRASH_AT`);
    /// `successor_env` is passed with `--env`.
    pub fn spawn_supervisor(
        &mut self,
        args: &[String],
        supervisor_env: &[(String, String)],
        successor_env: &[(String, String)],
        successor_binary: SuccessorBinary,
    ) -> Result<SupervisorHandle, String> {
        let name = format!("supervisor-{}", self.next_supervisor);
        self.next_supervisor += 1;
        let successor = format!("peer-{}", self.next_peer);
        self.next_peer += 1;
        // A canary: the supervisor starts with one more FD it was not told
        // about (FD 9, the file `<name>.canary`, not close-on-exec), as a
        // careless parent would leave one open. A shell opens it and execs
        // the supervisor (same pid, so LISTEN_PID still holds). The library
        // must not pass it on to the successor; `no-stray-fd` finds it in
        // the incumbent if it does.
        let canary = self.root.join(format!("{name}.canary"));
        File::create(&canary).map_err(|e| format!("cannot create {name}.canary: {e}"))?;
        let mut cmd = self.base_command(Path::new("/bin/sh"), &name)?;
        cmd.arg("-c")
            .arg(r#"exec 9<"$0"; exec "$@""#)
            .arg(&canary)
            .arg(&self.bins.supervisor);
        cmd.arg("--control-socket")
            .arg(self.control_socket())
            .arg("--journal")
            .arg(self.journal())
            .args(args);
        let mut successor_armed = None;
        let successor_log = self.log_path(&successor);
        let mut n_env: Vec<(String, String)> = vec![(
            events::ENV_EVENT_LOG.to_string(),
            successor_log.to_string_lossy().into_owned(),
        )];
        n_env.extend(successor_env.iter().cloned());
        if successor_binary == SuccessorBinary::Impostor {
            n_env.push((crate::impostor::ENV_IMPOSTOR.to_string(), "1".to_string()));
        }
        for (k, v) in &n_env {
            if k == handoff::crash::ENV_CRASH_AT {
                successor_armed = Some(v.clone());
            }
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg("--");
        match successor_binary {
            SuccessorBinary::FakePeer => {
                let (program, args) = self.service_command();
                cmd.arg(program).args(args);
            }
            SuccessorBinary::Impostor => {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                cmd.arg(exe);
            }
        }
        let pid = self.spawn_with_listeners(cmd, &name, ProcKind::Supervisor, supervisor_env)?;
        self.processes.push(ProcEntry {
            name: successor.clone(),
            pid: None,
            kind: ProcKind::Successor,
            armed: successor_armed,
            spawned_by: Some(name.clone()),
            exit: None,
            killed_by_harness: false,
        });
        Ok(SupervisorHandle {
            name,
            pid,
            successor,
        })
    }

    /// Wait for a process the harness reaps (a direct child, or an orphan).
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Result<Exit, String> {
        let pid = self
            .process(name)
            .and_then(|p| p.pid)
            .ok_or_else(|| format!("{name} has no known pid"))?;
        let exit = reaper::wait_exit(pid, timeout)
            .ok_or_else(|| format!("{name} (pid {pid}) did not exit within {timeout:?}"))?;
        self.record_exit(name, exit);
        Ok(exit)
    }

    fn record_exit(&mut self, name: &str, exit: Exit) {
        if let Some(p) = self.processes.iter_mut().find(|p| p.name == name) {
            p.exit = Some(exit);
        }
    }

    /// Read every event log of the scenario.
    pub fn logs(&self) -> Vec<ProcessLog> {
        let mut logs: Vec<ProcessLog> = self
            .processes
            .iter()
            .filter_map(|p| {
                let bytes = std::fs::read(self.log_path(&p.name)).ok()?;
                Some(eventlog::parse_log(&p.name, &bytes))
            })
            .collect();
        logs.sort_by_key(|l| eventlog::process_order(&l.process));
        logs
    }

    /// Learn successors' pids from their logs and their supervisors' spawn
    /// events; collect the exit of every process the reaper has seen.
    pub fn refresh(&mut self) {
        let logs = self.logs();
        for log in &logs {
            if let Some(pid) = log.pid()
                && let Some(p) = self.processes.iter_mut().find(|p| p.name == log.process)
                && p.pid.is_none()
            {
                p.pid = Some(pid);
            }
        }
        // A successor that died before logging is known by its supervisor's
        // spawn event.
        for log in &logs {
            for ev in log.events.iter().filter(|e| e.name == events::SPAWN) {
                let pid = ["successor_pid", "child_pid", "pid_of_child"]
                    .iter()
                    .find_map(|k| ev.fields.get(*k).and_then(|v| v.as_u64()));
                if let Some(pid) = pid.and_then(|p| u32::try_from(p).ok())
                    && let Some(p) = self.processes.iter_mut().find(|p| {
                        p.spawned_by.as_deref() == Some(log.process.as_str()) && p.pid.is_none()
                    })
                {
                    p.pid = Some(pid);
                }
            }
        }
        for p in &mut self.processes {
            if p.exit.is_none()
                && let Some(pid) = p.pid
                && let Some(exit) = reaper::exit_of(pid)
            {
                p.exit = Some(exit);
            }
        }
    }

    /// Live processes of this fixture, per `/proc`.
    pub fn live(&self) -> Vec<procs::ProcStat> {
        procs::marked_live_processes(&self.marker)
    }

    /// True when `pid` holds a listening Unix socket bound, right now, to the
    /// control socket path (per the kernel, see [`sockdiag`]).
    pub fn holds_control_socket(&self, pid: u32) -> bool {
        let Ok(fds) = procs::fd_targets(pid) else {
            return false;
        };
        let Ok(unix) = sockdiag::unix_sockets() else {
            return false;
        };
        let path = self.control_socket();
        fds.iter()
            .filter_map(|(_, t)| procs::socket_inode_of_target(t))
            .any(|ino| {
                unix.get(&ino)
                    .is_some_and(|s| s.is_listening() && sockdiag::bound_to(s, &path))
            })
    }

    /// True when `pid` holds no supervisor session: no connected Unix socket
    /// whose peer is outside the process or gone. (The incumbent holds a
    /// session's connection open until it is ready for the next supervisor,
    /// so this is the kernel's view of "not busy".)
    pub fn no_session_open(&self, pid: u32) -> bool {
        let Ok(fds) = procs::fd_targets(pid) else {
            return false;
        };
        let Ok(unix) = sockdiag::unix_sockets() else {
            return false;
        };
        let own: std::collections::HashSet<u64> = fds
            .iter()
            .filter_map(|(_, t)| procs::socket_inode_of_target(t))
            .collect();
        own.iter()
            .filter_map(|ino| unix.get(ino))
            .all(|sock| sock.is_listening() || sock.peer.is_some_and(|peer| own.contains(&peer)))
    }

    /// True when `PING` on every listener is answered by `pid` (a cold
    /// start that binds its control socket and then dies never gets here).
    pub fn serves_everywhere(&self, pid: u32) -> bool {
        self.listener_addrs().iter().all(|(_, addr)| {
            crate::client::request(*addr, "PING", PING_STEP)
                .is_ok_and(|reply| reply == format!("PONG {pid}"))
        })
    }

    /// Wait until every transition has finished: no supervisor alive, and
    /// either exactly one service process that holds the flock, is bound to
    /// the control socket path, has no supervisor session open and answers
    /// `PING` on every listener, or none at all.
    pub fn settle(&mut self, timeout: Duration) -> Result<Settled, String> {
        let mut observed = String::new();
        let settled = handoff::util::poll_until(timeout, POLL_STEP, || {
            self.settled_now(Self::serves_everywhere)
                .map_err(|e| observed = e)
                .ok()
        });
        settled.ok_or_else(|| not_settled(timeout, &observed))
    }

    /// One look at whether the service has settled, as [`Fixture::settle`]
    /// waits for it, with `serves` deciding whether the one live process
    /// serves on every listener; `Err` says what was observed instead.
    pub fn settled_now(&mut self, serves: impl Fn(&Self, u32) -> bool) -> Result<Settled, String> {
        self.refresh();
        let live = self.live();
        if live.is_empty() {
            return Ok(Settled::NoService);
        }
        if let [only] = live.as_slice() {
            let holders = procs::flock_holders(&self.lock_file()).unwrap_or_default();
            let is_supervisor = self
                .name_of(only.pid)
                .is_some_and(|n| n.starts_with("supervisor-"));
            if !is_supervisor
                && holders.len() == 1
                && holders[0].pid == only.pid
                && self.holds_control_socket(only.pid)
                && self.no_session_open(only.pid)
                && serves(self, only.pid)
            {
                self.refresh();
                let name = self
                    .name_of(only.pid)
                    .map_or_else(|| format!("<unknown pid {}>", only.pid), str::to_string);
                return Ok(Settled::Incumbent {
                    name,
                    pid: only.pid,
                });
            }
        }
        Err(self.describe_state(&live))
    }

    /// A one-line description of the live processes and the flock, for
    /// error messages.
    pub fn describe_state(&self, live: &[procs::ProcStat]) -> String {
        let names: Vec<String> = live
            .iter()
            .map(|p| match self.name_of(p.pid) {
                Some(n) => format!("{n} (pid {}, {})", p.pid, p.state),
                None => format!("pid {} {} ({})", p.pid, p.comm, p.state),
            })
            .collect();
        let holders: Vec<String> = procs::flock_holders(&self.lock_file())
            .unwrap_or_default()
            .iter()
            .map(|h| {
                self.name_of(h.pid)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("pid {}", h.pid))
            })
            .collect();
        let bound: Vec<String> = live
            .iter()
            .filter(|p| self.holds_control_socket(p.pid))
            .map(|p| {
                self.name_of(p.pid)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("pid {}", p.pid))
            })
            .collect();
        format!(
            "live [{}], flock held by [{}], control socket bound by [{}]",
            names.join(", "),
            holders.join(", "),
            bound.join(", ")
        )
    }

    /// Wait until some log has an event called `name` (e.g. the incumbent
    /// started draining), at most `timeout`.
    pub fn wait_for_event(
        &self,
        process: &str,
        event: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let path = self.log_path(process);
        handoff::util::poll_until(timeout, POLL_STEP, || {
            let bytes = std::fs::read(&path).ok()?;
            eventlog::parse_log(process, &bytes)
                .has(event)
                .then_some(())
        })
        .ok_or_else(|| {
            format!("waited {timeout:?} for event {event} in {process}'s log; it never came")
        })
    }

    /// Kill every live process of the fixture and collect every exit.
    /// Called by `Drop`; call it earlier to inspect the exits.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live = self.live();
            if live.is_empty() || Instant::now() >= deadline {
                break;
            }
            for p in &live {
                if reaper::signal(p.pid, Signal::SIGKILL)
                    && let Some(entry) = self.processes.iter_mut().find(|e| e.pid == Some(p.pid))
                {
                    entry.killed_by_harness = true;
                }
            }
            // Wait for the exits themselves: the reaper (every process here
            // is a descendant of this subreaper) reports each one. Then look
            // again, for anything spawned meanwhile.
            for p in &live {
                reaper::wait_exit(p.pid, handoff::util::remaining(deadline));
            }
        }
        // Wait for the reaper to collect the processes that were ours to
        // reap (it may lag the kill by a moment).
        for i in 0..self.processes.len() {
            let entry = &self.processes[i];
            if entry.exit.is_none()
                && let Some(pid) = entry.pid
                && entry.killed_by_harness
                && let Some(exit) = reaper::wait_exit(pid, Duration::from_secs(2))
            {
                self.processes[i].exit = Some(exit);
            }
        }
        self.refresh();
        for p in &self.processes {
            if let Some(pid) = p.pid {
                reaper::take(pid);
            }
        }
    }

    /// Take the directory out of the fixture (after [`Fixture::teardown`]):
    /// it is removed when the returned guard drops, unless kept.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self.dir.take()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.teardown();
    }
}
