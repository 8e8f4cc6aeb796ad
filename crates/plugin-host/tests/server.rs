//! The plugin host as the front end's filter, over real loopback sockets:
//! verdicts on the wire, faults, a slow plugin, notes and the key-value
//! store across transactions, reloads.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_plugin_host::{HostEnv, PluginHost};

fn server(specs: Vec<sluice_plugin_host::PluginSpec>, env: HostEnv) -> Server {
    Server::start(PluginHost::load(specs, env).unwrap())
}

fn session(addr: std::net::SocketAddr, helo: &str) -> Client {
    let mut c = Client::connect(addr);
    let r = c.command(&format!("EHLO {helo}"));
    assert!(r.starts_with("250 "), "{r}");
    c
}

#[test]
fn a_plugin_reply_reaches_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_plugin("@evil.test:blocked@x.test", "5.7.1 Source routes refused");
    let s = server(vec![spec(dir.path(), "relay", &relay)], env());
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    // The hook sees the forward-path as written, source route included.
    assert_eq!(
        c.command("RCPT TO:<@evil.test:blocked@x.test>"),
        "554 5.7.1 Source routes refused"
    );
    assert!(c.command("RCPT TO:<blocked@x.test>").starts_with("250 "));
}

/// Refuses MAIL from `refused@client.test` and every RCPT; `sluice_hooks`
/// leaves RCPT out when its configuration is longer than `{}`.
fn refuses_unless_left_out() -> Vec<u8> {
    module(
        &[
            ("refused", "refused@client.test"),
            ("mail", "5.7.1 mail hook ran"),
            ("rcpt", "5.7.1 rcpt hook ran"),
        ],
        r#"
  (global $skip_rcpt (mut i32) (i32.const 0))
  (func (export "sluice_init") (param $p i32) (param $n i32) (result i32)
    (global.set $skip_rcpt (i32.gt_u (local.get $n) (i32.const 2)))
    (i32.const 0))
  (func (export "sluice_hooks") (result i32)
    (if (result i32) (global.get $skip_rcpt)
      (then (i32.const 0x77))
      (else (i32.const 0x7f))))
  (func (export "sluice_on_mail") (param $p i32) (param $n i32) (result i32)
    (if (call $eq (local.get $p) (local.get $n) $$refused)
      (then
        (call $set_reply (i32.const 550) $$mail)
        (return (i32.const 2))))
    (i32.const 0))
  (func (export "sluice_on_rcpt") (param i32 i32) (result i32)
    (call $set_reply (i32.const 550) $$rcpt)
    (i32.const 2))
"#,
    )
}

#[test]
fn a_hook_the_configuration_leaves_out_is_never_called() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = refuses_unless_left_out();
    for (config, rcpt) in [
        ("{}", "550 5.7.1 rcpt hook ran"),
        (r#"{"skip_rcpt":true}"#, "250 2.1.5 Ok"),
    ] {
        let mut plugin = spec(dir.path(), "picky", &wasm);
        plugin.config_json = config.into();
        let s = server(vec![plugin], env());
        let mut c = session(s.addr, "client.test");
        // The mask leaves out only what it names: MAIL is still asked.
        assert_eq!(
            c.command("MAIL FROM:<refused@client.test>"),
            "550 5.7.1 mail hook ran",
            "{config}"
        );
        assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
        assert_eq!(c.command("RCPT TO:<b@x.test>"), rcpt, "{config}");
    }
}

#[test]
fn properties_describe_the_connection_and_transaction() {
    let dir = tempfile::tempdir().unwrap();
    // No HELO hook: the host must still remember the name.
    let s = server(vec![spec(dir.path(), "echo", &echo_plugin())], env());
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<first@x.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<second@x.test>").starts_with("250 "));
    for (property, value) in [
        ("conn.helo", "client.test"),
        ("conn.ip", "127.0.0.1"),
        ("conn.trusted", "1"),
        ("conn.tls", "0"),
        ("server.hostname", "mx.example.test"),
        ("tx.mail_from", "a@client.test"),
        // One per line; the reply shows the line break as a space.
        ("tx.rcpts", "first@x.test second@x.test"),
    ] {
        assert_eq!(
            c.command(&format!("RCPT TO:<{property}@x.test>")),
            format!("550 5.0.0 {value}"),
        );
    }
    // End of data only.
    assert!(c.command("RCPT TO:<tx.id@x.test>").starts_with("250 "));
    assert!(c.command("RSET").starts_with("250 "));
    assert!(c.command("MAIL FROM:<>").starts_with("250 "));
    assert_eq!(c.command("RCPT TO:<tx.mail_from@x.test>"), "550 5.0.0");
}

