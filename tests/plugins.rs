//! Filter plugins end to end: the shipped plugins (relay refusal, anti-spam)
//! and faulty ones written here in WAT, loaded by the real `sluice serve`
//! and talked to over loopback sockets; `sluice plugin test`; the default
//! chain; and reloading the chain with SIGHUP.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_e2e::{Client, Dnsmasq, Server, run, sluice_bin, submit, wait_for, wait_for_maildir};

/// How long any one delivery, log line or reload may take to show up.
const LIMIT: Duration = Duration::from_secs(15);

/// The reply a failing hook gets with `on_error = "tempfail"` (ABI.md).
fn tempfail_reply(plugin: &str) -> String {
    format!("451 4.3.0 Filter {plugin} failed; try again later\r\n")
}

/// The absolute path of a shipped plugin, which must have been built.
fn shipped(name: &str) -> String {
    let path = format!("{}/../plugins/dist/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(&path).is_file(),
        "{path} is missing: run plugins/build.sh first (tests/run does)"
    );
    path
}

/// A `[[plugin]]` table (`settings` are more keys of it, one per line).
fn plugin_table(name: &str, path: &str, settings: &str) -> String {
    format!("[[plugin]]\nname = \"{name}\"\npath = \"{path}\"\n{settings}\n")
}

/// Compiles `wat` and writes it to `dir/<name>.wasm`.
fn write_wat(dir: &Path, name: &str, wat: &str) -> String {
    let wasm = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).expect("write the plugin");
    path.to_str().expect("a UTF-8 temp path").to_string()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-e2e-plugins-")
        .tempdir()
        .expect("a temp dir")
}

/// How many log lines contain every one of `needles`, once at least `n` do
/// (or [`LIMIT`] has passed).
fn count_logs(server: &Server, needles: &[&str], n: usize) -> usize {
    server.wait_for_log_lines(needles, n, LIMIT).len()
}

const CONTENT: &[u8] = b"From: Sender <sender@example.org>\r\n\
To: alice@example.test\r\n\
Subject: plugins\r\n\
Message-ID: <plugins-e2e@example.org>\r\n\
\r\n\
no Date header field, on purpose\r\n";

// ---------------------------------------------------------------- relay

#[test]
fn untrusted_clients_cannot_relay_even_through_disguises() {
    let server = Server::start(&format!(
        "{}\n[relay]\ntrusted_networks = []\n",
        plugin_table("relay-refusal", &shipped("relay-refusal"), "")
    ));
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let disguises = [
        "x@remote.test",
        "@example.test:x@remote.test",
        "x%remote.test@example.test",
        "remote.test!x@example.test",
        "\"x@remote.test\"@example.test",
        "x@[192.0.2.1]",
        // A source route through an address literal, which the front end's
        // grammar takes: the plugin judges the parts the server parsed, so
        // it refuses for good instead of answering 451 forever.
        "@[127.0.0.1]:x@remote.test",
        "x%@example.test",
    ];
    for path in disguises {
        // The plugin's 554 5.7.1, not the built-in mailbox check's 550 5.1.1
        // (which runs after the filters, and would not see the hidden hop).
        let r = c.command(&format!("RCPT TO:<{path}>"));
        assert_eq!(
            r.raw,
            format!("554 5.7.1 <{path}>: Relay access denied\r\n"),
            "RCPT TO:<{path}>"
        );
    }
    // The same route to a local mailbox is local mail, as with Postfix.
    c.send("RCPT TO:<@[127.0.0.1]:alice@example.test>\r\n");
    c.expect_raw("250 2.1.5 Ok\r\n");
    c.command_expect("DATA", "354");
    let mut wire = CONTENT.to_vec();
    wire.extend_from_slice(b".\r\n");
    c.send(wire);
    let id = c.expect("250 2.0.0").queue_id().expect("a queue id");
    c.command_expect("QUIT", "221 2.0.0");

    let files = wait_for_maildir(&server.maildir("alice"), 1, LIMIT);
    assert_eq!(files[0].received_content(&id), CONTENT);
    let refusals = count_logs(
        &server,
        &["refused by plugin", "plugin=relay-refusal"],
        disguises.len(),
    );
    assert_eq!(refusals, disguises.len(), "{:#?}", server.logs());
    server.wait_queue_empty(LIMIT);
    assert_eq!(server.all_maildir_messages().len(), 1);
}

