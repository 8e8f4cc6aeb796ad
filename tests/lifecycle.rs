//! The server's life outside single sessions: graceful shutdown, the other
//! subcommands, running with no config at all, and a disk that fills up.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use sluice_e2e::{
    Client, Reply, Server, queue_by_id, read_queue, run, send_message, sluice_bin, wait_for_maildir,
};

const CLI_LIMIT: Duration = Duration::from_secs(30);

fn sluice(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(args).env("NO_COLOR", "1");
    run(cmd, b"", CLI_LIMIT)
}

#[test]
fn sigterm_lets_the_transaction_in_flight_finish_and_closes_idle_clients() {
    let mut server = Server::start_receiving("[server]\nshutdown_grace_secs = 10\n");
    let addr = server.addr();
    let mut idle = Client::connect_ehlo(addr);
    let mut busy = Client::connect_ehlo(addr);
    busy.command_expect("MAIL FROM:<busy@example.org>", 250);
    busy.command_expect("RCPT TO:<alice@example.test>", 250);
    busy.command_expect("DATA", 354);
    busy.send("Subject: in flight\r\n\r\nfirst half\r\n");

    server.send_sigterm();
    let r = idle.read_reply();
    assert!(r.raw.starts_with("421 4.3.2 "), "the idle client got {r:?}");
    idle.expect_closed();

    // The idle client's 421 shows the shutdown is under way: the listeners
    // close (every event loop drops its copy), so a new client is refused at
    // once and can try the next MX instead of waiting for a greeting.
    let refused = sluice_e2e::wait_for(
        Duration::from_secs(5),
        || match std::net::TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    assert!(
        refused.is_some(),
        "new connections were still accepted during shutdown"
    );

    busy.send("second half\r\n.\r\n");
    let id = busy.expect(250).queue_id().expect("a queue id");
    // After its transaction the busy client is idle too: a 421 or a close.
    if let Ok(r) = busy.try_read_reply() {
        assert!(r.raw.starts_with("421 4.3.2 "), "{r:?}");
    }

    let status = server.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs().join("\n")
    );
    let queue = queue_by_id(server.spool_dir());
    assert_eq!(
        queue[&id].content(),
        b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    );
}

#[test]
fn the_shutdown_grace_period_bounds_a_stalled_transaction() {
    let mut server = Server::start_receiving("[server]\nshutdown_grace_secs = 1\n");
    let mut stalled = Client::connect_ehlo(server.addr());
    stalled.command_expect("MAIL FROM:<stall@example.org>", 250);
    stalled.command_expect("RCPT TO:<alice@example.test>", 250);
    stalled.command_expect("DATA", 354);
    stalled.send("Subject: never finished\r\n\r\nhalf");
    server.send_signal("INT");
    // The grace period is 1 s: the client is told, then the server exits.
    match stalled.try_read_reply() {
        Ok(r) => assert!(r.raw.starts_with("421 4.3.2 "), "{r:?}"),
        Err(e) => assert!(e.kind() == std::io::ErrorKind::UnexpectedEof, "{e}"),
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?} after SIGINT");
    assert!(
        read_queue(server.spool_dir()).is_empty(),
        "a message that never ended was queued"
    );
}

/// The control socket's thread is woken at shutdown by a connection to its
/// file; with the file removed under it, the server must still exit.
#[test]
fn sigterm_exits_even_when_the_control_socket_was_removed() {
    let mut server = Server::start_receiving("");
    let socket = server.spool_dir().join("control.sock");
    assert!(socket.exists(), "no control socket at {}", socket.display());
    std::fs::remove_file(&socket).expect("remove the control socket");
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?} after SIGTERM");
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("control socket unreachable at shutdown")),
        "{}",
        server.logs().join("\n")
    );
}

