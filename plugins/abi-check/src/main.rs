//! `sluice-abi-check [--abi ABI.md] PLUGIN.wasm...`: checks built plugins
//! against the ABI document; exits 1 if any fails. plugins/build.sh runs it
//! on everything it builds.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut abi_path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../ABI.md"));
    let mut files = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--abi" => match args.next() {
                Some(p) => abi_path = p.into(),
                None => return usage(),
            },
            "-h" | "--help" => return usage(),
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        return usage();
    }
    let abi = match std::fs::read_to_string(&abi_path)
        .map_err(|e| e.to_string())
        .and_then(|text| sluice_abi_check::parse_abi(&text))
    {
        Ok(abi) => abi,
        Err(e) => {
            eprintln!("{}: {e}", abi_path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for file in &files {
        let wasm = match std::fs::read(file) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed = true;
                continue;
            }
        };
        match sluice_abi_check::check_module(&wasm, &abi) {
            Ok(report) => {
                println!(
                    "ok   {} ({} bytes)\n     exports: {}\n     imports: {}",
                    file.display(),
                    wasm.len(),
                    report.exports.join(" "),
                    report.imports.join(" "),
                );
            }
            Err(problems) => {
                failed = true;
                println!("FAIL {}", file.display());
                for p in problems {
                    println!("     {p}");
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: sluice-abi-check [--abi plugins/ABI.md] PLUGIN.wasm...");
    ExitCode::from(2)
}