#[test]
fn trusted_clients_may_relay_through_the_relay_refusal_plugin() {
    // The default trusted networks: loopback.
    let server = Server::start(&plugin_table(
        "relay-refusal",
        &shipped("relay-refusal"),
        "",
    ));
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<alice@example.test>", "250 2.1.0");
    c.command_expect("RCPT TO:<x@remote.test>", "250 2.1.5");
    c.command_expect("RCPT TO:<bob@example.test>", "250 2.1.5");
    // Nothing is queued: no delivery to a remote.test that does not exist.
    c.command_expect("RSET", "250 2.0.0");
    c.command_expect("QUIT", "221 2.0.0");
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("refused by plugin")),
        "{:#?}",
        server.logs()
    );
}

// ---------------------------------------------------------------- DNSBL

#[test]
fn a_client_listed_in_a_dnsbl_is_refused_at_rcpt() {
    let zone = "bl.example.test";
    let test_entry = format!("2.0.0.127.{zone}");
    let dns = Dnsmasq::start(
        &[
            &format!("--host-record={test_entry},127.0.0.2"),
            // Listed too, so that a plugin that asked about ordinary loopback
            // addresses would refuse the 127.0.0.1 client below.
            &format!("--host-record=1.0.0.127.{zone},127.0.0.2"),
            // The sender's domain exists (antispam checks it at MAIL).
            "--host-record=example.org,192.0.2.10",
        ],
        &test_entry,
    );
    let server = Server::start(&format!(
        "{}[plugin.config]\ndnsbl_zones = [\"{zone}\"]\n\n\
         [relay]\ntrusted_networks = []\n\n[dns]\nnameservers = [\"{}\"]\n",
        plugin_table("antispam", &shipped("antispam"), ""),
        dns.addr()
    ));

    let listed = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut c = Client::connect_from(listed, server.addr());
    c.command_expect("EHLO client.example", "250");
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let r = c.command("RCPT TO:<alice@example.test>");
    assert_eq!(
        r.raw,
        format!("554 5.7.1 Service unavailable; client [127.0.0.2] listed by {zone}\r\n")
    );
    c.command_expect("QUIT", "221 2.0.0");

    let mut c = Client::connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr());
    c.command_expect("EHLO client.example", "250");
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("QUIT", "221 2.0.0");
}

// ---------------------------------------------------------------- faults

/// The exports every faulty plugin shares; `$rcpt` is the hook's body.
fn faulty_wat(rcpt_body: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_abi_v1"))
  (func (export "sluice_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sluice_on_rcpt") (param i32 i32) (result i32)
    {rcpt_body}))"#
    )
}

const TRAPS: &str = "unreachable";
const LOOPS: &str = "(loop $forever (br $forever)) (i32.const 0)";
/// One page at a time, for ever: only the memory limit stops it.
const GROWS: &str = "(loop $more (drop (memory.grow (i32.const 1))) (br $more)) (i32.const 0)";

fn faulty_table(dir: &Path, name: &str, body: &str, on_error: &str, cpu_ms: u32) -> String {
    let path = write_wat(dir, name, &faulty_wat(body));
    plugin_table(
        name,
        &path,
        &format!("on_error = \"{on_error}\"\ncpu_budget_ms = {cpu_ms}\nmemory_limit_mb = 4"),
    )
}

/// RCPT gets the plugin's 451 4.3.0, for the reason `why` in the log, on
/// the next transaction of the same connection and on a new connection too;
/// the server keeps serving. Returns the first failure's log line.
fn assert_fails_closed(server: &mut Server, plugin: &str, first: &mut Client, why: &str) -> String {
    let line = server
        .wait_for_log(&format!("hook failed: {why}"), LIMIT)
        .unwrap_or_else(|| {
            panic!(
                "no `hook failed: {why}`; logs:\n{}",
                server.logs().join("\n")
            )
        });
    assert!(line.contains(&format!("plugin={plugin}")), "{line}");

    first.command_expect("RSET", "250 2.0.0");
    first.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let r = first.command("RCPT TO:<alice@example.test>");
    assert_eq!(r.raw, tempfail_reply(plugin), "the next transaction");
    first.command_expect("QUIT", "221 2.0.0");

    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let r = c.command("RCPT TO:<bob@example.test>");
    assert_eq!(r.raw, tempfail_reply(plugin), "a new connection");
    c.command_expect("NOOP", "250 2.0.0");
    c.command_expect("QUIT", "221 2.0.0");
    assert!(!server.has_exited(), "the server exited");
    let plugin_field = format!("plugin={plugin}");
    let failures = count_logs(server, &["hook failed", &plugin_field], 3);
    assert_eq!(failures, 3, "{:#?}", server.logs());
    line
}

