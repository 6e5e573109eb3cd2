//! `Cidr`: an IPv4 or IPv6 prefix whose host bits are zero, with the arithmetic IPAM and routing need.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Address family. IPv4 addresses live in the low 32 bits of a `u128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Number of bits in an address of this family.
    pub const fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The address with integer value `value` (which must fit the family's width).
    pub fn addr(self, value: u128) -> IpAddr {
        match self {
            // Truncation is the intent: callers keep IPv4 values below 2^32.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The integer value of an address.
pub fn addr_value(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Why a CIDR could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("malformed CIDR {input:?}: expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/64")]
    Malformed { input: String },
    #[error("CIDR {input:?}: prefix length {len} is longer than {width} bits")]
    PrefixTooLong { input: String, len: u32, width: u8 },
    #[error("CIDR {input:?} has host bits set; did you mean {suggestion}?")]
    HostBitsSet { input: String, suggestion: Cidr },
}

/// A prefix: `family`, a base address whose host bits are zero, and a prefix length no longer than the family width.
///
/// Ordering is by family, then base address, then prefix length, so sorting a list of
/// disjoint prefixes puts them in address order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    family: Family,
    // The base address split in two halves keeps the type at 24 bytes (a u128 would align it to
    // 32); field order keeps the derived ordering equal to (family, base, len).
    base_hi: u64,
    base_lo: u64,
    len: u8,
}

impl Cidr {
    const fn raw(family: Family, base: u128, len: u8) -> Cidr {
        Cidr { family, base_hi: (base >> 64) as u64, base_lo: base as u64, len }
    }

    const fn base(&self) -> u128 {
        ((self.base_hi as u128) << 64) | self.base_lo as u128
    }

    /// Builds a prefix, refusing host bits (use [`Cidr::containing`] to mask them off).
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, CidrError> {
        let family = Family::of(addr);
        let input = format!("{addr}/{len}");
        if len > family.width() {
            return Err(CidrError::PrefixTooLong { input, len: len.into(), width: family.width() });
        }
        let masked = Cidr::containing(addr, len);
        if masked.base() != addr_value(addr) {
            return Err(CidrError::HostBitsSet { input, suggestion: masked });
        }
        Ok(masked)
    }

    /// The prefix of length `len` (clamped to the family width) that contains `addr`.
    pub fn containing(addr: IpAddr, len: u8) -> Cidr {
        let family = Family::of(addr);
        let len = len.min(family.width());
        let base = addr_value(addr) & network_mask(family, len);
        Cidr::raw(family, base, len)
    }

    /// Builds a prefix from raw parts; `None` if the length is too long or host bits are set.
    pub fn from_parts(family: Family, base: u128, len: u8) -> Option<Cidr> {
        if len > family.width() || base & !network_mask(family, len) != 0 {
            return None;
        }
        Some(Cidr::raw(family, base, len))
    }

    /// The single-address prefix for `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        let family = Family::of(addr);
        Cidr::raw(family, addr_value(addr), family.width())
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Number of host bits: the prefix holds 2^host_bits addresses.
    pub fn host_bits(&self) -> u8 {
        self.family.width() - self.len
    }

    /// Integer value of the first address.
    pub fn first(&self) -> u128 {
        self.base()
    }

    /// Integer value of the last address.
    pub fn last(&self) -> u128 {
        self.base() | !network_mask(self.family, self.len) & family_mask(self.family)
    }

    pub fn network(&self) -> IpAddr {
        self.family.addr(self.base())
    }

    /// The address at `offset` from the start, if it lies inside.
    pub fn addr_at(&self, offset: u128) -> Option<IpAddr> {
        if self.host_bits() < 128 && offset >> self.host_bits() != 0 {
            return None;
        }
        Some(self.family.addr(self.base() + offset))
    }

    /// Number of addresses, saturating at `u128::MAX` for `::/0`.
    pub fn size(&self) -> u128 {
        if self.host_bits() >= 128 { u128::MAX } else { 1u128 << self.host_bits() }
    }

    pub fn contains_value(&self, family: Family, value: u128) -> bool {
        family == self.family && value & network_mask(self.family, self.len) == self.base()
    }

    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.contains_value(Family::of(addr), addr_value(addr))
    }

    /// Whether `other` lies entirely inside `self` (a prefix contains itself).
    pub fn contains(&self, other: &Cidr) -> bool {
        other.family == self.family
            && other.len >= self.len
            && self.contains_value(other.family, other.base())
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// The `index`-th subnet of length `new_len`, or `None` if it does not fit.
    pub fn subnet(&self, index: u128, new_len: u8) -> Option<Cidr> {
        if new_len < self.len || new_len > self.family.width() {
            return None;
        }
        let extra = new_len - self.len;
        if extra < 128 && index >> extra != 0 {
            return None;
        }
        let shift = self.family.width() - new_len;
        let offset = if shift >= 128 { 0 } else { index << shift };
        Some(Cidr::raw(self.family, self.base() | offset, new_len))
    }

    /// The two halves of this prefix, or `None` for a single address.
    pub fn halves(&self) -> Option<(Cidr, Cidr)> {
        let next = self.len.checked_add(1).filter(|l| *l <= self.family.width())?;
        Some((self.subnet(0, next)?, self.subnet(1, next)?))
    }

    /// The enclosing prefix one bit shorter, or `None` at length 0.
    pub fn parent(&self) -> Option<Cidr> {
        let len = self.len.checked_sub(1)?;
        Some(Cidr::raw(self.family, self.base() & network_mask(self.family, len), len))
    }
}

fn family_mask(family: Family) -> u128 {
    match family {
        Family::V4 => u128::from(u32::MAX),
        Family::V6 => u128::MAX,
    }
}

fn network_mask(family: Family, len: u8) -> u128 {
    let width = family.width();
    let host = width - len.min(width);
    let ones = if host >= 128 { 0 } else { u128::MAX << host };
    ones & family_mask(family)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        let malformed = || CidrError::Malformed { input: input.to_owned() };
        let (addr, len) = input.trim().split_once('/').ok_or_else(malformed)?;
        let addr: IpAddr = addr.parse().map_err(|_| malformed())?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let len: u32 = len.parse().map_err(|_| malformed())?;
        let width = Family::of(addr).width();
        if len > u32::from(width) {
            return Err(CidrError::PrefixTooLong { input: input.to_owned(), len, width });
        }
        // `len` fits in u8: it is at most 128.
        let len = len as u8;
        Cidr::new(addr, len).map_err(|e| match e {
            CidrError::HostBitsSet { suggestion, .. } => {
                CidrError::HostBitsSet { input: input.to_owned(), suggestion }
            }
            other => other,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expect: Result<&str, &str>) {
        let got = input.parse::<Cidr>().map(|c| c.to_string()).map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: error {got:?} lacks {want:?}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parsing() {
        check("10.0.0.0/8", Ok("10.0.0.0/8"));
        check("0.0.0.0/0", Ok("0.0.0.0/0"));
        check("10.1.2.3/32", Ok("10.1.2.3/32"));
        check("fd00::/64", Ok("fd00::/64"));
        check("::/0", Ok("::/0"));
        check("10.0.0.1/8", Err("host bits set; did you mean 10.0.0.0/8"));
        check("10.0.0.0/33", Err("prefix length 33 is longer than 32 bits"));
        check("fd00::/129", Err("longer than 128"));
        check("10.0.0.0", Err("malformed"));
        check("10.0.0.0/", Err("malformed"));
        check("10.0.0.0/+8", Err("malformed"));
        check("banana/8", Err("malformed"));
        check("10.0.0.0/99999999999", Err("malformed"));
    }

    #[test]
    fn arithmetic() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.family().addr(c.last()).to_string(), "10.255.255.255");
        assert_eq!(c.subnet(1, 9).unwrap().to_string(), "10.128.0.0/9");
        assert_eq!(c.subnet(2, 9), None);
        assert_eq!(c.halves().unwrap().1.to_string(), "10.128.0.0/9");
        assert_eq!(c.subnet(3, 10).unwrap().parent().unwrap().to_string(), "10.128.0.0/9");
        assert!(c.contains(&"10.3.0.0/16".parse().unwrap()));
        assert!(!c.contains(&"11.0.0.0/16".parse().unwrap()));
        assert!(!c.contains(&"::/0".parse().unwrap()));
        let all: Cidr = "::/0".parse().unwrap();
        assert_eq!(all.size(), u128::MAX);
        assert_eq!(all.subnet(1, 1).unwrap().to_string(), "8000::/1");
        assert_eq!(all.last(), u128::MAX);
        let one: Cidr = "10.0.0.5/32".parse().unwrap();
        assert_eq!(one.halves(), None);
        assert_eq!(one.addr_at(0).unwrap().to_string(), "10.0.0.5");
        assert_eq!(one.addr_at(1), None);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in any::<u32>(), len in 0u8..=32) {
            let c = Cidr::containing(IpAddr::V4(Ipv4Addr::from(v)), len);
            prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
            prop_assert!(c.contains_addr(IpAddr::V4(Ipv4Addr::from(v))));
        }

        #[test]
        fn halves_partition_the_parent(v in any::<u128>(), len in 0u8..128) {
            let c = Cidr::containing(IpAddr::V6(Ipv6Addr::from(v)), len);
            let (a, b) = c.halves().unwrap();
            prop_assert_eq!(a.first(), c.first());
            prop_assert_eq!(b.last(), c.last());
            prop_assert_eq!(a.last() + 1, b.first());
            prop_assert_eq!(a.parent(), Some(c));
        }
    }
}
