//! HELO/EHLO checks.

use core::net::IpAddr;

use sluice_plugin_sdk::Ctx;
use sluice_plugin_sdk::syntax::{is_address_literal, is_domain};

use crate::symbols;

/// What kind of name a client gave in HELO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeloKind {
    /// A domain with at least two labels: what RFC 5321 §4.1.1.1 asks for.
    Fqdn,
    /// A domain of one label.
    SingleLabel,
    /// An address literal (`[192.0.2.1]`): allowed for hosts without a name.
    AddressLiteral,
    /// An IP address without brackets.
    BareIp,
    /// Anything else (empty, spaces, underscores, …).
    Invalid,
}

/// Classifies a HELO argument by syntax alone.
pub fn classify(helo: &str) -> HeloKind {
    if helo.parse::<IpAddr>().is_ok() {
        HeloKind::BareIp
    } else if is_address_literal(helo) {
        HeloKind::AddressLiteral
    } else if is_domain(helo) {
        if helo.contains('.') {
            HeloKind::Fqdn
        } else {
            HeloKind::SingleLabel
        }
    } else {
        HeloKind::Invalid
    }
}

/// The symbol a HELO of this kind earns, if any.
pub fn symbol(kind: HeloKind) -> Option<&'static str> {
    match kind {
        HeloKind::Fqdn | HeloKind::AddressLiteral => None,
        HeloKind::SingleLabel => Some(symbols::HELO_NOT_FQDN),
        HeloKind::BareIp => Some(symbols::HELO_BARE_IP),
        HeloKind::Invalid => Some(symbols::HELO_BAD_SYNTAX),
    }
}

/// Whether the client claims to be this server: our hostname or one of our
/// domains. A trailing dot and letter case do not hide it.
pub fn claims_to_be_us(ctx: &Ctx<'_>, helo: &str) -> bool {
    let name = helo.strip_suffix('.').unwrap_or(helo);
    if name.is_empty() || name.starts_with('[') {
        return false;
    }
    ctx.server_hostname()
        .is_some_and(|ours| ours.trim_end_matches('.').eq_ignore_ascii_case(name))
        || ctx.is_local_domain(name)
}

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    #[test]
    fn helo_names_are_classified_by_syntax() {
        for (helo, kind) in [
            ("mail.example.net", HeloKind::Fqdn),
            ("MAIL.EXAMPLE.NET", HeloKind::Fqdn),
            ("localhost", HeloKind::SingleLabel),
            ("[192.0.2.1]", HeloKind::AddressLiteral),
            ("[IPv6:2001:db8::1]", HeloKind::AddressLiteral),
            ("192.0.2.1", HeloKind::BareIp),
            ("2001:db8::1", HeloKind::BareIp),
            ("", HeloKind::Invalid),
            ("my_host.example", HeloKind::Invalid),
            ("host name", HeloKind::Invalid),
            ("example.com.", HeloKind::Invalid),
            ("[192.0.2.1", HeloKind::Invalid),
        ] {
            assert_eq!(classify(helo), kind, "{helo:?}");
        }
        assert_eq!(symbol(HeloKind::Fqdn), None);
        assert_eq!(symbol(HeloKind::BareIp), Some(symbols::HELO_BARE_IP));
    }

    #[test]
    fn claiming_our_name_or_domain_is_detected() {
        let host = MockHost::new()
            .with_property("server.hostname", "mx.local.test")
            .with_local_domain("local.test");
        let ctx = host.ctx();
        assert!(claims_to_be_us(&ctx, "mx.local.test"));
        assert!(claims_to_be_us(&ctx, "MX.Local.Test."));
        assert!(claims_to_be_us(&ctx, "local.test"));
        assert!(!claims_to_be_us(&ctx, "mx.remote.test"));
        assert!(!claims_to_be_us(&ctx, "[192.0.2.1]"));
        assert!(!claims_to_be_us(&ctx, ""));
    }
}
