//! Which peers are trusted proxies (`forwarded_allow_ips`) and which client an
//! `X-Forwarded-For` chain names. The one implementation of that rule: the engine asks it
//! for the address `max_connections_per_ip` counts, and Python's `proxies.Forwarding` (as
//! `_engine.TrustedProxies`) for the client a `Request` or `WebSocket` reports.

use std::net::IpAddr;

use hyper::header::HeaderMap;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `forwarded_allow_ips` parsed: comma-separated addresses and CIDR networks, `*` for any.
#[pyclass(frozen, module = "ferrosock._engine")]
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    any: bool,
    addresses: Vec<IpAddr>,
    networks: Vec<(IpAddr, u8)>,
}

/// An address as one host: an IPv4 client of a dual-stack socket (`::ffff:a.b.c.d`) is
/// that IPv4 address.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(canonical)
}

fn bits(address: IpAddr) -> (u128, u8) {
    match address {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// The bits of `value` (of `width` bits) below a `prefix`-bit network part.
fn host_bits(value: u128, width: u8, prefix: u8) -> u128 {
    let host = width - prefix;
    if host == 0 {
        0
    } else {
        value & (u128::MAX >> (128 - u32::from(host)))
    }
}

/// A CIDR network, as Python's `ipaddress.ip_network` accepts it (strict: no host bits).
fn parse_network(item: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = item.split_once('/').unwrap_or((item, ""));
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    let (value, width) = bits(address);
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= width)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to {width}"))?;
    if host_bits(value, width, prefix) != 0 {
        return Err(format!("{item} has host bits set"));
    }
    Ok((address, prefix))
}

fn in_network(address: IpAddr, (network, prefix): (IpAddr, u8)) -> bool {
    let ((value, width), (net, net_width)) = (bits(address), bits(network));
    width == net_width && host_bits(value ^ net, width, prefix) == value ^ net
}

impl TrustedProxies {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut trusted = Self::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                trusted.any = true;
            } else if item.contains('/') {
                let network = parse_network(item).map_err(|why| not_an_address(item, &why))?;
                trusted.networks.push(network);
            } else {
                let address = item.parse().map_err(|_| not_an_address(item, ""))?;
                trusted.addresses.push(canonical(address));
            }
        }
        Ok(trusted)
    }

    pub fn trusts(&self, host: &str) -> bool {
        self.any || parse_address(host).is_some_and(|a| self.trusts_address(a))
    }

    fn trusts_address(&self, address: IpAddr) -> bool {
        self.any
            || self.addresses.contains(&address)
            || self.networks.iter().any(|n| in_network(address, *n))
    }

    /// The client an `X-Forwarded-For` value names: each proxy appends the address it got
    /// the request from, so the rightmost address that is not a trusted proxy; the leftmost
    /// when every one is trusted; None when it names none.
    pub fn client_host<'a>(&self, forwarded_for: &'a str) -> Option<&'a str> {
        let hosts = forwarded_for
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty());
        let first = hosts.clone().next()?;
        Some(hosts.rev().find(|h| !self.trusts(h)).unwrap_or(first))
    }

    /// Who the client of a request from `peer` is: the host `X-Forwarded-For` names when
    /// `peer` is trusted, else `peer`. An address is written in its one canonical form. A
    /// Unix socket's peer (None) has no address: it is trusted only by `*`, and without a
    /// forwarded host the client is unknown (None).
    pub fn client_of(
        trusted: Option<&Self>,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Option<String> {
        let peer = peer.map(canonical);
        let trusted = trusted.filter(|t| match peer {
            Some(peer) => t.trusts_address(peer),
            None => t.any,
        });
        let Some(trusted) = trusted else {
            return peer.map(|p| p.to_string());
        };
        let chain: Vec<String> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        match trusted.client_host(&chain.join(",")) {
            Some(host) => {
                Some(parse_address(host).map_or_else(|| host.to_owned(), |a| a.to_string()))
            }
            None => peer.map(|p| p.to_string()),
        }
    }
}

fn not_an_address(item: &str, why: &str) -> String {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    format!(
        "forwarded_allow_ips: {item:?} is not an IP address or network{why}; \
         give comma-separated addresses or CIDR networks, or '*' for any"
    )
}

