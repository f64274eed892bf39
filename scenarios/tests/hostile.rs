//! Hostile peers and hostile files, against the real processes.
//!
//! Every case cold-starts a real `fake-peer` incumbent on a listener this
//! test holds (as systemd would), writes to it, then plays one hostile part:
//!
//! - a hostile **supervisor** on the incumbent's control socket (garbage, a
//!   4 GiB length prefix, cut frames, unknown variants, wrong versions and
//!   ids, a duplicate `Hello`, silence, `Commit` before `SealComplete`, a
//!   second supervisor, a supervisor of another uid);
//! - hostile **successors** (`hostile-successor` in `fake-peers`) spawned by
//!   the real in-process [`Supervisor`];
//! - hostile **files**: corrupt journals, a journal directory that cannot
//!   be written.
//!
//! For each case it checks: a typed error naming what was expected and what
//! came (from the incumbent's JSON event log, the supervisor's `Result`, or
//! the refusal message), the time to that error, and afterwards that the
//! incumbent still serves with the flock (`PING` answers with its pid, the
//! flock is held and the pid file names it) and that no acknowledged write
//! was lost (a `PUT` before and after, `GET` of every acknowledged key).
//!
//! Two more trials check FD hygiene: a successor's open FDs are exactly
//! stdio, the listener and its control socket; the supervisor's FD count
//! does not grow across 20 handoffs.
//!
//! Cases are values in [`supervisor_cases`], [`successor_cases`] and
//! [`file_cases`]; one runner per kind. The table of results is printed at
//! the end of the run (`-- --nocapture` is not needed: libtest-mimic does not
//! capture).
//!
//! Reproduce: `cargo test -p scenarios --test hostile` (one case:
//! `cargo test -p scenarios --test hostile -- --exact '<case name>'`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use handoff::frame::{encode, read_message, write_message};
use handoff::lock::{holder_pid, is_locked};
use handoff::util::monotonic_ns;
use handoff::{
    Error, HandoffId, Message, Side, SpawnSpec, StateJournal, Supervisor, SupervisorTimeouts,
};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

/// Bound on every wait in this file; each wait names what it waited for.
const WAIT: Duration = Duration::from_secs(10);
/// Poll step of condition waits.
const STEP: Duration = Duration::from_millis(2);
/// Bound on the time from a hostile input to the error it provokes. The
/// slowest cases wait for a 200-250 ms timeout; the rest are immediate.
const ERROR_BOUND: Duration = Duration::from_secs(2);
/// The incumbent's wait for `HelloAck` (what a silent supervisor costs).
const INCUMBENT_HELLO_TIMEOUT_MS: u64 = 200;
/// The supervisor's wait for a hostile successor's `Hello`.
const HOSTILE_SUCCESSOR_HELLO: Duration = Duration::from_millis(250);
/// The uid of `nobody`, for the other-uid client.
const NOBODY: u32 = 65534;
/// Handoffs in the supervisor FD-count trial.
const FD_TRIAL_HANDOFFS: usize = 20;

/// One row of the printed table.
struct Row {
    case: String,
    error: String,
    time_to_error: Duration,
    serving: bool,
}

fn rows() -> &'static Mutex<Vec<Row>> {
    static ROWS: OnceLock<Mutex<Vec<Row>>> = OnceLock::new();
    ROWS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Trials take it shared; the FD-count trial takes it exclusively, so no
/// other trial opens FDs in this process while it counts.
static FD_COUNT_GUARD: RwLock<()> = RwLock::new(());

fn main() {
    let args = Arguments::from_args();
    // This process is the supervisor of the in-process cases: its events
    // (the journal recovery's report among them) go to a JSON log too.
    // SAFETY: no other thread exists yet, so nothing reads the environment
    // concurrently; children get their own HANDOFF_EVENT_LOG explicitly.
    unsafe { std::env::set_var(handoff::events::ENV_EVENT_LOG, supervisor_event_log()) };
    handoff::events::init_from_env();
    let mut trials = Vec::new();
    for case in supervisor_cases() {
        let name = case.name;
        trials.push(Trial::test(name, move || {
            shared(|| run_supervisor_case(&case))
        }));
    }
    for case in successor_cases() {
        let name = case.name;
        trials.push(Trial::test(name, move || {
            shared(|| run_successor_case(&case))
        }));
    }
    for case in file_cases() {
        let name = case.name;
        trials.push(Trial::test(name, move || shared(|| run_file_case(&case))));
    }
    trials.push(Trial::test("second supervisor during a handoff", || {
        shared(second_supervisor_during_a_handoff)
    }));
    trials.push(Trial::test(
        "second handoff on the same Supervisor while one runs",
        || shared(second_handoff_on_the_same_supervisor),
    ));
    trials.push(Trial::test("supervisor of another uid (nobody)", || {
        shared(supervisor_of_another_uid)
    }));
    trials.push(Trial::test(
        "fd hygiene: a successor inherits exactly stdio, listeners and its control socket",
        || shared(successor_fds_are_exactly_the_contract),
    ));
    trials.push(Trial::test(
        "fd hygiene: the supervisor's FD count does not grow across handoffs",
        || {
            let _exclusive = FD_COUNT_GUARD.write().unwrap_or_else(|p| p.into_inner());
            supervisor_fd_count_is_stable().map_err(Failed::from)
        },
    ));
    let conclusion = libtest_mimic::run(&args, trials);
    print_table();
    if !conclusion.has_failed() {
        let _ = std::fs::remove_file(supervisor_event_log());
    } else {
        eprintln!(
            "the in-process supervisor's events are in {}",
            supervisor_event_log().display()
        );
    }
    conclusion.exit();
}

/// The in-process supervisor's JSON event log.
fn supervisor_event_log() -> PathBuf {
    std::env::temp_dir().join(format!("hostile-supervisor-{}.jsonl", std::process::id()))
}

/// The supervisor's first event named `name` whose `error` mentions `needle`.
fn supervisor_event(name: &str, needle: &str) -> Option<Value> {
    let text = std::fs::read_to_string(supervisor_event_log()).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|e| e["event"] == name && e["error"].as_str().is_some_and(|m| m.contains(needle)))
}

fn shared(f: impl FnOnce() -> Result<(), String>) -> Result<(), Failed> {
    let _shared = FD_COUNT_GUARD.read().unwrap_or_else(|p| p.into_inner());
    f().map_err(Failed::from)
}