#[test]
fn each_transaction_lists_only_its_own_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let echo = || spec(dir.path(), "echo", &echo_plugin());
    // With no MAIL hook, the first RCPT writes the view; with one, MAIL does.
    let mail_hook = module(
        &[],
        r#"(func (export "sluice_on_mail") (param $p i32) (param $n i32) (result i32) (i32.const 0))"#,
    );
    transactions_list_their_own_recipients(vec![echo()]);
    transactions_list_their_own_recipients(vec![spec(dir.path(), "mail", &mail_hook), echo()]);
}

fn transactions_list_their_own_recipients(chain: Vec<sluice_plugin_host::PluginSpec>) {
    let s = server(chain, env());
    let mut c = session(s.addr, "client.test");
    let rcpts = |c: &mut Client| c.command("RCPT TO:<tx.rcpts@x.test>");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<first@x.test>").starts_with("250 "));
    assert_eq!(rcpts(&mut c), "550 5.0.0 first@x.test");
    // The refused RCPT above is not one of the transaction's.
    assert!(c.command("RCPT TO:<second@x.test>").starts_with("250 "));
    assert_eq!(rcpts(&mut c), "550 5.0.0 first@x.test second@x.test");
    // The same reverse-path again, after RSET, then after a message.
    assert!(c.command("RSET").starts_with("250 "));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<third@x.test>").starts_with("250 "));
    assert_eq!(rcpts(&mut c), "550 5.0.0 third@x.test");
    assert!(c.data("one").starts_with("250 "));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert_eq!(rcpts(&mut c), "550 5.0.0");
    assert!(c.command("RCPT TO:<fourth@x.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<fifth@x.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<sixth@x.test>").starts_with("250 "));
    assert_eq!(
        rcpts(&mut c),
        "550 5.0.0 fourth@x.test fifth@x.test sixth@x.test"
    );
    // A new HELO ends the transaction too.
    assert!(c.command("EHLO again.test").starts_with("250"));
    assert!(c.command("MAIL FROM:<b@client.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<seventh@x.test>").starts_with("250 "));
    assert_eq!(rcpts(&mut c), "550 5.0.0 seventh@x.test");
    assert_eq!(
        c.command("RCPT TO:<tx.mail_from@x.test>"),
        "550 5.0.0 b@client.test"
    );
    // A transaction that took no recipient, then another.
    for from in ["c@client.test", "d@client.test"] {
        assert!(c.command("RSET").starts_with("250 "));
        assert!(
            c.command(&format!("MAIL FROM:<{from}>"))
                .starts_with("250 ")
        );
        assert_eq!(
            c.command("RCPT TO:<tx.mail_from@x.test>"),
            format!("550 5.0.0 {from}")
        );
    }
}

#[test]
fn symbols_and_score_are_the_transactions_so_far() {
    let dir = tempfile::tempdir().unwrap();
    // The scoring plugin adds TEST_RCPT 1 at every RCPT, before echo runs.
    let s = server(
        vec![
            spec(dir.path(), "scoring", &scoring_plugin()),
            spec(dir.path(), "echo", &echo_plugin()),
        ],
        env(),
    );
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert_eq!(
        c.command("RCPT TO:<tx.symbols@x.test>"),
        "550 5.0.0 TEST_RCPT 1"
    );
    assert!(c.command("RCPT TO:<b@x.test>").starts_with("250 "));
    assert_eq!(
        c.command("RCPT TO:<tx.symbols@x.test>"),
        "550 5.0.0 TEST_RCPT 1 TEST_RCPT 1 TEST_RCPT 1"
    );
    assert_eq!(c.command("RCPT TO:<tx.score@x.test>"), "550 5.0.0 4");
    // The next transaction starts from nothing.
    assert!(c.command("RSET").starts_with("250 "));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert_eq!(c.command("RCPT TO:<tx.score@x.test>"), "550 5.0.0 1");
}

