//! The agent's local HTTP API (hyper, plain HTTP): read-only views of the
//! [`StatusHub`](crate::status::StatusHub).
//!
//! | path | what |
//! |---|---|
//! | `/api/v1/status` | this agent, JSON ([`AgentStatus`](crate::status::AgentStatus)) |
//! | `/api/v1/swarm` | every agent this one hears of, JSON ([`SwarmView`](crate::status::SwarmView)) |
//! | `/metrics` | Prometheus text format ([`metrics`]) |
//! | `/` and `/dashboard.js` | the dashboard ([`dashboard`]), which reads the two JSON views |
//!
//! Access: clients on this machine (loopback, or the address the connection came in on)
//! need no token; others must send `Authorization: Bearer <api.token>` (compared in
//! constant time), and the config refuses a non-loopback `listen` without a token. A
//! request from this machine without the right token must name an IP address or
//! `localhost` in `Host`, so a web page that rebinds its own DNS name to 127.0.0.1
//! cannot read the API from a browser on this machine. Only GET and HEAD are served;
//! anything else is a 4xx.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once, of which other hosts may hold
//! [`MAX_REMOTE`], [`MAX_PER_ADDRESS`] per address (more are closed at once, so hosts
//! without the token cannot lock this machine's own tools out; they can crowd out a
//! remote scraper from a dozen addresses, each refusal closing its connection); a
//! connection must send its request head within [`HEADER_READ_TIMEOUT`] and ends after
//! [`CONNECTION_LIFETIME`] (a response in flight gets 5 s more).

pub mod client;
pub mod dashboard;
pub mod metrics;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_protocol::Digest;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::status::StatusHub;

/// Connections served at once at most; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections other hosts may hold at once.
pub const MAX_REMOTE: usize = 48;

/// Connections one other host may hold at once.
pub const MAX_PER_ADDRESS: usize = 4;

/// A connection is closed after this long, whatever it is doing (a client that stops
/// reading must not keep its slot).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What the API serves and who may read it.
pub struct Api {
    hub: Arc<StatusHub>,
    /// SHA-256 of the bearer token, or `None` when none is set (loopback only).
    token: Option<Digest>,
}

impl Api {
    /// An API over `hub`; `token` is required from other hosts (empty: none accepted).
    pub fn new(hub: Arc<StatusHub>, token: &str) -> Self {
        Api {
            hub,
            token: (!token.is_empty()).then(|| Digest::of(token.as_bytes())),
        }
    }

    /// Answers one request; `local` says whether it came from this machine.
    pub fn handle<B>(&self, req: &Request<B>, local: bool) -> Response<Full<Bytes>> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET or HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        // The dashboard's files hold no data: anyone may load them (the page then needs
        // the token for the data, from its URL fragment).
        let mut resp = match path {
            "/" | "/index.html" => dashboard::page(),
            "/dashboard.js" => dashboard::script(),
            "/api/v1/status" | "/api/v1/swarm" | "/metrics" => match self.refusal(req, local) {
                Some(r) => r,
                None => match path {
                    "/api/v1/status" => json(&self.hub.status()),
                    "/api/v1/swarm" => json(&self.hub.swarm()),
                    _ => {
                        let body = metrics::render(&self.hub.status(), &self.hub.swarm());
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        );
                        r
                    }
                },
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "no such page: see /, /api/v1/status, /api/v1/swarm, /metrics\n",
            ),
        };
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        if head {
            *resp.body_mut() = Full::new(Bytes::new());
        }
        resp
    }

    /// Why the client may not read the data views, as the answer to send; `None` admits.
    fn refusal<B>(&self, req: &Request<B>, local: bool) -> Option<Response<Full<Bytes>>> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token_ok = match (bearer, &self.token) {
            (Some(given), Some(want)) => {
                constant_time_eq(&Digest::of(given.trim().as_bytes()).0, &want.0)
            }
            _ => false,
        };
        if token_ok {
            return None;
        }
        if !local {
            return Some(unauthorized(if bearer.is_some() {
                "wrong token"
            } else {
                "other hosts must send `Authorization: Bearer <api.token>`"
            }));
        }
        // This machine needs no token (a wrong one in a script's environment is ignored).
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        (!is_local_host(host)).then(|| {
            let mut r = text(
                StatusCode::FORBIDDEN,
                "Host must be an IP address or localhost (or send the token)\n",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        })
    }
}

