//! LNet networks, NIDs and NID ranges, with the `lctl nodemap_add_range` expression
//! syntax (`192.168.0.[0-255]@tcp`, `*@o2ib3`).
//!
//! IPv6 ("large") NIDs such as `2001:db8::1@tcp` are supported as single NIDs. Lustre
//! 2.16's `nodemap_parse_range()` only accepts an IPv6 netmask of `/128` (one NID), so
//! wider IPv6 ranges are refused by [`NidRange::to_lctl_expr`] with a clear error.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, model_err};

/// The LNet network driver kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetType {
    /// `socklnd` (`tcp`).
    Tcp,
    /// `o2iblnd` (`o2ib`, InfiniBand / RoCE).
    O2ib,
}

impl NetType {
    /// `tcp` or `o2ib`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetType::Tcp => "tcp",
            NetType::O2ib => "o2ib",
        }
    }
}

/// An LNet network: driver kind plus network number (`tcp` = `tcp0`, `o2ib3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LNet {
    /// Driver kind.
    pub kind: NetType,
    /// Network number; 0 is printed without a number, as `libcfs_net2str()` does.
    pub num: u32,
}

impl LNet {
    /// `tcp` (network number 0).
    pub const TCP: LNet = LNet {
        kind: NetType::Tcp,
        num: 0,
    };
    /// `o2ib` (network number 0).
    pub const O2IB: LNet = LNet {
        kind: NetType::O2ib,
        num: 0,
    };
}

impl fmt::Display for LNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num == 0 {
            f.write_str(self.kind.as_str())
        } else {
            write!(f, "{}{}", self.kind.as_str(), self.num)
        }
    }
}

impl FromStr for LNet {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = if let Some(rest) = s.strip_prefix("o2ib") {
            (NetType::O2ib, rest)
        } else if let Some(rest) = s.strip_prefix("tcp") {
            (NetType::Tcp, rest)
        } else {
            return Err(model_err!(
                InvalidNet,
                s,
                "unsupported network type (expected tcp[N] or o2ib[N])"
            ));
        };
        let num = if rest.is_empty() {
            0
        } else {
            if !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(model_err!(
                    InvalidNet,
                    s,
                    "network number {rest:?} is not a decimal number"
                ));
            }
            rest.parse::<u32>()
                .map_err(|_| model_err!(InvalidNet, s, "network number {rest:?} is too large"))?
        };
        Ok(LNet { kind, num })
    }
}

impl TryFrom<String> for LNet {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LNet> for String {
    fn from(n: LNet) -> String {
        n.to_string()
    }
}

/// An IP-based LNet NID: `192.168.0.1@tcp`, `10.0.0.5@o2ib3`, `2001:db8::1@tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Nid {
    /// The IP address.
    pub addr: IpAddr,
    /// The LNet network.
    pub net: LNet,
}

impl fmt::Display for Nid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.net)
    }
}

impl FromStr for Nid {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, net) = s
            .rsplit_once('@')
            .ok_or_else(|| model_err!(InvalidNid, s, "missing `@<network>`"))?;
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| model_err!(InvalidNid, s, "{addr:?} is not an IPv4 or IPv6 address"))?;
        let net = net
            .parse::<LNet>()
            .map_err(|e| model_err!(InvalidNid, s, "{e}"))?;
        Ok(Nid { addr, net })
    }
}

