//! Interop: `handoff-supervisor daemon` started by a real socket-activation
//! tool, `systemd-socket-activate` (Debian's `systemd` package), serves
//! through the socket the tool bound and passed, before and after a handoff.
//!
//! The tool binds `127.0.0.1:<port>`, waits for the first connection, then
//! execs the daemon in place with `LISTEN_FDS=1`, `LISTEN_FDNAMES=http` and
//! `LISTEN_PID` set: exactly what systemd does for a `.socket` unit.
//!
//! Without the tool the test prints a loud SKIPPED notice and passes, except
//! under `CI=true`, where it fails: CI must install it
//! (`apt-get install -y systemd`).
//!
//! Reproduce: `cargo test -p handoff --test interop_systemd_socket_activate -- --nocapture`.

mod daemon_support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;

use daemon_support::{DEADLINE, Setup, alive, http_get, served_by, wait_exit};

const TOOL: &str = "systemd-socket-activate";
/// Attempts at a free port (another process may take the one we picked).
const PORT_ATTEMPTS: usize = 5;

fn find_tool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into(), "/lib/systemd".into()])
        .map(|dir| dir.join(TOOL))
        .find(|p| p.is_file())
}

#[test]
fn the_daemon_serves_through_the_socket_systemd_socket_activate_passed() {
    let Some(tool) = find_tool() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let notice = format!(
            "{TOOL} not found: install Debian's systemd package \
             (apt-get install -y systemd) to run this interop test"
        );
        assert!(!ci, "CI=true and {notice}");
        eprintln!("\n*** SKIPPED interop_systemd_socket_activate: {notice} ***\n");
        println!("SKIPPED: {notice}");
        return;
    };
    let mut setup = Setup::http();
    setup.listeners = String::new(); // every listener comes from the tool

    let (tool_child, addr) = start_under_tool(&setup, &tool);
    let daemon_pid = tool_child.id();
    // The first connection makes the tool exec the daemon, which
    // cold-starts the service; the connection waits in the accept queue.
    let first = http_get(&addr).unwrap_or_else(|e| {
        panic!(
            "first request through the activated socket: {e}\n{}",
            setup.stderr()
        )
    });
    let mut daemon = setup.adopt(tool_child);
    let status = daemon.status().unwrap();
    assert_eq!(status["daemon_pid"], daemon_pid, "the tool execs in place");
    assert_eq!(status["listeners_inherited"], true, "{status}");
    assert_eq!(status["listeners"][0]["name"], "http", "{status}");
    assert_eq!(status["listeners"][0]["addr"], addr.as_str(), "{status}");
    let incumbent = status["incumbent_pid"].as_u64().unwrap() as u32;
    assert_eq!(served_by(&first), incumbent);

    let reply = daemon.request("handoff").unwrap();
    assert!(
        reply.starts_with("committed "),
        "{reply}\n{}",
        setup.stderr()
    );
    let successor = served_by(&http_get(&addr).expect("request after the handoff"));
    assert_ne!(successor, incumbent);

    assert!(daemon.terminate().success(), "{}", setup.stderr());
    assert!(!alive(successor));
}

/// Start the tool on a free port; returns it and the address.
fn start_under_tool(setup: &Setup, tool: &PathBuf) -> (Child, String) {
    let mut last_error = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        // The direct start's program, arguments and environment, behind
        // the tool.
        let cmd = setup.daemon_command();
        let mut tool_cmd = std::process::Command::new(tool);
        tool_cmd
            .arg("--listen")
            .arg(&addr)
            .arg("--fdname=http")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                tool_cmd.env(k, v);
            }
        }
        let stderr = std::fs::File::create(setup.path("daemon.stderr")).unwrap();
        std::os::unix::process::CommandExt::process_group(&mut tool_cmd, 0);
        let mut child = tool_cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn systemd-socket-activate");
        // The tool prints "Listening on <addr>" once bound, or exits.
        let bound = daemon_support::wait_for("the tool to bind its socket", DEADLINE, || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            setup.stderr().contains("Listening on").then_some(true)
        });
        if bound {
            return (child, addr);
        }
        let _ = wait_exit(&mut child, "the tool", DEADLINE);
        last_error = setup.stderr();
    }
    panic!("{TOOL} could not bind a port in {PORT_ATTEMPTS} attempts: {last_error}");
}
