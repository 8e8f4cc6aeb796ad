use std::time::Duration;

use sluice_plugin_host::OnError;

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
    config.validate().map_err(|p| p.join("; "))?;
    Ok(config)
}

#[test]
fn the_documented_example_parses_with_every_value_taken() {
    let c = parse(
        r#"
        hostname = "mx.example.test"
        spool_dir = "/var/spool/sluice"
        [[listen]]
        addr = "127.0.0.1:2525"
        mode = "smtp"
        [limits]
        max_message_size = 36700160
        max_recipients = 100
        idle_timeout_secs = 300
        max_connections = 10000
        max_connections_per_ip = 50
        [local]
        domains = ["example.test"]
        maildir_root = "var/mail"
        users = ["postmaster", "alice"]
        aliases = { root = "postmaster" }
        [relay]
        trusted_networks = ["127.0.0.0/8", "::1/128"]
        "#,
    )
    .unwrap();
    assert_eq!(c.hostname(), "mx.example.test");
    assert_eq!(c.spool_dir, PathBuf::from("/var/spool/sluice"));
    assert_eq!(
        c.local.aliases.get("root").map(String::as_str),
        Some("postmaster")
    );
    let smtpd = c.smtpd(c.directory(), None, None);
    assert_eq!(smtpd.session.max_message_size, 36_700_160);
    assert_eq!(smtpd.max_connections_per_ip, 50);
    assert!(smtpd.policy.is_trusted("::1".parse().unwrap()));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let c = parse(include_str!("../../../../deploy/sluice.toml")).unwrap();
    assert_eq!(c.listen.len(), 2);
    // It shows the client's defaults, and says so: they must stay in step.
    let defaults = Delivery::default();
    assert_eq!(c.delivery.timeouts(), defaults.timeouts());
    assert_eq!(c.delivery.mx_port, defaults.mx_port);
    assert_eq!(
        c.delivery.connect_timeout_secs,
        defaults.connect_timeout_secs
    );
    assert_eq!(c.local.users, ["postmaster", "alice", "bob"]);
    assert_eq!(
        c.local.aliases.get("abuse").map(String::as_str),
        Some("postmaster")
    );
    assert_eq!(c.local.recipient_delimiter, "+");
}

#[test]
fn a_recipient_delimiter_must_be_visible_ascii_and_not_address_syntax() {
    for good in ["+", "+-", "_="] {
        let text = format!("[local]\nrecipient_delimiter = \"{good}\"\n");
        assert!(parse(&text).is_ok(), "{good:?} refused");
    }
    for bad in ["@", "+.", " ", "é", "\\\"", "\\\\"] {
        let text = format!("[local]\nrecipient_delimiter = \"{bad}\"\n");
        let err = parse(&text).expect_err(bad);
        assert!(err.contains("local.recipient_delimiter"), "{bad:?}: {err}");
    }
}

#[test]
fn an_empty_file_means_the_embedded_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.listen[0].addr, SocketAddr::from(([127, 0, 0, 1], 2525)));
    assert_eq!(c.local.domains, ["localhost"]);
    assert!(c.local.users.contains(&"postmaster".to_string()));
    assert_eq!(c.limits.max_line_length, 512);
}

#[test]
fn delivery_settings_are_checked() {
    let c = parse(
        "[delivery]\nsmarthost = \"127.0.0.1:2626\"\nroutes = { \"remote.test\" = \"[::1]:25\" }\n\
         lmtp = \"unix:/run/dovecot/lmtp\"\n[dns]\nnameservers = [\"127.0.0.1:5353\"]\n",
    )
    .unwrap();
    assert_eq!(c.delivery.threads, 32);
    assert_eq!(
        c.dns.nameservers,
        ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
    );
    let e =
        parse("[delivery]\nsmarthost = \"relay.example.net\"\nroutes = { \"a.test\" = \"h:x\" }\n")
            .unwrap_err();
    assert!(e.contains("needs a port"), "{e}");
    assert!(e.contains("\"x\" is not a port number"), "{e}");
    let e = parse("[delivery]\nretry_schedule_secs = []\nlmtp = \"dovecot\"\n").unwrap_err();
    assert!(
        e.contains("retry_schedule_secs needs at least one interval"),
        "{e}"
    );
    assert!(e.contains("delivery.lmtp"), "{e}");
}

