//! The real imports. This is the SDK's only FFI: every call passes pointers
//! and lengths of live Rust slices, and the ABI lets the host read or write
//! only inside the ranges it is given (up to `buf_cap` for output buffers),
//! so no call can touch memory Rust does not expect to change.
#![allow(unsafe_code)]

use core::marker::PhantomData;

use super::RawHost;

mod sys {
    #[link(wasm_import_module = "sluice")]
    unsafe extern "C" {
        pub fn get_property(
            name_ptr: *const u8,
            name_len: i32,
            buf_ptr: *mut u8,
            buf_cap: i32,
        ) -> i32;
        pub fn is_local_domain(ptr: *const u8, len: i32) -> i32;
        pub fn get_header(
            name_ptr: *const u8,
            name_len: i32,
            index: i32,
            buf_ptr: *mut u8,
            buf_cap: i32,
        ) -> i32;
        pub fn get_body(offset: i32, buf_ptr: *mut u8, buf_cap: i32) -> i32;
        pub fn set_reply(code: i32, text_ptr: *const u8, text_len: i32);
        pub fn add_header(name_ptr: *const u8, name_len: i32, value_ptr: *const u8, value_len: i32);
        pub fn add_score(symbol_ptr: *const u8, symbol_len: i32, score: f64);
        pub fn note_get(
            scope: i32,
            key_ptr: *const u8,
            key_len: i32,
            buf_ptr: *mut u8,
            buf_cap: i32,
        ) -> i32;
        pub fn note_set(
            scope: i32,
            key_ptr: *const u8,
            key_len: i32,
            val_ptr: *const u8,
            val_len: i32,
        );
        pub fn log(level: i32, ptr: *const u8, len: i32);
        pub fn now_ms() -> i64;
        pub fn dns_lookup(
            qtype: i32,
            name_ptr: *const u8,
            name_len: i32,
            buf_ptr: *mut u8,
            buf_cap: i32,
        ) -> i32;
        pub fn kv_get(key_ptr: *const u8, key_len: i32, buf_ptr: *mut u8, buf_cap: i32) -> i32;
        pub fn kv_set(
            key_ptr: *const u8,
            key_len: i32,
            val_ptr: *const u8,
            val_len: i32,
            ttl_secs: i32,
        );
        pub fn kv_incr(key_ptr: *const u8, key_len: i32, delta: i64, ttl_secs: i32) -> i64;
    }
}

/// A slice length as the ABI's `i32`. A wasm32 plugin's memory is capped far
/// below 2 GiB by the host, so the saturation never happens in practice; if
/// it did, the host would see a shorter range, never a longer one.
fn len(s: &[u8]) -> i32 {
    i32::try_from(s.len()).unwrap_or(i32::MAX)
}

/// The host behind the imports; the lifetime ties a [`Ctx`](crate::Ctx) to
/// the hook call it was made for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WasmHost<'a>(PhantomData<&'a ()>);

impl RawHost for WasmHost<'_> {
    fn get_property(&self, name: &[u8], buf: &mut [u8]) -> i32 {
        unsafe { sys::get_property(name.as_ptr(), len(name), buf.as_mut_ptr(), len(buf)) }
    }
    fn is_local_domain(&self, domain: &[u8]) -> i32 {
        unsafe { sys::is_local_domain(domain.as_ptr(), len(domain)) }
    }
    fn get_header(&self, name: &[u8], index: i32, buf: &mut [u8]) -> i32 {
        unsafe { sys::get_header(name.as_ptr(), len(name), index, buf.as_mut_ptr(), len(buf)) }
    }
    fn get_body(&self, offset: i32, buf: &mut [u8]) -> i32 {
        unsafe { sys::get_body(offset, buf.as_mut_ptr(), len(buf)) }
    }
    fn set_reply(&self, code: i32, text: &[u8]) {
        unsafe { sys::set_reply(code, text.as_ptr(), len(text)) }
    }
    fn add_header(&self, name: &[u8], value: &[u8]) {
        unsafe { sys::add_header(name.as_ptr(), len(name), value.as_ptr(), len(value)) }
    }
    fn add_score(&self, symbol: &[u8], score: f64) {
        unsafe { sys::add_score(symbol.as_ptr(), len(symbol), score) }
    }
    fn note_get(&self, scope: i32, key: &[u8], buf: &mut [u8]) -> i32 {
        unsafe { sys::note_get(scope, key.as_ptr(), len(key), buf.as_mut_ptr(), len(buf)) }
    }
    fn note_set(&self, scope: i32, key: &[u8], value: &[u8]) {
        unsafe { sys::note_set(scope, key.as_ptr(), len(key), value.as_ptr(), len(value)) }
    }
    fn log(&self, level: i32, message: &[u8]) {
        unsafe { sys::log(level, message.as_ptr(), len(message)) }
    }
    fn now_ms(&self) -> i64 {
        unsafe { sys::now_ms() }
    }
    fn dns_lookup(&self, qtype: i32, name: &[u8], buf: &mut [u8]) -> i32 {
        unsafe { sys::dns_lookup(qtype, name.as_ptr(), len(name), buf.as_mut_ptr(), len(buf)) }
    }
    fn kv_get(&self, key: &[u8], buf: &mut [u8]) -> i32 {
        unsafe { sys::kv_get(key.as_ptr(), len(key), buf.as_mut_ptr(), len(buf)) }
    }
    fn kv_set(&self, key: &[u8], value: &[u8], ttl_secs: i32) {
        unsafe { sys::kv_set(key.as_ptr(), len(key), value.as_ptr(), len(value), ttl_secs) }
    }
    fn kv_incr(&self, key: &[u8], delta: i64, ttl_secs: i32) -> i64 {
        unsafe { sys::kv_incr(key.as_ptr(), len(key), delta, ttl_secs) }
    }
}
