//! A test double of the Sluice host, for unit-testing plugin logic with a
//! plain `cargo test` (host target only).
//!
//! The real host runs plugins only as wasm, so this is where a plugin's
//! decisions are tested: build a [`MockHost`] with the properties, message,
//! DNS answers and local domains a case needs, hand [`MockHost::ctx`] to the
//! filter's hooks, and check the verdict and what the filter did (reply,
//! added headers, scores, notes, key-value store, logs).
//!
//! The double keeps the ABI's contract strictly, so a plugin bug fails the
//! test instead of surprising the real host: a reply whose enhanced status
//! code does not match its code class, a header name that is not a valid
//! field name, or a CR or LF in a header value panics.
//!
//! ```
//! use sluice_plugin_sdk::testing::MockHost;
//! use sluice_plugin_sdk::{DnsResult, Qtype, Scope};
//!
//! let host = MockHost::new()
//!     .with_property("conn.ip", "192.0.2.7")
//!     .with_local_domain("example.org")
//!     .with_dns(Qtype::A, "mx.example.net", DnsResult::Records(vec!["192.0.2.25".into()]));
//! let ctx = host.ctx();
//! assert!(ctx.is_local_domain("EXAMPLE.org"));
//! ctx.set_note(Scope::Transaction, "seen", "1");
//! assert_eq!(host.note(Scope::Transaction, "seen").as_deref(), Some("1"));
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::string::{String, ToString};
use std::vec::Vec;

use crate::raw::RawHost;
use crate::{Ctx, DnsResult, Level, Qtype, Scope};

/// The SDK's stand-in for the Sluice host. See the [module docs](self).
#[derive(Debug, Default)]
pub struct MockHost {
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    properties: BTreeMap<String, String>,
    local_domains: BTreeSet<String>,
    message: Vec<u8>,
    headers: Vec<(String, String)>,
    dns: BTreeMap<(i32, String), DnsResult>,
    dns_default: Option<DnsResult>,
    dns_queries: Vec<(Qtype, String)>,
    notes: BTreeMap<(i32, String), String>,
    /// value, expiry in ms since the epoch (None: never)
    kv: BTreeMap<String, (String, Option<i64>)>,
    now_ms: i64,
    reply: Option<(u16, String)>,
    added_headers: Vec<(String, String)>,
    scores: Vec<(String, f64)>,
    logs: Vec<(Level, String)>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("the plugin passed a string that is not UTF-8")
}

/// Copies `value` into `buf` as the ABI's getters do: as much as fits, and
/// the full length as the result.
fn copy_out(value: &[u8], buf: &mut [u8]) -> i32 {
    let n = value.len().min(buf.len());
    buf[..n].copy_from_slice(&value[..n]);
    i32::try_from(value.len()).expect("test value under 2 GiB")
}

fn qtype_from_code(code: i32) -> Qtype {
    [Qtype::A, Qtype::Aaaa, Qtype::Mx, Qtype::Txt, Qtype::Ptr]
        .into_iter()
        .find(|q| q.code() == code)
        .unwrap_or_else(|| {
            panic!("the plugin asked for DNS type {code}, which ABI v1 does not have")
        })
}

fn level_from_code(code: i32) -> Level {
    [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ]
    .into_iter()
    .find(|l| l.code() == code)
    .unwrap_or_else(|| panic!("the plugin logged at level {code}, which ABI v1 does not have"))
}

/// Splits a message's header section into unfolded `(name, value)` fields,
/// as `get_header` serves them: value only (leading blanks dropped), folds
/// (CRLF before a blank) removed.
fn parse_headers(message: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(message);
    let head = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .map_or(text.as_ref(), |(h, _)| h);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim_start().to_string()));
        }
    }
    for (_, value) in &mut fields {
        *value = value.trim_end().to_string();
    }
    fields
}