#[test]
fn plugins_default_to_the_shipped_ones_and_can_be_configured() {
    let c = parse("").unwrap();
    let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["relay-refusal", "antispam"]);
    // No path: the shipped plugin, found wherever it is installed, never
    // relative to the working directory.
    assert_eq!(c.plugins[0].path, None);

    let c = parse("plugin = []\n").unwrap();
    assert!(c.plugins.is_empty());

    let c = parse(
        "[[plugin]]\nname = \"antispam\"\npath = \"/usr/lib/sluice/antispam.wasm\"\non_error = \"continue\"\n\
         [plugin.config]\ndnsbl_zones = [\"zen.example\"]\nreject_score = 10.0\n",
    )
    .unwrap();
    let specs = c.plugin_specs().unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].on_error, OnError::Continue);
    assert_eq!(specs[0].cpu_budget, Duration::from_millis(50));
    let json: serde_json::Value = serde_json::from_str(&specs[0].config_json).unwrap();
    assert_eq!(json["dnsbl_zones"][0], "zen.example");
    assert_eq!(json["reject_score"], 10.0);

    let e =
        parse("[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\non_error = \"ignore\"\n").unwrap_err();
    assert!(e.contains("on_error"), "{e}");
    let e = parse("[[plugin]]\nname = \"a\"\npath = \"a.wasm\"\n[[plugin]]\nname = \"a\"\npath = \"b.wasm\"\n")
        .unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn typos_and_bad_values_are_explained() {
    let e = parse("[limits]\nmax_mesage_size = 10\n").unwrap_err();
    assert!(e.contains("unknown field `max_mesage_size`"), "{e}");
    let e = parse("[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n").unwrap_err();
    assert!(e.contains("trusted_networks"), "{e}");
    let e = parse("[limits]\nmax_line_length = 100\n[local]\ndomains = [\"bad domain\"]\n")
        .unwrap_err();
    assert!(e.contains("max_line_length = 100 is below"), "{e}");
    assert!(
        e.contains("\"bad domain\" is not a valid domain name"),
        "{e}"
    );
    let e = parse("[[listen]]\naddr = \"127.0.0.1:587\"\nmode = \"submission\"\n").unwrap_err();
    assert!(
        e.contains("listen 127.0.0.1:587: mode Submission needs a certificate"),
        "{e}"
    );
}

#[test]
fn tls_takes_one_pair_or_a_list_and_says_what_is_missing() {
    let one = parse("[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nmin_version = \"1.3\"\n").unwrap();
    let server = one.tls.server_config().unwrap().unwrap();
    assert_eq!(server.pairs.len(), 1);
    assert_eq!(server.min_version, sluice_tls::MinVersion::Tls13);
    let many = parse(
        "[tls]\ncert = [{ cert = \"/a.pem\", key = \"/a.key\" }, { cert = \"/b.pem\", key = \"/b.key\" }]\n",
    )
    .unwrap();
    let pairs = many.tls.server_config().unwrap().unwrap().pairs;
    assert_eq!(pairs[1].key, PathBuf::from("/b.key"));
    for (text, why) in [
        ("[tls]\ncert = \"/c.pem\"\n", "tls.key must name its key"),
        ("[tls]\nkey = \"/k.pem\"\n", "tls.cert is not"),
        ("[tls]\ncert = []\n", "empty list"),
        (
            "[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nmin_version = \"1.0\"\n",
            "\"1.2\" or \"1.3\"",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(why), "{text}: {e}");
    }
    let levels = parse(
        "[delivery.tls]\nsecurity_level = \"verify\"\npolicy = { \"bank.example\" = \"secure\" }\n",
    )
    .unwrap();
    assert_eq!(
        levels.delivery.tls.policy.get("bank.example"),
        Some(&super::tls::SecurityLevel::Secure)
    );
    assert!(parse("[delivery.tls]\nsecurity_level = \"sometimes\"\n").is_err());
}

#[test]
fn the_delivery_client_defaults_are_port_25_and_the_rfc_minimums() {
    let c = parse("").unwrap();
    assert_eq!(c.delivery.mx_port, 25);
    assert_eq!(c.delivery.connect_timeout_secs, 30);
    let t = c.delivery.timeouts();
    assert_eq!(t.greeting, Duration::from_secs(5 * 60));
    assert_eq!(t.command, Duration::from_secs(5 * 60));
    assert_eq!(t.data_init, Duration::from_secs(2 * 60));
    assert_eq!(t.data_block, Duration::from_secs(3 * 60));
    assert_eq!(t.data_end, Duration::from_secs(10 * 60));
    assert!(c.notes().is_empty(), "{:?}", c.notes());
}

