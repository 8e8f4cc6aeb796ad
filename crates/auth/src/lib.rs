//! Who may log in with SMTP AUTH, and how often they may fail.
//!
//! - [`Authenticator`]: checks a login and password, blocking (a hash
//!   takes tens of milliseconds by design, a backend a round trip): the
//!   front end calls it on worker threads, never on an event loop.
//! - [`PasswdFile`]: Dovecot-style `name:hash` file, hashes argon2id,
//!   bcrypt and SHA-crypt ([`hash`]), read again when it changes.
//! - [`DovecotSasl`]: Dovecot's auth-client protocol over its socket, as
//!   Postfix's `smtpd_sasl_type = dovecot` speaks it.
//! - [`Guard`]: failed logins counted per address and per login in the
//!   shared key-value store.

mod dovecot;
mod guard;
pub mod hash;
pub mod passwd;

pub use dovecot::DovecotSasl;
pub use guard::Guard;
pub use passwd::PasswdFile;

/// A login that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user as the backend names it (may differ in case from what the
    /// client typed, with Dovecot).
    pub user: String,
}

/// Why a login did not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user or wrong password (`535 5.7.8`): which of the two is
    /// never said.
    BadCredentials,
    /// The backend cannot answer now (`454 4.7.0`): a file that cannot be
    /// read, Dovecot down.
    Unavailable(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::BadCredentials => f.write_str("bad credentials"),
            AuthError::Unavailable(why) => write!(f, "authentication unavailable: {why}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Checks logins. Blocking; `Send + Sync` for worker threads.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// `client`: the address the login comes from (Dovecot applies its
    /// own penalties by it).
    fn authenticate(
        &self,
        login: &str,
        password: &str,
        client: std::net::IpAddr,
    ) -> Result<Verified, AuthError>;
}
