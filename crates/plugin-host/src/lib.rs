//! Sluice's WebAssembly filter plugin host.
//!
//! Plugins are WebAssembly core modules speaking the ABI in
//! `plugins/ABI.md`. The host compiles them with wasmtime, keeps a pool of
//! ready instances per plugin, and runs their hooks for the SMTP front end
//! ([`PluginHost`] implements [`sluice_filter::Filter`]) on its own filter
//! threads. Each hook call is bounded in CPU time (epoch interruption) and
//! memory (a per-instance limit); a plugin that traps, loops or runs out of
//! memory fails that hook by its `on_error` policy and its instance is
//! replaced, while every other transaction goes on.
//!
//! State that outlives a call (notes, scores) lives here, per connection and
//! per transaction, never in the plugin: consecutive hooks of one
//! transaction may run on different instances and threads.
//!
//! [`test_run`] runs a chain against one message for `sluice plugin test`.

mod abi;
mod bench;
mod chain;
mod code_cache;
mod context;
mod dns;
mod engine;
mod error;
mod hook_state;
mod host;
mod hostfns;
mod instance;
mod message;
mod spec;
mod test_run;

pub use abi::{Hook, RawVerdict};
#[doc(hidden)]
pub use bench::HookBench;
pub use chain::{Outcome, PluginRun};
pub use code_cache::CodeCacheStats;
pub use context::LogLine;
pub use dns::{DnsAnswer, DnsResolver};
pub use error::{AbiError, HookError, LoadError, LoadErrorKind, Phase};
pub use host::PluginHost;
pub use sluice_filter::MessageChanges;
pub use sluice_kv::{KvError, KvStore, MemoryKv, RedisKv};
pub use spec::{DnsConfig, HostEnv, OnError, PluginSpec};
pub use test_run::{
    StageReport, TEST_QUEUE_ID, TestEnvelope, TestReport, TestResult, TestRunError, Tester,
    test_run,
};
