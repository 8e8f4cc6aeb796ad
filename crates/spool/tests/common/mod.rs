//! Helpers shared by the integration tests: deterministic envelopes and
//! bodies (so a test, or a crash test's parent process, can regenerate what
//! was submitted from a seed) and a look at the segment files.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use sluice_smtp::{
    BodyType, Envelope, ForwardPath, MailParams, Notify, RcptParams, Recipient, ReversePath,
};
use sluice_spool::{Entry, QueueId, SpoolConfig};

/// Pseudo-random bytes from a seed (xorshift64*), shaped like mail: printable
/// text in CRLF lines, with some 8-bit bytes.
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let b = match r % 80 {
            0 if out.len() + 2 <= len => {
                out.push(b'\r');
                b'\n'
            }
            1 => 0xC3,
            _ => b' ' + (r >> 8) as u8 % 95,
        };
        out.push(b);
    }
    out.truncate(len);
    out
}

/// Body length for message `seed`: from tiny to several KiB.
pub fn body_len(seed: u64) -> usize {
    [0usize, 1, 17, 300, 1500, 4096, 9000][(seed % 7) as usize] + (seed as usize % 13)
}

fn path(text: &str) -> sluice_smtp::Path {
    sluice_smtp::Path::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

/// A reason of our own with this reply code and text.
pub fn reason(code: u16, text: &str) -> sluice_spool::Reason {
    sluice_spool::Reason::local(sluice_smtp::Reply::new(code, None, text.to_owned()))
}

pub fn entry(id: QueueId, seed: u64) -> Entry {
    let n_rcpt = 1 + (seed % 4) as usize;
    Entry {
        id,
        arrival_unix_ms: 1_700_000_000_000 + seed,
        client_ip: if seed.is_multiple_of(3) {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, seed as u16))
        } else {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, seed as u8))
        },
        helo: format!("client{seed}.example.org"),
        envelope: Envelope {
            reverse_path: if seed.is_multiple_of(5) {
                ReversePath::Null
            } else {
                ReversePath::Path(path(&format!("<sender{seed}@example.org>")))
            },
            params: MailParams {
                body: [
                    None,
                    Some(BodyType::EightBitMime),
                    Some(BodyType::BinaryMime),
                ][(seed % 3) as usize],
                smtputf8: seed.is_multiple_of(4),
                ..MailParams::default()
            },
            recipients: (0..n_rcpt)
                .map(|i| Recipient {
                    forward_path: ForwardPath::Path(path(&format!("<rcpt{i}.{seed}@example.net>"))),
                    params: if i == 0 {
                        RcptParams {
                            notify: Some(Notify::On {
                                success: false,
                                failure: true,
                                delay: false,
                            }),
                            orcpt: None,
                        }
                    } else {
                        RcptParams::default()
                    },
                })
                .collect(),
        }
        .into(),
    }
}

pub fn small_segments(segment_size: u64) -> SpoolConfig {
    SpoolConfig {
        segment_size,
        ..SpoolConfig::default()
    }
}

/// The segment files of a spool directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

/// End offsets of the records of a segment file, read with the documented
/// format (40-byte segment header; record header with the payload length at
/// bytes 8..12 of its 20 bytes). Stops at the first byte that is not a record.
pub fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 40;
    while pos + 20 <= bytes.len() && &bytes[pos..pos + 4] == b"SLRC" {
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if pos + 20 + len > bytes.len() {
            break;
        }
        pos += 20 + len;
        ends.push(pos);
    }
    ends
}