fn valid_field_name(name: &[u8]) -> bool {
    // RFC 5322 ftext: printable US-ASCII except ':'.
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

impl MockHost {
    /// A host with nothing set: no properties, no local domains, an empty
    /// message, every DNS name NXDOMAIN, the clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A [`Ctx`] on this host, to pass to a filter's hooks.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx::new(self)
    }

    // ---- set-up (builder style) ---------------------------------------------

    /// Sets a property (`conn.ip`, `conn.trusted`, …).
    pub fn with_property(self, name: &str, value: &str) -> Self {
        self.set_property(name, value);
        self
    }

    /// Makes `domain` one of ours (compared case-insensitively).
    pub fn with_local_domain(self, domain: &str) -> Self {
        self.state
            .borrow_mut()
            .local_domains
            .insert(domain.to_ascii_lowercase());
        self
    }

    /// Sets the message (header section and body, CRLF line ends) that
    /// `get_header` and `get_body` serve, and `msg.size`.
    pub fn with_message(self, message: &[u8]) -> Self {
        {
            let mut s = self.state.borrow_mut();
            s.message = message.to_vec();
            s.headers = parse_headers(message);
        }
        self.set_property("msg.size", &message.len().to_string());
        self
    }

    /// The answer to a `qtype` lookup of `name` (case-insensitive).
    pub fn with_dns(self, qtype: Qtype, name: &str, answer: DnsResult) -> Self {
        self.state
            .borrow_mut()
            .dns
            .insert((qtype.code(), name.to_ascii_lowercase()), answer);
        self
    }

    /// The answer to every lookup not set with [`with_dns`](Self::with_dns)
    /// (NXDOMAIN unless set).
    pub fn with_dns_default(self, answer: DnsResult) -> Self {
        self.state.borrow_mut().dns_default = Some(answer);
        self
    }

    /// Sets the clock.
    pub fn with_now_ms(self, now_ms: i64) -> Self {
        self.state.borrow_mut().now_ms = now_ms;
        self
    }

    /// Sets a key-value entry without expiry, as if another plugin (or an
    /// earlier connection) had stored it.
    pub fn with_kv(self, key: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .kv
            .insert(key.to_string(), (value.to_string(), None));
        self
    }

    // ---- changes between hook calls ----------------------------------------

    /// Sets or replaces a property.
    pub fn set_property(&self, name: &str, value: &str) {
        self.state
            .borrow_mut()
            .properties
            .insert(name.to_string(), value.to_string());
    }

    /// Removes a property.
    pub fn remove_property(&self, name: &str) {
        self.state.borrow_mut().properties.remove(name);
    }

    /// Sets the RCPT hook's recipient in parts, as the host gives it
    /// (`rcpt.local_part` unquoted; `rcpt.domain` a name, a `[literal]`, or
    /// `None` for `<Postmaster>`): see [`Ctx::recipient`].
    pub fn set_recipient(&self, local_part: &str, domain: Option<&str>) {
        self.set_property("rcpt.local_part", local_part);
        match domain {
            Some(domain) => self.set_property("rcpt.domain", domain),
            None => self.remove_property("rcpt.domain"),
        }
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.state.borrow_mut().now_ms += ms;
    }

    /// Ends the transaction as the host does: transaction notes and the
    /// reply are dropped; connection notes stay.
    pub fn end_transaction(&self) {
        let mut s = self.state.borrow_mut();
        s.notes
            .retain(|(scope, _), _| *scope != Scope::Transaction.code());
        s.reply = None;
    }

    // ---- what the plugin did --------------------------------------------------

    /// The last reply set with `set_reply`: `(code, text)`.
    pub fn reply(&self) -> Option<(u16, String)> {
        self.state.borrow().reply.clone()
    }

    /// Header fields added with `add_header`, in call order.
    pub fn added_headers(&self) -> Vec<(String, String)> {
        self.state.borrow().added_headers.clone()
    }

    /// Scores added with `add_score`, in call order.
    pub fn scores(&self) -> Vec<(String, f64)> {
        self.state.borrow().scores.clone()
    }

    /// Log lines, in call order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.state.borrow().logs.clone()
    }

    /// DNS lookups made, in call order.
    pub fn dns_queries(&self) -> Vec<(Qtype, String)> {
        self.state.borrow().dns_queries.clone()
    }

    /// A note's current value.
    pub fn note(&self, scope: Scope, key: &str) -> Option<String> {
        self.state
            .borrow()
            .notes
            .get(&(scope.code(), key.to_string()))
            .cloned()
    }

    /// A key-value entry's current value, if not expired.
    pub fn kv(&self, key: &str) -> Option<String> {
        let s = self.state.borrow();
        let (value, expiry) = s.kv.get(key)?;
        expiry.is_none_or(|t| t > s.now_ms).then(|| value.clone())
    }

    /// The expiry (ms since the epoch) of a live key-value entry; `None` if
    /// it has none or does not exist.
    pub fn kv_expiry_ms(&self, key: &str) -> Option<i64> {
        self.state.borrow().kv.get(key)?.1
    }

    fn expire(s: &mut State) {
        let now = s.now_ms;
        s.kv.retain(|_, (_, expiry)| expiry.is_none_or(|t| t > now));
    }

    fn expiry(now_ms: i64, ttl_secs: i32) -> Option<i64> {
        assert!(ttl_secs >= 0, "negative TTL {ttl_secs}");
        (ttl_secs > 0).then(|| now_ms + i64::from(ttl_secs) * 1000)
    }
}

