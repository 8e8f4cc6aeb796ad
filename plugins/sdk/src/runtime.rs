//! What a `no_std` wasm32 cdylib needs from somewhere: an allocator and a
//! panic handler.

use core::fmt::Write;
use core::panic::PanicInfo;

use crate::raw::{RawHost, WasmHost};

/// The allocator Rust's own std uses on wasm32: it grows memory with
/// `memory.grow` and reuses freed blocks, so an instance that serves many
/// hooks does not creep toward the host's memory limit.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Formats into a fixed stack buffer: the panic may be an allocation
/// failure, so the handler must not allocate. Longer text is cut.
struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl Write for StackBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let mut take = s.len().min(room);
        // Cut on a character boundary so the log line stays UTF-8.
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        for &b in &s.as_bytes()[..take] {
            // One log line per panic: line breaks in the message become spaces.
            self.buf[self.len] = if b == b'\n' || b == b'\r' { b' ' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

/// Logs the panic, then traps: the host fails the hook by the plugin's
/// `on_error` policy and replaces the instance, whose state may be broken.
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut out = StackBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = match info.location() {
        Some(at) => write!(
            out,
            "plugin panicked at {}:{}: {}",
            at.file(),
            at.line(),
            info.message()
        ),
        None => write!(out, "plugin panicked: {}", info.message()),
    };
    WasmHost::default().log(0, &out.buf[..out.len]);
    core::arch::wasm32::unreachable()
}
