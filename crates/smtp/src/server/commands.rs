//! Commands outside the content phases: what each may do in which state,
//! and the checks that need no policy (order, extensions, limits).

use std::borrow::Cow;

use super::{CODE_OK, Chunk, Event, Greeting, Notice, ServerConfig, ServerSession};
use crate::address::{Domain, ForwardPath, ReversePath};
use crate::command::{Command, Verb};
use crate::params::{BodyType, MailParams, RcptParams};
use crate::reply::{EnhancedCode, Reply};

impl<C: AsRef<ServerConfig>> ServerSession<C> {
    pub(super) fn command_line(&mut self, line: &[u8]) {
        // AUTH lines may be long (RFC 4954 §4; the line reader allows for
        // them when AUTH is offered); every other command keeps to the
        // command line limit.
        let auth = line.len() > 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
        if !auth && line.len() + 2 > self.config().max_line_length {
            return self.error(
                None,
                Reply::new(500, Some(EnhancedCode::new(5, 5, 2)), "Line too long"),
            );
        }
        let command = match Command::parse(line) {
            Ok(command) => command,
            // The octets of a BDAT chunk follow its command line; without a
            // size we cannot tell where they end, and reading them as
            // commands is how SMTP smuggling starts. Postfix closes too.
            Err(e) if e.verb() == Some(Verb::Bdat) => {
                let reply = e.reply();
                self.notices.push(Notice::Refused {
                    verb: e.verb(),
                    reply: reply.clone(),
                });
                let text = format!("{}; closing the connection", reply.text());
                self.close_with(Reply::new(reply.code(), reply.enhanced(), text));
                return;
            }
            Err(e) => {
                self.error(e.verb(), e.reply());
                return;
            }
        };
        let verb = command.verb();
        match command {
            Command::Helo(name) => self.raise(
                Event::Hello {
                    greeting: Greeting::Helo,
                    name,
                },
                None,
            ),
            Command::Ehlo(name) => self.raise(
                Event::Hello {
                    greeting: Greeting::Ehlo,
                    name,
                },
                None,
            ),
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, params),
            Command::Rcpt {
                forward_path,
                params,
            } => self.rcpt(forward_path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(Chunk { size, last }),
            Command::Rset => {
                self.reset_transaction();
                self.reply(Reply::new(250, Some(CODE_OK), "Ok"));
            }
            Command::Noop(_) => self.reply(Reply::new(250, Some(CODE_OK), "Ok")),
            Command::Quit => {
                let text = format!("{} closing connection", self.config().hostname);
                self.reply(Reply::new(221, Some(CODE_OK), text));
                self.enter_closed();
            }
            // RFC 5321 §3.5.3: 252 tells the client we neither confirm nor deny,
            // which gives away no list of valid users.
            Command::Vrfy(_) => self.reply(Reply::new(
                252,
                Some(EnhancedCode::new(2, 5, 0)),
                "Cannot verify the user, but will accept the message and attempt delivery",
            )),
            Command::Expn(_) => self.error(
                Some(verb),
                Reply::new(
                    502,
                    Some(EnhancedCode::new(5, 5, 1)),
                    "EXPN is not supported",
                ),
            ),
            Command::Help(_) => self.reply(Reply::multiline(
                214,
                Some(CODE_OK),
                [
                    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
                    "See RFC 5321 for their use",
                ],
            )),
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
        }
    }

    /// RFC 3207. Offered only outside TLS, and only after EHLO (the client
    /// must have seen it offered).
    fn starttls(&mut self) {
        if self.tls {
            return self.bad_sequence(Verb::StartTls, "TLS is already active");
        }
        if !self.config().extensions.starttls {
            return self.error(
                Some(Verb::StartTls),
                Reply::new(
                    502,
                    Some(EnhancedCode::new(5, 5, 1)),
                    "Command not implemented",
                ),
            );
        }
        if !matches!(self.greeting, Some((Greeting::Ehlo, _))) {
            return self.bad_sequence(Verb::StartTls, "Send EHLO first");
        }
        self.reply(Reply::new(220, Some(CODE_OK), "Ready to start TLS"));
        self.phase = super::Phase::StartingTls;
    }

