//! Greylisting (RFC 6647) through the shared key-value store, so that every
//! instance and thread (and, with the Redis backend, every node) sees the
//! same triplets.

use alloc::format;
use alloc::string::String;
use core::net::IpAddr;

use sluice_plugin_sdk::Ctx;

use crate::config::Config;

/// The value of a triplet that waited long enough.
const PASSED: &str = "pass";

/// The client's network as greylisting sees it: the /24 of an IPv4 address,
/// the /64 of an IPv6 one, because a sending farm retries from a neighbour
/// address (RFC 6647 §4.1.1).
pub fn network(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The store key of a (network, reverse-path, forward-path) triplet.
/// Addresses are compared without regard to case; the sender's length is
/// part of the key so that no two triplets share one (addresses may contain
/// any separator).
pub fn key(network: &str, sender: &str, recipient: &str) -> String {
    let sender = if sender.is_empty() { "<>" } else { sender };
    format!(
        "greylist:{network}:{}:{}:{}",
        sender.len(),
        sender.to_lowercase(),
        recipient.to_lowercase()
    )
}

/// What greylisting says about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every triplet has waited long enough.
    Pass,
    /// At least one triplet is new or still waiting; the longest wait left.
    Wait {
        /// Seconds until the retry will pass.
        secs: u64,
    },
}

/// Checks (and records) one triplet. The first sighting stores its time; a
/// retry after `greylist_delay_secs` marks it as passed for
/// `greylist_pass_ttl_secs`, renewed on each later pass.
pub fn check(ctx: &Ctx<'_>, config: &Config, key: &str) -> Decision {
    let now = ctx.now_ms();
    let first_seen = match ctx.kv_get(key) {
        Some(v) if v == PASSED => {
            ctx.kv_set(key, PASSED, config.greylist_pass_ttl_secs);
            return Decision::Pass;
        }
        Some(v) => v.parse::<i64>().ok().filter(|t| *t <= now),
        None => None,
    };
    let first_seen = first_seen.unwrap_or_else(|| {
        ctx.kv_set(key, &format!("{now}"), config.greylist_retry_window_secs);
        now
    });
    let waited_ms = now - first_seen;
    let delay_ms = i64::from(config.greylist_delay_secs) * 1000;
    if waited_ms >= delay_ms {
        ctx.kv_set(key, PASSED, config.greylist_pass_ttl_secs);
        Decision::Pass
    } else {
        let left_ms = delay_ms - waited_ms;
        Decision::Wait {
            // Rounded up: "retry in 0 seconds" would be retried too early.
            secs: u64::try_from(left_ms).map_or(0, |ms| ms.div_ceil(1000)),
        }
    }
}

/// Checks the triplet of every recipient; the message waits if any does.
/// Every triplet is recorded, so a retry passes for all of them at once.
pub fn check_all(
    ctx: &Ctx<'_>,
    config: &Config,
    ip: IpAddr,
    sender: &str,
    rcpts: &[String],
) -> Decision {
    let net = network(ip);
    rcpts.iter().fold(Decision::Pass, |acc, rcpt| {
        match (acc, check(ctx, config, &key(&net, sender, rcpt))) {
            (Decision::Wait { secs: a }, Decision::Wait { secs: b }) => {
                Decision::Wait { secs: a.max(b) }
            }
            (Decision::Wait { secs }, Decision::Pass)
            | (Decision::Pass, Decision::Wait { secs }) => Decision::Wait { secs },
            (Decision::Pass, Decision::Pass) => Decision::Pass,
        }
    })
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use sluice_plugin_sdk::testing::MockHost;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_triplet_uses_the_client_network_and_both_addresses() {
        assert_eq!(network(ip("192.0.2.77")), "192.0.2.0/24");
        assert_eq!(network(ip("::ffff:192.0.2.77")), "192.0.2.0/24");
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(
            key("192.0.2.0/24", "Alice@Remote.test", "Bob@Local.test"),
            "greylist:192.0.2.0/24:17:alice@remote.test:bob@local.test"
        );
        assert_eq!(key("n", "", "b@l"), "greylist:n:2:<>:b@l");
        assert_ne!(
            key("n", "a:b", "c"),
            key("n", "a", "b:c"),
            "separators cannot collide"
        );
    }

    #[test]
    fn a_new_triplet_waits_the_delay_then_passes_and_is_remembered() {
        let config = Config {
            greylist: true,
            greylist_delay_secs: 300,
            ..Config::default()
        };
        let host = MockHost::new().with_now_ms(1_700_000_000_000);
        let ctx = host.ctx();
        let k = key("192.0.2.0/24", "a@remote.test", "b@local.test");

        assert_eq!(check(&ctx, &config, &k), Decision::Wait { secs: 300 });
        assert_eq!(
            host.kv_expiry_ms(&k),
            Some(1_700_000_000_000 + i64::from(config.greylist_retry_window_secs) * 1000)
        );
        host.advance_ms(299_001);
        assert_eq!(
            check(&ctx, &config, &k),
            Decision::Wait { secs: 1 },
            "too early"
        );
        host.advance_ms(999);
        assert_eq!(check(&ctx, &config, &k), Decision::Pass);
        assert_eq!(host.kv(&k).as_deref(), Some(PASSED));
        host.advance_ms(86_400_000);
        assert_eq!(check(&ctx, &config, &k), Decision::Pass, "remembered");
    }

    #[test]
    fn a_retry_after_the_window_starts_over() {
        let config = Config {
            greylist: true,
            ..Config::default()
        };
        let host = MockHost::new().with_now_ms(1_000_000);
        let ctx = host.ctx();
        assert!(matches!(check(&ctx, &config, "k"), Decision::Wait { .. }));
        host.advance_ms(i64::from(config.greylist_retry_window_secs) * 1000);
        assert_eq!(check(&ctx, &config, "k"), Decision::Wait { secs: 300 });
    }

    #[test]
    fn a_garbled_or_future_entry_counts_as_new() {
        let config = Config::default();
        let host = MockHost::new()
            .with_now_ms(5_000_000)
            .with_kv("bad", "yesterday")
            .with_kv("future", "9000000");
        let ctx = host.ctx();
        assert_eq!(check(&ctx, &config, "bad"), Decision::Wait { secs: 300 });
        assert_eq!(check(&ctx, &config, "future"), Decision::Wait { secs: 300 });
        assert_eq!(host.kv("future").as_deref(), Some("5000000"));
    }

    #[test]
    fn a_message_waits_while_any_recipient_waits() {
        let config = Config::default();
        let host = MockHost::new().with_now_ms(10_000_000);
        let ctx = host.ctx();
        let net = network(ip("192.0.2.1"));
        // b@ passed earlier; c@ is new.
        host.ctx()
            .kv_set(&key(&net, "a@r.test", "b@l.test"), PASSED, 0);
        let rcpts = vec!["b@l.test".into(), "c@l.test".into()];
        assert_eq!(
            check_all(&ctx, &config, ip("192.0.2.9"), "a@r.test", &rcpts),
            Decision::Wait { secs: 300 }
        );
        host.advance_ms(300_000);
        assert_eq!(
            check_all(&ctx, &config, ip("192.0.2.200"), "a@r.test", &rcpts),
            Decision::Pass
        );
        assert_eq!(
            check_all(&ctx, &config, ip("192.0.2.1"), "a@r.test", &[]),
            Decision::Pass
        );
    }
}
