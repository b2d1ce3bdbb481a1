//! The [`Guard`]: a web page the operator visits must not be able to use a service on their
//! machine or network.
//!
//! - **DNS rebinding.** A page on `evil.example` makes the name resolve to 127.0.0.1; the browser
//!   then sends the page's requests to the local service as *same-origin*, with
//!   `Host: evil.example`. So the `Host` must be one of ours: a request whose `Host` (host part;
//!   or the authority of an absolute-form target) is not allowed is a 403 `host_not_allowed`.
//!   Allowed: the configured list (`*_ALLOWED_HOSTS`; an entry is a name or address, optionally
//!   with `:port`, or `*` for any); without one, when the service is bound to a loopback address,
//!   the loopback names and addresses (`localhost`, 127.0.0.0/8, `::1`) on any port; when bound to
//!   any other address, any Host (nothing else is known to be ours; the operator should set the
//!   list, and the service says so at start). A request without `Host` (HTTP/1.0 tools) passes:
//!   browsers always send one.
//! - **Cross-site requests.** A page may send simple requests (a form `POST`, an `<img>` `GET`)
//!   to any address without being allowed to read the answer, which is enough to run an action.
//!   A request with an `Origin` that is neither in the configured list (`*_ALLOWED_ORIGINS`,
//!   default none; `*` for any) nor the origin of the request's own `Host` is a 403
//!   `origin_not_allowed`, and so is `Sec-Fetch-Site: cross-site` from an origin not in the list.
//!   `OPTIONS` preflights are no exception. For configured origins the guard also answers CORS
//!   (preflights, `Access-Control-Allow-Origin`), so a configured browser console works.
//!
//! The check runs before any route, so a refused request never reaches a handler.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::future::{Either, Ready};
use tower::{Layer, Service};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::list_items;
use crate::settings::SettingError;

/// Which `Host` values a [`Guard`] lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCheck {
    /// Only the configured list.
    Listed,
    /// The default on a loopback address: loopback names and addresses, any port.
    Loopback,
    /// Any (configured `*`, or the default on a non-loopback address).
    Off,
}

/// The validated guard settings of a service, before it knows the address it is bound to.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// `None`: the default for the bound address. `Some([])` cannot happen (an empty list is
    /// the default).
    hosts: Option<HostRule>,
    origins: Origins,
    hosts_setting: String,
    origins_setting: String,
}

impl GuardConfig {
    /// Validate the allowed hosts and origins (each list item may hold several, comma
    /// separated; blank items are ignored, and an empty list means the default). `prefix` names
    /// the settings in messages: `<prefix>_ALLOWED_HOSTS`, `<prefix>_ALLOWED_ORIGINS`.
    pub fn parse(
        prefix: &str,
        hosts: Option<&[String]>,
        origins: Option<&[String]>,
    ) -> Result<GuardConfig, SettingError> {
        let hosts_setting = format!("{prefix}_ALLOWED_HOSTS");
        let origins_setting = format!("{prefix}_ALLOWED_ORIGINS");
        let host_items = list_items(hosts);
        let hosts = if host_items.is_empty() {
            None
        } else if host_items.iter().any(|h| h == "*") {
            Some(HostRule::Any)
        } else {
            let mut list = Vec::new();
            for h in &host_items {
                list.push(HostPattern::parse(h).ok_or_else(|| {
                    SettingError::new(
                        &hosts_setting,
                        format!("'{h}' is not a host name or address (name, name:port, 10.0.0.1, [::1]:5000, or * for any)"),
                    )
                })?);
            }
            Some(HostRule::List(list))
        };
        let mut o = Origins::default();
        for item in list_items(origins) {
            match item.as_str() {
                "*" => o.any = true,
                "null" => o.null = true,
                _ => o.list.push(Origin::parse(&item).ok_or_else(|| {
                    SettingError::new(
                        &origins_setting,
                        format!("'{item}' is not an origin (scheme://host[:port], e.g. https://console.example.com; or * for any, null for opaque origins)"),
                    )
                })?),
            }
        }
        Ok(GuardConfig {
            hosts,
            origins: o,
            hosts_setting,
            origins_setting,
        })
    }