#[test]
fn headers_from_plugins_land_in_the_queued_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(vec![spec(dir.path(), "antispam", &scoring_plugin())], env());
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(c.command("RCPT TO:<b@x.test>").starts_with("250 "));
    let reply = c.data("scored");
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .expect(&reply);
    let stored = s.spool.get(id.parse().unwrap()).unwrap().expect("queued");
    let text = String::from_utf8(stored.body().to_vec()).unwrap();
    for field in [
        "\r\nX-Spam-Score: 3.5\r\n".to_string(),
        format!("\r\nX-Test-Queue-Id: {id}\r\n"),
        "\r\nX-Test-Subject: scored\r\n".to_string(),
    ] {
        assert!(text.contains(&field), "no {field:?} in {text}");
    }
}

#[test]
fn faults_fail_their_hook_and_the_next_call_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = vec![
        spec(dir.path(), "trap", &faulty_plugin("trap", TRAP)),
        spec(dir.path(), "spin", &faulty_plugin("spin", SPIN)),
        spec(dir.path(), "grow", &faulty_plugin("grow", GROW)),
    ];
    for s in &mut specs {
        s.memory_limit_mb = 8;
    }
    let s = server(specs, env());
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    for name in ["trap", "spin", "grow"] {
        let started = Instant::now();
        assert_eq!(
            c.command(&format!("RCPT TO:<{name}@x.test>")),
            format!("451 4.3.0 Filter {name} failed; try again later")
        );
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "{name}: {:?}",
            started.elapsed()
        );
        // Every plugin gets a fresh instance: a reused one would refuse.
        assert!(
            c.command("RCPT TO:<ok@x.test>").starts_with("250 "),
            "after {name}"
        );
    }
}

#[test]
fn a_plugin_blocked_in_dns_holds_up_only_its_own_connection() {
    let (_socket, nameserver) = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        vec![spec(dir.path(), "dnsbl", &dns_plugin(1))],
        env_with_dns(nameserver, Duration::from_secs(2)),
    );
    let mut slow = Client::connect(s.addr);
    let started = Instant::now();
    slow.send("EHLO slow.zen.test");
    // Meanwhile, a whole transaction on another connection, same event loop.
    std::thread::sleep(Duration::from_millis(100));
    let fast_started = Instant::now();
    let mut fast = session(s.addr, "fast.client.test");
    assert!(
        fast.command("MAIL FROM:<a@client.test>")
            .starts_with("250 ")
    );
    assert!(fast.command("RCPT TO:<b@x.test>").starts_with("250 "));
    assert!(fast.data("hello").starts_with("250 "));
    let fast_took = fast_started.elapsed();
    assert!(
        fast_took < Duration::from_millis(1000),
        "fast connection took {fast_took:?}"
    );
    // The blocked lookup times out; time spent blocked does not count
    // against the 50 ms CPU budget, so the plugin itself answers.
    assert_eq!(slow.reply(), "451 4.4.3 DNS lookup failed");
    let slow_took = started.elapsed();
    assert!(slow_took >= Duration::from_millis(1900), "{slow_took:?}");
    assert!(slow_took < Duration::from_secs(4), "{slow_took:?}");
}

