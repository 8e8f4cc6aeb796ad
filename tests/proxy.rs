//! PROXY protocol v1 and v2 on a listener, from raw bytes: the header's
//! client address is what relay checks, the log and `Received:` see; a peer
//! outside `proxy_trusted` is refused (or served directly, if configured);
//! a malformed, oversize or late header closes the connection and holds up
//! nobody else. (Through a real HAProxy: tests/scaling.rs.)

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use sluice_e2e::{Client, Server, read_queue, wait_for};

const LIMIT: Duration = Duration::from_secs(10);

const CONTENT: &[u8] = b"From: <sender@example.org>\r\nTo: <alice@example.test>\r\n\
Subject: through a proxy\r\n\r\nHello.\r\n";

/// A PROXY listener trusting 127.0.0.1 only; clients at other loopback
/// addresses stand for the world. `untrusted`: the listener's setting.
fn server(untrusted: &str, timeout_secs: u64) -> Server {
    Server::builder()
        .config(&format!(
            "[[listen]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = true\n\
             proxy_trusted = [\"127.0.0.1/32\"]\nproxy_untrusted = \"{untrusted}\"\n\
             proxy_timeout_secs = {timeout_secs}\n\n\
             [relay]\ntrusted_networks = [\"127.0.0.1/32\", \"198.51.100.0/24\"]\n"
        ))
        .keep_queued()
        .start()
}

fn v2_header(client: [u8; 4], client_port: u16, server: [u8; 4], server_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&client);
    h.extend_from_slice(&server);
    h.extend_from_slice(&client_port.to_be_bytes());
    h.extend_from_slice(&server_port.to_be_bytes());
    h
}

/// Connects from 127.0.0.1 (the trusted proxy) and sends `header` first.
fn through_proxy(server: &Server, header: &[u8]) -> Client {
    let mut c = Client::connect_raw(server.addr()).expect("connect");
    c.send(header);
    c
}

#[test]
fn v1_and_v2_headers_name_the_client_for_relay_checks_and_received() {
    let server = server("refuse", 5);
    // v1: 192.0.2.7 is not in trusted_networks, so relaying is refused as
    // for any stranger, while local mail is taken, stamped with its address.
    let mut c = through_proxy(&server, b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 25\r\n");
    c.expect("220");
    c.command_expect("EHLO stranger.example", "250");
    c.command_expect("MAIL FROM:<sender@example.org>", "250 2.1.0");
    let relay = c.command("RCPT TO:<someone@elsewhere.example>");
    assert!(relay.has_status("554 5.7.1"), "{}", relay.raw);
    c.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.command_expect("DATA", "354");
    c.send([CONTENT, b".\r\n"].concat());
    c.expect("250 2.0.0");
    c.command_expect("QUIT", "221");

    // v2 with the greeting's bytes pipelined behind the header: a client in
    // a trusted network by the header's word may relay.
    let mut header = v2_header([198, 51, 100, 9], 40002, [127, 0, 0, 1], 25);
    header.extend_from_slice(b"EHLO friend.example\r\n");
    let mut c = through_proxy(&server, &header);
    c.expect("220");
    c.expect("250");
    c.transaction(
        "friend@example.org",
        &["someone@elsewhere.example"],
        CONTENT,
    );
    c.command_expect("QUIT", "221");

    let queued = wait_for(LIMIT, || {
        let q = read_queue(server.spool_dir());
        (q.len() == 2).then_some(q)
    })
    .expect("both messages queued");
    let stranger = queued
        .iter()
        .find(|m| m.helo == "stranger.example")
        .unwrap();
    assert_eq!(stranger.client_ip, "192.0.2.7".parse::<IpAddr>().unwrap());
    assert!(
        stranger.received().contains("[192.0.2.7]"),
        "{}",
        stranger.received()
    );
    let friend = queued.iter().find(|m| m.helo == "friend.example").unwrap();
    assert_eq!(friend.client_ip, "198.51.100.9".parse::<IpAddr>().unwrap());
    assert!(
        friend.received().contains("[198.51.100.9]"),
        "{}",
        friend.received()
    );
    assert!(
        !friend.received().contains("127.0.0.1"),
        "the proxy's address must not be the client's: {}",
        friend.received()
    );
}

#[test]
fn a_local_header_is_the_proxy_speaking_for_itself() {
    let server = server("refuse", 5);
    // v2 LOCAL (HAProxy's health checks): the socket's own address stands.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let mut c = through_proxy(&server, &local);
    c.expect("220");
    c.command_expect("EHLO proxy.example", "250");
    c.command_expect("QUIT", "221");
    // v1 UNKNOWN likewise.
    let mut c = through_proxy(&server, b"PROXY UNKNOWN\r\n");
    c.expect("220");
    c.command_expect("QUIT", "221");
}

#[test]
fn peers_outside_proxy_trusted_are_refused_or_served_directly() {
    let refusing = server("refuse", 5);
    let mut c = Client::connect_raw_from("127.0.0.2".parse().unwrap(), refusing.addr()).unwrap();
    // Even with a well-formed header: only a trusted proxy may claim one.
    c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 25\r\n");
    c.expect("554 5.7.1");
    c.expect_closed();
    assert!(
        refusing
            .wait_for_log("not a trusted proxy", LIMIT)
            .is_some()
    );

    let direct = server("direct", 5);
    let mut c = Client::connect_from("127.0.0.2".parse().unwrap(), direct.addr());
    c.command_expect("EHLO direct.example", "250");
    c.command_expect("MAIL FROM:<sender@example.org>", "250");
    // 127.0.0.2 is no trusted network: no relaying; local mail is fine.
    let relay = c.command("RCPT TO:<someone@elsewhere.example>");
    assert!(relay.has_status("554 5.7.1"), "{}", relay.raw);
    c.command_expect("RCPT TO:<alice@example.test>", "250");
    c.command_expect("QUIT", "221");
}

/// Reads until EOF or reset, bounded; returns what came before the end.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => return None,
        }
    }
}

