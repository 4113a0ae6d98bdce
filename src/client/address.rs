//! The client's address behind reverse proxies: `X-Forwarded-For` and `Forwarded` are read
//! only when the connection comes from a proxy listed in `--trusted-proxies`, since anyone
//! else can write whatever they like in them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Where a client connects from: the TCP peer, or the address a trusted proxy reported
/// (which may come without a port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl From<SocketAddr> for RemoteAddr {
    fn from(a: SocketAddr) -> Self {
        RemoteAddr { ip: a.ip(), port: Some(a.port()) }
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) or single addresses (`127.0.0.1`); the error names the
    /// first entry that is neither.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is not an address or CIDR such as 10.0.0.0/8"))?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer itself unless the peer is a trusted proxy, in which
    /// case the nearest address in the forwarding chain that is not a trusted proxy
    /// (`Forwarded` first, then `X-Forwarded-For`), read from the right, since each proxy
    /// appends what it saw and only the trusted ones' entries can be believed.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> RemoteAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return peer.into();
        }
        let chain = forwarded(headers).or_else(|| x_forwarded_for(headers)).unwrap_or_default();
        let mut client = None;
        for hop in chain.into_iter().rev() {
            client = Some(hop);
            if !self.trusts(hop.ip) {
                break;
            }
        }
        client.unwrap_or_else(|| peer.into())
    }
}

/// IPv4 clients of a dual-stack socket arrive as `::ffff:a.b.c.d`; CIDRs are written in v4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `for=` values of every `Forwarded` header (RFC 7239), in order; `None` without one.
/// An element whose `for=` is obfuscated or unknown ends the usable chain there.
fn forwarded(headers: &HeaderMap) -> Option<Vec<RemoteAddr>> {
    let values: Vec<&str> = headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()).collect();
    if values.is_empty() {
        return None;
    }
    let mut chain = Vec::new();
    for element in values.iter().flat_map(|v| v.split(',')) {
        let node = element.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.trim().eq_ignore_ascii_case("for").then(|| value.trim().trim_matches('"'))
        });
        match node.and_then(parse_node) {
            Some(addr) => chain.push(addr),
            None => chain.clear(),
        }
    }
    Some(chain)
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<RemoteAddr>> {
    let values: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    if values.is_empty() {
        return None;
    }
    Some(values.iter().flat_map(|v| v.split(',')).filter_map(|hop| parse_node(hop.trim())).collect())
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<RemoteAddr> {
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(RemoteAddr { ip: canonical(addr.ip()), port: Some(addr.port()) });
    }
    let bare = node.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(node);
    bare.parse::<IpAddr>().ok().map(|ip| RemoteAddr { ip: canonical(ip), port: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.5:40000";

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(proxies(&[]).client(PROXY.parse().unwrap(), &h).to_string(), PROXY);
        assert_eq!(proxies(&["192.168.0.0/16"]).client(PROXY.parse().unwrap(), &h).to_string(), PROXY);
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // A client that forges an X-Forwarded-For gets its forgery kept on the left.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(p.client(PROXY.parse().unwrap(), &h).to_string(), "203.0.113.7");
        let h = headers(&[("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(p.client(PROXY.parse().unwrap(), &h).to_string(), "10.0.0.9");
        assert_eq!(p.client(PROXY.parse().unwrap(), &HeaderMap::new()).to_string(), PROXY);
    }

    #[test]
    fn forwarded_wins_and_keeps_ports_and_ipv6() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9"#),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(p.client(PROXY.parse().unwrap(), &h).to_string(), "[2001:db8:cafe::17]:4711");
        let h = headers(&[("forwarded", "for=192.0.2.60:8080;by=203.0.113.43")]);
        assert_eq!(p.client(PROXY.parse().unwrap(), &h).to_string(), "192.0.2.60:8080");
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.9")]);
        assert_eq!(p.client(PROXY.parse().unwrap(), &h).to_string(), "10.0.0.9");
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_cidrs() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(p.client("[::ffff:10.0.0.5]:1".parse().unwrap(), &h).to_string(), "203.0.113.7");
    }

    #[test]
    fn entries_that_are_not_networks_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".to_owned()]).is_err());
        assert!(TrustedProxies::parse(&["fd00::/8".to_owned(), "127.0.0.1".to_owned()]).is_ok());
    }
}