impl TryFrom<String> for Nid {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Nid> for String {
    fn from(n: Nid) -> String {
        n.to_string()
    }
}

/// An inclusive range of NIDs on one network and one address family (`start <= end`).
///
/// The fields are public for convenience; [`NidRange::new`] checks the invariants and
/// [`NidRange::to_lctl_expr`] re-checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawNidRange")]
pub struct NidRange {
    /// First NID of the range.
    pub start: Nid,
    /// Last NID of the range (inclusive).
    pub end: Nid,
}

#[derive(Deserialize)]
struct RawNidRange {
    start: Nid,
    end: Nid,
}

impl TryFrom<RawNidRange> for NidRange {
    type Error = ModelError;
    fn try_from(r: RawNidRange) -> Result<Self, Self::Error> {
        NidRange::new(r.start, r.end)
    }
}

/// Integer value of an address, with its family width in bits.
fn addr_value(a: IpAddr) -> (u128, u32) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl NidRange {
    /// Checks same network, same address family and `start <= end`.
    pub fn new(start: Nid, end: Nid) -> Result<NidRange, ModelError> {
        let shown = format!("{start}:{end}");
        if start.net != end.net {
            return Err(model_err!(
                InvalidNidRange,
                shown,
                "start and end are on different networks"
            ));
        }
        if !same_family(start.addr, end.addr) {
            return Err(model_err!(
                InvalidNidRange,
                shown,
                "start and end mix IPv4 and IPv6"
            ));
        }
        if addr_value(start.addr).0 > addr_value(end.addr).0 {
            return Err(model_err!(InvalidNidRange, shown, "start is after end"));
        }
        Ok(NidRange { start, end })
    }

    /// A range holding exactly one NID.
    pub fn single(nid: Nid) -> NidRange {
        NidRange {
            start: nid,
            end: nid,
        }
    }

    /// Builds the range covered by a CIDR block (`10.0.0.0/24`, `2001:db8::/64`) or a bare
    /// address (`/32` or `/128`) on `net`. Host bits are accepted and cleared
    /// (`10.0.0.7/24` → `10.0.0.0`–`10.0.0.255`).
    pub fn from_cidr(cidr: &str, net: LNet) -> Result<NidRange, ModelError> {
        let (addr_s, prefix_s) = match cidr.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (cidr, None),
        };
        let addr: IpAddr = addr_s.parse().map_err(|_| {
            model_err!(
                InvalidNidRange,
                cidr,
                "{addr_s:?} is not an IPv4 or IPv6 address"
            )
        })?;
        let (value, bits) = addr_value(addr);
        let prefix = match prefix_s {
            None => bits,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(model_err!(
                        InvalidNidRange,
                        cidr,
                        "prefix length {p:?} is not a number"
                    ));
                }
                let n: u32 = p.parse().map_err(|_| {
                    model_err!(InvalidNidRange, cidr, "prefix length {p:?} is not a number")
                })?;
                if n > bits {
                    return Err(model_err!(
                        InvalidNidRange,
                        cidr,
                        "prefix length {n} exceeds {bits} bits"
                    ));
                }
                n
            }
        };
        let host_bits = bits - prefix;
        let host_mask: u128 = if host_bits == 0 {
            0
        } else if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let start = value & !host_mask;
        let end = start | host_mask;
        let mk = |v: u128| -> IpAddr {
            if bits == 32 {
                IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
            } else {
                IpAddr::V6(Ipv6Addr::from(v))
            }
        };
        Ok(NidRange {
            start: Nid {
                addr: mk(start),
                net,
            },
            end: Nid { addr: mk(end), net },
        })
    }

    /// Whether the range is valid (same net, same family, start <= end).
    fn check(&self) -> Result<(), ModelError> {
        NidRange::new(self.start, self.end).map(|_| ())
    }

    /// Renders the range in `lctl nodemap_add_range --range` syntax:
    /// `192.168.0.100@tcp`, `192.168.0.[0-255]@tcp`, `10.210.[32-47].[0-255]@o2ib3`,
    /// `*@tcp` for the whole IPv4 space. Fails for ranges that the per-octet syntax cannot
    /// express exactly, and for IPv6 ranges wider than one NID.
    pub fn to_lctl_expr(&self) -> Result<String, ModelError> {
        self.check()?;
        let net = self.start.net;
        match (self.start.addr, self.end.addr) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                if s == e {
                    return Ok(format!("{s}@{net}"));
                }
                if u32::from(s) == 0 && u32::from(e) == u32::MAX {
                    return Ok(format!("*@{net}"));
                }
                let so = s.octets();
                let eo = e.octets();
                let mut parts: Vec<String> = Vec::with_capacity(4);
                let mut differing = false;
                for (a, b) in so.iter().zip(eo.iter()) {
                    if differing {
                        if *a != 0 || *b != 255 {
                            return Err(model_err!(
                                InvalidNidRange,
                                format!("{}:{}", self.start, self.end),
                                "not expressible as an lctl range (octets after the first differing one must span 0-255)"
                            ));
                        }
                        parts.push("[0-255]".to_owned());
                    } else if a == b {
                        parts.push(a.to_string());
                    } else {
                        differing = true;
                        parts.push(format!("[{a}-{b}]"));
                    }
                }
                Ok(format!("{}@{net}", parts.join(".")))
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => {
                if s == e {
                    Ok(format!("{s}@{net}"))
                } else {
                    Err(model_err!(
                        InvalidNidRange,
                        format!("{}:{}", self.start, self.end),
                        "IPv6 NID ranges are not supported by lctl nodemap_add_range (only single IPv6 NIDs)"
                    ))
                }
            }
            _ => Err(model_err!(
                InvalidNidRange,
                format!("{}:{}", self.start, self.end),
                "start and end mix IPv4 and IPv6"
            )),
        }
    }

    /// Whether `nid` is inside this range (same network and family, within bounds).
    pub fn contains(&self, nid: &Nid) -> bool {
        if nid.net != self.start.net || !same_family(nid.addr, self.start.addr) {
            return false;
        }
        let v = addr_value(nid.addr).0;
        addr_value(self.start.addr).0 <= v && v <= addr_value(self.end.addr).0
    }

    /// Whether the two ranges share at least one NID.
    pub fn overlaps(&self, other: &NidRange) -> bool {
        if self.start.net != other.start.net || !same_family(self.start.addr, other.start.addr) {
            return false;
        }
        let (s1, e1) = (addr_value(self.start.addr).0, addr_value(self.end.addr).0);
        let (s2, e2) = (addr_value(other.start.addr).0, addr_value(other.end.addr).0);
        s1.cmp(&e2) != Ordering::Greater && s2.cmp(&e1) != Ordering::Greater
    }

    /// Number of NIDs in the range (saturating at `u128::MAX`).
    pub fn len(&self) -> u128 {
        let (s, e) = (addr_value(self.start.addr).0, addr_value(self.end.addr).0);
        e.saturating_sub(s).saturating_add(1)
    }

    /// Always false: a range holds at least one NID.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One octet of an IPv4 range expression: inclusive low..=high.
