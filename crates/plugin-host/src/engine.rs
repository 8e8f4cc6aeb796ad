//! The wasmtime engine of one chain of plugins, and the epoch ticker that
//! bounds their CPU time.
//!
//! Settings follow `shared/research/plugins.md` §2.2/§6: epoch interruption
//! (≈0–2% overhead, where fuel cost 18%), the pooling allocator with bounded
//! totals, a per-plugin memory cap enforced by the store's limiter, and a
//! small wasm stack. Each chain (each load or reload) gets its own engine, so
//! a reload may raise a plugin's memory limit and the old chain's engine,
//! code and pool go away with the last call in flight on it.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use wasmtime::{
    Config, Engine, EngineWeak, InstanceAllocationStrategy, Linker, Module, OptLevel,
    PoolingAllocationConfig,
};

use crate::abi::{self, Hook};
use crate::code_cache::CodeCache;
use crate::context::HostState;
use crate::dns::DnsResolver;
use crate::error::{LoadError, LoadErrorKind};
use crate::instance::Plugin;
use crate::spec::{HostEnv, PluginSpec};
use sluice_kv::KvStore;

/// One epoch tick. A 50 ms budget is then 10–11 ticks; a shorter tick would
/// wake the ticker thread more often for no gain (gVisor makes every wake-up
/// a costly syscall).
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// What host functions use, shared by every plugin of every chain.
pub(crate) struct Services {
    pub hostname: String,
    pub directory: std::sync::Arc<sluice_directory::Directory>,
    pub dns: Arc<DnsResolver>,
    pub kv: Arc<dyn KvStore>,
    pub blocking_budget: Duration,
    pub clock: Clock,
    pub code_cache: Option<CodeCache>,
}

impl Services {
    pub fn new(env: &HostEnv, clock: Clock) -> Self {
        Services {
            hostname: env.hostname.clone(),
            directory: env.directory.clone(),
            dns: env.dns.clone(),
            kv: env.kv.clone(),
            blocking_budget: env.blocking_budget,
            clock,
            code_cache: env.code_cache.as_deref().and_then(CodeCache::open),
        }
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("hostname", &self.hostname)
            .field("code_cache", &self.code_cache)
            .finish_non_exhaustive()
    }
}

/// The ticker's count, read by host functions to tell how many ticks a
/// blocking call took (wasmtime does not expose an engine's epoch).
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock(Arc<AtomicU64>);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The one thread that advances the epoch of every live engine.
pub(crate) struct Ticker {
    engines: Arc<Mutex<Vec<EngineWeak>>>,
    clock: Clock,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn start() -> Result<Ticker, LoadError> {
        let engines: Arc<Mutex<Vec<EngineWeak>>> = Arc::default();
        let clock = Clock::default();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = {
            let (engines, clock) = (engines.clone(), clock.clone());
            std::thread::Builder::new()
                .name("sluice-plugin-epoch".into())
                .spawn(move || tick(&engines, &clock, &stopped))
                .map_err(|e| LoadError::host(LoadErrorKind::Thread(e.to_string())))?
        };
        Ok(Ticker {
            engines,
            clock,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    pub fn register(&self, engine: &Engine) {
        self.engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(engine.weak());
    }
}

fn tick(engines: &Mutex<Vec<EngineWeak>>, clock: &Clock, stopped: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
        let mut engines = engines.lock().unwrap_or_else(|p| p.into_inner());
        engines.retain(|weak| match weak.upgrade() {
            Some(engine) => {
                engine.increment_epoch();
                true
            }
            None => false,
        });
        drop(engines);
        clock.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticker")
            .field("epoch", &self.clock.now())
            .finish_non_exhaustive()
    }
}

/// The plugins of one configuration, in order, with their engine.
pub(crate) struct Chain {
    pub plugins: Vec<Plugin>,
    has_hook: [bool; 7],
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| &p.name))
            .finish()
    }
}

