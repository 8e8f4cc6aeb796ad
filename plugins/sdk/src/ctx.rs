use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::Verdict;
use crate::dns::{self, DnsResult, Qtype};
use crate::raw::RawHost;

#[cfg(target_arch = "wasm32")]
type Backend<'a> = crate::raw::WasmHost<'a>;
#[cfg(not(target_arch = "wasm32"))]
type Backend<'a> = &'a crate::testing::MockHost;

/// First guess for a value's size; most properties, headers and notes fit,
/// and a larger one costs one more host call.
const FIRST_BUF: usize = 256;
/// How far [`Ctx::headers`] counts; a message with more fields of one name is
/// hostile, and reading further only burns the hook's CPU budget.
const MAX_FIELDS_PER_NAME: usize = 1000;
/// Chunk size for reading the message.
const BODY_CHUNK: usize = 64 * 1024;

/// Access to the host during one hook call: properties of the connection and
/// transaction, the message, replies, scores, notes, logging, the clock, DNS
/// and the shared key-value store.
///
/// Every method is one or two host calls; nothing is cached in the plugin,
/// because the host freezes values for the length of a hook anyway.
#[derive(Debug)]
pub struct Ctx<'a> {
    host: Backend<'a>,
}

/// Where a note lives: notes are the plugin's memory across hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Kept for the whole connection (all its transactions).
    Connection,
    /// Dropped when the transaction ends (RSET, the message accepted or
    /// refused).
    Transaction,
}

impl Scope {
    /// The ABI value (`0` connection, `1` transaction).
    pub const fn code(self) -> i32 {
        match self {
            Self::Connection => 0,
            Self::Transaction => 1,
        }
    }
}

/// Log levels, as the server's log has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something is broken.
    Error,
    /// Something is wrong but handled.
    Warn,
    /// Normal, noteworthy events.
    Info,
    /// Detail for debugging.
    Debug,
    /// Everything.
    Trace,
}

impl Level {
    /// The ABI value (`0` error … `4` trace).
    pub const fn code(self) -> i32 {
        match self {
            Self::Error => 0,
            Self::Warn => 1,
            Self::Info => 2,
            Self::Debug => 3,
            Self::Trace => 4,
        }
    }
}

/// Runs `call` with a growing buffer until the value fits, following the
/// ABI's protocol: the return value is the full length, or negative for "no
/// value". A value that keeps changing size is treated as absent rather than
/// looping: the host freezes values during a hook, so that would be a host
/// bug.
fn fetch(mut call: impl FnMut(&mut [u8]) -> i32) -> Result<Vec<u8>, i32> {
    // The call's answer: a length, or a negative "no value" passed on.
    let length = |n: i32| usize::try_from(n).map_err(|_| n);
    // Most values fit on the stack: the heap is asked for their length
    // only, not for a zeroed first guess.
    let mut first = [0u8; FIRST_BUF];
    let mut n = length(call(&mut first))?;
    if n <= FIRST_BUF {
        return Ok(first[..n].to_vec());
    }
    for _ in 0..2 {
        let mut buf = vec![0; n];
        let got = length(call(&mut buf))?;
        if got <= n {
            buf.truncate(got);
            return Ok(buf);
        }
        n = got;
    }
    Err(-1)
}

/// Host values are UTF-8 by contract; a stray invalid byte becomes U+FFFD
/// rather than losing the whole value.
fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn clamp_i32<T: TryInto<i32>>(v: T) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

/// A forward-path in parts: see [`Ctx::recipient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The local part, unquoted: `"john doe"@x` gives `john doe`, and a
    /// `%`-hack or bang path stays in it (`user%remote`, `remote!user`).
    pub local_part: String,
    /// Where the mailbox is.
    pub domain: RecipientDomain,
}

