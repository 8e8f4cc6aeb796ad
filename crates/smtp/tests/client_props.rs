//! The SMTP client session against random and model servers: whatever a
//! server answers, every recipient ends with exactly one result.

mod client_support;

use client_support::*;
use proptest::prelude::*;

/// A reply a server might send, or something that is not one. Weighted
/// towards the replies a working server sends, so that runs get deep into
/// the session (body, second message) rather than failing at the greeting.
fn server_line() -> impl Strategy<Value = Vec<u8>> {
    let code = prop::sample::select(vec![
        200u16, 220, 221, 250, 251, 252, 334, 354, 421, 450, 451, 452, 500, 501, 502, 503, 550,
        552, 554,
    ]);
    let ehlo = prop::sample::select(vec![
        &b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"[..],
        b"250-mx\r\n250 SIZE 1000\r\n",
        b"250-mx\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 SIZE 1000\r\n",
        b"250-mx\r\n250-CHUNKING\r\n250 BINARYMIME\r\n",
        b"250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n",
        b"250-mx\r\n250 SIZE 10\r\n",
    ]);
    prop_oneof![
        12 => Just(b"250 2.0.0 Ok\r\n".to_vec()),
        3 => Just(b"354 Go ahead\r\n".to_vec()),
        3 => ehlo.prop_map(<[u8]>::to_vec),
        6 => (code, 0usize..3).prop_map(|(code, more)| {
            let mut r = Vec::new();
            for _ in 0..more {
                r.extend_from_slice(format!("{code}-4.0.0 more\r\n").as_bytes());
            }
            r.extend_from_slice(format!("{code} 4.0.0 text\r\n").as_bytes());
            r
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_server_gives_every_recipient_one_result(
        greet in prop::bool::weighted(0.9),
        lines in proptest::collection::vec(server_line(), 0..16),
        recipients in 1usize..5,
        binary in any::<bool>(),
        tls in prop_oneof![Just(TlsUse::Off), Just(TlsUse::IfOffered), Just(TlsUse::Required)],
        cut in any::<prop::sample::Index>(),
    ) {
        let rcpts: Vec<String> = (0..recipients).map(|i| format!("<r{i}@example.net>")).collect();
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let mut first = envelope(&rcpts);
        if binary {
            first.envelope_mut().params.body = Some(BodyType::BinaryMime);
        }
        let mut s = ClientSession::new(ClientConfig { tls, ..config() });
        s.send_message(first).unwrap();
        let mut stream: Vec<u8> = if greet { b"220 mx\r\n".to_vec() } else { Vec::new() };
        stream.extend(lines.concat());
        let at = cut.index(stream.len() + 1);
        let mut messages_sent = 1;
        let mut done = Vec::new();
        let mut closed = 0;
        let mut after_close = 0;
        let mut handle = |s: &mut ClientSession, done: &mut Vec<Vec<RecipientResult>>| {
            while let Some(event) = s.poll_event() {
                if closed > 0 {
                    after_close += 1;
                }
                match event {
                    ClientEvent::Ready if messages_sent < 2 => {
                        // Events queue up: the session may have closed
                        // since it said Ready, and then refuses.
                        match s.send_message(envelope(&rcpts)) {
                            Ok(()) => messages_sent += 1,
                            Err(e) => assert_eq!(e.kind, SendErrorKind::Closed),
                        }
                    }
                    ClientEvent::Ready => s.quit(),
                    ClientEvent::SendBody(_) => s.send_body(BODY).unwrap(),
                    // The handshake "succeeds"; the server's next lines
                    // stand for what it says inside TLS.
                    ClientEvent::StartTls => s.tls_established(),
                    ClientEvent::MessageDone(r) => done.push(r),
                    ClientEvent::Closed(_) => closed += 1,
                }
                let n = s.output().len();
                s.consume_output(n);
            }
        };
        s.receive(&stream[..at]);
        handle(&mut s, &mut done);
        s.receive(&stream[at..]);
        handle(&mut s, &mut done);
        if !s.is_closed() {
            s.timed_out();
        }
        handle(&mut s, &mut done);
        prop_assert!(s.is_closed());
        prop_assert_eq!(closed, 1);
        prop_assert_eq!(after_close, 0);
        prop_assert_eq!(done.len(), messages_sent, "one MessageDone per message");
        for results in &done {
            let indices: Vec<usize> = results.iter().map(|r| r.index).collect();
            prop_assert_eq!(indices, (0..recipients).collect::<Vec<_>>());
        }
    }
}

/// What the model server answered in one transaction.
#[derive(Debug, Default)]
struct ModelTxn {
    mail: u16,
    rcpts: Vec<u16>,
    data: Option<u16>,
    end: Option<u16>,
    /// The content as the server decoded it (unstuffed, or the BDAT octets).
    body: Vec<u8>,
}

#[derive(Debug)]
enum ModelMode {
    Commands,
    Data,
    Bdat(usize),
}

/// A server that answers every command as a real one could, each answer
/// picked by the test's random choices, and that remembers what it
/// answered so the client's results can be checked against it.
struct ModelServer {
    choices: Vec<u8>,
    next: usize,
    inbox: Vec<u8>,
    mode: ModelMode,
    closed: bool,
    /// Whether the last EHLO reply offered PIPELINING.
    pipelining: bool,
    txns: Vec<ModelTxn>,
}

impl ModelServer {
    fn pick(&mut self, options: &[u16]) -> u16 {
        // Past the end of the choices every answer is the first, positive one.
        let c = self.choices.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        options[usize::from(c) % options.len()]
    }

    fn accepted_any(&self) -> bool {
        self.txns
            .last()
            .is_some_and(|t| t.mail == 250 && t.rcpts.contains(&250))
    }

    fn end_of_data(&mut self, out: &mut Vec<u8>) {
        self.mode = ModelMode::Commands;
        let code = if self.accepted_any() {
            self.pick(&[250, 250, 452, 554, 421])
        } else {
            554
        };
        self.reply(code, out);
        if let Some(t) = self.txns.last_mut() {
            t.end = Some(code);
        }
    }

    fn reply(&mut self, code: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{code} model\r\n").as_bytes());
        self.closed |= code == 421 || code == 221;
    }

    /// Reads what the client sent; returns the replies.
    fn exchange(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.inbox.extend_from_slice(input);
        while !self.closed {
            if let ModelMode::Bdat(remaining) = self.mode {
                let n = remaining.min(self.inbox.len());
                let chunk: Vec<u8> = self.inbox.drain(..n).collect();
                self.txns.last_mut().unwrap().body.extend(chunk);
                self.mode = ModelMode::Bdat(remaining - n);
                if remaining - n > 0 {
                    break;
                }
                self.end_of_data(&mut out);
                continue;
            }
            let Some(end) = self.inbox.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let line: Vec<u8> = self.inbox.drain(..end + 2).take(end).collect();
            if let ModelMode::Data = self.mode {
                if line == b"." {
                    self.end_of_data(&mut out);
                } else {
                    let body = &mut self.txns.last_mut().unwrap().body;
                    body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                    body.extend_from_slice(b"\r\n");
                }
                continue;
            }
            let line = String::from_utf8(line).unwrap();
            let verb = line.split(' ').next().unwrap_or("").to_owned();
            match verb.as_str() {
                "EHLO" => {
                    let variants: [&[u8]; 5] = [
                        b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                        b"250-mx\r\n250 SIZE 1000\r\n",
                        b"250-mx\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n",
                        b"250-mx\r\n250-CHUNKING\r\n250 BINARYMIME\r\n",
                        b"502 5.5.2 EHLO? never heard of it\r\n",
                    ];
                    let i = self.pick(&[0, 1, 2, 3, 4]);
                    self.pipelining = matches!(i, 0 | 2);
                    out.extend_from_slice(variants[usize::from(i)]);
                }
                "HELO" | "RSET" => self.reply(250, &mut out),
                "QUIT" => self.reply(221, &mut out),
                "MAIL" => {
                    let code = self.pick(&[250, 250, 250, 451, 550, 421]);
                    self.txns.push(ModelTxn {
                        mail: code,
                        ..ModelTxn::default()
                    });
                    self.reply(code, &mut out);
                }
                "RCPT" => {
                    let code = if self.txns.last().unwrap().mail == 250 {
                        self.pick(&[250, 250, 250, 450, 550, 421])
                    } else {
                        503
                    };
                    self.txns.last_mut().unwrap().rcpts.push(code);
                    self.reply(code, &mut out);
                }
                "DATA" => {
                    let code = if self.accepted_any() {
                        self.pick(&[354, 354, 354, 451, 554, 421])
                    } else {
                        // Mostly refused, but RFC 2920 §3.1 allows a 354.
                        self.pick(&[554, 503, 354])
                    };
                    self.txns.last_mut().unwrap().data = Some(code);
                    self.reply(code, &mut out);
                    if code == 354 {
                        self.mode = ModelMode::Data;
                    }
                }
                "BDAT" => {
                    let size: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
                    assert!(line.ends_with(" LAST"), "{line}");
                    // Only a small body sent with its envelope may come
                    // before a recipient is accepted (the chunk is read and
                    // refused, see end_of_data).
                    assert!(
                        self.accepted_any() || self.pipelining,
                        "BDAT with nobody accepted, from a lock-step client"
                    );
                    self.mode = ModelMode::Bdat(size);
                }
                _ => self.reply(500, &mut out),
            }
        }
        out
    }
}

/// The class of result the model's answers call for: 2 delivered,
/// 4 transient, 5 permanent.
fn expected_class(t: &ModelTxn, i: usize) -> u16 {
    if t.mail / 100 != 2 {
        return t.mail / 100;
    }
    match t.rcpts.get(i) {
        // Never asked: the connection ended first.
        None => return 4,
        Some(&c) if c / 100 != 2 => return c / 100,
        Some(_) => {}
    }
    match (t.data, t.end) {
        (Some(d), _) if d != 354 => d / 100,
        (_, Some(end)) => end / 100,
        (_, None) => 4,
    }
}

fn result_class(r: &RecipientResult) -> u16 {
    match r.outcome {
        Outcome::Delivered(_) => 2,
        Outcome::Transient(_) => 4,
        Outcome::Permanent(_) => 5,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn results_match_what_the_server_answered(
        choices in proptest::collection::vec(any::<u8>(), 0..40),
        recipients in 1usize..5,
        binary in any::<bool>(),
        bdat_when_offered in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut cfg = config();
        if bdat_when_offered {
            cfg.bdat = BdatPolicy::WhenOffered;
        }
        let rcpts: Vec<String> = (0..recipients).map(|i| format!("<r{i}@example.net>")).collect();
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let mut env = envelope(&rcpts);
        if binary {
            env.envelope_mut().params.body = Some(BodyType::BinaryMime);
        }
        let mut s = ClientSession::new(cfg);
        let mut server = ModelServer {
            choices,
            next: 0,
            inbox: Vec::new(),
            mode: ModelMode::Commands,
            closed: false,
            pipelining: false,
            txns: Vec::new(),
        };
        // Per message sent: whether it must be refused before any command.
        let mut refused_locally = Vec::new();
        let mut done = Vec::new();
        let mut to_client = b"220 mx\r\n".to_vec();
        for _ in 0..100 {
            let at = cut.index(to_client.len() + 1);
            s.receive(&to_client[..at]);
            s.receive(&to_client[at..]);
            while let Some(event) = s.poll_event() {
                match event {
                    ClientEvent::Ready if refused_locally.len() < 2 => {
                        refused_locally.push(binary && !s.capabilities().can_send_binary());
                        s.send_message(env.clone()).unwrap();
                    }
                    ClientEvent::Ready => s.quit(),
                    ClientEvent::SendBody(_) => s.send_body(BODY).unwrap(),
                    ClientEvent::StartTls => unreachable!("TLS is off here"),
                    ClientEvent::MessageDone(r) => done.push(r),
                    ClientEvent::Closed(_) => {}
                }
            }
            let out = s.output().to_vec();
            s.consume_output(out.len());
            to_client = server.exchange(&out);
            if s.is_closed() {
                break;
            }
            if to_client.is_empty() {
                // A server that closed is a lost connection; one that is
                // waiting while the client waits too is a hang.
                prop_assert!(server.closed, "stalled: {:?}", s.timeout_class());
                s.connection_lost();
            }
        }
        prop_assert!(s.is_closed());
        prop_assert_eq!(done.len(), refused_locally.len());
        let mut txns = server.txns.iter();
        for (results, local) in done.iter().zip(refused_locally) {
            prop_assert_eq!(results.len(), recipients);
            if local {
                prop_assert!(results.iter().all(|r| r.origin == ReplyOrigin::Local && result_class(r) == 5));
                continue;
            }
            let t = txns.next().expect("a transaction per message sent");
            for (i, r) in results.iter().enumerate() {
                prop_assert_eq!(r.index, i);
                prop_assert_eq!(result_class(r), expected_class(t, i), "recipient {} of {:?}", i, t);
            }
            if t.end.is_some() && t.rcpts.contains(&250) && t.mail == 250 {
                prop_assert_eq!(&t.body[..], BODY, "the body arrives intact");
            }
        }
    }
}
