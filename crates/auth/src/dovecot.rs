//! Dovecot's authentication service, over its auth-client socket: what
//! Postfix speaks with `smtpd_sasl_type = dovecot` (the protocol as
//! Postfix's `xsasl_dovecot_server.c` and Dovecot's documentation describe
//! it: tab-separated lines). One connection per login: Dovecot's own
//! failure delay and penalties then apply as they do for Postfix.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{AuthError, Authenticator, Verified};

/// How long one login may take in all: Dovecot delays failures itself
/// (2 s by default).
const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct DovecotSasl {
    socket: PathBuf,
    next_id: AtomicU64,
}

impl DovecotSasl {
    /// `socket`: Dovecot's auth-client listener (`/var/spool/postfix/private/auth`
    /// in the usual Postfix setup, or `/run/dovecot/auth-client`).
    pub fn new(socket: PathBuf) -> DovecotSasl {
        DovecotSasl {
            socket,
            next_id: AtomicU64::new(1),
        }
    }

    fn login(&self, login: &str, password: &str, client: IpAddr) -> Result<Verified, AuthError> {
        let unavailable = |why: String| AuthError::Unavailable(format!("dovecot: {why}"));
        let stream = sluice_sys::unix_socket::connect(&self.socket)
            .map_err(|e| unavailable(format!("{}: {e}", self.socket.display())))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| unavailable(e.to_string()))?;
        let mut writer = stream.try_clone().map_err(|e| unavailable(e.to_string()))?;
        let mut reader = BufReader::new(stream);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        writer
            .write_all(format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id()).as_bytes())
            .map_err(|e| unavailable(e.to_string()))?;
        // The server's handshake: VERSION, MECH lines, SPID, CUID, COOKIE, DONE.
        let mut plain = false;
        let mut line = String::new();
        loop {
            line.clear();
            if reader
                .read_line(&mut line)
                .map_err(|e| unavailable(e.to_string()))?
                == 0
            {
                return Err(unavailable("closed during the handshake".into()));
            }
            let mut fields = line.trim_end_matches('\n').split('\t');
            match fields.next() {
                Some("VERSION") if fields.next() != Some("1") => {
                    return Err(unavailable(format!("unknown protocol {}", line.trim_end())));
                }
                Some("MECH") if fields.next() == Some("PLAIN") => plain = true,
                Some("DONE") => break,
                _ => {}
            }
        }
        if !plain {
            return Err(unavailable("PLAIN is not offered".into()));
        }
        let response = STANDARD.encode(format!("\0{login}\0{password}"));
        let request = format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\tnologin\tsecured\trip={client}\tresp={response}\n"
        );
        writer
            .write_all(request.as_bytes())
            .map_err(|e| unavailable(e.to_string()))?;
        loop {
            line.clear();
            if reader
                .read_line(&mut line)
                .map_err(|e| unavailable(e.to_string()))?
                == 0
            {
                return Err(unavailable("closed before answering".into()));
            }
            let mut fields = line.trim_end_matches('\n').split('\t');
            let (verb, their_id) = (fields.next(), fields.next());
            if their_id != Some(&id.to_string()) {
                continue;
            }
            let args: Vec<&str> = fields.collect();
            match verb {
                Some("OK") => {
                    let user = args
                        .iter()
                        .find_map(|a| a.strip_prefix("user="))
                        .unwrap_or(login);
                    return Ok(Verified {
                        user: user.to_owned(),
                    });
                }
                Some("FAIL") if args.contains(&"temp") => {
                    let reason = args
                        .iter()
                        .find_map(|a| a.strip_prefix("reason="))
                        .unwrap_or("temporary failure");
                    return Err(unavailable(reason.to_owned()));
                }
                Some("FAIL") => return Err(AuthError::BadCredentials),
                // PLAIN with an initial response needs no continuation.
                Some("CONT") => return Err(unavailable("asked for more than PLAIN gives".into())),
                _ => {}
            }
        }
    }
}

impl Authenticator for DovecotSasl {
    fn authenticate(
        &self,
        login: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Verified, AuthError> {
        if login.contains(['\t', '\n', '\0']) || password.contains(['\n', '\0']) {
            return Err(AuthError::BadCredentials);
        }
        self.login(login, password, client)
    }
}
