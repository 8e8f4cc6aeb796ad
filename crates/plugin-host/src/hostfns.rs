//! The `sluice` imports of ABI v1.
//!
//! Every pointer a plugin passes is checked against its memory; a bad one
//! traps the call (the plugin is broken, and its instance is replaced).
//! Requests the host refuses (a header with CR/LF, a note past the bounds)
//! are dropped with a warning in the plugin's log rather than trapping:
//! they come from data, not from a broken plugin.

use std::ops::Range;
use std::time::{Duration, Instant};

use wasmtime::{AsContextMut, Caller, Linker};

use crate::abi::{Hook, IMPORT_MODULE};
use crate::context::{
    HostState, LogLine, MAX_ADDED_HEADERS, MAX_LOG_LINE, MAX_LOG_LINES, MAX_SCORES,
};
use crate::dns::DnsAnswer;
use crate::engine::{Services, TICK};
use crate::error::HostCallError;

type Result<T> = wasmtime::Result<T>;
type C<'a> = Caller<'a, HostState>;

pub(crate) fn define(linker: &mut Linker<HostState>) -> Result<()> {
    let m = IMPORT_MODULE;
    linker.func_wrap(m, "get_property", get_property)?;
    linker.func_wrap(m, "is_local_domain", is_local_domain)?;
    linker.func_wrap(m, "get_header", get_header)?;
    linker.func_wrap(m, "get_body", get_body)?;
    linker.func_wrap(m, "set_reply", set_reply)?;
    linker.func_wrap(m, "add_header", add_header)?;
    linker.func_wrap(m, "add_score", add_score)?;
    linker.func_wrap(m, "note_get", note_get)?;
    linker.func_wrap(m, "note_set", note_set)?;
    linker.func_wrap(m, "log", log)?;
    linker.func_wrap(m, "now_ms", now_ms)?;
    linker.func_wrap(m, "dns_lookup", dns_lookup)?;
    linker.func_wrap(m, "kv_get", kv_get)?;
    linker.func_wrap(m, "kv_set", kv_set)?;
    linker.func_wrap(m, "kv_incr", kv_incr)?;
    Ok(())
}

fn range(memory_len: usize, ptr: i32, len: i32) -> Result<Range<usize>> {
    // Pointers are unsigned in wasm32; a negative length is a plugin bug.
    let start = ptr as u32 as usize;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|end| *end <= memory_len);
    match end {
        Some(end) => Ok(start..end),
        None => Err(wasmtime::Error::msg(format!(
            "plugin passed a bad pointer or length ({ptr}, {len})"
        ))),
    }
}

fn bytes_at(data: &[u8], ptr: i32, len: i32) -> Result<&[u8]> {
    Ok(&data[range(data.len(), ptr, len)?])
}

/// Copies what fits of `value` into the plugin's buffer and returns the full
/// length, so the plugin can call again with a larger buffer.
fn write_into(data: &mut [u8], ptr: i32, cap: i32, value: &[u8]) -> Result<i32> {
    if cap < 0 {
        return Err(wasmtime::Error::msg(format!(
            "negative buffer capacity {cap}"
        )));
    }
    let n = value.len().min(cap as usize);
    let dest = range(data.len(), ptr, n as i32)?;
    data[dest].copy_from_slice(&value[..n]);
    i32::try_from(value.len()).map_err(|_| wasmtime::Error::msg("value too long"))
}

fn split<'a>(caller: &'a mut C<'_>) -> (&'a mut [u8], &'a mut HostState) {
    let memory = caller.data().memory.expect("set before any call");
    memory.data_and_store_mut(caller)
}

/// Outside a hook (in `sluice_init`) there is no connection: calls that
/// need one answer "no value" or are ignored with a warning.
fn outside_hook(state: &mut HostState, function: &str) {
    refuse(state, format!("{function} outside a hook; ignored"));
}

/// Logs for the plugin, to tracing and, in a test run, to the report.
fn plugin_log(state: &mut HostState, level: u8, text: String) {
    if let Some(call) = state.call.as_mut()
        && call.inline
    {
        // Logged once the stage is over: if it is abandoned and run again
        // on a filter thread, the line comes from that run alone.
        if call.held_logs.len() < MAX_LOG_LINES {
            call.held_logs.push(LogLine { level, text });
        }
        return;
    }
    emit_plugin_log(&state.plugin, level, &text);
    if let Some(call) = state.call.as_mut()
        && call.capture_logs
        && call.logs.len() < MAX_LOG_LINES
    {
        call.logs.push(LogLine { level, text });
    }
}

