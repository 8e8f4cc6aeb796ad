//! Loading: what the ABI requires of a module, and errors that name the
//! plugin and say why.

mod common;

use common::*;
use sluice_plugin_host::{
    AbiError, HookError, LoadError, LoadErrorKind, Phase, PluginHost, PluginSpec,
};

fn load_error(spec: PluginSpec) -> LoadError {
    let name = spec.name.clone();
    match PluginHost::load(vec![spec], env()) {
        Ok(_) => panic!("plugin {name} loaded"),
        Err(e) => e,
    }
}

fn raw(dir: &std::path::Path, name: &str, text: &str) -> PluginSpec {
    spec(dir, name, &wat::parse_str(text).unwrap())
}

#[test]
fn errors_name_the_plugin_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Each case: the module, the kind of error it must give, and what the
    // operator reads.
    type Kind = fn(&LoadErrorKind) -> bool;
    let cases: Vec<(PluginSpec, Kind, &str)> = vec![
        (
            PluginSpec::new("ghost", d.join("missing.wasm")),
            |k| matches!(k, LoadErrorKind::Read { path, .. } if path.ends_with("missing.wasm")),
            "cannot read",
        ),
        (
            spec(d, "junk", b"not wasm at all"),
            |k| matches!(k, LoadErrorKind::Compile { .. }),
            "is not a valid WebAssembly module",
        ),
        (
            raw(d, "nomarker", r#"(module (memory (export "memory") 1))"#),
            |k| *k == LoadErrorKind::Abi(AbiError::NoMarker),
            "no `sluice_abi_v1` export",
        ),
        (
            raw(d, "nomemory", r#"(module (func (export "sluice_abi_v1")))"#),
            |k| *k == LoadErrorKind::Abi(AbiError::NoMemory),
            "no `memory` export",
        ),
        (
            raw(
                d,
                "badsig",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_alloc") (param i32) (result i32) (i32.const 0))
                   (func (export "sluice_on_rcpt") (param i32) (result i32) (i32.const 0)))"#,
            ),
            |k| {
                *k == LoadErrorKind::Abi(AbiError::WrongSignature {
                    export: "sluice_on_rcpt".into(),
                    found: "(i32) -> (i32)".into(),
                    wanted: "(i32, i32) -> (i32)".into(),
                })
            },
            "export `sluice_on_rcpt` has type (i32) -> (i32), ABI v1 wants (i32, i32) -> (i32)",
        ),
        (
            raw(
                d,
                "noalloc",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_on_helo") (param i32 i32) (result i32) (i32.const 0)))"#,
            ),
            |k| *k == LoadErrorKind::Abi(AbiError::NoAlloc),
            "no `sluice_alloc` export",
        ),
        (
            raw(
                d,
                "missiles",
                r#"(module (import "sluice" "launch_missiles" (func))
                   (memory (export "memory") 1) (func (export "sluice_abi_v1")))"#,
            ),
            |k| matches!(k, LoadErrorKind::Link(why) if why.contains("launch_missiles")),
            "cannot link",
        ),
        (
            raw(
                d,
                "refuses",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
                   (func (export "sluice_init") (param i32 i32) (result i32) (i32.const 7)))"#,
            ),
            |k| *k == LoadErrorKind::Start(HookError::InitRefused(7)),
            "sluice_init returned 7",
        ),
        (
            raw(
                d,
                "hangs",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
                   (func (export "sluice_init") (param i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))"#,
            ),
            |k| {
                *k == LoadErrorKind::Start(HookError::CpuBudget {
                    budget: std::time::Duration::from_millis(50),
                })
            },
            "CPU budget of 50 ms exceeded",
        ),
        (
            raw(
                d,
                "badmask",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_hooks") (result i32) (unreachable)))"#,
            ),
            |k| {
                matches!(k, LoadErrorKind::Start(HookError::Trap { during: Phase::Hooks, detail })
                    if detail.contains("unreachable"))
            },
            "sluice_hooks failed",
        ),
        (
            raw(
                d,
                "masksig",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_hooks") (param i32) (result i32) (i32.const 0)))"#,
            ),
            |k| matches!(k, LoadErrorKind::Abi(AbiError::WrongSignature { export, .. }) if export == "sluice_hooks"),
            "export `sluice_hooks` has type (i32) -> (i32), ABI v1 wants () -> (i32)",
        ),
        (
            raw(
                d,
                "badalloc",
                r#"(module (memory (export "memory") 1) (func (export "sluice_abi_v1"))
                   (func (export "sluice_alloc") (param i32) (result i32) (i32.const 65535))
                   (func (export "sluice_init") (param i32 i32) (result i32) (i32.const 0)))"#,
            ),
            |k| {
                matches!(k, LoadErrorKind::Start(HookError::Trap { during: Phase::Alloc, detail })
                    if detail.contains("out of bounds"))
            },
            "out of bounds",
        ),
    ];
    for (spec, kind, why) in cases {
        let name = spec.name.clone();
        let err = load_error(spec);
        assert_eq!(err.plugin.as_deref(), Some(name.as_str()));
        assert!(kind(&err.kind), "{name}: unexpected {:?}", err.kind);
        let text = err.to_string();
        assert!(text.starts_with(&format!("plugin {name}: ")), "{text}");
        assert!(text.contains(why), "{name}: expected {why:?} in {text:?}");
    }
}