fn print_table() {
    let mut rows = rows().lock().unwrap_or_else(|p| p.into_inner());
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| a.case.cmp(&b.case));
    println!();
    println!("| case | error observed | time to error | incumbent serving |");
    println!("| --- | --- | --- | --- |");
    for row in rows.iter() {
        println!(
            "| {} | {} | {:.1} ms | {} |",
            row.case,
            row.error.replace('|', "\\|"),
            row.time_to_error.as_secs_f64() * 1e3,
            if row.serving { "yes" } else { "NO" }
        );
    }
    println!();
}

fn record(case: &str, error: String, time_to_error: Duration, serving: bool) {
    rows().lock().unwrap_or_else(|p| p.into_inner()).push(Row {
        case: case.to_owned(),
        error,
        time_to_error,
        serving,
    });
}

// ---------------------------------------------------------------------------
// Binaries and the fixture
// ---------------------------------------------------------------------------

struct Bins {
    fake_peer: PathBuf,
    hostile_successor: PathBuf,
    hostile_client: PathBuf,
}

/// `fake-peer`, `hostile-successor` and `hostile-client`: from
/// `HANDOFF_BIN_DIR` if set, else built once (`$CARGO build -p handoff -p
/// fake-peers --bins --features handoff/crash-points`, same profile and
/// target dir as this test).
///
/// Not through `harness::bins::ensure_built`: that starts the harness's
/// process-wide reaper, which would reap the children this test checks the
/// supervisor reaps itself.
fn bins() -> Result<&'static Bins, String> {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = match std::env::var_os(harness::bins::ENV_BIN_DIR) {
            Some(dir) => PathBuf::from(dir),
            None => build_bins()?,
        };
        let bins = Bins {
            fake_peer: dir.join("fake-peer"),
            hostile_successor: dir.join("hostile-successor"),
            hostile_client: dir.join("hostile-client"),
        };
        for bin in [
            &bins.fake_peer,
            &bins.hostile_successor,
            &bins.hostile_client,
        ] {
            if !bin.is_file() {
                return Err(format!(
                    "{} is missing; build it with `cargo build -p fake-peers --bins`",
                    bin.display()
                ));
            }
        }
        Ok(bins)
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn build_bins() -> Result<PathBuf, String> {
    let (mut cmd, bin_dir) = harness::bins::build_command()?;
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build the binaries: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the binaries failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(bin_dir)
}

/// Poll `probe` until it yields a value, or fail naming `what`.
fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> Result<T, String> {
    handoff::util::poll_until(WAIT, STEP, probe)
        .ok_or_else(|| format!("timed out after {WAIT:?} waiting for {what}"))
}

/// One incumbent, its listener, its directory, and every write it
/// acknowledged. Dropping it kills and reaps every process it started; the
/// directory is kept (and named) when the case failed.
struct Fixture {
    case: String,
    dir: PathBuf,
    listener: TcpListener,
    incumbent: Child,
    /// Processes that are done being the incumbent, or successors we own.
    retired: Vec<Child>,
    acked: Vec<(String, String)>,
    passed: bool,
}

impl Fixture {
    /// Cold-start a `fake-peer` incumbent on a fresh listener, wait until it
    /// answers, and acknowledge one write.
    fn start(case: &str) -> Result<Self, String> {
        let bins = bins()?;
        let slug: String = case
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "hostile-{}-{}-{slug}",
            std::process::id(),
            HandoffId::new().as_u128() as u32
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        // Traversable by other uids, so the `nobody` client can reach the
        // control socket's file (whose own mode then decides).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::create_dir(dir.join("data")).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let incumbent = handoff::fd::spawn_with_listeners(
            &bins.fake_peer,
            &peer_args(&dir),
            &peer_env(&dir),
            &[("kv".to_owned(), listener.as_raw_fd())],
            None,
        )
        .map_err(|e| format!("spawn fake-peer: {e}"))?;
        let mut fixture = Fixture {
            case: case.to_owned(),
            dir,
            listener,
            incumbent,
            retired: Vec::new(),
            acked: Vec::new(),
            passed: false,
        };
        let pid = fixture.incumbent.id();
        let addr = fixture.addr();
        wait_for("the cold-started fake-peer to answer PING", || {
            (request(addr, "PING").ok()? == format!("PONG {pid}")).then_some(())
        })?;
        fixture.wait_session_free()?;
        fixture.put("before")?;
        Ok(fixture)
    }

    fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn incumbent_pid(&self) -> u32 {
        self.incumbent.id()
    }

    /// `PUT <label>-<n> v-<n>`; must be acknowledged.
    fn put(&mut self, label: &str) -> Result<(), String> {
        let n = self.acked.len();
        let (key, value) = (format!("{label}-{n}"), format!("v-{n}"));
        let reply = request(self.addr(), &format!("PUT {key} {value}"))
            .map_err(|e| format!("PUT {key}: {e}"))?;
        if !reply.starts_with("OK ") {
            return Err(format!("PUT {key} was not acknowledged: {reply:?}"));
        }
        self.acked.push((key, value));
        Ok(())
    }

    /// Wait until the incumbent takes a new supervisor session (answers
    /// `Hello`, not `Refused`), then end that probe session and wait for the
    /// incumbent to close it.
    fn wait_session_free(&self) -> Result<(), String> {
        let path = self.control_socket();
        wait_for("the incumbent to accept a new supervisor session", || {
            let mut stream = UnixStream::connect(&path).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            match read_message(&mut stream) {
                Ok((_, Message::Hello { .. })) => {
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    let mut sink = [0u8; 64];
                    while let Ok(n) = stream.read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                    }
                    Some(())
                }
                _ => None,
            }
        })
    }

    /// The incumbent still serves with the flock, and no acknowledged write
    /// is lost: a new session is accepted, `PING` answers with its pid, the
    /// flock is held and the pid file names it, a new `PUT` is acknowledged,
    /// and every acknowledged key reads back.
    fn check_serving(&mut self) -> Result<(), String> {
        self.wait_session_free()?;
        let pid = self.incumbent_pid();
        let pong = request(self.addr(), "PING").map_err(|e| format!("PING: {e}"))?;
        if pong != format!("PONG {pid}") {
            return Err(format!("PING answered {pong:?}, expected PONG {pid}"));
        }
        if !is_locked(&self.data_dir()).map_err(|e| e.to_string())? {
            return Err("nobody holds the data-dir flock".into());
        }
        if holder_pid(&self.data_dir()) != Some(pid) {
            return Err(format!(
                "the pid file names {:?}, not the incumbent {pid}",
                holder_pid(&self.data_dir())
            ));
        }
        self.put("after")?;
        for (key, value) in &self.acked {
            let got = request(self.addr(), &format!("GET {key}"))
                .map_err(|e| format!("GET {key}: {e}"))?;
            if got != format!("VALUE {value}") {
                return Err(format!(
                    "acknowledged write {key}={value} lost: GET says {got:?}"
                ));
            }
        }
        Ok(())
    }

    /// Every event the incumbent (pid) logged so far.
    fn events_of(&self, pid: u32) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["pid"].as_u64() == Some(u64::from(pid)))
            .collect()
    }

    /// Wait for the incumbent's first event named `name` logged after
    /// `since_mono_ns`.
    fn wait_event(&self, name: &str, since_mono_ns: u64) -> Result<Value, String> {
        let pid = self.incumbent_pid();
        wait_for(
            &format!("event {name} from the incumbent (pid {pid})"),
            || {
                self.events_of(pid).into_iter().find(|e| {
                    e["event"] == name && e["mono_ns"].as_u64().is_some_and(|t| t >= since_mono_ns)
                })
            },
        )
    }

    fn supervisor(&self, timeouts: SupervisorTimeouts) -> Result<Supervisor, String> {
        Ok(Supervisor::new(&self.control_socket())
            .map_err(|e| e.to_string())?
            .with_listener("kv", self.listener.as_raw_fd())
            .with_timeouts(timeouts))
    }

    fn spec(&self, binary: &Path, extra_env: &[(&str, String)]) -> SpawnSpec {
        let mut spec = SpawnSpec::new(binary);
        spec.args = peer_args(&self.dir);
        spec.env = peer_env(&self.dir);
        spec.env
            .extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        spec.deadline = Duration::from_secs(5);
        spec.drain_grace = Duration::from_secs(2);
        spec
    }

    /// After a commit: the old incumbent must exit 0; the successor is the
    /// incumbent now.
    fn committed_to(&mut self, successor: Child) -> Result<(), String> {
        let old = std::mem::replace(&mut self.incumbent, successor);
        let pid = old.id();
        self.retired.push(old);
        let old = self.retired.last_mut().expect("just pushed");
        let status = wait_for(&format!("the old incumbent {pid} to exit"), || {
            old.try_wait().ok().flatten()
        })?;
        if !status.success() {
            return Err(format!("the old incumbent {pid} exited with {status}"));
        }
        Ok(())
    }

    fn finish(mut self) {
        self.passed = true;
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.incumbent).chain(self.retired.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.passed {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "case {:?} failed; its files (event log, kv.log, process output) are in {}",
                self.case,
                self.dir.display()
            );
        }
    }
}

