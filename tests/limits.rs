//! Connection limits against the real binary: the overall `max_connections`,
//! and how it combines with the per-address limit. (One address hitting its
//! own limit, and the slot it frees, is in `bad_input.rs`.)

use std::net::IpAddr;
use std::time::Duration;

use sluice_e2e::{Client, HOSTNAME, Server, queue_by_id, wait_for};

const OVERALL_REFUSAL: &str = "421 4.7.0 Too many connections, try again later\r\n";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// A client that a full server refuses gets the `421` and nothing else.
fn expect_refused(addr: std::net::SocketAddr, from: IpAddr, reply: &str) {
    let mut refused =
        Client::connect_raw_from(from, addr).expect("the TCP connection itself is accepted");
    refused.expect_raw(reply);
    refused.expect_closed();
}

#[test]
fn the_fourth_connection_is_refused_until_one_of_three_leaves() {
    let server =
        Server::start_receiving("[limits]\nmax_connections = 3\nmax_connections_per_ip = 100\n");
    let mut first = Client::connect_ehlo(server.addr());
    let mut second = Client::connect_ehlo(server.addr());
    let mut third = Client::connect_ehlo(server.addr());

    expect_refused(server.addr(), ip("127.0.0.1"), OVERALL_REFUSAL);
    // The refusal cost none of the three their session.
    second.command_expect("NOOP", "250 2.0.0");
    third.command_expect("NOOP", "250 2.0.0");

    first.command_expect("QUIT", "221 2.0.0");
    first.expect_closed();
    // The server frees the slot as it closes its side, which may be just
    // after our EOF: connections refused before that are retried, for at
    // most 5 s.
    let admitted = wait_for(Duration::from_secs(5), || {
        let mut c = Client::connect_raw(server.addr()).ok()?;
        (c.try_read_reply().ok()?.code == 220).then_some(c)
    });
    let mut fourth = admitted.expect("no connection admitted within 5 s after one of three left");
    fourth.command_expect("EHLO client.example", "250");
    let r = fourth.transaction(
        "s@example.org",
        &["alice@example.test"],
        b"Subject: freed\r\n\r\nslot\r\n",
    );
    let id = r.queue_id().unwrap_or_else(|| panic!("refused: {r:?}"));
    assert_eq!(
        queue_by_id(server.spool_dir())[&id].content(),
        b"Subject: freed\r\n\r\nslot\r\n"
    );

    // Three are open again, so the next one is refused as before.
    expect_refused(server.addr(), ip("127.0.0.1"), OVERALL_REFUSAL);
    second.command_expect("QUIT", "221 2.0.0");
}

#[test]
fn each_address_has_its_own_limit_and_all_share_the_overall_one() {
    let server =
        Server::start_receiving("[limits]\nmax_connections = 3\nmax_connections_per_ip = 2\n");
    let addr = server.addr();
    let _a1 = Client::connect_from(ip("127.0.0.1"), addr);
    let _a2 = Client::connect_from(ip("127.0.0.1"), addr);
    expect_refused(
        addr,
        ip("127.0.0.1"),
        "421 4.7.0 Too many connections from 127.0.0.1, try again later\r\n",
    );

    // 127.0.0.1 being at its limit does not hold back another address.
    let mut b = Client::connect_from(ip("127.0.0.2"), addr);
    let r = b.command_expect("EHLO client.example", "250");
    assert_eq!(r.text(), format!("{HOSTNAME} Hello client.example"));

    // Three in all, from two addresses: a third address, under its own
    // limit, meets the overall one.
    expect_refused(addr, ip("127.0.0.3"), OVERALL_REFUSAL);
}
