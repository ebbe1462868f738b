//! Who the client is behind a load balancer (contract section 12).
//!
//! From a trusted peer, the client is the right-most address of `Forwarded`
//! (RFC 7239) or else `X-Forwarded-For` that is not itself trusted: each
//! trusted proxy appends the address it saw, so every entry right of that one
//! was written by a proxy we trust, and everything left of it may be the
//! client's own invention. From any other peer the headers are ignored.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr};

use axum::http::header::{HeaderMap, HeaderName, FORWARDED};
use ipnet::IpNet;

/// Hops walked at most. Real chains are two or three long; a longer one is
/// cut there rather than walked, whatever its length.
const MAX_HOPS: usize = 16;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The CIDRs of the load balancers whose forwarded address is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies(nets.into_iter().map(|n| n.trunc()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers).unwrap_or_else(|| x_forwarded_for_hops(headers));
        // Right to left: the nearest hop first.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                // A hop a trusted proxy could not name (`unknown`, an
                // obfuscated `_id`, garbage): nothing left of it can be
                // believed, so the last address we could is the client.
                None => break,
                Some(ip) if self.contains(*ip) => client = *ip,
                Some(ip) => return *ip,
            }
        }
        client
    }
}

/// Parses one `--trusted-proxies` entry: a CIDR, or an address alone.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (like 10.0.0.0/8) or an IP address"))
}

/// The last `MAX_HOPS` entries of a header's comma-separated lists, over
/// all its lines in order.
struct Hops(VecDeque<Option<IpAddr>>);

impl Hops {
    fn new() -> Self {
        Hops(VecDeque::with_capacity(MAX_HOPS))
    }