#[test]
fn init_gets_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"{"threshold":5}"#;
    // Returns 0 only if it was given exactly `config`.
    let wasm = module(
        &[("expected", config)],
        r#"
  (func (export "sluice_init") (param $p i32) (param $n i32) (result i32)
    (i32.eqz (call $eq (local.get $p) (local.get $n) $$expected)))
"#,
    );
    let mut good = spec(dir.path(), "configured", &wasm);
    good.config_json = config.into();
    let host = PluginHost::load(vec![good.clone()], env()).unwrap();
    assert_eq!(host.plugin_names(), ["configured"]);
    drop(host);
    let mut bad = good;
    bad.config_json = r#"{"threshold":6}"#.into();
    assert_eq!(
        load_error(bad).kind,
        LoadErrorKind::Start(HookError::InitRefused(1))
    );
}

#[test]
fn limits_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = relay_plugin("a@b.test", "5.7.1 no");
    let twice = vec![
        spec(dir.path(), "relay", &wasm),
        spec(dir.path(), "relay", &wasm),
    ];
    let err = PluginHost::load(twice, env()).unwrap_err();
    assert_eq!(
        (err.plugin.as_deref(), &err.kind),
        (Some("relay"), &LoadErrorKind::DuplicateName)
    );
    assert_eq!(err.to_string(), "plugin relay: the name is used twice");
    let mut zero = spec(dir.path(), "relay", &wasm);
    zero.memory_limit_mb = 0;
    assert_eq!(
        load_error(zero).kind,
        LoadErrorKind::MemoryLimitOutOfRange(0)
    );
    // A module whose initial memory is beyond its limit cannot start.
    let big = r#"(module (memory (export "memory") 200) (func (export "sluice_abi_v1")))"#;
    let mut spec = raw(dir.path(), "big", big);
    spec.memory_limit_mb = 4;
    let err = load_error(spec);
    // Refused when compiled for the pooling allocator, before any start.
    assert!(
        matches!(&err.kind, LoadErrorKind::Compile { error, .. } if error.contains("minimum byte size")),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("plugin big: "), "{err}");
}

#[test]
fn init_may_use_host_functions_that_need_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    // Fails init unless server.hostname reads back and the store counts;
    // logs and a stray set_reply must not trap.
    let wasm = module(
        &[
            ("prop", "server.hostname"),
            ("host", "mx.example.test"),
            ("key", "init-count"),
            ("msg", "starting"),
        ],
        r#"
  (func (export "sluice_init") (param $p i32) (param $n i32) (result i32)
    (local $len i32)
    (call $log (i32.const 2) $$msg)
    (call $set_reply (i32.const 550) $$msg)
    (local.set $len (call $get_property $$prop (i32.const 16384) (i32.const 64)))
    (if (i32.eqz (call $eq (i32.const 16384) (local.get $len) $$host))
      (then (return (i32.const 1))))
    (if (i64.ne (call $kv_incr $$key (i64.const 1) (i32.const 0)) (i64.const 1))
      (then (return (i32.const 2))))
    (i32.const 0))
"#,
    );
    let host = PluginHost::load(vec![spec(dir.path(), "init", &wasm)], env());
    assert!(host.is_ok(), "{:?}", host.err());
}
