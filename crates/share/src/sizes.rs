//! Sizes and addresses from users, validated into what the service needs.

use std::net::IpAddr;

use lustre_model::ByteSize;

use crate::{Result, ShareError};

/// Parses a share size (`10G`, `512MiB`, `1048576`): positive, no overflow.
pub fn parse_size(text: &str) -> Result<u64> {
    let size: ByteSize = text
        .trim()
        .parse()
        .map_err(|e| ShareError::InvalidArgument(format!("size {text:?}: {e}")))?;
    if size.bytes() == 0 {
        return Err(ShareError::InvalidArgument(format!(
            "size {text:?}: must be greater than zero"
        )));
    }
    Ok(size.bytes())
}

/// Normalises an IP or CIDR (`10.0.0.7/24` becomes `10.0.0.0/24`, `10.0.0.7` becomes
/// `10.0.0.7/32`).
pub fn normalize_cidr(text: &str) -> Result<String> {
    let bad = |why: &str| ShareError::InvalidArgument(format!("access {text:?}: {why}"));
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        None => max,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad(&format!("prefix length must be 0 to {max}")))?,
    };
    let network = match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    };
    Ok(format!("{network}/{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_positive_and_parse() {
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        for bad in ["0", "-1", "", "ten", "99999999999999999999999", "16E"] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                matches!(err, ShareError::InvalidArgument(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn cidrs_are_normalised_and_bad_ones_refused() {
        assert_eq!(normalize_cidr("10.0.0.7/24").unwrap(), "10.0.0.0/24");
        assert_eq!(normalize_cidr("10.0.0.7").unwrap(), "10.0.0.7/32");
        assert_eq!(normalize_cidr("10.0.0.7/0").unwrap(), "0.0.0.0/0");
        assert_eq!(normalize_cidr("2001:db8::1/64").unwrap(), "2001:db8::/64");
        for bad in [
            "10.0.0.256",
            "10.0.0.1/33",
            "10.0.0.1/x",
            "host",
            "",
            "10.0.0.1/-1",
        ] {
            assert!(normalize_cidr(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn user_input_never_panics(text in "\\PC*") {
            let _ = parse_size(&text);
            let _ = normalize_cidr(&text);
        }

        #[test]
        fn normalised_cidrs_are_fixed_points(a in 0u32.., prefix in 0u32..=32) {
            let text = format!("{}/{prefix}", std::net::Ipv4Addr::from(a));
            let once = normalize_cidr(&text).unwrap();
            proptest::prop_assert_eq!(normalize_cidr(&once).unwrap(), once);
        }
    }
}
