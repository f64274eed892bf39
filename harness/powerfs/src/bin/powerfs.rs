//! `powerfs <backing dir> <mount point>`: mount powerfs and take commands on
//! stdin (see `powerfs::control`), for a caller that does not serve it in
//! its own process.
//!
//! It mounts in the mount namespace it was started in: start it from a
//! process that entered a private one
//! (`powerfs::enter_private_mount_namespace`), so the processes that share
//! it see the mount and it vanishes with them. It dies with its parent
//! (`PR_SET_PDEATHSIG`), and unmounts at the end of its input.
//!
//! First line out: `mounted`, or `power loss: not measured: <why>` and exit
//! status 2.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use powerfs::PowerFs;
use powerfs::control::{Command, parse_command};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: powerfs <backing dir> <mount point>");
        return ExitCode::from(2);
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("powerfs: PR_SET_PDEATHSIG: {e}");
        return ExitCode::from(1);
    }
    let fs = match PowerFs::mount(backing, mountpoint) {
        Ok(fs) => fs,
        Err(e) => {
            println!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "mounted");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match parse_command(&line) {
            Err(e) => format!("error {e}"),
            Ok(Command::Unmount) => break,
            Ok(command) => run(&fs, command),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    match fs.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(fs: &PowerFs, command: Command) -> String {
    let result = match command {
        Command::Durable => fs.make_durable().map(|()| String::new()),
        Command::Drop => fs.drop_undurable().map(|s| s.to_string()),
        Command::Cut(seed) => fs.power_cut(seed).map(|s| s.to_string()),
        Command::Fault(fault) => {
            fs.inject(fault);
            Ok(String::new())
        }
        Command::ClearFaults => {
            fs.clear_faults();
            Ok(String::new())
        }
        Command::Counters => Ok(format!("{:?}", fs.counters())),
        Command::Unmount => Ok(String::new()),
    };
    match result {
        Ok(what) if what.is_empty() => "ok".to_owned(),
        Ok(what) => format!("ok {what}"),
        Err(e) => format!("error {e}"),
    }
}
