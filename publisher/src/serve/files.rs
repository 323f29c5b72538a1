//! Answers one HTTP request from the release directory.
//!
//! Serves only regular files whose every path segment is a valid Shoal name (no `..`,
//! no hidden files, no percent-encoding), inside the canonical release root. GET and
//! HEAD; single ranges; strong ETags and Last-Modified with `If-None-Match`,
//! `If-Modified-Since` and `If-Range`. The channel's current manifest is the only
//! mutable file and is sent `no-cache`; everything else is immutable.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use super::catalog::{Catalog, ReleaseKey};
use super::metrics::{Metrics, RequestKind};
use super::range::{RangeDecision, decide};
use shoal_protocol::Name;

/// The response body type.
pub type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// Shared state of the file server.
pub struct FileServer {
    root: PathBuf,
    metrics: Arc<Metrics>,
    catalog: Arc<Catalog>,
}

impl FileServer {
    /// Serves `root` (canonicalised here) and counts into `metrics`.
    pub fn new(root: &Path, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        let catalog = Arc::new(Catalog::new(&root));
        metrics.set_catalog(catalog.clone());
        Ok(FileServer {
            root,
            metrics,
            catalog,
        })
    }

    /// Answers one request; never fails (errors become status codes).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let resp = self.respond(&req).await;
        let kind = match resp.status() {
            _ if req.method() == Method::HEAD || req.uri().path() == "/metrics" => {
                RequestKind::Other
            }
            StatusCode::OK => RequestKind::Whole,
            StatusCode::PARTIAL_CONTENT => RequestKind::Range,
            StatusCode::NOT_MODIFIED => RequestKind::NotModified,
            _ => RequestKind::Other,
        };
        self.metrics.add_request(resp.status().as_u16(), kind);
        resp
    }

    async fn respond(&self, req: &Request<Incoming>) -> Response<ResponseBody> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        if path == "/metrics" {
            let mut r = Response::new(full(self.metrics.render(), head));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        let Some(file) = self.resolve(path) else {
            return status(StatusCode::NOT_FOUND);
        };
        match self.serve_file(req, path, &file, head).await {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => status(StatusCode::NOT_FOUND),
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot serve file");
                status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// Maps a request path to a file inside the root, or `None`.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let rel = path.strip_prefix('/')?;
        let mut out = self.root.clone();
        for seg in rel.split('/') {
            Name::new(seg).ok()?;
            out.push(seg);
        }
        // A symlink inside the release may not lead outside it.
        let canon = out.canonicalize().ok()?;
        canon.starts_with(&self.root).then_some(canon)
    }

    async fn serve_file(
        &self,
        req: &Request<Incoming>,
        path: &str,
        file: &Path,
        head: bool,
    ) -> std::io::Result<Response<ResponseBody>> {
        let mut f = tokio::fs::File::open(file).await?;
        let meta = f.metadata().await?;
        if !meta.is_file() {
            return Ok(status(StatusCode::NOT_FOUND));
        }
        let len = meta.len();
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let nanos = mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let etag = format!("\"{len:x}-{nanos:x}\"");
        let last_modified = httpdate::fmt_http_date(mtime);

        let h = req.headers();
        let text = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        let not_modified = match text(header::IF_NONE_MATCH) {
            Some(inm) => inm.split(',').any(|t| t.trim() == etag || t.trim() == "*"),
            None => text(header::IF_MODIFIED_SINCE)
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .is_some_and(|since| secs(mtime) <= secs(since)),
        };
        // If-Range: honour Range only if the validator still matches.
        let range_ok = match text(header::IF_RANGE) {
            None => true,
            Some(v) if v.starts_with('"') => v == etag,
            Some(v) => httpdate::parse_http_date(v).is_ok_and(|d| secs(d) >= secs(mtime)),
        };
        let decision = if range_ok {
            decide(text(header::RANGE), len)
        } else {
            RangeDecision::Full
        };

        let mut b = Response::builder()
            .header(header::ETAG, &etag)
            .header(header::LAST_MODIFIED, &last_modified)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CACHE_CONTROL, cache_control(path))
            .header(header::CONTENT_TYPE, content_type(path));
        if not_modified {
            return Ok(b
                .status(StatusCode::NOT_MODIFIED)
                .body(empty())
                .unwrap_or_default());
        }
        let (start, count) = match decision {
            RangeDecision::Full => {
                b = b.status(StatusCode::OK);
                (0, len)
            }
            RangeDecision::Partial { start, end } => {
                b = b
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
                (start, end - start + 1)
            }
            RangeDecision::Unsatisfiable => {
                return Ok(b
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .header(header::CONTENT_LENGTH, 0)
                    .body(empty())
                    .unwrap_or_default());
            }
        };
        b = b.header(header::CONTENT_LENGTH, count);
        if head {
            return Ok(b.body(empty()).unwrap_or_default());
        }
        if start > 0 {
            f.seek(std::io::SeekFrom::Start(start)).await?;
        }
        let body = FileBody {
            file: f,
            remaining: count,
            path: path.to_owned(),
            release: self.catalog.release_of(path),
            metrics: self.metrics.clone(),
        };
        Ok(b.body(body.boxed()).unwrap_or_default())
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn cache_control(path: &str) -> &'static str {
    // channels/<name>.json is the one file that changes in place.
    let mutable = path
        .strip_prefix("/channels/")
        .is_some_and(|rest| !rest.contains('/'));
    if mutable {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    }
}

fn content_type(path: &str) -> &'static str {
    if path.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(text: String, head: bool) -> ResponseBody {
    let bytes = if head {
        Bytes::new()
    } else {
        Bytes::from(text)
    };
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn status(code: StatusCode) -> Response<ResponseBody> {
    let mut r = Response::new(empty());
    *r.status_mut() = code;
    r
}

/// Streams `remaining` bytes of a file, counting them as they are sent.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    path: String,
    release: Option<Arc<ReleaseKey>>,
    metrics: Arc<Metrics>,
}

const CHUNK: usize = 256 * 1024;

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = (self.remaining as usize).min(CHUNK);
        let mut buf = vec![0u8; want];
        let mut rb = ReadBuf::new(&mut buf);
        let this = &mut *self;
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "file shrank while being served",
                    ))));
                }
                buf.truncate(n);
                this.remaining -= n as u64;
                this.metrics
                    .add_bytes(&this.path, this.release.as_ref(), n as u64);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_channel_manifest_is_mutable() {
        assert_eq!(cache_control("/channels/stable.json"), "no-cache");
        assert!(cache_control("/channels/stable/3.json").contains("immutable"));
        assert!(cache_control("/artifacts/ab/x.bin").contains("immutable"));
    }
}