#[test]
fn bad_oversize_and_late_headers_close_without_a_word_and_block_nobody() {
    let server = server("refuse", 2);
    // A slow proxy: half a header, then nothing. Opened first, so that the
    // others are served while it waits.
    let mut slow = TcpStream::connect(server.addr()).unwrap();
    slow.write_all(b"PROXY TCP4 192.0.2").unwrap();
    let slow_started = Instant::now();

    // Not a header at all.
    let mut garbage = TcpStream::connect(server.addr()).unwrap();
    garbage.write_all(b"EHLO not-a-proxy\r\n").unwrap();
    let said = read_to_close(&mut garbage, LIMIT).expect("closed");
    assert!(said.is_empty(), "{:?}", String::from_utf8_lossy(&said));

    // A v1 line with no end within 107 octets.
    let mut long = TcpStream::connect(server.addr()).unwrap();
    long.write_all(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat())
        .unwrap();
    let said = read_to_close(&mut long, LIMIT).expect("closed");
    assert!(said.is_empty());

    // A v2 header announcing 60,000 octets of TLVs.
    let mut big = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    big.extend_from_slice(&[0x21, 0x11]);
    big.extend_from_slice(&60_000u16.to_be_bytes());
    big.extend_from_slice(&[0u8; 2000]);
    let mut oversize = TcpStream::connect(server.addr()).unwrap();
    let _ = oversize.write_all(&big);
    let said = read_to_close(&mut oversize, LIMIT).expect("closed");
    assert!(said.is_empty());

    // Meanwhile a good client is served, while the slow one still waits.
    let mut c = through_proxy(&server, b"PROXY TCP4 192.0.2.8 127.0.0.1 40003 25\r\n");
    c.expect("220");
    c.command_expect("QUIT", "221");
    slow.set_nonblocking(true).unwrap();
    let still_open = matches!(slow.read(&mut [0u8; 16]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    slow.set_nonblocking(false).unwrap();
    assert!(
        still_open || slow_started.elapsed() >= Duration::from_secs(2),
        "the slow proxy's connection was closed before its time"
    );

    // The slow one goes when its 2 s are up.
    let said = read_to_close(&mut slow, LIMIT).expect("closed after the timeout");
    assert!(said.is_empty());
    assert!(
        server
            .wait_for_log("no PROXY header in time", LIMIT)
            .is_some()
    );
    assert!(server.wait_for_log("header longer than", LIMIT).is_some());
}
