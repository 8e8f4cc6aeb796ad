//! The client's facts (`ClientInfo`) as plugins read them: the host driven
//! as the front end drives it, through the `Filter` trait, with a TLS
//! session and a login that change during the connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use crossbeam_channel::{Receiver, Sender};
use sluice_filter::{Answers, ClientInfo, Defer, Filter, Later, Stage, Ticket, TlsInfo, Verdict};
use sluice_plugin_host::PluginHost;
use sluice_smtp::Domain;
use sluice_smtp::server::Greeting;

struct Channel(Sender<Verdict>);

impl Answers for Channel {
    fn answer(&self, _: Ticket, verdict: Verdict) {
        let _ = self.0.send(verdict);
    }
}

/// Runs the HELO stage for `client` and returns the verdict.
fn helo(
    host: &PluginHost,
    client: &ClientInfo,
    answers: &(Arc<Channel>, Receiver<Verdict>),
) -> Verdict {
    let name = Domain::parse("client.test").unwrap();
    let mut slot = Some(Later::new(answers.0.clone(), Ticket { slot: 0, serial: 1 }));
    let stage = Stage::Hello {
        greeting: Greeting::Ehlo,
        name: &name,
    };
    match host.check(client, stage, Defer::new(&mut slot)) {
        Some(verdict) => {
            slot.take().unwrap().disarm();
            verdict
        }
        None => answers
            .1
            .recv_timeout(Duration::from_secs(10))
            .expect("an answer"),
    }
}

/// Refuses HELO with the values of the TLS and login properties, so that
/// the test reads what the plugin saw from the reply.
fn reporter() -> Vec<u8> {
    module(
        &[
            ("tls", "conn.tls"),
            ("version", "conn.tls_version"),
            ("cipher", "conn.tls_cipher"),
            ("sni", "conn.tls_sni"),
            ("auth", "conn.auth"),
            ("sep", "|"),
        ],
        r#"
  ;; Appends property $p (or "-" when it has no value) and "|" at $at.
  (func $put (param $p i32) (param $n i32) (param $at i32) (result i32)
    (local $len i32)
    (local.set $len (call $get_property (local.get $p) (local.get $n) (local.get $at) (i32.const 256)))
    (if (i32.lt_s (local.get $len) (i32.const 0))
      (then
        (i32.store8 (local.get $at) (i32.const 45))
        (local.set $len (i32.const 1))))
    (i32.store8 (i32.add (local.get $at) (local.get $len)) (i32.const 124))
    (i32.add (i32.add (local.get $at) (local.get $len)) (i32.const 1)))
  (func (export "sluice_on_helo") (param i32 i32) (result i32)
    (local $at i32)
    (local.set $at (i32.const 16384))
    (local.set $at (call $put $$tls (local.get $at)))
    (local.set $at (call $put $$version (local.get $at)))
    (local.set $at (call $put $$cipher (local.get $at)))
    (local.set $at (call $put $$sni (local.get $at)))
    (local.set $at (call $put $$auth (local.get $at)))
    (call $set_reply (i32.const 550) (i32.const 16384) (i32.sub (local.get $at) (i32.const 16384)))
    (i32.const 2))
"#,
    )
}

fn refused_with(verdict: Verdict) -> String {
    match verdict {
        Verdict::Reject(reply) => reply.text().to_string(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn plugins_see_the_tls_session_and_the_login_as_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::load(vec![spec(dir.path(), "reporter", &reporter())], env()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let answers = (Arc::new(Channel(tx)), rx);
    let mut client = ClientInfo {
        id: 7,
        peer: "192.0.2.7:40000".parse().unwrap(),
        local: "192.0.2.1:25".parse().unwrap(),
        trusted: false,
        tls: None,
        login: None,
    };
    assert_eq!(refused_with(helo(&host, &client, &answers)), "0|-|-|-|-|");
    // STARTTLS, then AUTH, on the same connection.
    client.tls = Some(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        sni: Some("mx.example.test".into()),
    });
    assert_eq!(
        refused_with(helo(&host, &client, &answers)),
        "1|TLSv1.3|TLS_AES_256_GCM_SHA384|mx.example.test|-|"
    );
    client.login = Some("alice".into());
    client.tls.as_mut().unwrap().sni = None;
    assert_eq!(
        refused_with(helo(&host, &client, &answers)),
        "1|TLSv1.3|TLS_AES_256_GCM_SHA384|-|alice|"
    );
    host.close(&client);
}
