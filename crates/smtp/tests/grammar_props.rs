//! Properties of the command grammar: every command formats to a line that
//! parses back to it, anything that parses is already canonical, and no input
//! makes the parser panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sluice_smtp::{
    AddressLiteral, BodyType, Command, Domain, ForwardPath, LocalPart, MailParams, Mailbox, Notify,
    OriginalRecipient, Path, RcptParams, Ret, ReversePath,
};

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?",
        // U-labels (RFC 6531), mixed with LDH characters.
        "[a-zà-ÿα-ωа-я例子广告डाटा]{1,6}(-[a-z0-9ü]{1,3})?",
    ]
}

fn domain_name() -> impl Strategy<Value = Domain> {
    vec(label(), 1..4).prop_map(|labels| Domain::Name(labels.join(".")))
}

fn address_literal() -> impl Strategy<Value = AddressLiteral> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| AddressLiteral::Ipv4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| AddressLiteral::Ipv6(Ipv6Addr::from(s))),
        // IPv4-mapped addresses have their own text form.
        any::<[u8; 4]>().prop_map(|o| AddressLiteral::Ipv6(Ipv4Addr::from(o).to_ipv6_mapped())),
        (
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?",
            "[!-Z^-~]{1,12}",
        )
            .prop_filter("IPv6 is not a general tag", |(tag, _)| {
                !tag.eq_ignore_ascii_case("IPv6")
            })
            .prop_map(|(tag, content)| AddressLiteral::General { tag, content }),
    ]
}

fn domain() -> impl Strategy<Value = Domain> {
    prop_oneof![
        3 => domain_name(),
        1 => address_literal().prop_map(Domain::Literal),
    ]
}

fn local_part() -> impl Strategy<Value = LocalPart> {
    prop_oneof![
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}){0,2}",
        // Anything quotable: spaces, quotes, backslashes, dots in odd places.
        "[ -~]{0,20}",
        "[a-zé用户квіточка]{1,8}(\\.[δοκιμή]{1,4})?",
        "[ -~éß用\u{a0}]{0,12}",
    ]
    .prop_filter_map("local part too long", |s| LocalPart::from_unquoted(&s).ok())
}

fn path() -> impl Strategy<Value = Path> {
    (vec(domain(), 0..3), local_part(), domain())
        .prop_map(|(source_route, local_part, domain)| Path {
            source_route,
            mailbox: Mailbox { local_part, domain },
        })
        .prop_filter("path over 256 octets", |p| p.to_string().len() <= 256)
}

/// Non-empty text without control characters or surrounding blanks.
fn text() -> impl Strategy<Value = String> {
    "\\PC{1,20}".prop_filter("blank-trimmed", |s| s.trim_matches([' ', '\t']) == s)
}

/// xtext-decoded values: anything but control characters.
fn printable() -> impl Strategy<Value = String> {
    "\\PC{1,30}"
}

fn mail_params() -> impl Strategy<Value = MailParams> {
    (
        option::of(any::<u64>()),
        option::of(prop_oneof![
            Just(BodyType::SevenBit),
            Just(BodyType::EightBitMime),
            Just(BodyType::BinaryMime)
        ]),
        any::<bool>(),
        option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]),
        option::of("[ -~]{1,100}"),
        option::of(prop_oneof![Just("<>".to_owned()), printable()]),
        any::<bool>(),
    )
        .prop_map(
            |(size, body, smtputf8, ret, envid, auth, requiretls)| MailParams {
                size,
                body,
                smtputf8,
                ret,
                envid,
                auth,
                requiretls,
            },
        )
}

