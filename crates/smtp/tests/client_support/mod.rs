//! What the client tests share: scripted server replies and helpers to
//! drive a session and collect what it sent.
// Each test binary that includes this module uses only part of it.
#![allow(dead_code, unused_imports)]

pub use sluice_smtp::client::{
    BdatPolicy, BodyError, BodyFraming, Capabilities, ClientConfig, ClientEvent, ClientSession,
    CloseReason, Message, Outcome, RecipientResult, ReplyOrigin, SendErrorKind, TimeoutClass,
    TlsUse,
};
pub use sluice_smtp::{
    BodyType, Domain, EnhancedCode, ForwardPath, Notify, Path, RcptParams, Reply, Ret, ReversePath,
    Stage,
};

pub const GREETING: &[u8] = b"220 mx.example.net ESMTP ready\r\n";
pub const EHLO: &str = "EHLO client.example.org\r\n";
pub const EHLO_PIPELINING: &[u8] = b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";
pub const EHLO_LOCKSTEP: &[u8] =
    b"250-mx.example.net Hello\r\n250-SIZE 1000000\r\n250 ENHANCEDSTATUSCODES\r\n";
pub const BODY: &[u8] = b"Subject: test\r\n\r\n.leading dot\r\n";

pub fn path(s: &str) -> Path {
    Path::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

pub fn envelope(recipients: &[&str]) -> Message {
    Message::new(
        ReversePath::Path(path("<sender@example.org>")),
        recipients
            .iter()
            .map(|r| ForwardPath::Path(path(r)))
            .collect(),
        BODY.len() as u64,
    )
}

pub fn config() -> ClientConfig {
    ClientConfig::new(Domain::Name("client.example.org".into()))
}

/// Takes everything the session wants to send.
pub fn sent(s: &mut ClientSession) -> String {
    let out = s.output().to_vec();
    s.consume_output(out.len());
    String::from_utf8(out).expect("client output is ASCII here")
}

pub fn events(s: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A session past the greeting and EHLO with the given EHLO reply.
pub fn ready(ehlo_reply: &[u8]) -> ClientSession {
    let mut s = ClientSession::new(config());
    assert_eq!(sent(&mut s), "", "the server speaks first");
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Greeting));
    s.receive(GREETING);
    assert_eq!(sent(&mut s), EHLO);
    assert_eq!(s.timeout_class(), Some(TimeoutClass::Hello));
    s.receive(ehlo_reply);
    assert_eq!(events(&mut s), vec![ClientEvent::Ready]);
    assert_eq!(s.timeout_class(), None);
    s
}

pub fn reply(code: u16, e: (u8, u16, u16), text: &'static str) -> Reply {
    Reply::new(code, Some(EnhancedCode::new(e.0, e.1, e.2)), text)
}

pub fn remote(index: usize, stage: Stage, outcome: Outcome) -> RecipientResult {
    RecipientResult {
        index,
        outcome,
        stage,
        origin: ReplyOrigin::Remote,
    }
}

pub fn done(events: Vec<ClientEvent>) -> Vec<RecipientResult> {
    let mut done: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::MessageDone(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 1, "exactly one MessageDone");
    done.pop().unwrap()
}
