//! One RCPT hook call through a reused plugin instance: the per-call cost of
//! the plugin host (research put a core-ABI `on_rcpt` at 123–144 ns of
//! wasmtime alone; this adds the chain's bookkeeping).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_plugin_host::{DnsConfig, DnsResolver, HookBench, HostEnv, Outcome, PluginSpec};

/// A relay check as a real plugin does it: split the forward-path at its
/// last `@`, ask the host whether the domain is ours, and refuse it if not
/// (with a reply) unless the client is trusted.
const RELAY: &str = r#"
(module
  (import "sluice" "is_local_domain" (func $is_local_domain (param i32 i32) (result i32)))
  (import "sluice" "get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "sluice" "set_reply" (func $set_reply (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "conn.trusted")
  (data (i32.const 32) "5.7.1 Relay access denied")
  (func (export "sluice_abi_v1"))
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "sluice_on_rcpt") (param $p i32) (param $n i32) (result i32)
    (local $i i32)
    (local.set $i (local.get $n))
    (block $found
      (loop $back
        (br_if $found (i32.eqz (local.get $i)))
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (br_if $found (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 64)))
        (br $back)))
    (if (call $is_local_domain
          (i32.add (local.get $p) (i32.add (local.get $i) (i32.const 1)))
          (i32.sub (local.get $n) (i32.add (local.get $i) (i32.const 1))))
      (then (return (i32.const 0))))
    (drop (call $get_property (i32.const 16) (i32.const 12) (i32.const 8192) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 8192)) (i32.const 49))
      (then (return (i32.const 0))))
    (call $set_reply (i32.const 554) (i32.const 32) (i32.const 25))
    (i32.const 2))
)
"#;

fn plugin_hook(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sluice-bench-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.wasm");
    std::fs::write(&path, wat::parse_str(RELAY).unwrap()).unwrap();
    // Never asked: the plugin makes no lookups.
    let dns = DnsResolver::new(&DnsConfig {
        nameservers: vec!["127.0.0.1:9".parse().unwrap()],
        timeout: Duration::from_millis(100),
        cache_entries: 0,
    })
    .unwrap();
    let directory = sluice_directory::Directory::new(sluice_directory::DirectoryConfig {
        domains: vec!["example.test".into()],
        ..Default::default()
    });
    let env = HostEnv::new("mx.example.test", std::sync::Arc::new(directory), dns);
    let bench = HookBench::new(
        vec![PluginSpec::new("relay", &path)],
        &env,
        "192.0.2.7".parse().unwrap(),
    )
    .unwrap();
    // The bench means something only if the plugin really decides.
    assert_eq!(bench.rcpt("alice@example.test"), Outcome::Continue);
    assert!(matches!(
        bench.rcpt("victim@elsewhere.test"),
        Outcome::Reject(_)
    ));

    let mut group = c.benchmark_group("plugin_hook");
    group.bench_function("rcpt_local", |b| {
        b.iter(|| black_box(bench.rcpt(black_box("alice@example.test"))))
    });
    group.bench_function("rcpt_relay_refused", |b| {
        b.iter(|| black_box(bench.rcpt(black_box("victim@elsewhere.test"))))
    });
    group.finish();
    drop(bench);
    let _ = std::fs::remove_dir_all(&dir);

    shipped_chain(c, &env);
}

/// The chain the server runs by default: relay-refusal then antispam, as
/// `plugins/build.sh` builds them. Skipped, with a note, when they are not built.
fn shipped_chain(c: &mut Criterion, env: &HostEnv) {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    let specs: Vec<PluginSpec> = ["relay-refusal", "antispam"]
        .iter()
        .map(|name| PluginSpec::new(*name, dist.join(format!("{name}.wasm"))))
        .collect();
    if let Some(missing) = specs.iter().find(|s| !s.path.exists()) {
        eprintln!(
            "plugin_hook/default_chain skipped: {} is not built (run plugins/build.sh)",
            missing.path.display()
        );
        return;
    }
    let bench = HookBench::new(specs, env, "192.0.2.7".parse().unwrap()).unwrap();
    assert_eq!(bench.rcpt("alice@example.test"), Outcome::Continue);
    assert!(matches!(
        bench.rcpt("victim@elsewhere.test"),
        Outcome::Reject(_)
    ));
    let mut group = c.benchmark_group("plugin_hook/default_chain");
    group.bench_function("rcpt_local", |b| {
        b.iter(|| black_box(bench.rcpt(black_box("alice@example.test"))))
    });
    group.bench_function("rcpt_relay_refused", |b| {
        b.iter(|| black_box(bench.rcpt(black_box("victim@elsewhere.test"))))
    });
    group.finish();
}

criterion_group!(benches, plugin_hook);
criterion_main!(benches);