fn start_and_fail_first_rcpt(dir: &Path, name: &str, body: &str, cpu_ms: u32) -> (Server, Client) {
    let server = Server::start(&faulty_table(dir, name, body, "tempfail", cpu_ms));
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let r = c.command("RCPT TO:<alice@example.test>");
    assert_eq!(r.raw, tempfail_reply(name));
    (server, c)
}

#[test]
fn a_plugin_that_traps_fails_closed() {
    let dir = temp_dir();
    let (mut server, mut c) = start_and_fail_first_rcpt(dir.path(), "trapper", TRAPS, 20);
    let line = assert_fails_closed(&mut server, "trapper", &mut c, "trap: ");
    assert!(line.contains("`unreachable`"), "{line}");
}

#[test]
fn a_plugin_that_grows_memory_without_end_fails_closed() {
    let dir = temp_dir();
    let (mut server, mut c) = start_and_fail_first_rcpt(dir.path(), "grower", GROWS, 20);
    assert_fails_closed(
        &mut server,
        "grower",
        &mut c,
        "memory limit of 4 MiB exceeded",
    );
}

#[test]
fn a_plugin_that_loops_is_stopped_by_its_budget_while_others_are_served() {
    // A budget long enough to see the server answer someone else meanwhile,
    // on its only event loop.
    const BUDGET_MS: u32 = 500;
    let dir = temp_dir();
    let mut server = Server::start(&format!(
        "{}\n[server]\nevent_loops = 1\n",
        faulty_table(dir.path(), "looper", LOOPS, "tempfail", BUDGET_MS)
    ));
    let mut other = Client::connect_ehlo(server.addr());
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let sent = Instant::now();
    c.send("RCPT TO:<alice@example.test>\r\n");
    other.command_expect("NOOP", "250 2.0.0");
    // The NOOP was answered while the RCPT still waits for the plugin.
    let stream = c.stream();
    stream.set_nonblocking(true).expect("non-blocking");
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).expect("blocking");
    assert!(
        matches!(&peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the RCPT was answered before the NOOP: {peeked:?}"
    );
    let r = c.read_reply();
    let took = sent.elapsed();
    assert_eq!(r.raw, tempfail_reply("looper"));
    assert!(
        took >= Duration::from_millis(BUDGET_MS.into()) && took < LIMIT,
        "the loop was stopped after {took:?}"
    );
    other.command_expect("QUIT", "221 2.0.0");
    assert_fails_closed(
        &mut server,
        "looper",
        &mut c,
        &format!("CPU budget of {BUDGET_MS} ms exceeded"),
    );
}

#[test]
fn failing_plugins_with_on_error_continue_let_the_message_through() {
    let dir = temp_dir();
    let plugins = [("trapper", TRAPS), ("looper", LOOPS), ("grower", GROWS)];
    let tables: String = plugins
        .iter()
        .map(|(name, body)| faulty_table(dir.path(), name, body, "continue", 20))
        .collect();
    let server = Server::start(&tables);
    let id = submit(
        server.addr(),
        "sender@example.org",
        "",
        &["alice@example.test"],
        CONTENT,
    );
    let files = wait_for_maildir(&server.maildir("alice"), 1, LIMIT);
    assert_eq!(files[0].received_content(&id), CONTENT);
    for (name, _) in plugins {
        let plugin_field = format!("plugin={name}");
        assert_eq!(
            count_logs(&server, &["hook failed", &plugin_field], 1),
            1,
            "{name} did not fail once; logs:\n{}",
            server.logs().join("\n")
        );
    }
    server.wait_queue_empty(LIMIT);
}

// ---------------------------------------------------------------- headers

#[test]
fn antispam_headers_are_in_the_delivered_message_after_received() {
    // Untrusted, so that antispam scores the message; the sender domain
    // check would need DNS, which this test has none of.
    let server = Server::start(&format!(
        "{}[plugin.config]\ncheck_sender_domain = false\n\n[relay]\ntrusted_networks = []\n",
        plugin_table("antispam", &shipped("antispam"), "")
    ));
    let id = submit(
        server.addr(),
        "sender@example.org",
        "",
        &["alice@example.test"],
        CONTENT,
    );
    let files = wait_for_maildir(&server.maildir("alice"), 1, LIMIT);
    let mut want =
        b"X-Spam-Score: 1.0\r\nX-Spam-Status: No, score=1.0 tests=MISSING_DATE\r\n".to_vec();
    want.extend_from_slice(CONTENT);
    let got = files[0].received_content(&id);
    assert_eq!(String::from_utf8_lossy(got), String::from_utf8_lossy(&want));
    server.wait_queue_empty(LIMIT);
}

