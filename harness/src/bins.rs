//! The binaries a scenario launches, found in the target directory of the
//! running profile and built with crash points compiled in.
//!
//! [`ensure_built`] runs `$CARGO build -p handoff -p fake-peers --bins
//! --features handoff/crash-points` once per process (same profile, same
//! target dir as the running executable), so `cargo test -p scenarios` never
//! runs stale binaries. Under nextest every trial is its own process; there
//! the build runs once per nextest run (keyed by `NEXTEST_RUN_ID`, serialised
//! by a `flock` next to the binaries). `HANDOFF_BIN_DIR=<dir>` skips the
//! build and uses the binaries found there.
//!
//! Others build in the same target directory, and a plain `cargo build -p
//! handoff` replaces `handoff-supervisor` with a build *without* crash
//! points. So after building, the harness hard-links both binaries into a
//! private directory (`<profile>/harness-bins/<run>/`; a later rebuild writes
//! a new inode and leaves the link alone), checks that the supervisor there
//! accepts `HANDOFF_CRASH_AT`, and launches only those.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::reaper::{self, ExitKind};

/// Environment variable: use the binaries in this directory, build nothing.
pub const ENV_BIN_DIR: &str = "HANDOFF_BIN_DIR";
/// Name of the supervisor binary.
pub const SUPERVISOR_BIN: &str = "handoff-supervisor";
/// Name of the fake peer binary.
pub const FAKE_PEER_BIN: &str = "fake-peer";
/// Bound on the build step.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Paths of the binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `handoff-supervisor`.
    pub supervisor: PathBuf,
    /// `fake-peer`.
    pub fake_peer: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`; an error names what is missing.
    pub fn in_dir(dir: &Path) -> Result<Self, String> {
        let bins = Self {
            supervisor: dir.join(SUPERVISOR_BIN),
            fake_peer: dir.join(FAKE_PEER_BIN),
        };
        for b in [&bins.supervisor, &bins.fake_peer] {
            if !b.is_file() {
                return Err(format!(
                    "{} does not exist; build it with `cargo build -p handoff -p fake-peers --bins \
                     --features handoff/crash-points` or point {ENV_BIN_DIR} at a directory that \
                     holds both binaries",
                    b.display()
                ));
            }
        }
        Ok(bins)
    }
}

/// Where the running executable's profile keeps its binaries, and the cargo
/// profile flag that builds into it (pure).
///
/// `<target>/<profile-dir>/deps/<test-exe>` and `<target>/<profile-dir>/<bin>`
/// both give `<target>/<profile-dir>`; `debug` is the `dev` profile.
pub fn profile_of_exe(exe: &Path) -> Option<(PathBuf, Vec<String>)> {
    let mut dir = exe.parent()?;
    if dir.file_name()? == "deps" || dir.file_name()? == "examples" {
        dir = dir.parent()?;
    }
    let profile_dir = dir.file_name()?.to_str()?;
    let flags = match profile_dir {
        "debug" => vec![],
        "release" => vec!["--release".to_string()],
        other => vec!["--profile".to_string(), other.to_string()],
    };
    Some((dir.to_path_buf(), flags))
}

/// The `cargo build` of every workspace binary, with crash points, into the
/// target dir and profile of the running executable (a test or the harness
/// CLI), run from the workspace root; and the directory the binaries land
/// in. Stdin is closed; where its output goes is the caller's choice.
pub fn build_command() -> Result<(Command, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (bin_dir, profile_flags) = profile_of_exe(&exe)
        .ok_or_else(|| format!("cannot tell the target dir from {}", exe.display()))?;
    let target_dir = bin_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", bin_dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "handoff",
        "-p",
        "fake-peers",
        "--bins",
    ])
    .args(["--features", "handoff/crash-points"])
    .args(&profile_flags)
    .arg("--target-dir")
    .arg(target_dir)
    .stdin(Stdio::null());
    if let Some(manifest_dir) = option_env!("CARGO_MANIFEST_DIR") {
        // The workspace root is the harness crate's parent.
        if let Some(root) = Path::new(manifest_dir).parent() {
            cmd.current_dir(root);
        }
    }
    Ok((cmd, bin_dir))
}

/// Build (once) and locate the binaries.
pub fn ensure_built() -> Result<&'static Binaries, String> {
    static BUILT: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_and_locate)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_and_locate() -> Result<Binaries, String> {
    if let Some(dir) = std::env::var_os(ENV_BIN_DIR) {
        return Binaries::in_dir(Path::new(&dir));
    }
    let (mut cmd, bin_dir) = build_command()?;

    // Under nextest each trial is a process: build once per run.
    let run_id = std::env::var("NEXTEST_RUN_ID").ok();
    let lock_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(bin_dir.join(".harness-build.lock"))
        .map_err(|e| format!("cannot open the build lock: {e}"))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the build lock: {e}"))?;
    let stamp = bin_dir.join(".harness-build.stamp");
    if let Some(run_id) = &run_id
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(run_id.as_str())
        && let Ok(bins) =
            Binaries::in_dir(&bin_dir.join("harness-bins").join(format!("run-{run_id}")))
    {
        return Ok(bins);
    }

    let log_path = bin_dir.join(".harness-build.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("build log: {e}"))?;
    cmd.stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let private = bin_dir.join("harness-bins").join(match &run_id {
        Some(id) => format!("run-{id}"),
        None => format!("pid-{}", std::process::id()),
    });
    let mut last_problem = String::new();
    // A concurrent plain build may replace the supervisor between our build
    // and our link: check, and build again (bounded).
    for _attempt in 0..3 {
        let status = reaper::run_to_completion(&mut cmd, BUILD_TIMEOUT)
            .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
        if status != ExitKind::Code(0) {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "building the binaries failed ({status}):\n{cmd:?}\n{output}"
            ));
        }
        let bins = link_privately(&bin_dir, &private)?;
        match crash_points_compiled_in(&bins.supervisor) {
            Ok(()) => {
                if let Some(run_id) = &run_id
                    && let Ok(mut f) = std::fs::File::create(&stamp)
                {
                    let _ = f.write_all(run_id.as_bytes());
                }
                remove_stale_private_dirs(&bin_dir.join("harness-bins"), &private);
                return Ok(bins);
            }
            Err(problem) => last_problem = problem,
        }
    }
    Err(last_problem)
}

/// Hard-link (or copy, across filesystems) both binaries into `private`.
fn link_privately(bin_dir: &Path, private: &Path) -> Result<Binaries, String> {
    let built = Binaries::in_dir(bin_dir)?;
    std::fs::create_dir_all(private).map_err(|e| format!("{}: {e}", private.display()))?;
    for name in [SUPERVISOR_BIN, FAKE_PEER_BIN] {
        let (from, to) = (bin_dir.join(name), private.join(name));
        let _ = std::fs::remove_file(&to);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
        }
    }
    drop(built);
    Binaries::in_dir(private)
}

/// The supervisor must accept `HANDOFF_CRASH_AT` (it refuses it at start-up
/// when crash points are compiled out).
fn crash_points_compiled_in(supervisor: &Path) -> Result<(), String> {
    let mut cmd = Command::new(supervisor);
    cmd.arg("--version")
        .env(
            handoff::crash::ENV_CRASH_AT,
            handoff::crash::REGISTRY[0].name,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match reaper::run_to_completion(&mut cmd, Duration::from_secs(30)) {
        Ok(ExitKind::Code(0)) => Ok(()),
        Ok(other) => Err(format!(
            "{} was built without the crash-points feature (`--version` with \
             HANDOFF_CRASH_AT set: {other}); another build replaced it, or the feature does \
             not reach it",
            supervisor.display()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", supervisor.display())),
    }
}

/// Remove private binary directories of processes that are gone (and of
/// nextest runs older than a day).
fn remove_stale_private_dirs(root: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if let Some(pid) = name.strip_prefix("pid-") {
            !Path::new("/proc").join(pid).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(24 * 3600))
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_derived_from_the_executable_path() {
        let (dir, flags) = profile_of_exe(Path::new("/t/debug/deps/scenarios-abc")).unwrap();
        assert_eq!(dir, Path::new("/t/debug"));
        assert!(flags.is_empty());
        let (dir, flags) = profile_of_exe(Path::new("/t/release/harness")).unwrap();
        assert_eq!(dir, Path::new("/t/release"));
        assert_eq!(flags, vec!["--release"]);
        let (_, flags) = profile_of_exe(Path::new("/t/ci/deps/x")).unwrap();
        assert_eq!(flags, vec!["--profile", "ci"]);
    }
}
