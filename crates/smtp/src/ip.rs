//! IP addresses as text, an IPv4 address by hand: a log line or a header
//! field per message writes one, and `Ipv4Addr`'s `Display` goes through
//! the integer formatting machinery once per octet.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::stack_text::StackText;

/// An address written as its `Display` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpText(pub IpAddr);

impl fmt::Display for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => f.write_str(dotted_quad(v4).as_str()),
            IpAddr::V6(v6) => v6.fmt(f),
        }
    }
}

impl IpText {
    /// Whether `text` is this address as `Display` writes it (an IPv4
    /// address compared without parsing `text`).
    pub fn is_written_as(&self, text: &str) -> bool {
        match self.0 {
            IpAddr::V4(v4) => dotted_quad(v4).as_str() == text,
            IpAddr::V6(v6) => text.parse() == Ok(v6),
        }
    }
}

/// An IPv4 address in dotted decimal, on the stack.
pub(crate) type DottedQuad = StackText<15>;

/// `ip` as `Display` writes it.
pub(crate) fn dotted_quad(ip: Ipv4Addr) -> DottedQuad {
    let mut quad = DottedQuad::new();
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            quad.push(b".");
        }
        quad.number(octet.into(), 1);
    }
    quad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn written_as_display_writes_it(octets in any::<[u8; 4]>(), v6 in any::<[u16; 8]>()) {
            let v4 = Ipv4Addr::from(octets);
            prop_assert_eq!(IpText(v4.into()).to_string(), v4.to_string());
            let quad = dotted_quad(v4);
            prop_assert_eq!(quad.as_str(), v4.to_string());
            let v6 = std::net::Ipv6Addr::from(v6);
            prop_assert_eq!(IpText(v6.into()).to_string(), v6.to_string());
            prop_assert!(IpText(v4.into()).is_written_as(&v4.to_string()));
            prop_assert!(IpText(v6.into()).is_written_as(&v6.to_string()));
            let other = Ipv4Addr::from(u32::from(v4).wrapping_add(1));
            prop_assert!(!IpText(v4.into()).is_written_as(&other.to_string()));
            let padded = format!("{} ", v4);
            prop_assert!(!IpText(v4.into()).is_written_as(&padded));
        }
    }
}
