//! The plugin ABI v1 (`plugins/ABI.md`): export names, their signatures, and
//! the checks a module must pass before it is loaded.

use wasmtime::{ExternType, FuncType, Module, ValType};

use crate::error::AbiError;

/// Module name of the host functions.
pub(crate) const IMPORT_MODULE: &str = "sluice";
pub(crate) const MEMORY: &str = "memory";
pub(crate) const MARKER: &str = "sluice_abi_v1";
pub(crate) const INIT: &str = "sluice_init";
pub(crate) const ALLOC: &str = "sluice_alloc";
/// Optional: the hooks the plugin's configuration needs, as a bit mask.
pub(crate) const HOOKS: &str = "sluice_hooks";

/// The hook exports, one per stage of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Reset,
    Close,
}

impl Hook {
    pub const ALL: [Hook; 7] = [
        Hook::Connect,
        Hook::Helo,
        Hook::Mail,
        Hook::Rcpt,
        Hook::Data,
        Hook::Reset,
        Hook::Close,
    ];

    pub fn export(self) -> &'static str {
        match self {
            Hook::Connect => "sluice_on_connect",
            Hook::Helo => "sluice_on_helo",
            Hook::Mail => "sluice_on_mail",
            Hook::Rcpt => "sluice_on_rcpt",
            Hook::Data => "sluice_on_data",
            Hook::Reset => "sluice_on_reset",
            Hook::Close => "sluice_on_close",
        }
    }

    /// The short name used in logs and test reports.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Helo => "helo",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::Data => "data",
            Hook::Reset => "reset",
            Hook::Close => "close",
        }
    }

    /// Whether the hook gets a string (written through `sluice_alloc`).
    pub(crate) fn takes_string(self) -> bool {
        matches!(self, Hook::Helo | Hook::Mail | Hook::Rcpt)
    }

    /// Whether the hook returns a verdict (reset and close only observe).
    pub(crate) fn has_verdict(self) -> bool {
        !matches!(self, Hook::Reset | Hook::Close)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Its bit in `sluice_hooks`' mask (bit 0 connect … bit 6 close).
    pub(crate) fn bit(self) -> i32 {
        1 << self.index()
    }

    /// (number of i32 parameters, number of i32 results)
    fn signature(self) -> (usize, usize) {
        match (self.takes_string(), self.has_verdict()) {
            (true, _) => (2, 1),
            (false, true) => (0, 1),
            (false, false) => (0, 0),
        }
    }
}

/// A hook's result value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawVerdict {
    Continue,
    Accept,
    Reject,
    Tempfail,
    Disconnect,
    Discard,
    Quarantine,
}

impl RawVerdict {
    pub(crate) fn from_i32(v: i32) -> Option<RawVerdict> {
        Some(match v {
            0 => RawVerdict::Continue,
            1 => RawVerdict::Accept,
            2 => RawVerdict::Reject,
            3 => RawVerdict::Tempfail,
            4 => RawVerdict::Disconnect,
            5 => RawVerdict::Discard,
            6 => RawVerdict::Quarantine,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RawVerdict::Continue => "CONTINUE",
            RawVerdict::Accept => "ACCEPT",
            RawVerdict::Reject => "REJECT",
            RawVerdict::Tempfail => "TEMPFAIL",
            RawVerdict::Disconnect => "DISCONNECT",
            RawVerdict::Discard => "DISCARD",
            RawVerdict::Quarantine => "QUARANTINE",
        }
    }
}

/// Which optional exports a module has, checked against the ABI.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exports {
    pub hooks: [bool; 7],
    pub init: bool,
    pub alloc: bool,
    /// `sluice_hooks`: the module says which of its hooks its configuration
    /// needs.
    pub hook_mask: bool,
}

impl Exports {
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks[hook.index()]
    }

    /// Leaves out the hooks `mask` does not name; the hooks it names that
    /// are not exported stay out.
    pub fn narrow(&mut self, mask: i32) {
        for hook in Hook::ALL {
            if mask & hook.bit() == 0 {
                self.hooks[hook.index()] = false;
            }
        }
    }
}

/// Checks the module's exports against ABI v1; the error says what is wrong.
pub(crate) fn validate(module: &Module) -> Result<Exports, AbiError> {
    let mut exports = Exports::default();
    let mut memory = false;
    let mut marker = false;
    for export in module.exports() {
        let name = export.name();
        let ty = export.ty();
        match name {
            MEMORY => match ty {
                ExternType::Memory(m) if m.is_64() => {
                    return Err(AbiError::BadMemory { memory64: true });
                }
                ExternType::Memory(_) => memory = true,
                _ => return Err(AbiError::BadMemory { memory64: false }),
            },
            MARKER => {
                check_func(name, &ty, (0, 0))?;
                marker = true;
            }
            INIT => {
                check_func(name, &ty, (2, 1))?;
                exports.init = true;
            }
            ALLOC => {
                check_func(name, &ty, (1, 1))?;
                exports.alloc = true;
            }
            HOOKS => {
                check_func(name, &ty, (0, 1))?;
                exports.hook_mask = true;
            }
            _ => {
                if let Some(hook) = Hook::ALL.into_iter().find(|h| h.export() == name) {
                    check_func(name, &ty, hook.signature())?;
                    exports.hooks[hook.index()] = true;
                }
            }
        }
    }
    if !marker {
        return Err(AbiError::NoMarker);
    }
    if !memory {
        return Err(AbiError::NoMemory);
    }
    let needs_alloc = exports.init
        || Hook::ALL
            .into_iter()
            .any(|h| h.takes_string() && exports.has(h));
    if needs_alloc && !exports.alloc {
        return Err(AbiError::NoAlloc);
    }
    Ok(exports)
}

/// Every value in ABI v1's exports is an i32; `(params, results)` counts them.
fn check_func(
    name: &str,
    ty: &ExternType,
    (params, results): (usize, usize),
) -> Result<(), AbiError> {
    let ExternType::Func(func) = ty else {
        return Err(AbiError::NotAFunction {
            export: name.to_owned(),
        });
    };
    fn all_i32(types: impl ExactSizeIterator<Item = ValType>, n: usize) -> bool {
        types.len() == n && { types }.all(|t| matches!(t, ValType::I32))
    }
    if all_i32(func.params(), params) && all_i32(func.results(), results) {
        return Ok(());
    }
    let i32s = |n: usize| vec!["i32"; n].join(", ");
    Err(AbiError::WrongSignature {
        export: name.to_owned(),
        found: show(func),
        wanted: format!("({}) -> ({})", i32s(params), i32s(results)),
    })
}

fn show(func: &FuncType) -> String {
    let list = |types: &mut dyn Iterator<Item = ValType>| {
        types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "({}) -> ({})",
        list(&mut func.params()),
        list(&mut func.results())
    )
}