#[test]
fn chunking_is_on_unless_turned_off() {
    assert!(parse("").unwrap().delivery.no_chunking.is_empty());
    assert_eq!(
        parse("[delivery]\nno_chunking = [\"mx.broken.example\", \"192.0.2.1:25\"]\n")
            .unwrap()
            .delivery
            .no_chunking,
        ["mx.broken.example", "192.0.2.1:25"]
    );
    assert!(parse("").unwrap().delivery.chunking);
    assert!(
        !parse("[delivery]\nchunking = false\n")
            .unwrap()
            .delivery
            .chunking
    );
}

#[test]
fn delivery_client_settings_are_taken_and_zero_is_refused() {
    let c = parse(
        "[delivery]\nmx_port = 2526\nconnect_timeout_secs = 7\ngreeting_timeout_secs = 1\n\
         command_timeout_secs = 2\ndata_init_timeout_secs = 3\ndata_block_timeout_secs = 4\n\
         data_end_timeout_secs = 5\n",
    )
    .unwrap();
    assert_eq!(c.delivery.mx_port, 2526);
    assert_eq!(c.delivery.connect_timeout_secs, 7);
    let t = c.delivery.timeouts();
    let secs = Duration::from_secs;
    assert_eq!(
        (t.greeting, t.command, t.data_init, t.data_block, t.data_end),
        (secs(1), secs(2), secs(3), secs(4), secs(5))
    );
    // Allowed, but check-config says what it risks.
    let notes = c.notes();
    assert_eq!(notes.len(), 5, "{notes:?}");
    assert!(
        notes[0].contains("greeting_timeout_secs = 1 is below RFC 5321's minimum of 300"),
        "{notes:?}"
    );

    let e = parse(
        "[delivery]\nmx_port = 0\ngreeting_timeout_secs = 0\ndata_end_timeout_secs = 0\n\
         connect_timeout_secs = 0\n",
    )
    .unwrap_err();
    assert!(e.contains("delivery.mx_port = 0 is not a port"), "{e}");
    for key in [
        "connect_timeout_secs",
        "greeting_timeout_secs",
        "data_end_timeout_secs",
    ] {
        assert!(
            e.contains(&format!("delivery.{key} must be at least 1 second")),
            "{key}: {e}"
        );
    }
    assert!(!e.contains("command_timeout_secs"), "{e}");
    let e = parse("[delivery]\nmx_port = 65536\n").unwrap_err();
    assert!(e.contains("mx_port"), "{e}");
}

#[test]
fn the_kv_table_picks_the_store_and_explains_mistakes() {
    let c = parse("").unwrap();
    assert_eq!(c.kv.backend, KvBackend::Memory);
    assert_eq!(c.kv.redis_url, "redis://127.0.0.1:6379/0");
    assert_eq!(
        (c.kv.key_prefix.as_str(), c.kv.timeout_ms),
        ("sluice:", 200)
    );
    let memory = c.kv_store().unwrap();
    memory.set(b"k", b"v", None).unwrap();
    assert_eq!(memory.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));

    // Nothing listens on port 1: the store is Redis if using it fails there.
    let c = parse(
        "[kv]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1/3\"\n\
         key_prefix = \"mx1:\"\ntimeout_ms = 50\n",
    )
    .unwrap();
    assert_eq!(c.kv.key_prefix, "mx1:");
    assert_eq!(c.kv.timeout_ms, 50);
    assert!(c.notes().is_empty(), "{:?}", c.notes());
    let error = c.kv_store().unwrap().get(b"k").unwrap_err();
    assert!(error.0.starts_with("redis 127.0.0.1:1: "), "{error}");

    let e = parse("[kv]\nbackend = \"redis\"\nredis_url = \"http://127.0.0.1/\"\ntimeout_ms = 0\n")
        .unwrap_err();
    assert!(e.contains("kv.redis_url \"http://127.0.0.1/\""), "{e}");
    assert!(e.contains("kv.timeout_ms must be at least 1"), "{e}");
    let e = parse("[kv]\nbackend = \"mongodb\"\n").unwrap_err();
    assert!(e.contains("unknown variant `mongodb`"), "{e}");
    assert!(e.contains("`memory`") && e.contains("`redis`"), "{e}");
    let e = parse("[kv]\nredis_host = \"127.0.0.1\"\n").unwrap_err();
    assert!(e.contains("redis_host"), "{e}");

    // A URL given without the backend that uses it is probably a mistake.
    let c = parse("[kv]\nredis_url = \"redis://10.0.0.5:6379/0\"\n").unwrap();
    let notes = c.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("kv.backend is \"memory\""), "{notes:?}");
}

