//! Opening the session: after the greeting's EHLO (or HELO), STARTTLS when
//! the policy wants it, then AUTH when we have credentials.

use crate::command::Command;
use crate::reply::Reply;

use super::super::{ClientSession, CloseReason, ReplyOrigin, TlsUse, capabilities};
use super::{LoginStep, State, local_reply};

impl ClientSession {
    /// After EHLO (or HELO) in clear: STARTTLS when the policy wants TLS and
    /// the server offers it; the end of the session when TLS is required and
    /// not offered. `None`: go on in clear, or already inside TLS.
    pub(super) fn maybe_starttls(&mut self) -> Option<State> {
        if self.tls || self.config.tls == TlsUse::Off {
            return None;
        }
        if self.capabilities.starttls {
            self.write(&Command::StartTls);
            return Some(State::StartTls);
        }
        if self.config.tls == TlsUse::Required {
            let reply = local_reply(
                451,
                (4, 7, 4),
                "TLS is required, but the server does not offer STARTTLS",
            );
            let state = State::Ready;
            return Some(self.fail(
                state,
                CloseReason::TlsUnavailable(None),
                reply,
                ReplyOrigin::Local,
            ));
        }
        None
    }

    pub(super) fn hello_done(&mut self, reply: &Reply) -> State {
        if let Some(name) = capabilities::announced_name(reply) {
            self.remote_name = Some(name);
        }
        if let Some(next) = self.maybe_auth() {
            return next;
        }
        self.idle()
    }

    /// After EHLO: log in when we have credentials and the server offers a
    /// mechanism we speak. Never the password in clear unless allowed.
    pub(super) fn maybe_auth(&mut self) -> Option<State> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let creds = self.config.credentials.clone()?;
        if self.authenticated {
            return None;
        }
        let offered = |m: &str| self.capabilities.auth.iter().any(|a| a == m);
        let (plain, login) = (offered("PLAIN"), offered("LOGIN"));
        // Told to log in, and no TLS to do it in: whether or not AUTH is
        // offered in clear, the message waits (a relay that wants a login
        // would refuse it for good otherwise).
        if !self.tls && !creds.in_clear {
            let reply = local_reply(
                451,
                (4, 7, 0),
                "Credentials are not sent in clear: the server offers no TLS",
            );
            return Some(self.fail(
                State::Ready,
                CloseReason::AuthFailed(None),
                reply,
                ReplyOrigin::Local,
            ));
        }
        if !plain && !login {
            // Nothing to log in with: the server decides what we may send.
            return None;
        }
        if plain {
            let response = b64.encode(format!("\0{}\0{}", creds.login, creds.password));
            self.output
                .extend_from_slice(format!("AUTH PLAIN {response}\r\n").as_bytes());
            Some(State::Auth(None))
        } else {
            self.output.extend_from_slice(b"AUTH LOGIN\r\n");
            Some(State::Auth(Some(LoginStep::User)))
        }
    }

    pub(super) fn on_auth_reply(&mut self, step: Option<LoginStep>, reply: Reply) -> State {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let creds = self
            .config
            .credentials
            .clone()
            .unwrap_or(super::super::Credentials {
                login: String::new(),
                password: String::new(),
                in_clear: false,
            });
        match (step, reply.code()) {
            (_, 235) => {
                self.authenticated = true;
                self.idle()
            }
            (Some(LoginStep::User), 334) => {
                self.output
                    .extend_from_slice(format!("{}\r\n", b64.encode(&creds.login)).as_bytes());
                State::Auth(Some(LoginStep::Password))
            }
            (Some(LoginStep::Password), 334) => {
                self.output
                    .extend_from_slice(format!("{}\r\n", b64.encode(&creds.password)).as_bytes());
                State::Auth(None)
            }
            // A refused login is our configuration's fault, not the
            // message's: every recipient waits for it to be fixed.
            (_, code) if code / 100 == 4 || code / 100 == 5 => {
                let local = local_reply(
                    451,
                    (4, 7, 0),
                    format!(
                        "Login to the next hop refused: {}",
                        reply.to_string().trim_end()
                    ),
                );
                self.fail(
                    State::Auth(step),
                    CloseReason::AuthFailed(Some(reply)),
                    local,
                    ReplyOrigin::Local,
                )
            }
            _ => self.unexpected(State::Auth(step), &reply),
        }
    }
}