    pub(super) fn mail(&mut self, reverse_path: ReversePath, params: MailParams) {
        if self.greeting.is_none() {
            return self.bad_sequence(Verb::Mail, "Send HELO or EHLO first");
        }
        if self.config().tls_required && !self.tls {
            return self.error(Some(Verb::Mail), must_starttls());
        }
        if self.config().auth_required && self.login.is_none() {
            return self.error(
                Some(Verb::Mail),
                Reply::new(
                    530,
                    Some(EnhancedCode::new(5, 7, 0)),
                    "Authentication required",
                ),
            );
        }
        if self.transaction.is_some() {
            return self.bad_sequence(Verb::Mail, "Nested MAIL command; send RSET first");
        }
        let ext = &self.config().extensions;
        let unsupported = |name: &'static str| {
            Reply::new(
                555,
                Some(EnhancedCode::new(5, 5, 4)),
                format!("Parameter {name} is not supported here"),
            )
        };
        let refusal = if params.smtputf8 && !ext.smtputf8 {
            Some(unsupported("SMTPUTF8"))
        } else if params.body == Some(BodyType::EightBitMime) && !ext.eight_bit_mime {
            Some(unsupported("BODY=8BITMIME"))
        } else if params.body == Some(BodyType::BinaryMime) && !ext.binary_mime {
            Some(unsupported("BODY=BINARYMIME"))
        } else if (params.ret.is_some() || params.envid.is_some()) && !ext.dsn {
            Some(unsupported("RET/ENVID"))
        } else if params.auth.is_some() && ext.auth.is_empty() {
            Some(unsupported("AUTH"))
        } else if params.requiretls && !(ext.requiretls && self.tls) {
            // RFC 8689 §4.1: advertised, and so accepted, only inside TLS.
            Some(unsupported("REQUIRETLS"))
        } else if params
            .size
            .is_some_and(|size| size > self.config().max_message_size)
        {
            Some(Reply::new(
                552,
                Some(EnhancedCode::new(5, 3, 4)),
                "Message size exceeds fixed maximum message size",
            ))
        } else if !params.smtputf8 && !reverse_path.is_ascii() {
            Some(non_ascii_refusal())
        } else {
            None
        };
        match refusal {
            Some(reply) => self.error(Some(Verb::Mail), reply),
            None => self.raise(
                Event::Mail {
                    reverse_path,
                    params,
                },
                None,
            ),
        }
    }

    pub(super) fn rcpt(&mut self, forward_path: ForwardPath, params: RcptParams) {
        let Some(tx) = &self.transaction else {
            return self.bad_sequence(Verb::Rcpt, "Need MAIL before RCPT");
        };
        let refusal = if tx.recipients.len() >= self.config().max_recipients {
            // Not an error of the client's: it sends the rest in another transaction.
            self.reply(Reply::new(
                452,
                Some(EnhancedCode::new(4, 5, 3)),
                "Too many recipients",
            ));
            return;
        } else if (params.notify.is_some() || params.orcpt.is_some())
            && !self.config().extensions.dsn
        {
            Some(Reply::new(
                555,
                Some(EnhancedCode::new(5, 5, 4)),
                "Parameters NOTIFY/ORCPT are not supported here",
            ))
        } else if !tx.params.smtputf8 && !forward_path.is_ascii() {
            Some(non_ascii_refusal())
        } else {
            None
        };
        match refusal {
            Some(reply) => self.error(Some(Verb::Rcpt), reply),
            None => self.raise(
                Event::Rcpt {
                    forward_path,
                    params,
                },
                None,
            ),
        }
    }

    pub(super) fn hello_reply(&self, greeting: Greeting, name: &Domain) -> Reply {
        let first = format!("{} Hello {}", self.config().hostname, name);
        match greeting {
            Greeting::Helo => Reply::new(250, None, first),
            Greeting::Ehlo => {
                let mut lines: Vec<Cow<'static, str>> = vec![first.into()];
                lines.extend(
                    self.config()
                        .extensions
                        .keywords(self.config().max_message_size, self.tls),
                );
                Reply::multiline(250, None, lines)
            }
        }
    }
}

/// RFC 3207 §4: "530 Must issue a STARTTLS command first", with RFC
/// 3463's code for "encryption needed" (X.7.0, as Postfix sends).
pub(super) fn must_starttls() -> Reply {
    Reply::new(
        530,
        Some(EnhancedCode::new(5, 7, 0)),
        "Must issue a STARTTLS command first",
    )
}

fn non_ascii_refusal() -> Reply {
    Reply::new(
        553,
        Some(EnhancedCode::new(5, 6, 7)),
        "Non-ASCII address requires the SMTPUTF8 parameter on MAIL",
    )
}