impl Chain {
    /// Compiles, links and checks every plugin, and runs `sluice_init` on a
    /// first instance of each. `concurrency` is how many calls may run at
    /// once (filter threads): it sizes the instance pool.
    pub fn build(
        specs: Vec<PluginSpec>,
        services: &Arc<Services>,
        concurrency: usize,
        ticker: &Ticker,
    ) -> Result<Chain, LoadError> {
        let mut names = HashSet::new();
        for spec in &specs {
            let error = |kind| Err(LoadError::of(&spec.name, kind));
            if !names.insert(spec.name.as_str()) {
                return error(LoadErrorKind::DuplicateName);
            }
            if spec.memory_limit_mb == 0 || spec.memory_limit_mb > 4095 {
                return error(LoadErrorKind::MemoryLimitOutOfRange(spec.memory_limit_mb));
            }
            if spec.cpu_budget.is_zero() {
                return error(LoadErrorKind::ZeroCpuBudget);
            }
        }
        let engine = new_engine(&specs, concurrency, services.code_cache.as_ref())
            .map_err(LoadError::host)?;
        ticker.register(&engine);
        let mut linker = Linker::<HostState>::new(&engine);
        crate::hostfns::define(&mut linker)
            .map_err(|e| LoadError::host(LoadErrorKind::Link(format!("{e:#}"))))?;
        let mut plugins = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            let plugin = load_one(&engine, &linker, spec, services)
                .map_err(|kind| LoadError::of(&name, kind))?;
            plugins.push(plugin);
        }
        let mut has_hook = [false; 7];
        for hook in Hook::ALL {
            has_hook[hook.index()] = plugins.iter().any(|p| p.has(hook));
        }
        // The chain that serves from now on names the metrics' plugins
        // (a reload builds a new one).
        sluice_metrics::set_plugins(plugins.iter().map(|p| p.name.to_string()).collect());
        Ok(Chain { plugins, has_hook })
    }

    pub fn has(&self, hook: Hook) -> bool {
        self.has_hook[hook.index()]
    }

    /// Every plugin with `hook` may run it on an event loop (see
    /// [`Plugin::runs_inline`](crate::instance::Plugin::runs_inline)).
    pub fn inline_ok(&self, hook: Hook) -> bool {
        self.plugins.iter().all(|p| !p.has(hook) || p.runs_inline())
    }
}

fn load_one(
    engine: &Engine,
    linker: &Linker<HostState>,
    spec: PluginSpec,
    services: &Arc<Services>,
) -> Result<Plugin, LoadErrorKind> {
    let wasm = std::fs::read(&spec.path).map_err(|e| LoadErrorKind::Read {
        path: spec.path.clone(),
        error: e.to_string(),
    })?;
    let module = match &services.code_cache {
        Some(cache) => cache.module(engine, &wasm, &spec.name),
        None => Module::new(engine, &wasm),
    };
    let module = module.map_err(|e| LoadErrorKind::Compile {
        path: spec.path.clone(),
        error: format!("{e:#}"),
    })?;
    let exports = abi::validate(&module).map_err(LoadErrorKind::Abi)?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| LoadErrorKind::Link(format!("{e:#}")))?;
    Plugin::new(spec, exports, pre, services.clone()).map_err(LoadErrorKind::Start)
}

fn new_engine(
    specs: &[PluginSpec],
    concurrency: usize,
    code_cache: Option<&CodeCache>,
) -> Result<Engine, LoadErrorKind> {
    let largest_memory = specs.iter().map(|s| s.memory_limit_mb).max().unwrap_or(1) as usize;
    // At most one instance per plugin per concurrent call, plus the one a
    // recycled instance is being replaced by.
    let slots = (specs.len().max(1) * (concurrency + 1)) as u32;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(largest_memory << 20)
        .max_core_instance_size(256 << 10)
        // Reset the hot first pages with memset instead of madvise: measured
        // cheaper for the pages a reused instance actually touches.
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        .epoch_interruption(true)
        .consume_fuel(false)
        .max_wasm_stack(256 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .cache(code_cache.map(CodeCache::wasmtime_cache));
    Engine::new(&config).map_err(|e| LoadErrorKind::Engine(format!("{e:#}")))
}
