use super::*;

fn directory(aliases: &[(&str, &str)]) -> Directory {
    Directory::new(DirectoryConfig {
        domains: vec!["Example.test".into(), "second.test.".into()],
        users: vec!["alice".into(), "Bob".into(), "carol".into()],
        aliases: aliases
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        recipient_delimiter: String::new(),
    })
}

fn mailbox(user: &str) -> Target {
    Target::Mailbox(user.into())
}

fn forward(address: &str) -> Target {
    Target::Forward(Mailbox::parse(address.as_bytes()).unwrap())
}

fn code(result: Result<Vec<Target>, ResolveError>) -> String {
    let reply = result.expect_err("expected an error").reply();
    format!("{} {}", reply.code(), reply.enhanced().unwrap())
}

#[test]
fn domains_ignore_case_and_a_trailing_dot_and_literals_are_never_local() {
    let d = directory(&[]);
    for name in [
        "example.test",
        "EXAMPLE.TEST",
        "example.test.",
        "Second.Test",
    ] {
        assert!(d.is_local_domain_name(name), "{name}");
        assert!(d.is_local_domain(&Domain::Name(name.into())), "{name}");
    }
    assert!(!d.is_local_domain_name("example.test.remote.test"));
    assert!(!d.is_local_domain(&Domain::parse("[127.0.0.1]").unwrap()));
    assert!(d.is_local(&ForwardPath::Postmaster));
    assert_eq!(d.primary_domain(), "example.test");
}

#[test]
fn users_resolve_case_insensitively_to_their_configured_name() {
    let d = directory(&[]);
    assert_eq!(d.resolve("ALICE").unwrap(), vec![mailbox("alice")]);
    assert_eq!(d.resolve("bob").unwrap(), vec![mailbox("Bob")]);
    assert!(d.mailbox_exists("BOB"));
    assert!(!d.mailbox_exists("mallory"));
}

#[test]
fn names_beyond_ascii_fold_with_unicode_case() {
    let d = Directory::new(DirectoryConfig {
        domains: vec!["example.test".into()],
        users: vec!["Zoë".into(), "ǅemal".into()],
        aliases: Default::default(),
        recipient_delimiter: String::new(),
    });
    // Upper, lower and title case (U+01C5 is neither upper nor lower).
    for asked in ["zoë", "ZOË", "Zoë", "ǆemal", "Ǆemal", "ǅemal"] {
        assert!(d.mailbox_exists(asked), "{asked}");
    }
    assert!(!d.mailbox_exists("zoe"));
}

#[test]
fn unknown_user_fails_with_5_1_1() {
    let d = directory(&[]);
    let err = d.resolve("mallory").unwrap_err();
    assert_eq!(
        err,
        ResolveError::UnknownUser {
            name: "mallory".into()
        }
    );
    assert_eq!(
        err.reply().to_string(),
        "550 5.1.1 mallory: no such user here"
    );
}

#[test]
fn postmaster_always_exists() {
    let d = directory(&[]);
    assert_eq!(
        d.resolve("PostMaster").unwrap(),
        vec![mailbox("postmaster")]
    );
    assert!(d.mailbox_exists("POSTMASTER"));
}

#[test]
fn alias_chain_ends_at_postmaster() {
    let d = directory(&[("abuse", "root"), ("root", "postmaster")]);
    assert_eq!(d.resolve("ABUSE").unwrap(), vec![mailbox("postmaster")]);
    assert!(d.mailbox_exists("abuse"));
}

#[test]
fn alias_to_a_full_address_is_a_forward() {
    let d = directory(&[("fwd", "bob@remote.test")]);
    assert_eq!(d.resolve("fwd").unwrap(), vec![forward("bob@remote.test")]);
}

#[test]
fn alias_lists_expand_once_per_target() {
    let d = directory(&[
        ("team", "alice, bob, sub, carol@remote.test"),
        ("sub", "alice, carol@remote.test"),
    ]);
    assert_eq!(
        d.resolve("team").unwrap(),
        vec![
            mailbox("alice"),
            mailbox("Bob"),
            forward("carol@remote.test")
        ]
    );
}

#[test]
fn alias_naming_itself_keeps_a_copy_for_the_user() {
    let d = directory(&[("alice", "alice, alice@backup.test")]);
    assert_eq!(
        d.resolve("Alice").unwrap(),
        vec![mailbox("alice"), forward("alice@backup.test")]
    );
}

#[test]
fn alias_loops_and_deep_chains_fail_with_5_4_6() {
    let d = directory(&[("a", "b"), ("b", "a")]);
    assert_eq!(code(d.resolve("a")), "550 5.4.6");
    let d = directory(&[("x", "x")]);
    assert_eq!(code(d.resolve("x")), "550 5.4.6", "a name alone is a loop");

    let chain = |n: usize| {
        let names: Vec<String> = (0..=n).map(|i| format!("a{i}")).collect();
        let pairs: Vec<(String, String)> = (0..n)
            .map(|i| (names[i].clone(), names[i + 1].clone()))
            .chain([(names[n].clone(), "alice".to_string())])
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        directory(&refs)
    };
    assert_eq!(
        chain(MAX_ALIAS_DEPTH - 1).resolve("a0").unwrap(),
        vec![mailbox("alice")]
    );
    assert!(matches!(
        chain(MAX_ALIAS_DEPTH + 1).resolve("a0"),
        Err(ResolveError::TooDeep { .. })
    ));
}

#[test]
fn wide_expansions_and_broken_targets_wait_for_the_operator() {
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
    assert_eq!(code(directory(&refs).resolve("l0")), "451 4.3.5");

    let d = directory(&[("bad", "not an@address@x"), ("empty", " , ")]);
    for name in ["bad", "empty"] {
        assert!(
            matches!(d.resolve(name), Err(ResolveError::Misconfigured(_))),
            "{name}"
        );
    }
    let d = directory(&[("sales", "nobody-here")]);
    let err = d.resolve("sales").unwrap_err();
    assert_eq!(
        err.reply().to_string(),
        "550 5.1.1 sales: alias sales names an unknown user"
    );
}

#[test]
fn an_address_extension_is_its_mailbox_part_when_delimiters_are_set() {
    let mut config = DirectoryConfig {
        domains: vec!["example.test".into()],
        users: vec!["alice".into(), "Bob".into(), "dev+ops".into()],
        aliases: [("sales".to_string(), "carol".to_string())].into(),
        recipient_delimiter: "+-".into(),
    };
    config.users.push("carol".into());
    let d = Directory::new(config.clone());
    assert_eq!(d.resolve("alice+lists"), Ok(vec![mailbox("alice")]));
    assert_eq!(d.resolve("BOB+x+y"), Ok(vec![mailbox("Bob")]));
    assert_eq!(d.resolve("Alice-x+y"), Ok(vec![mailbox("alice")]));
    // Aliases see the mailbox part too, and postmaster.
    assert_eq!(d.resolve("sales+eu"), Ok(vec![mailbox("carol")]));
    assert!(d.mailbox_exists("postmaster+abuse"));
    // A name that contains the delimiter matches exactly first.
    assert_eq!(d.resolve("dev+ops"), Ok(vec![mailbox("dev+ops")]));
    for unknown in ["dave+x", "+alice", "alice.lists"] {
        assert!(!d.mailbox_exists(unknown), "{unknown}");
        assert_eq!(code(d.resolve(unknown)), "550 5.1.1", "{unknown}");
    }
    // Off by default, as Postfix's recipient_delimiter.
    config.recipient_delimiter.clear();
    let plain = Directory::new(config);
    assert!(!plain.mailbox_exists("alice+lists"));
}