fn parse_octet(expr: &str, whole: &str) -> Result<(u8, u8), ModelError> {
    let num = |t: &str| -> Result<u8, ModelError> {
        if t.is_empty() || t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(model_err!(
                InvalidNidRange,
                whole,
                "{t:?} is not an octet number"
            ));
        }
        t.parse::<u8>()
            .map_err(|_| model_err!(InvalidNidRange, whole, "octet {t} is above 255"))
    };
    if expr == "*" {
        return Ok((0, 255));
    }
    if let Some(inner) = expr.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if inner.contains(',') || inner.contains('/') {
            return Err(model_err!(
                InvalidNidRange,
                whole,
                "lists and strides like {expr:?} are not supported (only [low-high])"
            ));
        }
        let (lo, hi) = match inner.split_once('-') {
            Some((lo, hi)) => (num(lo)?, num(hi)?),
            None => {
                let v = num(inner)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(model_err!(
                InvalidNidRange,
                whole,
                "octet range {expr} is reversed"
            ));
        }
        return Ok((lo, hi));
    }
    let v = num(expr)?;
    Ok((v, v))
}

/// Parses an `lctl` NID range expression: a single NID (`192.168.0.100@tcp`,
/// `2001:db8::1@tcp`), a per-octet range (`10.210.[32-47].[0-255]@o2ib3`) or `*@net`.
/// The expression must describe one contiguous range: after the first octet that is a
/// range, every octet must be `[0-255]` (or `*`). Round-trips with
/// [`NidRange::to_lctl_expr`].
pub fn parse_nid_range_expr(s: &str) -> Result<NidRange, ModelError> {
    let (addr, net) = s
        .rsplit_once('@')
        .ok_or_else(|| model_err!(InvalidNidRange, s, "missing `@<network>`"))?;
    let net: LNet = net
        .parse()
        .map_err(|e| model_err!(InvalidNidRange, s, "{e}"))?;
    if addr == "*" {
        return NidRange::from_cidr("0.0.0.0/0", net);
    }
    if addr.contains(':') {
        let a: Ipv6Addr = addr
            .parse()
            .map_err(|_| model_err!(InvalidNidRange, s, "{addr:?} is not an IPv6 address"))?;
        return Ok(NidRange::single(Nid {
            addr: IpAddr::V6(a),
            net,
        }));
    }
    let octets: Vec<&str> = addr.split('.').collect();
    if octets.len() != 4 {
        return Err(model_err!(
            InvalidNidRange,
            s,
            "expected 4 dot-separated octets, found {}",
            octets.len()
        ));
    }
    let mut lo = [0u8; 4];
    let mut hi = [0u8; 4];
    let mut ranged = false;
    for (i, o) in octets.iter().enumerate() {
        let (l, h) = parse_octet(o, s)?;
        if ranged && (l != 0 || h != 255) {
            return Err(model_err!(
                InvalidNidRange,
                s,
                "not contiguous: octets after a range must be [0-255]"
            ));
        }
        if l != h {
            ranged = true;
        }
        if let (Some(a), Some(b)) = (lo.get_mut(i), hi.get_mut(i)) {
            *a = l;
            *b = h;
        }
    }
    Ok(NidRange {
        start: Nid {
            addr: IpAddr::V4(Ipv4Addr::from(lo)),
            net,
        },
        end: Nid {
            addr: IpAddr::V4(Ipv4Addr::from(hi)),
            net,
        },
    })
}

