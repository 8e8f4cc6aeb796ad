use super::*;

fn abi() -> Abi {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ABI.md");
    parse_abi(&std::fs::read_to_string(path).expect("plugins/ABI.md")).expect("ABI.md parses")
}

fn sig(params: &[ValType], results: &[ValType]) -> Signature {
    Signature {
        params: params.to_vec(),
        results: results.to_vec(),
    }
}

use ValType::{F64, I32, I64};

/// The imports every test module may use, declared as ABI.md has them.
const IMPORTS: &str = r#"
  (import "sluice" "get_property" (func (param i32 i32 i32 i32) (result i32)))
  (import "sluice" "set_reply" (func (param i32 i32 i32)))
"#;

fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {IMPORTS} {body})")).expect("test WAT")
}

const GOOD: &str = r#"
  (memory (export "memory") 1)
  (func (export "sluice_abi_v1"))
  (func (export "sluice_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_on_rcpt") (param i32 i32) (result i32) i32.const 2)
  (func (export "sluice_on_reset"))
"#;

#[test]
fn abi_md_tables_are_read_completely() {
    let abi = abi();
    assert_eq!(abi.import_module, "sluice");
    let export_names: Vec<&str> = abi.exports.keys().map(String::as_str).collect();
    assert_eq!(
        export_names,
        [
            "memory",
            "sluice_abi_v1",
            "sluice_alloc",
            "sluice_hooks",
            "sluice_init",
            "sluice_on_close",
            "sluice_on_connect",
            "sluice_on_data",
            "sluice_on_helo",
            "sluice_on_mail",
            "sluice_on_rcpt",
            "sluice_on_reset",
        ]
    );
    let required: Vec<&str> = abi
        .exports
        .iter()
        .filter(|(_, s)| s.required)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(required, ["memory", "sluice_abi_v1"]);
    assert_eq!(abi.imports.len(), 15);
    assert_eq!(
        abi.exports["sluice_init"].signature,
        Some(sig(&[I32, I32], &[I32]))
    );
    assert_eq!(
        abi.exports["sluice_on_close"].signature,
        Some(sig(&[], &[]))
    );
    assert_eq!(
        abi.exports["sluice_hooks"].signature,
        Some(sig(&[], &[I32]))
    );
    assert_eq!(abi.imports["add_score"], sig(&[I32, I32, F64], &[]));
    assert_eq!(abi.imports["kv_incr"], sig(&[I32, I32, I64, I32], &[I64]));
    assert_eq!(abi.imports["now_ms"], sig(&[], &[I64]));
    assert_eq!(abi.imports["get_header"], sig(&[I32; 5], &[I32]));
}

#[test]
fn signatures_parse_in_every_notation_of_the_document() {
    assert_eq!(parse_signature("() -> ()"), Ok(sig(&[], &[])));
    assert_eq!(
        parse_signature("(a, b: i32, c: f64) -> i64"),
        Ok(sig(&[I32, I32, F64], &[I64]))
    );
    assert!(parse_signature("(a, b) -> i32").is_err(), "untyped");
    assert!(parse_signature("(a: u8) -> i32").is_err());
    assert!(parse_signature("a: i32").is_err());
}

#[test]
fn a_conforming_module_passes_with_a_report() {
    let report = check_module(&module(GOOD), &abi()).expect("conforms");
    assert_eq!(
        report.exports,
        [
            "memory",
            "sluice_abi_v1",
            "sluice_alloc",
            "sluice_on_rcpt",
            "sluice_on_reset"
        ]
    );
    assert_eq!(report.imports, ["get_property", "set_reply"]);
    assert!(report.extra_exports.is_empty());
}

fn problems(body: &str) -> Vec<String> {
    check_module(&module(body), &abi()).expect_err("must be refused")
}

#[test]
fn wrong_signatures_are_refused() {
    let p = problems(&GOOD.replace(
        r#"(func (export "sluice_on_rcpt") (param i32 i32) (result i32)"#,
        r#"(func (export "sluice_on_rcpt") (param i32 i64) (result i32)"#,
    ));
    assert!(
        p.iter()
            .any(|m| m.starts_with("export sluice_on_rcpt: signature (i32, i64)")),
        "{p:?}"
    );

    let bad_import = wat::parse_str(format!(
        r#"(module (import "sluice" "add_score" (func (param i32 i32 f32))) {GOOD})"#
    ))
    .unwrap();
    let p = check_module(&bad_import, &abi()).unwrap_err();
    assert!(
        p.iter().any(|m| m.contains("import add_score: signature")),
        "{p:?}"
    );
}

