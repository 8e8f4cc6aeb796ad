//! Builds the `sluice` binary once per test process, so that a test never
//! runs a stale binary left over from an earlier build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The freshly built `sluice` binary (built on first call; later calls only
/// return the path). Panics with cargo's output if the build fails.
pub fn sluice_bin() -> &'static Path {
    // The outcome is kept either way: after a failed build every test
    // fails at once with the same message, instead of building again.
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<PathBuf, String> {
    // The test executable is `<target>/<profile>/deps/<test>-<hash>`: building
    // into the same `<target>` with the same profile puts the binary beside
    // `deps/`, whichever CARGO_TARGET_DIR the tests were built with.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir
        .parent()
        .expect("<target> above the profile directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 profile directory name")
        .to_string();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "sluice", "--bin", "sluice"])
        .env("CARGO_TARGET_DIR", target_dir)
        // Run from the workspace so the right manifest is found.
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build the sluice binary: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let head: Vec<&str> = stderr.lines().take(60).collect();
        return Err(format!(
            "`cargo build -p sluice` failed:\n{}",
            head.join("\n")
        ));
    }
    let bin = profile_dir.join("sluice");
    if !bin.is_file() {
        return Err(format!(
            "cargo built sluice but {} does not exist",
            bin.display()
        ));
    }
    Ok(bin)
}
