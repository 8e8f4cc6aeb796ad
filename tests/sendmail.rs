//! Local submission: the `sendmail` command as cron, scripts and PHP call
//! it, run as an unprivileged user, through the real server's local socket
//! to a Maildir; `-bs`, `mailq` and `-q`; and what it says when something
//! is wrong (sysexits statuses a caller can act on).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use sluice_e2e::{HOSTNAME, Server, maildir_messages, run, sluice_bin, wait_for_maildir};

const LIMIT: Duration = Duration::from_secs(20);
/// Local users' domain: the hostname (Postfix's `myorigin`), which is
/// always a local domain too.
const ORIGIN: &str = HOSTNAME;

/// Who runs `sendmail`: `nobody` when the tests run as root (the usual
/// case for cron jobs of service users), else the test's own user.
struct User {
    uid: u32,
    login: String,
    /// Prefix that runs a command as this user.
    wrapper: Vec<String>,
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn plain_user() -> User {
    if id(&["-u"]) == "0" {
        User {
            uid: id(&["-u", "nobody"]).parse().expect("nobody's uid"),
            login: "nobody".into(),
            wrapper: [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
            ]
            .map(String::from)
            .to_vec(),
        }
    } else {
        User {
            uid: id(&["-u"]).parse().expect("my uid"),
            login: id(&["-un"]),
            wrapper: Vec::new(),
        }
    }
}

/// A server whose directory any user can reach (the socket is in its
/// spool), with the binary linked in as `sendmail` and `mailq` so that the
/// name it is called by is what picks the mode, as when it is installed.
struct Setup {
    server: Server,
    bin: PathBuf,
}

fn setup(extra: &str) -> Setup {
    let server = Server::builder().config(extra).start();
    let dir = server.dir().to_path_buf();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["sendmail", "mailq"] {
        let link = bin.join(name);
        // A hard link: the copy nobody may run even when the build tree is
        // not open to it. A copy where links cannot go.
        if std::fs::hard_link(sluice_bin(), &link).is_err() {
            std::fs::copy(sluice_bin(), &link).unwrap();
        }
    }
    for path in [dir.as_path(), &bin, server.spool_dir()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(server.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    server
        .wait_for_log("local submission (sendmail) ready", LIMIT)
        .expect("the socket is announced");
    Setup { server, bin }
}

impl Setup {
    /// Runs `<program> -C <config> args...` as `user` (or as the test's
    /// own user), with `stdin`.
    fn run_as(&self, user: Option<&User>, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let wrapper = user.map_or(&[][..], |u| &u.wrapper[..]);
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        };
        cmd.arg("-C").arg(self.server.config_path()).args(args);
        cmd.current_dir(self.server.dir());
        run(cmd, stdin, LIMIT)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn status(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    head.split("\r\n")
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

#[test]
fn cron_mail_from_an_unprivileged_user_reaches_the_maildir() {
    let s = setup("");
    let user = plain_user();
    // What Debian's cron runs, with LF line ends, a lone dot (kept: -i)
    // and UTF-8 text.
    let out = s.run_as(
        Some(&user),
        "sendmail",
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "alice"],
        "Subject: Cron <nobody@host> backup\nContent-Type: text/plain; charset=utf-8\n\n\
         Sauvegarde terminée\n.\nend\n"
            .as_bytes(),
    );
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let mail = wait_for_maildir(&s.server.maildir("alice"), 1, LIMIT);
    let text = mail[0].text();
    let own = format!("{}@{ORIGIN}", user.login);
    let delivered = mail[0].delivered();
    assert_eq!(delivered.return_path, format!("<{own}>"));
    assert_eq!(
        delivered.delivered_to,
        format!("alice@{ORIGIN}"),
        "a bare name is completed with the origin"
    );
    let received = delivered.received.expect("our Received: field");
    assert!(
        received.starts_with(&format!(
            "Received: by {HOSTNAME} (Sluice, from userid {})",
            user.uid
        )),
        "{received}"
    );
    assert_eq!(header(&text, "From"), Some(&*format!("CronDaemon <{own}>")));
    assert!(header(&text, "Date").is_some(), "{text}");
    assert!(
        header(&text, "Message-ID").is_some_and(|id| id.ends_with(&format!("@{HOSTNAME}>"))),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nSauvegarde terminée\r\n.\r\nend\r\n"),
        "CRLF line ends, the dot line kept: {text:?}"
    );
}

#[test]
fn a_user_sends_as_itself_and_root_as_anyone() {
    let s = setup("");
    let user = plain_user();
    let own = format!("{}@{ORIGIN}", user.login);
    // Someone else's address, and the null reverse-path of a bounce: the
    // mail goes, as the user.
    for given in ["ceo@example.test", "<>"] {
        let out = s.run_as(
            Some(&user),
            "sendmail",
            &["-f", given, "alice"],
            format!("Subject: as {given}\n\nx\n").as_bytes(),
        );
        assert_eq!(status(&out), 0, "{given}: {}", stderr(&out));
    }
    let mail = wait_for_maildir(&s.server.maildir("alice"), 2, LIMIT);
    for m in &mail {
        assert_eq!(
            m.delivered().return_path,
            format!("<{own}>"),
            "{}",
            m.text()
        );
        assert_eq!(header(&m.text(), "From"), Some(&*format!("<{own}>")));
    }
    let rewritten = s.server.wait_for_log_lines(&["sender rewritten"], 2, LIMIT);
    assert_eq!(rewritten.len(), 2, "{rewritten:?}");
    assert!(
        rewritten[0].contains("given=<ceo@example.test>"),
        "{rewritten:?}"
    );
    assert!(
        rewritten[0].contains(&format!("uid={}", user.uid)),
        "{rewritten:?}"
    );

    // The user the server runs as (root here, or the test's own user) is
    // trusted: a list manager or the operator's scripts set any sender.
    let trusted = s.run_as(
        None,
        "sendmail",
        &["-f", "lists@example.test", "-oi", "alice"],
        b"Subject: newsletter\n\nhello\n",
    );
    assert_eq!(status(&trusted), 0, "{}", stderr(&trusted));
    let mail = wait_for_maildir(&s.server.maildir("alice"), 3, LIMIT);
    assert!(
        mail.iter()
            .any(|m| m.delivered().return_path == "<lists@example.test>"),
        "the trusted sender is kept"
    );
}

#[test]
fn dash_t_reads_the_recipients_and_hides_bcc() {
    let s = setup("");
    let user = plain_user();
    // No -i: the lone dot ends the message, as in the original sendmail.
    let out = s.run_as(
        Some(&user),
        "sendmail",
        &["-t"],
        b"To: Alice <alice@example.test>\nBcc: bob\nSubject: report\n\nbody\n.\nnot sent\n",
    );
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    for name in ["alice", "bob"] {
        let mail = wait_for_maildir(&s.server.maildir(name), 1, LIMIT);
        let text = mail[0].text();
        assert!(!text.contains("Bcc"), "{name}: {text}");
        assert!(text.ends_with("\r\n\r\nbody\r\n"), "{name}: {text:?}");
        assert_eq!(header(&text, "To"), Some("Alice <alice@example.test>"));
    }

    let none = s.run_as(
        Some(&user),
        "sendmail",
        &["-t"],
        b"Subject: to whom?\n\nx\n",
    );
    assert_eq!(status(&none), 64, "EX_USAGE: {}", stderr(&none));
    assert!(stderr(&none).contains("no recipient"), "{}", stderr(&none));

    let unknown = s.run_as(
        Some(&user),
        "sendmail",
        &["alice", "nosuchuser@example.test"],
        b"Subject: s\n\nx\n",
    );
    assert_eq!(status(&unknown), 67, "EX_NOUSER: {}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("<nosuchuser@example.test>: 550 5.1.1"),
        "{}",
        stderr(&unknown)
    );
    // The recipient that exists still gets it.
    wait_for_maildir(&s.server.maildir("alice"), 2, LIMIT);
}

#[test]
fn dash_bs_speaks_smtp_on_standard_input_and_output() {
    let s = setup("");
    let user = plain_user();
    let own = format!("{}@{ORIGIN}", user.login);
    let dialog = format!(
        "EHLO client\r\nMAIL FROM:<{own}>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
         Subject: by hand\r\n\r\ntyped\r\n.\r\nQUIT\r\n"
    );
    let out = s.run_as(Some(&user), "sendmail", &["-bs"], dialog.as_bytes());
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with(&format!("220 {HOSTNAME} ")), "{said}");
    assert!(
        !said.contains("STARTTLS"),
        "nothing to encrypt locally: {said}"
    );
    assert!(!said.contains("AUTH"), "the kernel says who it is: {said}");
    assert!(said.contains("250 2.0.0 Ok: queued as "), "{said}");
    assert!(
        said.ends_with("221 2.0.0 mx.example.test closing connection\r\n"),
        "{said}"
    );
    let mail = wait_for_maildir(&s.server.maildir("bob"), 1, LIMIT);
    assert_eq!(header(&mail[0].text(), "From"), Some(&*format!("<{own}>")));
}

#[test]
fn mailq_lists_and_dash_q_flushes_the_queue() {
    // Nothing can be delivered: messages stay queued.
    let s = setup(
        "[delivery]\nlmtp = \"127.0.0.1:9\"\nsmarthost = \"127.0.0.1:9\"\n\
         retry_schedule_secs = [3600]\n",
    );
    let out = s.run_as(None, "sendmail", &["bob"], b"Subject: waiting\n\nx\n");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let listed = sluice_e2e::wait_for(LIMIT, || {
        let out = s.run_as(None, "mailq", &[], b"");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&format!("bob@{ORIGIN}")).then_some(text)
    })
    .expect("mailq lists the message");
    assert!(listed.contains("-- 1 message(s)"), "{listed}");
    assert!(
        listed.contains(&format!("@{ORIGIN}>")),
        "the sender: {listed}"
    );
    let attempts = || {
        s.server
            .logs()
            .iter()
            .filter(|l| l.contains("INFO delivery ") && l.contains(&format!("bob@{ORIGIN}")))
            .count()
    };
    sluice_e2e::wait_for(LIMIT, || (attempts() == 1).then_some(()))
        .expect("the first attempt, deferred for an hour");
    let flush = s.run_as(None, "sendmail", &["-q"], b"");
    assert_eq!(status(&flush), 0, "{}", stderr(&flush));
    assert!(
        String::from_utf8_lossy(&flush.stdout).contains("due now"),
        "{}",
        String::from_utf8_lossy(&flush.stdout)
    );
    sluice_e2e::wait_for(LIMIT, || (attempts() == 2).then_some(()))
        .expect("-q retried the message at once");
}

#[test]
fn with_the_server_stopped_the_caller_is_told_to_try_again() {
    let mut s = setup("");
    s.server.terminate(LIMIT);
    let out = s.run_as(None, "sendmail", &["alice"], b"Subject: lost?\n\nx\n");
    assert_eq!(status(&out), 75, "EX_TEMPFAIL: {}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the mail server"),
        "{}",
        stderr(&out)
    );
    assert!(maildir_messages(&s.server.maildir("alice")).is_empty());
    let usage = s.run_as(None, "sendmail", &["-bd"], b"");
    assert_eq!(status(&usage), 64, "{}", stderr(&usage));
}
