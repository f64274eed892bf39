//! `fd::parse_handoff_env` on a structured environment (`LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, `HANDOFF_ROLE`, `HANDOFF_SOCK_FD`), each
//! variable absent, typical (built to be plausible) or raw text.
//!
//! Checks: no panic; every error is `Error::Environment` naming a variable;
//! an accepted environment yields listeners at FDs 3.. in order with valid
//! names, only when `LISTEN_PID` is ours, and a control socket exactly when
//! the role is `successor`, at 3 + n; and a reference model: an environment
//! built entirely of valid typical values is accepted with the listeners and
//! socket it describes.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use handoff::Error;
use handoff::fd::{LISTEN_FDS_START, MAX_LISTEN_FDNAME_LEN, MAX_LISTEN_FDS, parse_handoff_env};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum ListenPid {
    Absent,
    Ours,
    Other(u32),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ListenFds {
    Absent,
    Count(u16),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum FdNames {
    Absent,
    Names(Vec<String>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum HandoffRole {
    Absent,
    Successor,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum SockFd {
    Absent,
    /// `3 + LISTEN_FDS + offset`.
    AfterListeners(i8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    my_pid: u32,
    listen_pid: ListenPid,
    listen_fds: ListenFds,
    fdnames: FdNames,
    role: HandoffRole,
    sock_fd: SockFd,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LISTEN_FDNAME_LEN
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b':')
}

fuzz_target!(|input: Input| {
    let mut env: HashMap<&str, String> = HashMap::new();
    let count = match &input.listen_fds {
        ListenFds::Count(n) => i64::from(*n),
        _ => 0,
    };
    match &input.listen_pid {
        ListenPid::Absent => {}
        ListenPid::Ours => {
            env.insert("LISTEN_PID", input.my_pid.to_string());
        }
        ListenPid::Other(pid) => {
            env.insert("LISTEN_PID", pid.to_string());
        }
        ListenPid::Raw(s) => {
            env.insert("LISTEN_PID", s.clone());
        }
    }
    match &input.listen_fds {
        ListenFds::Absent => {}
        ListenFds::Count(n) => {
            env.insert("LISTEN_FDS", n.to_string());
        }
        ListenFds::Raw(s) => {
            env.insert("LISTEN_FDS", s.clone());
        }
    }
    match &input.fdnames {
        FdNames::Absent => {}
        FdNames::Names(names) => {
            env.insert("LISTEN_FDNAMES", names.join(":"));
        }
        FdNames::Raw(s) => {
            env.insert("LISTEN_FDNAMES", s.clone());
        }
    }
    match &input.role {
        HandoffRole::Absent => {}
        HandoffRole::Successor => {
            env.insert("HANDOFF_ROLE", "successor".to_owned());
        }
        HandoffRole::Raw(s) => {
            env.insert("HANDOFF_ROLE", s.clone());
        }
    }
    match &input.sock_fd {
        SockFd::Absent => {}
        SockFd::AfterListeners(offset) => {
            let fd = i64::from(LISTEN_FDS_START) + count + i64::from(*offset);
            env.insert("HANDOFF_SOCK_FD", fd.to_string());
        }
        SockFd::Raw(s) => {
            env.insert("HANDOFF_SOCK_FD", s.clone());
        }
    }

    let get = |name: &str| env.get(name).cloned();
    let result = parse_handoff_env(&get, input.my_pid);

    // The reference model: only valid, typical values.
    let listen_fds_valid = (1..=MAX_LISTEN_FDS as i64).contains(&count);
    let names_valid = match &input.fdnames {
        FdNames::Absent => true,
        FdNames::Names(names) => names.len() as i64 == count && names.iter().all(|n| valid_name(n)),
        FdNames::Raw(_) => false,
    };
    let listeners_for_us = matches!(input.listen_pid, ListenPid::Ours)
        && input.my_pid != 0
        && matches!(input.listen_fds, ListenFds::Count(_))
        && listen_fds_valid
        && names_valid;
    let no_listen_vars = matches!(input.listen_pid, ListenPid::Absent)
        && matches!(input.listen_fds, ListenFds::Absent)
        && matches!(input.fdnames, FdNames::Absent);
    let role_valid = match (&input.role, &input.sock_fd) {
        (HandoffRole::Absent, SockFd::Absent) => true,
        (HandoffRole::Successor, SockFd::AfterListeners(offset)) => *offset == 0,
        _ => false,
    };
    if (listeners_for_us || no_listen_vars) && role_valid {
        let parsed = result
            .as_ref()
            .unwrap_or_else(|e| panic!("a valid environment {env:?} was rejected: {e}"));
        let n = if listeners_for_us { count as usize } else { 0 };
        assert_eq!(parsed.listeners.len(), n, "{env:?}");
        if let FdNames::Names(names) = &input.fdnames
            && listeners_for_us
        {
            let got: Vec<&str> = parsed.listeners.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(&got, names);
        }
    }

    match result {
        Ok(parsed) => {
            assert!(parsed.listeners.len() <= MAX_LISTEN_FDS);
            for (i, (name, fd)) in parsed.listeners.iter().enumerate() {
                assert_eq!(*fd, LISTEN_FDS_START + i as i32, "{env:?}");
                assert!(
                    valid_name(name),
                    "accepted invalid name {name:?} from {env:?}"
                );
            }
            if !parsed.listeners.is_empty() {
                let pid = env
                    .get("LISTEN_PID")
                    .and_then(|p| p.trim().parse::<u32>().ok());
                assert_eq!(
                    pid,
                    Some(input.my_pid),
                    "listeners taken for another pid: {env:?}"
                );
                let fds = env
                    .get("LISTEN_FDS")
                    .and_then(|c| c.trim().parse::<usize>().ok());
                assert_eq!(fds, Some(parsed.listeners.len()), "{env:?}");
            }
            match parsed.successor_sock_fd {
                Some(fd) => {
                    assert_eq!(
                        env.get("HANDOFF_ROLE").map(String::as_str),
                        Some("successor")
                    );
                    assert_eq!(fd, LISTEN_FDS_START + parsed.listeners.len() as i32);
                }
                None => {
                    assert!(
                        !env.contains_key("HANDOFF_ROLE") && !env.contains_key("HANDOFF_SOCK_FD")
                    );
                }
            }
        }
        Err(Error::Environment(message)) => {
            assert!(
                message.contains("LISTEN_") || message.contains("HANDOFF_"),
                "the error names no variable: {message}"
            );
        }
        Err(other) => panic!("not an Environment error: {other:?} for {env:?}"),
    }
});
