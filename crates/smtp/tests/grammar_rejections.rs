//! Every kind of rejection of the command and address grammar, with its
//! exact reply code, enhanced code and text.

use sluice_smtp::command::ErrorKind;
use sluice_smtp::{AddressError, Command, Domain, ParamError, Verb};

fn parse(line: &str) -> Command {
    Command::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?} refused: {e}"))
}

/// Asserts `line` is refused with exactly `reply` (`"501 5.1.7"` or a full
/// reply line) and returns the error for further checks.
#[track_caller]
fn refuse(line: impl AsRef<[u8]>, verb: Option<Verb>, reply: &str) -> ErrorKind {
    let line = line.as_ref();
    let err = match Command::parse(line) {
        Ok(cmd) => panic!("{:?} parsed as {cmd:?}", String::from_utf8_lossy(line)),
        Err(e) => e,
    };
    let shown = err.reply().to_string();
    assert!(
        shown.starts_with(reply),
        "{:?}: got {shown:?}, want {reply:?}",
        String::from_utf8_lossy(line)
    );
    assert_eq!(
        err.verb(),
        verb,
        "verb of {:?}",
        String::from_utf8_lossy(line)
    );
    err.kind().clone()
}

#[test]
fn command_rejections() {
    use ErrorKind as K;
    let unrecognized = "500 5.5.2 Syntax error, command unrecognized";
    assert_eq!(refuse("", None, unrecognized), K::Unrecognized);
    assert_eq!(refuse("FOO bar", None, unrecognized), K::Unrecognized);
    assert_eq!(
        refuse(" MAIL FROM:<a@b>", None, unrecognized),
        K::Unrecognized
    );
    assert_eq!(
        refuse("MAILFROM:<a@b>", None, unrecognized),
        K::Unrecognized
    );
    assert_eq!(refuse(b"\xffOO", None, "500 5.5.2"), K::NotUtf8);
    assert_eq!(
        refuse(
            b"MAIL FROM:<\xe9@b>",
            Some(Verb::Mail),
            "501 5.5.2 Syntax error, the command line is not valid UTF-8"
        ),
        K::NotUtf8
    );

    let missing = [
        ("HELO", Verb::Helo),
        ("EHLO ", Verb::Ehlo),
        ("MAIL", Verb::Mail),
        ("RCPT", Verb::Rcpt),
        ("BDAT", Verb::Bdat),
        ("VRFY", Verb::Vrfy),
        ("EXPN\t", Verb::Expn),
        ("AUTH", Verb::Auth),
    ];
    for (line, verb) in missing {
        assert_eq!(
            refuse(line, Some(verb), "501 5.5.4 Syntax error, argument missing"),
            K::MissingArgument
        );
    }
    for (line, verb) in [
        ("DATA x", Verb::Data),
        ("RSET all", Verb::Rset),
        ("QUIT now", Verb::Quit),
        ("STARTTLS please", Verb::StartTls),
    ] {
        let reply = format!(
            "501 5.5.4 Syntax error, {} takes no argument",
            verb.as_str()
        );
        assert_eq!(refuse(line, Some(verb), &reply), K::UnexpectedArgument);
    }
    for (line, verb) in [
        ("HELO foo_bar", Verb::Helo),
        ("EHLO foo bar", Verb::Ehlo),
        ("EHLO foo.", Verb::Ehlo),
        ("EHLO [1.2.3]", Verb::Ehlo),
    ] {
        assert_eq!(
            refuse(line, Some(verb), "501 5.5.4 Invalid domain name"),
            K::InvalidArgument
        );
    }
    for (line, verb) in [
        ("MAIL TO:<a@b>", Verb::Mail),
        ("MAIL FROM <a@b>", Verb::Mail),
        ("RCPT FROM:<a@b>", Verb::Rcpt),
        ("BDAT x", Verb::Bdat),
        ("BDAT -1", Verb::Bdat),
        ("BDAT 10 FIRST", Verb::Bdat),
        ("BDAT 10 LAST x", Verb::Bdat),
        ("BDAT 123456789012345678901", Verb::Bdat),
        ("BDAT 18446744073709551616", Verb::Bdat),
        ("AUTH PL@IN", Verb::Auth),
        ("AUTH ABCDEFGHIJKLMNOPQRSTU", Verb::Auth),
        ("AUTH PLAIN a!b", Verb::Auth),
        ("AUTH PLAIN abc def", Verb::Auth),
    ] {
        assert_eq!(
            refuse(line, Some(verb), "501 5.5.4 Syntax error, expected"),
            K::InvalidArgument
        );
    }
    for line in ["VRFY a\0b", "NOOP \x1b[2J", "HELP a\rb", "EXPN \u{85}x"] {
        let verb = Verb::from_bytes(&line.as_bytes()[..4]);
        assert_eq!(
            refuse(line, verb, "501 5.5.4 Syntax error, control character"),
            K::ControlCharacter
        );
    }
}