    /// The defaults (no host list, no origins), naming the settings with `prefix`.
    pub fn defaults(prefix: &str) -> GuardConfig {
        GuardConfig::parse(prefix, None, None).expect("the defaults are valid")
    }

    /// The guard of a service bound to `addr` (see the module docs for the defaults).
    pub fn for_addr(&self, addr: SocketAddr) -> Guard {
        let hosts = match &self.hosts {
            Some(rule) => rule.clone(),
            None if is_loopback(addr.ip()) => HostRule::Loopback,
            None => HostRule::Any,
        };
        Guard {
            inner: Arc::new(Inner {
                hosts,
                origins: self.origins.clone(),
                hosts_setting: self.hosts_setting.clone(),
                origins_setting: self.origins_setting.clone(),
            }),
        }
    }
}

/// The request guard against DNS rebinding and cross-site requests (see the module docs).
/// A tower [`Layer`]; [`Guard::apply`] puts it (and CORS for configured origins) around a whole
/// router.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hosts: HostRule,
    origins: Origins,
    hosts_setting: String,
    origins_setting: String,
}

/// Why a request was refused: a 403 with this code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        crate::error_response(StatusCode::FORBIDDEN, self.code, &self.message)
    }
}

impl Guard {
    /// Which Host values pass.
    pub fn host_check(&self) -> HostCheck {
        match self.inner.hosts {
            HostRule::Any => HostCheck::Off,
            HostRule::Loopback => HostCheck::Loopback,
            HostRule::List(_) => HostCheck::Listed,
        }
    }

    /// Whether browsers' cross-origin requests from configured origins are let through.
    pub fn allows_origins(&self) -> bool {
        !self.inner.origins.is_empty()
    }

    /// The whole router behind the guard, with CORS answers for configured origins: every route,
    /// fallback and method-not-allowed answer included.
    pub fn apply(&self, router: Router) -> Router {
        let inner = match self.cors() {
            Some(cors) => Router::new().fallback_service(cors.layer(router)),
            None => router,
        };
        Router::new().fallback_service(self.layer(inner))
    }

    fn cors(&self) -> Option<CorsLayer> {
        let origins = self.inner.origins.clone();
        if origins.is_empty() {
            return None;
        }
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::predicate(move |o: &HeaderValue, _| {
                    origins.listed(o)
                }))
                .allow_methods([Method::GET, Method::POST, Method::HEAD])
                .allow_headers(AllowHeaders::mirror_request())
                .max_age(Duration::from_secs(600)),
        )
    }

    /// Check a request: `Ok` to let it through, else why not.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let g = &*self.inner;
        // The target's authority wins over Host (RFC 9112 §3.2.2); browsers send origin-form.
        let authority: Option<&str> = match req.uri().authority() {
            Some(a) => Some(a.as_str()),
            None => match req.headers().get(header::HOST) {
                Some(v) => Some(v.to_str().unwrap_or("\u{fffd}")),
                None => None,
            },
        };
        let own = authority.and_then(split_authority);
        if let (Some(raw), false) = (authority, matches!(g.hosts, HostRule::Any)) {
            let hosts = req.headers().get_all(header::HOST).iter().count();
            let ok = own
                .as_ref()
                .is_some_and(|(host, port)| g.hosts.allows(host, *port));
            if !ok || hosts > 1 {
                return Err(Refusal {
                    code: "host_not_allowed",
                    message: format!(
                        "Host '{}' is not allowed here (allowed hosts: {})",
                        clip(raw),
                        g.hosts_setting
                    ),
                });
            }
        }
        let mut listed = false;
        for v in req.headers().get_all(header::ORIGIN) {
            if g.origins.listed(v) {
                listed = true;
                continue;
            }
            let same = v
                .to_str()
                .ok()
                .and_then(Origin::parse)
                .zip(own.as_ref())
                .is_some_and(|(o, (host, port))| o.is_same(host, *port));
            if !same {
                return Err(Refusal {
                    code: "origin_not_allowed",
                    message: format!(
                        "cross-origin request from '{}' refused (allowed origins: {})",
                        clip(v.to_str().unwrap_or("\u{fffd}")),
                        g.origins_setting
                    ),
                });
            }
        }
        let cross_site = req
            .headers()
            .get_all("sec-fetch-site")
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site && !listed {
            return Err(Refusal {
                code: "origin_not_allowed",
                message: format!(
                    "cross-site request refused (Sec-Fetch-Site: cross-site; allowed origins: {})",
                    g.origins_setting
                ),
            });
        }
        Ok(())
    }
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S> Service<Request<Body>> for Guarded<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self.guard.check(&req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(refusal) => {
                tracing::info!(
                    code = refusal.code,
                    host = ?req.headers().get(header::HOST),
                    origin = ?req.headers().get(header::ORIGIN),
                    method = %req.method(),
                    path = %clip(req.uri().path()),
                    "refused a request"
                );
                Either::Left(futures_util::future::ready(Ok(refusal.into_response())))
            }
        }
    }
}

