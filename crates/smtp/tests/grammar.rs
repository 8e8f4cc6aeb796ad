//! The command and address grammar against the RFCs' own examples and the
//! canonical form (rejections are in `grammar_rejections.rs`).

use std::net::{Ipv4Addr, Ipv6Addr};

use sluice_smtp::{
    AddressError, AddressLiteral, BodyType, Command, Domain, ForwardPath, LocalPart, MailParams,
    Mailbox, Notify, OriginalRecipient, Path, RcptParams, Ret, ReversePath,
};

fn parse(line: &str) -> Command {
    Command::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?} refused: {e}"))
}

/// Parses `line`, checks it formats to `canonical`, and that the canonical
/// form parses back to the same command.
fn canonical(line: &str, canonical: &str) -> Command {
    let cmd = parse(line);
    assert_eq!(cmd.to_string(), canonical, "canonical form of {line:?}");
    assert_eq!(parse(canonical), cmd, "reparse of {canonical:?}");
    let mut wire = Vec::new();
    cmd.write_to(&mut wire);
    assert_eq!(wire, format!("{canonical}\r\n").into_bytes());
    cmd
}

fn name(s: &str) -> Domain {
    Domain::Name(s.to_owned())
}

fn mailbox(local: &str, domain: Domain) -> Mailbox {
    Mailbox {
        local_part: LocalPart::from_unquoted(local).unwrap(),
        domain,
    }
}

fn reverse_path(cmd: &Command) -> &ReversePath {
    match cmd {
        Command::Mail { reverse_path, .. } => reverse_path,
        other => panic!("not MAIL: {other:?}"),
    }
}

fn forward(cmd: &Command) -> (ForwardPath, RcptParams) {
    match cmd {
        Command::Rcpt {
            forward_path,
            params,
        } => (forward_path.clone(), params.clone()),
        other => panic!("not RCPT: {other:?}"),
    }
}

fn mail_params(cmd: &Command) -> &MailParams {
    match cmd {
        Command::Mail { params, .. } => params,
        other => panic!("not MAIL: {other:?}"),
    }
}

#[test]
fn seed_lines() {
    let rcpt = canonical(
        "RCPT TO:<@host3:user4@host4>",
        "RCPT TO:<@host3:user4@host4>",
    );
    let (ForwardPath::Path(path), _) = forward(&rcpt) else {
        panic!("{rcpt:?}")
    };
    assert_eq!(path.source_route, vec![name("host3")]);
    assert_eq!(path.mailbox, mailbox("user4", name("host4")));

    let mail = canonical(
        "mail from:<user@example.com>",
        "MAIL FROM:<user@example.com>",
    );
    assert_eq!(
        reverse_path(&mail),
        &ReversePath::Path(Path {
            source_route: vec![],
            mailbox: mailbox("user", name("example.com")),
        })
    );

    assert_eq!(
        reverse_path(&canonical("MAIL FROM:<>", "MAIL FROM:<>")),
        &ReversePath::Null
    );
    let (fp, _) = forward(&canonical("RCPT TO:<postmaster>", "RCPT TO:<postmaster>"));
    assert_eq!(fp, ForwardPath::Postmaster);

    let rcpt = canonical(
        r#"RCPT TO:<"john smith"@example.com>"#,
        r#"RCPT TO:<"john smith"@example.com>"#,
    );
    let (ForwardPath::Path(path), _) = forward(&rcpt) else {
        panic!("{rcpt:?}")
    };
    assert!(path.mailbox.local_part.is_quoted());
    assert_eq!(path.mailbox.local_part.unquoted(), "john smith");

    let mail = canonical(
        "MAIL FROM:<user@[IPv6:2001:db8::1]> SIZE=1000 BODY=8BITMIME",
        "MAIL FROM:<user@[IPv6:2001:db8::1]> SIZE=1000 BODY=8BITMIME",
    );
    let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        reverse_path(&mail),
        &ReversePath::Path(Path {
            source_route: vec![],
            mailbox: mailbox("user", Domain::Literal(AddressLiteral::Ipv6(ip))),
        })
    );
    assert_eq!(mail_params(&mail).size, Some(1000));
    assert_eq!(mail_params(&mail).body, Some(BodyType::EightBitMime));

    let rcpt = canonical(
        "RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@c",
        "RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@c",
    );
    let (_, params) = forward(&rcpt);
    assert_eq!(
        params.notify,
        Some(Notify::On {
            success: true,
            failure: true,
            delay: false
        })
    );
    assert_eq!(
        params.orcpt,
        Some(OriginalRecipient {
            addr_type: "rfc822".into(),
            address: "a+b@c".into(),
        })
    );

    // A-d-l ends in ':' (RFC 5321 §4.1.2), but RFC 821-era clients wrote a
    // comma: the seed session's line. The route is kept, the mailbox is the
    // destination, and the canonical form has the colon.
    let mail = canonical(
        "MAIL FROM:<@host2,user1@host1>",
        "MAIL FROM:<@host2:user1@host1>",
    );
    let Command::Mail {
        reverse_path: ReversePath::Path(path),
        ..
    } = &mail
    else {
        panic!("{mail:?}")
    };
    assert_eq!(path.source_route, vec![Domain::Name("host2".into())]);
    assert_eq!(path.mailbox.to_string(), "user1@host1");
    // A comma must still lead somewhere.
    let err = Command::parse(b"MAIL FROM:<@host2,>").unwrap_err();
    assert!(
        err.reply()
            .to_string()
            .starts_with("501 5.1.7 Bad sender address syntax")
    );
}