#[test]
fn address_rejections() {
    use AddressError as A;
    let long_local = "a".repeat(65);
    let long_label = "b".repeat(64);
    let long_domain = vec!["c".repeat(63); 4].join("."); // 255 octets: fine alone
    // 64 + 1 + 194 octets plus the brackets: 261, each part within its own limit.
    let long_path = format!(
        "{}@{}.ee",
        "a".repeat(64),
        vec!["d".repeat(63); 3].join(".")
    );
    let cases: Vec<(String, AddressError)> = vec![
        ("a@b".into(), A::NotBracketed),
        ("".into(), A::NotBracketed),
        ("<a@b".into(), A::Unterminated),
        ("<a".into(), A::Unterminated),
        ("<a@b SIZE=1".into(), A::Unterminated),
        ("<a@b c>".into(), A::InvalidDomain),
        ("<a@b\0".into(), A::ControlCharacter),
        ("<a\0b@c>".into(), A::ControlCharacter),
        ("<a@b\rc>".into(), A::ControlCharacter),
        ("<\"a\nb\"@c>".into(), A::ControlCharacter),
        ("<a@b\u{7f}>".into(), A::ControlCharacter),
        ("<@a:@b:c@d>".into(), A::InvalidLocalPart),
        ("<@a;@b:c@d>".into(), A::InvalidSourceRoute),
        ("<@a b:c@d>".into(), A::InvalidSourceRoute),
        ("<@:c@d>".into(), A::InvalidSourceRoute),
        ("<a..b@c>".into(), A::InvalidLocalPart),
        ("<.a@c>".into(), A::InvalidLocalPart),
        ("<a.@c>".into(), A::InvalidLocalPart),
        ("<a b@c>".into(), A::InvalidLocalPart),
        ("<\"a\\\u{e9}\"@c>".into(), A::InvalidLocalPart),
        ("<a>".into(), A::MissingDomain),
        ("<postmaster>".into(), A::MissingDomain),
        ("<a@-b.c>".into(), A::InvalidDomain),
        ("<a@b-.c>".into(), A::InvalidDomain),
        ("<a@b..c>".into(), A::InvalidDomain),
        ("<a@b.>".into(), A::InvalidDomain),
        ("<a@>".into(), A::InvalidDomain),
        ("<a@b_c>".into(), A::InvalidDomain),
        ("<a@[300.1.1.1]>".into(), A::InvalidAddressLiteral),
        ("<a@[IPv6:zz]>".into(), A::InvalidAddressLiteral),
        ("<a@[IPv6:fe80::1%eth0]>".into(), A::InvalidAddressLiteral),
        ("<a@[1.2.3.4>".into(), A::InvalidAddressLiteral),
        ("<a@[x:]>".into(), A::InvalidAddressLiteral),
        (format!("<{long_local}@b>"), A::LocalPartTooLong),
        (format!("<a@{long_label}.c>"), A::LabelTooLong),
        (format!("<a@{long_domain}.c>"), A::DomainTooLong),
        (format!("<{long_path}>"), A::PathTooLong),
        ("<a@b>x".into(), A::TrailingCharacters),
        ("<a@b><c@d>".into(), A::TrailingCharacters),
    ];
    for (path, error) in &cases {
        let kind = refuse(
            format!("MAIL FROM:{path}"),
            Some(Verb::Mail),
            &format!("501 5.1.7 Bad sender address syntax: {error}"),
        );
        assert_eq!(kind, ErrorKind::Address(*error), "MAIL FROM:{path}");
        if *error != A::MissingDomain {
            let kind = refuse(
                format!("RCPT TO:{path}"),
                Some(Verb::Rcpt),
                &format!("501 5.1.3 Bad recipient address syntax: {error}"),
            );
            assert_eq!(kind, ErrorKind::Address(*error), "RCPT TO:{path}");
        }
    }
    // The limits are inclusive: exactly 64 and 255 octets are fine.
    parse(&format!("MAIL FROM:<{}@b>", "a".repeat(64)));
    assert!(Domain::parse(&long_domain).is_some());
    let path_256 = format!(
        "<{}@{}.{}.{}>",
        "a".repeat(64),
        "d".repeat(63),
        "d".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(path_256.len(), 256);
    parse(&format!("MAIL FROM:{path_256}"));
    assert_eq!(
        refuse(
            "RCPT TO:<>",
            Some(Verb::Rcpt),
            "501 5.1.3 Bad recipient address syntax: the null path"
        ),
        ErrorKind::Address(A::NullPath)
    );
    assert_eq!(
        refuse("MAIL FROM:<>x", Some(Verb::Mail), "501 5.1.7"),
        ErrorKind::Address(A::TrailingCharacters)
    );
}

#[test]
fn parameter_rejections() {
    use ParamError as P;
    let invalid = |kind: &ErrorKind, keyword: &str| matches!(kind, ErrorKind::Param(P::InvalidValue { keyword: k, .. }) if *k == keyword);
    let mail = |params: &str| format!("MAIL FROM:<a@b> {params}");
    let rcpt = |params: &str| format!("RCPT TO:<a@b> {params}");

    assert_eq!(
        refuse(
            mail("FOO=bar"),
            Some(Verb::Mail),
            "555 5.5.4 Unsupported parameter FOO"
        ),
        ErrorKind::Param(P::Unsupported {
            keyword: "FOO".into()
        })
    );
    refuse(
        rcpt("x-custom"),
        Some(Verb::Rcpt),
        "555 5.5.4 Unsupported parameter X-CUSTOM",
    );
    refuse(
        mail("NOTIFY=NEVER"),
        Some(Verb::Mail),
        "555 5.5.4 Unsupported parameter NOTIFY on MAIL",
    );
    refuse(
        rcpt("SIZE=10"),
        Some(Verb::Rcpt),
        "555 5.5.4 Unsupported parameter SIZE on RCPT",
    );
    let long = refuse(mail(&"K".repeat(300)), Some(Verb::Mail), "555 5.5.4");
    assert!(matches!(long, ErrorKind::Param(P::Unsupported { keyword }) if keyword.len() == 40));

    for (conflict, keyword) in [
        ("SIZE=1 SIZE=2", "SIZE"),
        ("BODY=7BIT body=8BITMIME", "BODY"),
        ("RET=FULL RET=HDRS", "RET"),
        ("ENVID=a ENVID=b", "ENVID"),
        ("AUTH=<> AUTH=a@b", "AUTH"),
    ] {
        assert_eq!(
            refuse(
                mail(conflict),
                Some(Verb::Mail),
                &format!(
                    "501 5.5.4 Syntax error in parameters, {keyword} given twice with different values"
                )
            ),
            ErrorKind::Param(P::Conflicting { keyword })
        );
    }
    for (conflict, keyword) in [
        ("NOTIFY=NEVER NOTIFY=SUCCESS", "NOTIFY"),
        ("ORCPT=rfc822;a@b ORCPT=rfc822;c@d", "ORCPT"),
    ] {
        assert_eq!(
            refuse(
                rcpt(conflict),
                Some(Verb::Rcpt),
                &format!(
                    "501 5.5.4 Syntax error in parameters, {keyword} given twice with different values"
                )
            ),
            ErrorKind::Param(P::Conflicting { keyword })
        );
    }

    for (params, keyword) in [
        ("SIZE=abc", "SIZE"),
        ("SIZE", "SIZE"),
        ("SIZE=123456789012345678901", "SIZE"),
        ("SIZE=18446744073709551616", "SIZE"),
        ("SIZE=+1", "SIZE"),
        ("BODY=9BIT", "BODY"),
        ("SMTPUTF8=yes", "SMTPUTF8"),
        ("RET=ALL", "RET"),
        ("ENVID=a+0Ab", "ENVID"),
        ("ENVID=caf+C3+A9", "ENVID"),
        ("ENVID=a+", "ENVID"),
        ("AUTH=a+00", "AUTH"),
        ("AUTH=+FF", "AUTH"),
    ] {
        let kind = refuse(
            mail(params),
            Some(Verb::Mail),
            &format!("501 5.5.4 Syntax error in parameter {keyword}, expected"),
        );
        assert!(invalid(&kind, keyword), "{params}: {kind:?}");
    }
    let envid_100 = format!("ENVID={}", "e".repeat(100));
    parse(&mail(&envid_100));
    refuse(
        mail(&format!("{envid_100}e")),
        Some(Verb::Mail),
        "501 5.5.4 Syntax error in parameter ENVID",
    );

    for (params, keyword) in [
        ("NOTIFY=NEVER,SUCCESS", "NOTIFY"),
        ("NOTIFY=SUCCESS,,DELAY", "NOTIFY"),
        ("NOTIFY=SOMETIMES", "NOTIFY"),
        ("NOTIFY", "NOTIFY"),
        ("ORCPT=rfc822", "ORCPT"),
        ("ORCPT=;a@b", "ORCPT"),
        ("ORCPT=rfc822;", "ORCPT"),
        ("ORCPT=rfc822;a+0D+0Ab@c", "ORCPT"),
        ("ORCPT=rfc 822;a@b", "ORCPT"),
    ] {
        let kind = refuse(
            rcpt(params),
            Some(Verb::Rcpt),
            &format!("501 5.5.4 Syntax error in parameter {keyword}, expected"),
        );
        assert!(invalid(&kind, keyword), "{params}: {kind:?}");
    }

    for params in [
        "=x",
        "-SIZE=1",
        "SIZE=",
        "SIZE=1=2",
        "A\u{1}B",
        "SIZE=1\u{0}",
    ] {
        assert_eq!(
            refuse(
                mail(params),
                Some(Verb::Mail),
                "501 5.5.4 Syntax error in parameters"
            ),
            ErrorKind::Param(P::Syntax),
            "{params:?}"
        );
    }
    // The first fault in the line is the one reported.
    assert!(matches!(
        refuse(mail("FOO SIZE=x"), Some(Verb::Mail), "555"),
        ErrorKind::Param(P::Unsupported { .. })
    ));
}

/// Python's smtplib sends `SMTPUTF8` twice when the caller asks for it and an
/// address needs it too; Postfix and aiosmtpd take an identical repeat, and
/// so do we. Only a repeat that says something else is refused (above).
#[test]
fn an_identical_repeated_parameter_is_accepted() {
    use sluice_smtp::{BodyType, MailParams, Notify};
    let Command::Mail { params, .. } =
        parse("MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8 BODY=8BITMIME body=8bitmime SIZE=9 SIZE=9")
    else {
        panic!("not MAIL")
    };
    assert_eq!(
        params,
        MailParams {
            size: Some(9),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
            ..MailParams::default()
        }
    );
    let Command::Rcpt { params, .. } =
        parse("RCPT TO:<c@d> NOTIFY=FAILURE NOTIFY=failure ORCPT=rfc822;c@d ORCPT=rfc822;c+40d")
    else {
        panic!("not RCPT")
    };
    assert_eq!(
        params.notify,
        Some(Notify::On {
            success: false,
            failure: true,
            delay: false
        })
    );
    assert_eq!(params.orcpt.map(|o| o.address).as_deref(), Some("c@d"));
}
