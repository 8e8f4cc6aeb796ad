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
pub mod svg;

pub use generator::{GeneratorConfig, GeneratorReport, Progress, RunResult};
pub use latency::{Latency, LatencySummary};
pub use sink::{ReplyPolicy, Sink, SinkConfig, SinkHandle, SinkReport};
