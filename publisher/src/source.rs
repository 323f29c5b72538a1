//! Where `verify` reads a release from: a directory or an origin URL.
//!
//! Both are addressed with the relative paths of [`shoal_protocol::layout`]. A missing file is
//! `Ok(None)`, not an error, so the caller can say which file is missing and what to do.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A release directory or a served origin.
pub enum Source {
    /// A directory on disk.
    Dir(PathBuf),
    /// An origin base URL (ending without a slash) and the client to reach it.
    Http {
        /// Base URL.
        base: String,
        /// HTTP client.
        client: reqwest::blocking::Client,
    },
}

impl Source {
    /// An origin at `base`, trusting the system roots, plus `extra_ca` (a PEM file) when
    /// given.
    pub fn http(base: &str, extra_ca: Option<&Path>) -> Result<Source, String> {
        let mut b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = extra_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", ca.display()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| format!("building the HTTPS client: {e}"))?;
        Ok(Source::Http {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// Reads a whole small file, refusing more than `max` bytes.
    pub fn read_small(&self, rel: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        let Some(mut r) = self.open(rel)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        r.by_ref()
            .take(max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading: {e}"))?;
        if buf.len() > max {
            return Err(format!("larger than the {max}-byte limit"));
        }
        Ok(Some(buf))
    }

    /// Opens a file for streaming.
    pub fn open(&self, rel: &str) -> Result<Option<Box<dyn Read>>, String> {
        match self {
            Source::Dir(root) => {
                let path = root.join(rel);
                match File::open(&path) {
                    Ok(f) => Ok(Some(Box::new(f))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
            Source::Http { base, client } => {
                let url = format!("{base}/{rel}");
                let resp = client
                    .get(&url)
                    .send()
                    .map_err(|e| format!("GET {url}: {e}"))?;
                match resp.status() {
                    s if s.is_success() => Ok(Some(Box::new(resp))),
                    reqwest::StatusCode::NOT_FOUND => Ok(None),
                    s => Err(format!("GET {url}: HTTP {s}")),
                }
            }
        }
    }

    /// Channel names present in a directory source (`None` for a URL: a static host
    /// cannot list them).
    pub fn list_channels(&self) -> Option<Vec<String>> {
        let Source::Dir(root) = self else { return None };
        let mut out: Vec<String> = std::fs::read_dir(root.join("channels"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ch = name.strip_suffix(".json")?;
                (!ch.starts_with('.')).then(|| ch.to_owned())
            })
            .collect();
        out.sort();
        Some(out)
    }
}
