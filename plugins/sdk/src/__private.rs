//! Glue behind [`export_filter!`](crate::export_filter); not a public API.
//!
//! The hook logic ([`init`], [`call`], [`notify`], [`ExchangeBuffer`]) works
//! on slices and a [`Ctx`] so that it is tested on the host; the `wasm_*`
//! functions only turn the ABI's `(ptr, len)` into those.

use alloc::format;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::{Ctx, Filter, Level};

/// What a hook export returns when the hook could not run (no filter, an
/// argument outside the exchange buffer, invalid UTF-8). It is not a verdict,
/// so the host counts the hook as failed and applies the plugin's `on_error`
/// policy, exactly as for a trap.
pub const HOOK_FAILED: i32 = -1;

/// Holds one value for the life of the instance.
pub struct Slot<T>(RefCell<Option<T>>);

// SAFETY: wasm32 without the `atomics` feature has one thread, so a `static`
// `Slot` can never be reached from two threads; `RefCell` still catches
// re-entrance (which the ABI does not allow: imports never call exports).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[allow(unsafe_code)]
unsafe impl<T> Sync for Slot<T> {}

impl<T> Slot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self(RefCell::new(None))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl<T> core::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Slot")
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The memory `sluice_alloc` hands out. ABI.md: the host writes a string
/// argument into memory it got from `sluice_alloc` just before the call and
/// never uses that pointer afterwards, so one buffer, reused, serves every
/// call without per-call allocation, and an argument is only ever read from
/// inside it.
#[derive(Debug, Default)]
pub struct ExchangeBuffer {
    buf: Vec<u8>,
}

/// Above this, a buffer left from one large argument (a big config) is given
/// back instead of being kept for the instance's life.
const KEEP_CAPACITY: usize = 64 * 1024;

impl ExchangeBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self { buf: Vec::new() }
    }

    /// Room for `size` bytes, zeroed; its address, or `None` if `size` is
    /// negative or the memory cannot be had.
    pub fn alloc(&mut self, size: i32) -> Option<usize> {
        let size = usize::try_from(size).ok()?;
        if size <= KEEP_CAPACITY && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.buf.try_reserve_exact(size).ok()?;
        self.buf.resize(size, 0);
        Some(self.buf.as_mut_ptr() as usize)
    }

    /// The argument at `[addr, addr + len)`, if that lies inside the buffer;
    /// a zero length is the empty string wherever it points.
    pub fn arg(&self, addr: usize, len: i32) -> Option<&[u8]> {
        let len = usize::try_from(len).ok()?;
        if len == 0 {
            return Some(&[]);
        }
        let start = addr.checked_sub(self.buf.as_ptr() as usize)?;
        self.buf.get(start..start.checked_add(len)?)
    }

    /// The buffer's bytes, for tests that play the host.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

/// The hooks that return a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `sluice_on_connect`
    Connect,
    /// `sluice_on_helo`
    Helo,
    /// `sluice_on_mail`
    Mail,
    /// `sluice_on_rcpt`
    Rcpt,
    /// `sluice_on_data`
    Data,
}

/// The hooks without a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// `sluice_on_reset`
    Reset,
    /// `sluice_on_close`
    Close,
}

/// `sluice_init`: builds the filter from the config bytes; 0 on success.
pub fn init<F: Filter>(slot: &Slot<F>, ctx: &Ctx<'_>, config: Option<&[u8]>) -> i32 {
    let Some(config) = config else {
        ctx.error("sluice_init: the config is not inside memory from sluice_alloc");
        return 1;
    };
    let Ok(config) = core::str::from_utf8(config) else {
        ctx.error("sluice_init: the config is not UTF-8");
        return 1;
    };
    match F::init(config) {
        Ok(filter) => {
            slot.with(|s| *s = Some(filter));
            0
        }
        Err(e) => {
            ctx.log(Level::Error, &format!("configuration refused: {e}"));
            1
        }
    }
}

/// A hook with a verdict. `arg` is the hook's string argument (ignored by
/// the hooks that take none); `None` means it was not where the ABI says.
pub fn call<F: Filter>(slot: &Slot<F>, ctx: &Ctx<'_>, hook: Hook, arg: Option<&[u8]>) -> i32 {
    let text = match hook {
        Hook::Connect | Hook::Data => "",
        Hook::Helo | Hook::Mail | Hook::Rcpt => {
            let Some(arg) = arg else {
                ctx.error("hook argument is not inside memory from sluice_alloc");
                return HOOK_FAILED;
            };
            match core::str::from_utf8(arg) {
                Ok(text) => text,
                Err(_) => {
                    ctx.error("hook argument is not UTF-8");
                    return HOOK_FAILED;
                }
            }
        }
    };
    slot.with(|s| {
        let Some(filter) = s.as_mut() else {
            ctx.error("hook called without a successful sluice_init");
            return HOOK_FAILED;
        };
        let verdict = match hook {
            Hook::Connect => filter.on_connect(ctx),
            Hook::Helo => filter.on_helo(ctx, text),
            Hook::Mail => filter.on_mail(ctx, text),
            Hook::Rcpt => filter.on_rcpt(ctx, text),
            Hook::Data => filter.on_data(ctx),
        };
        verdict.code()
    })
}

