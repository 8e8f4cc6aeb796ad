//! Checks a built plugin against `plugins/ABI.md`, reading the contract from
//! the document itself so that the check follows the ABI wherever it goes.
//!
//! A module passes when it is valid WebAssembly 2.0 (what wasmtime runs by
//! default), exports `memory`, exports every required function, gives every
//! `sluice_*` export exactly the signature of the ABI's exports table,
//! exports `sluice_alloc` whenever the host must pass it a string, and
//! imports nothing but functions of the ABI's imports table, with their
//! exact signatures. Other exports (`__heap_base`, `__data_end`, which the
//! linker adds) are reported, not refused.

use std::collections::BTreeMap;
use std::fmt;

use wasmparser::{
    CompositeInnerType, ExternalKind, FuncType, Parser, Payload, TypeRef, ValType, Validator,
    WasmFeatures,
};

/// A function signature from the ABI tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Parameter types, in order.
    pub params: Vec<ValType>,
    /// Result types (empty for `()`).
    pub results: Vec<ValType>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[ValType]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "({}) -> ({})", list(&self.params), list(&self.results))
    }
}

/// One export of the ABI's exports table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSpec {
    /// `None` for `memory`.
    pub signature: Option<Signature>,
    /// The table says "(required".
    pub required: bool,
}

/// The contract, as read from ABI.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abi {
    /// The imports' module name (from the Imports heading).
    pub import_module: String,
    /// Exports by name.
    pub exports: BTreeMap<String, ExportSpec>,
    /// Imports by name.
    pub imports: BTreeMap<String, Signature>,
}

/// The exports through which the host passes a string, and which therefore
/// need `sluice_alloc` (ABI.md, the `sluice_alloc` row).
const STRING_TAKING: &[&str] = &[
    "sluice_init",
    "sluice_on_helo",
    "sluice_on_mail",
    "sluice_on_rcpt",
];

fn val_type(name: &str) -> Result<ValType, String> {
    match name.trim() {
        "i32" => Ok(ValType::I32),
        "i64" => Ok(ValType::I64),
        "f32" => Ok(ValType::F32),
        "f64" => Ok(ValType::F64),
        other => Err(format!("unknown value type {other:?}")),
    }
}

/// Parses `(a: i32, b, c: i64) -> i32` or `() -> ()`. A name without a type
/// takes the type of the next typed name, as in `(ptr, len: i32)`.
pub fn parse_signature(text: &str) -> Result<Signature, String> {
    let (params, result) = text
        .split_once("->")
        .ok_or_else(|| format!("no `->` in {text:?}"))?;
    let inner = params
        .trim()
        .strip_prefix('(')
        .and_then(|p| p.strip_suffix(')'))
        .ok_or_else(|| format!("parameters not in parentheses: {text:?}"))?;
    let mut out = Vec::new();
    let mut untyped = 0;
    for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once(':') {
            Some((_, ty)) => {
                let ty = val_type(ty)?;
                out.extend(std::iter::repeat_n(ty, untyped + 1));
                untyped = 0;
            }
            None => untyped += 1,
        }
    }
    if untyped > 0 {
        return Err(format!("parameters without a type in {text:?}"));
    }
    let result = result.trim();
    let results = match result {
        "()" => Vec::new(),
        ty => vec![val_type(ty)?],
    };
    Ok(Signature {
        params: out,
        results,
    })
}

/// The cells of a markdown table row, without the outer pipes.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

fn backticked(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

/// Reads the exports and imports tables of ABI.md.
pub fn parse_abi(markdown: &str) -> Result<Abi, String> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Exports,
        Imports,
    }
    let mut section = Section::Other;
    let mut abi = Abi {
        import_module: String::new(),
        exports: BTreeMap::new(),
        imports: BTreeMap::new(),
    };
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = if heading.starts_with("Exports") {
                Section::Exports
            } else if heading.starts_with("Imports") {
                abi.import_module = heading
                    .split('`')
                    .nth(1)
                    .ok_or("the Imports heading names no module in backticks")?
                    .to_string();
                Section::Imports
            } else {
                Section::Other
            };
            continue;
        }
        if line.starts_with("### ") {
            section = Section::Other;
            continue;
        }
        if section == Section::Other {
            continue;
        }
        let Some(row) = cells(line) else { continue };
        let (Some(name), Some(sig)) = (row.first().and_then(|c| backticked(c)), row.get(1)) else {
            continue; // header and separator rows
        };
        // The memory row says `memory` where the functions have a signature.
        let sig = match backticked(sig) {
            Some(sig) => sig,
            None if *sig == "memory" => "memory",
            None => return Err(format!("{name}: signature not in backticks")),
        };
        match section {
            Section::Exports => {
                let signature = if sig == "memory" {
                    None
                } else {
                    Some(parse_signature(sig).map_err(|e| format!("{name}: {e}"))?)
                };
                let required = row.get(2).is_some_and(|m| m.contains("(required"));
                abi.exports.insert(
                    name.to_string(),
                    ExportSpec {
                        signature,
                        required,
                    },
                );
            }
            Section::Imports => {
                let signature = parse_signature(sig).map_err(|e| format!("{name}: {e}"))?;
                abi.imports.insert(name.to_string(), signature);
            }
            Section::Other => {}
        }
    }
    if abi.exports.is_empty() || abi.imports.is_empty() {
        return Err("no exports or imports table found".into());
    }
    Ok(abi)
}

