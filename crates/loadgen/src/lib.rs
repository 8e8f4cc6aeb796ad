//! Sluice's end-to-end benchmark tools.
//!
//! - [`generator`]: an SMTP load generator (closed or open loop) that
//!   records each message's accept latency (end of DATA → 250).
//! - [`sink`]: a fast SMTP server that counts what it gets, refuses a chosen
//!   share, and measures end-to-end latency from the generator's timestamp.
//! - [`report`] and [`svg`]: the side-by-side table and chart of
//!   `benches/compare.sh`; [`procstat`]: CPU time of a process tree.
//!
//! The binaries `sluice-loadgen`, `sluice-sink` and `sluice-bench` are thin
//! command lines over these.

pub mod generator;
pub mod latency;
pub mod message;
pub mod procstat;
pub mod report;
pub mod schedule;
pub mod sink;
mod stream;
pub mod svg;

pub use generator::{GeneratorConfig, GeneratorReport, Progress, RunResult};
pub use latency::{Latency, LatencySummary};

/// A command-line number of seconds as a `Duration`, refusing negative,
/// NaN and overflowing values with an error that names the option.
pub fn seconds(s: f64, what: &str) -> std::io::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} must be a number of seconds, not {s}"),
        )
    })
}
pub use sink::{ReplyPolicy, Sink, SinkConfig, SinkHandle, SinkReport};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accepts_durations_and_names_the_option_otherwise() {
        assert_eq!(
            seconds(1.5, "--duration").unwrap(),
            std::time::Duration::from_millis(1500)
        );
        let e = seconds(-1.0, "--duration").unwrap_err();
        assert!(
            e.to_string()
                .contains("--duration must be a number of seconds"),
            "{e}"
        );
        assert!(seconds(f64::NAN, "--delay").is_err());
    }
}
