//! Small pieces of RFC 5321 syntax that filters keep needing.

/// Whether `text` is an RFC 5321 `Domain`: dot-separated labels of letters,
/// digits and inner hyphens, at most 63 octets each and 255 in all.
/// Non-ASCII characters count as letters, so U-labels (RFC 6531, SMTPUTF8)
/// pass. No trailing dot, no address literal.
///
/// ```
/// use sluice_plugin_sdk::syntax::is_domain;
/// assert!(is_domain("mail.example.org"));
/// assert!(is_domain("例子.测试"));
/// assert!(!is_domain("example.org."));
/// assert!(!is_domain("-bad.example"));
/// assert!(!is_domain("[192.0.2.1]"));
/// ```
pub fn is_domain(text: &str) -> bool {
    let let_dig = |c: char| c.is_ascii_alphanumeric() || !c.is_ascii();
    !text.is_empty()
        && text.len() <= 255
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.starts_with(let_dig)
                && label.ends_with(let_dig)
                && label.chars().all(|c| let_dig(c) || c == '-')
        })
}

/// Whether `text` is an RFC 5321 address literal: `[` dcontent `]`, where
/// dcontent is printable ASCII except `[`, `]` and `\`. The content is not
/// checked to be a valid address; a literal is never one of our domains
/// either way.
///
/// ```
/// use sluice_plugin_sdk::syntax::is_address_literal;
/// assert!(is_address_literal("[192.0.2.1]"));
/// assert!(is_address_literal("[IPv6:2001:db8::1]"));
/// assert!(!is_address_literal("[]"));
/// assert!(!is_address_literal("192.0.2.1"));
/// ```
pub fn is_address_literal(text: &str) -> bool {
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| (33..=126).contains(&b) && !matches!(b, b'[' | b']' | b'\\'))
        })
}

/// The domain of a reverse-path as the MAIL hook gets it (`local@domain`):
/// the text after the last `@`; `None` for the null reverse-path or text
/// without `@`.
///
/// ```
/// use sluice_plugin_sdk::syntax::domain_of;
/// assert_eq!(domain_of("a@example.org"), Some("example.org"));
/// assert_eq!(domain_of("\"a@b\"@example.org"), Some("example.org"));
/// assert_eq!(domain_of(""), None);
/// ```
pub fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}
