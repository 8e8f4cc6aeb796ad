//! `/metrics` and `/healthz` on the real server, scraped during a load run
//! and read by an independent parser (prometheus_client's, in the test
//! virtualenv): counters move by exactly the number of messages sent, the
//! histograms have their `_bucket`, `_sum` and `_count`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::tls::{TestCerts, TlsClient};
use sluice_e2e::{Client, Dnsmasq, Server, Sink, run, submit, wait_for};

const LIMIT: Duration = Duration::from_secs(20);
const MESSAGES: usize = 40;
const CONTENT: &[u8] = b"From: <load@example.org>\r\nTo: <someone@elsewhere.example>\r\n\
Subject: counted\r\n\r\nOne of many.\r\n";

/// `GET path` over a plain socket: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("text");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// What prometheus_client's parser makes of the text; panics if it refuses it.
fn parse(text: &str) -> Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    assert!(python.exists(), "run tests/prereqs.sh (target/pyvenv)");
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/promparse.py"));
    let out = run(cmd, text.as_bytes(), LIMIT);
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The value of the sample `name` whose labels include `labels`, summed
/// over the rest (0 when none).
fn value(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == name)
        .filter(|s| labels.iter().all(|(k, v)| s[1][k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server
        .wait_for_log("metrics on http://", LIMIT)
        .expect("the metrics endpoint announced");
    let rest = line.split("http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().expect("an address")
}

#[test]
fn counters_move_by_exactly_the_messages_sent_and_the_parser_agrees() {
    let sink = Sink::start();
    let server = Server::builder()
        .config(&format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [delivery]\nsmarthost = \"{}\"\n",
            sink.addr()
        ))
        .default_plugins()
        .start();
    let metrics = metrics_addr(&server);
    let listener = server.addr().to_string();

    let (status, body) = get(metrics, "/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let (status, _) = get(metrics, "/nowhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    let before = parse(&get(metrics, "/metrics").1);
    let families = &before["families"];
    assert_eq!(families["sluice_messages_received"], "counter");
    assert_eq!(families["sluice_accept_duration_seconds"], "histogram");
    assert_eq!(families["sluice_queue_messages"], "gauge");
    assert_eq!(families["sluice_build_info"], "gauge");
    assert_eq!(value(&before, "sluice_build_info", &[]), 1.0, "{before}");

    // The load: four connections in parallel, scraped while they send.
    let addr = server.addr();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect_ehlo(addr);
                for _ in 0..MESSAGES / 4 {
                    c.transaction("load@example.org", &["someone@elsewhere.example"], CONTENT);
                }
                c.command_expect("QUIT", "221");
            })
        })
        .collect();
    let mut scrapes = 0;
    while senders.iter().any(|s| !s.is_finished()) && scrapes < 50 {
        let during = parse(&get(metrics, "/metrics").1);
        let received = value(
            &during,
            "sluice_messages_received_total",
            &[("listener", &listener)],
        );
        assert!(received <= MESSAGES as f64, "{received}");
        scrapes += 1;
    }
    for s in senders {
        s.join().expect("a sender");
    }
    assert!(scrapes > 0);

    // Every message delivered to the sink: then the counters are final.
    wait_for(LIMIT, || (sink.accepted().len() == MESSAGES).then_some(())).expect("all delivered");
    let after = wait_for(LIMIT, || {
        let parsed = parse(&get(metrics, "/metrics").1);
        let delivered = value(
            &parsed,
            "sluice_deliveries_total",
            &[("result", "delivered")],
        );
        (delivered
            - value(
                &before,
                "sluice_deliveries_total",
                &[("result", "delivered")],
            )
            >= MESSAGES as f64)
            .then_some(parsed)
    })
    .expect("deliveries counted");

    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let n = MESSAGES as f64;
    let on_listener = [("listener", listener.as_str())];
    assert_eq!(delta("sluice_messages_received_total", &on_listener), n);
    // Our Received: header is counted with the content.
    assert!(delta("sluice_received_bytes_total", &on_listener) >= n * CONTENT.len() as f64);
    assert_eq!(
        delta(
            "sluice_deliveries_total",
            &[
                ("transport", "smtp"),
                ("result", "delivered"),
                ("tls", "false")
            ]
        ),
        n
    );
    assert_eq!(
        delta("sluice_deliveries_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(
        delta(
            "sluice_smtp_connections_total",
            &[("listener", &listener), ("result", "accepted")]
        ),
        // Four senders and the scrapes' none: the metrics port is not SMTP.
        4.0
    );
    // Histograms: buckets, sum and count, and the count is the messages.
    assert_eq!(delta("sluice_accept_duration_seconds_count", &[]), n);
    assert_eq!(
        delta("sluice_accept_duration_seconds_bucket", &[("le", "+Inf")]),
        n
    );
    assert!(delta("sluice_accept_duration_seconds_sum", &[]) > 0.0);
    assert!(delta("sluice_spool_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(delta("sluice_spool_committed_total", &[]) >= n);
    assert!(
        delta(
            "sluice_delivery_attempt_duration_seconds_count",
            &[("transport", "smtp")]
        ) >= 1.0
    );
    // The shipped plugins' hooks, by plugin and stage.
    assert!(
        delta(
            "sluice_filter_duration_seconds_count",
            &[("plugin", "relay-refusal"), ("stage", "rcpt")]
        ) >= n,
        "{after}"
    );
    // Stages: at least MAIL, RCPT and end of data per message, most of
    // them on the event loops (a hook that would wait for DNS is handed
    // off, and counted again on the filter thread).
    let on_loop = delta("sluice_filter_stages_total", &[("ran", "event_loop")]);
    let on_thread = delta("sluice_filter_stages_total", &[("ran", "filter_thread")]);
    let abandoned = delta("sluice_filter_stages_total", &[("ran", "abandoned")]);
    assert!(on_loop + on_thread - abandoned >= 3.0 * n, "{after}");
    // (How many stay on the loops depends on the machine's load: a plugin
    // whose hooks average over 1 ms there leaves them.)
    assert!(on_loop >= 1.0, "{after}");
    assert!(abandoned <= on_thread, "{after}");
    // The queue drained.
    assert_eq!(value(&after, "sluice_queue_messages", &[]), 0.0);
    // Nothing refused in this run.
    assert_eq!(delta("sluice_smtp_rejected_total", &[]), 0.0);
    // Small messages stay on the heap: no spill file.
    assert_eq!(delta("sluice_spilled_messages_total", &[]), 0.0);

    // A large one goes through a spill file, and is counted with its bytes.
    let mut large = b"Subject: large\r\n\r\n".to_vec();
    while large.len() < 600_000 {
        large.extend_from_slice(&[b'x'; 998]);
        large.extend_from_slice(b"\r\n");
    }
    let mut c = Client::connect_ehlo(addr);
    let reply = c.transaction("load@example.org", &["someone@elsewhere.example"], &large);
    assert_eq!(reply.code, 250, "{reply:?}");
    c.command_expect("QUIT", "221");
    let spilled = parse(&get(metrics, "/metrics").1);
    let grew = |name: &str| value(&spilled, name, &[]) - value(&after, name, &[]);
    assert_eq!(grew("sluice_spilled_messages_total"), 1.0);
    assert!(grew("sluice_spilled_bytes_total") >= large.len() as f64);

    // A refusal is counted by stage and code.
    let mut c = Client::connect_ehlo(addr);
    c.command_expect("RCPT TO:<alice@example.test>", "503");
    c.command_expect("QUIT", "221");
    let refused = wait_for(LIMIT, || {
        let parsed = parse(&get(metrics, "/metrics").1);
        let v = value(
            &parsed,
            "sluice_smtp_rejected_total",
            &[("stage", "rcpt"), ("code", "503")],
        );
        (v >= 1.0).then_some(v)
    });
    assert_eq!(refused, Some(1.0));
}

/// TLS handshakes (clients' STARTTLS, good and broken), AUTH attempts (a
/// right and a wrong password) and DNS lookups (a next hop found by MX):
/// each counted once per thing that happened.
#[test]
fn handshakes_logins_and_lookups_are_counted_as_they_happen() {
    let certs = TestCerts::new();
    let sink = Sink::start();
    let dns = Dnsmasq::start(
        &[
            "--mx-host=mx.test,mx1.mx.test,10",
            "--host-record=mx1.mx.test,127.0.0.1",
        ],
        "mx1.mx.test",
    );
    let mut hash = Command::new("openssl");
    hash.args(["passwd", "-6", "s3cret"]);
    let hash = run(hash, b"", LIMIT);
    assert!(hash.status.success());
    let users = certs.dir.path().join("users");
    std::fs::write(
        &users,
        format!("alice:{}", String::from_utf8(hash.stdout).unwrap()),
    )
    .unwrap();
    let server = Server::builder()
        .config(&format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [[listen]]\naddr = \"127.0.0.1:0\"\n\
             [[listen]]\naddr = \"127.0.0.1:0\"\nmode = \"submission\"\n\
             [auth]\nbackend = \"file\"\nusers_file = \"{}\"\nfailure_delay_ms = 50\n\
             [dns]\nnameservers = [\"{}\"]\n\
             [delivery]\nmx_port = {}\n",
            certs.config(),
            users.display(),
            dns.addr(),
            sink.addr().port()
        ))
        .start();
    let metrics = metrics_addr(&server);
    let [smtp, submission] = server.listen_addrs(2)[..] else {
        unreachable!()
    };
    let scrape = || parse(&get(metrics, "/metrics").1);
    let handshakes = |p: &Value, result| {
        value(
            p,
            "sluice_tls_handshakes_total",
            &[("side", "server"), ("result", result)],
        )
    };
    let logins = |p: &Value, result| {
        value(
            p,
            "sluice_auth_attempts_total",
            &[("mechanism", "PLAIN"), ("result", result)],
        )
    };
    let before = scrape();

    // One good handshake, two logins inside it.
    let mut plain = Client::connect(submission);
    plain.command_expect("EHLO client.example", "250");
    let mut tls = TlsClient::starttls(plain, certs.client_config());
    tls.command_expect("EHLO client.example", "250");
    let mut auth = |password: &str| {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{password}"));
        tls.send(format!("AUTH PLAIN {token}\r\n"));
        tls.read_reply().raw
    };
    assert!(auth("wrong").starts_with("535 "));
    assert!(auth("s3cret").starts_with("235 "));
    tls.command_expect("QUIT", "221");
    // One that breaks: STARTTLS answered, then bytes that are not TLS.
    let mut broken = Client::connect(submission);
    broken.command_expect("EHLO client.example", "250");
    broken.command_expect("STARTTLS", "220");
    broken.send("this is not a ClientHello\r\n\r\n");
    let counted = wait_for(LIMIT, || {
        let p = scrape();
        (handshakes(&p, "failed") > handshakes(&before, "failed")).then_some(p)
    })
    .expect("the broken handshake counted");
    assert_eq!(handshakes(&counted, "ok") - handshakes(&before, "ok"), 1.0);
    assert_eq!(
        handshakes(&counted, "failed") - handshakes(&before, "failed"),
        1.0
    );
    assert_eq!(
        logins(&counted, "success") - logins(&before, "success"),
        1.0
    );
    assert_eq!(
        logins(&counted, "failure") - logins(&before, "failure"),
        1.0
    );

    // A message to mx.test: its next hop comes from an MX lookup.
    let mx = |p: &Value, result| {
        value(
            p,
            "sluice_dns_lookups_total",
            &[("type", "MX"), ("result", result)],
        )
    };
    let id = submit(smtp, "load@example.org", "", &["bob@mx.test"], CONTENT);
    server.wait_delivery(&id, "bob@mx.test", "delivered", LIMIT);
    let after = scrape();
    assert_eq!(mx(&after, "ok") - mx(&before, "ok"), 1.0, "one MX lookup");
    assert_eq!(mx(&after, "not_found"), mx(&before, "not_found"));
    assert_eq!(sink.accepted().len(), 1);
}

#[test]
fn healthz_says_503_once_the_server_stops_accepting() {
    let server = Server::builder()
        .config("[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .keep_queued()
        .start();
    let metrics = metrics_addr(&server);
    assert_eq!(get(metrics, "/healthz").0, "HTTP/1.1 200 OK");
    // A client in a transaction keeps the server up for its grace period,
    // during which it no longer accepts new mail: health says so.
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<a@example.org>", "250");
    server.send_sigterm();
    let status = wait_for(LIMIT, || {
        let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        raw.starts_with("HTTP/1.1 503").then_some(raw)
    });
    assert!(status.is_some(), "no 503 from /healthz while stopping");
    drop(c);
}

#[test]
fn every_metric_the_grafana_dashboard_graphs_is_exported() {
    let server = Server::builder()
        .config("[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .default_plugins()
        .keep_queued()
        .start();
    let metrics = metrics_addr(&server);
    // Histograms show their series once something was observed.
    let mut c = Client::connect_ehlo(server.addr());
    c.transaction("a@example.org", &["alice@example.test"], CONTENT);
    c.command_expect("QUIT", "221");
    let text = get(metrics, "/metrics").1;
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/sluice.json"),
    )
    .unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert_eq!(parsed["__inputs"][0]["pluginId"], "prometheus");
    let mut names = Vec::new();
    for panel in parsed["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("sluice_") {
                    names.push(word.to_owned());
                }
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let family = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard graphs {name}, which /metrics does not export"
        );
    }
}

