//! The delivery client's timeouts (RFC 5321 §4.5.3.2), set short in
//! `[delivery]`, against next hops that go quiet: one that never sends its
//! greeting, and one that takes the whole message and never answers the
//! final dot. Either way the recipient is deferred, not failed, and the
//! message is delivered once the next hop behaves.

use std::time::{Duration, Instant};

use sluice_e2e::{Server, Sink, submit, wait_for};

const DELIVERY_LIMIT: Duration = Duration::from_secs(15);
/// Far above the 1 s timeouts the tests set, far below the RFC's minutes.
const TIMEOUT_BOUND: Duration = Duration::from_secs(10);

const RCPT: &str = "bob@remote.test";
const CONTENT: &[u8] = b"From: alice@example.test\r\nSubject: patience\r\n\r\nare you there?\r\n";

fn route_to(sink: &Sink, extra: &str) -> String {
    format!(
        "[delivery]\nroutes = {{ \"remote.test\" = \"{}\" }}\n{extra}",
        sink.addr()
    )
}

/// Panics if any delivery line says the recipient failed: a timeout is
/// never a reason to give up on the message.
fn assert_never_failed(server: &Server, id: &str) {
    let failed = server.logs().into_iter().find(|l| {
        l.contains(&format!("queue_id={id} "))
            && l.contains(" delivery ")
            && l.contains("outcome=\"failed\"")
    });
    assert!(failed.is_none(), "{failed:?}");
}

#[test]
fn a_next_hop_that_never_greets_is_deferred_after_the_greeting_timeout() {
    // Accepts the connection and says nothing until the gate opens.
    let sink = Sink::builder().gate_closed().start();
    let server = Server::start(&route_to(
        &sink,
        "greeting_timeout_secs = 1\nretry_schedule_secs = [3600]\n",
    ));
    let started = Instant::now();
    let id = submit(server.addr(), "alice@example.test", "", &[RCPT], CONTENT);
    let line = server.wait_delivery(&id, RCPT, "deferred", DELIVERY_LIMIT);
    let waited = started.elapsed();
    assert!(
        line.contains("451 4.4.2 Timed out waiting for the greeting"),
        "{line}"
    );
    assert!(
        (Duration::from_secs(1)..TIMEOUT_BOUND).contains(&waited),
        "deferred after {waited:?}, with a 1 s greeting timeout"
    );
    // The next hop was reached: this is not a connect failure.
    assert!(sink.connections() >= 1);
    assert!(sink.transactions().is_empty());

    // The operator sees why, once the outcome is journaled.
    let show = wait_for(DELIVERY_LIMIT, || {
        let show = server.queue_ok(&["show", &id]);
        show.contains("deferred after 1 attempt(s)").then_some(show)
    })
    .unwrap_or_else(|| {
        panic!(
            "never shown as deferred: {}",
            server.queue_ok(&["show", &id])
        )
    });
    let rcpt_line = show
        .lines()
        .find(|l| l.starts_with("rcpt:") && l.contains(RCPT))
        .unwrap_or_else(|| panic!("no line for {RCPT}: {show}"));
    assert!(
        rcpt_line.contains("Timed out waiting for the greeting"),
        "{rcpt_line}"
    );
    assert_never_failed(&server, &id);

    // Still queued, and delivered once the next hop greets.
    sink.open_gate();
    server.queue_ok(&["flush", &id]);
    server.wait_delivery(&id, RCPT, "delivered", DELIVERY_LIMIT);
    let accepted = sink
        .wait_accepted(1, DELIVERY_LIMIT)
        .expect("the message at the next hop");
    assert!(accepted[0].data.ends_with(CONTENT));
    server.wait_queue_empty(DELIVERY_LIMIT);
    assert_never_failed(&server, &id);
}

#[test]
fn a_next_hop_that_stalls_after_the_final_dot_is_deferred_and_retried() {
    // The first transaction gets no reply to its final dot; the retry is
    // answered at once.
    let sink = Sink::builder().stall_at_end_of_data(1).start();
    let server = Server::start(&route_to(
        &sink,
        "data_end_timeout_secs = 1\nretry_schedule_secs = [1]\n",
    ));
    let started = Instant::now();
    let id = submit(server.addr(), "alice@example.test", "", &[RCPT], CONTENT);
    let first = server.wait_delivery(&id, RCPT, "deferred", DELIVERY_LIMIT);
    let waited = started.elapsed();
    assert!(
        first.contains("451 4.4.2 Timed out waiting for the reply to the end of data"),
        "{first}"
    );
    assert!(
        (Duration::from_secs(1)..TIMEOUT_BOUND).contains(&waited),
        "deferred after {waited:?}, with a 1 s end-of-data timeout"
    );

    let second = server.wait_delivery(&id, RCPT, "delivered", DELIVERY_LIMIT);
    assert!(second.contains("250 2.0.0 Ok: accepted"), "{second}");
    server.wait_queue_empty(DELIVERY_LIMIT);
    assert_never_failed(&server, &id);

    let all = sink.transactions();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].reply.is_empty(), "the stalled one got a reply");
    assert!(all[1].accepted());
    // A new connection: the one that timed out is not reused.
    assert_ne!(all[0].connection, all[1].connection);
    // The stalled attempt carried the whole message. Had that next hop
    // kept it, it now has two copies: the duplicate RFC 1047 describes,
    // which SMTP accepts rather than losing mail.
    assert_eq!(all[0].data, all[1].data);
    assert!(all[1].data.ends_with(CONTENT));
    assert_eq!(all[1].recipients, [RCPT]);
}
