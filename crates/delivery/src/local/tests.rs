use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::maildir::io_error_outcome;
use super::*;

/// A stored message as the spool holds it: our Received: first, 8-bit
/// octets, and lines that began with "." on the wire (already unstuffed).
const BODY: &[u8] = b"Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Sluice) with ESMTP id 0CJ5N3R8G2K00;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n\
From: Bob <bob@example.org>\r\nSubject: caf\xc3\xa9 \xff\r\n\r\n.a line that began with a dot\r\n..two dots\r\n\x80\x81\xfe binary-ish\r\n.\r\nend\r\n";

fn config(root: &Path) -> LocalConfig {
    LocalConfig {
        maildir_root: root.to_path_buf(),
        hostname: "mx.example.test".into(),
    }
}

fn path(mailbox: &str) -> sluice_smtp::Path {
    sluice_smtp::Path::parse(format!("<{mailbox}>").as_bytes()).unwrap()
}

/// The reverse-path of `mailbox` (`""` for `<>`).
fn rp(mailbox: &str) -> ReversePath {
    if mailbox.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Path(path(mailbox))
    }
}

fn fp(mailbox: &str) -> ForwardPath {
    ForwardPath::Path(path(mailbox))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn delivery_writes_headers_and_body_byte_exact_into_new() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    let local = Local::new(config(&root));
    let outcome = local.deliver("alice", &rp("a@b"), &fp("alice@example.test"), BODY);
    assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");

    let maildir = root.join("alice");
    for sub in ["tmp", "new", "cur"] {
        let meta = fs::metadata(maildir.join(sub)).unwrap();
        assert!(meta.is_dir(), "{sub}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{sub}");
    }
    assert!(
        files_in(&maildir.join("tmp")).is_empty(),
        "tmp/ left behind"
    );
    assert!(files_in(&maildir.join("cur")).is_empty());
    let names = files_in(&maildir.join("new"));
    assert_eq!(names.len(), 1);
    let path = maildir.join("new").join(&names[0]);
    let mut expected = b"Return-Path: <a@b>\r\nDelivered-To: alice@example.test\r\n".to_vec();
    expected.extend_from_slice(BODY);
    assert_eq!(fs::read(&path).unwrap(), expected);
    // Maildir++: the size fields readers trust instead of stat'ing the file.
    assert!(
        names[0].ends_with(&format!(",S={0},W={0}", expected.len())),
        "{}",
        names[0]
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        outcome.reply().to_string().starts_with("250 2.0.0"),
        "{outcome:?}"
    );
    assert!(
        outcome.reply().to_string().contains(&names[0]),
        "{outcome:?}"
    );
}

#[test]
fn names_follow_the_maildir_convention_and_differ() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.hostname = "mx/1:2,3.example".into();
    let local = Local::new(c);
    for _ in 0..2 {
        let outcome = local.deliver("carol", &rp("a@b"), &fp("carol@example.test"), b"x\r\n");
        assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");
    }
    let names = files_in(&dir.path().join("carol/new"));
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);
    for name in &names {
        // <secs>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<size>
        let (secs, rest) = name.split_once(".M").unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000, "{name}");
        let (usec, rest) = rest.split_once('P').unwrap();
        assert!(usec.parse::<u32>().unwrap() < 1_000_000, "{name}");
        let (pid, rest) = rest.split_once('Q').unwrap();
        assert_eq!(pid.parse::<u32>().unwrap(), std::process::id(), "{name}");
        let (n, rest) = rest.split_once('.').unwrap();
        n.parse::<u64>().unwrap();
        let (host, sizes) = rest.split_once(',').unwrap();
        assert_eq!(host, "mx\\0571\\0722\\0543.example", "{name}");
        let size = fs::metadata(dir.path().join("carol/new").join(name))
            .unwrap()
            .len();
        assert_eq!(sizes, format!("S={size},W={size}"), "{name}");
    }
}

#[test]
fn null_reverse_path_gives_empty_return_path() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::new(config(dir.path()));
    let outcome = local.deliver(
        "Bob",
        &rp(""),
        &fp("bob@example.test"),
        b"Subject: x\r\n\r\nhi\r\n",
    );
    assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");
    let names = files_in(&dir.path().join("Bob/new"));
    let content = fs::read(dir.path().join("Bob/new").join(&names[0])).unwrap();
    assert!(
        content.starts_with(b"Return-Path: <>\r\nDelivered-To: bob@example.test\r\nSubject: x\r\n"),
        "{}",
        String::from_utf8_lossy(&content)
    );
}