#[test]
fn check_config_accepts_a_good_file_and_explains_a_bad_one() {
    let server = Server::start_receiving("");
    let good = sluice(&["check-config", server.config_path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(stdout.contains("mx.example.test"), "{stdout}");
    assert!(stdout.contains("example.test"), "{stdout}");

    let bad_path = server.dir().join("bad.toml");
    std::fs::write(&bad_path, "[limits]\nmax_mesage_size = 10\n").unwrap();
    let bad = sluice(&["check-config", bad_path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown field `max_mesage_size`"),
        "{stderr}"
    );

    std::fs::write(&bad_path, "[limits]\nmax_line_length = 100\n").unwrap();
    let bad = sluice(&["check-config", bad_path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_line_length"), "{stderr}");
}

#[test]
fn queue_list_shows_accepted_messages_live_and_stopped() {
    let mut server = Server::start_receiving("");
    let id = send_message(
        server.addr(),
        "lister@example.org",
        &["alice@example.test"],
        b"Subject: list\r\n\r\nme\r\n",
    );
    let spool = server.spool_dir().to_str().unwrap().to_string();
    let live = sluice(&["queue", "list", "--spool", &spool]);
    let stdout = String::from_utf8_lossy(&live.stdout);
    assert!(
        live.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&live.stderr)
    );
    assert!(stdout.contains(&id), "{id} not listed:\n{stdout}");
    assert!(stdout.contains("lister@example.org"), "{stdout}");
    assert!(stdout.contains("alice@example.test"), "{stdout}");

    assert!(server.terminate(Duration::from_secs(15)).success());
    let config = server.config_path().to_str().unwrap().to_string();
    let stopped = sluice(&["queue", "list", "--config", &config]);
    let stdout = String::from_utf8_lossy(&stopped.stdout);
    assert!(
        stopped.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(
        stdout.contains(&id) && stdout.contains("lister@example.org"),
        "{stdout}"
    );
}

#[test]
fn with_no_config_it_serves_localhost_on_port_2525() {
    // Only this test uses the fixed port; it must be free.
    match TcpListener::bind("127.0.0.1:2525") {
        Ok(probe) => drop(probe),
        Err(e) => panic!("127.0.0.1:2525 is not free ({e}): stop whatever listens there and rerun"),
    }
    let server = Server::builder()
        .default_config()
        .env("USER", "tester")
        .start();
    assert_eq!(
        server.addr(),
        "127.0.0.1:2525".parse::<SocketAddr>().unwrap()
    );
    let to_postmaster = send_message(
        server.addr(),
        "me@example.org",
        &["postmaster@localhost"],
        b"Subject: hi\r\n\r\npm\r\n",
    );
    let to_user = send_message(
        server.addr(),
        "me@example.org",
        &["tester@localhost"],
        b"Subject: hi\r\n\r\nuser\r\n",
    );

    // Delivered, as the README says, to ./var/mail/<user>/new/ in the
    // working directory (the queue is ./var/spool).
    for (user, id, content) in [
        (
            "postmaster",
            &to_postmaster,
            &b"Subject: hi\r\n\r\npm\r\n"[..],
        ),
        ("tester", &to_user, &b"Subject: hi\r\n\r\nuser\r\n"[..]),
    ] {
        let mail = wait_for_maildir(
            &server.dir().join("var/mail").join(user),
            1,
            Duration::from_secs(30),
        );
        assert_eq!(mail.len(), 1, "{user}: {mail:#?}");
        let delivered = mail[0].delivered();
        assert_eq!(delivered.delivered_to, format!("{user}@localhost"));
        assert!(
            delivered.received.is_some_and(|r| r.contains(id.as_str())),
            "{user}: {delivered:?}"
        );
        assert_eq!(delivered.content, content, "{user}");
    }

    // Not an open relay by default... except for loopback, which is trusted;
    // an unknown local user is refused.
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<me@example.org>", 250);
    let r = c.command("RCPT TO:<nobody@localhost>");
    assert!(r.raw.starts_with("550 5.1.1 "), "{r:?}");
}

/// Sends 1 KB messages on one session until one is not accepted (at most
/// 200); returns the acknowledged (id, content) pairs and how the last ended.
fn fill(c: &mut Client) -> (Vec<(String, String)>, std::io::Result<Reply>) {
    let mut acked = Vec::new();
    for i in 0..200 {
        let content = format!(
            "Subject: fill {i}\r\n\r\n{}\r\nend {i}\r\n",
            "y".repeat(900)
        );
        match c.try_transaction(
            "fill@example.org",
            &["alice@example.test"],
            content.as_bytes(),
        ) {
            Ok(r) if r.code == 250 => acked.push((r.queue_id().expect("a queue id"), content)),
            other => return (acked, other),
        }
    }
    panic!("200 messages of 1 KB fitted under a 24 KiB file size limit");
}

/// Every acknowledged message is in the spool, intact (server stopped).
fn assert_all_queued(server: &Server, acked: &[(String, String)]) {
    let queue = queue_by_id(server.spool_dir());
    for (id, content) in acked {
        let m = queue
            .get(id)
            .unwrap_or_else(|| panic!("{id} acknowledged before the disk filled, then lost"));
        assert_eq!(m.content(), content.as_bytes(), "{id}");
    }
}

#[test]
fn a_full_disk_refuses_with_452_keeps_serving_and_loses_nothing_acknowledged() {
    // RLIMIT_FSIZE makes any write past 24 KiB fail with EFBIG: the first
    // spool segment fills up after a couple of dozen messages.
    let mut server = Server::builder()
        .file_size_limit(24 * 1024)
        .ignore_sigxfsz()
        .keep_queued()
        .start();
    let mut c = Client::connect_ehlo(server.addr());
    let (acked, last) = fill(&mut c);
    let r = last.expect("the connection broke when the disk filled");
    assert!(
        r.raw.starts_with("452 4.3.1 ") || r.raw.starts_with("451 4.3.0 "),
        "the message that did not fit got {r:?}"
    );
    assert!(
        !acked.is_empty(),
        "not even the first message fitted: the limit is too small for the test"
    );

    // Still serving: on this session and on a new one.
    c.command_expect("NOOP", 250);
    c.command_expect("QUIT", 221);
    let mut fresh = Client::connect_ehlo(server.addr());
    fresh.command_expect("NOOP", 250);
    fresh.command_expect("QUIT", 221);

    // Room again: every acknowledged message is there, intact.
    assert!(server.terminate(Duration::from_secs(15)).success());
    server.restart_unlimited();
    assert_all_queued(&server, &acked);
    let id = send_message(
        server.addr(),
        "fill@example.org",
        &["alice@example.test"],
        b"Subject: room\r\n\r\nagain\r\n",
    );
    assert!(read_queue(server.spool_dir()).iter().any(|m| m.id == id));
}

#[test]
fn a_file_size_limit_refuses_mail_rather_than_killing_the_server() {
    // As above, but SIGXFSZ keeps its default action (terminate), as under a
    // systemd `LimitFSIZE=` or a shell's `ulimit -f`: the server has to
    // ignore the signal itself to see EFBIG instead of dying.
    let mut server = Server::builder()
        .file_size_limit(24 * 1024)
        .keep_queued()
        .start();
    let mut c = Client::connect_ehlo(server.addr());
    let (acked, last) = fill(&mut c);
    if let Some(status) = sluice_e2e::wait_for(Duration::from_millis(500), || server.exit_status())
    {
        panic!(
            "the server died ({}) when a spool write passed RLIMIT_FSIZE after {} messages \
             (the client's last reply: {:?}); it should ignore SIGXFSZ so the write fails with EFBIG",
            match status.signal() {
                Some(25) => "killed by SIGXFSZ".to_string(),
                _ => format!("{status:?}"),
            },
            acked.len(),
            last.map(|r| r.raw).map_err(|e| e.to_string())
        );
    }
    let r = last.expect("the connection broke when the file size limit was reached");
    assert!(
        r.raw.starts_with("452 4.3.1 ") || r.raw.starts_with("451 4.3.0 "),
        "{r:?}"
    );
    c.command_expect("NOOP", 250);
    assert!(server.terminate(Duration::from_secs(15)).success());
    server.restart_unlimited();
    assert_all_queued(&server, &acked);
}
