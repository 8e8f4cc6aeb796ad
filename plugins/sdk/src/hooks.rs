//! [`Hooks`]: the hooks a filter's configuration needs (ABI.md,
//! `sluice_hooks`).

use core::ops::{BitOr, Sub};

/// A set of hooks, for [`Filter::hooks`](crate::Filter::hooks): the host
/// never calls a hook left out, as if it were not exported, which saves the
/// call and its argument's copy for every message when a configuration
/// turns a check off.
///
/// ```
/// use sluice_plugin_sdk::Hooks;
/// let needed = Hooks::ALL - Hooks::RCPT;
/// assert!(needed.contains(Hooks::DATA) && !needed.contains(Hooks::RCPT));
/// assert_eq!((Hooks::MAIL | Hooks::RCPT).bits(), 0b1100);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks(u8);

impl Hooks {
    /// No hook.
    pub const NONE: Hooks = Hooks(0);
    /// `sluice_on_connect`.
    pub const CONNECT: Hooks = Hooks(1 << 0);
    /// `sluice_on_helo`.
    pub const HELO: Hooks = Hooks(1 << 1);
    /// `sluice_on_mail`.
    pub const MAIL: Hooks = Hooks(1 << 2);
    /// `sluice_on_rcpt`.
    pub const RCPT: Hooks = Hooks(1 << 3);
    /// `sluice_on_data`.
    pub const DATA: Hooks = Hooks(1 << 4);
    /// `sluice_on_reset`.
    pub const RESET: Hooks = Hooks(1 << 5);
    /// `sluice_on_close`.
    pub const CLOSE: Hooks = Hooks(1 << 6);
    /// Every hook: what a filter needs unless it says otherwise.
    pub const ALL: Hooks = Hooks(0x7f);

    /// Whether every hook of `other` is in the set.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    /// The ABI's bit mask: bit 0 connect, 1 helo, 2 mail, 3 rcpt, 4 data,
    /// 5 reset, 6 close.
    pub const fn bits(self) -> i32 {
        self.0 as i32
    }
}

impl BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }
}

impl Sub for Hooks {
    type Output = Hooks;
    fn sub(self, other: Hooks) -> Hooks {
        Hooks(self.0 & !other.0)
    }
}