/// Connections other hosts hold, per address.
#[derive(Default)]
struct Remote {
    by_address: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// A remote connection's place; given back when dropped.
struct RemoteSlot {
    remote: Arc<Remote>,
    addr: IpAddr,
}

impl Remote {
    /// Takes a place for `addr`, or `None` when other hosts, or this one, hold enough.
    fn take(self: &Arc<Self>, addr: IpAddr) -> Option<RemoteSlot> {
        let mut m = self
            .by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = m.values().sum();
        let mine = m.entry(addr).or_default();
        if total >= MAX_REMOTE || *mine >= MAX_PER_ADDRESS {
            if *mine == 0 {
                m.remove(&addr);
            }
            return None;
        }
        *mine += 1;
        Some(RemoteSlot {
            remote: self.clone(),
            addr,
        })
    }
}

impl Drop for RemoteSlot {
    fn drop(&mut self) {
        let mut m = self
            .remote
            .by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.addr);
            }
        }
    }
}

/// Whether a connection from `peer` to `local` comes from this machine: loopback, or
/// the very address it reached (packets from elsewhere cannot carry it as their source).
pub fn is_local(peer: IpAddr, local: Option<IpAddr>) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || local.is_some_and(|l| l.to_canonical() == peer)
}

/// Serves `api` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let remote = Arc::new(Remote::default());
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "status API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let local = is_local(peer.ip(), tcp.local_addr().ok().map(|a| a.ip()));
        let remote_slot = if local {
            None
        } else {
            match remote.take(peer.ip().to_canonical()) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(%peer, "status API: too many connections from other hosts");
                    continue; // dropping the stream closes it
                }
            }
        };
        let api = api.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _slots = (permit, remote_slot);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = api.handle(&req, local);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "status API connection ended with an error");
                },
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    // Let a response in flight finish, briefly; then the slot is free.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                    tracing::debug!(%peer, "status API connection closed: lived too long");
                }
                _ = stop.changed() => {}
            }
        });
    }
}

/// How long to wait before trying a port that could not be bound again.
pub const BIND_RETRY: Duration = Duration::from_secs(30);

