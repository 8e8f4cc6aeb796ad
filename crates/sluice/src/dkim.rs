//! `sluice dkim keygen`: a new signing key, and the DNS record to publish.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use sluice_msgauth::Algorithm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8463): short keys, fast signatures; not every receiver
    /// verifies it yet, so sign with an RSA key beside it.
    Ed25519,
    /// RSA-2048: what every receiver verifies.
    Rsa,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The domain the key signs for (the `From:` domain).
    #[arg(long)]
    domain: String,
    /// The selector: the key's name under `_domainkey` (a date, say: s2026).
    #[arg(long)]
    selector: String,
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: KeyAlgorithm,
    /// Where to write the private key; default `<domain>.<selector>.key`
    /// here. An existing file is never overwritten.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Writes the key (mode 0600) and prints the record and the configuration.
pub fn keygen(args: KeygenArgs) -> Result<(), String> {
    let domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    if sluice_smtp::Domain::parse(&domain).is_none() || args.selector.is_empty() {
        return Err("--domain must be a domain and --selector a DNS label".into());
    }
    let algorithm = match args.algorithm {
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519Sha256,
        KeyAlgorithm::Rsa => Algorithm::RsaSha256,
    };
    let path = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{domain}.{}.key", args.selector)));
    let key = sluice_msgauth::generate(algorithm).map_err(|e| e.to_string())?;
    write_private(&path, key.private_pem.as_bytes())?;
    let shown = std::fs::canonicalize(&path).unwrap_or(path);
    println!("Wrote the private key to {} (mode 0600).", shown.display());
    println!();
    println!("Publish this TXT record:");
    println!();
    println!(
        "{}._domainkey.{domain}. IN TXT {}",
        args.selector,
        zone_strings(&key.dns_txt)
    );
    println!();
    println!("Then add to the configuration and restart:");
    println!();
    println!("[[dkim]]");
    println!("domain = \"{domain}\"");
    println!("selector = \"{}\"", args.selector);
    println!("key = \"{}\"", shown.display());
    println!("algorithm = \"{}\"", algorithm.as_str());
    Ok(())
}

fn write_private(path: &Path, pem: &[u8]) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(pem)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A TXT value as zone-file strings: quoted, at most 255 octets each
/// (RFC 1035 §3.3.14); verifiers join them.
fn zone_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_split_into_255_octet_strings() {
        let value = "p=".to_string() + &"A".repeat(400);
        let zone = zone_strings(&value);
        let parts: Vec<&str> = zone.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 257);
        assert_eq!(
            parts
                .iter()
                .map(|p| p.trim_matches('"'))
                .collect::<String>(),
            value
        );
        assert_eq!(zone_strings("v=DKIM1"), "\"v=DKIM1\"");
    }
}
