//! A spool written by the release before the typed envelope (entry version 1,
//! text replies) is read by this one: every message, envelope, state and
//! body; and new journal entries in the current format go on top of it.

use std::net::IpAddr;
use std::path::Path;

use sluice_smtp::{
    BodyType, EnhancedCode, ForwardPath, MailParams, Path as SmtpPath, Reply, ReversePath,
};
use sluice_spool::{JournalEntry, QueueId, Reason, RecipientState, RemoteMta, Spool, SpoolConfig};

fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    for file in std::fs::read_dir(&fixture).unwrap() {
        let file = file.unwrap().path();
        if file.extension().is_some_and(|e| e == "log") {
            std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn path(s: &str) -> SmtpPath {
    SmtpPath::parse(s.as_bytes()).unwrap()
}

fn id(s: &str) -> QueueId {
    s.parse().unwrap()
}

fn deferred_reason(state: &RecipientState) -> &Reason {
    match state {
        RecipientState::Deferred {
            last, attempts: 1, ..
        } => last,
        other => panic!("not deferred after one attempt: {other:?}"),
    }
}

#[test]
fn a_version_1_spool_is_read_whole() {
    let dir = fixture_copy();
    let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(report.live_messages, 3, "{report:?}");

    // 1: MAIL parameters and body type, our own failure and a next hop's.
    let m = spool.get(id("038J9W7YN6000")).unwrap().unwrap();
    let env = &m.entry.envelope;
    assert_eq!(
        env.reverse_path,
        ReversePath::Path(path("<sender@example.org>"))
    );
    assert_eq!(
        env.params,
        MailParams {
            size: Some(300),
            body: Some(BodyType::EightBitMime),
            ..MailParams::default()
        }
    );
    assert_eq!(m.entry.helo, "client.example");
    assert_eq!(m.entry.client_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    let rcpts: Vec<ForwardPath> = env
        .recipients
        .iter()
        .map(|r| r.forward_path.clone())
        .collect();
    assert_eq!(
        rcpts,
        [
            "<alice@example.test>",
            "<bob@remote.test>",
            "<broken@example.test>",
            "<gone@remote.test>"
        ]
        .map(|p| ForwardPath::Path(path(p)))
    );
    assert_eq!(m.states[0], RecipientState::Delivered);
    let bob = deferred_reason(&m.states[1]);
    assert_eq!(
        bob.remote_mta,
        Some(RemoteMta {
            name: "[127.0.0.1]".into(),
            addr: Some("127.0.0.1:2798".parse().unwrap()),
        })
    );
    assert_eq!(
        bob.reply,
        Reply::new(
            450,
            Some(EnhancedCode::new(4, 2, 1)),
            "mailbox busy, try later"
        )
    );
    let RecipientState::Failed(broken) = &m.states[2] else {
        panic!("broken@ should have failed: {:?}", m.states[2])
    };
    assert_eq!(
        broken.remote_mta, None,
        "an alias to nobody is our own failure"
    );
    assert_eq!(broken.reply.code(), 550);
    assert_eq!(broken.reply.enhanced(), Some(EnhancedCode::new(5, 1, 1)));
    let RecipientState::Failed(gone) = &m.states[3] else {
        panic!("gone@ should have failed: {:?}", m.states[3])
    };
    assert_eq!(
        gone.remote_mta.as_ref().map(|r| r.name.as_str()),
        Some("[127.0.0.1]")
    );
    assert_eq!(gone.reply.text(), "<gone@remote.test>: no such user");
    assert!(
        m.body()
            .starts_with(b"Received: from client.example ([127.0.0.1])")
    );
    assert!(
        m.body().ends_with("caf\u{e9} 8bit body\r\n".as_bytes()),
        "{:?}",
        String::from_utf8_lossy(m.body())
    );

    // 2: the null reverse-path and <Postmaster>.
    let m = spool.get(id("038J9W7YN8000")).unwrap().unwrap();
    let env = &m.entry.envelope;
    assert_eq!(env.reverse_path, ReversePath::Null);
    assert_eq!(env.recipients[0].forward_path, ForwardPath::Postmaster);
    assert_eq!(
        env.recipients[1].forward_path,
        ForwardPath::Path(path("<x@dead.test>"))
    );
    let refused = deferred_reason(&m.states[1]);
    assert_eq!(refused.remote_mta, None);
    assert_eq!(refused.reply.text(), "Connection refused by [127.0.0.1]:9");
    assert!(!m.held);

    // 3: SMTPUTF8, a quoted local part, and the hold.
    let m = spool.get(id("038J9W7YNA000")).unwrap().unwrap();
    let env = &m.entry.envelope;
    assert_eq!(
        env.reverse_path,
        ReversePath::Path(path("<jöran@example.org>"))
    );
    assert!(env.params.smtputf8);
    assert_eq!(
        env.recipients[0].forward_path,
        ForwardPath::Path(path("<\"john doe\"@remote.test>"))
    );
    assert_eq!(
        env.recipients[1].forward_path,
        ForwardPath::Path(path("<ünï@dead.test>"))
    );
    assert!(m.held, "the hold mark of the old journal applies");
    spool.shutdown();
}

#[test]
fn an_old_spool_takes_journal_entries_in_the_new_format() {
    let dir = fixture_copy();
    let (spool, _) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let h = spool.handle();
    let bob_failed = RecipientState::Failed(Reason {
        reply: Reply::new(550, Some(EnhancedCode::new(5, 1, 1)), "no such user"),
        remote_mta: Some(RemoteMta {
            name: "mx.remote.test".into(),
            addr: Some("192.0.2.9:25".parse().unwrap()),
        }),
        stage: Some(sluice_smtp::Stage::Rcpt),
    });
    // The held message: one of its two deferred recipients fails for good.
    let held = id("038J9W7YNA000");
    h.journal_wait(vec![JournalEntry {
        id: held,
        recipient: 0,
        state: bob_failed.clone(),
    }])
    .unwrap();
    spool.shutdown();

    let (spool, report) = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(report.live_messages, 3);
    let m = spool.get(held).unwrap().unwrap();
    assert_eq!(m.states[0], bob_failed);
    assert!(
        matches!(&m.states[1], RecipientState::Deferred { last, .. } if last.reply.code() == 451),
        "the old deferral stays: {:?}",
        m.states[1]
    );
    assert!(m.held);
    assert_eq!(m.entry.envelope.recipients.len(), 2);
    spool.shutdown();
}
