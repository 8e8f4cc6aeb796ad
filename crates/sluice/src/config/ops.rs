//! What operators run Sluice with besides mail: the metrics endpoint and
//! the log's format.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[metrics]`: Prometheus's `/metrics` and a `/healthz` for load
/// balancers and supervisors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Where the HTTP endpoint listens; empty: none. Loopback by default:
    /// the numbers say how much mail flows where, which is nobody else's
    /// business.
    pub listen: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "127.0.0.1:9325".into(),
        }
    }
}

impl Metrics {
    /// The address to listen on, `Ok(None)` when off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            format!("[metrics] listen = {listen:?} is not an address:port (or \"\" for off)")
        })
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors (Loki, Elasticsearch).
    Json,
}

/// What a `[[listen]]` does with connections from addresses outside
/// `proxy_trusted` when `proxy_protocol` is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyUntrusted {
    /// `554` and close: only the proxy may connect.
    #[default]
    Refuse,
    /// Serve them as direct clients (no header expected).
    Direct,
}