#[test]
fn control_characters_cannot_inject_header_lines() {
    // The grammar keeps CR and LF out of addresses; the Maildir writer does
    // not count on it.
    let dir = tempfile::tempdir().unwrap();
    maildir::deliver(
        dir.path(),
        "host",
        "alice",
        "a@b\r\nX-Evil: 1",
        "alice@x\nX-Evil: 2",
        b"\r\n",
    );
    let names = files_in(&dir.path().join("alice/new"));
    let content = fs::read(dir.path().join("alice/new").join(&names[0])).unwrap();
    let text = String::from_utf8(content).unwrap();
    assert_eq!(text.matches("\r\n").count(), 3, "{text:?}");
    assert!(!text.contains("\nX-Evil"), "{text:?}");
}

#[test]
fn concurrent_deliveries_from_shared_local_all_land() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Local>();
    let dir = tempfile::tempdir().unwrap();
    let local = Local::new(config(dir.path()));
    std::thread::scope(|s| {
        for t in 0..4 {
            let local = &local;
            s.spawn(move || {
                for i in 0..10 {
                    let body = format!("thread {t} message {i}\r\n");
                    let outcome =
                        local.deliver("alice", &rp("a@b"), &fp("alice@x"), body.as_bytes());
                    assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");
                }
            });
        }
    });
    assert_eq!(files_in(&dir.path().join("alice/new")).len(), 40);
}

#[test]
fn user_names_that_leave_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let local = Local::new(config(&root));
    for user in ["..", ".", "", "../alice", "a/b", "/tmp/x", "x\0y"] {
        let outcome = local.deliver(user, &rp("a@b"), &fp("alice@x"), b"hi\r\n");
        match &outcome {
            Outcome::Failed(reason) => assert!(
                reason.reply.to_string().starts_with("550 5.1.1 "),
                "{reason}"
            ),
            other => panic!("{user:?}: {other:?}"),
        }
    }
    assert_eq!(files_in(dir.path()), vec!["root".to_owned()]);
    assert!(files_in(&root).is_empty());
}

#[test]
fn io_failure_is_deferred_with_the_error_text() {
    let dir = tempfile::tempdir().unwrap();
    // The root is a file, so no Maildir can be made under it.
    let root = dir.path().join("not-a-dir");
    fs::write(&root, b"").unwrap();
    let outcome = Local::new(config(&root)).deliver("alice", &rp("a@b"), &fp("alice@x"), b"hi\r\n");
    match outcome {
        Outcome::Deferred(reason) => {
            let reply = reason.reply.to_string();
            assert!(reply.starts_with("451 4.3.0 "), "{reply}");
            assert!(reply.to_lowercase().contains("not a directory"), "{reply}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failure_after_writing_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("alice");
    fs::create_dir_all(maildir.join("tmp")).unwrap();
    fs::create_dir_all(maildir.join("cur")).unwrap();
    // new/ is a file: the write into tmp/ succeeds, the link fails.
    fs::write(maildir.join("new"), b"").unwrap();
    let outcome = Local::new(config(dir.path())).deliver("alice", &rp("a@b"), &fp("alice@x"), BODY);
    assert!(matches!(outcome, Outcome::Deferred(_)), "{outcome:?}");
    assert!(
        outcome.reply().to_string().starts_with("451 4.3.0 "),
        "{outcome:?}"
    );
    assert!(files_in(&maildir.join("tmp")).is_empty());
}

#[test]
fn existing_maildir_is_used_and_a_missing_new_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("alice");
    fs::create_dir_all(maildir.join("tmp")).unwrap();
    let outcome = Local::new(config(dir.path())).deliver("alice", &rp("a@b"), &fp("alice@x"), BODY);
    assert!(matches!(outcome, Outcome::Delivered(_)), "{outcome:?}");
    assert_eq!(files_in(&maildir.join("new")).len(), 1);
    assert!(maildir.join("cur").is_dir());
}

/// ENOSPC and EDQUOT cannot be produced on demand without a small file
/// system of our own (mounting one needs privileges a test may not have),
/// so the mapping is tested from the errno the kernel would return; the
/// path from a failed write to this mapping is the same as in the test
/// above.
#[cfg(target_os = "linux")]
#[test]
fn disk_and_quota_full_map_to_452() {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    let full = io_error_outcome(&io::Error::from_raw_os_error(ENOSPC));
    assert_eq!(full, Outcome::local(452, (4, 3, 1), "Mail system full"));
    let quota = io_error_outcome(&io::Error::from_raw_os_error(EDQUOT));
    assert_eq!(quota, Outcome::local(452, (4, 2, 2), "Mailbox full"));
    let other = io_error_outcome(&io::Error::from_raw_os_error(5));
    assert!(
        other.reply().to_string().starts_with("451 4.3.0 "),
        "{other:?}"
    );
}

use std::io;