/// `sluice_hooks`: the filter's [`Filter::hooks`] as the ABI's mask; every
/// hook when there is no filter (its hooks then fail, as they should).
pub fn hooks<F: Filter>(slot: &Slot<F>) -> i32 {
    slot.with(|s| s.as_ref().map_or(crate::Hooks::ALL, |f| f.hooks()).bits())
}

/// A hook without a verdict; nothing to do if there is no filter.
pub fn notify<F: Filter>(slot: &Slot<F>, ctx: &Ctx<'_>, which: Notify) {
    slot.with(|s| {
        if let Some(filter) = s.as_mut() {
            match which {
                Notify::Reset => filter.on_reset(ctx),
                Notify::Close => filter.on_close(ctx),
            }
        }
    });
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::*;

    static XBUF: Slot<ExchangeBuffer> = Slot::new();

    fn ctx() -> Ctx<'static> {
        Ctx::new(crate::raw::WasmHost::default())
    }

    fn with_arg<R>(ptr: i32, len: i32, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        // Addresses are unsigned on wasm32.
        let addr = ptr as u32 as usize;
        XBUF.with(|x| f(x.get_or_insert_with(ExchangeBuffer::new).arg(addr, len)))
    }

    /// `sluice_alloc`.
    pub fn wasm_alloc(size: i32) -> i32 {
        XBUF.with(|x| {
            x.get_or_insert_with(ExchangeBuffer::new)
                .alloc(size)
                .map_or(0, |addr| addr as u32 as i32)
        })
    }

    /// `sluice_init`.
    pub fn wasm_init<F: Filter>(slot: &Slot<F>, ptr: i32, len: i32) -> i32 {
        with_arg(ptr, len, |config| init(slot, &ctx(), config))
    }

    /// `sluice_on_connect` … `sluice_on_data`.
    pub fn wasm_hook<F: Filter>(slot: &Slot<F>, hook: Hook, ptr: i32, len: i32) -> i32 {
        with_arg(ptr, len, |arg| call(slot, &ctx(), hook, arg))
    }

    /// `sluice_on_reset`, `sluice_on_close`.
    pub fn wasm_notify<F: Filter>(slot: &Slot<F>, which: Notify) {
        notify(slot, &ctx(), which);
    }

    /// `sluice_hooks`.
    pub fn wasm_hooks<F: Filter>(slot: &Slot<F>) -> i32 {
        hooks(slot)
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::{wasm_alloc, wasm_hook, wasm_hooks, wasm_init, wasm_notify};

#[cfg(test)]
mod tests {
    use alloc::string::{String, ToString};
    use alloc::vec;

    use super::*;
    use crate::testing::MockHost;
    use crate::{InitError, Verdict};

    /// Records what reached it, and answers by hook.
    #[derive(Debug)]
    struct Probe {
        seen: Vec<String>,
    }

    impl Filter for Probe {
        fn init(config: &str) -> Result<Self, InitError> {
            if config == "bad" {
                return Err(InitError::new("bad config"));
            }
            Ok(Probe {
                seen: vec![format!("init {config}")],
            })
        }
        fn on_helo(&mut self, _: &Ctx<'_>, helo: &str) -> Verdict {
            self.seen.push(format!("helo {helo}"));
            Verdict::Accept
        }
        fn on_rcpt(&mut self, ctx: &Ctx<'_>, forward_path: &str) -> Verdict {
            self.seen.push(format!("rcpt {forward_path}"));
            ctx.reject(550, "5.1.1 nobody")
        }
        fn on_close(&mut self, _: &Ctx<'_>) {
            self.seen.push("close".to_string());
        }
        fn hooks(&self) -> crate::Hooks {
            if self.seen[0] == "init no-rcpt" {
                crate::Hooks::ALL - crate::Hooks::RCPT
            } else {
                crate::Hooks::ALL
            }
        }
    }

    #[test]
    fn sluice_hooks_answers_with_the_configured_filters_hooks() {
        let host = MockHost::new();
        let ctx = host.ctx();
        let slot = Slot::<Probe>::new();
        // Before a successful init every hook: they fail on their own.
        assert_eq!(hooks(&slot), 0x7f);
        assert_eq!(init::<Probe>(&slot, &ctx, Some(b"no-rcpt")), 0);
        assert_eq!(hooks(&slot), 0x7f & !(1 << 3));
        let slot = Slot::<Probe>::new();
        assert_eq!(init::<Probe>(&slot, &ctx, Some(b"{}")), 0);
        assert_eq!(hooks(&slot), 0x7f);
    }

    fn seen(slot: &Slot<Probe>) -> Vec<String> {
        slot.with(|s| s.as_ref().map(|p| p.seen.clone()).unwrap_or_default())
    }

    #[test]
    fn hooks_reach_the_filter_and_return_its_verdict_codes() {
        let host = MockHost::new();
        let ctx = host.ctx();
        let slot = Slot::new();
        assert_eq!(init::<Probe>(&slot, &ctx, Some(b"{}")), 0);
        assert_eq!(
            call(&slot, &ctx, Hook::Connect, None),
            Verdict::Continue.code()
        );
        assert_eq!(
            call(&slot, &ctx, Hook::Helo, Some(b"mx.test")),
            Verdict::Accept.code()
        );
        assert_eq!(
            call(&slot, &ctx, Hook::Rcpt, Some(b"a@b")),
            Verdict::Reject.code()
        );
        assert_eq!(
            call(&slot, &ctx, Hook::Data, None),
            Verdict::Continue.code()
        );
        notify(&slot, &ctx, Notify::Reset);
        notify(&slot, &ctx, Notify::Close);
        assert_eq!(
            seen(&slot),
            ["init {}", "helo mx.test", "rcpt a@b", "close"]
        );
        assert_eq!(host.reply(), Some((550, "5.1.1 nobody".to_string())));
    }

    #[test]
    fn a_refused_config_fails_the_load_and_hooks_then_fail() {
        let host = MockHost::new();
        let ctx = host.ctx();
        let slot = Slot::<Probe>::new();
        assert_eq!(init(&slot, &ctx, Some(b"bad")), 1);
        assert!(
            host.logs()
                .iter()
                .any(|(l, m)| *l == Level::Error && m.contains("bad config"))
        );
        assert_eq!(init(&slot, &ctx, Some(&[0xff, 0xfe])), 1, "not UTF-8");
        assert_eq!(init(&slot, &ctx, None), 1, "outside the exchange buffer");
        assert_eq!(call(&slot, &ctx, Hook::Connect, None), HOOK_FAILED);
        notify(&slot, &ctx, Notify::Close); // must not panic without a filter
    }

    #[test]
    fn bad_arguments_fail_the_hook_instead_of_reaching_the_filter() {
        let host = MockHost::new();
        let ctx = host.ctx();
        let slot = Slot::new();
        assert_eq!(init::<Probe>(&slot, &ctx, Some(b"")), 0);
        assert_eq!(call(&slot, &ctx, Hook::Rcpt, Some(b"a\xff@b")), HOOK_FAILED);
        assert_eq!(call(&slot, &ctx, Hook::Rcpt, None), HOOK_FAILED);
        assert_eq!(seen(&slot), ["init "], "the filter saw neither");
        assert_eq!(
            Verdict::from_code(HOOK_FAILED),
            None,
            "must not read as a verdict"
        );
    }

    #[test]
    fn the_exchange_buffer_only_yields_ranges_inside_it() {
        let mut x = ExchangeBuffer::new();
        let addr = x.alloc(8).unwrap();
        x.bytes_mut().copy_from_slice(b"abcdefgh");
        assert_eq!(x.arg(addr, 8), Some(&b"abcdefgh"[..]));
        assert_eq!(x.arg(addr + 2, 3), Some(&b"cde"[..]));
        assert_eq!(x.arg(addr, 9), None, "runs past the end");
        assert_eq!(x.arg(addr - 1, 2), None, "starts before it");
        assert_eq!(x.arg(addr + 4, i32::MAX), None);
        assert_eq!(x.arg(0, 0), Some(&b""[..]), "empty is empty anywhere");
        assert_eq!(x.arg(addr, -1), None);
        assert_eq!(x.alloc(-5), None);
        // Reuse: a smaller request keeps the same memory and zeroes it.
        let again = x.alloc(4).unwrap();
        assert_eq!(again, addr);
        assert_eq!(x.arg(again, 4), Some(&[0u8; 4][..]));
    }

    #[test]
    fn a_large_exchange_buffer_is_given_back_after_use() {
        let mut x = ExchangeBuffer::new();
        x.alloc(1 << 20).unwrap();
        assert!(x.buf.capacity() >= 1 << 20);
        x.alloc(16).unwrap();
        assert!(x.buf.capacity() < KEEP_CAPACITY);
    }
}
