//! Deterministic, realistic inputs: what a busy MX sees, not random bytes.
//!
//! Generated rather than checked in so sizes can be chosen freely; a fixed
//! seed keeps every run measuring the same bytes.

use sluice_smtp::data::DotStuffer;

/// xorshift64*: enough to vary word choice and line length without a
/// dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Split on whitespace; one string keeps the list readable under rustfmt.
const WORDS: &str = "the message delivery queue server please find attached report \
quarterly meeting tomorrow at 10:00 regards thanks invoice no. example.org and of to in \
for is on that with as this https://www.example.com/a/b?c=d mailbox Grüße café -- re: update";

const HEADERS: &str = "\
Received: from mail-wr1-f41.example.net (mail-wr1-f41.example.net [192.0.2.41])\r
\tby mx.example.org (Sluice) with ESMTPS id 4Xk2Lq0Zz7z9rvN\r
\tfor <alice@example.org>; Tue, 14 May 2024 09:12:44 +0000 (UTC)\r
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=20230601;\r
\th=to:subject:message-id:date:from:mime-version:from:to:cc:subject:date;\r
\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r
\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaXMgdGhlIHJpZ2h0IHNoYXBl\r
\t IGZvciBhIGJlbmNobWFyayBvZiBhIG1haWwgdHJhbnNmZXIgYWdlbnQgaW4gcnVzdA==\r
From: Bob Example <bob@example.net>\r
To: Alice <alice@example.org>\r
Subject: Re: quarterly report\r
Date: Tue, 14 May 2024 11:12:40 +0200\r
Message-ID: <CAF=x9Q+0a1b2c3d4e5f@mail.example.net>\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary=\"000000000000a1b2c3\"\r
\r
--000000000000a1b2c3\r
Content-Type: text/plain; charset=\"UTF-8\"\r
Content-Transfer-Encoding: 8bit\r
\r
";

/// A message of about `size` octets (content, before dot-stuffing): headers,
/// a text part of 60 to 78 octet lines, about one in 40 of them starting
/// with "." (so the wire form has stuffed lines), then a base64 part of 76
/// octet lines filling the rest, as attachments make up most of the bytes
/// of real mail.
pub fn message(size: usize) -> Vec<u8> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut m = Vec::with_capacity(size + 256);
    m.extend_from_slice(HEADERS.as_bytes());
    let text_end = (size / 4).max(m.len() + 512).min(size);
    while m.len() < text_end {
        let width = 60 + rng.below(19);
        let start = m.len();
        if rng.below(40) == 0 {
            m.push(b'.');
        }
        while m.len() - start < width {
            m.extend_from_slice(words[rng.below(words.len())].as_bytes());
            m.push(b' ');
        }
        m.pop();
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(
        b"\r\n--000000000000a1b2c3\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n",
    );
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while m.len() < size {
        for _ in 0..76 {
            m.push(B64[rng.below(64)]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--000000000000a1b2c3--\r\n");
    m
}

/// A body of plain prose of about `size` octets, lines of 60 to 78 octets of
/// words with single spaces, as `sluice-loadgen` sends: the case where
/// relaxed DKIM canonicalisation has a word boundary every few octets to
/// look at and nothing to change.
pub fn prose(size: usize) -> Vec<u8> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut m = Vec::with_capacity(size + 80);
    while m.len() < size {
        let width = 60 + rng.below(19);
        let start = m.len();
        while m.len() - start < width {
            m.extend_from_slice(words[rng.below(words.len())].as_bytes());
            m.push(b' ');
        }
        m.pop();
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// `content` as it travels after DATA: dot-stuffed, with the end marker.
pub fn wire(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 8);
    let mut stuffer = DotStuffer::new();
    stuffer.encode(content, &mut out);
    stuffer.finish(&mut out);
    out
}

/// The command lines of a typical inbound session mix, without line
/// endings: EHLO, MAIL with parameters, several RCPTs, DATA, QUIT, RSET.
pub fn command_lines() -> Vec<&'static [u8]> {
    vec![
        b"EHLO mail-wr1-f41.example.net",
        b"MAIL FROM:<bob@example.net> SIZE=48213 BODY=8BITMIME",
        b"RCPT TO:<alice@example.org>",
        b"RCPT TO:<carol.smith+lists@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol.smith+2Blists@example.org",
        b"RCPT TO:<dave@sub.example.org>",
        b"DATA",
        b"MAIL FROM:<> SIZE=2048",
        b"RCPT TO:<postmaster@example.org>",
        b"RSET",
        b"HELO [192.0.2.7]",
        b"MAIL FROM:<newsletter-bounces=alice=example.org@lists.example.com> BODY=7BIT RET=HDRS ENVID=QQ314159",
        b"RCPT TO:<Alice@Example.ORG>",
        b"NOOP",
        b"QUIT",
    ]
}

/// A real-looking EHLO reply, on the wire.
pub const EHLO_REPLY: &[u8] = b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n\
250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
250-SMTPUTF8\r\n250 CHUNKING\r\n";
