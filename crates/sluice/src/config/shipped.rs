//! Where the filter plugins that ship with Sluice are found.
//!
//! A `[[plugin]]` without a `path`, and the default chain (no `[[plugin]]`
//! at all), name a shipped plugin: `<name>.wasm` in the first of these
//! directories that has it. None of them depends on the working directory,
//! so a server started by systemd, in a container or from a shell in `/`
//! finds the same files:
//!
//! 1. `<prefix>/share/sluice/plugins/`, where `<prefix>` is the parent of the
//!    directory that holds the executable: `/usr/bin/sluice` uses
//!    `/usr/share/sluice/plugins/`, `/usr/local/bin/sluice`
//!    `/usr/local/share/sluice/plugins/` (the FHS layout of an install);
//! 2. `plugins/` beside the executable (a self-contained bundle such as
//!    `/opt/sluice/sluice` with `/opt/sluice/plugins/`);
//! 3. `plugins/dist/` of the source tree the binary was built from, where
//!    `plugins/build.sh` puts them (`cargo run` in a checkout).
//!
//! A shipped plugin that is found nowhere is an error that stops the server
//! from starting and fails `check-config`: relay refusal must never silently
//! turn off.

use std::path::{Path, PathBuf};

/// The plugins the default chain runs, in order.
pub const DEFAULT_CHAIN: [&str; 2] = ["relay-refusal", "antispam"];

/// The directories searched, in order, for the running executable.
pub fn search_dirs() -> Vec<PathBuf> {
    let exe = std::env::current_exe().ok();
    search_dirs_for(exe.as_deref())
}

fn search_dirs_for(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(bin) = exe.and_then(Path::parent) {
        if let Some(prefix) = bin.parent() {
            dirs.push(prefix.join("share/sluice/plugins"));
        }
        dirs.push(bin.join("plugins"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"));
    dirs
}

/// The file of the shipped plugin `name`, or an error that says where it
/// was looked for and how to get it.
pub fn find(name: &str) -> Result<PathBuf, String> {
    find_in(name, &search_dirs())
}

fn find_in(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let file = format!("{name}.wasm");
    if let Some(found) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
        return Ok(found);
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "the shipped plugin {name:?} ({file}) is not installed; looked in {}. \
         Build the plugins with plugins/build.sh in the source tree, or install them to \
         <prefix>/share/sluice/plugins/, or give [[plugin]] a path",
        looked.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_prefix_comes_first_then_the_bundle_then_the_source_tree() {
        let dirs = search_dirs_for(Some(Path::new("/usr/local/bin/sluice")));
        assert_eq!(dirs[0], Path::new("/usr/local/share/sluice/plugins"));
        assert_eq!(dirs[1], Path::new("/usr/local/bin/plugins"));
        assert!(dirs[2].ends_with("plugins/dist"), "{:?}", dirs[2]);
        assert_eq!(dirs.len(), 3);
    }

    #[test]
    fn the_first_directory_that_has_the_file_wins() {
        let top = tempfile::tempdir().unwrap();
        let (a, b) = (top.path().join("a"), top.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("antispam.wasm"), b"\0asm").unwrap();
        let dirs = [a.clone(), b.clone()];
        assert_eq!(find_in("antispam", &dirs).unwrap(), b.join("antispam.wasm"));
        std::fs::write(a.join("antispam.wasm"), b"\0asm").unwrap();
        assert_eq!(find_in("antispam", &dirs).unwrap(), a.join("antispam.wasm"));

        let err = find_in("relay-refusal", &dirs).unwrap_err();
        assert!(err.contains("relay-refusal.wasm"), "{err}");
        assert!(err.contains(&a.display().to_string()), "{err}");
        assert!(err.contains("plugins/build.sh"), "{err}");
    }
}
