//! The independent judges of email authentication: dkimpy, pyspf and
//! authres, run through `tests/clients/mailauth.py` in the virtualenv that
//! `tests/prereqs.sh` makes (`target/pyvenv`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::run;

/// How long one judge may take (its DNS lookups included).
const JUDGE_LIMIT: Duration = Duration::from_secs(30);

fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run tests/prereqs.sh (it installs dkimpy, pyspf and authres there)",
        venv.display()
    );
    venv
}

/// Runs `mailauth.py <args>` with `stdin`; panics if it cannot start.
pub fn judge(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/mailauth.py"))
        .args(args);
    run(cmd, stdin, JUDGE_LIMIT)
}