/// A plugin's log line, at its level.
pub(crate) fn emit_plugin_log(plugin: &str, level: u8, text: &str) {
    match level {
        0 => tracing::error!(plugin, "{text}"),
        1 => tracing::warn!(plugin, "{text}"),
        2 => tracing::info!(plugin, "{text}"),
        3 => tracing::debug!(plugin, "{text}"),
        _ => tracing::trace!(plugin, "{text}"),
    }
}

fn refuse(state: &mut HostState, why: String) {
    plugin_log(state, 1, why);
}

fn get_property(
    mut caller: C<'_>,
    name_ptr: i32,
    name_len: i32,
    buf_ptr: i32,
    buf_cap: i32,
) -> Result<i32> {
    let (data, state) = split(&mut caller);
    let value = {
        // Matched as bytes: every name is ASCII, and one that is not
        // UTF-8 is unknown like any other.
        let name = bytes_at(data, name_ptr, name_len)?;
        let services = &state.services;
        match &state.call {
            Some(call) => call.property(name, services),
            None => (name == b"server.hostname").then_some(services.hostname.as_str().into()),
        }
    };
    match value {
        Some(value) => write_into(data, buf_ptr, buf_cap, value.as_bytes()),
        None => Ok(-1),
    }
}

fn is_local_domain(mut caller: C<'_>, ptr: i32, len: i32) -> Result<i32> {
    let (data, state) = split(&mut caller);
    let domain = bytes_at(data, ptr, len)?;
    let local = match std::str::from_utf8(domain) {
        // Address literals are never ours: relaying to [192.0.2.1] is relaying.
        Ok(domain) if !domain.starts_with('[') && !domain.is_empty() => {
            state.services.directory.is_local_domain_name(domain)
        }
        _ => false,
    };
    Ok(local as i32)
}

fn get_header(
    mut caller: C<'_>,
    name_ptr: i32,
    name_len: i32,
    index: i32,
    buf_ptr: i32,
    buf_cap: i32,
) -> Result<i32> {
    let (data, state) = split(&mut caller);
    let message = state.call.as_ref().and_then(|c| c.message.clone());
    let value = {
        let name = bytes_at(data, name_ptr, name_len)?;
        match (std::str::from_utf8(name), usize::try_from(index), &message) {
            (Ok(name), Ok(index), Some(message)) => message.header(name, index).map(str::to_owned),
            _ => None,
        }
    };
    match value {
        Some(value) => write_into(data, buf_ptr, buf_cap, value.as_bytes()),
        None => Ok(-1),
    }
}

fn get_body(mut caller: C<'_>, offset: i32, buf_ptr: i32, buf_cap: i32) -> Result<i32> {
    let (data, state) = split(&mut caller);
    let Some(message) = state.call.as_ref().and_then(|c| c.message.clone()) else {
        return Ok(0);
    };
    let offset = usize::try_from(offset)
        .map_err(|_| wasmtime::Error::msg(format!("negative body offset {offset}")))?;
    let rest = message.bytes.get(offset..).unwrap_or_default();
    let cap =
        usize::try_from(buf_cap).map_err(|_| wasmtime::Error::msg("negative buffer capacity"))?;
    let n = rest.len().min(cap);
    let dest = range(data.len(), buf_ptr, n as i32)?;
    data[dest].copy_from_slice(&rest[..n]);
    Ok(n as i32)
}

fn set_reply(mut caller: C<'_>, code: i32, text_ptr: i32, text_len: i32) -> Result<()> {
    let (data, state) = split(&mut caller);
    let text = String::from_utf8_lossy(bytes_at(data, text_ptr, text_len)?).into_owned();
    match state.call.as_mut() {
        Some(call) => call.reply = Some((code, text)),
        None => outside_hook(state, "set_reply"),
    }
    Ok(())
}

/// RFC 5322 §2.1.1: a line is at most 998 octets; a longer field would have
/// to be folded, which is the plugin's business, not ours.
const MAX_FIELD_LINE: usize = 998;

