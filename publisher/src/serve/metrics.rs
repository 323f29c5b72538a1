//! Counters of the origin server, rendered in the Prometheus text format at `/metrics`.
//!
//! Bytes are counted as the response body is written to the socket, so an aborted
//! download counts only what was sent. Per-file counters are keyed by the request path
//! of files that exist, and per-release counters by the releases of the directory's
//! channel histories ([`Catalog`]), so a scanner probing random paths cannot grow a map.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::catalog::{Catalog, ReleaseKey};

/// What a request was, for `shoal_origin_requests_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// A whole file (200).
    Whole,
    /// Part of a file (206).
    Range,
    /// Unchanged since the client's copy (304).
    NotModified,
    /// Anything else: HEAD, `/metrics`, errors.
    Other,
}

impl RequestKind {
    fn label(self) -> &'static str {
        match self {
            RequestKind::Whole => "whole",
            RequestKind::Range => "range",
            RequestKind::NotModified => "not_modified",
            RequestKind::Other => "other",
        }
    }
}

/// The server's counters.
pub struct Metrics {
    bytes_by_file: Mutex<BTreeMap<String, u64>>,
    bytes_by_release: Mutex<BTreeMap<Arc<ReleaseKey>, u64>>,
    requests_by_status: Mutex<BTreeMap<u16, u64>>,
    requests_by_kind: Mutex<BTreeMap<RequestKind, u64>>,
    bytes_total: AtomicU64,
    connections: AtomicU64,
    started: Instant,
    started_at: u64,
    catalog: OnceLock<Arc<Catalog>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            bytes_by_file: Mutex::default(),
            bytes_by_release: Mutex::default(),
            requests_by_status: Mutex::default(),
            requests_by_kind: Mutex::default(),
            bytes_total: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            started: Instant::now(),
            started_at: shoal_cli::unix_now(),
            catalog: OnceLock::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Reports release sizes from `catalog` (set once, by the file server).
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        let _ = self.catalog.set(catalog);
    }

    /// Counts body bytes sent for `path`, which belongs to `release` if any.
    pub fn add_bytes(&self, path: &str, release: Option<&Arc<ReleaseKey>>, n: u64) {
        self.bytes_total.fetch_add(n, Ordering::Relaxed);
        *lock(&self.bytes_by_file)
            .entry(path.to_owned())
            .or_default() += n;
        if let Some(r) = release {
            *lock(&self.bytes_by_release).entry(r.clone()).or_default() += n;
        }
    }

    /// Counts one response with `status`.
    pub fn add_request(&self, status: u16, kind: RequestKind) {
        *lock(&self.requests_by_status).entry(status).or_default() += 1;
        *lock(&self.requests_by_kind).entry(kind).or_default() += 1;
    }

    /// Counts one accepted connection.
    pub fn add_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Total body bytes sent.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total.load(Ordering::Relaxed)
    }

    /// One line for the end of `serve`: requests, bytes, and bytes per release.
    pub fn summary(&self) -> String {
        let kinds = lock(&self.requests_by_kind);
        let requests: u64 = kinds.values().sum();
        let ranges = kinds.get(&RequestKind::Range).copied().unwrap_or(0);
        let mut line = format!(
            "served {requests} requests ({ranges} ranges) and {} in {} s",
            shoal_cli::human_bytes(self.bytes_total()),
            self.started.elapsed().as_secs()
        );
        let sizes: BTreeMap<Arc<ReleaseKey>, u64> = self
            .catalog
            .get()
            .map(|c| c.sizes().into_iter().collect())
            .unwrap_or_default();
        for (r, n) in lock(&self.bytes_by_release).iter() {
            let _ = write!(
                line,
                "; {}/{}: {}",
                r.channel,
                r.release,
                shoal_cli::human_bytes(*n)
            );
            if let Some(size) = sizes.get(r).filter(|s| **s > 0) {
                let _ = write!(line, " = {:.2} copies", *n as f64 / *size as f64);
            }
        }
        line
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP shoal_origin_start_time_seconds Unix time the server started.\n\
             # TYPE shoal_origin_start_time_seconds gauge\n\
             shoal_origin_start_time_seconds {}",
            self.started_at
        );
        let _ = writeln!(
            out,
            "# HELP shoal_origin_sent_bytes_total Response body bytes sent, all files.\n\
             # TYPE shoal_origin_sent_bytes_total counter\n\
             shoal_origin_sent_bytes_total {}",
            self.bytes_total()
        );
        let _ = writeln!(
            out,
            "# HELP shoal_origin_file_sent_bytes_total Response body bytes sent per file.\n\
             # TYPE shoal_origin_file_sent_bytes_total counter"
        );
        for (path, n) in lock(&self.bytes_by_file).iter() {
            let _ = writeln!(
                out,
                "shoal_origin_file_sent_bytes_total{{path=\"{}\"}} {n}",
                shoal_cli::prometheus_label(path)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shoal_origin_release_sent_bytes_total Artifact and index bytes sent per \
             release (a file shared by releases counts for the newest).\n\
             # TYPE shoal_origin_release_sent_bytes_total counter"
        );
        for (r, n) in lock(&self.bytes_by_release).iter() {
            let _ = writeln!(
                out,
                "shoal_origin_release_sent_bytes_total{{channel=\"{}\",release=\"{}\"}} {n}",
                shoal_cli::prometheus_label(&r.channel),
                shoal_cli::prometheus_label(&r.release)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shoal_origin_release_size_bytes Bytes in each release's artifacts.\n\
             # TYPE shoal_origin_release_size_bytes gauge"
        );
        if let Some(c) = self.catalog.get() {
            for (r, size) in c.sizes() {
                let _ = writeln!(
                    out,
                    "shoal_origin_release_size_bytes{{channel=\"{}\",release=\"{}\"}} {size}",
                    shoal_cli::prometheus_label(&r.channel),
                    shoal_cli::prometheus_label(&r.release)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP shoal_origin_requests_total Requests by kind: whole file (200), range \
             (206), not_modified (304), other (HEAD, /metrics, errors).\n\
             # TYPE shoal_origin_requests_total counter"
        );
        for (kind, n) in lock(&self.requests_by_kind).iter() {
            let _ = writeln!(
                out,
                "shoal_origin_requests_total{{kind=\"{}\"}} {n}",
                kind.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP shoal_origin_responses_total Responses by HTTP status.\n\
             # TYPE shoal_origin_responses_total counter"
        );
        for (status, n) in lock(&self.requests_by_status).iter() {
            let _ = writeln!(
                out,
                "shoal_origin_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP shoal_origin_connections_total TLS connections accepted.\n\
             # TYPE shoal_origin_connections_total counter\n\
             shoal_origin_connections_total {}",
            self.connections.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        let r = Arc::new(ReleaseKey {
            channel: "stable".into(),
            release: "2.4.1".into(),
        });
        m.add_bytes("/a", Some(&r), 10);
        m.add_bytes("/a", Some(&r), 5);
        m.add_bytes("/b\"", None, 1);
        m.add_request(206, RequestKind::Range);
        m.add_request(200, RequestKind::Whole);
        let text = m.render();
        assert!(
            text.contains("shoal_origin_sent_bytes_total 16\n"),
            "{text}"
        );
        assert!(text.contains("shoal_origin_file_sent_bytes_total{path=\"/a\"} 15\n"));
        assert!(text.contains("{path=\"/b\\\"\"} 1\n"));
        assert!(text.contains("shoal_origin_responses_total{status=\"206\"} 1\n"));
        assert!(text.contains(
            "shoal_origin_release_sent_bytes_total{channel=\"stable\",release=\"2.4.1\"} 15\n"
        ));
        assert!(text.contains("shoal_origin_requests_total{kind=\"range\"} 1\n"));
        assert!(text.contains("shoal_origin_requests_total{kind=\"whole\"} 1\n"));
        let line = m.summary();
        assert!(
            line.starts_with("served 2 requests (1 ranges) and 16 B"),
            "{line}"
        );
        assert!(line.contains("stable/2.4.1: 15 B"), "{line}");
    }
}