#[test]
fn the_spool_says_whether_its_segments_were_prepared_ahead() {
    let sink = Sink::start();
    let server = Server::builder()
        .config(&format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [spool]\nprepare_segments = \"always\"\n\n\
             [delivery]\nsmarthost = \"{}\"\n",
            sink.addr()
        ))
        .start();
    let metrics = metrics_addr(&server);
    let from_prepared = "sluice_spool_segments_created_total{origin=\"prepared\"} ";
    let before = parse(&get(metrics, "/metrics").1);
    assert_eq!(
        before["families"]["sluice_spool_segments_created"],
        "counter"
    );
    let origins = |parsed: &Value| {
        let created = |origin| {
            value(
                parsed,
                "sluice_spool_segments_created_total",
                &[("origin", origin)],
            )
        };
        (created("new"), created("prepared"))
    };
    assert_eq!(
        origins(&before),
        (1.0, 0.0),
        "the first segment, made at open"
    );

    // After the first MiB of that segment the next one is prepared, and
    // the next message moves to it.
    let mut content = b"From: <load@example.org>\r\nSubject: filler\r\n\r\n".to_vec();
    while content.len() < 4000 {
        content.extend_from_slice(b"The same line, to make a message of 4 KB.\r\n");
    }
    let mut c = Client::connect_ehlo(server.addr());
    let mut sent = 0;
    loop {
        c.transaction("load@example.org", &["someone@elsewhere.example"], &content);
        sent += 1;
        let text = get(metrics, "/metrics").1;
        let line = text
            .lines()
            .find(|l| l.starts_with(from_prepared))
            .expect("the series is exported");
        if line != format!("{from_prepared}0") {
            break;
        }
        assert!(
            sent < 1000,
            "no segment from a prepared file after {sent} messages"
        );
    }
    c.command_expect("QUIT", "221");
    assert!(sent > 200, "not before the first MiB: {sent} messages");
    let after = parse(&get(metrics, "/metrics").1);
    assert_eq!(origins(&after), (1.0, 1.0));
    assert_eq!(
        value(&after, "sluice_spool_segments_prepared_total", &[]),
        1.0
    );

    // Once everything is delivered, the first segment holds nothing live
    // and is deleted (the head never is); nothing needed copying forward.
    wait_for(LIMIT, || (sink.accepted().len() == sent).then_some(())).expect("all delivered");
    let done = wait_for(LIMIT, || {
        let parsed = parse(&get(metrics, "/metrics").1);
        (value(&parsed, "sluice_spool_segments_deleted_total", &[]) > 0.0).then_some(parsed)
    })
    .expect("the first segment deleted");
    assert_eq!(
        value(&done, "sluice_spool_segments_deleted_total", &[]),
        1.0
    );
    assert_eq!(
        value(&done, "sluice_spool_messages_compacted_total", &[]),
        0.0
    );
    assert_eq!(origins(&done), (1.0, 1.0));
}