fn rcpt_params() -> impl Strategy<Value = RcptParams> {
    let notify = prop_oneof![
        Just(Notify::Never),
        (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_filter("at least one flag", |&(s, f, d)| s || f || d)
            .prop_map(|(success, failure, delay)| Notify::On {
                success,
                failure,
                delay
            }),
    ];
    let orcpt = ("[a-zA-Z0-9!#$%&'*+/?^_`{|}~-]{1,8}", printable())
        .prop_map(|(addr_type, address)| OriginalRecipient { addr_type, address });
    (option::of(notify), option::of(orcpt)).prop_map(|(notify, orcpt)| RcptParams { notify, orcpt })
}

fn command() -> impl Strategy<Value = Command> {
    let reverse_path =
        prop_oneof![1 => Just(ReversePath::Null), 4 => path().prop_map(ReversePath::Path)];
    let forward_path =
        prop_oneof![1 => Just(ForwardPath::Postmaster), 4 => path().prop_map(ForwardPath::Path)];
    let auth = (
        "[A-Z0-9_-]{1,20}",
        option::of(prop_oneof![
            "[A-Za-z0-9+/]{1,40}={0,2}",
            Just("=".to_owned())
        ]),
    )
        .prop_map(|(mechanism, initial_response)| Command::Auth {
            mechanism,
            initial_response,
        });
    prop_oneof![
        1 => domain().prop_map(Command::Helo),
        1 => domain().prop_map(Command::Ehlo),
        4 => (reverse_path, mail_params()).prop_map(|(reverse_path, params)| Command::Mail {
            reverse_path,
            params
        }),
        4 => (forward_path, rcpt_params()).prop_map(|(forward_path, params)| Command::Rcpt {
            forward_path,
            params
        }),
        1 => Just(Command::Data),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
        1 => Just(Command::Rset),
        1 => option::of(text()).prop_map(Command::Noop),
        1 => Just(Command::Quit),
        1 => text().prop_map(Command::Vrfy),
        1 => text().prop_map(Command::Expn),
        1 => option::of(text()).prop_map(Command::Help),
        1 => Just(Command::StartTls),
        1 => auth,
    ]
}

/// A formatted command with a few bytes replaced, inserted or removed: close
/// enough to valid that the parser gets deep, and sometimes accepts.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"aZ09.@<>\"\\:,;=+-_ \t[]\0\r\n\x7f\xc3\xa9".to_vec()),
    ];
    let edit = (any::<prop::sample::Index>(), 0u8..3, byte);
    (command(), vec(edit, 1..4)).prop_map(|(cmd, edits)| {
        let mut line = cmd.to_string().into_bytes();
        for (at, op, byte) in edits {
            let i = at.index(line.len() + 1);
            match op {
                0 if i < line.len() => line[i] = byte,
                1 => line.insert(i, byte),
                _ if i < line.len() => {
                    line.remove(i);
                }
                _ => line.push(byte),
            }
        }
        line
    })
}

fn assert_canonical(line: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(cmd) = Command::parse(line) {
        let formatted = cmd.to_string();
        let again = Command::parse(formatted.as_bytes());
        prop_assert_eq!(
            again.as_ref(),
            Ok(&cmd),
            "{:?} -> {:?}",
            String::from_utf8_lossy(line),
            formatted
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The text made in one allocation is the `Display` form, for every
    /// kind of local part and domain, and parses back to the mailbox.
    #[test]
    fn a_mailbox_as_text_is_its_display_form(path in path(), before in "[a-z@\n]{0,8}") {
        let mailbox = &path.mailbox;
        let text = mailbox.text();
        prop_assert_eq!(&text, &mailbox.to_string());
        let parsed = Mailbox::parse(text.as_bytes());
        prop_assert_eq!(parsed.as_ref(), Ok(mailbox));
        let mut out = before.clone();
        mailbox.push_text(&mut out);
        prop_assert_eq!(out, format!("{before}{text}"));
        prop_assert_eq!(mailbox.domain.text(), mailbox.domain.to_string());
        prop_assert_eq!(mailbox.domain.as_text(), mailbox.domain.to_string());
    }

    #[test]
    fn format_then_parse_is_identity(cmd in command()) {
        let line = cmd.to_string();
        prop_assert!(!line.contains(['\r', '\n']));
        prop_assert_eq!(Command::parse(line.as_bytes()), Ok(cmd.clone()), "{}", line);
        let mut wire = Vec::new();
        cmd.write_to(&mut wire);
        prop_assert_eq!(wire, format!("{line}\r\n").into_bytes());
    }

    #[test]
    fn whatever_parses_formats_to_itself(line in mutated_line()) {
        assert_canonical(&line)?;
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(
        prefix in prop_oneof![
            Just(&b""[..]), Just(&b"MAIL FROM:<"[..]), Just(&b"RCPT TO:<\""[..]),
            Just(&b"RCPT TO:<a@b> "[..]), Just(&b"EHLO ["[..]), Just(&b"BDAT "[..]),
        ],
        rest in vec(any::<u8>(), 0..200),
    ) {
        let line = [prefix, &rest[..]].concat();
        assert_canonical(&line)?;
        let _ = Path::parse(&line);
        let _ = Mailbox::parse(&line);
        if let Ok(s) = std::str::from_utf8(&line) {
            let _ = Domain::parse(s);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text(line in "(?s:.{0,120})") {
        assert_canonical(line.as_bytes())?;
        let _ = Domain::parse(&line);
        let _ = Path::parse(line.as_bytes());
    }
}
