//! A password file in Dovecot's passwd-file style: `name:hash`, one user a
//! line, anything after a second colon ignored (uid, gid, home... as
//! Dovecot keeps them), `#` comments and blank lines skipped. Read again
//! when it changes on disk, so editing it needs no restart.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::{AuthError, Authenticator, Verified, hash};

#[derive(Debug)]
pub struct PasswdFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// What the file was when read: a change to any of these reloads it.
    stamp: Option<(u64, u64, Option<SystemTime>)>,
    users: HashMap<String, String>,
}

impl PasswdFile {
    /// Reads `path` now, so that a missing or unreadable file is an error
    /// at start rather than at the first login.
    pub fn open(path: &Path) -> Result<PasswdFile, String> {
        let file = PasswdFile {
            path: path.to_owned(),
            loaded: Mutex::default(),
        };
        file.current()?;
        Ok(file)
    }

    /// The users and hashes, read again if the file changed.
    fn current(&self) -> Result<HashMap<String, String>, String> {
        let meta =
            std::fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let stamp = (meta.ino(), meta.len(), meta.modified().ok());
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.stamp != Some(stamp) {
            let text = std::fs::read_to_string(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            loaded.users = parse(&text);
            loaded.stamp = Some(stamp);
            tracing::info!(file = %self.path.display(), users = loaded.users.len(), "passwd file read");
        }
        Ok(loaded.users.clone())
    }
}

fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.splitn(3, ':');
            let name = fields.next()?.trim();
            let hash = fields.next()?.trim();
            (!name.is_empty() && !hash.is_empty()).then(|| (name.to_owned(), hash.to_owned()))
        })
        .collect()
}

impl Authenticator for PasswdFile {
    fn authenticate(
        &self,
        login: &str,
        password: &str,
        _client: std::net::IpAddr,
    ) -> Result<Verified, AuthError> {
        let users = self.current().map_err(AuthError::Unavailable)?;
        // A missing user costs a hash too, so that timing does not tell
        // who exists.
        let (stored, known) = match users.get(login) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY, false),
        };
        match hash::verify(password, stored) {
            Ok(true) if known => Ok(Verified {
                user: login.to_owned(),
            }),
            Ok(_) => Err(AuthError::BadCredentials),
            Err(e) => {
                tracing::warn!(login, error = %e, file = %self.path.display(), "unusable password hash");
                Err(AuthError::BadCredentials)
            }
        }
    }
}

/// A valid argon2id hash of a random password, checked for unknown users.
const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$6lJ7ie8NgGFUcrjHmcK7fwZP2Jpv25EOVtGNqBjUnzc";

/// Adds `name` with `hash`, or changes its hash, keeping every other line
/// as it is; written beside and renamed over, so that a reader never sees
/// half a file. The file is created (mode 0640) when missing.
pub fn set_user(path: &Path, name: &str, hash: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if name.is_empty() || name.contains([':', '\n', '\r']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a user name may not be empty or hold ':' or a line break",
        ));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut found = false;
    let mut out = String::with_capacity(old.len() + 128);
    for line in old.lines() {
        let is_user = line.split(':').next().map(str::trim) == Some(name);
        if is_user && !found {
            found = true;
            // Keep Dovecot's extra fields, if any.
            let rest = line.splitn(3, ':').nth(2);
            out.push_str(&format!("{name}:{hash}"));
            if let Some(rest) = rest {
                out.push(':');
                out.push_str(rest);
            }
        } else if !is_user {
            out.push_str(line);
        } else {
            continue;
        }
        out.push('\n');
    }
    if !found {
        out.push_str(&format!("{name}:{hash}\n"));
    }
    let mode = std::fs::metadata(path).map_or(0o640, |m| m.mode() & 0o7777);
    let tmp = path.with_extension("sluice-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(out.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_stand_in_hash_for_unknown_users_is_a_real_one() {
        // Else an unknown user would be answered faster than a known one.
        assert_eq!(hash::verify("anything", DUMMY), Ok(false));
    }

    #[test]
    fn lines_comments_and_extra_fields() {
        let users =
            parse("# users\nalice:$2y$x:1000:1000::/home/alice\n\n bob : $6$y \nbroken\n:nohash\n");
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], "$2y$x");
        assert_eq!(users["bob"], "$6$y");
    }

    #[test]
    fn logins_check_the_hash_and_the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        set_user(&path, "alice", &hash::hash("first")).unwrap();
        let file = PasswdFile::open(&path).unwrap();
        assert_eq!(
            file.authenticate("alice", "first", IP).map(|v| v.user),
            Ok("alice".into())
        );
        assert_eq!(
            file.authenticate("alice", "wrong", IP),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            file.authenticate("nobody", "first", IP),
            Err(AuthError::BadCredentials)
        );
        set_user(&path, "alice", &hash::hash("second")).unwrap();
        set_user(&path, "bob", &hash::hash("bobs")).unwrap();
        assert_eq!(
            file.authenticate("alice", "first", IP),
            Err(AuthError::BadCredentials)
        );
        assert!(file.authenticate("alice", "second", IP).is_ok());
        assert!(file.authenticate("bob", "bobs", IP).is_ok());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            file.authenticate("alice", "second", IP),
            Err(AuthError::Unavailable(_))
        ));
    }

    #[test]
    fn extra_fields_survive_a_password_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# keep me\nalice:old:1000:1000::/home/alice\n").unwrap();
        set_user(&path, "alice", "$argon2id$new").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# keep me\nalice:$argon2id$new:1000:1000::/home/alice\n"
        );
        assert!(set_user(&path, "a:b", "x").is_err());
    }
}
