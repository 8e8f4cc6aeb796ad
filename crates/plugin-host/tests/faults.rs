//! A plugin that traps, loops or allocates without end fails its own hook by
//! its `on_error` policy, and the next call gets a fresh instance.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_plugin_host::{
    Hook, HookError, KvError, KvStore, OnError, Outcome, Phase, RawVerdict, TestEnvelope,
    TestReport, test_run,
};

fn envelope(rcpts: &[&str]) -> TestEnvelope {
    TestEnvelope {
        client_ip: "192.0.2.7".parse().unwrap(),
        helo: "client.test".into(),
        mail_from: "<sender@client.test>".into(),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
        trusted: true,
        auth: Default::default(),
    }
}

const MESSAGE: &[u8] = b"Subject: test\n\nHello.\n";

fn rcpt_stages(report: &TestReport) -> Vec<&sluice_plugin_host::StageReport> {
    report
        .stages
        .iter()
        .filter(|s| s.hook == Hook::Rcpt)
        .collect()
}

fn run_fault(fault: &str, on_error: OnError) -> (TestReport, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "faulty", &faulty_plugin("bad", fault));
    spec.on_error = on_error;
    spec.memory_limit_mb = 8;
    let started = Instant::now();
    let report = test_run(
        vec![spec],
        env(),
        envelope(&["bad@x.test", "ok@x.test", "ok2@x.test"]),
        MESSAGE,
    )
    .unwrap();
    (report, started.elapsed())
}

fn assert_fault_then_fresh(fault: &str, why: fn(&HookError) -> bool) -> Duration {
    let (report, took) = run_fault(fault, OnError::Tempfail);
    let rcpts = rcpt_stages(&report);
    assert_eq!(rcpts.len(), 3, "{report}");
    let failed = rcpts[0].runs[0].result.as_ref().unwrap_err();
    assert!(why(failed), "unexpected failure: {failed:?}");
    match &rcpts[0].outcome {
        Outcome::Reject(reply) => assert_eq!(
            reply.to_string().trim_end(),
            "451 4.3.0 Filter faulty failed; try again later"
        ),
        other => panic!("fault gave {other:?}"),
    }
    // A reused instance would refuse ("instance reused after a fault").
    for stage in &rcpts[1..] {
        assert_eq!(
            stage.runs[0].result,
            Ok(Some(RawVerdict::Continue)),
            "{report}"
        );
        assert_eq!(stage.outcome, Outcome::Continue);
    }
    took
}

#[test]
fn a_trap_fails_the_hook_and_the_instance_is_replaced() {
    assert_fault_then_fresh(
        TRAP,
        |e| matches!(e, HookError::Trap { during: Phase::Hook, detail } if detail.contains("unreachable")),
    );
}

#[test]
fn an_endless_loop_is_cut_by_the_cpu_budget() {
    let took = assert_fault_then_fresh(SPIN, |e| {
        *e == HookError::CpuBudget {
            budget: Duration::from_millis(50),
        }
    });
    // Compiling, three hooks and the 50 ms budget: under a second (the
    // server test times the failing call alone).
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn endless_allocation_hits_the_memory_limit() {
    assert_fault_then_fresh(GROW, |e| *e == HookError::MemoryLimit { limit_mib: 8 });
}

#[test]
fn on_error_continue_lets_the_stage_go_on() {
    for fault in [TRAP, SPIN, GROW] {
        let (report, _) = run_fault(fault, OnError::Continue);
        let rcpts = rcpt_stages(&report);
        assert!(rcpts[0].runs[0].result.is_err(), "{report}");
        assert_eq!(rcpts[0].outcome, Outcome::Continue, "{report}");
        assert_eq!(rcpts[1].runs[0].result, Ok(Some(RawVerdict::Continue)));
        assert!(
            matches!(report.result, sluice_plugin_host::TestResult::Accepted(_)),
            "{report}"
        );
    }
}

#[test]
fn a_longer_budget_is_honoured_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), "faulty", &faulty_plugin("bad", SPIN));
    spec.cpu_budget = Duration::from_millis(300);
    let started = Instant::now();
    let report = test_run(vec![spec], env(), envelope(&["bad@x.test"]), MESSAGE).unwrap();
    let took = started.elapsed();
    let failed = rcpt_stages(&report)[0].runs[0].result.clone().unwrap_err();
    assert_eq!(
        failed,
        HookError::CpuBudget {
            budget: Duration::from_millis(300)
        }
    );
    assert_eq!(failed.to_string(), "CPU budget of 300 ms exceeded");
    assert!(took >= Duration::from_millis(300), "cut early: {took:?}");
    // Loose: a loaded two-core machine (the tests run in parallel) can
    // deschedule the spinning thread for a while; a budget not honoured at
    // all would spin for ever.
    assert!(took < Duration::from_millis(3000), "cut late: {took:?}");
}

/// A key-value store that takes `delay` for every call, then fails if
/// `broken`: a networked store that is slow, or gone.
struct Store {
    delay: Duration,
    broken: bool,
}

impl Store {
    fn answer<T>(&self, value: T) -> Result<T, KvError> {
        std::thread::sleep(self.delay);
        if self.broken {
            Err(KvError("connection refused".into()))
        } else {
            Ok(value)
        }
    }
}

impl KvStore for Store {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.answer(None)
    }
    fn set(&self, _: &[u8], _: &[u8], _: Option<Duration>) -> Result<(), KvError> {
        self.answer(())
    }
    fn incr(&self, _: &[u8], delta: i64, _: Option<Duration>) -> Result<i64, KvError> {
        self.answer(delta)
    }
}

/// How the RCPT hook of a plugin that reads the store in a loop fails.
fn store_failure(store: Store) -> HookError {
    let dir = tempfile::tempdir().unwrap();
    let wasm = module(
        &[("key", "greylist:k")],
        r#"
  (func (export "sluice_on_rcpt") (param i32 i32) (result i32)
    (loop $again
      (drop (call $kv_get $$key (i32.const 16384) (i32.const 64)))
      (br $again))
    (i32.const 0))
"#,
    );
    let mut env = env();
    env.kv = std::sync::Arc::new(store);
    env.blocking_budget = Duration::from_millis(100);
    let report = test_run(
        vec![spec(dir.path(), "greylist", &wasm)],
        env,
        envelope(&["a@x.test"]),
        MESSAGE,
    )
    .unwrap();
    rcpt_stages(&report)[0].runs[0].result.clone().unwrap_err()
}

#[test]
fn a_failing_store_fails_the_hook_and_says_so() {
    let failure = store_failure(Store {
        delay: Duration::ZERO,
        broken: true,
    });
    assert_eq!(failure, HookError::Kv(KvError("connection refused".into())));
    assert_eq!(failure.to_string(), "key-value store: connection refused");
}

/// A slow store does not eat the CPU budget, but the blocking budget
/// bounds the time one hook may spend waiting on it.
#[test]
fn a_slow_store_spends_the_blocking_budget_not_the_cpu_budget() {
    let failure = store_failure(Store {
        delay: Duration::from_millis(30),
        broken: false,
    });
    assert_eq!(failure, HookError::BlockingBudget);
}