/// Binds `addr` (trying again every [`BIND_RETRY`], each failure logged and recorded in
/// `hub`) and serves `api` on it until `shutdown` turns true.
pub async fn serve_retrying(
    addr: SocketAddr,
    api: Arc<Api>,
    hub: Arc<StatusHub>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match bind(addr).await {
            Ok(listener) => {
                if let Ok(a) = listener.local_addr() {
                    tracing::info!(addr = %a, "status API and dashboard on http://{a}/");
                }
                return serve(listener, api, shutdown).await;
            }
            Err(e) => {
                tracing::warn!(error = %e.message, note = %e.note, retry_in = ?BIND_RETRY, "no status API yet");
                hub.error(&e);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(BIND_RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Binds `addr` for the API, with an error that says what to change.
pub async fn bind(addr: SocketAddr) -> crate::error::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Error::new(
            crate::error::exit::IO,
            format!("cannot serve the status API on {addr}: {e}"),
            "change api.listen, or set api.enabled = false",
        )
    })
}

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unauthorized(why: &str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::UNAUTHORIZED, &format!("{why}\n"));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"shoal-agent\""),
    );
    // A refused client does not keep its connection (and its slot).
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Equal without an early exit (the inputs are digests: equal lengths, no length leak).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header names this machine by address or as `localhost`.
fn is_local_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Money;

    fn api(token: &str) -> Api {
        let hub = StatusHub::new(
            "me",
            "stable",
            "https://o",
            Money {
                price_per_gb: 0.05,
                currency: "USD".into(),
            },
        );
        Api::new(Arc::new(hub), token)
    }

    fn get(path: &str, host: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get(path).header(header::HOST, host);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    const LOCAL: bool = true;
    const REMOTE: bool = false;

    #[test]
    fn loopback_reads_without_a_token_other_hosts_need_it() {
        let a = api("0123456789abcdef0123");
        let ok = a.handle(&get("/api/v1/status", "127.0.0.1:7401", None), LOCAL);
        assert_eq!(ok.status(), StatusCode::OK);
        let denied = a.handle(&get("/api/v1/status", "198.18.0.1:7401", None), REMOTE);
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        let wrong = a.handle(
            &get("/metrics", "198.18.0.1:7401", Some("Bearer nope")),
            REMOTE,
        );
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let right = a.handle(
            &get(
                "/metrics",
                "198.18.0.1:7401",
                Some("Bearer 0123456789abcdef0123"),
            ),
            REMOTE,
        );
        assert_eq!(right.status(), StatusCode::OK);
        // Without a configured token, no token opens anything.
        let none = api("");
        let r = none.handle(&get("/metrics", "x", Some("Bearer ")), REMOTE);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // This machine needs none, and a wrong one does not lock it out.
        let r = a.handle(&get("/metrics", "127.0.0.1", Some("Bearer stale")), LOCAL);
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn this_machine_is_loopback_or_the_address_it_reached() {
        let lan: IpAddr = "198.18.0.5".parse().unwrap();
        let other: IpAddr = "198.18.0.6".parse().unwrap();
        assert!(is_local("127.0.0.1".parse().unwrap(), Some(lan)));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap(), None));
        assert!(is_local(lan, Some(lan)));
        assert!(!is_local(other, Some(lan)));
    }

    #[test]
    fn other_hosts_get_a_bounded_share_of_the_connections() {
        let remote = Arc::new(Remote::default());
        let a: IpAddr = "198.18.0.6".parse().unwrap();
        let held: Vec<RemoteSlot> = (0..MAX_PER_ADDRESS)
            .filter_map(|_| remote.take(a))
            .collect();
        assert_eq!(held.len(), MAX_PER_ADDRESS);
        assert!(remote.take(a).is_none());
        drop(held);
        let mut many = Vec::new();
        for i in 0..=255u8 {
            if let Some(s) = remote.take(IpAddr::from([198, 18, 1, i])) {
                many.push(s);
            }
        }
        assert_eq!(many.len(), MAX_REMOTE);
        drop(many);
        assert!(remote.by_address.lock().unwrap().is_empty());
    }

    #[test]
    fn a_rebound_dns_name_cannot_read_the_api() {
        let a = api("");
        for host in ["evil.example:7401", "evil.example", ""] {
            let r = a.handle(&get("/api/v1/swarm", host, None), LOCAL);
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{host}");
        }
        for host in ["localhost:7401", "[::1]:7401", "127.0.0.1", "LOCALHOST"] {
            let r = a.handle(&get("/api/v1/swarm", host, None), LOCAL);
            assert_eq!(r.status(), StatusCode::OK, "{host}");
        }
    }

    #[test]
    fn read_only_and_unknown_paths_are_4xx() {
        let a = api("");
        let post = Request::post("/api/v1/status")
            .header(header::HOST, "127.0.0.1")
            .body(())
            .unwrap();
        assert_eq!(
            a.handle(&post, LOCAL).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let r = a.handle(&get("/../etc/passwd", "127.0.0.1", None), LOCAL);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let page = a.handle(&get("/", "anything", None), REMOTE);
        assert_eq!(page.status(), StatusCode::OK);
    }
}