#[test]
fn the_sendmail_socket_and_origin_follow_the_spool_and_the_local_domains() {
    let c = parse(
        r#"
        hostname = "mx.example.test"
        spool_dir = "/var/spool/sluice"
        [local]
        domains = ["example.test", "other.test"]
        "#,
    )
    .unwrap();
    let local = c
        .smtpd(c.directory(), None, None)
        .local
        .expect("on by default");
    assert_eq!(local.socket, PathBuf::from("/var/spool/sluice/submit.sock"));
    assert_eq!(local.origin, "mx.example.test", "the hostname");
    let directory = c.directory();
    assert!(
        directory.is_local_domain_name("MX.example.test"),
        "the hostname is a local domain, as in Postfix's mydestination"
    );
    assert!(directory.is_local_domain_name("other.test"));
    assert!(local.trusted_uids.contains(&0), "root, by default");
    assert!(
        local
            .trusted_uids
            .contains(&sluice_sys::user::current_uid()),
        "the server's own user"
    );

    let c = parse(
        r#"
        hostname = "mx.example.test"
        [sendmail]
        socket = "/run/sluice/submit.sock"
        trusted_users = []
        origin = "corp.example.test"
        "#,
    )
    .unwrap();
    let local = c.smtpd(c.directory(), None, None).local.unwrap();
    assert_eq!(local.socket, PathBuf::from("/run/sluice/submit.sock"));
    assert_eq!(local.origin, "corp.example.test");
    assert_eq!(local.trusted_uids, [sluice_sys::user::current_uid()]);

    let off = parse("[sendmail]\nenabled = false\n").unwrap();
    assert!(off.smtpd(off.directory(), None, None).local.is_none());
    let unknown = parse("[sendmail]\ntrusted_users = [\"no-such-user-here\"]\n").unwrap_err();
    assert!(
        unknown.contains("no user \"no-such-user-here\""),
        "{unknown}"
    );
}

#[test]
fn authentication_and_dkim_tables_are_read_and_checked() {
    let c = parse(
        r#"
        [authentication]
        spf = false
        timeout_secs = 3
        [[dkim]]
        domain = "example.test"
        selector = "s2026"
        key = "/etc/sluice/dkim/a.key"
        [[dkim]]
        domain = "example.test"
        selector = "ed"
        key = "/etc/sluice/dkim/b.key"
        algorithm = "ed25519-sha256"
        "#,
    )
    .unwrap();
    let checks = c.authentication.checks();
    assert!(!checks.spf && checks.dkim && checks.dmarc && checks.arc && checks.iprev);
    assert_eq!(c.dkim.len(), 2);
    assert_eq!(
        c.dkim[0].algorithm,
        super::msgauth::DkimAlgorithm::RsaSha256
    );
    assert_eq!(
        c.dkim[1].algorithm,
        super::msgauth::DkimAlgorithm::Ed25519Sha256
    );
    // The keys are read at start: missing files are preflight's to report.
    let problems = c.preflight().unwrap_err().join("\n");
    assert!(problems.contains("/etc/sluice/dkim/a.key"), "{problems}");

    for (text, needle) in [
        (
            "[[dkim]]\ndomain = \"not a domain\"\nselector = \"s\"\nkey = \"k\"\n",
            "is not a domain",
        ),
        (
            "[[dkim]]\ndomain = \"a.test\"\nselector = \"s_1\"\nkey = \"k\"\n",
            "is not a DNS label",
        ),
        (
            "[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nkey = \"k\"\n\
             [[dkim]]\ndomain = \"A.test\"\nselector = \"S\"\nkey = \"k2\"\n",
            "configured twice",
        ),
        (
            "[[dkim]]\ndomain = \"a.test\"\nselector = \"s\"\nkey = \"k\"\nalgorithm = \"rsa-sha1\"\n",
            "unknown variant",
        ),
        ("[authentication]\ntimeout_secs = 0\n", "timeout_secs"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn the_spool_prepares_segments_by_the_file_system_unless_told() {
    use sluice_spool::Preparation;
    let c = parse("").unwrap();
    assert_eq!(c.spool.spool_config().prepare_segments, Preparation::Auto);
    for (value, expected) in [
        ("always", Preparation::Always),
        ("never", Preparation::Never),
        ("auto", Preparation::Auto),
    ] {
        let c = parse(&format!("[spool]\nprepare_segments = \"{value}\"\n")).unwrap();
        assert_eq!(c.spool.spool_config().prepare_segments, expected, "{value}");
    }
    let e = parse("[spool]\nprepare_segments = \"sometimes\"\n").unwrap_err();
    assert!(e.contains("sometimes") && e.contains("auto"), "{e}");
}
