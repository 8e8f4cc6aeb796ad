//! Password hashes as Dovecot's passwd-file and Postfix sites keep them:
//! PHC strings (`$argon2id$…`) and crypt strings (`$2b$`/`$2y$` bcrypt,
//! `$6$`/`$5$` SHA-crypt). New hashes are argon2id with the crate's
//! defaults (OWASP's minimum: 19 MiB, 2 passes).

use argon2::Argon2;
use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Why a stored hash could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// Not a scheme this server knows (`$1$` MD5-crypt, `{PLAIN}`...).
    Unsupported(String),
    /// The right prefix, but the string does not parse.
    Malformed(String),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::Unsupported(scheme) => write!(f, "unsupported hash scheme {scheme}"),
            HashError::Malformed(why) => write!(f, "malformed hash: {why}"),
        }
    }
}

impl std::error::Error for HashError {}

/// The scheme's name as the hash starts (`$argon2id$`), for messages.
fn scheme(hash: &str) -> String {
    hash.split('$')
        .nth(1)
        .map_or_else(|| hash.chars().take(10).collect(), |s| format!("${s}$"))
}

/// Dovecot's scheme prefixes this module knows, and the crypt(3) form
/// each one names.
const DOVECOT_SCHEMES: &[(&str, &[&str])] = &[
    ("{ARGON2ID}", &["$argon2id$"]),
    ("{ARGON2I}", &["$argon2i$"]),
    ("{BLF-CRYPT}", &["$2b$", "$2y$", "$2a$"]),
    ("{SHA512-CRYPT}", &["$6$"]),
    ("{SHA256-CRYPT}", &["$5$"]),
];

/// Whether `password` is the one `hash` was made from. Slow by design.
/// The hash may carry Dovecot's `{SCHEME}` prefix (`{SHA512-CRYPT}$6$…`),
/// as in its passwd-files; it must then agree with the hash.
pub fn verify(password: &str, hash: &str) -> Result<bool, HashError> {
    let hash = match hash.strip_prefix('{') {
        None => hash,
        Some(_) => {
            let known = DOVECOT_SCHEMES.iter().find_map(|(prefix, forms)| {
                let rest = hash
                    .get(..prefix.len())
                    .filter(|p| p.eq_ignore_ascii_case(prefix))
                    .map(|_| &hash[prefix.len()..])?;
                forms.iter().any(|f| rest.starts_with(f)).then_some(rest)
            });
            match known {
                Some(rest) => rest,
                None => {
                    let scheme = hash.split_inclusive('}').next().unwrap_or(hash);
                    return Err(HashError::Unsupported(scheme.to_string()));
                }
            }
        }
    };
    if hash.starts_with("$argon2") {
        let parsed = PasswordHash::new(hash).map_err(|e| HashError::Malformed(e.to_string()))?;
        return Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok());
    }
    if hash.starts_with("$2b$") || hash.starts_with("$2y$") || hash.starts_with("$2a$") {
        return bcrypt::verify(password, hash).map_err(|e| HashError::Malformed(e.to_string()));
    }
    if hash.starts_with("$6$") {
        return Ok(sha_crypt::sha512_check(password, hash).is_ok());
    }
    if hash.starts_with("$5$") {
        return Ok(sha_crypt::sha256_check(password, hash).is_ok());
    }
    Err(HashError::Unsupported(scheme(hash)))
}

/// A new argon2id hash of `password`, with a random salt.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with its default parameters cannot fail")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_verifies_its_password_and_no_other() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        let sha512 =
            sha_crypt::sha512_simple("s3cret", &sha_crypt::Sha512Params::new(5000).unwrap())
                .unwrap();
        let sha256 =
            sha_crypt::sha256_simple("s3cret", &sha_crypt::Sha256Params::new(5000).unwrap())
                .unwrap();
        let argon = hash("s3cret");
        assert!(argon.starts_with("$argon2id$"), "{argon}");
        for h in [&argon, &bcrypt, &sha512, &sha256] {
            assert_eq!(verify("s3cret", h), Ok(true), "{h}");
            assert_eq!(verify("S3cret", h), Ok(false), "{h}");
        }
        // What `openssl passwd -6 -salt abcdefgh s3cret` prints.
        let from_openssl = "$6$abcdefgh$Z7KfoKnKTSZrzo5VZ0YubGLQOj9ov6sHo9TmE3zIU/LHKhpE30zCnZ0mcIXYf9r9rQ4DYaXoxAFSPFlcWdxjB.";
        assert_eq!(verify("s3cret", from_openssl), Ok(true));
        // Dovecot's passwd-file form, with the scheme in front.
        for (prefix, h) in [
            ("{ARGON2ID}", &argon),
            ("{BLF-CRYPT}", &bcrypt),
            ("{SHA512-CRYPT}", &sha512),
            ("{sha256-crypt}", &sha256),
        ] {
            assert_eq!(
                verify("s3cret", &format!("{prefix}{h}")),
                Ok(true),
                "{prefix}"
            );
            assert_eq!(
                verify("nope", &format!("{prefix}{h}")),
                Ok(false),
                "{prefix}"
            );
        }
        assert_eq!(
            verify("s3cret", &format!("{{BLF-CRYPT}}{sha512}")),
            Err(HashError::Unsupported("{BLF-CRYPT}".into())),
            "a prefix that disagrees with the hash is not trusted"
        );
        assert_eq!(
            verify("s3cret", "{PLAIN}s3cret"),
            Err(HashError::Unsupported("{PLAIN}".into())),
            "plain-text passwords are not accepted"
        );
    }

    #[test]
    fn unknown_and_broken_hashes_say_so() {
        assert_eq!(
            verify("x", "$1$abc$def"),
            Err(HashError::Unsupported("$1$".into()))
        );
        assert!(matches!(
            verify("x", "$argon2id$v=19$m=lots,t=2,p=1$c2FsdA$aGFzaA"),
            Err(HashError::Malformed(_))
        ));
        assert!(matches!(
            verify("x", "plaintext"),
            Err(HashError::Unsupported(_))
        ));
    }
}
