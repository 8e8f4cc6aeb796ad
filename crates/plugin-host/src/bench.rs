//! A plugin chain driven on the calling thread, for benchmarks: the cost of
//! a hook call without the hop to a filter thread.

use std::net::IpAddr;
use std::sync::Arc;

use crate::abi::Hook;
use crate::chain::{Outcome, StageCall, run_stage};
use sluice_smtp::{ForwardPath, Path};

use crate::context::{ConnInfo, ConnRecord, RcptView, TxView};
use crate::engine::{Chain, Services, Ticker};
use crate::spec::{HostEnv, PluginSpec};

/// Not part of the stable API.
#[doc(hidden)]
#[derive(Debug)]
pub struct HookBench {
    chain: Chain,
    conn: Arc<ConnRecord>,
    tx: Arc<TxView>,
    hostname: String,
    // Last: the epoch must keep ticking while the chain exists.
    _ticker: Ticker,
}

impl HookBench {
    pub fn new(
        specs: Vec<PluginSpec>,
        env: &HostEnv,
        client_ip: IpAddr,
    ) -> Result<HookBench, crate::LoadError> {
        let ticker = Ticker::start()?;
        let services = Arc::new(Services::new(env, ticker.clock()));
        let chain = Chain::build(specs, &services, 1, &ticker)?;
        Ok(HookBench {
            chain,
            conn: Arc::new(ConnRecord::new(ConnInfo {
                id: 0,
                ip: client_ip,
                trusted: false,
            })),
            tx: Arc::new(TxView {
                mail_from: "sender@client.test".into(),
                rcpts: String::new(),
                auth: Default::default(),
            }),
            hostname: env.hostname.clone(),
            _ticker: ticker,
        })
    }

    /// One RCPT stage: every plugin's `sluice_on_rcpt`, on reused instances.
    /// `forward_path` is what stands between the brackets, and must parse.
    pub fn rcpt(&self, forward_path: &str) -> Outcome {
        let path = if forward_path.eq_ignore_ascii_case("postmaster") {
            ForwardPath::Postmaster
        } else {
            let bracketed = format!("<{forward_path}>");
            ForwardPath::Path(Path::parse(bracketed.as_bytes()).expect("a valid forward-path"))
        };
        let call = StageCall {
            hook: Hook::Rcpt,
            arg: forward_path.to_owned(),
            tx: Some(self.tx.clone()),
            rcpt: Some(Arc::new(RcptView::of(&path))),
            message: None,
        };
        run_stage(&self.chain, &self.conn, &call, &self.hostname, false).outcome
    }
}
