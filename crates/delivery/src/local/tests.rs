use std::collections::BTreeMap;
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
        users: vec!["alice".into(), "Bob".into(), "carol".into()],
        aliases: BTreeMap::new(),
        hostname: "mx.example.test".into(),
        recipient_delimiter: String::new(),
    }
}

fn with_aliases(pairs: &[(&str, &str)]) -> Local {
    let mut c = config(Path::new("/nonexistent"));
    c.aliases = pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Local::new(c)
}

fn mailbox(user: &str) -> Target {
    Target::Mailbox(user.into())
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn reply_of(outcome: Result<Vec<Target>, Outcome>) -> Outcome {
    outcome.expect_err("expected an error")
}

#[test]
fn delivery_writes_headers_and_body_byte_exact_into_new() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    let local = Local::new(config(&root));
    let outcome = local.deliver("alice", "a@b", "alice@example.test", BODY);
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");

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
    assert!(outcome.reply().starts_with("250 2.0.0"), "{outcome:?}");
    assert!(outcome.reply().contains(&names[0]), "{outcome:?}");
}

#[test]
fn names_follow_the_maildir_convention_and_differ() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.hostname = "mx/1:2,3.example".into();
    let local = Local::new(c);
    for _ in 0..2 {
        let outcome = local.deliver("carol", "a@b", "carol@example.test", b"x\r\n");
        assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
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
    let outcome = local.deliver("Bob", "", "bob@example.test", b"Subject: x\r\n\r\nhi\r\n");
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
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
    let dir = tempfile::tempdir().unwrap();
    let local = Local::new(config(dir.path()));
    local.deliver("alice", "a@b\r\nX-Evil: 1", "alice@x\nX-Evil: 2", b"\r\n");
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
                    let outcome = local.deliver("alice", "a@b", "alice@x", body.as_bytes());
                    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
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
        let outcome = local.deliver(user, "a@b", "alice@x", b"hi\r\n");
        match &outcome {
            Outcome::Failed { reply } => assert!(reply.starts_with("550 5.1.1 "), "{reply}"),
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
    let outcome = Local::new(config(&root)).deliver("alice", "a@b", "alice@x", b"hi\r\n");
    match outcome {
        Outcome::Deferred { reply } => {
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
    let outcome = Local::new(config(dir.path())).deliver("alice", "a@b", "alice@x", BODY);
    assert!(matches!(outcome, Outcome::Deferred { .. }), "{outcome:?}");
    assert!(outcome.reply().starts_with("451 4.3.0 "), "{outcome:?}");
    assert!(files_in(&maildir.join("tmp")).is_empty());
}

#[test]
fn existing_maildir_is_used_and_a_missing_new_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("alice");
    fs::create_dir_all(maildir.join("tmp")).unwrap();
    let outcome = Local::new(config(dir.path())).deliver("alice", "a@b", "alice@x", BODY);
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
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
    assert_eq!(
        full,
        Outcome::Deferred {
            reply: "452 4.3.1 Mail system full".into()
        }
    );
    let quota = io_error_outcome(&io::Error::from_raw_os_error(EDQUOT));
    assert_eq!(
        quota,
        Outcome::Deferred {
            reply: "452 4.2.2 Mailbox full".into()
        }
    );
    let other = io_error_outcome(&io::Error::from_raw_os_error(5));
    assert!(other.reply().starts_with("451 4.3.0 "), "{other:?}");
}

use std::io;

#[test]
fn users_resolve_case_insensitively_to_their_configured_name() {
    let local = with_aliases(&[]);
    assert_eq!(local.resolve("ALICE").unwrap(), vec![mailbox("alice")]);
    assert_eq!(local.resolve("bob").unwrap(), vec![mailbox("Bob")]);
}

#[test]
fn unknown_user_fails_with_5_1_1() {
    let err = reply_of(with_aliases(&[]).resolve("mallory"));
    assert!(matches!(err, Outcome::Failed { .. }), "{err:?}");
    assert!(err.reply().starts_with("550 5.1.1 mallory"), "{err:?}");
}

#[test]
fn postmaster_always_exists() {
    let local = with_aliases(&[]);
    assert_eq!(
        local.resolve("PostMaster").unwrap(),
        vec![mailbox("postmaster")]
    );
}

#[test]
fn alias_chain_ends_at_postmaster() {
    let local = with_aliases(&[("root", "postmaster"), ("abuse", "Root")]);
    assert_eq!(local.resolve("ABUSE").unwrap(), vec![mailbox("postmaster")]);
}

#[test]
fn alias_to_a_full_address_is_remote() {
    let local = with_aliases(&[("fwd", "bob@remote.test")]);
    assert_eq!(
        local.resolve("fwd").unwrap(),
        vec![Target::Remote("bob@remote.test".into())]
    );
}

#[test]
fn alias_lists_expand_once_per_target() {
    let local = with_aliases(&[
        ("team", "alice, Bob ,ops, carol@remote.test"),
        ("ops", "bob, carol@remote.test"),
    ]);
    assert_eq!(
        local.resolve("team").unwrap(),
        vec![
            mailbox("alice"),
            mailbox("Bob"),
            Target::Remote("carol@remote.test".into())
        ]
    );
}

#[test]
fn alias_naming_itself_keeps_a_copy_for_the_user() {
    let local = with_aliases(&[("alice", "alice, alice@backup.test")]);
    assert_eq!(
        local.resolve("Alice").unwrap(),
        vec![mailbox("alice"), Target::Remote("alice@backup.test".into())]
    );
}

#[test]
fn alias_loop_fails_with_5_4_6() {
    let local = with_aliases(&[("a", "b"), ("b", "A")]);
    let err = reply_of(local.resolve("a"));
    assert!(matches!(err, Outcome::Failed { .. }), "{err:?}");
    // Found as a loop, not merely as a chain that ran too deep.
    assert_eq!(
        err.reply(),
        "550 5.4.6 Routing loop detected: alias loop a -> b -> a"
    );
    // A loop not through alice still taints every expansion that reaches it.
    let local = with_aliases(&[("x", "alice, y"), ("y", "z"), ("z", "y")]);
    assert!(
        reply_of(local.resolve("x"))
            .reply()
            .starts_with("550 5.4.6 ")
    );
}

#[test]
fn alias_chains_are_limited_in_depth() {
    let chain = |n: usize| {
        let pairs: Vec<(String, String)> = (0..n)
            .map(|i| {
                let target = if i + 1 == n {
                    "alice".to_owned()
                } else {
                    format!("a{}", i + 1)
                };
                (format!("a{i}"), target)
            })
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        with_aliases(&refs)
    };
    assert_eq!(
        chain(aliases::MAX_ALIAS_DEPTH).resolve("a0").unwrap(),
        vec![mailbox("alice")]
    );
    let err = reply_of(chain(aliases::MAX_ALIAS_DEPTH + 1).resolve("a0"));
    assert!(matches!(err, Outcome::Failed { .. }), "{err:?}");
    assert!(err.reply().starts_with("550 5.4.6 "), "{err:?}");
}

#[test]
fn wide_expansions_are_bounded() {
    // Ten levels of fan-out two: 2^10 leaves, each visited through every path.
    let pairs: Vec<(String, String)> = (0..10)
        .map(|i| {
            let next = if i == 9 {
                "alice".to_owned()
            } else {
                format!("l{}", i + 1)
            };
            (format!("l{i}"), format!("{next}, {next}"))
        })
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let err = reply_of(with_aliases(&refs).resolve("l0"));
    assert!(matches!(err, Outcome::Deferred { .. }), "{err:?}");
    assert!(err.reply().starts_with("451 4.3.5 "), "{err:?}");
}

#[test]
fn broken_alias_targets_are_deferred_as_misconfiguration() {
    let local = with_aliases(&[("bad", "not an@address@x"), ("empty", " , ")]);
    for name in ["bad", "empty"] {
        let err = reply_of(local.resolve(name));
        assert!(matches!(err, Outcome::Deferred { .. }), "{name}: {err:?}");
        assert!(err.reply().starts_with("451 4.3.5 "), "{name}: {err:?}");
    }
    let local = with_aliases(&[("sales", "nobody-here")]);
    let err = reply_of(local.resolve("sales"));
    assert!(err.reply().starts_with("550 5.1.1 sales"), "{err:?}");
}

#[test]
fn an_address_extension_resolves_to_its_mailbox_when_delimiters_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.recipient_delimiter = "+".into();
    c.users.push("dev+ops".into());
    c.aliases.insert("sales".into(), "carol".into());
    let local = Local::new(c);
    assert_eq!(local.resolve("alice+lists"), Ok(vec![mailbox("alice")]));
    assert_eq!(local.resolve("BOB+x+y"), Ok(vec![mailbox("Bob")]));
    // Aliases see the mailbox part too.
    assert_eq!(local.resolve("sales+eu"), Ok(vec![mailbox("carol")]));
    // A name that contains the delimiter matches exactly first.
    assert_eq!(local.resolve("dev+ops"), Ok(vec![mailbox("dev+ops")]));
    assert!(
        reply_of(local.resolve("dave+x"))
            .reply()
            .starts_with("550 5.1.1")
    );
    assert!(
        reply_of(local.resolve("+alice"))
            .reply()
            .starts_with("550 5.1.1")
    );

    // Off by default.
    let plain = Local::new(config(dir.path()));
    assert!(
        reply_of(plain.resolve("alice+lists"))
            .reply()
            .starts_with("550 5.1.1")
    );
}
