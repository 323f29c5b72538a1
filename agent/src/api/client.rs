//! The client side of the status API, for `shoal-agent status` and `shoal-agent swarm`:
//! one plain HTTP/1.1 GET to the running daemon, with errors that say whether a daemon
//! runs at all.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result, exit};

/// How long connecting and reading may take together.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read (a swarm view of 1,024 peers is well under 1 MiB).
pub const MAX_RESPONSE: u64 = 16 << 20;

/// GETs `path` from the daemon's API at `addr`, sending `token` if given; returns the
/// body of a 200 answer.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Vec<u8>> {
    tokio::time::timeout(TIMEOUT, get_inner(addr, path, token))
        .await
        .map_err(|_| {
            Error::new(
                exit::UNAVAILABLE,
                format!("the agent's status API at {addr} did not answer within {TIMEOUT:?}"),
                "the daemon may be overloaded or stuck; see its log",
            )
        })?
}

async fn get_inner(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| {
        Error::new(
            exit::UNAVAILABLE,
            format!("no shoal-agent daemon answers on {addr} ({e})"),
            "start it (`systemctl start shoal-agent`, or `shoal-agent run`), or point --api \
             at the address in its config's [api] listen",
        )
    })?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    let io = |e: std::io::Error| Error::io(format!("status API at {addr}"), e);
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(addr, "no complete HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(addr, "no HTTP status"))?;
    let body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(bad(addr, "a chunked answer (not a shoal-agent?)"));
    }
    match status {
        200 => Ok(body),
        401 => Err(Error::new(
            exit::USAGE,
            format!(
                "the agent at {addr} wants a token: {}",
                String::from_utf8_lossy(&body).trim()
            ),
            "pass --token (the config's api.token), or run this on the agent's machine",
        )),
        code => Err(bad(
            addr,
            &format!("HTTP {code}: {}", String::from_utf8_lossy(&body).trim()),
        )),
    }
}

fn bad(addr: SocketAddr, what: &str) -> Error {
    Error::new(
        exit::UNAVAILABLE,
        format!("the status API at {addr} answered badly: {what}"),
        "is --api pointing at a shoal-agent?",
    )
}
