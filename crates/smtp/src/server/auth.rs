//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms:
//! the challenges and responses, up to the credentials, which the front
//! end checks ([`Event::Auth`]).
//!
//! Offered and accepted only inside TLS: both mechanisms send the password
//! as it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Event, Phase, ServerConfig, ServerSession};
use crate::command::Verb;
use crate::reply::{EnhancedCode, Reply};

/// RFC 4954 §4: an AUTH command or a response line may be this long.
pub(super) const MAX_AUTH_LINE: usize = 12_288;

/// A SASL mechanism this session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            _ => None,
        }
    }
}

/// A password as the client sent it: kept out of `Debug` output, so that
/// no log line or panic message shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Password {
        Password(password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Where an AUTH exchange stands: which response the session waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AuthStep {
    /// PLAIN without an initial response: `authzid NUL authcid NUL passwd`.
    Plain,
    /// LOGIN: the user name.
    LoginUser,
    /// LOGIN: the password for `user`.
    LoginPassword { user: String },
}

fn code(c: u8, s: u16, d: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(c, s, d))
}

impl<C: AsRef<ServerConfig>> ServerSession<C> {
    /// `AUTH mechanism [initial-response]`.
    pub(super) fn auth(&mut self, mechanism: String, initial: Option<String>) {
        let config = self.config();
        if config.extensions.auth.is_empty() {
            return self.error(
                Some(Verb::Auth),
                Reply::new(502, code(5, 5, 1), "Command not implemented"),
            );
        }
        if !self.tls {
            return self.error(
                Some(Verb::Auth),
                Reply::new(
                    538,
                    code(5, 7, 11),
                    "Encryption required for requested authentication mechanism",
                ),
            );
        }
        if self.greeting.is_none() {
            return self.bad_sequence(Verb::Auth, "Send EHLO first");
        }
        if self.login.is_some() {
            return self.bad_sequence(Verb::Auth, "Already authenticated");
        }
        if self.transaction.is_some() {
            return self.bad_sequence(Verb::Auth, "AUTH is not allowed during a mail transaction");
        }
        let offered = config.extensions.auth.contains(&mechanism);
        let Some(mech) = Mechanism::from_name(&mechanism).filter(|_| offered) else {
            return self.error(
                Some(Verb::Auth),
                Reply::new(504, code(5, 5, 4), "Unrecognized authentication type"),
            );
        };
        match (mech, initial) {
            (Mechanism::Plain, None) => self.challenge(AuthStep::Plain, ""),
            (Mechanism::Plain, Some(response)) => self.auth_response(AuthStep::Plain, &response),
            (Mechanism::Login, None) => self.challenge(AuthStep::LoginUser, "Username:"),
            // RFC 4954 allows an initial response for any mechanism: for
            // LOGIN it is the user name.
            (Mechanism::Login, Some(response)) => {
                self.auth_response(AuthStep::LoginUser, &response)
            }
        }
    }

    /// `334` with `text` in base64, then wait for the response.
    fn challenge(&mut self, step: AuthStep, text: &str) {
        let line = STANDARD.encode(text);
        self.reply(Reply::new(334, None, line));
        self.phase = Phase::Auth(step);
    }

    /// One response line (or the initial response) of the exchange.
    pub(super) fn auth_response(&mut self, step: AuthStep, line: &str) {
        self.phase = Phase::Command;
        if line == "*" {
            return self.error(
                Some(Verb::Auth),
                Reply::new(501, code(5, 0, 0), "Authentication canceled"),
            );
        }
        // "=" is an empty initial response (RFC 4954 §4).
        let decoded = if line == "=" {
            Ok(Vec::new())
        } else {
            STANDARD.decode(line.trim_end())
        };
        let Ok(decoded) = decoded else {
            return self.error(
                Some(Verb::Auth),
                Reply::new(
                    501,
                    code(5, 5, 2),
                    "Invalid base64 in the authentication response",
                ),
            );
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return self.error(
                Some(Verb::Auth),
                Reply::new(501, code(5, 5, 2), "Credentials must be UTF-8"),
            );
        };
        match step {
            AuthStep::Plain => self.plain(&text),
            AuthStep::LoginUser => {
                self.challenge(AuthStep::LoginPassword { user: text }, "Password:")
            }
            AuthStep::LoginPassword { user } => self.credentials(Mechanism::Login, user, text),
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`. Acting for someone else
    /// (an authzid other than the login) is not offered.
    fn plain(&mut self, text: &str) {
        let mut parts = text.splitn(3, '\0');
        let (Some(authzid), Some(login), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return self.error(
                Some(Verb::Auth),
                Reply::new(501, code(5, 5, 2), "Malformed PLAIN response"),
            );
        };
        if !authzid.is_empty() && authzid != login {
            return self.error(
                Some(Verb::Auth),
                Reply::new(
                    535,
                    code(5, 7, 8),
                    "Authentication credentials invalid: logging in as someone else is not allowed",
                ),
            );
        }
        self.credentials(Mechanism::Plain, login.to_owned(), password.to_owned());
    }

    fn credentials(&mut self, mechanism: Mechanism, login: String, password: String) {
        if login.is_empty() || login.chars().any(char::is_control) {
            return self.error(
                Some(Verb::Auth),
                Reply::new(535, code(5, 7, 8), "Authentication credentials invalid"),
            );
        }
        self.raise(
            Event::Auth {
                mechanism,
                login,
                password: Password(password),
            },
            None,
        );
    }
}
