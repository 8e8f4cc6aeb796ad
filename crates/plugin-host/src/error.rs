//! Why a plugin could not be loaded, and why a hook call failed.
//!
//! The `Display` texts are what operators read in logs and in
//! `sluice plugin test`; callers that act on a failure (tests, the binary's
//! exit codes) match the variants instead.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sluice_kv::KvError;

/// A chain that could not be built: which plugin (`None` for what the whole
/// chain needs, such as the engine or the filter threads) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub plugin: Option<String>,
    pub kind: LoadErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// Two plugins of one chain have this name; state is kept per name.
    DuplicateName,
    /// `memory_limit_mb` outside 1..=4095 (a 32-bit memory's range).
    MemoryLimitOutOfRange(u32),
    ZeroCpuBudget,
    /// The module file could not be read.
    Read {
        path: PathBuf,
        error: String,
    },
    /// The file is not WebAssembly wasmtime can compile, or its memory
    /// does not fit `memory_limit_mb` from the start.
    Compile {
        path: PathBuf,
        error: String,
    },
    /// The module does not follow ABI v1.
    Abi(AbiError),
    /// An import the host does not provide, or of the wrong type.
    Link(String),
    /// The first instance failed to start (start function, `sluice_init`).
    Start(HookError),
    /// The WebAssembly engine could not be made (the pooling allocator's
    /// reservation, say).
    Engine(String),
    /// A thread (epoch ticker, filter thread) could not be started.
    Thread(String),
}

impl LoadError {
    pub(crate) fn of(plugin: &str, kind: LoadErrorKind) -> LoadError {
        LoadError {
            plugin: Some(plugin.to_owned()),
            kind,
        }
    }

    pub(crate) fn host(kind: LoadErrorKind) -> LoadError {
        LoadError { plugin: None, kind }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(plugin) = &self.plugin {
            write!(f, "plugin {plugin}: ")?;
        }
        match &self.kind {
            LoadErrorKind::DuplicateName => f.write_str("the name is used twice"),
            LoadErrorKind::MemoryLimitOutOfRange(mb) => {
                write!(f, "memory_limit_mb must be between 1 and 4095, not {mb}")
            }
            LoadErrorKind::ZeroCpuBudget => f.write_str("cpu_budget must not be zero"),
            LoadErrorKind::Read { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            LoadErrorKind::Compile { path, error } => write!(
                f,
                "{} is not a valid WebAssembly module: {error}",
                path.display()
            ),
            LoadErrorKind::Abi(e) => e.fmt(f),
            LoadErrorKind::Link(e) => write!(f, "cannot link: {e}"),
            LoadErrorKind::Start(e) => e.fmt(f),
            LoadErrorKind::Engine(e) => write!(f, "cannot create the WebAssembly engine: {e}"),
            LoadErrorKind::Thread(e) => write!(f, "cannot start a plugin thread: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// How a module breaks ABI v1 (`plugins/ABI.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbiError {
    /// No `sluice_abi_v1`: not a Sluice plugin, or built for another ABI.
    NoMarker,
    NoMemory,
    /// `memory` is a 64-bit memory, or not a memory at all.
    BadMemory {
        memory64: bool,
    },
    NotAFunction {
        export: String,
    },
    /// An export with the wrong signature; types as wasmtime prints them.
    WrongSignature {
        export: String,
        found: String,
        wanted: String,
    },
    /// String hooks or `sluice_init` without `sluice_alloc` to pass them.
    NoAlloc,
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbiError::NoMarker => f.write_str(
                "no `sluice_abi_v1` export: not a Sluice plugin, or built for another ABI version",
            ),
            AbiError::NoMemory => f.write_str("no `memory` export"),
            AbiError::BadMemory { memory64: true } => {
                f.write_str("export `memory` is a 64-bit memory; ABI v1 needs a 32-bit one")
            }
            AbiError::BadMemory { memory64: false } => {
                f.write_str("export `memory` is not a memory")
            }
            AbiError::NotAFunction { export } => write!(f, "export `{export}` is not a function"),
            AbiError::WrongSignature {
                export,
                found,
                wanted,
            } => write!(
                f,
                "export `{export}` has type {found}, ABI v1 wants {wanted}"
            ),
            AbiError::NoAlloc => f.write_str(
                "no `sluice_alloc` export, needed to pass the configuration and hook arguments",
            ),
        }
    }
}

/// Why one hook call (or an instance's start) failed. The instance is then
/// thrown away, and the hook fails by the plugin's `on_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// Ran past its CPU budget and was interrupted.
    CpuBudget { budget: Duration },
    /// Tried to grow its memory past the limit.
    MemoryLimit { limit_mib: usize },
    /// Spent the hook's blocking budget in host calls (DNS, the key-value
    /// store) and then called the key-value store again.
    BlockingBudget,
    /// The key-value store failed.
    Kv(KvError),
    /// `sluice_init` returned this instead of 0.
    InitRefused(i32),
    /// A hook returned a number that is no verdict.
    NotAVerdict(i32),
    /// A WebAssembly trap, or a host function's refusal (an argument out of
    /// bounds), `during` what.
    Trap { during: Phase, detail: String },
    /// Running on an event loop, it made a host call that would wait; the
    /// host runs the hook again on a filter thread (never a plugin's fault,
    /// never reported as a failure).
    WouldBlock,
}

/// What a plugin instance was doing when it trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Instantiate,
    Alloc,
    Init,
    /// `sluice_hooks`, asked once when the plugin loads.
    Hooks,
    Hook,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::CpuBudget { budget } => {
                write!(f, "CPU budget of {} ms exceeded", budget.as_millis())
            }
            HookError::MemoryLimit { limit_mib } => {
                write!(f, "memory limit of {limit_mib} MiB exceeded")
            }
            HookError::BlockingBudget => {
                f.write_str("key-value store: the hook's blocking budget is spent")
            }
            HookError::Kv(e) => write!(f, "key-value store: {e}"),
            HookError::InitRefused(rc) => write!(f, "sluice_init returned {rc}"),
            HookError::NotAVerdict(v) => write!(f, "returned {v}, which is not a verdict"),
            HookError::Trap { during, detail } => {
                let during = match during {
                    Phase::Instantiate => "cannot instantiate",
                    Phase::Alloc => "sluice_alloc failed",
                    Phase::Init => "sluice_init failed",
                    Phase::Hooks => "sluice_hooks failed",
                    Phase::Hook => "trap",
                };
                write!(f, "{during}: {detail}")
            }
            HookError::WouldBlock => f.write_str("a host call that would wait, on an event loop"),
        }
    }
}

impl std::error::Error for HookError {}

/// What a host function raises (as a `wasmtime::Error`) when the failure is
/// not the plugin's doing, so that the hook's error can say which.
#[derive(Debug)]
pub(crate) enum HostCallError {
    BlockingBudget,
    Kv(KvError),
    /// A call that would wait (a DNS lookup not in the cache, the key-value
    /// store) from a hook running on an event loop: the hook is abandoned
    /// and run again on a filter thread.
    WouldBlock,
}

impl fmt::Display for HostCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCallError::BlockingBudget => HookError::BlockingBudget.fmt(f),
            HostCallError::Kv(e) => write!(f, "key-value store: {e}"),
            HostCallError::WouldBlock => HookError::WouldBlock.fmt(f),
        }
    }
}

impl std::error::Error for HostCallError {}