#[test]
fn rfc5321_examples() {
    // §3.6.1 and RFC 821's relay example: the route is kept, in order.
    let rcpt = canonical(
        "RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>",
        "RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>",
    );
    let (ForwardPath::Path(path), _) = forward(&rcpt) else {
        panic!("{rcpt:?}")
    };
    assert_eq!(path.source_route, vec![name("hosta.int"), name("jkl.org")]);
    assert_eq!(path.mailbox, mailbox("userc", name("d.bar.org")));

    // Appendix D.
    assert_eq!(parse("EHLO bar.com"), Command::Ehlo(name("bar.com")));
    assert_eq!(parse("HELO bar.com"), Command::Helo(name("bar.com")));
    canonical("MAIL FROM:<Smith@bar.com>", "MAIL FROM:<Smith@bar.com>");
    canonical("RCPT TO:<Jones@foo.com>", "RCPT TO:<Jones@foo.com>");
    assert_eq!(parse("DATA"), Command::Data);
    assert_eq!(parse("QUIT"), Command::Quit);
    assert_eq!(parse("VRFY Crispin"), Command::Vrfy("Crispin".into()));
    assert_eq!(
        parse("EXPN Example-People"),
        Command::Expn("Example-People".into())
    );
    assert_eq!(parse("HELP"), Command::Help(None));
    assert_eq!(parse("HELP MAIL"), Command::Help(Some("MAIL".into())));
    assert_eq!(parse("NOOP"), Command::Noop(None));
    assert_eq!(parse("rset"), Command::Rset);
    assert_eq!(parse("StartTLS"), Command::StartTls);

    // §4.1.3 address literals, EHLO with a literal (§4.1.1.1).
    assert_eq!(
        parse("EHLO [192.0.2.1]"),
        Command::Ehlo(Domain::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(
            192, 0, 2, 1
        ))))
    );
    canonical("EHLO [IPv6:2001:db8::1]", "EHLO [IPv6:2001:db8::1]");
    canonical(
        "EHLO [ipv6:::FFFF:192.0.2.1]",
        "EHLO [IPv6:::ffff:192.0.2.1]",
    );
    canonical(
        "RCPT TO:<u@[IPv6:2001:db8:0:0:1:0:0:1]>",
        "RCPT TO:<u@[IPv6:2001:db8::1:0:0:1]>",
    );
    canonical("MAIL FROM:<u@[x-tag:a:b]>", "MAIL FROM:<u@[x-tag:a:b]>");

    // §4.1.1.3: only the bare form is special; with a domain it is a mailbox.
    let (fp, _) = forward(&parse("RCPT TO:<PostMaster>"));
    assert_eq!(fp, ForwardPath::Postmaster);
    let (fp, _) = forward(&parse("RCPT TO:<Postmaster@example.com>"));
    assert!(
        matches!(fp, ForwardPath::Path(p) if p.mailbox == mailbox("Postmaster", name("example.com")))
    );
}

