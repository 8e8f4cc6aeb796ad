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
    busy.command_expect("MAIL FROM:<busy@example.org>", "250 2.1.0");
    busy.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    busy.command_expect("DATA", "354");
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
    let id = busy.expect("250 2.0.0").queue_id().expect("a queue id");
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
    stalled.command_expect("MAIL FROM:<stall@example.org>", "250 2.1.0");
    stalled.command_expect("RCPT TO:<alice@example.test>", "250 2.1.5");
    stalled.command_expect("DATA", "354");
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
fn a_spool_path_longer_than_a_socket_address_starts_and_answers_the_queue_commands() {
    // Container volumes and per-instance directories give spool paths of
    // 100+ octets; the control socket in them used to stop the start.
    let server = Server::builder().deep_spool().keep_queued().start();
    let socket = server.spool_dir().join("control.sock");
    assert!(
        socket.as_os_str().len() > 107,
        "{} is not longer than sun_path",
        socket.display()
    );
    assert!(socket.exists(), "no control socket at {}", socket.display());
    let id = send_message(
        server.addr(),
        "deep@example.org",
        &["alice@example.test"],
        b"Subject: deep\r\n\r\nx\r\n",
    );
    let spool = server.spool_dir().to_str().unwrap().to_string();
    let held = sluice(&["queue", "hold", &id, "--spool", &spool]);
    assert!(
        held.status.success(),
        "{}{}",
        String::from_utf8_lossy(&held.stdout),
        String::from_utf8_lossy(&held.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&held.stdout).trim(),
        format!("{id} is held")
    );
    let checked = sluice(&["check-config", server.config_path().to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// An installed copy of the binary, `<prefix>/bin/sluice`, with the shipped
/// plugins in `<prefix>/share/sluice/plugins/`, as `make install` or a
/// package lays them out.
fn install(prefix: &std::path::Path) -> std::path::PathBuf {
    let bin = prefix.join("bin/sluice");
    let share = prefix.join("share/sluice/plugins");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&share).unwrap();
    std::fs::copy(sluice_bin(), &bin).expect("install the binary");
    for plugin in ["relay-refusal", "antispam"] {
        let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../plugins/dist/{plugin}.wasm"));
        std::fs::copy(&built, share.join(format!("{plugin}.wasm")))
            .unwrap_or_else(|e| panic!("{}: {e} (run plugins/build.sh)", built.display()));
    }
    bin
}

#[test]
fn an_installed_binary_finds_its_shipped_plugins_from_any_directory() {
    let prefix = tempfile::Builder::new()
        .prefix("sluice-prefix-")
        .tempdir()
        .unwrap();
    let bin = install(prefix.path());
    let share = prefix.path().join("share/sluice/plugins");
    // No [[plugin]] table: the default chain, relay refusal first. Started
    // from `/`, where there is no plugins/dist to stumble upon.
    let server = Server::builder()
        .binary(&bin)
        .working_dir(std::path::Path::new("/"))
        .config("[relay]\ntrusted_networks = []\n")
        .default_plugins()
        .start();
    for plugin in ["relay-refusal", "antispam"] {
        let path = share.join(format!("{plugin}.wasm"));
        assert!(
            server
                .logs()
                .iter()
                .any(|l| l.contains(&format!("plugin={plugin}"))
                    && l.contains(&format!("path={}", path.display()))),
            "{plugin} not loaded from {}:\n{}",
            path.display(),
            server.logs().join("\n")
        );
    }
    // Relay refusal is on: a stranger cannot relay. (The null reverse-path:
    // antispam would look a sender's domain up in DNS.)
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<>", "250 2.1.0");
    c.send("RCPT TO:<x@remote.test>\r\n");
    c.expect_raw("554 5.7.1 <x@remote.test>: Relay access denied\r\n");

    let mut cmd = Command::new(&bin);
    cmd.current_dir("/")
        .args(["check-config", server.config_path().to_str().unwrap()]);
    let checked = run(cmd, b"", CLI_LIMIT);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "relay-refusal ({})",
            share.join("relay-refusal.wasm").display()
        )),
        "{stdout}"
    );
}

