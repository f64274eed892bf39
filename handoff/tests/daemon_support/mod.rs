//! Shared by the daemon, HTTP and interop tests: run the real
//! `handoff-supervisor daemon` with the real `http_server` example, talk to
//! its trigger socket, and drive HTTP by hand over `TcpStream`.
//!
//! Every wait has a deadline and names what it waited for: a child's exit
//! is waited for itself (`wait_exit`); what no event announces (a socket
//! answering, a status) is probed with `handoff::util::poll_until`. A daemon is started in its own
//! process group, which `Drop` kills, so a failing test leaks no process.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Generous bound for anything that should take milliseconds, so a loaded
/// 2-core CI machine does not flake.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The supervisor binary under test.
pub fn supervisor_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_handoff-supervisor"))
}

/// The binary of `handoff/examples/<name>.rs`. `cargo test` builds the
/// examples; when a single test target is run (`cargo test --test x`) they
/// may be missing or older than their source, and are built here.
pub fn example_binary(name: &str) -> PathBuf {
    example_binary_with_features(name, &[])
}

/// [`example_binary`] for an example that needs `features` of the crate
/// (`cargo test` skips building those unless the features are on).
pub fn example_binary_with_features(name: &str, features: &[&str]) -> PathBuf {
    let target_debug = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("test binary lives in target/<profile>/deps");
    let binary = target_debug.join("examples").join(name);
    // Let cargo decide whether the example is fresh: it depends on the
    // library and on shared example modules, not only on its own source,
    // and a test run with `--test` filters does not build examples.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "handoff", "--example", name])
        .args(features.iter().flat_map(|f| ["--features", f]))
        .status()
        .expect("run cargo to build the example");
    assert!(status.success(), "cargo build --example {name} failed");
    assert!(
        binary.exists(),
        "{} missing after the build",
        binary.display()
    );
    binary
}

/// Poll `probe` until it returns `Some`, at most until `deadline`; panics
/// naming `what` otherwise.
pub fn wait_for<T>(what: &str, deadline: Duration, probe: impl FnMut() -> Option<T>) -> T {
    handoff::util::poll_until(deadline, POLL_STEP, probe)
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Pause between probes of a condition no event announces.
const POLL_STEP: Duration = Duration::from_millis(5);

/// Wait for `child` to exit, at most `deadline`: a scoped thread blocks in
/// `wait` and reports over a channel (the exit itself, not a poll); past
/// the deadline the child is killed, which ends that wait, and the test
/// fails naming `what`.
pub fn wait_exit(child: &mut Child, what: &str, deadline: Duration) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(deadline) {
            Ok(status) => status.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = rx.recv();
                panic!("timed out after {deadline:?} waiting for {what}");
            }
        }
    })
}

/// True while `pid` exists (a zombie counts as gone once reaped by its
/// parent; `kill(pid, 0)` sees it until then).
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Config pieces for a daemon running `http_server` on one listener named
/// `http`, everything in `dir`, with millisecond timeouts.
pub struct Setup {
    pub dir: tempfile::TempDir,
    /// `[listeners]` lines; empty for inherited listeners.
    pub listeners: String,
    /// The service binary.
    pub binary: PathBuf,
    /// Extra TOML appended to the config (e.g. a `[restart]` table).
    pub extra: String,
}

impl Setup {
    pub fn http() -> Self {
        Self::example(example_binary("http_server"))
    }

    /// The same, running the service `binary`.
    pub fn example(binary: PathBuf) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            listeners: "http = \"127.0.0.1:0\"\n".into(),
            binary,
            extra: String::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn trigger_socket(&self) -> PathBuf {
        self.path("trigger.sock")
    }

    /// Write `daemon.toml` and return its path.
    pub fn write_config(&self) -> PathBuf {
        let data = self.path("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = format!(
            r#"control_socket = "control.sock"
trigger_socket = "trigger.sock"
journal = "handoff.journal"
[listeners]
{listeners}
[service]
binary = "{binary}"
args = ["{control}", "{data}"]
env = {{ HANDOFF_HEARTBEAT_MS = "50", HANDOFF_LIVENESS_MS = "5000", RUST_LOG = "warn" }}
[timeouts]
drain_grace_ms = 5000
deadline_ms = 15000
liveness_ms = 5000
hello_timeout_ms = 5000
probe_timeout_ms = 10000
stop_timeout_ms = 5000
retire_timeout_ms = 5000
{extra}"#,
            listeners = self.listeners,
            binary = self.binary.display(),
            control = self.path("control.sock").display(),
            data = data.display(),
            extra = self.extra,
        );
        let path = self.path("daemon.toml");
        std::fs::write(&path, config).expect("write config");
        path
    }