/// What a passing module contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The ABI exports it has, in name order.
    pub exports: Vec<String>,
    /// The ABI imports it uses, in name order.
    pub imports: Vec<String>,
    /// Exports outside the ABI (allowed, reported).
    pub extra_exports: Vec<String>,
}

fn signature_of(f: &FuncType) -> Signature {
    Signature {
        params: f.params().to_vec(),
        results: f.results().to_vec(),
    }
}

/// Validates `wasm` and checks it against `abi`. Every problem found is
/// returned, not just the first.
pub fn check_module(wasm: &[u8], abi: &Abi) -> Result<Report, Vec<String>> {
    Validator::new_with_features(WasmFeatures::WASM2)
        .validate_all(wasm)
        .map_err(|e| vec![format!("not a valid WebAssembly 2.0 module: {e}")])?;

    let mut problems = Vec::new();
    let mut types: Vec<Option<FuncType>> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new(); // type index per function index
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    let mut report = Report::default();
    let parse = |e: wasmparser::BinaryReaderError| vec![e.to_string()];

    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(parse)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(parse)?.into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(parse)?;
                    let TypeRef::Func(ty) = import.ty else {
                        problems.push(format!(
                            "import {}.{} is not a function (the host provides functions only)",
                            import.module, import.name
                        ));
                        continue;
                    };
                    func_types.push(ty);
                    if import.module != abi.import_module {
                        problems.push(format!(
                            "import {}.{}: the host provides only module `{}`",
                            import.module, import.name, abi.import_module
                        ));
                        continue;
                    }
                    let found = types
                        .get(ty as usize)
                        .cloned()
                        .flatten()
                        .map(|f| signature_of(&f));
                    match (abi.imports.get(import.name), found) {
                        (None, _) => {
                            problems.push(format!("import {}: not in ABI.md", import.name))
                        }
                        (Some(want), Some(got)) if *want == got => {
                            report.imports.push(import.name.to_string());
                        }
                        (Some(want), got) => problems.push(format!(
                            "import {}: signature {} but ABI.md says {want}",
                            import.name,
                            got.map_or("?".into(), |g| g.to_string())
                        )),
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    func_types.push(ty.map_err(parse)?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(parse)?;
                    exports.push((export.name.to_string(), export.kind, export.index));
                }
            }
            _ => {}
        }
    }

    let mut present = Vec::new();
    for (name, kind, index) in &exports {
        let Some(spec) = abi.exports.get(name) else {
            if name.starts_with("sluice_") {
                problems.push(format!(
                    "export {name}: not in ABI.md (a misspelt hook is never called)"
                ));
            } else {
                report.extra_exports.push(name.clone());
            }
            continue;
        };
        match (&spec.signature, kind) {
            (None, ExternalKind::Memory) => {}
            (None, _) => problems.push(format!("export {name}: must be a memory")),
            (Some(want), ExternalKind::Func) => {
                let got = func_types
                    .get(*index as usize)
                    .and_then(|t| types.get(*t as usize).cloned().flatten())
                    .map(|f| signature_of(&f));
                if got.as_ref() != Some(want) {
                    problems.push(format!(
                        "export {name}: signature {} but ABI.md says {want}",
                        got.map_or("?".into(), |g| g.to_string())
                    ));
                }
            }
            (Some(_), _) => problems.push(format!("export {name}: must be a function")),
        }
        present.push(name.clone());
    }
    for (name, spec) in &abi.exports {
        if spec.required && !present.contains(name) {
            problems.push(format!("required export {name} is missing"));
        }
    }
    if let Some(needs) = STRING_TAKING
        .iter()
        .find(|n| present.iter().any(|p| p == *n))
        && !present.iter().any(|p| p == "sluice_alloc")
    {
        problems.push(format!(
            "{needs} takes a string, so sluice_alloc must be exported"
        ));
    }

    if problems.is_empty() {
        present.sort();
        report.exports = present;
        report.imports.sort();
        Ok(report)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests;