#[test]
fn a_shipped_plugin_that_is_not_installed_stops_check_config_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "spool_dir = \"{}\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[plugin]]\nname = \"no-such-plugin\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let checked = sluice(&["check-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start here"), "{stderr}");
    assert!(
        stderr.contains("the shipped plugin \"no-such-plugin\" (no-such-plugin.wasm) is not installed; looked in"),
        "{stderr}"
    );
    let served = sluice(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert_eq!(served.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no-such-plugin.wasm) is not installed"),
        "{stderr}"
    );
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
    assert!(stdout.contains("\n-- 1 message(s), "), "{stdout}");
    // The running server answered (from memory), not a replay of the files.
    assert!(
        server
            .wait_for_log_with(&["queue read", "command=list"], CLI_LIMIT)
            .is_some(),
        "the server did not answer the list"
    );
    let other = sluice(&["queue", "list", "--spool", &spool, "--domain", "other.test"]);
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "-- 0 message(s), 0 bytes\n",
        "the filter reached the server"
    );
    let summary = sluice(&["queue", "summary", "--spool", &spool]);
    let text = String::from_utf8_lossy(&summary.stdout);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("example.test"));
    assert!(
        row.is_some_and(|r| r.split_whitespace().nth(1) == Some("1")),
        "{text}"
    );
    let show = sluice(&["queue", "show", &id, "--spool", &spool]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.starts_with(&format!("id:       {id}")), "{text}");
    assert!(text.contains("Subject: list"), "{text}");
    let missing = sluice(&["queue", "show", "0000000000000", "--spool", &spool]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("is not in the queue"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(
        server
            .wait_for_log_with(&["queue read", "command=show"], CLI_LIMIT)
            .is_some()
    );

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

/// The login of the user the tests run as, from the user database.
fn current_login() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    String::from_utf8(out.stdout)
        .expect("a UTF-8 login")
        .trim()
        .to_string()
}

#[test]
fn with_no_config_it_serves_localhost_on_port_2525() {
    // Only this test uses the fixed port; it must be free.
    match TcpListener::bind("127.0.0.1:2525") {
        Ok(probe) => drop(probe),
        Err(e) => panic!("127.0.0.1:2525 is not free ({e}): stop whatever listens there and rerun"),
    }
    // As systemd, cron and a container's init start it: no $USER, no
    // $LOGNAME. The login's mailbox comes from the user database, and the
    // working directory is a temp dir outside the source tree.
    let server = Server::builder()
        .default_config()
        .env_remove("USER")
        .env_remove("LOGNAME")
        .start();
    assert_eq!(
        server.addr(),
        "127.0.0.1:2525".parse::<SocketAddr>().unwrap()
    );
    let login = current_login();
    let to_postmaster = send_message(
        server.addr(),
        "me@example.org",
        &["postmaster@localhost"],
        b"Subject: hi\r\n\r\npm\r\n",
    );
    // The README's first example, word for word, from a shell without $USER.
    let readme = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"swaks --server 127.0.0.1:2525 --to "$(id -un)@localhost" --body "hello""#)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("run swaks");
    let said = String::from_utf8_lossy(&readme.stdout);
    assert!(readme.status.success(), "swaks failed:\n{said}");
    let to_user = said
        .lines()
        .find_map(|l| l.split("Ok: queued as ").nth(1))
        .unwrap_or_else(|| panic!("no queue id in swaks' output:\n{said}"))
        .trim()
        .to_string();

    // Delivered, as the README says, to ./var/mail/<login>/new/ in the
    // working directory (the queue is ./var/spool).
    for (user, id, body) in [
        ("postmaster", &to_postmaster, "pm"),
        (login.as_str(), &to_user, "hello"),
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
        let content = String::from_utf8_lossy(delivered.content);
        assert!(content.contains(body), "{user}: {content}");
    }

    // Not an open relay by default... except for loopback, which is trusted;
    // an unknown local user is refused.
    let mut c = Client::connect_ehlo(server.addr());
    c.command_expect("MAIL FROM:<me@example.org>", "250 2.1.0");
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
    c.command_expect("NOOP", "250 2.0.0");
    c.command_expect("QUIT", "221 2.0.0");
    let mut fresh = Client::connect_ehlo(server.addr());
    fresh.command_expect("NOOP", "250 2.0.0");
    fresh.command_expect("QUIT", "221 2.0.0");

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
    c.command_expect("NOOP", "250 2.0.0");
    assert!(server.terminate(Duration::from_secs(15)).success());
    server.restart_unlimited();
    assert_all_queued(&server, &acked);
}

/// `[log] format = "json"`: every line one JSON object, the event's fields at
/// the top level beside the timestamp, level and message.
#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::start_receiving("[log]\nformat = \"json\"\n");
    let id = send_message(
        server.addr(),
        "json@example.org",
        &["alice@example.test"],
        b"Subject: logged\r\n\r\nhello\r\n",
    );
    // The delivery thread logs the same queue id, possibly first.
    let line = server
        .wait_for_log_with(
            &["\"message\":\"message\"", &format!("\"queue_id\":\"{id}\"")],
            CLI_LIMIT,
        )
        .expect("the transaction's line");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(event["level"], "INFO", "{line}");
    assert_eq!(event["message"], "message", "{line}");
    assert_eq!(event["queue_id"], id.as_str(), "{line}");
    assert_eq!(event["from"], "<json@example.org>", "{line}");
    assert!(event["timestamp"].is_string(), "{line}");
    for line in server.logs() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|v| v.is_object()),
            "not a JSON object: {line}"
        );
    }
}
