//! One plugin: its pre-linked module and a pool of ready instances, checked
//! out for one hook call at a time.
//!
//! Instances are reused (a hook call on a warm instance costs ~0.14 µs, a
//! fresh one 8–24 µs: research §2.4) and recycled after a trap, after
//! [`MAX_USES`] calls, after [`MAX_AGE`], or when their memory has grown past
//! half the limit, so that a slow leak or corrupted state does not last.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{InstancePre, Store, Trap, TypedFunc};

use crate::abi::{self, Exports, Hook};
use crate::context::{CallCtx, HostState};
use crate::engine::{Services, TICK};
use crate::error::{HookError, HostCallError, Phase};
use crate::spec::{OnError, PluginSpec};

/// KumoMTA's Lua context pool defaults (research §3.3, §6.2).
pub(crate) const MAX_USES: u32 = 1024;
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);

pub(crate) struct Plugin {
    pub name: Arc<str>,
    pub on_error: OnError,
    cpu_budget: Duration,
    budget_ticks: u64,
    memory_limit: usize,
    config_json: String,
    exports: Exports,
    pre: InstancePre<HostState>,
    services: Arc<Services>,
    /// Boxed: an instance moves out for each call and back after it, a
    /// pointer rather than the store and its functions (about 1 KiB).
    #[expect(clippy::vec_box, reason = "moved out and back per call")]
    idle: Mutex<Vec<Box<Ready>>>,
    /// Its hooks' time on event loops, in µs, averaged (1/16 new).
    inline_us: AtomicU64,
    /// That average went past [`INLINE_SLOW_US`]: its hooks run on filter
    /// threads only, until the chain is reloaded.
    slow_inline: AtomicBool,
}

/// A plugin whose hooks take this long on average (1 ms) leaves the event
/// loops: its CPU budget bounds one call, but an event loop serves every other
/// connection on it meanwhile. An average, because one call's wall time can
/// include being descheduled: on a busy machine a 10 µs hook now and then
/// takes 5 ms.
const INLINE_SLOW_US: u64 = 1_000;

/// Epoch ticks a hook may run on an event loop before it is abandoned (and
/// run again on a filter thread): one, which trips at the next tick, 0–5 ms
/// after the call began.
const INLINE_TICKS: u64 = 1;

struct Ready {
    store: Store<HostState>,
    instance: wasmtime::Instance,
    funcs: Funcs,
    uses: u32,
    born: Instant,
}

#[derive(Default)]
struct Funcs {
    alloc: Option<TypedFunc<i32, i32>>,
    no_arg: [Option<TypedFunc<(), i32>>; 7],
    str_arg: [Option<TypedFunc<(i32, i32), i32>>; 7],
    no_verdict: [Option<TypedFunc<(), ()>>; 7],
}

impl Plugin {
    /// Checks that an instance can be made and initialized, and keeps it.
    pub fn new(
        spec: PluginSpec,
        exports: Exports,
        pre: InstancePre<HostState>,
        services: Arc<Services>,
    ) -> Result<Plugin, HookError> {
        // The deadline trips between (n-1) and n ticks after it is set: one
        // more tick makes the budget a floor, never a ceiling.
        let budget_ticks = spec.cpu_budget.as_nanos().div_ceil(TICK.as_nanos()) as u64 + 1;
        let mut plugin = Plugin {
            name: spec.name.into(),
            on_error: spec.on_error,
            cpu_budget: spec.cpu_budget,
            budget_ticks,
            memory_limit: (spec.memory_limit_mb as usize) << 20,
            config_json: spec.config_json,
            exports,
            pre,
            services,
            idle: Mutex::default(),
            inline_us: AtomicU64::new(0),
            slow_inline: AtomicBool::new(false),
        };
        let mut first = plugin.instantiate()?;
        if plugin.exports.hook_mask {
            // Once, on the first instance: the answer depends on the
            // configuration, which every instance shares (ABI.md).
            let ask: TypedFunc<(), i32> = first
                .instance
                .get_typed_func(&mut first.store, abi::HOOKS)
                .expect("export checked at load");
            let mask = ask
                .call(&mut first.store, ())
                .map_err(|e| plugin.describe(&e, first.store.data(), Phase::Hooks))?;
            plugin.exports.narrow(mask);
            let left_out: Vec<&str> = Hook::ALL
                .into_iter()
                .filter(|&h| exports.has(h) && !plugin.exports.has(h))
                .map(Hook::name)
                .collect();
            if !left_out.is_empty() {
                tracing::debug!(plugin = %plugin.name, hooks = ?left_out,
                    "hooks its configuration does not need: never called");
            }
        }
        plugin.idle().push(first);
        Ok(plugin)
    }