#[test]
fn notes_and_counters_follow_connections_and_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(vec![spec(dir.path(), "notes", &notes_plugin())], env());
    let mut c = session(s.addr, "client.test");
    for n in 1..=3 {
        // MAIL refuses if the last transaction's note survived the reset;
        // RCPT refuses unless the HELO (connection) note is still there.
        assert!(
            c.command("MAIL FROM:<a@client.test>").starts_with("250 "),
            "MAIL {n}"
        );
        assert!(
            c.command("RCPT TO:<b@x.test>").starts_with("250 "),
            "RCPT {n}"
        );
        let end = c.data(&format!("message {n}"));
        if n < 3 {
            assert!(end.starts_with("250 "), "message {n}: {end}");
        } else {
            assert_eq!(end, "452 4.7.1 Too many messages");
        }
    }
    // RSET also ends the transaction.
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(c.command("RSET").starts_with("250 "));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    // A new connection has no HELO note until it says HELO, and shares the
    // key-value store.
    let mut other = session(s.addr, "other.test");
    assert!(
        other
            .command("MAIL FROM:<a@client.test>")
            .starts_with("250 ")
    );
    assert!(other.command("RCPT TO:<b@x.test>").starts_with("250 "));
    assert_eq!(other.data("four"), "452 4.7.1 Too many messages");
}

#[test]
fn reload_swaps_the_chain_and_a_bad_reload_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = spec(
        dir.path(),
        "relay-v1",
        &relay_plugin("one@x.test", "5.7.1 v1 refuses"),
    );
    let s = server(vec![v1], env());
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    assert_eq!(c.command("RCPT TO:<one@x.test>"), "554 5.7.1 v1 refuses");
    assert!(c.command("RCPT TO:<two@x.test>").starts_with("250 "));

    let v2 = spec(
        dir.path(),
        "relay-v2",
        &relay_plugin("two@x.test", "5.7.1 v2 refuses"),
    );
    s.host.reload(vec![v2]).unwrap();
    assert_eq!(s.host.plugin_names(), ["relay-v2"]);
    // The same connection, mid-transaction, now meets the new chain.
    assert!(c.command("RCPT TO:<one@x.test>").starts_with("250 "));
    assert_eq!(c.command("RCPT TO:<two@x.test>"), "554 5.7.1 v2 refuses");

    let broken = spec(dir.path(), "broken", b"\0asm\x01\0\0\0garbage");
    let err = s.host.reload(vec![broken]).unwrap_err();
    assert_eq!(err.plugin.as_deref(), Some("broken"));
    assert!(
        matches!(err.kind, sluice_plugin_host::LoadErrorKind::Compile { .. }),
        "{err:?}"
    );
    assert_eq!(s.host.plugin_names(), ["relay-v2"]);
    assert_eq!(c.command("RCPT TO:<two@x.test>"), "554 5.7.1 v2 refuses");
}

#[test]
fn a_call_in_flight_finishes_on_the_chain_it_started_on() {
    let (_socket, nameserver) = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        vec![spec(dir.path(), "dnsbl", &dns_plugin(1))],
        env_with_dns(nameserver, Duration::from_millis(800)),
    );
    let mut slow = Client::connect(s.addr);
    slow.send("EHLO slow.zen.test");
    std::thread::sleep(Duration::from_millis(200));
    // The new chain has no HELO hook at all.
    let v2 = spec(dir.path(), "relay", &relay_plugin("one@x.test", "5.7.1 no"));
    s.host.reload(vec![v2]).unwrap();
    assert_eq!(slow.reply(), "451 4.4.3 DNS lookup failed");
    // The next HELO on that connection runs on the new chain.
    assert!(slow.command("EHLO slow.zen.test").starts_with("250 "));
}

/// Counts the HELOs it has seen on the connection (a connection note) and
/// answers MAIL with `550 5.0.0 helos=<count>`.
fn helo_counter() -> Vec<u8> {
    module(
        &[("key", "helos")],
        r#"
  (data (i32.const 20000) "5.0.0 helos=")
  (func (export "sluice_on_helo") (param $p i32) (param $n i32) (result i32)
    (if (i32.lt_s (call $note_get (i32.const 0) $$key (i32.const 20012) (i32.const 1)) (i32.const 1))
      (then (i32.store8 (i32.const 20012) (i32.const 48))))
    (i32.store8 (i32.const 20012) (i32.add (i32.load8_u (i32.const 20012)) (i32.const 1)))
    (call $note_set (i32.const 0) $$key (i32.const 20012) (i32.const 1))
    (i32.const 0))
  (func (export "sluice_on_mail") (param $p i32) (param $n i32) (result i32)
    (local $r i32)
    (local.set $r (call $note_get (i32.const 0) $$key (i32.const 20012) (i32.const 8)))
    (call $set_reply (i32.const 550) (i32.const 20000) (i32.add (i32.const 12) (local.get $r)))
    (i32.const 2))
"#,
    )
}

