//! The dashboard: one HTML page and its script, embedded in the binary (no CDN, no
//! internet), reading `/api/v1/swarm` and `/api/v1/status` every two seconds.
//!
//! The script writes data only through `textContent` and attributes, never as HTML, so a
//! peer's chosen name cannot inject markup; the page's Content-Security-Policy allows
//! its own script and requests to its own origin only. On another host the page takes
//! the API token from its URL fragment (`/#token=…`), which browsers do not send to
//! the server.

use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `/`: the page.
pub fn page() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// `/dashboard.js`: its script.
pub fn script() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(SCRIPT.as_bytes())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r
}