    pub fn has(&self, hook: Hook) -> bool {
        self.exports.has(hook)
    }

    /// Its hooks may run on an event loop.
    pub fn runs_inline(&self) -> bool {
        !self.slow_inline.load(Ordering::Relaxed)
    }

    /// Counts a hook call's time on an event loop, cut off or not (racing
    /// updates from several loops may lose one: it is an estimate). One
    /// long call proves little: its wall time includes being descheduled,
    /// and a call cut by the epoch tick may have begun just before it. A
    /// plugin that needs its slice and more every time is cut every time,
    /// and its average passes the limit within a dozen calls.
    pub fn ran_inline(&self, took: Duration) {
        // A call counts for one tick at most: it can run no longer on an
        // event loop, so more is time it spent descheduled, which must not
        // send a plugin away on its own (a busy machine can stall a thread
        // for tens of milliseconds).
        let us = u64::try_from(took.min(TICK).as_micros()).unwrap_or(u64::MAX);
        let before = self.inline_us.load(Ordering::Relaxed);
        let average = before - before / 16 + us / 16;
        self.inline_us.store(average, Ordering::Relaxed);
        // From now on (until the chain is reloaded) on filter threads only.
        if average > INLINE_SLOW_US && !self.slow_inline.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin = %self.name,
                "its hooks take more than 1 ms on average on an event loop: it runs on filter threads from now on");
        }
    }

    #[expect(clippy::vec_box, reason = "see `idle`")]
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Box<Ready>>> {
        // Pushes and pops only: nothing to tear.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn instantiate(&self) -> Result<Box<Ready>, HookError> {
        let state = HostState {
            services: self.services.clone(),
            plugin: self.name.clone(),
            memory: None,
            memory_limit: self.memory_limit,
            memory_exceeded: false,
            call: None,
            // A start function or sluice_init gets the same budget as a hook.
            deadline: self.services.clock.now() + self.budget_ticks,
            blocked: Duration::ZERO,
        };
        let mut store = Store::new(self.pre.module().engine(), state);
        store.limiter(|state| state);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.budget_ticks);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.describe(&e, store.data(), Phase::Instantiate))?;
        let memory = instance
            .get_memory(&mut store, abi::MEMORY)
            .ok_or_else(|| HookError::Trap {
                during: Phase::Instantiate,
                detail: "no `memory` export".into(),
            })?;
        store.data_mut().memory = Some(memory);
        let mut funcs = Funcs::default();
        let typed = "export checked at load";
        if self.exports.alloc {
            funcs.alloc = Some(
                instance
                    .get_typed_func(&mut store, abi::ALLOC)
                    .expect(typed),
            );
        }
        for hook in Hook::ALL.into_iter().filter(|h| self.exports.has(*h)) {
            let i = hook.index();
            if hook.takes_string() {
                funcs.str_arg[i] = Some(
                    instance
                        .get_typed_func(&mut store, hook.export())
                        .expect(typed),
                );
            } else if hook.has_verdict() {
                funcs.no_arg[i] = Some(
                    instance
                        .get_typed_func(&mut store, hook.export())
                        .expect(typed),
                );
            } else {
                funcs.no_verdict[i] = Some(
                    instance
                        .get_typed_func(&mut store, hook.export())
                        .expect(typed),
                );
            }
        }
        if self.exports.init {
            let init: TypedFunc<(i32, i32), i32> =
                instance.get_typed_func(&mut store, abi::INIT).expect(typed);
            let (ptr, len) = pass(&mut store, &funcs, self.config_json.as_bytes())
                .map_err(|e| self.describe(&e, store.data(), Phase::Alloc))?;
            let rc = init
                .call(&mut store, (ptr, len))
                .map_err(|e| self.describe(&e, store.data(), Phase::Init))?;
            if rc != 0 {
                return Err(HookError::InitRefused(rc));
            }
        }
        Ok(Box::new(Ready {
            store,
            instance,
            funcs,
            uses: 0,
            born: Instant::now(),
        }))
    }

    /// Calls `hook` (with `arg` for the hooks that take a string) on an idle
    /// instance, or a new one, at `now` (the caller's clock, read once for
    /// the call). Returns the hook's raw result (`None` for the hooks
    /// without a verdict) and the call context with what the plugin set.
    pub fn call(
        &self,
        hook: Hook,
        arg: &str,
        ctx: CallCtx,
        now: Instant,
    ) -> (Result<Option<i32>, HookError>, CallCtx) {
        let young = |ready: &Ready| now.saturating_duration_since(ready.born) < MAX_AGE;
        // An instance idle past its age goes now rather than after one more call.
        let popped = self.idle().pop().filter(|r| young(r));
        let mut ready = match popped {
            Some(ready) => ready,
            None => match self.instantiate() {
                Ok(ready) => ready,
                Err(e) => return (Err(e), ctx),
            },
        };
        let store = &mut ready.store;
        let state = store.data_mut();
        // On an event loop a hook gets one tick (at most 5 ms); one that
        // needs more is abandoned and run again, with its whole budget, on a
        // filter thread.
        let ticks = if ctx.inline {
            self.budget_ticks.min(INLINE_TICKS)
        } else {
            self.budget_ticks
        };
        state.call = Some(ctx);
        state.deadline = self.services.clock.now() + ticks;
        state.blocked = Duration::ZERO;
        store.set_epoch_deadline(ticks);
        let i = hook.index();
        let result = if hook.takes_string() {
            pass(store, &ready.funcs, arg.as_bytes()).and_then(|(ptr, len)| {
                let f = ready.funcs.str_arg[i]
                    .as_ref()
                    .expect("caller checked the hook");
                f.call(&mut *store, (ptr, len)).map(Some)
            })
        } else if hook.has_verdict() {
            let f = ready.funcs.no_arg[i]
                .as_ref()
                .expect("caller checked the hook");
            f.call(&mut *store, ()).map(Some)
        } else {
            let f = ready.funcs.no_verdict[i]
                .as_ref()
                .expect("caller checked the hook");
            f.call(&mut *store, ()).map(|()| None)
        };
        let result = result.map_err(|e| self.describe(&e, store.data(), Phase::Hook));
        let ctx = store.data_mut().call.take().expect("set above");
        ready.uses += 1;
        let memory_size = store.data().memory.map_or(0, |m| m.data_size(&*store));
        let keep = result.is_ok()
            && ready.uses < MAX_USES
            && young(&ready)
            && memory_size <= self.memory_limit / 2;
        if keep {
            self.idle().push(ready);
        }
        (result, ctx)
    }

    fn describe(&self, error: &wasmtime::Error, state: &HostState, during: Phase) -> HookError {
        if state.memory_exceeded {
            return HookError::MemoryLimit {
                limit_mib: self.memory_limit >> 20,
            };
        }
        if let Some(host) = error.downcast_ref::<HostCallError>() {
            return match host {
                HostCallError::BlockingBudget => HookError::BlockingBudget,
                HostCallError::Kv(e) => HookError::Kv(e.clone()),
                HostCallError::WouldBlock => HookError::WouldBlock,
            };
        }
        let inline = state.call.as_ref().is_some_and(|c| c.inline);
        match error.downcast_ref::<Trap>() {
            // Abandoned and run again on a filter thread; whether the
            // plugin leaves the event loops is the caller's call, which
            // knows how long it ran (a one-tick deadline can trip at once).
            Some(Trap::Interrupt) if inline => HookError::WouldBlock,
            Some(Trap::Interrupt) => HookError::CpuBudget {
                budget: self.cpu_budget,
            },
            Some(trap) => HookError::Trap {
                during,
                detail: trap.to_string(),
            },
            None => HookError::Trap {
                during,
                detail: format!("{error:#}"),
            },
        }
    }
}

/// Copies `bytes` into memory the plugin allocated for them; an empty string
/// is `(0, 0)` without an allocation (ABI v1 allows both).
fn pass(store: &mut Store<HostState>, funcs: &Funcs, bytes: &[u8]) -> wasmtime::Result<(i32, i32)> {
    if bytes.is_empty() {
        return Ok((0, 0));
    }
    let alloc = funcs
        .alloc
        .as_ref()
        .expect("validated: alloc exists with string hooks and init");
    let len = i32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg("argument too long"))?;
    let ptr = alloc.call(&mut *store, len)?;
    if ptr == 0 {
        return Err(wasmtime::Error::msg(format!("sluice_alloc({len}) failed")));
    }
    let memory = store.data().memory.expect("set at instantiation");
    memory
        .write(&mut *store, ptr as u32 as usize, bytes)
        .map_err(|_| {
            wasmtime::Error::msg(format!("sluice_alloc({len}) returned {ptr}, out of bounds"))
        })?;
    Ok((ptr, len))
}
