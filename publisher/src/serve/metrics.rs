//! Counters of the origin server, rendered in the Prometheus text format at `/metrics`.
//!
//! Bytes are counted as the response body is written to the socket, so an aborted
//! download counts only what was sent. Per-file counters are keyed by the request path
//! of files that exist, so a scanner probing random paths cannot grow the map.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    bytes_by_file: Mutex<BTreeMap<String, u64>>,
    requests_by_status: Mutex<BTreeMap<u16, u64>>,
    bytes_total: AtomicU64,
    connections: AtomicU64,
}

impl Metrics {
    /// Counts body bytes sent for `path`.
    pub fn add_bytes(&self, path: &str, n: u64) {
        self.bytes_total.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut m) = self.bytes_by_file.lock() {
            *m.entry(path.to_owned()).or_default() += n;
        }
    }

    /// Counts one response with `status`.
    pub fn add_request(&self, status: u16) {
        if let Ok(mut m) = self.requests_by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// Counts one accepted connection.
    pub fn add_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Total body bytes sent.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
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
        if let Ok(m) = self.bytes_by_file.lock() {
            for (path, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "shoal_origin_file_sent_bytes_total{{path=\"{}\"}} {n}",
                    escape(path)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP shoal_origin_responses_total Responses by HTTP status.\n\
             # TYPE shoal_origin_responses_total counter"
        );
        if let Ok(m) = self.requests_by_status.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "shoal_origin_responses_total{{status=\"{status}\"}} {n}"
                );
            }
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

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.add_bytes("/a", 10);
        m.add_bytes("/a", 5);
        m.add_bytes("/b\"", 1);
        m.add_request(206);
        let text = m.render();
        assert!(
            text.contains("shoal_origin_sent_bytes_total 16\n"),
            "{text}"
        );
        assert!(text.contains("shoal_origin_file_sent_bytes_total{path=\"/a\"} 15\n"));
        assert!(text.contains("{path=\"/b\\\"\"} 1\n"));
        assert!(text.contains("shoal_origin_responses_total{status=\"206\"} 1\n"));
    }
}
