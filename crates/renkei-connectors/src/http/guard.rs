//! The SSRF guard: which schemes and addresses an outbound request may reach.
//!
//! renkei sends requests to URLs an admin configured and, through templates, to URLs partly built from event
//! data; either can point inside the network renkei runs in (a cloud's metadata service at 169.254.169.254, an
//! admin console on localhost, the database on 10.0.0.5). So every request the [`super::HttpClient`] sends is
//! checked twice:
//!
//! - **Before sending**, the URL: `https` only, unless `network.allow_http` or the request's destination says
//!   `allow_http: true`; and a host written as an IP address (which skips DNS) must be an allowed address.
//! - **At connect time**, every address a host name resolved to: the guard *is* the client's DNS resolver, and
//!   hands the connector only the addresses that pass. The check is on the addresses actually connected to,
//!   so a name that resolves to a public address when looked at and to a private one when used (DNS
//!   rebinding), or a public name pointing at 127.0.0.1, gains nothing.
//!
//! Refused: loopback, private (RFC 1918, IPv6 unique-local), link-local (cloud metadata included),
//! unspecified, multicast, shared (CGNAT 100.64.0.0/10) and reserved addresses, and the IPv4 ones written as
//! IPv6 (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`). An address inside a `network.allow_private`
//! range passes whatever its kind.
//!
//! The guard never follows redirects (the client does not; a 3xx is an answer), never lets a proxy resolve
//! names beyond it (proxy settings from the environment are ignored), and never says more in a refusal than
//! the host and the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use renkei_core::net::Cidr;

/// What outbound requests may reach: `network:` of the config.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Ranges that pass although they are loopback, private, link-local...
    pub allow_private: Vec<Cidr>,
    /// Plain `http://` for every destination.
    pub allow_http: bool,
}

impl Policy {
    pub fn from_network(network: &renkei_core::config::Network) -> Policy {
        Policy { allow_private: network.allow_private.clone(), allow_http: network.allow_http }
    }

    /// Checks a URL before it is sent: its scheme, and its host when that is an IP address. `allow_http` is
    /// the destination's own exception.
    pub fn check_url(&self, url: &reqwest::Url, allow_http: bool) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or("");
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http || allow_http => {}
            "http" => {
                return Err(Refused(format!(
                    "http://{host} is not https; use https, or allow plain http with network.allow_http \
                     (or the destination's allow_http: true)"
                )))
            }
            other => return Err(Refused(format!("{other}: is not a scheme renkei sends to (https, http)"))),
        }
        // An IPv6 host comes in brackets.
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(None, ip),
            Err(_) => Ok(()),
        }
    }

    /// Checks one address `host` (when it was a name) resolved to.
    pub fn check_ip(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refused> {
        let Some(kind) = blocked(ip) else { return Ok(()) };
        if self.allow_private.iter().any(|c| c.contains(ip)) || embedded_v4(ip).is_some_and(|v4| self.allows(v4)) {
            return Ok(());
        }
        let what = kind.describe();
        Err(Refused(match host {
            Some(h) => format!("{h} resolves to {ip}, {what}; allow it with network.allow_private"),
            None => format!("{ip} is {what}; allow it with network.allow_private"),
        }))
    }

    fn allows(&self, v4: Ipv4Addr) -> bool {
        self.allow_private.iter().any(|c| c.contains(IpAddr::V4(v4)))
    }
}

/// Why a request was not sent. Permanent: the same request would be refused again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

/// Kinds of address a request may not reach unless allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    Multicast,
    /// 100.64.0.0/10, carrier-grade NAT: inside a provider's network.
    Shared,
    Reserved,
}

impl Blocked {
    fn describe(self) -> &'static str {
        match self {
            Blocked::Loopback => "a loopback address",
            Blocked::Private => "a private address",
            Blocked::LinkLocal => "a link-local address (where clouds serve instance metadata)",
            Blocked::Unspecified => "an unspecified address",
            Blocked::Multicast => "a multicast address",
            Blocked::Shared => "a shared (carrier-grade NAT) address",
            Blocked::Reserved => "a reserved address",
        }
    }
}

