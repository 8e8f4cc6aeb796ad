//! Write filter plugins for the Sluice MTA in Rust.
//!
//! A Sluice filter plugin is a WebAssembly core module built for
//! `wasm32-unknown-unknown` that speaks the ABI in `plugins/ABI.md` (version 1).
//! This crate hides that ABI: implement [`Filter`], call [`export_filter!`], and
//! the crate emits the exports (`sluice_abi_v1`, `sluice_alloc`, `sluice_init`,
//! `sluice_hooks`, `sluice_on_*`), a global allocator and a panic handler that traps.
//! Host services (properties, headers, body, replies, scores, notes, logging,
//! the clock, DNS, the shared key-value store) are methods of [`Ctx`].
//!
//! The crate is `no_std` + `alloc`. It also builds for the host target, where
//! [`Ctx`] talks to [`testing::MockHost`], so a plugin's logic is unit-tested
//! with a plain `cargo test`.
//!
//! # A complete plugin
//!
//! ```
//! #![no_std]
//! extern crate alloc;
//!
//! use sluice_plugin_sdk::{export_filter, Ctx, Filter, InitError, Verdict};
//!
//! /// Refuses mail for `noreply@…` recipients at one of our domains.
//! struct NoReply;
//!
//! impl Filter for NoReply {
//!     fn init(_config: &str) -> Result<Self, InitError> {
//!         Ok(NoReply)
//!     }
//!
//!     fn on_rcpt(&mut self, ctx: &Ctx<'_>, forward_path: &str) -> Verdict {
//!         match forward_path.rsplit_once('@') {
//!             Some((local, domain))
//!                 if local.eq_ignore_ascii_case("noreply") && ctx.is_local_domain(domain) =>
//!             {
//!                 ctx.reject(550, "5.1.1 This address does not receive mail")
//!             }
//!             _ => Verdict::Continue,
//!         }
//!     }
//! }
//!
//! export_filter!(NoReply);
//!
//! // On the host target the same code runs against the SDK's test double:
//! # fn main() {
//! use sluice_plugin_sdk::testing::MockHost;
//!
//! let host = MockHost::new().with_local_domain("example.org");
//! let mut filter = NoReply::init("{}").unwrap();
//! assert_eq!(filter.on_rcpt(&host.ctx(), "noreply@example.org"), Verdict::Reject);
//! assert_eq!(host.reply(), Some((550, "5.1.1 This address does not receive mail".into())));
//! assert_eq!(filter.on_rcpt(&host.ctx(), "noreply@elsewhere.test"), Verdict::Continue);
//! # }
//! ```
//!
//! Build it with `plugins/build.sh` (or `cargo build --release --target
//! wasm32-unknown-unknown` with a `cdylib` crate type); `docs/plugins.md` walks
//! through building, configuring and testing a plugin.
//!
//! # Rules that come from the ABI
//!
//! * A plugin keeps no transaction state in its own memory: consecutive hooks
//!   of one transaction may run on different instances. Keep such state in
//!   notes ([`Ctx::note`], [`Ctx::set_note`]) or in the key-value store.
//! * A panic, an allocation failure or an endless loop traps; the host then
//!   applies the plugin's `on_error` policy (temporary failure by default) and
//!   replaces the instance.
//!
//! # Features
//!
//! * `runtime` (default): on wasm32, install `dlmalloc` as the global allocator
//!   and a panic handler. Turn it off for a build that links `std`.
//! * `json`: [`config::from_json`], which reads `[plugin.config]` with serde.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

pub mod auth;
#[cfg(feature = "json")]
pub mod config;
mod ctx;
mod dns;
mod filter;
mod hooks;
mod raw;
#[cfg(all(target_arch = "wasm32", feature = "runtime"))]
mod runtime;
pub mod syntax;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod verdict;

#[doc(hidden)]
pub mod __private;

pub use auth::{AuthResult, DkimSignature, Dmarc, DmarcPolicy, Spf};
pub use ctx::{Ctx, Level, Recipient, RecipientDomain, Scope};
pub use dns::{DnsResult, MxRecord, Qtype};
pub use filter::{Filter, InitError};
pub use hooks::Hooks;
pub use verdict::Verdict;

/// Exports a [`Filter`] implementation as a Sluice plugin.
///
/// `export_filter!(MyFilter)` emits, on wasm32, the ABI's exports:
/// `sluice_abi_v1`, `sluice_alloc`, `sluice_init`, `sluice_hooks` (which
/// answers with [`Filter::hooks`]) and all seven hooks
/// (`sluice_on_connect`, `_helo`, `_mail`, `_rcpt`, `_data`, `_reset`,
/// `_close`). To export only some hooks (the host then skips the others
/// entirely), list them:
///
/// ```
/// # use sluice_plugin_sdk::{export_filter, Filter, InitError};
/// # struct MyFilter;
/// # impl Filter for MyFilter {
/// #     fn init(_: &str) -> Result<Self, InitError> { Ok(MyFilter) }
/// # }
/// export_filter!(MyFilter, hooks: [rcpt, data]);
/// ```
///
/// A hook left out of the list is never called, even if the type implements
/// it. Use the macro once per crate. On other targets it only checks that
/// the type implements [`Filter`], so host-side tests build the same source.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        $crate::export_filter!($filter, hooks: [connect, helo, mail, rcpt, data, reset, close]);
    };
    ($filter:ty, hooks: [$($hook:ident),* $(,)?]) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)] // `no_mangle`: the ABI names these exports.
        const _: () = {
            static FILTER: $crate::__private::Slot<$filter> = $crate::__private::Slot::new();

            #[unsafe(no_mangle)]
            extern "C" fn sluice_abi_v1() {}

            #[unsafe(no_mangle)]
            extern "C" fn sluice_alloc(size: i32) -> i32 {
                $crate::__private::wasm_alloc(size)
            }

            #[unsafe(no_mangle)]
            extern "C" fn sluice_init(ptr: i32, len: i32) -> i32 {
                $crate::__private::wasm_init(&FILTER, ptr, len)
            }

            #[unsafe(no_mangle)]
            extern "C" fn sluice_hooks() -> i32 {
                $crate::__private::wasm_hooks(&FILTER)
            }

            $( $crate::__sluice_export_hook!($hook, FILTER); )*
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            const fn assert_filter<F: $crate::Filter>() {}
            assert_filter::<$filter>();
        };
    };
}

/// One hook export; used by [`export_filter!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_export_hook {
    (connect, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_connect() -> i32 {
            $crate::__private::wasm_hook(&$slot, $crate::__private::Hook::Connect, 0, 0)
        }
    };
    (helo, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_helo(ptr: i32, len: i32) -> i32 {
            $crate::__private::wasm_hook(&$slot, $crate::__private::Hook::Helo, ptr, len)
        }
    };
    (mail, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_mail(ptr: i32, len: i32) -> i32 {
            $crate::__private::wasm_hook(&$slot, $crate::__private::Hook::Mail, ptr, len)
        }
    };
    (rcpt, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_rcpt(ptr: i32, len: i32) -> i32 {
            $crate::__private::wasm_hook(&$slot, $crate::__private::Hook::Rcpt, ptr, len)
        }
    };
    (data, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_data() -> i32 {
            $crate::__private::wasm_hook(&$slot, $crate::__private::Hook::Data, 0, 0)
        }
    };
    (reset, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_reset() {
            $crate::__private::wasm_notify(&$slot, $crate::__private::Notify::Reset)
        }
    };
    (close, $slot:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn sluice_on_close() {
            $crate::__private::wasm_notify(&$slot, $crate::__private::Notify::Close)
        }
    };
}
