//! Example plugin: at most `max_per_hour` transactions per client address
//! and clock hour, counted in the shared key-value store so that every
//! instance, thread and node counts together. This is the plugin that
//! docs/plugins.md builds step by step.
#![no_std]

extern crate alloc;

use alloc::format;

use serde::Deserialize;
use sluice_plugin_sdk::{Ctx, Filter, InitError, Verdict, export_filter};

/// `[plugin.config]`: `max_per_hour = 100`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    max_per_hour: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_per_hour: 100 }
    }
}

/// The filter: its configuration only. The counts live in the host's store.
#[derive(Debug)]
pub struct RateLimit {
    max_per_hour: i64,
}

impl Filter for RateLimit {
    fn init(config: &str) -> Result<Self, InitError> {
        let config: Config = sluice_plugin_sdk::config::from_json(config)?;
        if config.max_per_hour == 0 {
            return Err(InitError::new("max_per_hour must be at least 1"));
        }
        Ok(Self {
            max_per_hour: config.max_per_hour.into(),
        })
    }

    fn on_mail(&mut self, ctx: &Ctx<'_>, _reverse_path: &str) -> Verdict {
        // Our own users are not limited.
        if ctx.conn_auth().is_some() {
            return Verdict::Continue;
        }
        let Some(ip) = ctx.conn_ip() else {
            return Verdict::Continue;
        };
        let hour = ctx.now_ms() / 3_600_000;
        // The key expires with its hour, so the store does not fill up.
        let count = ctx.kv_incr(&format!("ratelimit:{ip}:{hour}"), 1, 3600);
        if count > self.max_per_hour {
            return ctx.tempfail(
                451,
                "4.7.1 Too many messages from your address, try again later",
            );
        }
        Verdict::Continue
    }
}

export_filter!(RateLimit, hooks: [mail]);

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    #[test]
    fn the_limit_applies_per_address_and_hour() {
        let host = MockHost::new()
            .with_property("conn.ip", "192.0.2.1")
            .with_now_ms(7_200_000);
        let mut filter = RateLimit::init(r#"{"max_per_hour": 2}"#).unwrap();
        let ctx = host.ctx();
        assert_eq!(filter.on_mail(&ctx, "a@example.org"), Verdict::Continue);
        assert_eq!(filter.on_mail(&ctx, "a@example.org"), Verdict::Continue);
        assert_eq!(filter.on_mail(&ctx, "a@example.org"), Verdict::Tempfail);
        assert_eq!(host.reply().unwrap().0, 451);

        host.set_property("conn.ip", "192.0.2.2");
        assert_eq!(
            filter.on_mail(&ctx, "a@example.org"),
            Verdict::Continue,
            "another client"
        );

        host.set_property("conn.ip", "192.0.2.1");
        host.advance_ms(3_600_000);
        assert_eq!(
            filter.on_mail(&ctx, "a@example.org"),
            Verdict::Continue,
            "a new hour"
        );
    }

    #[test]
    fn authenticated_clients_are_not_counted() {
        let host = MockHost::new()
            .with_property("conn.ip", "192.0.2.1")
            .with_property("conn.auth", "alice");
        let mut filter = RateLimit::init(r#"{"max_per_hour": 1}"#).unwrap();
        for _ in 0..3 {
            assert_eq!(
                filter.on_mail(&host.ctx(), "alice@example.org"),
                Verdict::Continue
            );
        }
        assert_eq!(host.kv("ratelimit:192.0.2.1:0"), None);
    }

    #[test]
    fn the_config_is_checked_at_load() {
        assert_eq!(RateLimit::init("").unwrap().max_per_hour, 100);
        assert!(RateLimit::init(r#"{"max_per_hour": 0}"#).is_err());
        assert!(RateLimit::init(r#"{"max_per_hour": -1}"#).is_err());
        assert!(RateLimit::init(r#"{"per_hour": 5}"#).is_err());
    }
}