// ---------------------------------------------------------------- plugin test

#[test]
fn plugin_test_reports_refusal_acceptance_and_errors_by_exit_status() {
    let dir = temp_dir();
    let eml = dir.path().join("message.eml");
    std::fs::write(&eml, CONTENT).expect("write the message");
    let relay = shipped("relay-refusal");
    let plugin_test = |plugin: &str, extra: &[&str]| {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["plugin", "test", "--plugin", plugin])
            .args([
                "--mail-from",
                "sender@example.org",
                "--rcpt",
                "x@remote.test",
            ])
            .args(extra)
            .arg(&eml)
            .current_dir(dir.path());
        let out = run(cmd, b"", Duration::from_secs(60));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    let (code, stdout, stderr) = plugin_test(&relay, &[]);
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("554 5.7.1 <x@remote.test>: Relay access denied"),
        "{stdout}"
    );

    let (code, stdout, stderr) = plugin_test(&relay, &["--trusted"]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("554"), "{stdout}");

    let missing: PathBuf = dir.path().join("no-such-plugin.wasm");
    let (code, stdout, stderr) = plugin_test(missing.to_str().expect("UTF-8"), &[]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("no-such-plugin.wasm"), "{stderr}");
}

#[test]
fn antispam_is_asked_at_rcpt_only_when_a_dnsbl_zone_is_configured() {
    // The shipped plugin's `sluice_hooks` (the SDK's `Filter::hooks`) as the
    // host applies it: without zones its RCPT hook is never called.
    let dir = temp_dir();
    let eml = dir.path().join("message.eml");
    std::fs::write(&eml, CONTENT).expect("write the message");
    let antispam = shipped("antispam");
    for (settings, asked) in [("{}", false), (r#"{"dnsbl_zones": ["bl.test"]}"#, true)] {
        let mut cmd = Command::new(sluice_bin());
        cmd.args(["plugin", "test", "--plugin", &antispam])
            .args(["--plugin-config", settings, "--trusted"])
            .args([
                "--mail-from",
                "sender@example.org",
                "--rcpt",
                "x@remote.test",
            ])
            .arg(&eml)
            .current_dir(dir.path());
        let out = run(cmd, b"", Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{settings}: {stdout}");
        // The other stages run either way.
        for stage in [
            "mail <sender@example.org>\n  antispam:",
            "data\n  antispam:",
        ] {
            assert!(stdout.contains(stage), "{settings}: {stdout}");
        }
        assert_eq!(
            stdout.contains("rcpt x@remote.test\n  antispam:"),
            asked,
            "{settings}: {stdout}"
        );
    }
}

// ---------------------------------------------------------------- defaults

#[test]
fn the_default_configuration_runs_both_shipped_plugins() {
    shipped("relay-refusal");
    shipped("antispam");
    // The defaults listen on 127.0.0.1:2525; another test run on this machine
    // may hold it for a while.
    let free = wait_for(Duration::from_secs(30), || {
        std::net::TcpListener::bind("127.0.0.1:2525").ok()
    });
    assert!(
        free.is_some(),
        "127.0.0.1:2525 stayed busy: stop whatever listens there and rerun"
    );
    drop(free);
    let mut server = Server::builder().default_config().start();
    let loaded = server
        .logs()
        .into_iter()
        .find(|l| l.contains("filters loaded"))
        .unwrap_or_else(|| panic!("no `filters loaded`; logs:\n{}", server.logs().join("\n")));
    assert!(
        loaded.contains("plugins=relay-refusal,antispam"),
        "{loaded}"
    );

    // A restart with the same .wasm files runs the code compiled by the
    // first start, kept in <spool>/plugin-cache, instead of compiling again.
    server.terminate(LIMIT);
    server.restart();
    let loaded = server.wait_for_log("filters loaded", LIMIT);
    assert!(loaded.is_some(), "the restarted server loaded no filters");
    for plugin in ["relay-refusal", "antispam"] {
        assert!(
            server
                .logs()
                .iter()
                .any(|l| l.contains("plugin code loaded from the cache")
                    && l.contains(&format!("plugin=\"{plugin}\""))),
            "{plugin} was not loaded from the cache; logs:\n{}",
            server.logs().join("\n")
        );
    }
}

// ---------------------------------------------------------------- reload

/// Refuses `blocked@example.test` (exactly as written) with its own reply.
fn blocker_wat() -> (String, String) {
    let target = "blocked@example.test";
    let text = format!("5.7.1 <{target}>: blocked by the reload test");
    let wat = format!(
        r#"(module
  (import "sluice" "set_reply" (func $set_reply (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{target}")
  (data (i32.const 64) "{text}")
  (func (export "sluice_abi_v1"))
  (func (export "sluice_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 32768)) (then (return (i32.const 0))))
    (i32.const 1024))
  (func (export "sluice_on_rcpt") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $len) (i32.const {target_len})) (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (br_if $differ
          (i32.ne (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
                  (i32.load8_u (i32.add (i32.const 16) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (local.get $len))))
      (call $set_reply (i32.const 550) (i32.const 64) (i32.const {text_len}))
      (return (i32.const 2)))
    (i32.const 0)))"#,
        target_len = target.len(),
        text_len = text.len(),
    );
    (wat, format!("550 {text}\r\n"))
}

/// On a new connection from an untrusted client: the blocked recipient
/// gets `blocked`, a relay attempt the relay plugin's 554, bob a 250.
fn assert_chain(server: &Server, blocked: &str) {
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let r = c.command("RCPT TO:<blocked@example.test>");
    assert_eq!(r.raw, blocked);
    let r = c.command("RCPT TO:<x@remote.test>");
    assert_eq!(r.raw, "554 5.7.1 <x@remote.test>: Relay access denied\r\n");
    c.command_expect("RCPT TO:<bob@example.test>", "250 2.1.5");
    c.command_expect("QUIT", "221 2.0.0");
}

#[test]
fn sighup_reloads_the_chain_and_keeps_it_when_the_new_one_fails() {
    let dir = temp_dir();
    let relay = plugin_table("relay-refusal", &shipped("relay-refusal"), "");
    let server = Server::start(&format!("{relay}\n[relay]\ntrusted_networks = []\n"));
    let original = std::fs::read_to_string(server.config_path()).expect("read the config");
    assert!(original.contains(&relay), "{original}");

    // Before: no plugin knows the address, and there is no such mailbox.
    assert_chain(
        &server,
        "550 5.1.1 <blocked@example.test>: Recipient address rejected: no such user here\r\n",
    );

    let mut before = Client::connect_ehlo(server.addr());
    before.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");

    let (wat, blocked) = blocker_wat();
    let blocker_path = write_wat(dir.path(), "blocker", &wat);
    let blocker = plugin_table("blocker", &blocker_path, "");
    let reloaded = original.replace(&relay, &format!("{relay}\n{blocker}"));
    std::fs::write(server.config_path(), &reloaded).expect("rewrite the config");
    server.send_signal("HUP");
    let line = server
        .wait_for_log("filters reloaded", LIMIT)
        .unwrap_or_else(|| panic!("no reload; logs:\n{}", server.logs().join("\n")));
    assert!(line.contains("plugins=relay-refusal,blocker"), "{line}");
    assert_chain(&server, &blocked);

    // The connection from before the reload goes on with its transaction.
    before.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    before.command_expect("DATA", "354");
    let mut wire = CONTENT.to_vec();
    wire.extend_from_slice(b".\r\n");
    before.send(wire);
    let id = before.expect("250 2.0.0").queue_id().expect("a queue id");
    before.command_expect("QUIT", "221 2.0.0");
    let files = wait_for_maildir(&server.maildir("alice"), 1, LIMIT);
    assert_eq!(files[0].received_content(&id), CONTENT);

    let missing = dir.path().join("missing.wasm");
    let broken = reloaded.replace(&blocker_path, missing.to_str().expect("UTF-8"));
    assert_ne!(broken, reloaded);
    std::fs::write(server.config_path(), broken).expect("rewrite the config");
    server.send_signal("HUP");
    let line = server
        .wait_for_log("kept the old version", LIMIT)
        .unwrap_or_else(|| panic!("no failed reload; logs:\n{}", server.logs().join("\n")));
    assert!(line.contains("missing.wasm"), "{line}");
    assert_chain(&server, &blocked);
    server.wait_queue_empty(LIMIT);
}