/// Looks the HELO name up (A) and goes on whatever the answer.
fn helo_lookup() -> Vec<u8> {
    module(
        &[],
        r#"
  (func (export "sluice_on_helo") (param $p i32) (param $n i32) (result i32)
    (drop (call $dns_lookup (i32.const 1) (local.get $p) (local.get $n) (i32.const 16384) (i32.const 512)))
    (i32.const 0))
"#,
    )
}

#[test]
fn hooks_run_on_the_event_loop_until_a_lookup_must_wait_and_count_once() {
    let dnsmasq = Dnsmasq::start();
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_with_dns(dnsmasq.addr, Duration::from_millis(500));
    env.inline_callers = 1;
    let s = server(
        vec![
            spec(dir.path(), "counter", &helo_counter()),
            spec(dir.path(), "lookup", &helo_lookup()),
        ],
        env,
    );
    // Not in the cache: the HELO stage starts on the event loop, the lookup
    // would wait, the stage is abandoned and runs on a filter thread. The
    // counter's note was put back first: one HELO, counted once.
    let mut first = session(s.addr, "2.0.0.127.zen.test");
    assert_eq!(
        first.command("MAIL FROM:<a@client.test>"),
        "550 5.0.0 helos=1"
    );
    let (_, abandoned) = s.host.inline_counts();
    assert!(abandoned >= 1, "the uncached lookup hands the stage off");
    // (MAIL may or may not have run on the event loop: a reset queued behind
    // the handed-off HELO can still be waiting for its filter thread.)
    // Cached now: HELO and MAIL both run on the event loop. A hook call on
    // an event loop that an epoch tick happens to cross is abandoned too,
    // whatever it does (one tick's deadline comes 0–5 ms after the call
    // began), which a slow machine makes likely: a few sessions are allowed
    // for one that runs whole on the loop. With the lookup waiting every
    // time, none would.
    let whole_on_the_loop = (0..5).any(|_| {
        let before = s.host.inline_counts();
        let mut next = session(s.addr, "2.0.0.127.zen.test");
        assert_eq!(
            next.command("MAIL FROM:<a@client.test>"),
            "550 5.0.0 helos=1"
        );
        s.host.inline_counts() == (before.0 + 2, before.1)
    });
    assert!(
        whole_on_the_loop,
        "HELO and MAIL ran on the event loop with the answer cached: {:?}",
        s.host.inline_counts()
    );
}

#[test]
fn with_no_inline_callers_every_hook_runs_on_a_filter_thread() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(vec![spec(dir.path(), "counter", &helo_counter())], env());
    let mut c = session(s.addr, "client.test");
    assert_eq!(c.command("MAIL FROM:<a@client.test>"), "550 5.0.0 helos=1");
    assert_eq!(s.host.inline_counts(), (0, 0));
}

#[test]
fn a_plugin_that_always_needs_more_than_its_slice_leaves_the_event_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut spinner = spec(dir.path(), "spinner", &faulty_plugin("spin", SPIN));
    spinner.cpu_budget = Duration::from_millis(20);
    let mut env = env();
    env.inline_callers = 1;
    let s = server(vec![spinner], env);
    let mut c = session(s.addr, "client.test");
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250 "));
    let mut abandoned = Vec::new();
    for _ in 0..40 {
        // Each spins: cut on the event loop, run again on a filter thread,
        // where its 20 ms budget fails it (451 by on_error).
        let r = c.command("RCPT TO:<spin@x.test>");
        assert!(r.starts_with("451 4.3.0"), "{r}");
        abandoned.push(s.host.inline_counts().1);
    }
    // Its average passed 1 ms within a dozen calls or so: no more cuts after.
    let last = *abandoned.last().unwrap();
    assert!(last < 30, "still cut on the event loop: {abandoned:?}");
    assert_eq!(abandoned[29], last, "{abandoned:?}");
}