    fn push(&mut self, hop: Option<IpAddr>) {
        if self.0.len() == MAX_HOPS {
            self.0.pop_front();
        }
        self.0.push_back(hop);
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &Option<IpAddr>> {
        self.0.iter()
    }
}

/// The `for=` of each `Forwarded` element (`None` for one without a usable
/// address), or `None` when no element has a `for=` at all.
fn forwarded_hops(headers: &HeaderMap) -> Option<Hops> {
    let mut hops = Hops::new();
    let mut any_for = false;
    for line in headers.get_all(FORWARDED) {
        let Ok(line) = line.to_str() else {
            // Not text: the line's hops are unknowable.
            hops.push(None);
            any_for = true;
            continue;
        };
        for element in split_outside_quotes(line, ',') {
            let mut hop = None;
            let mut has_for = false;
            for pair in split_outside_quotes(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    has_for = true;
                    hop = node_address(unquote(value.trim()));
                }
            }
            any_for |= has_for;
            hops.push(hop);
        }
    }
    any_for.then_some(hops)
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Hops {
    let mut hops = Hops::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        match line.to_str() {
            Ok(line) => line
                .split(',')
                .for_each(|hop| hops.push(node_address(hop.trim()))),
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// Splits on `sep` outside double quotes (a quoted `for=` may hold anything).
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    s.split(move |c: char| {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            return true;
        }
        false
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// An RFC 7239 node (`192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`), or what X-Forwarded-For carries (also a bare IPv6
/// address). `unknown`, an obfuscated `_name` or anything else: `None`.
fn node_address(v: &str) -> Option<IpAddr> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, port) = match v.strip_prefix('[') {
        Some(rest) => {
            let (host, rest) = rest.split_once(']')?;
            let port = match rest {
                "" => None,
                _ => Some(rest.strip_prefix(':')?),
            };
            (IpAddr::V6(host.parse::<Ipv6Addr>().ok()?), port)
        }
        None => {
            let (host, port) = v.split_once(':')?;
            (host.parse::<IpAddr>().ok()?, Some(port))
        }
    };
    let port_ok = port.is_none_or(|p| {
        p.parse::<u16>().is_ok()
            || (p.len() > 1
                && p.starts_with('_')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    });
    port_ok.then(|| host.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies::new(cidrs.iter().map(|c| parse_cidr(c).unwrap()))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LB: &str = "10.0.0.5";

    fn client_of(pairs: &[(&str, &str)]) -> IpAddr {
        trusted(&["10.0.0.0/8", "fd00::/8"]).client(ip(LB), &headers(pairs))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(t.client(ip("198.51.100.7"), &h), ip("198.51.100.7"));
        assert_eq!(
            TrustedProxies::default().client(ip(LB), &h),
            ip(LB),
            "no proxies configured"
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        // The client made up the left-most entry; the proxies appended the rest.
        let xff = [("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.7")];
        assert_eq!(client_of(&xff), ip("203.0.113.9"));
        let split = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9,10.0.0.7"),
        ];
        assert_eq!(client_of(&split), ip("203.0.113.9"));
        assert_eq!(
            client_of(&[("x-forwarded-for", "2001:db8::1")]),
            ip("2001:db8::1")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            client_of(&[("x-forwarded-for", "10.0.0.9, 10.0.0.7")]),
            ip("10.0.0.9")
        );
        // IPv4-mapped addresses are the IPv4 address.
        assert_eq!(
            client_of(&[("x-forwarded-for", "::ffff:203.0.113.9")]),
            ip("203.0.113.9")
        );
        let mapped_peer = trusted(&["10.0.0.0/8"]).client(
            ip("::ffff:10.0.0.5"),
            &headers(&[("x-forwarded-for", "1.2.3.4")]),
        );
        assert_eq!(mapped_peer, ip("1.2.3.4"));
    }

    #[test]
    fn forwarded_is_read_first_with_quotes_ports_and_ipv6() {
        let f = |v: &str| client_of(&[("forwarded", v), ("x-forwarded-for", "9.9.9.9")]);
        assert_eq!(f("for=203.0.113.9"), ip("203.0.113.9"));
        assert_eq!(f(r#"For="203.0.113.9:4711""#), ip("203.0.113.9"));
        assert_eq!(
            f(r#"for="[2001:db8:cafe::17]:4711""#),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(f(r#"for="[2001:db8:cafe::17]""#), ip("2001:db8:cafe::17"));
        assert_eq!(
            f(
                r#"for=1.1.1.1;proto=http, for=203.0.113.9;by="[fd00::1]";proto=https, for=10.1.2.3"#
            ),
            ip("203.0.113.9")
        );
        // A comma inside quotes does not split an element.
        assert_eq!(
            f(r#"for=203.0.113.9;host="a,b", for=10.1.2.3"#),
            ip("203.0.113.9")
        );
        // No `for=` in it: X-Forwarded-For.
        assert_eq!(f("proto=https;host=shop.example"), ip("9.9.9.9"));
    }

    #[test]
    fn hops_that_name_nobody_stop_the_walk() {
        // The nearest trusted proxy could not name its client: it is the
        // best we know, and nothing further left is believed.
        let f = |v: &str| client_of(&[("forwarded", v)]);
        assert_eq!(f("for=203.0.113.9, for=10.0.0.7, for=unknown"), ip(LB));
        assert_eq!(
            f("for=203.0.113.9, for=_hidden, for=10.0.0.7"),
            ip("10.0.0.7")
        );
        assert_eq!(f(r#"for="_gazonk""#), ip(LB));
        assert_eq!(f("for=203.0.113.9, by=10.0.0.7"), ip(LB));
        assert_eq!(f(r#"for="[2001:db8::1]:junk""#), ip(LB));
        assert_eq!(f(r#"for="[2001:db8::1"#), ip(LB));
        assert_eq!(f("for=203.0.113.9:_port"), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_is_the_peer_never_a_panic() {
        for v in [
            "",
            ",,,",
            "not an address",
            "999.1.1.1",
            "1.2.3.4.5",
            "1.2.3.4:99999",
            "[]",
            "[::1",
            "::1]",
            "1.2.3.4 5.6.7.8",
            "\"1.2.3.4\"",
            "unknown",
            "_hidden",
        ] {
            assert_eq!(client_of(&[("x-forwarded-for", v)]), ip(LB), "{v:?}");
            let _ = client_of(&[("forwarded", v)]);
            let _ = client_of(&[("forwarded", &format!("for={v}"))]);
            let _ = client_of(&[("forwarded", &format!("for=\"{v}"))]);
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(trusted(&["10.0.0.0/8"]).client(ip(LB), &h), ip(LB));
    }

    #[test]
    fn a_huge_list_costs_a_bounded_walk() {
        // A thousand trusted hops: the walk stops after MAX_HOPS, at a proxy.
        let long = vec!["10.9.9.9"; 1000].join(",");
        assert_eq!(
            client_of(&[("x-forwarded-for", &format!("203.0.113.9,{long}"))]),
            ip("10.9.9.9")
        );
        // A long made-up prefix does not push the real client out of view.
        let junk = vec!["1.1.1.1"; 10_000].join(",");
        assert_eq!(
            client_of(&[("x-forwarded-for", &format!("{junk},203.0.113.9"))]),
            ip("203.0.113.9")
        );
        let junk = vec!["for=1.1.1.1"; 10_000].join(",");
        assert_eq!(
            client_of(&[("forwarded", &format!("{junk},for=203.0.113.9"))]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn proxies_are_cidrs_or_addresses() {
        let t = trusted(&["10.0.0.0/8", " 192.168.1.7 ", "fd00::/8", "172.16.5.4/12"]);
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("172.31.0.1")), "host bits are ignored");
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "proxy.example",
            "",
            "10.0.0.0/8/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
    }
}