impl RawHost for &MockHost {
    fn get_property(&self, name: &[u8], buf: &mut [u8]) -> i32 {
        let s = self.state.borrow();
        s.properties
            .get(&text(name))
            .map_or(-1, |v| copy_out(v.as_bytes(), buf))
    }

    fn is_local_domain(&self, domain: &[u8]) -> i32 {
        let domain = text(domain);
        if domain.starts_with('[') {
            return 0;
        }
        i32::from(
            self.state
                .borrow()
                .local_domains
                .contains(&domain.to_ascii_lowercase()),
        )
    }

    fn get_header(&self, name: &[u8], index: i32, buf: &mut [u8]) -> i32 {
        let name = text(name);
        let s = self.state.borrow();
        usize::try_from(index)
            .ok()
            .and_then(|i| {
                s.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
                    .nth(i)
            })
            .map_or(-1, |(_, v)| copy_out(v.as_bytes(), buf))
    }

    fn get_body(&self, offset: i32, buf: &mut [u8]) -> i32 {
        let s = self.state.borrow();
        let offset = usize::try_from(offset).expect("negative body offset");
        let rest = s.message.get(offset..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        i32::try_from(n).expect("under 2 GiB")
    }

    fn set_reply(&self, code: i32, text_bytes: &[u8]) {
        let reply = text(text_bytes);
        let code = u16::try_from(code).expect("reply code");
        assert!(
            (200..600).contains(&code),
            "reply code {code} is not an SMTP code"
        );
        let class = char::from(b'0' + u8::try_from(code / 100).expect("one digit"));
        let enhanced = reply.split(' ').next().unwrap_or_default();
        let parts: Vec<&str> = enhanced.split('.').collect();
        assert!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && enhanced.starts_with(class),
            "reply {code} {reply:?}: the text must start with an enhanced status code of class {class}"
        );
        assert!(
            !reply.contains(['\r', '\n']),
            "reply text with CR or LF: {reply:?}"
        );
        self.state.borrow_mut().reply = Some((code, reply));
    }

    fn add_header(&self, name: &[u8], value: &[u8]) {
        assert!(
            valid_field_name(name),
            "invalid header field name {:?}",
            text(name)
        );
        let value = text(value);
        assert!(
            !value.contains(['\r', '\n']),
            "header value with CR or LF: {value:?}"
        );
        self.state
            .borrow_mut()
            .added_headers
            .push((text(name), value));
    }

    fn add_score(&self, symbol: &[u8], score: f64) {
        assert!(score.is_finite(), "score {score} is not finite");
        self.state.borrow_mut().scores.push((text(symbol), score));
    }