/// Shown as the `lctl` range expression when there is one, else as `start:end`.
impl fmt::Display for NidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_lctl_expr() {
            Ok(expr) => f.write_str(&expr),
            Err(_) => write!(f, "{}:{}", self.start, self.end),
        }
    }
}

impl FromStr for NidRange {
    type Err = ModelError;
    /// Same as [`parse_nid_range_expr`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_nid_range_expr(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nid(s: &str) -> Nid {
        s.parse().unwrap()
    }

    #[test]
    fn lnet_display_parse() {
        for (s, shown) in [
            ("tcp", "tcp"),
            ("tcp0", "tcp"),
            ("tcp1", "tcp1"),
            ("o2ib", "o2ib"),
            ("o2ib3", "o2ib3"),
        ] {
            assert_eq!(s.parse::<LNet>().unwrap().to_string(), shown);
        }
        for bad in ["", "gni", "tcpx", "tcp-1", "o2ib99999999999", "TCP"] {
            assert!(bad.parse::<LNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nid_display_parse() {
        assert_eq!(nid("192.168.0.1@tcp").to_string(), "192.168.0.1@tcp");
        assert_eq!(nid("192.168.0.1@tcp0").to_string(), "192.168.0.1@tcp");
        assert_eq!(nid("2001:db8::1@tcp").to_string(), "2001:db8::1@tcp");
        assert_eq!(nid("10.0.0.5@o2ib3").net.num, 3);
        for bad in [
            "192.168.0.1",
            "0@lo",
            "1.2.3@tcp",
            "1.2.3.4@",
            "@tcp",
            "1.2.3.4@kfi",
        ] {
            assert!(bad.parse::<Nid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_to_expr() {
        let r = NidRange::from_cidr("192.168.0.0/24", LNet::TCP).unwrap();
        assert_eq!(r.to_lctl_expr().unwrap(), "192.168.0.[0-255]@tcp");
        let r = NidRange::from_cidr("10.210.32.0/20", "o2ib3".parse().unwrap()).unwrap();
        assert_eq!(r.to_lctl_expr().unwrap(), "10.210.[32-47].[0-255]@o2ib3");
        let r = NidRange::from_cidr("192.168.0.100", LNet::TCP).unwrap();
        assert_eq!(r.to_lctl_expr().unwrap(), "192.168.0.100@tcp");
        let r = NidRange::from_cidr("10.0.0.7/8", LNet::TCP).unwrap();
        assert_eq!(r.start, nid("10.0.0.0@tcp"));
        assert_eq!(r.to_lctl_expr().unwrap(), "10.[0-255].[0-255].[0-255]@tcp");
        let r = NidRange::from_cidr("0.0.0.0/0", LNet::TCP).unwrap();
        assert_eq!(r.to_lctl_expr().unwrap(), "*@tcp");
        let r = NidRange::from_cidr("10.0.0.0/31", LNet::TCP).unwrap();
        assert_eq!(r.to_lctl_expr().unwrap(), "10.0.0.[0-1]@tcp");
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "garbage",
            "10.0.0/8",
            "/8",
        ] {
            assert!(NidRange::from_cidr(bad, LNet::TCP).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6() {
        let r = NidRange::from_cidr("2001:db8::1", LNet::TCP).unwrap();
        assert_eq!(r.to_lctl_expr().unwrap(), "2001:db8::1@tcp");
        let r = NidRange::from_cidr("2001:db8::/64", LNet::TCP).unwrap();
        let e = r.to_lctl_expr().unwrap_err().to_string();
        assert!(e.contains("IPv6"), "{e}");
        assert!(r.contains(&nid("2001:db8::ffff@tcp")));
        assert!(!r.contains(&nid("2001:db9::1@tcp")));
        assert!(NidRange::from_cidr("::/0", LNet::TCP).is_ok());
        assert_eq!(
            parse_nid_range_expr("2001:db8::1@tcp").unwrap(),
            NidRange::single(nid("2001:db8::1@tcp"))
        );
    }

    #[test]
    fn non_expressible() {
        let r = NidRange::new(nid("10.0.0.5@tcp"), nid("10.0.1.7@tcp")).unwrap();
        assert!(r.to_lctl_expr().is_err());
        assert!(NidRange::new(nid("10.0.0.5@tcp"), nid("10.0.0.1@tcp")).is_err());
        assert!(NidRange::new(nid("10.0.0.5@tcp"), nid("10.0.0.6@tcp1")).is_err());
        assert!(NidRange::new(nid("10.0.0.5@tcp"), nid("::1@tcp")).is_err());
    }

    #[test]
    fn expr_parse() {
        // Samples from lctl-nodemap.md (manual / sanity-sec test_10d).
        let r = parse_nid_range_expr("192.168.0.[1-10]@tcp").unwrap();
        assert_eq!(
            (r.start, r.end),
            (nid("192.168.0.1@tcp"), nid("192.168.0.10@tcp"))
        );
        let r = parse_nid_range_expr("10.210.[32-47].[0-255]@o2ib3").unwrap();
        assert_eq!(r.end, nid("10.210.47.255@o2ib3"));
        let r = parse_nid_range_expr("*@o2ib3").unwrap();
        assert_eq!(r.start, nid("0.0.0.0@o2ib3"));
        assert_eq!(r.end, nid("255.255.255.255@o2ib3"));
        let r = parse_nid_range_expr("192.168.0.100@tcp").unwrap();
        assert_eq!(r.start, r.end);
        for bad in [
            "192.168.[0-1].5@tcp",
            "192.168.0.[1,3]@tcp",
            "192.168.0.[5-1]@tcp",
            "192.168.0.256@tcp",
            "192.168.0@tcp",
            "192.168.0.1",
            "1.2.3.[0-255/2]@tcp",
        ] {
            assert!(parse_nid_range_expr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contains_overlaps() {
        let a = NidRange::from_cidr("10.0.0.0/24", LNet::TCP).unwrap();
        let b = NidRange::from_cidr("10.0.0.128/25", LNet::TCP).unwrap();
        let c = NidRange::from_cidr("10.0.1.0/24", LNet::TCP).unwrap();
        let d = NidRange::from_cidr("10.0.0.0/24", "tcp1".parse().unwrap()).unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&d));
        assert!(a.contains(&nid("10.0.0.255@tcp")));
        assert!(!a.contains(&nid("10.0.0.255@tcp1")));
        assert!(!a.contains(&nid("10.0.1.0@tcp")));
        assert_eq!(a.len(), 256);
    }

    #[test]
    fn serde_roundtrip() {
        let r = NidRange::from_cidr("10.0.0.0/24", LNet::TCP).unwrap();
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"start":"10.0.0.0@tcp","end":"10.0.0.255@tcp"}"#);
        assert_eq!(serde_json::from_str::<NidRange>(&j).unwrap(), r);
        assert!(
            serde_json::from_str::<NidRange>(r#"{"start":"10.0.0.9@tcp","end":"10.0.0.1@tcp"}"#)
                .is_err()
        );
    }

    fn arb_net() -> impl Strategy<Value = LNet> {
        (
            prop_oneof![Just(NetType::Tcp), Just(NetType::O2ib)],
            0u32..20,
        )
            .prop_map(|(kind, num)| LNet { kind, num })
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = s.parse::<LNet>();
            let _ = s.parse::<Nid>();
            let _ = parse_nid_range_expr(&s);
            let _ = NidRange::from_cidr(&s, LNet::TCP);
        }

        #[test]
        fn never_panic_structured(s in "[0-9*\\[\\]\\-.,:/a-f]{0,30}@(tcp|o2ib)[0-9]{0,3}") {
            let _ = parse_nid_range_expr(&s);
        }

        #[test]
        fn cidr_roundtrip(ip in any::<u32>(), prefix in 0u32..=32, net in arb_net()) {
            let cidr = format!("{}/{}", Ipv4Addr::from(ip), prefix);
            let r = NidRange::from_cidr(&cidr, net).unwrap();
            let expr = r.to_lctl_expr().unwrap();
            prop_assert_eq!(parse_nid_range_expr(&expr).unwrap(), r);
            prop_assert_eq!(r.len(), 1u128 << (32 - prefix));
            let inside = Nid { addr: IpAddr::V4(Ipv4Addr::from(ip)), net };
            prop_assert!(r.contains(&inside));
        }

        #[test]
        fn nid_roundtrip(ip in any::<u32>(), v6 in any::<u128>(), net in arb_net(), use6 in any::<bool>()) {
            let addr = if use6 { IpAddr::V6(Ipv6Addr::from(v6)) } else { IpAddr::V4(Ipv4Addr::from(ip)) };
            let n = Nid { addr, net };
            prop_assert_eq!(n.to_string().parse::<Nid>().unwrap(), n);
        }

        #[test]
        fn overlaps_matches_contains(a in any::<u32>(), pa in 20u32..=32, b in any::<u32>(), pb in 20u32..=32) {
            let ra = NidRange::from_cidr(&format!("{}/{}", Ipv4Addr::from(a), pa), LNet::TCP).unwrap();
            let rb = NidRange::from_cidr(&format!("{}/{}", Ipv4Addr::from(b), pb), LNet::TCP).unwrap();
            let expect = ra.contains(&rb.start) || ra.contains(&rb.end) || rb.contains(&ra.start);
            prop_assert_eq!(ra.overlaps(&rb), expect);
        }
    }
}