    /// A `Command` for `handoff-supervisor daemon --config <dir>/daemon.toml`
    /// in its own process group, stderr to `<dir>/daemon.stderr`.
    pub fn daemon_command(&self) -> Command {
        let config = self.write_config();
        let stderr = std::fs::File::create(self.path("daemon.stderr")).expect("stderr file");
        let mut cmd = Command::new(supervisor_binary());
        cmd.arg("daemon")
            .arg("--config")
            .arg(config)
            .env("HANDOFF_EVENT_LOG", self.path("events.jsonl"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        cmd
    }

    /// Start the daemon and wait until it reports state `serving`.
    pub fn start(&self) -> Daemon {
        let child = self.daemon_command().spawn().expect("spawn daemon");
        self.adopt(child)
    }

    /// Wrap an already spawned daemon (own process group) and wait until it
    /// serves.
    pub fn adopt(&self, child: Child) -> Daemon {
        let mut daemon = Daemon {
            child,
            trigger_socket: self.trigger_socket(),
            stderr: self.path("daemon.stderr"),
            reaped: None,
        };
        daemon.wait_serving();
        daemon
    }

    /// The daemon's stderr so far, for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("daemon.stderr")).unwrap_or_default()
    }
}

/// A running daemon; killed with its whole process group on drop.
pub struct Daemon {
    pub child: Child,
    pub trigger_socket: PathBuf,
    stderr: PathBuf,
    reaped: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send one trigger line, return the reply line.
    pub fn request(&self, line: &str) -> Result<String, String> {
        trigger_line(&self.trigger_socket, line)
    }

    /// `status`, parsed.
    pub fn status(&self) -> Result<serde_json::Value, String> {
        let reply = self.request("status")?;
        serde_json::from_str(&reply).map_err(|e| format!("status reply {reply:?}: {e}"))
    }

    /// Wait until `status` satisfies `pred`; returns that status. Fails at
    /// once, with the daemon's stderr, if the daemon exits.
    pub fn wait_status(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = String::new();
        let status = handoff::util::poll_until(DEADLINE, POLL_STEP, || {
            if let Ok(Some(exit)) = self.child.try_wait() {
                self.reaped = Some(exit);
                panic!(
                    "the daemon exited ({exit}) while waiting for {what}; its stderr:\n{}",
                    self.stderr_text()
                );
            }
            match self.status() {
                Ok(s) if pred(&s) => Some(s),
                Ok(s) => {
                    last = s.to_string();
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        status.unwrap_or_else(|| {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}; last status: {last}\ndaemon stderr:\n{}",
                self.stderr_text()
            )
        })
    }

    /// The daemon's stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_serving(&mut self) {
        self.wait_status("the daemon to report state \"serving\"", |s| {
            s["state"] == "serving"
        });
    }

    /// The address of listener `name`, from `status`.
    pub fn listener_addr(&self, name: &str) -> String {
        let status = self.status().expect("status");
        status["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == name))
            .and_then(|l| l["addr"].as_str())
            .unwrap_or_else(|| panic!("no listener {name:?} in {status}"))
            .to_string()
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = wait_exit(
            &mut self.child,
            "the daemon to exit after SIGTERM",
            DEADLINE,
        );
        self.reaped = Some(status);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole group: the daemon and every service process it started.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        if self.reaped.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// Send one trigger line to `socket`, return the reply line.
pub fn trigger_line(socket: &Path, line: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    writeln!(stream, "{line}").map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply.trim_end().to_string())
}

/// One `GET /` over a fresh connection; `Ok(body)` for a `200`, `Err(why)`
/// for anything else (refused, reset, timeout, other status, short body).
pub fn http_get(addr: &str) -> Result<String, String> {
    http_request(addr, "GET /")
}

/// One request (`"METHOD /target"`, no body) over a fresh connection, as
/// [`http_get`].
pub fn http_request(addr: &str, request: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("{request} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8(response).map_err(|_| "response is not UTF-8".to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status line {:?}", head.lines().next()));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    if body.len() != length {
        return Err(format!(
            "body of {} bytes, Content-Length {length}",
            body.len()
        ));
    }
    Ok(body.to_string())
}

/// The pid an `http_server` put in its reply body (`pid=<n>`).
pub fn served_by(body: &str) -> u32 {
    body.trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {body:?}"))
}

/// Datagrams received on a fake `$NOTIFY_SOCKET`, until one satisfies
/// `pred` (bounded).
pub fn notifications_until(
    socket: &std::os::unix::net::UnixDatagram,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let until = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no sd_notify datagram with {what}; got {seen:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        let Ok(n) = socket.recv(&mut buf) else {
            panic!("no sd_notify datagram with {what}; got {seen:?}");
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = pred(&text);
        seen.push(text);
        if done {
            return seen;
        }
    }
}