fn add_header(
    mut caller: C<'_>,
    name_ptr: i32,
    name_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> Result<()> {
    let (data, state) = split(&mut caller);
    let name = String::from_utf8_lossy(bytes_at(data, name_ptr, name_len)?).into_owned();
    let value = String::from_utf8_lossy(bytes_at(data, value_ptr, value_len)?).into_owned();
    let Some(call) = state.call.as_mut() else {
        outside_hook(state, "add_header");
        return Ok(());
    };
    let why = if call.hook != Hook::Data {
        Some("add_header outside the data hook".to_owned())
    } else if !sluice_filter::valid_header_field(&name, "") {
        Some(format!("add_header: invalid field name {name:?}"))
    } else if !sluice_filter::valid_header_field(&name, &value) {
        Some(format!("add_header: CR or LF in the value of {name}"))
    } else if name.len() + 2 + value.len() > MAX_FIELD_LINE {
        Some(format!(
            "add_header: {name} longer than {MAX_FIELD_LINE} octets"
        ))
    } else if call.headers.len() >= MAX_ADDED_HEADERS {
        Some(format!("add_header: more than {MAX_ADDED_HEADERS} fields"))
    } else {
        call.headers.push((name, value));
        None
    };
    if let Some(why) = why {
        refuse(state, format!("{why}; ignored"));
    }
    Ok(())
}

fn add_score(mut caller: C<'_>, sym_ptr: i32, sym_len: i32, score: f64) -> Result<()> {
    let (data, state) = split(&mut caller);
    let symbol = String::from_utf8_lossy(bytes_at(data, sym_ptr, sym_len)?).into_owned();
    let Some(call) = state.call.as_mut() else {
        outside_hook(state, "add_score");
        return Ok(());
    };
    let why = if !score.is_finite() {
        Some(format!("add_score: {symbol} is not a finite number"))
    } else if symbol.is_empty()
        || symbol.len() > 64
        || !symbol.bytes().all(|b| b.is_ascii_graphic())
    {
        Some(format!("add_score: invalid symbol {symbol:?}"))
    } else if call.scores.len() >= MAX_SCORES {
        Some(format!("add_score: more than {MAX_SCORES} symbols"))
    } else {
        call.scores.push((symbol, score));
        None
    };
    if let Some(why) = why {
        refuse(state, format!("{why}; ignored"));
    }
    Ok(())
}

fn note_get(
    mut caller: C<'_>,
    scope: i32,
    key_ptr: i32,
    key_len: i32,
    buf_ptr: i32,
    buf_cap: i32,
) -> Result<i32> {
    let (data, state) = split(&mut caller);
    let value = {
        let key = bytes_at(data, key_ptr, key_len)?;
        let Some(conn) = state.call.as_ref().map(|c| c.conn.clone()) else {
            return Ok(-1);
        };
        let mut conn_state = conn.state();
        conn_state
            .hooks
            .notes(scope)
            .and_then(|notes| notes.get(key))
            .map(<[u8]>::to_vec)
    };
    match value {
        Some(value) => write_into(data, buf_ptr, buf_cap, &value),
        None => Ok(-1),
    }
}

fn note_set(
    mut caller: C<'_>,
    scope: i32,
    key_ptr: i32,
    key_len: i32,
    val_ptr: i32,
    val_len: i32,
) -> Result<()> {
    let (data, state) = split(&mut caller);
    let key = bytes_at(data, key_ptr, key_len)?;
    let value = bytes_at(data, val_ptr, val_len)?;
    let Some(conn) = state.call.as_ref().map(|c| c.conn.clone()) else {
        outside_hook(state, "note_set");
        return Ok(());
    };
    let stored = match conn.state().hooks.notes(scope) {
        Some(notes) => notes.set(key, value),
        None => false,
    };
    if !stored {
        let key = String::from_utf8_lossy(key).into_owned();
        refuse(
            state,
            format!(
                "note_set: scope {scope}, key {key:?} refused (bad scope or too large); ignored"
            ),
        );
    }
    Ok(())
}

fn log(mut caller: C<'_>, level: i32, ptr: i32, len: i32) -> Result<()> {
    let (data, state) = split(&mut caller);
    let bytes = bytes_at(data, ptr, len)?;
    let bytes = &bytes[..bytes.len().min(MAX_LOG_LINE)];
    // The plugin's text must not forge log lines of its own.
    let text = String::from_utf8_lossy(bytes).replace(['\r', '\n'], " ");
    plugin_log(state, level.clamp(0, 4) as u8, text);
    Ok(())
}

fn now_ms(mut caller: C<'_>) -> Result<i64> {
    Ok(match caller.data_mut().call.as_mut() {
        Some(call) => call.now_ms(),
        None => crate::context::wall_clock_ms(),
    })
}

/// Runs a call that may block (DNS, a networked store). The time it takes
/// does not count against the plugin's CPU budget, but all such time in one
/// hook is bounded by the blocking budget: `None` once it is spent. On an
/// event loop nothing may wait: the hook is abandoned instead (see
/// `HostCallError::WouldBlock`), even for the embedded key-value store, as a
/// counter incremented there would be incremented again by the rerun.
fn blocking<R>(caller: &mut C<'_>, f: impl FnOnce(&Services) -> R) -> Result<Option<R>> {
    if on_event_loop(caller) {
        return Err(wasmtime::Error::new(HostCallError::WouldBlock));
    }
    let services = caller.data().services.clone();
    if caller.data().blocked >= services.blocking_budget {
        return Ok(None);
    }
    let (started, epoch) = (Instant::now(), services.clock.now());
    let result = f(&services);
    let (took, now) = (started.elapsed(), services.clock.now());
    let state = caller.data_mut();
    state.blocked += took;
    // Only a call that really waited moves the deadline: a plugin looping
    // on cached lookups would otherwise spend most ticks inside host calls
    // and never be cut.
    if took >= TICK {
        state.deadline += now - epoch;
    }
    let left = state.deadline.saturating_sub(now).max(1);
    caller.as_context_mut().set_epoch_deadline(left);
    Ok(Some(result))
}

fn dns_lookup(
    mut caller: C<'_>,
    qtype: i32,
    name_ptr: i32,
    name_len: i32,
    buf_ptr: i32,
    buf_cap: i32,
) -> Result<i32> {
    let name = {
        let (data, _) = split(&mut caller);
        String::from_utf8_lossy(bytes_at(data, name_ptr, name_len)?).into_owned()
    };
    let qtype = u16::try_from(qtype).unwrap_or(0);
    // On an event loop a cached answer serves; anything else would wait.
    let cached = if on_event_loop(&caller) {
        caller.data().services.dns.cached(qtype, &name)
    } else {
        None
    };
    let answer = match cached {
        Some(answer) => answer,
        None => blocking(&mut caller, |s| s.dns.lookup(qtype, &name))?.unwrap_or(DnsAnswer::Failed),
    };
    match answer {
        DnsAnswer::Records(text) => {
            let (data, _) = split(&mut caller);
            write_into(data, buf_ptr, buf_cap, text.as_bytes())
        }
        DnsAnswer::NoData => Ok(0),
        DnsAnswer::NxDomain => Ok(-3),
        DnsAnswer::Failed => Ok(-2),
    }
}

fn ttl(secs: i32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs as u64))
}