#[test]
fn missing_required_exports_are_refused() {
    let p = problems(r#"(func (export "sluice_abi_v1"))"#);
    assert_eq!(p, ["required export memory is missing"]);
    let p = problems(r#"(memory (export "memory") 1)"#);
    assert_eq!(p, ["required export sluice_abi_v1 is missing"]);
}

#[test]
fn a_string_hook_without_alloc_is_refused() {
    let p = problems(&GOOD.replace(r#"(export "sluice_alloc")"#, ""));
    assert_eq!(
        p,
        ["sluice_on_rcpt takes a string, so sluice_alloc must be exported"]
    );
}

#[test]
fn foreign_imports_and_unknown_sluice_exports_are_refused() {
    let wasi = wat::parse_str(format!(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {GOOD})"#
    ))
    .unwrap();
    let p = check_module(&wasi, &abi()).unwrap_err();
    assert!(
        p[0].contains("the host provides only module `sluice`"),
        "{p:?}"
    );

    let p = problems(&format!(
        r#"{GOOD} (func (export "sluice_on_rctp") (param i32 i32) (result i32) i32.const 0)"#
    ));
    assert!(p[0].contains("sluice_on_rctp: not in ABI.md"), "{p:?}");
}

#[test]
fn linker_exports_are_reported_not_refused() {
    let wasm = module(&format!(
        r#"{GOOD} (global (export "__data_end") i32 (i32.const 0))"#
    ));
    let report = check_module(&wasm, &abi()).unwrap();
    assert_eq!(report.extra_exports, ["__data_end"]);
}

#[test]
fn invalid_modules_are_refused() {
    let p = check_module(b"\0asm\x01\0\0\0\x7f", &abi()).unwrap_err();
    assert!(
        p[0].starts_with("not a valid WebAssembly 2.0 module"),
        "{p:?}"
    );
    let p = check_module(b"{}", &abi()).unwrap_err();
    assert!(p[0].starts_with("not a valid"), "{p:?}");
}

/// The WIT description must stay the same interface as ABI.md: every import
/// as a `host` function, every hook as a world export, the verdicts in ABI
/// order.
#[test]
fn the_wit_file_describes_the_same_interface() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = std::fs::read_to_string(format!("{dir}/sluice-filter.wit")).unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve
        .push_str("sluice-filter.wit", &text)
        .expect("the WIT file parses");
    let world = &resolve.worlds[resolve.select_world(&[pkg], Some("filter")).unwrap()];
    let snake = |s: &str| s.replace('-', "_");

    let mut host_funcs = Vec::new();
    for item in world.imports.values() {
        if let wit_parser::WorldItem::Interface { id, .. } = item {
            let iface = &resolve.interfaces[*id];
            if iface.name.as_deref() == Some("host") {
                host_funcs.extend(iface.functions.keys().map(|k| snake(k)));
            }
        }
    }
    host_funcs.sort();
    let abi = abi();
    let imports: Vec<String> = abi.imports.keys().cloned().collect();
    assert_eq!(host_funcs, imports);

    let mut exports: Vec<String> = world
        .exports
        .values()
        .filter_map(|item| match item {
            wit_parser::WorldItem::Function(f) => Some(format!("sluice_{}", snake(&f.name))),
            _ => None,
        })
        .collect();
    exports.sort();
    let hooks: Vec<String> = abi
        .exports
        .keys()
        .filter(|k| !["memory", "sluice_abi_v1", "sluice_alloc"].contains(&k.as_str()))
        .cloned()
        .collect();
    assert_eq!(exports, hooks);

    let verdict_rows: Vec<String> = std::fs::read_to_string(format!("{dir}/ABI.md"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let c = cells(l)?;
            c[0].parse::<u32>().ok()?;
            Some(c[1].to_lowercase())
        })
        .collect();
    let verdict = resolve
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("verdict"))
        .map(|(_, t)| match &t.kind {
            wit_parser::TypeDefKind::Enum(e) => {
                e.cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
            }
            other => panic!("verdict is {other:?}"),
        })
        .unwrap();
    assert_eq!(verdict, verdict_rows);
    assert_eq!(verdict.len(), 7);
}