#[test]
fn quoted_local_parts_take_their_canonical_form() {
    canonical(
        r#"RCPT TO:<"john"@example.com>"#,
        "RCPT TO:<john@example.com>",
    );
    canonical(r#"RCPT TO:<"a\b.c"@x>"#, "RCPT TO:<ab.c@x>");
    canonical(r#"RCPT TO:<"a\ b"@x>"#, r#"RCPT TO:<"a b"@x>"#);
    canonical(r#"RCPT TO:<"a\"b\\c"@x>"#, r#"RCPT TO:<"a\"b\\c"@x>"#);
    canonical(r#"RCPT TO:<"a..b"@x>"#, r#"RCPT TO:<"a..b"@x>"#);
    canonical(r#"RCPT TO:<"a>b@c"@x>"#, r#"RCPT TO:<"a>b@c"@x>"#);
    canonical(r#"RCPT TO:<""@x>"#, r#"RCPT TO:<""@x>"#);
    assert_eq!(
        LocalPart::from_unquoted("john smith").unwrap().as_str(),
        r#""john smith""#
    );
    assert_eq!(LocalPart::from_unquoted("a.b").unwrap().as_str(), "a.b");
    assert_eq!(
        LocalPart::from_unquoted("a\nb"),
        Err(AddressError::ControlCharacter)
    );
    assert_eq!(
        LocalPart::from_unquoted(&"a".repeat(65)),
        Err(AddressError::LocalPartTooLong)
    );
}

#[test]
fn rfc6531_utf8_mailboxes() {
    for (local, domain) in [
        ("用户", "例子.广告"),
        ("अजय", "डाटा.भारत"),
        ("квіточка", "пошта.укр"),
        ("θσερ", "εχαμπλε.ψομ"),
        ("Dörte", "Sörensen.example.com"),
    ] {
        let line = format!("RCPT TO:<{local}@{domain}>");
        let (ForwardPath::Path(path), _) = forward(&canonical(&line, &line)) else {
            panic!("{line}")
        };
        assert_eq!(path.mailbox, mailbox(local, name(domain)));
        assert!(!path.is_ascii());
    }
    canonical(
        r#"MAIL FROM:<"Dörte Sörensen"@example.com> SMTPUTF8"#,
        r#"MAIL FROM:<"Dörte Sörensen"@example.com> SMTPUTF8"#,
    );
    assert!(ForwardPath::Postmaster.is_ascii());
    assert!(ReversePath::Null.is_ascii());
    assert!(Path::parse(b"<@r\xC3\xA9:a@b>").is_ok_and(|p| !p.is_ascii()));
    assert!(Path::parse(b"<a@b>").is_ok_and(|p| p.is_ascii()));
}

#[test]
fn esmtp_parameter_examples() {
    // RFC 1870, RFC 6152, RFC 3030, RFC 6531.
    let p = mail_params(&parse("MAIL FROM:<ned@thor.innosoft.com> SIZE=500000")).clone();
    assert_eq!(p.size, Some(500000));
    let p = mail_params(&parse("MAIL FROM:<a@b> BODY=BINARYMIME smtputf8")).clone();
    assert_eq!((p.body, p.smtputf8), (Some(BodyType::BinaryMime), true));
    let p = mail_params(&parse(
        "MAIL FROM:<a@b> body=7bit SIZE=18446744073709551615",
    ))
    .clone();
    assert_eq!((p.body, p.size), (Some(BodyType::SevenBit), Some(u64::MAX)));

    // RFC 3461 §4 examples.
    let mail = canonical(
        "MAIL FROM:<Alice@Example.COM> RET=HDRS ENVID=QQ314159",
        "MAIL FROM:<Alice@Example.COM> RET=HDRS ENVID=QQ314159",
    );
    assert_eq!(mail_params(&mail).ret, Some(Ret::Hdrs));
    assert_eq!(mail_params(&mail).envid.as_deref(), Some("QQ314159"));
    let rcpt = canonical(
        "RCPT TO:<Bob@Example.COM> NOTIFY=never ORCPT=rfc822;Bob@Example.COM",
        "RCPT TO:<Bob@Example.COM> NOTIFY=NEVER ORCPT=rfc822;Bob@Example.COM",
    );
    assert_eq!(forward(&rcpt).1.notify, Some(Notify::Never));
    let rcpt = parse("RCPT TO:<c@d> NOTIFY=DELAY,SUCCESS");
    assert_eq!(
        forward(&rcpt).1.notify,
        Some(Notify::On {
            success: true,
            failure: false,
            delay: true
        })
    );
    canonical(
        "MAIL FROM:<a@b> ENVID=a+2Bb+3dc+20d",
        "MAIL FROM:<a@b> ENVID=a+2Bb+3Dc+20d",
    );

    // RFC 4954 §5: AUTH=xtext and the null identity.
    let mail = canonical(
        "MAIL FROM:<e=mc2@example.com> AUTH=e+3Dmc2@example.com",
        "MAIL FROM:<e=mc2@example.com> AUTH=e+3Dmc2@example.com",
    );
    assert_eq!(
        mail_params(&mail).auth.as_deref(),
        Some("e=mc2@example.com")
    );
    let mail = canonical("MAIL FROM:<> AUTH=<>", "MAIL FROM:<> AUTH=<>");
    assert_eq!(mail_params(&mail).auth.as_deref(), Some("<>"));
}

#[test]
fn other_commands() {
    assert_eq!(
        parse("BDAT 86 LAST"),
        Command::Bdat {
            size: 86,
            last: true
        }
    );
    assert_eq!(
        parse("bdat 100000"),
        Command::Bdat {
            size: 100000,
            last: false
        }
    );
    canonical("BDAT 0 last", "BDAT 0 LAST");
    canonical(
        "auth plain dGVzdAB0ZXN0ADEyMzQ=",
        "AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=",
    );
    assert_eq!(
        parse("AUTH PLAIN ="),
        Command::Auth {
            mechanism: "PLAIN".into(),
            initial_response: Some("=".into())
        }
    );
    assert_eq!(
        parse("AUTH GSSAPI"),
        Command::Auth {
            mechanism: "GSSAPI".into(),
            initial_response: None
        }
    );
    canonical("NOOP  what ever ", "NOOP what ever");
    canonical("VRFY \"Smith, J\"", "VRFY \"Smith, J\"");
}

#[test]
fn blanks_are_taken_leniently() {
    let expected = parse("MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME");
    for line in [
        "MAIL FROM: <a@b> SIZE=10 BODY=8BITMIME",
        "MAIL FROM:\t<a@b>\tSIZE=10   BODY=8BITMIME  ",
        "mail  from:<a@b> size=10 body=8bitmime",
        "Mail From:   <a@b>  Size=10 Body=8BitMime\t",
    ] {
        assert_eq!(parse(line), expected, "{line:?}");
    }
    assert_eq!(
        parse("RCPT TO: <postmaster>"),
        parse("RCPT TO:<postmaster>")
    );
    assert_eq!(
        parse("EHLO example.com  "),
        Command::Ehlo(name("example.com"))
    );
}

#[test]
fn standalone_parsers() {
    assert_eq!(Domain::parse("Example.COM"), Some(name("Example.COM")));
    assert_eq!(
        Domain::parse("[192.0.2.1]"),
        Some(Domain::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(
            192, 0, 2, 1
        ))))
    );
    for bad in [
        "", "a..b", "a.", ".a", "a b", "-a", "a-", "a_b", "[1.2.3.4", "a\u{0}",
    ] {
        assert_eq!(Domain::parse(bad), None, "{bad:?}");
    }
    assert!(Domain::parse(&format!("{}.b", "a".repeat(63))).is_some());
    assert_eq!(Domain::parse(&format!("{}.b", "a".repeat(64))), None);

    assert_eq!(
        Mailbox::parse(b"user@example.com"),
        Ok(mailbox("user", name("example.com")))
    );
    assert_eq!(Mailbox::parse(b"user"), Err(AddressError::MissingDomain));
    assert_eq!(
        Mailbox::parse(b"user@a b"),
        Err(AddressError::InvalidDomain)
    );
    assert_eq!(Mailbox::parse(b"\xffa@b"), Err(AddressError::NotUtf8));

    assert_eq!(
        Path::parse(b"<a@b> "),
        Err(AddressError::TrailingCharacters)
    );
    assert_eq!(Path::parse(b"<>"), Err(AddressError::NullPath));
    assert_eq!(Path::parse(b"a@b"), Err(AddressError::NotBracketed));
    assert_eq!(
        Path::parse("<@a,@[10.0.0.1]:x@y>".as_bytes()).map(|p| p.source_route),
        Ok(vec![
            name("a"),
            Domain::Literal(AddressLiteral::Ipv4(Ipv4Addr::new(10, 0, 0, 1)))
        ])
    );
}

#[test]
fn an_extension_is_cut_at_the_first_delimiter_with_a_name_before_it() {
    use sluice_smtp::address::without_extension;
    assert_eq!(without_extension("alice+lists", "+"), Some("alice"));
    assert_eq!(without_extension("alice+a+b", "+"), Some("alice"));
    assert_eq!(without_extension("alice-x+y", "+-"), Some("alice"));
    assert_eq!(without_extension("björn+x", "+"), Some("björn"));
    // Nothing before the delimiter, no delimiter, or sub-addressing off.
    assert_eq!(without_extension("+alice", "+"), None);
    assert_eq!(without_extension("alice", "+"), None);
    assert_eq!(without_extension("alice+lists", ""), None);
}

#[test]
fn quoted_local_parts_in_wire_form_are_unquoted_for_lookup() {
    use sluice_smtp::address::unquote_local_part;
    assert_eq!(unquote_local_part("alice"), "alice");
    assert_eq!(unquote_local_part("\"john smith\""), "john smith");
    assert_eq!(unquote_local_part("\"a\\\"b\""), "a\"b");
    assert_eq!(unquote_local_part("\"a\\\\b\""), "a\\b");
    // Not a quoted string: left alone.
    assert_eq!(unquote_local_part("\"half"), "\"half");
}