fn peer_args(dir: &Path) -> Vec<String> {
    vec![
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--control-socket".into(),
        dir.join("control.sock").display().to_string(),
    ]
}

/// Millisecond timeouts for every role, and the JSON event log.
fn peer_env(dir: &Path) -> Vec<(String, String)> {
    [
        (
            "HANDOFF_EVENT_LOG",
            dir.join("events.jsonl").display().to_string(),
        ),
        (
            "HANDOFF_HELLO_TIMEOUT_MS",
            INCUMBENT_HELLO_TIMEOUT_MS.to_string(),
        ),
        // Generous: a real handoff spawns and greets the successor between
        // HelloAck and PrepareHandoff; no hostile case waits on it.
        ("HANDOFF_LIVENESS_MS", "5000".into()),
        ("HANDOFF_HEARTBEAT_MS", "20".into()),
        ("HANDOFF_REACQUIRE_WINDOW_MS", "500".into()),
        ("HANDOFF_REACQUIRE_STEP_MS", "5".into()),
        ("HANDOFF_BEGIN_TIMEOUT_MS", "5000".into()),
        ("HANDOFF_LOCK_TIMEOUT_MS", "2000".into()),
        // The children's warnings are in their event logs; keep stderr quiet.
        ("RUST_LOG", "error".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn request(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    harness::client::request(addr, line, Duration::from_secs(5))
}

/// Timeouts of an in-process supervisor facing a hostile successor.
fn hostile_successor_timeouts() -> SupervisorTimeouts {
    SupervisorTimeouts {
        liveness: Duration::from_secs(2),
        hello_read: HOSTILE_SUCCESSOR_HELLO,
        wire_slack: Duration::from_millis(200),
        min_read: Duration::from_millis(20),
        probe: Duration::from_secs(2),
    }
}

/// Timeouts of an in-process supervisor driving a real handoff: generous,
/// none is reached when the peers behave.
fn real_handoff_timeouts() -> SupervisorTimeouts {
    SupervisorTimeouts {
        liveness: Duration::from_secs(3),
        hello_read: Duration::from_secs(3),
        wire_slack: Duration::from_millis(200),
        min_read: Duration::from_millis(20),
        probe: Duration::from_secs(3),
    }
}

fn contains_all(text: &str, expected: &[&str]) -> Result<(), String> {
    for want in expected {
        if !text.contains(want) {
            return Err(format!("error {text:?} does not mention {want:?}"));
        }
    }
    Ok(())
}

fn elapsed_since(mono_ns: u64, event: &Value) -> Duration {
    Duration::from_nanos(
        event["mono_ns"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(mono_ns),
    )
}

fn check_bound(case: &str, time_to_error: Duration) -> Result<(), String> {
    if time_to_error > ERROR_BOUND {
        return Err(format!(
            "{case}: the error took {time_to_error:?}, more than {ERROR_BOUND:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Hostile supervisors on the incumbent's control socket
// ---------------------------------------------------------------------------

/// A message the hostile supervisor can send.
#[derive(Debug, Clone, Copy)]
enum Msg {
    Hello,
    HelloAck,
    Prepare,
    SealRequest,
    Commit,
}

impl Msg {
    fn build(self, handoff_id: HandoffId) -> Message {
        match self {
            Msg::Hello => Message::Hello {
                role: Side::Incumbent,
                pid: std::process::id(),
                build_id: b"hostile".to_vec(),
                proto_min: 1,
                proto_max: 1,
                capabilities: Vec::new(),
            },
            Msg::HelloAck => Message::HelloAck {
                proto_version_chosen: 1,
                handoff_id,
            },
            Msg::Prepare => Message::PrepareHandoff {
                handoff_id,
                successor_pid: 1,
                deadline_ms: 5_000,
                drain_grace_ms: 1_000,
            },
            Msg::SealRequest => Message::SealRequest { handoff_id },
            Msg::Commit => Message::Commit { handoff_id },
        }
    }
}

/// One step of a hostile supervisor's script. The session's handoff_id is
/// the one its `HelloAck` announced.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Read the incumbent's `Hello`.
    ReadHello,
    /// A valid frame (version 1, the session's id).
    Send(Msg),
    /// `HelloAck` choosing this version.
    HelloAckChoosing(u16),
    /// A valid message with another handoff_id.
    SendWithWrongId(Msg),
    /// A valid message in a frame stamped with this version.
    SendAtFrameVersion(u16, Msg),
    /// These bytes, as they are.
    Raw(&'static [u8]),
    /// A frame (version 1) around this payload.
    Payload(&'static str),
    /// The first half of a valid frame.
    HalfOf(Msg),
    /// Read frames until `Drained` (heartbeats skipped).
    AwaitDrained,
}

/// What the hostile supervisor does once its script is done.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Close the connection.
    Close,
    /// Keep it open (silent) until the incumbent reports the error.
    Hold,
}

struct SupervisorCase {
    name: &'static str,
    steps: &'static [Step],
    then: Then,
    /// The incumbent's event that reports the error.
    event: &'static str,
    /// Substrings the reported error must contain.
    expect: &'static [&'static str],
    /// The incumbent drained, so it must log that it resumed.
    resumes: bool,
}

const PROTOCOL_ERROR: &str = "handoff.incumbent.protocol_error";
const SUPERVISOR_LOST: &str = "handoff.incumbent.supervisor_lost";

fn supervisor_cases() -> Vec<SupervisorCase> {
    use Msg::*;
    use Step::*;
    let case = |name, steps, then, event, expect| SupervisorCase {
        name,
        steps,
        then,
        event,
        expect,
        resumes: false,
    };
    vec![
        case(
            "supervisor sends garbage bytes (an HTTP request)",
            &[ReadHello, Raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
            Then::Close,
            PROTOCOL_ERROR,
            &["frame of 542393671 bytes exceeds the 1048576-byte cap"],
        ),
        case(
            "supervisor sends a garbage payload in a valid header",
            &[ReadHello, Raw(b"\x0b\x00\x00\x00\x01\x00not json!!!")],
            Then::Close,
            PROTOCOL_ERROR,
            &["undecodable message payload", "expected"],
        ),
        case(
            "supervisor sends a 4 GiB length prefix",
            &[ReadHello, Raw(&[0xff, 0xff, 0xff, 0xff, 0x01, 0x00])],
            Then::Hold,
            PROTOCOL_ERROR,
            &["frame of 4294967295 bytes exceeds the 1048576-byte cap"],
        ),
        case(
            "supervisor cuts a frame in the middle, then is silent",
            &[ReadHello, HalfOf(HelloAck)],
            Then::Hold,
            SUPERVISOR_LOST,
            &["timed out waiting for HelloAck"],
        ),
        case(
            "supervisor cuts a frame in the middle, then closes",
            &[ReadHello, HalfOf(HelloAck)],
            Then::Close,
            PROTOCOL_ERROR,
            &["truncated frame: expected", "got"],
        ),
        case(
            "supervisor sends a valid frame of an unknown variant",
            &[ReadHello, Payload(r#"{"type":"Gossip","handoff_id":"x"}"#)],
            Then::Close,
            PROTOCOL_ERROR,
            &["unknown variant `Gossip`", "expected one of"],
        ),
        case(
            "supervisor chooses a protocol version we do not speak",
            &[ReadHello, HelloAckChoosing(2)],
            Then::Close,
            PROTOCOL_ERROR,
            &["no common protocol version", "we support 1..=1", "2..=2"],
        ),
        case(
            "supervisor stamps a frame with another version after the handshake",
            &[ReadHello, Send(HelloAck), SendAtFrameVersion(2, Prepare)],
            Then::Close,
            PROTOCOL_ERROR,
            &[
                "frame carries protocol version 2",
                "version 1 was negotiated",
            ],
        ),
        case(
            "supervisor sends a wrong handoff_id",
            &[ReadHello, Send(HelloAck), SendWithWrongId(Prepare)],
            Then::Close,
            PROTOCOL_ERROR,
            &["wrong handoff_id: expected", "got"],
        ),
        case(
            "supervisor sends a duplicate Hello instead of HelloAck",
            &[ReadHello, Send(Hello)],
            Then::Close,
            PROTOCOL_ERROR,
            &["expected HelloAck, got Hello"],
        ),
        case(
            "supervisor connects and never speaks",
            &[],
            Then::Hold,
            SUPERVISOR_LOST,
            &["timed out waiting for HelloAck"],
        ),
        case(
            "supervisor sends Commit right after HelloAck",
            &[ReadHello, Send(HelloAck), Send(Commit)],
            Then::Hold,
            PROTOCOL_ERROR,
            &[
                "Commit before SealComplete is rejected",
                "awaiting PrepareHandoff",
            ],
        ),
        SupervisorCase {
            resumes: true,
            ..case(
                "supervisor sends Commit after Drained, before SealComplete",
                &[
                    ReadHello,
                    Send(HelloAck),
                    Send(Prepare),
                    AwaitDrained,
                    Send(Commit),
                ],
                Then::Hold,
                PROTOCOL_ERROR,
                &[
                    "Commit before SealComplete is rejected",
                    "awaiting SealRequest",
                ],
            )
        },
        case(
            "supervisor sends SealRequest before PrepareHandoff",
            &[ReadHello, Send(HelloAck), Send(SealRequest)],
            Then::Hold,
            PROTOCOL_ERROR,
            &["expected PrepareHandoff, got SealRequest"],
        ),
    ]
}

fn read_frame_within(stream: &mut UnixStream, what: &str) -> Result<Message, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    read_message(stream)
        .map(|(_, m)| m)
        .map_err(|e| format!("reading {what}: {e}"))
}

fn run_script(
    stream: &mut UnixStream,
    steps: &[Step],
    handoff_id: HandoffId,
) -> Result<(), String> {
    let send = |stream: &mut UnixStream, version: u16, message: &Message| {
        write_message(stream, version, message).map_err(|e| format!("send: {e}"))
    };
    for step in steps {
        match *step {
            Step::ReadHello => match read_frame_within(stream, "the incumbent's Hello")? {
                Message::Hello {
                    role: Side::Incumbent,
                    ..
                } => {}
                other => return Err(format!("expected the incumbent's Hello, got {other:?}")),
            },
            Step::Send(m) => send(stream, 1, &m.build(handoff_id))?,
            Step::HelloAckChoosing(version) => send(
                stream,
                1,
                &Message::HelloAck {
                    proto_version_chosen: version,
                    handoff_id,
                },
            )?,
            Step::SendWithWrongId(m) => send(stream, 1, &m.build(HandoffId::new()))?,
            Step::SendAtFrameVersion(version, m) => send(stream, version, &m.build(handoff_id))?,
            Step::Raw(bytes) => stream.write_all(bytes).map_err(|e| e.to_string())?,
            Step::Payload(payload) => {
                let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(&1u16.to_le_bytes());
                frame.extend_from_slice(payload.as_bytes());
                stream.write_all(&frame).map_err(|e| e.to_string())?;
            }
            Step::HalfOf(m) => {
                let frame = encode(1, &m.build(handoff_id)).map_err(|e| e.to_string())?;
                stream
                    .write_all(&frame[..frame.len() / 2])
                    .map_err(|e| e.to_string())?;
            }
            Step::AwaitDrained => loop {
                match read_frame_within(stream, "Drained")? {
                    Message::Heartbeat { .. } => continue,
                    Message::Drained { .. } => break,
                    other => return Err(format!("expected Drained, got {other:?}")),
                }
            },
        }
    }
    Ok(())
}

fn run_supervisor_case(case: &SupervisorCase) -> Result<(), String> {
    let mut fixture = Fixture::start(case.name)?;
    let mut stream = UnixStream::connect(fixture.control_socket())
        .map_err(|e| format!("connect to the control socket: {e}"))?;
    let handoff_id = HandoffId::new();
    let (prefix, last) = match case.steps.split_last() {
        Some((last, prefix)) => (prefix, Some(*last)),
        None => (case.steps, None),
    };
    run_script(&mut stream, prefix, handoff_id)?;
    // The clock starts with the last hostile step.
    let started = monotonic_ns();
    if let Some(last) = last {
        run_script(&mut stream, &[last], handoff_id)?;
    }
    let held = match case.then {
        Then::Close => {
            drop(stream);
            None
        }
        Then::Hold => Some(stream),
    };
    let event = fixture.wait_event(case.event, started)?;
    drop(held);
    let error = event["error"].as_str().unwrap_or_default().to_owned();
    let time_to_error = elapsed_since(started, &event);
    contains_all(&error, case.expect)?;
    check_bound(case.name, time_to_error)?;
    if case.resumes {
        fixture.wait_event("handoff.incumbent.resume", started)?;
    }
    let serving = fixture.check_serving();
    record(case.name, error, time_to_error, serving.is_ok());
    serving?;
    fixture.finish();
    Ok(())
}

/// A hand-driven supervisor has the incumbent drained (mid-handoff); the
/// real `Supervisor` then tries its own handoff and must be refused before
/// it spawns anything.
fn second_supervisor_during_a_handoff() -> Result<(), String> {
    const CASE: &str = "second supervisor during a handoff";
    let mut fixture = Fixture::start(CASE)?;
    let mut first =
        UnixStream::connect(fixture.control_socket()).map_err(|e| format!("connect: {e}"))?;
    let first_id = HandoffId::new();
    run_script(
        &mut first,
        &[
            Step::ReadHello,
            Step::Send(Msg::HelloAck),
            Step::Send(Msg::Prepare),
            Step::AwaitDrained,
        ],
        first_id,
    )?;
    let pid_file = fixture.dir.join("successor.pid");
    let bins = bins()?;
    let spec = fixture.spec(
        &bins.hostile_successor,
        &[
            ("HOSTILE_MODE", "silent".into()),
            ("HOSTILE_PID_FILE", pid_file.display().to_string()),
        ],
    );
    let supervisor = fixture.supervisor(hostile_successor_timeouts())?;
    let started_mono = monotonic_ns();
    let started = Instant::now();
    let result = supervisor.perform_handoff(spec);
    let time_to_error = started.elapsed();
    let error = match result {
        Err(Error::Refused(reason)) => reason,
        Err(other) => return Err(format!("expected Error::Refused, got {other:?}")),
        Ok(outcome) => return Err(format!("a second supervisor ran a handoff: {outcome:?}")),
    };
    contains_all(
        &error,
        &[
            "another supervisor is driving handoff",
            &first_id.to_string(),
        ],
    )?;
    check_bound(CASE, time_to_error)?;
    if pid_file.exists() {
        return Err("the refused supervisor spawned a successor".into());
    }
    fixture.wait_event("handoff.incumbent.refused", started_mono)?;
    // The first supervisor goes away: the drained incumbent resumes.
    drop(first);
    fixture.wait_event("handoff.incumbent.resume", started_mono)?;
    let serving = fixture.check_serving();
    record(
        CASE,
        format!("Refused: {error}"),
        time_to_error,
        serving.is_ok(),
    );
    serving?;
    fixture.finish();
    Ok(())
}

/// The in-process half of "a second supervisor during a handoff": while
/// one `perform_handoff` runs (its successor spawned and silent), a second
/// call on the same `Supervisor` fails at once with `HandoffInProgress`,
/// touching nothing.
fn second_handoff_on_the_same_supervisor() -> Result<(), String> {
    const CASE: &str = "second handoff on the same Supervisor while one runs";
    let mut fixture = Fixture::start(CASE)?;
    let bins = bins()?;
    let first_pid_file = fixture.dir.join("first-successor.pid");
    let second_pid_file = fixture.dir.join("second-successor.pid");
    let spec = |pid_file: &Path| {
        fixture.spec(
            &bins.hostile_successor,
            &[
                ("HOSTILE_MODE", "silent".into()),
                ("HOSTILE_PID_FILE", pid_file.display().to_string()),
            ],
        )
    };
    let (first_spec, second_spec) = (spec(&first_pid_file), spec(&second_pid_file));
    let supervisor = fixture.supervisor(hostile_successor_timeouts())?;
    let (second, time_to_error, first) = std::thread::scope(|scope| {
        let first = scope.spawn(|| supervisor.perform_handoff(first_spec));
        // The first handoff holds the supervisor once it has spawned.
        let spawned = wait_for("the first handoff to spawn its successor", || {
            first_pid_file.exists().then_some(())
        });
        let started = Instant::now();
        let second = spawned.map(|()| supervisor.perform_handoff(second_spec));
        (second, started.elapsed(), first.join())
    });
    let error = match second? {
        Err(e @ Error::HandoffInProgress) => e.to_string(),
        other => return Err(format!("expected HandoffInProgress, got {other:?}")),
    };
    if second_pid_file.exists() {
        return Err("the refused handoff spawned a successor".into());
    }
    match first {
        Ok(Err(Error::Timeout("peer Hello"))) => {}
        other => {
            return Err(format!(
                "the first handoff should time out on its silent successor: {other:?}"
            ));
        }
    }
    check_bound(CASE, time_to_error)?;
    let serving = fixture.check_serving();
    record(
        CASE,
        format!("HandoffInProgress: {error}"),
        time_to_error,
        serving.is_ok(),
    );
    serving?;
    fixture.finish();
    Ok(())
}

/// A client running as `nobody`: first kept out by the socket file's mode
/// (0600, owned by us), then, with the mode opened up, refused by the
/// incumbent's `SO_PEERCRED` check with a reason naming its uid.
fn supervisor_of_another_uid() -> Result<(), String> {
    const CASE: &str = "supervisor of another uid (nobody)";
    let mut fixture = Fixture::start(CASE)?;
    let socket = fixture.control_socket();
    let mode = std::fs::metadata(&socket)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode()
        & 0o7777;
    if mode != 0o600 {
        return Err(format!(
            "the control socket has mode {mode:o}, expected 600"
        ));
    }
    // A copy in the case's directory (0755 under the temp dir): the build's
    // own directory may sit in a checkout that `nobody` cannot traverse.
    let client_bin = fixture.dir.join("hostile-client");
    std::fs::copy(&bins()?.hostile_client, &client_bin)
        .and_then(|_| std::fs::set_permissions(&client_bin, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("copy hostile-client for uid {NOBODY}: {e}"))?;
    let client = |socket: &Path| -> Result<String, String> {
        let output = Command::new(&client_bin)
            .arg(socket)
            .uid(NOBODY)
            .gid(NOBODY)
            .env_remove("HANDOFF_EVENT_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("run hostile-client as uid {NOBODY}: {e}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    // Layer 1: the file mode.
    let kept_out = client(&socket)?;
    contains_all(&kept_out, &["error connect", "Permission denied"])?;
    // Layer 2: SO_PEERCRED, with the file mode opened up (as a careless
    // umask or chmod would).
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| e.to_string())?;
    let started_mono = monotonic_ns();
    let started = Instant::now();
    let refused = client(&socket)?;
    let time_to_error = started.elapsed();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    contains_all(
        &refused,
        &[
            "refused",
            &format!("peer uid {NOBODY}"),
            "not this process's uid 0",
        ],
    )?;
    let event = fixture.wait_event("handoff.incumbent.refused", started_mono)?;
    if event["peer_uid"].as_u64() != Some(u64::from(NOBODY)) {
        return Err(format!(
            "the refusal event does not name uid {NOBODY}: {event}"
        ));
    }
    check_bound(CASE, time_to_error)?;
    let serving = fixture.check_serving();
    record(
        CASE,
        format!("mode 0600: {kept_out}; mode 0666: {refused}"),
        time_to_error,
        serving.is_ok(),
    );
    serving?;
    fixture.finish();
    Ok(())
}

// ---------------------------------------------------------------------------
// Hostile successors against the real supervisor
// ---------------------------------------------------------------------------

struct SuccessorCase {
    name: &'static str,
    /// `HOSTILE_MODE` of `hostile-successor`.
    mode: &'static str,
    /// The supervisor's error must match.
    matches: fn(&Error) -> bool,
    expect: &'static [&'static str],
}

fn successor_cases() -> Vec<SuccessorCase> {
    vec![
        SuccessorCase {
            name: "successor's Hello announces another pid",
            mode: "wrong-pid",
            matches: |e| matches!(e, Error::PidMismatch { expected, announced } if *announced == expected.wrapping_add(1)),
            expect: &["successor announced pid", "but the spawned child is pid"],
        },
        SuccessorCase {
            name: "successor sends garbage bytes",
            mode: "garbage",
            matches: |e| matches!(e, Error::FrameTooLarge { .. }),
            expect: &["exceeds the 1048576-byte cap"],
        },
        SuccessorCase {
            name: "successor never speaks",
            mode: "silent",
            matches: |e| matches!(e, Error::Timeout("peer Hello")),
            expect: &["timed out waiting for peer Hello"],
        },
        SuccessorCase {
            name: "successor speaks only protocol versions 90..=99",
            mode: "wrong-version",
            matches: |e| {
                matches!(
                    e,
                    Error::VersionMismatch {
                        ours_min: 1,
                        ours_max: 1,
                        theirs_min: 90,
                        theirs_max: 99
                    }
                )
            },
            expect: &["we support 1..=1", "the peer supports 90..=99"],
        },
        SuccessorCase {
            name: "successor sends a valid frame of an unknown variant",
            mode: "unknown-variant",
            matches: |e| matches!(e, Error::Decode(_)),
            expect: &["unknown variant `Gossip`"],
        },
        SuccessorCase {
            name: "successor sends a 4 GiB length prefix",
            mode: "huge-length",
            matches: |e| {
                matches!(
                    e,
                    Error::FrameTooLarge {
                        len: 4_294_967_295,
                        ..
                    }
                )
            },
            expect: &["frame of 4294967295 bytes"],
        },
    ]
}

/// Is `pid` a child of this process (running or a zombie)?
fn is_our_child(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .is_some_and(|ppid| ppid.trim() == std::process::id().to_string())
}

fn run_successor_case(case: &SuccessorCase) -> Result<(), String> {
    let mut fixture = Fixture::start(case.name)?;
    let pid_file = fixture.dir.join("successor.pid");
    let spec = fixture.spec(
        &bins()?.hostile_successor,
        &[
            ("HOSTILE_MODE", case.mode.into()),
            ("HOSTILE_PID_FILE", pid_file.display().to_string()),
            ("HOSTILE_MAX_MS", "5000".into()),
        ],
    );
    let supervisor = fixture.supervisor(hostile_successor_timeouts())?;
    let started = Instant::now();
    let result = supervisor.perform_handoff(spec);
    let time_to_error = started.elapsed();
    let error = match result {
        Err(e) if (case.matches)(&e) => e,
        Err(e) => return Err(format!("{}: unexpected error {e:?}", case.name)),
        Ok(outcome) => return Err(format!("{}: the handoff went on: {outcome:?}", case.name)),
    };
    let text = error.to_string();
    contains_all(&text, case.expect)?;
    check_bound(case.name, time_to_error)?;
    // It was spawned, and the supervisor killed and reaped it.
    let successor_pid: u32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("the hostile successor never started: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("bad pid file: {e}"))?;
    if is_our_child(successor_pid) {
        return Err(format!(
            "the hostile successor {successor_pid} is still our child (not reaped)"
        ));
    }
    let serving = fixture.check_serving();
    record(
        case.name,
        format!("{error:?}: {text}"),
        time_to_error,
        serving.is_ok(),
    );
    serving?;
    fixture.finish();
    Ok(())
}

// ---------------------------------------------------------------------------
// Hostile files
// ---------------------------------------------------------------------------

enum FileHazard {
    /// The journal holds these bytes; `resume_from_journal` must report it
    /// and proceed, and a handoff must then commit.
    Journal(fn() -> Vec<u8>),
    /// The journal's path is `<dir>/<parent>/journal` where `<parent>` is a
    /// regular file (`true`) or missing (`false`): `perform_handoff` must
    /// fail before any peer changes state.
    UnwritableJournalDir { parent_is_a_file: bool },
}

struct FileCase {
    name: &'static str,
    hazard: FileHazard,
    expect: &'static [&'static str],
}

fn valid_journal() -> Vec<u8> {
    StateJournal {
        handoff_id: HandoffId::new(),
        phase: handoff::Phase::Sealing,
        incumbent_pid: 4242,
        successor_pid: Some(4343),
        started_at_unix_ms: 1_700_000_000_000,
    }
    .encode()
}

fn file_cases() -> Vec<FileCase> {
    vec![
        FileCase {
            name: "journal is empty",
            hazard: FileHazard::Journal(Vec::new),
            expect: &["is unreadable: empty file"],
        },
        FileCase {
            name: "journal is truncated",
            hazard: FileHazard::Journal(|| {
                let mut bytes = valid_journal();
                bytes.truncate(bytes.len() / 2);
                bytes
            }),
            expect: &["is unreadable: truncated or not JSON"],
        },
        FileCase {
            name: "journal is garbage",
            hazard: FileHazard::Journal(|| b"\x00\xffnot a journal\xfe".to_vec()),
            expect: &["is unreadable: truncated or not JSON"],
        },
        FileCase {
            name: "journal is from a future version",
            hazard: FileHazard::Journal(|| {
                br#"{"v": 2, "handoff_id": "x", "phase": "teleporting"}"#.to_vec()
            }),
            expect: &["written by format version 2, this build reads 1"],
        },
        FileCase {
            name: "journal directory is a regular file",
            hazard: FileHazard::UnwritableJournalDir {
                parent_is_a_file: true,
            },
            expect: &["journal directory", "is not writable", "Not a directory"],
        },
        FileCase {
            name: "journal directory is missing",
            hazard: FileHazard::UnwritableJournalDir {
                parent_is_a_file: false,
            },
            expect: &[
                "journal directory",
                "is not writable",
                "No such file or directory",
            ],
        },
    ]
}

fn run_file_case(case: &FileCase) -> Result<(), String> {
    let mut fixture = Fixture::start(case.name)?;
    let bins = bins()?;
    match case.hazard {
        FileHazard::Journal(contents) => {
            let journal = fixture.dir.join("handoff.journal");
            std::fs::write(&journal, contents()).map_err(|e| e.to_string())?;
            // What the supervisor reads, as a typed error.
            let error = match StateJournal::read(&journal) {
                Err(e @ Error::JournalCorrupt { .. }) => e.to_string(),
                other => return Err(format!("expected JournalCorrupt, got {other:?}")),
            };
            contains_all(&error, case.expect)?;
            let supervisor = fixture
                .supervisor(real_handoff_timeouts())?
                .with_journal(journal.clone());
            let started = Instant::now();
            let recovered = supervisor.resume_from_journal();
            let time_to_recovery = started.elapsed();
            match recovered {
                Ok(None) => {}
                other => {
                    return Err(format!(
                        "resume_from_journal: expected Ok(None), got {other:?}"
                    ));
                }
            }
            if journal.exists() {
                return Err("resume_from_journal left the corrupt journal in place".into());
            }
            // The supervisor reported it, naming the file and the reason.
            let needle = journal.display().to_string();
            let reported = supervisor_event("handoff.recover", &needle).ok_or_else(|| {
                format!("the supervisor logged no handoff.recover event naming {needle}")
            })?;
            contains_all(reported["error"].as_str().unwrap_or_default(), case.expect)?;
            check_bound(case.name, time_to_recovery)?;
            // Recovery proceeds: the next handoff commits.
            let spec = fixture.spec(&bins.fake_peer, &[]);
            let outcome = supervisor
                .perform_handoff(spec)
                .map_err(|e| format!("the handoff after recovery failed: {e}"))?;
            let Some(child) = outcome.child.filter(|_| outcome.committed) else {
                return Err(format!(
                    "the handoff after recovery did not commit: {:?}",
                    outcome.abort_reason
                ));
            };
            fixture.committed_to(child)?;
            // perform_handoff returns before its journal clear is durable;
            // sync_journal is the documented way to wait for it.
            supervisor
                .sync_journal()
                .map_err(|e| format!("the journal clear failed: {e}"))?;
            if journal.exists() {
                return Err("the committed handoff left its journal behind".into());
            }
            let serving = fixture.check_serving();
            record(
                case.name,
                format!("{error}; resume_from_journal → Ok(None), then a handoff committed"),
                time_to_recovery,
                serving.is_ok(),
            );
            serving?;
        }
        FileHazard::UnwritableJournalDir { parent_is_a_file } => {
            let parent = fixture.dir.join("journal-parent");
            if parent_is_a_file {
                std::fs::write(&parent, b"a file, not a directory").map_err(|e| e.to_string())?;
            }
            let pid_file = fixture.dir.join("successor.pid");
            let spec = fixture.spec(
                &bins.hostile_successor,
                &[
                    ("HOSTILE_MODE", "report-fds".into()),
                    ("HOSTILE_PID_FILE", pid_file.display().to_string()),
                ],
            );
            let supervisor = fixture
                .supervisor(real_handoff_timeouts())?
                .with_journal(parent.join("handoff.journal"));
            let started_mono = monotonic_ns();
            let started = Instant::now();
            let result = supervisor.perform_handoff(spec);
            let time_to_error = started.elapsed();
            let error = match result {
                Err(e @ Error::Io(_)) => e.to_string(),
                other => return Err(format!("expected an I/O error, got {other:?}")),
            };
            contains_all(&error, case.expect)?;
            check_bound(case.name, time_to_error)?;
            // No peer changed state: the incumbent saw no session at all
            // (so certainly no PrepareHandoff), and nothing was spawned.
            let pid = fixture.incumbent_pid();
            for event in fixture.events_of(pid) {
                let name = event["event"].as_str().unwrap_or_default();
                let late = event["mono_ns"].as_u64().unwrap_or(0) >= started_mono;
                if late
                    && (name == "handoff.incumbent.drain" || name == "handoff.incumbent.session")
                {
                    return Err(format!("the incumbent changed state: {event}"));
                }
            }
            if pid_file.exists() {
                return Err("a successor was spawned".into());
            }
            let serving = fixture.check_serving();
            record(case.name, error, time_to_error, serving.is_ok());
            serving?;
        }
    }
    fixture.finish();
    Ok(())
}

// ---------------------------------------------------------------------------
// FD hygiene
// ---------------------------------------------------------------------------

/// The successor (`hostile-successor` in `report-fds` mode, which lists its
/// FDs and then `exec`s `fake-peer`, keeping them) starts with exactly FDs
/// 0, 1, 2, the listener at 3 and its control socket at 4; the handoff then
/// commits and the new incumbent's control socket is 0600 too.
fn successor_fds_are_exactly_the_contract() -> Result<(), String> {
    let mut fixture = Fixture::start("fd hygiene of the successor")?;
    let bins = bins()?;
    let report = fixture.dir.join("successor-fds.txt");
    let spec = fixture.spec(
        &bins.hostile_successor,
        &[
            ("HOSTILE_MODE", "report-fds".into()),
            ("HOSTILE_FD_REPORT", report.display().to_string()),
            ("HOSTILE_EXEC", bins.fake_peer.display().to_string()),
        ],
    );
    // A file of ours left open on purpose: it must not reach the child.
    let _decoy = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let outcome = fixture
        .supervisor(real_handoff_timeouts())?
        .perform_handoff(spec)
        .map_err(|e| format!("handoff: {e}"))?;
    let Some(child) = outcome.child.filter(|_| outcome.committed) else {
        return Err(format!(
            "the handoff did not commit: {:?}",
            outcome.abort_reason
        ));
    };
    let successor_pid = child.id();
    fixture.committed_to(child)?;
    let text = std::fs::read_to_string(&report).map_err(|e| format!("FD report: {e}"))?;
    let fds: Vec<(i32, String)> = text
        .lines()
        .filter_map(|l| {
            let (fd, target) = l.split_once(' ')?;
            Some((fd.parse().ok()?, target.to_owned()))
        })
        .collect();
    let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
    if numbers != [0, 1, 2, 3, 4] {
        return Err(format!("the successor's FDs are not exactly 0-4:\n{text}"));
    }
    for (fd, what) in [(3, "the kv listener"), (4, "the control socket")] {
        if !fds[fd as usize].1.starts_with("socket:") {
            return Err(format!(
                "FD {fd} should be {what}, but is {}",
                fds[fd as usize].1
            ));
        }
    }
    let mode = std::fs::metadata(fixture.control_socket())
        .map_err(|e| e.to_string())?
        .permissions()
        .mode()
        & 0o7777;
    if mode != 0o600 {
        return Err(format!(
            "the successor's control socket has mode {mode:o}, expected 600"
        ));
    }
    if fixture.incumbent_pid() != successor_pid {
        return Err("bookkeeping: the successor is not the incumbent".into());
    }
    fixture.check_serving()?;
    fixture.finish();
    Ok(())
}

/// Twenty handoffs in a row from an in-process supervisor: its open FDs are
/// the same before and after, and every write acknowledged along the way
/// survives.
fn supervisor_fd_count_is_stable() -> Result<(), String> {
    let mut fixture = Fixture::start("fd hygiene of the supervisor")?;
    let bins = bins()?;
    let supervisor = fixture.supervisor(real_handoff_timeouts())?;
    let handoff = |fixture: &mut Fixture| -> Result<(), String> {
        let outcome = supervisor
            .perform_handoff(fixture.spec(&bins.fake_peer, &[]))
            .map_err(|e| format!("handoff: {e}"))?;
        let Some(child) = outcome.child.filter(|_| outcome.committed) else {
            return Err(format!(
                "the handoff did not commit: {:?}",
                outcome.abort_reason
            ));
        };
        fixture.committed_to(child)?;
        // Reap the retired incumbents as we go: their `Child` handles hold
        // no FD once waited (stdio is inherited), but keep the list short.
        fixture.retired.clear();
        fixture.put("between")?;
        fixture.wait_session_free()
    };
    // One handoff first, so anything opened once and kept (lazily
    // initialised state) is open before we count.
    handoff(&mut fixture)?;
    let before = handoff::fd::open_fds();
    for _ in 0..FD_TRIAL_HANDOFFS {
        handoff(&mut fixture)?;
    }
    let after = handoff::fd::open_fds();
    if before != after {
        return Err(format!(
            "the supervisor's FDs changed across {FD_TRIAL_HANDOFFS} handoffs: {before:?} -> {after:?}"
        ));
    }
    fixture.check_serving()?;
    eprintln!(
        "fd hygiene: {} FDs open before and after {FD_TRIAL_HANDOFFS} handoffs; {} acknowledged writes all read back",
        before.len(),
        fixture.acked.len()
    );
    fixture.finish();
    Ok(())
}
