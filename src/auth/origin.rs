//! Which web pages may open a subscription: the `Origin` check of every upgrade.
//!
//! Browsers attach cached credentials (Basic, cookies) to a WebSocket or EventSource
//! request made by any page, and WebSocket has no CORS: without this check, a page on
//! another site could read the stream with its visitor's credentials. A request with an
//! `Origin` header is accepted only from the gateway's own origin (the `Host` it was asked
//! for) or from one listed in `--allowed-origins`; requests without one (non-browser
//! clients) are unaffected.

use axum::http::{header, HeaderMap, Uri};

/// The origins allowed besides the gateway's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// `*`: any origin.
    any: bool,
    patterns: Vec<Pattern>,
}

/// `scheme://host[:port]`, where the host may start with `*.` for any subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    scheme: String,
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// An origin as `(scheme, host, port)`, lower-cased, with the scheme's default port.
fn parse(origin: &str) -> Option<(String, String, Option<u16>)> {
    let uri: Uri = origin.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    // An origin is scheme, host and port: nothing else (RFC 6454 §6.1).
    if authority.as_str().contains('@') || uri.path_and_query().is_some_and(|p| !matches!(p.as_str(), "" | "/")) {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().or(match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    });
    Some((scheme, host, port))
}

impl AllowedOrigins {
    /// Parses `--allowed-origins` entries: `*`, or origins such as `https://app.example.com`
    /// or `https://*.example.com:8443`. The error names the first entry that is neither.
    pub fn parse(entries: &[String]) -> Result<AllowedOrigins, String> {
        let mut allowed = AllowedOrigins::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                allowed.any = true;
                continue;
            }
            let (scheme, host, port) = parse(&entry.replacen("://*.", "://wildcard-subdomain.", 1))
                .ok_or_else(|| format!("{entry:?} is not an origin such as https://app.example.com, or *"))?;
            let (host, wildcard) = match host.strip_prefix("wildcard-subdomain.") {
                Some(parent) => (parent.to_owned(), true),
                None => (host, false),
            };
            allowed.patterns.push(Pattern { scheme, host, wildcard, port });
        }
        Ok(allowed)
    }

    /// Whether a request may open a subscription: no `Origin` header, the gateway's own
    /// origin (the host asked for, on this port or on `console_port`, where the gateway's
    /// console is served with `--admin-addr`), or an allowed one. `Origin: null`
    /// (sandboxed pages, files) is allowed only with `*`.
    pub fn permits(&self, headers: &HeaderMap, console_port: Option<u16>) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        if self.any {
            return true;
        }
        let Some((scheme, host, port)) = origin.to_str().ok().and_then(parse) else { return false };
        if same_origin(headers, &host, port) || (port.is_some() && port == console_port && same_host(headers, &host)) {
            return true;
        }
        self.patterns.iter().any(|p| {
            p.scheme == scheme
                && p.port == port
                && match p.wildcard {
                    false => p.host == host,
                    true => host.strip_suffix(p.host.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                }
        })
    }
}

/// The origin's host is the one the request was addressed to.
fn same_host(headers: &HeaderMap, host: &str) -> bool {
    let authority = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    authority
        .and_then(|a| a.parse::<axum::http::uri::Authority>().ok())
        .is_some_and(|a| a.host().eq_ignore_ascii_case(host))
}

/// The page was served by this gateway: the origin's host and port are the ones the
/// request was addressed to. The scheme is not compared: behind a TLS-terminating proxy
/// the page is `https://` while the gateway itself speaks plain HTTP.
fn same_origin(headers: &HeaderMap, host: &str, port: Option<u16>) -> bool {
    let Some(authority) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let Ok(authority) = authority.parse::<axum::http::uri::Authority>() else { return false };
    authority.host().eq_ignore_ascii_case(host)
        && match authority.port_u16() {
            Some(p) => Some(p) == port,
            // A Host without a port was reached on the default port of whatever scheme the
            // page used.
            None => matches!(port, Some(80) | Some(443)),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    impl AllowedOrigins {
        fn permits_here(&self, headers: &HeaderMap) -> bool {
            self.permits(headers, None)
        }
    }

    #[test]
    fn pages_of_the_console_on_the_admin_port_are_the_gateways_own() {
        let none = allowed(&[]);
        let h = headers(Some("http://gw.example:9090"), "gw.example:8080");
        assert!(none.permits(&h, Some(9090)));
        assert!(!none.permits(&h, Some(9091)));
        assert!(!none.permits(&headers(Some("http://other.example:9090"), "gw.example:8080"), Some(9090)));
    }

    fn allowed(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn requests_without_origin_and_from_the_same_origin_pass() {
        let none = allowed(&[]);
        assert!(none.permits_here(&headers(None, "gw.example:8080")));
        assert!(none.permits_here(&headers(Some("http://gw.example:8080"), "gw.example:8080")));
        assert!(none.permits_here(&headers(Some("https://GW.example"), "gw.example")));
        assert!(none.permits_here(&headers(Some("http://gw.example"), "gw.example")));
    }

    #[test]
    fn other_sites_are_refused_unless_listed() {
        let none = allowed(&[]);
        assert!(!none.permits_here(&headers(Some("https://evil.example"), "gw.example:8080")));
        assert!(!none.permits_here(&headers(Some("http://gw.example:9999"), "gw.example:8080")));
        assert!(!none.permits_here(&headers(Some("null"), "gw.example")));
        assert!(!none.permits_here(&headers(Some("https://gw.example.evil.example"), "gw.example")));

        let listed = allowed(&["https://app.example", "https://*.corp.example:8443"]);
        assert!(listed.permits_here(&headers(Some("https://app.example"), "gw.example")));
        assert!(listed.permits_here(&headers(Some("https://app.example:443"), "gw.example")));
        assert!(!listed.permits_here(&headers(Some("http://app.example"), "gw.example")));
        assert!(listed.permits_here(&headers(Some("https://a.b.corp.example:8443"), "gw.example")));
        assert!(!listed.permits_here(&headers(Some("https://corp.example:8443"), "gw.example")));
        assert!(!listed.permits_here(&headers(Some("https://evilcorp.example:8443"), "gw.example")));
        assert!(!listed.permits_here(&headers(Some("https://evil.example"), "gw.example")));

        assert!(allowed(&["*"]).permits_here(&headers(Some("https://evil.example"), "gw.example")));
        assert!(allowed(&["*"]).permits_here(&headers(Some("null"), "gw.example")));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in ["app.example", "https://app.example/path", "https://user@app.example", "https://"] {
            assert!(AllowedOrigins::parse(&[bad.to_owned()]).is_err(), "{bad} accepted");
        }
    }
}
