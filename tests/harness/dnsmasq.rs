//! A real name server for routing tests: `dnsmasq` in the foreground on a
//! loopback port, serving only the records a test gives it. It lives in
//! `sluice-testkit`, shared with the crates' own DNS tests.

pub use sluice_testkit::Dnsmasq;