#[derive(Clone, Debug)]
enum HostRule {
    Any,
    Loopback,
    List(Vec<HostPattern>),
}

impl HostRule {
    fn allows(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Loopback => {
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(is_loopback)
            }
            HostRule::List(list) => list
                .iter()
                .any(|p| p.host == host && (p.port.is_none() || p.port == port)),
        }
    }
}

/// A configured host: a name or address, and a port when only that one is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(s: &str) -> Option<HostPattern> {
        // A bare IPv6 address (no brackets) is a host without a port.
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Some(HostPattern {
                host: ip.to_string(),
                port: None,
            });
        }
        let (host, port) = split_authority(s)?;
        Some(HostPattern { host, port })
    }
}

/// The configured origins.
#[derive(Clone, Debug, Default)]
struct Origins {
    any: bool,
    /// `null`, the opaque origin (sandboxed frames, `file:` pages).
    null: bool,
    list: Vec<Origin>,
}

impl Origins {
    fn is_empty(&self) -> bool {
        !self.any && !self.null && self.list.is_empty()
    }

    fn listed(&self, v: &HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(s) = v.to_str() else { return false };
        if s.trim() == "null" {
            return self.null;
        }
        Origin::parse(s).is_some_and(|o| self.list.contains(&o))
    }
}

/// A web origin, normalised: lower case, default port dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