/// The kind of a refused address; `None` for an address on the internet.
pub fn blocked(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(ip) {
            Some(v4) => blocked_v4(v4),
            None => blocked_v6(v6),
        },
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<Blocked> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (0, _) => Blocked::Unspecified,
        (127, _) => Blocked::Loopback,
        (10, _) | (192, 168) => Blocked::Private,
        (172, b) if (16..32).contains(&b) => Blocked::Private,
        (169, 254) => Blocked::LinkLocal,
        (100, b) if (64..128).contains(&b) => Blocked::Shared,
        (224..=239, _) => Blocked::Multicast,
        (240..=255, _) => Blocked::Reserved,
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let s = ip.segments();
    Some(if ip.is_unspecified() {
        Blocked::Unspecified
    } else if ip.is_loopback() {
        Blocked::Loopback
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        // Unique-local fc00::/7, and the deprecated site-local fec0::/10.
        Blocked::Private
    } else if s[0] & 0xffc0 == 0xfe80 {
        Blocked::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        Blocked::Multicast
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d), deprecated; nothing public lives there.
        Blocked::Reserved
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`,
/// which a NAT64 gateway forwards to the IPv4 address).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = v6.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The client's DNS resolver: looks a name up as the system does, and keeps only the addresses the policy
/// allows; when none is left, the connection fails with the refusal.
#[derive(Debug)]
pub(super) struct GuardedResolver {
    pub policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port on the addresses it is given.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let mut allowed = Vec::with_capacity(found.len());
            for addr in found {
                match policy.check_ip(Some(&host), addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(r) => {
                        refusal.get_or_insert(r);
                    }
                }
            }
            match (allowed.is_empty(), refusal) {
                (true, Some(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn kinds_of_address() {
        for (addr, kind) in [
            ("127.0.0.1", Blocked::Loopback),
            ("127.255.0.9", Blocked::Loopback),
            ("::1", Blocked::Loopback),
            ("10.0.0.5", Blocked::Private),
            ("172.16.0.1", Blocked::Private),
            ("172.31.255.255", Blocked::Private),
            ("192.168.1.1", Blocked::Private),
            ("fd12:3456::1", Blocked::Private),
            ("fc00::1", Blocked::Private),
            ("169.254.169.254", Blocked::LinkLocal),
            ("fe80::1", Blocked::LinkLocal),
            ("0.0.0.0", Blocked::Unspecified),
            ("::", Blocked::Unspecified),
            ("224.0.0.1", Blocked::Multicast),
            ("ff02::1", Blocked::Multicast),
            ("100.64.0.1", Blocked::Shared),
            ("100.127.255.254", Blocked::Shared),
            ("255.255.255.255", Blocked::Reserved),
            // IPv4 written as IPv6.
            ("::ffff:127.0.0.1", Blocked::Loopback),
            ("::ffff:169.254.169.254", Blocked::LinkLocal),
            ("::ffff:10.1.2.3", Blocked::Private),
            ("64:ff9b::a9fe:a9fe", Blocked::LinkLocal),
            ("::127.0.0.1", Blocked::Reserved),
        ] {
            assert_eq!(blocked(ip(addr)), Some(kind), "{addr}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "192.169.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"]
        {
            assert_eq!(blocked(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn exceptions_and_messages() {
        let strict = Policy::default();
        assert_eq!(
            strict.check_ip(None, ip("10.0.0.5")).unwrap_err().to_string(),
            "refused: 10.0.0.5 is a private address; allow it with network.allow_private"
        );
        let r = strict.check_ip(Some("metadata.internal"), ip("169.254.169.254")).unwrap_err().to_string();
        assert!(r.starts_with("refused: metadata.internal resolves to 169.254.169.254, a link-local address"), "{r}");
        let open = Policy { allow_private: vec![Cidr::parse("127.0.0.0/8").unwrap()], allow_http: false };
        assert!(open.check_ip(None, ip("127.0.0.1")).is_ok());
        assert!(open.check_ip(None, ip("::ffff:127.0.0.1")).is_ok(), "a mapped address is allowed as its IPv4");
        assert!(open.check_ip(None, ip("::1")).is_err(), "an IPv4 range does not allow IPv6 loopback");
        assert!(open.check_ip(None, ip("169.254.169.254")).is_err());
    }

    #[test]
    fn urls() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let strict = Policy::default();
        assert!(strict.check_url(&url("https://example.com/x"), false).is_ok());
        let r = strict.check_url(&url("http://example.com/x"), false).unwrap_err().to_string();
        assert!(r.contains("http://example.com is not https") && r.contains("network.allow_http"), "{r}");
        assert!(strict.check_url(&url("http://example.com/x"), true).is_ok(), "the destination's exception");
        assert!(strict.check_url(&url("ftp://example.com/x"), true).is_err());
        // Literal addresses, however written, never reach DNS: they are checked here.
        for literal in [
            "https://127.0.0.1/",
            "https://[::1]:8443/",
            "https://[::ffff:7f00:1]/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
        ] {
            assert!(strict.check_url(&url(literal), false).is_err(), "{literal}");
        }
        assert!(strict.check_url(&url("https://93.184.215.14/"), false).is_ok());
    }
}
