//! The origin client: HTTPS (rustls, system roots plus an optional extra CA), range
//! requests, bounded reads, retries with backoff. Plain HTTP only behind
//! `danger_allow_http`.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result, chain, exit};

/// Attempts per request before giving up.
const ATTEMPTS: u32 = 3;

/// A client for one origin base URL.
#[derive(Clone)]
pub struct OriginClient {
    base: String,
    client: reqwest::Client,
}

/// What to do about a refused origin certificate, from the reason rustls gives.
fn certificate_note(reason: &str) -> &'static str {
    if reason.contains("expired") || reason.contains("not valid yet") {
        "the origin's certificate is outside its validity period: renew it on the origin; \
         if it should be valid, check this machine's clock"
    } else if reason.contains("not valid for") || reason.contains("NotValidForName") {
        "the origin's certificate is for another host name: use the origin URL with the \
         name the certificate carries, or have it reissued for this name"
    } else if reason.contains("CaUsedAsEndEntity") || reason.contains("CA used as") {
        "the origin presents a CA certificate as its own: serve a server certificate \
         issued by that CA (and give the CA with --ca, or `origin_ca`)"
    } else {
        "the origin's TLS certificate was refused for the reason above: if the origin uses \
         a private CA, give it with --ca (or `origin_ca`); otherwise fix the certificate"
    }
}

impl OriginClient {
    /// A client for `base` (`https://…`), trusting the system roots and `extra_ca`.
    pub fn new(base: &str, extra_ca: Option<&Path>, danger_allow_http: bool) -> Result<Self> {
        let allowed =
            base.starts_with("https://") || (danger_allow_http && base.starts_with("http://"));
        if !allowed {
            return Err(Error::new(
                exit::USAGE,
                format!("origin URL {base:?} is not https://"),
                "Shoal fetches only over HTTPS; for a test origin over plain HTTP pass \
                 --danger-allow-http",
            ));
        }
        let mut b = reqwest::Client::builder()
            // A redirect may not leave HTTPS (what is fetched would show on the wire).
            .https_only(!danger_allow_http)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120));
        if let Some(ca) = extra_ca {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca.display(), e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::new(
                    exit::USAGE,
                    format!("{}: {e}", ca.display()),
                    "--ca takes a PEM file",
                )
            })?;
            // The vendor's own CA is the only one trusted for its origin: a private CA
            // needs no system roots beside it (and Windows' store is not consulted).
            b = b.tls_certs_only(certs);
        }
        let client = b.build().map_err(|e| {
            Error::new(
                exit::IO,
                format!("building the HTTPS client: {}", crate::error::chain(&e)),
                "",
            )
        })?;
        Ok(OriginClient {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// GETs a small file, at most `max` bytes; `Ok(None)` on 404.
    pub async fn get(&self, rel: &str, max: usize) -> Result<Option<Vec<u8>>> {
        self.retry(rel, None, max).await
    }

    /// GETs `len` bytes at `start` of `rel` with a Range request; fewer bytes than
    /// asked for is an error.
    pub async fn range(&self, rel: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        let got = self.retry(rel, Some((start, len)), len as usize).await?;
        if let Some(b) = &got
            && b.len() as u64 != len
        {
            return Err(Error::new(
                exit::UNAVAILABLE,
                format!(
                    "{rel}: the origin sent {} of the {len} bytes asked for",
                    b.len()
                ),
                "the file on the origin is shorter than the signed manifest says: tell the \
                 vendor; the LAN can still provide the piece",
            ));
        }
        got.ok_or_else(|| {
            Error::new(
                exit::UNAVAILABLE,
                format!("{rel}: not on the origin"),
                "the origin lacks a file its own manifest names: tell the vendor; the \
                     LAN can still provide the piece",
            )
        })
    }

    async fn retry(
        &self,
        rel: &str,
        range: Option<(u64, u64)>,
        max: usize,
    ) -> Result<Option<Vec<u8>>> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            match self.once(rel, range, max).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(exit::UNAVAILABLE, "no attempt made", "")))
    }

    async fn once(
        &self,
        rel: &str,
        range: Option<(u64, u64)>,
        max: usize,
    ) -> Result<Option<Vec<u8>>> {
        let url = format!("{}/{rel}", self.base);
        let unavailable = |m: String| {
            Error::new(
                exit::UNAVAILABLE,
                m,
                "check the origin URL and that it is reachable",
            )
        };
        let failed = |e: reqwest::Error| {
            let text = chain(&e);
            let note = if e.is_redirect() {
                "the origin redirects in a loop or too often: check the origin URL, and the \
                 redirect rules of any proxy or CDN in front of it"
            } else if text.contains("certificate") {
                certificate_note(&text)
            } else {
                "check the origin URL and that it is reachable"
            };
            Error::new(exit::UNAVAILABLE, format!("GET {url}: {text}"), note)
        };
        let mut req = self.client.get(&url);
        if let Some((start, len)) = range {
            req = req.header("Range", format!("bytes={start}-{}", start + len - 1));
        }
        let mut resp = req.send().await.map_err(failed)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let expected = match range {
            Some(_) => reqwest::StatusCode::PARTIAL_CONTENT,
            None => reqwest::StatusCode::OK,
        };
        if status != expected {
            return Err(unavailable(format!("GET {url}: HTTP {status}")));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if out.len() + chunk.len() > max {
                return Err(Error::new(
                    exit::UNAVAILABLE,
                    format!("GET {url}: more than the {max} bytes expected"),
                    "the origin (or a proxy in front of it) sends more than this file can \
                     be: it serves something else at this path, or is hostile; nothing \
                     was kept. Tell the vendor",
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }
}