fn kv_failed(e: sluice_kv::KvError) -> wasmtime::Error {
    wasmtime::Error::new(HostCallError::Kv(e))
}

fn budget_spent() -> wasmtime::Error {
    wasmtime::Error::new(HostCallError::BlockingBudget)
}

/// The hook runs on an event loop, where nothing may wait.
fn on_event_loop(caller: &C<'_>) -> bool {
    caller.data().call.as_ref().is_some_and(|c| c.inline)
}

fn kv_get(
    mut caller: C<'_>,
    key_ptr: i32,
    key_len: i32,
    buf_ptr: i32,
    buf_cap: i32,
) -> Result<i32> {
    let key = bytes_at(split(&mut caller).0, key_ptr, key_len)?.to_vec();
    let value = blocking(&mut caller, |s| s.kv.get(&key))?
        .ok_or_else(budget_spent)?
        .map_err(kv_failed)?;
    match value {
        Some(value) => write_into(split(&mut caller).0, buf_ptr, buf_cap, &value),
        None => Ok(-1),
    }
}

fn kv_set(
    mut caller: C<'_>,
    key_ptr: i32,
    key_len: i32,
    val_ptr: i32,
    val_len: i32,
    ttl_secs: i32,
) -> Result<()> {
    let (key, value) = {
        let data = split(&mut caller).0;
        (
            bytes_at(data, key_ptr, key_len)?.to_vec(),
            bytes_at(data, val_ptr, val_len)?.to_vec(),
        )
    };
    blocking(&mut caller, |s| s.kv.set(&key, &value, ttl(ttl_secs)))?
        .ok_or_else(budget_spent)?
        .map_err(kv_failed)
}

fn kv_incr(
    mut caller: C<'_>,
    key_ptr: i32,
    key_len: i32,
    delta: i64,
    ttl_secs: i32,
) -> Result<i64> {
    let key = bytes_at(split(&mut caller).0, key_ptr, key_len)?.to_vec();
    blocking(&mut caller, |s| s.kv.incr(&key, delta, ttl(ttl_secs)))?
        .ok_or_else(budget_spent)?
        .map_err(kv_failed)
}
