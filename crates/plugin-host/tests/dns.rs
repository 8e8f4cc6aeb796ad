//! `dns_lookup` against a real dnsmasq on a loopback port.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_plugin_host::{
    Hook, HookError, HostEnv, Outcome, RawVerdict, StageReport, TestEnvelope, test_run,
};

fn helo_stage(env: &HostEnv, wasm: &[u8], helo: &str) -> StageReport {
    let dir = tempfile::tempdir().unwrap();
    let envelope = TestEnvelope {
        client_ip: "127.0.0.2".parse().unwrap(),
        helo: helo.into(),
        mail_from: "".into(),
        rcpts: vec!["postmaster".into()],
        trusted: false,
        auth: Default::default(),
    };
    let report = test_run(
        vec![spec(dir.path(), "dnsbl", wasm)],
        env.clone(),
        envelope,
        b"\r\n",
    )
    .unwrap();
    report
        .stages
        .into_iter()
        .find(|s| s.hook == Hook::Helo)
        .unwrap()
}

fn logged(stage: &StageReport) -> Vec<String> {
    stage.runs[0].logs.iter().map(|l| l.text.clone()).collect()
}

#[test]
fn answers_nxdomain_nodata_failures_and_the_cache() {
    let mut dnsmasq = Dnsmasq::start();
    let env = env_with_dns(dnsmasq.addr, Duration::from_millis(500));
    let a = dns_plugin(1);

    let listed = helo_stage(&env, &a, "2.0.0.127.zen.test");
    assert_eq!(logged(&listed), ["127.0.0.2"]);
    match &listed.outcome {
        Outcome::Reject(reply) => {
            assert_eq!(reply.to_string().trim_end(), "554 5.7.1 Client listed")
        }
        other => panic!("{other:?}"),
    }
    // NXDOMAIN (-3): the plugin goes on.
    let unlisted = helo_stage(&env, &a, "3.0.0.127.zen.test");
    assert_eq!(unlisted.runs[0].result, Ok(Some(RawVerdict::Continue)));
    assert!(logged(&unlisted).is_empty());

    let txt = helo_stage(&env, &dns_plugin(16), "2.0.0.127.zen.test");
    assert_eq!(logged(&txt), ["listed for testing"]);
    let mx = helo_stage(&env, &dns_plugin(15), "zen.test");
    assert_eq!(logged(&mx), ["10 mx1.zen.test"]);
    // The name exists, without AAAA records: 0, and the plugin goes on.
    let aaaa = helo_stage(&env, &dns_plugin(28), "2.0.0.127.zen.test");
    assert_eq!(
        aaaa.runs[0].result,
        Ok(Some(RawVerdict::Continue)),
        "{aaaa:?}"
    );

    dnsmasq.stop();
    // Answered from the cache (TTL 60 s) with the server gone...
    let cached = helo_stage(&env, &a, "2.0.0.127.zen.test");
    assert_eq!(logged(&cached), ["127.0.0.2"]);
    // ...while a name never asked fails within the timeout (-2).
    let started = Instant::now();
    let failed = helo_stage(&env, &a, "4.0.0.127.zen.test");
    match &failed.outcome {
        Outcome::Reject(reply) => {
            assert_eq!(reply.to_string().trim_end(), "451 4.4.3 DNS lookup failed")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_plugin_looping_on_lookups_is_still_cut() {
    let dnsmasq = Dnsmasq::start();
    let env = env_with_dns(dnsmasq.addr, Duration::from_millis(500));
    let wasm = module(
        &[],
        r#"
  (func (export "sluice_on_helo") (param $p i32) (param $n i32) (result i32)
    (loop $again
      (drop (call $dns_lookup (i32.const 1) (local.get $p) (local.get $n) (i32.const 16384) (i32.const 512)))
      (br $again))
    (i32.const 0))
"#,
    );
    let started = Instant::now();
    let stage = helo_stage(&env, &wasm, "3.0.0.127.zen.test");
    let why = stage.runs[0].result.clone().unwrap_err();
    assert_eq!(
        why,
        HookError::CpuBudget {
            budget: Duration::from_millis(50)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_failed_lookup_is_kept_briefly_so_a_hook_need_not_wait_for_it_again() {
    let (_hole, addr) = black_hole();
    let resolver = sluice_plugin_host::DnsResolver::new(&sluice_plugin_host::DnsConfig {
        nameservers: vec![addr],
        timeout: Duration::from_millis(200),
        cache_entries: 8,
    })
    .unwrap();
    assert_eq!(resolver.cached(1, "x.zen.test"), None);
    assert_eq!(
        resolver.lookup(1, "x.zen.test"),
        sluice_plugin_host::DnsAnswer::Failed
    );
    // What a hook on an event loop finds without asking again.
    assert_eq!(
        resolver.cached(1, "X.zen.test."),
        Some(sluice_plugin_host::DnsAnswer::Failed)
    );
}