/// The domain part of a [`Recipient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientDomain {
    /// A domain name, as the client wrote it.
    Name(String),
    /// An address literal with its brackets: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
    Literal(String),
    /// `<Postmaster>` without a domain (RFC 5321 §4.1.1.3): always ours.
    None,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(host: Backend<'a>) -> Self {
        Self { host }
    }

    // ---- properties -------------------------------------------------------

    /// A property (`conn.ip`, `tx.mail_from`, … see ABI.md), or `None` if it
    /// has no value.
    pub fn property(&self, name: &str) -> Option<String> {
        fetch(|buf| self.host.get_property(name.as_bytes(), buf))
            .ok()
            .map(into_string)
    }

    /// `conn.ip`: the client's address, if the host gave a parsable one.
    pub fn conn_ip(&self) -> Option<IpAddr> {
        self.property("conn.ip")?.trim().parse().ok()
    }

    /// `conn.trusted`: whether the client is in `relay.trusted_networks`.
    /// `None` when the property is missing or is neither `0` nor `1`, so that
    /// a policy can fail closed.
    pub fn conn_trusted(&self) -> Option<bool> {
        flag(self.property("conn.trusted")?.as_str())
    }

    /// `conn.auth`: the authenticated user; `None` when the client has not
    /// authenticated (an empty value counts as not authenticated).
    pub fn conn_auth(&self) -> Option<String> {
        self.property("conn.auth").filter(|user| !user.is_empty())
    }

    /// `conn.tls`: whether the session is TLS-protected (`None` if unknown).
    pub fn conn_tls(&self) -> Option<bool> {
        flag(self.property("conn.tls")?.as_str())
    }

    /// `conn.helo`: the HELO/EHLO argument, once given.
    pub fn helo_name(&self) -> Option<String> {
        self.property("conn.helo")
    }

    /// `server.hostname`: our own hostname.
    pub fn server_hostname(&self) -> Option<String> {
        self.property("server.hostname")
    }

    /// `tx.id`: the queue id (end of data).
    pub fn tx_id(&self) -> Option<String> {
        self.property("tx.id")
    }

    /// `tx.mail_from`: the reverse-path (`""` for `<>`).
    pub fn mail_from(&self) -> Option<String> {
        self.property("tx.mail_from")
    }

    /// `tx.rcpts`: the forward-paths accepted so far.
    pub fn rcpts(&self) -> Vec<String> {
        self.property("tx.rcpts")
            .map(|all| {
                all.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The recipient of the RCPT hook as the server's own parser read it
    /// (`rcpt.local_part`, `rcpt.domain`), so a filter judges exactly the
    /// address the server accepted and never parses the forward-path again.
    /// `None` outside the RCPT hook (or from a host that does not say).
    pub fn recipient(&self) -> Option<Recipient> {
        let local_part = self.property("rcpt.local_part")?;
        let domain = match self.property("rcpt.domain") {
            None => RecipientDomain::None,
            Some(d) if d.starts_with('[') => RecipientDomain::Literal(d),
            Some(d) => RecipientDomain::Name(d),
        };
        Some(Recipient { local_part, domain })
    }

    /// `tx.score`: the transaction's spam score so far, summed over every
    /// plugin's [`add_score`](Self::add_score) (this transaction's, and its
    /// connection's connect and HELO hooks').
    pub fn tx_score(&self) -> Option<f64> {
        self.property("tx.score")?.trim().parse().ok()
    }

    /// `tx.symbols`: the scores behind [`tx_score`](Self::tx_score), one
    /// `(symbol, score)` per `add_score` call, in order. Lines that do not
    /// parse are skipped.
    pub fn tx_symbols(&self) -> Vec<(String, f64)> {
        self.property("tx.symbols")
            .map(|all| {
                all.lines()
                    .filter_map(|line| {
                        let (symbol, score) = line.trim().rsplit_once(char::is_whitespace)?;
                        Some((String::from(symbol.trim()), score.parse().ok()?))
                    })
                    .filter(|(symbol, _)| !symbol.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `msg.size`: the message size in octets (end of data).
    pub fn msg_size(&self) -> Option<u64> {
        self.property("msg.size")?.trim().parse().ok()
    }

    /// Whether `domain` is one of ours (case-insensitive; address literals
    /// never are).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.host.is_local_domain(domain.as_bytes()) == 1
    }

    // ---- the message (end of data) ---------------------------------------

    /// The `index`-th (0-based) header field called `name`, value only and
    /// unfolded; `None` if there are fewer.
    pub fn header(&self, name: &str, index: usize) -> Option<String> {
        let index = i32::try_from(index).ok()?;
        fetch(|buf| self.host.get_header(name.as_bytes(), index, buf))
            .ok()
            .map(into_string)
    }

    /// Every header field called `name`, in message order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        (0..MAX_FIELDS_PER_NAME)
            .map_while(|i| self.header(name, i))
            .collect()
    }

    /// Copies message bytes (header section and body as received) from
    /// `offset` into `buf`; returns how many were copied, 0 at the end.
    pub fn read_body(&self, offset: usize, buf: &mut [u8]) -> usize {
        let Ok(offset) = i32::try_from(offset) else {
            return 0;
        };
        // The host never copies more than asked; `min` guards the slice
        // arithmetic of callers against a host that says otherwise.
        usize::try_from(self.host.get_body(offset, buf)).map_or(0, |n| n.min(buf.len()))
    }

    /// The message as received (header section and body), at most `limit`
    /// bytes of it.
    pub fn body(&self, limit: usize) -> Vec<u8> {
        let hint = self
            .msg_size()
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(BODY_CHUNK);
        let mut out = Vec::with_capacity(hint.min(limit));
        let mut chunk = vec![0; BODY_CHUNK.min(limit)];
        while out.len() < limit {
            let want = (limit - out.len()).min(chunk.len());
            let n = self.read_body(out.len(), &mut chunk[..want]);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        out
    }

    // ---- verdict details and changes -------------------------------------

    /// The reply for a REJECT, TEMPFAIL or DISCONNECT verdict: `code` is the
    /// three-digit reply code, `text` starts with the enhanced status code
    /// (`"5.7.1 Relay access denied"`). The host ignores a code whose class
    /// does not match the verdict.
    pub fn set_reply(&self, code: u16, text: &str) {
        self.host.set_reply(i32::from(code), text.as_bytes());
    }

    /// [`set_reply`](Self::set_reply) then [`Verdict::Reject`]:
    /// `return ctx.reject(550, "5.7.1 No thanks")`.
    pub fn reject(&self, code: u16, text: &str) -> Verdict {
        self.set_reply(code, text);
        Verdict::Reject
    }

    /// [`set_reply`](Self::set_reply) then [`Verdict::Tempfail`].
    pub fn tempfail(&self, code: u16, text: &str) -> Verdict {
        self.set_reply(code, text);
        Verdict::Tempfail
    }

    /// [`set_reply`](Self::set_reply) then [`Verdict::Disconnect`].
    pub fn disconnect(&self, code: u16, text: &str) -> Verdict {
        self.set_reply(code, text);
        Verdict::Disconnect
    }

    /// End of data: prepends a header field to the stored message. The host
    /// refuses invalid field names and values containing CR or LF.
    pub fn add_header(&self, name: &str, value: &str) {
        self.host.add_header(name.as_bytes(), value.as_bytes());
    }

    /// Adds `score` to the transaction's spam score under `symbol`.
    pub fn add_score(&self, symbol: &str, score: f64) {
        self.host.add_score(symbol.as_bytes(), score);
    }

    // ---- notes -----------------------------------------------------------

    /// A note written earlier in this connection or transaction (by any
    /// plugin), or `None`.
    pub fn note(&self, scope: Scope, key: &str) -> Option<String> {
        fetch(|buf| self.host.note_get(scope.code(), key.as_bytes(), buf))
            .ok()
            .map(into_string)
    }

    /// Sets a note; see [`Scope`] for how long it lives.
    pub fn set_note(&self, scope: Scope, key: &str, value: &str) {
        self.host
            .note_set(scope.code(), key.as_bytes(), value.as_bytes());
    }

    // ---- logging and time -------------------------------------------------

    /// Writes `message` to the server's log, tagged with the plugin's name.
    pub fn log(&self, level: Level, message: &str) {
        self.host.log(level.code(), message.as_bytes());
    }

    /// [`log`](Self::log) at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    /// [`log`](Self::log) at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// [`log`](Self::log) at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// [`log`](Self::log) at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Wall-clock milliseconds since the Unix epoch, frozen for the length
    /// of the hook.
    pub fn now_ms(&self) -> i64 {
        self.host.now_ms()
    }

    // ---- DNS ---------------------------------------------------------------

    /// Looks `name` up through the host's cached resolver. Bounded by the
    /// host's DNS timeout; a timeout is [`DnsResult::Failed`].
    pub fn dns_lookup(&self, qtype: Qtype, name: &str) -> DnsResult {
        match fetch(|buf| self.host.dns_lookup(qtype.code(), name.as_bytes(), buf)) {
            Ok(text) => dns::parse_answer(&into_string(text)),
            Err(code) => dns::from_code(code),
        }
    }

    // ---- shared key-value store --------------------------------------------

    /// A value from the store shared by all plugins, instances and threads.
    pub fn kv_get(&self, key: &str) -> Option<String> {
        fetch(|buf| self.host.kv_get(key.as_bytes(), buf))
            .ok()
            .map(into_string)
    }

    /// Stores `value` under `key`; it expires after `ttl_secs` (0: never).
    pub fn kv_set(&self, key: &str, value: &str, ttl_secs: u32) {
        self.host
            .kv_set(key.as_bytes(), value.as_bytes(), clamp_i32(ttl_secs));
    }

    /// Atomically adds `delta` to the counter `key` (created at 0 with the
    /// TTL `ttl_secs` if missing) and returns the new value.
    pub fn kv_incr(&self, key: &str, delta: i64, ttl_secs: u32) -> i64 {
        self.host
            .kv_incr(key.as_bytes(), delta, clamp_i32(ttl_secs))
    }
}

fn flag(value: &str) -> Option<bool> {
    match value.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn fetch_follows_the_length_protocol() {
        // "No value" is passed on after one call.
        let mut calls = 0;
        assert_eq!(
            fetch(|_| {
                calls += 1;
                -1
            }),
            Err(-1)
        );
        assert_eq!(calls, 1);
        // A value that grows at every call is given up after three.
        let mut calls = 0;
        let growing = fetch(|buf| {
            calls += 1;
            i32::try_from(buf.len()).unwrap() + 1
        });
        assert_eq!((growing, calls), (Err(-1), 3));
        // A longer value takes a second call with a buffer of its length.
        let value: Vec<u8> = (0..FIRST_BUF + 10).map(|i| i as u8).collect();
        let mut lens = Vec::new();
        let got = fetch(|buf| {
            lens.push(buf.len());
            let n = value.len().min(buf.len());
            buf[..n].copy_from_slice(&value[..n]);
            i32::try_from(value.len()).unwrap()
        });
        assert_eq!(got.as_deref(), Ok(&value[..]));
        assert_eq!(lens, vec![FIRST_BUF, value.len()]);
    }

    #[test]
    fn a_value_longer_than_the_first_buffer_is_fetched_whole() {
        let long = "x".repeat(FIRST_BUF * 3 + 7);
        let host = MockHost::new().with_property("tx.rcpts", &long);
        assert_eq!(
            host.ctx().property("tx.rcpts").as_deref(),
            Some(long.as_str())
        );
    }

    #[test]
    fn an_exact_fit_and_an_empty_value_are_values() {
        let exact = "y".repeat(FIRST_BUF);
        let host = MockHost::new()
            .with_property("a", &exact)
            .with_property("b", "");
        let ctx = host.ctx();
        assert_eq!(ctx.property("a").as_deref(), Some(exact.as_str()));
        assert_eq!(ctx.property("b").as_deref(), Some(""));
        assert_eq!(ctx.property("c"), None);
    }

    #[test]
    fn typed_properties_fail_closed_on_missing_or_odd_values() {
        let host = MockHost::new()
            .with_property("conn.ip", "2001:db8::1")
            .with_property("conn.trusted", "yes")
            .with_property("conn.auth", "")
            .with_property("tx.rcpts", "a@x.test\nb@y.test\n")
            .with_property("msg.size", "1234");
        let ctx = host.ctx();
        assert_eq!(ctx.conn_ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ctx.conn_trusted(), None, "only 0 and 1 are answers");
        assert_eq!(ctx.conn_auth(), None, "an empty user is not a login");
        assert_eq!(ctx.conn_tls(), None, "missing");
        assert_eq!(ctx.rcpts(), ["a@x.test", "b@y.test"]);
        assert_eq!(ctx.msg_size(), Some(1234));
        assert_eq!(ctx.tx_score(), None);
        assert!(ctx.tx_symbols().is_empty());
        host.set_property("tx.score", "5.5");
        host.set_property("tx.symbols", "SPF_FAIL 4\nbroken\nRATE -x\nDNSWL -1.5\n");
        assert_eq!(ctx.tx_score(), Some(5.5));
        assert_eq!(
            ctx.tx_symbols(),
            [("SPF_FAIL".to_string(), 4.0), ("DNSWL".to_string(), -1.5)]
        );
        host.set_property("conn.trusted", "0");
        assert_eq!(ctx.conn_trusted(), Some(false));
    }

    #[test]
    fn headers_are_read_by_name_and_index_and_body_in_chunks() {
        let mut msg = b"Subject: one\r\nsubject: two\r\n folded\r\nTo: x@y\r\n\r\n".to_vec();
        msg.extend(core::iter::repeat_n(b'b', BODY_CHUNK + 10));
        let host = MockHost::new().with_message(&msg);
        let ctx = host.ctx();
        assert_eq!(ctx.headers("SUBJECT"), ["one", "two folded"]);
        assert_eq!(ctx.header("to", 0).as_deref(), Some("x@y"));
        assert_eq!(ctx.header("to", 1), None);
        assert_eq!(ctx.body(usize::MAX), msg);
        assert_eq!(ctx.body(20), msg[..20]);
    }

    #[test]
    fn reply_helpers_set_the_reply_and_return_the_verdict() {
        let host = MockHost::new();
        let ctx = host.ctx();
        assert_eq!(ctx.tempfail(451, "4.7.1 later"), Verdict::Tempfail);
        assert_eq!(host.reply(), Some((451, "4.7.1 later".to_string())));
        assert_eq!(ctx.reject(554, "5.7.1 no"), Verdict::Reject);
        assert_eq!(host.reply(), Some((554, "5.7.1 no".to_string())));
        assert_eq!(ctx.disconnect(421, "4.7.0 bye"), Verdict::Disconnect);
        assert_eq!(host.reply(), Some((421, "4.7.0 bye".to_string())));
    }

    #[test]
    fn notes_are_scoped() {
        let host = MockHost::new();
        let ctx = host.ctx();
        ctx.set_note(Scope::Connection, "k", "conn");
        ctx.set_note(Scope::Transaction, "k", "tx");
        assert_eq!(ctx.note(Scope::Connection, "k").as_deref(), Some("conn"));
        assert_eq!(ctx.note(Scope::Transaction, "k").as_deref(), Some("tx"));
        host.end_transaction();
        assert_eq!(ctx.note(Scope::Transaction, "k"), None);
        assert_eq!(ctx.note(Scope::Connection, "k").as_deref(), Some("conn"));
    }

    #[test]
    fn kv_values_expire_and_counters_count() {
        let host = MockHost::new().with_now_ms(1_000_000);
        let ctx = host.ctx();
        ctx.kv_set("g", "v", 10);
        assert_eq!(ctx.kv_get("g").as_deref(), Some("v"));
        assert_eq!(ctx.kv_incr("n", 2, 5), 2);
        assert_eq!(ctx.kv_incr("n", 3, 5), 5);
        host.advance_ms(9_999);
        assert_eq!(ctx.kv_get("g").as_deref(), Some("v"));
        assert_eq!(
            ctx.kv_incr("n", 1, 5),
            1,
            "expired after 5 s, recreated at 0"
        );
        host.advance_ms(1);
        assert_eq!(ctx.kv_get("g"), None);
    }
}