#[pymethods]
impl TrustedProxies {
    /// A bad `spec` is a `ValueError` naming `forwarded_allow_ips`.
    #[new]
    fn py_new(spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        let Ok(spec) = spec.cast::<PyString>() else {
            return Err(PyValueError::new_err(format!(
                "forwarded_allow_ips must be a string, not {}",
                spec.repr()?
            )));
        };
        Self::parse(spec.to_str()?).map_err(PyValueError::new_err)
    }

    /// `None` (a Unix socket's peer) is in only `*`.
    fn __contains__(&self, host: &Bound<'_, PyAny>) -> bool {
        if host.is_none() {
            return self.any;
        }
        host.cast::<PyString>()
            .ok()
            .and_then(|h| h.to_str().ok().map(|h| self.trusts(h)))
            .unwrap_or(false)
    }

    #[pyo3(name = "client_host")]
    fn py_client_host(&self, forwarded_for: &str) -> Option<String> {
        self.client_host(forwarded_for).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(spec: &str) -> TrustedProxies {
        TrustedProxies::parse(spec).unwrap()
    }

    #[test]
    fn addresses_networks_and_any() {
        let t = trusted("127.0.0.1,10.0.0.0/8, 2001:db8::/32");
        assert!(t.trusts("127.0.0.1") && t.trusts("::ffff:127.0.0.1"));
        assert!(t.trusts("10.200.0.1") && t.trusts("2001:db8::7"));
        assert!(!t.trusts("127.0.0.2") && !t.trusts("::1") && !t.trusts("unknown"));
        assert!(!t.trusts("11.0.0.1") && !t.trusts("2001:db9::1"));
        assert!(trusted("0.0.0.0/0").trusts("8.8.8.8"));
        assert!(trusted("*").trusts("unknown"));
        assert!(!trusted("").trusts("127.0.0.1"));
    }

    #[test]
    fn bad_items_name_the_setting() {
        for bad in [
            "127.0.0.300",
            "localhost",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
        ] {
            let error = TrustedProxies::parse(bad).unwrap_err();
            assert!(error.starts_with("forwarded_allow_ips: "), "{error}");
        }
        assert!(TrustedProxies::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("host bits set"));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let t = trusted("127.0.0.1, 10.0.0.0/8");
        assert_eq!(t.client_host("1.2.3.4, 127.0.0.1"), Some("1.2.3.4"));
        assert_eq!(
            t.client_host("9.9.9.9, 1.2.3.4, 10.1.2.3, 127.0.0.1"),
            Some("1.2.3.4")
        );
        assert_eq!(t.client_host("10.0.0.5, 127.0.0.1"), Some("10.0.0.5"));
        assert_eq!(t.client_host(" , "), None);
    }

    #[test]
    fn the_counted_client_follows_the_header_only_from_a_trusted_peer() {
        let t = trusted("127.0.0.1");
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "9.9.9.9".parse().unwrap());
        headers.append("x-forwarded-for", "::ffff:1.2.3.4".parse().unwrap());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        let client_of = |t, peer, headers| TrustedProxies::client_of(t, Some(peer), headers);
        assert_eq!(client_of(Some(&t), local, &headers).unwrap(), "1.2.3.4");
        assert_eq!(client_of(Some(&t), other, &headers).unwrap(), "10.0.0.1");
        assert_eq!(client_of(None, local, &headers).unwrap(), "127.0.0.1");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(client_of(Some(&t), mapped, &none).unwrap(), "127.0.0.1");
    }

    #[test]
    fn a_unix_socket_peer_is_trusted_only_by_any() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "9.9.9.9".parse().unwrap());
        let any = trusted("*");
        let local = trusted("127.0.0.1");
        let client_of = |t, headers| TrustedProxies::client_of(t, None, headers);
        assert_eq!(client_of(Some(&any), &headers).as_deref(), Some("9.9.9.9"));
        assert_eq!(client_of(Some(&local), &headers), None);
        assert_eq!(client_of(None, &headers), None);
        assert_eq!(client_of(Some(&any), &HeaderMap::new()), None);
    }
}