    fn note_get(&self, scope: i32, key: &[u8], buf: &mut [u8]) -> i32 {
        assert!(scope == 0 || scope == 1, "note scope {scope}");
        self.state
            .borrow()
            .notes
            .get(&(scope, text(key)))
            .map_or(-1, |v| copy_out(v.as_bytes(), buf))
    }

    fn note_set(&self, scope: i32, key: &[u8], value: &[u8]) {
        assert!(scope == 0 || scope == 1, "note scope {scope}");
        self.state
            .borrow_mut()
            .notes
            .insert((scope, text(key)), text(value));
    }

    fn log(&self, level: i32, message: &[u8]) {
        let level = level_from_code(level);
        self.state.borrow_mut().logs.push((level, text(message)));
    }

    fn now_ms(&self) -> i64 {
        self.state.borrow().now_ms
    }

    fn dns_lookup(&self, qtype: i32, name: &[u8], buf: &mut [u8]) -> i32 {
        let name = text(name);
        let mut s = self.state.borrow_mut();
        s.dns_queries.push((qtype_from_code(qtype), name.clone()));
        let answer = s
            .dns
            .get(&(qtype, name.to_ascii_lowercase()))
            .or(s.dns_default.as_ref())
            .cloned()
            .unwrap_or(DnsResult::NxDomain);
        match answer {
            DnsResult::Records(records) => copy_out(records.join("\n").as_bytes(), buf),
            DnsResult::NoData => 0,
            DnsResult::NxDomain => -3,
            DnsResult::Failed => -2,
        }
    }

    fn kv_get(&self, key: &[u8], buf: &mut [u8]) -> i32 {
        let mut s = self.state.borrow_mut();
        MockHost::expire(&mut s);
        s.kv.get(&text(key))
            .map_or(-1, |(v, _)| copy_out(v.as_bytes(), buf))
    }

    fn kv_set(&self, key: &[u8], value: &[u8], ttl_secs: i32) {
        let mut s = self.state.borrow_mut();
        let expiry = MockHost::expiry(s.now_ms, ttl_secs);
        s.kv.insert(text(key), (text(value), expiry));
    }

    fn kv_incr(&self, key: &[u8], delta: i64, ttl_secs: i32) -> i64 {
        let mut s = self.state.borrow_mut();
        MockHost::expire(&mut s);
        let expiry = MockHost::expiry(s.now_ms, ttl_secs);
        let entry =
            s.kv.entry(text(key))
                .or_insert_with(|| ("0".to_string(), expiry));
        let value = entry
            .0
            .parse::<i64>()
            .expect("kv_incr on a value that is not a number")
            + delta;
        entry.0 = value.to_string();
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold_and_stop_at_the_blank_line() {
        let fields = parse_headers(
            b"From: a@b\r\nSubject: hello\r\n\tworld \r\nX-Empty:\r\n\r\nNot-A: header\r\n",
        );
        assert_eq!(
            fields,
            [
                ("From".to_string(), "a@b".to_string()),
                ("Subject".to_string(), "hello\tworld".to_string()),
                ("X-Empty".to_string(), String::new()),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "enhanced status code of class 5")]
    fn a_reply_with_a_mismatched_enhanced_code_is_a_plugin_bug() {
        MockHost::new().ctx().set_reply(550, "4.7.1 nope");
    }

    #[test]
    #[should_panic(expected = "CR or LF")]
    fn a_header_value_with_a_line_break_is_a_plugin_bug() {
        MockHost::new()
            .ctx()
            .add_header("X-Test", "a\r\nBcc: evil@example");
    }

    #[test]
    #[should_panic(expected = "invalid header field name")]
    fn a_header_name_with_a_colon_is_a_plugin_bug() {
        MockHost::new().ctx().add_header("X-Test:", "a");
    }

    #[test]
    fn address_literals_are_never_local() {
        let host = MockHost::new().with_local_domain("[192.0.2.1]");
        assert!(!host.ctx().is_local_domain("[192.0.2.1]"));
    }
}
