//! The ABI's imports as one trait, so that [`Ctx`](crate::Ctx) holds the
//! buffer protocol (lengths, -1, grow and retry) once for both backends: the
//! real host on wasm32 and the test double elsewhere.

/// The imports of module `sluice`, with strings and buffers as slices. Return
/// values are exactly the ABI's (lengths, -1 for none, DNS codes).
pub(crate) trait RawHost {
    fn get_property(&self, name: &[u8], buf: &mut [u8]) -> i32;
    fn is_local_domain(&self, domain: &[u8]) -> i32;
    fn get_header(&self, name: &[u8], index: i32, buf: &mut [u8]) -> i32;
    fn get_body(&self, offset: i32, buf: &mut [u8]) -> i32;
    fn set_reply(&self, code: i32, text: &[u8]);
    fn add_header(&self, name: &[u8], value: &[u8]);
    fn add_score(&self, symbol: &[u8], score: f64);
    fn note_get(&self, scope: i32, key: &[u8], buf: &mut [u8]) -> i32;
    fn note_set(&self, scope: i32, key: &[u8], value: &[u8]);
    fn log(&self, level: i32, message: &[u8]);
    fn now_ms(&self) -> i64;
    fn dns_lookup(&self, qtype: i32, name: &[u8], buf: &mut [u8]) -> i32;
    fn kv_get(&self, key: &[u8], buf: &mut [u8]) -> i32;
    fn kv_set(&self, key: &[u8], value: &[u8], ttl_secs: i32);
    fn kv_incr(&self, key: &[u8], delta: i64, ttl_secs: i32) -> i64;
}

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::WasmHost;