impl Origin {
    fn parse(s: &str) -> Option<Origin> {
        let s = s.trim();
        let uri: Uri = s.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || s.ends_with('?') {
            return None;
        }
        let (host, port) = split_authority(authority.as_str())?;
        let port = port.filter(|p| Some(*p) != default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    /// The origin of a page served by the request's own `host[:port]` (either scheme: TLS may
    /// end in front of the service).
    fn is_same(&self, host: &str, port: Option<u16>) -> bool {
        if self.host != host {
            return false;
        }
        let mine = self.port.or(default_port(&self.scheme));
        match port {
            Some(p) => mine == Some(p),
            None => self.port.is_none(),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` → (normalised host, port): lower case, IPv6 without brackets, IP addresses in
/// canonical form, one trailing dot dropped. `None` when it is not an authority (or carries
/// user information).
fn split_authority(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() || s.contains('@') {
        return None;
    }
    let a: axum::http::uri::Authority = s.parse().ok()?;
    let host = a.host();
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok()?.to_string(),
        None => {
            let h = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            match h.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => h,
            }
        }
    };
    if host.is_empty() {
        return None;
    }
    // After the host: nothing, ":" (an empty port: the host alone) or ":<0..=65535>".
    let port = match a.as_str().strip_prefix(a.host())? {
        "" | ":" => None,
        rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    Some((host, port))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// At most 200 characters of client-sent text in a message.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str], origins: &[&str], bind: &str) -> Guard {
        let h: Vec<String> = hosts.iter().map(|s| s.to_string()).collect();
        let o: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        GuardConfig::parse("TEST", Some(&h), Some(&o))
            .unwrap()
            .for_addr(bind.parse().unwrap())
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method("POST").uri("/execute");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn code(g: &Guard, headers: &[(&str, &str)]) -> &'static str {
        match g.check(&req(headers)) {
            Ok(()) => "ok",
            Err(r) => r.code,
        }
    }

    #[test]
    fn loopback_default_allows_loopback_names_on_any_port() {
        let g = guard(&[], &[], "127.0.0.1:5000");
        assert_eq!(g.host_check(), HostCheck::Loopback);
        for h in [
            "localhost",
            "localhost:5000",
            "LOCALHOST.:1",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:5000",
            "[0:0:0:0:0:0:0:1]:80",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert_eq!(code(&g, &[("host", h)]), "ok", "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:5000",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:5000",
            "[::2]:5000",
            "user@127.0.0.1",
            "",
            "127.0.0.1:notaport",
        ] {
            assert_eq!(code(&g, &[("host", h)]), "host_not_allowed", "{h}");
        }
        // No Host at all (HTTP/1.0 tools): let through.
        assert_eq!(code(&g, &[]), "ok");
        // Two Host headers: refused.
        assert_eq!(
            code(&g, &[("host", "127.0.0.1"), ("host", "localhost")]),
            "host_not_allowed"
        );
        // Bound to ::1 too.
        let g6 = guard(&[], &[], "[::1]:5000");
        assert_eq!(g6.host_check(), HostCheck::Loopback);
    }

    #[test]
    fn absolute_form_target_authority_is_checked() {
        let g = guard(&[], &[], "127.0.0.1:5000");
        let r = Request::builder()
            .uri("http://evil.example/execute")
            .header("host", "127.0.0.1:5000")
            .body(())
            .unwrap();
        assert_eq!(g.check(&r).unwrap_err().code, "host_not_allowed");
    }

    #[test]
    fn non_loopback_default_checks_no_host_and_a_list_replaces_the_default() {
        let g = guard(&[], &[], "0.0.0.0:5000");
        assert_eq!(g.host_check(), HostCheck::Off);
        assert_eq!(code(&g, &[("host", "evil.example")]), "ok");

        let g = guard(
            &["openexec.internal, 10.0.0.5:5000", "::1"],
            &[],
            "127.0.0.1:5000",
        );
        assert_eq!(g.host_check(), HostCheck::Listed);
        assert_eq!(code(&g, &[("host", "OpenExec.Internal:80")]), "ok");
        assert_eq!(code(&g, &[("host", "10.0.0.5:5000")]), "ok");
        assert_eq!(code(&g, &[("host", "10.0.0.5:5001")]), "host_not_allowed");
        assert_eq!(code(&g, &[("host", "10.0.0.5")]), "host_not_allowed");
        assert_eq!(code(&g, &[("host", "[::1]:7")]), "ok");
        assert_eq!(code(&g, &[("host", "localhost")]), "host_not_allowed");

        let g = guard(&["*"], &[], "127.0.0.1:5000");
        assert_eq!(g.host_check(), HostCheck::Off);
        assert_eq!(code(&g, &[("host", "evil.example")]), "ok");
    }

    #[test]
    fn origins_must_be_the_hosts_own_or_configured() {
        let g = guard(&[], &[], "127.0.0.1:5000");
        let host = ("host", "127.0.0.1:5000");
        assert_eq!(code(&g, &[host, ("origin", "http://127.0.0.1:5000")]), "ok");
        assert_eq!(
            code(&g, &[host, ("origin", "https://127.0.0.1:5000")]),
            "ok"
        );
        for o in [
            "http://evil.example",
            "http://127.0.0.1:5001",
            "http://localhost:5000",
            "null",
            "garbage",
            "http://127.0.0.1:5000/path",
        ] {
            assert_eq!(
                code(&g, &[host, ("origin", o)]),
                "origin_not_allowed",
                "{o}"
            );
        }
        // Default ports.
        assert_eq!(
            code(&g, &[("host", "localhost"), ("origin", "http://localhost")]),
            "ok"
        );
        assert_eq!(
            code(
                &g,
                &[("host", "localhost"), ("origin", "https://localhost:443")]
            ),
            "ok"
        );
        assert_eq!(
            code(
                &g,
                &[("host", "localhost"), ("origin", "http://localhost:8080")]
            ),
            "origin_not_allowed"
        );
        assert_eq!(
            code(
                &g,
                &[("host", "localhost:80"), ("origin", "http://localhost")]
            ),
            "ok"
        );
        // No Host: an Origin cannot be the same.
        assert_eq!(
            code(&g, &[("origin", "http://127.0.0.1:5000")]),
            "origin_not_allowed"
        );
        // Sec-Fetch-Site.
        assert_eq!(
            code(&g, &[host, ("sec-fetch-site", "cross-site")]),
            "origin_not_allowed"
        );
        assert_eq!(code(&g, &[host, ("sec-fetch-site", "same-origin")]), "ok");
        assert_eq!(code(&g, &[host, ("sec-fetch-site", "none")]), "ok");

        let g = guard(
            &[],
            &["https://Console.Example:443", "null"],
            "127.0.0.1:5000",
        );
        assert!(g.allows_origins());
        assert_eq!(
            code(
                &g,
                &[
                    host,
                    ("origin", "https://console.example"),
                    ("sec-fetch-site", "cross-site")
                ]
            ),
            "ok"
        );
        assert_eq!(code(&g, &[host, ("origin", "null")]), "ok");
        assert_eq!(
            code(&g, &[host, ("origin", "http://console.example")]),
            "origin_not_allowed"
        );
        // The Host check still comes first.
        assert_eq!(
            code(
                &g,
                &[
                    ("host", "evil.example"),
                    ("origin", "https://console.example")
                ]
            ),
            "host_not_allowed"
        );
        let g = guard(&[], &["*"], "127.0.0.1:5000");
        assert_eq!(code(&g, &[host, ("origin", "http://evil.example")]), "ok");
    }

    #[test]
    fn bad_entries_name_the_setting() {
        for (hosts, origins, setting) in [
            (vec!["a b"], vec![], "TEST_ALLOWED_HOSTS"),
            (vec!["u@h"], vec![], "TEST_ALLOWED_HOSTS"),
            (vec!["h:99999"], vec![], "TEST_ALLOWED_HOSTS"),
            (vec![], vec!["evil.example"], "TEST_ALLOWED_ORIGINS"),
            (vec![], vec!["http://a/b"], "TEST_ALLOWED_ORIGINS"),
        ] {
            let h: Vec<String> = hosts.iter().map(|s: &&str| s.to_string()).collect();
            let o: Vec<String> = origins.iter().map(|s: &&str| s.to_string()).collect();
            let e = GuardConfig::parse("TEST", Some(&h), Some(&o)).unwrap_err();
            assert!(e.to_string().starts_with(setting), "{e}");
        }
        // Blank items and empty lists are the default.
        let c = GuardConfig::parse("TEST", Some(&[" , ".to_string()]), Some(&[])).unwrap();
        assert_eq!(
            c.for_addr("127.0.0.1:1".parse().unwrap()).host_check(),
            HostCheck::Loopback
        );
    }
}
