//! A throttling TCP relay on loopback: put in front of the test origin, it makes a
//! download take seconds instead of milliseconds, so a test can act in the middle of it
//! (kill the agent, fill the disk).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay; dropping it closes its listener and every connection it relays (an
/// origin that becomes unreachable).
pub struct Throttle {
    /// Where it listens (on 127.0.0.1).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Throttle {
    /// Relays connections to `to`, passing at most `bytes_per_sec` towards the client on
    /// each connection (the other way unthrottled).
    pub async fn start(to: SocketAddr, bytes_per_sec: u64) -> Throttle {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // The relays live in this task's set: stopping the relay ends them all.
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = l.accept().await {
                relays.spawn(relay(client, to, bytes_per_sec));
                while relays.try_join_next().is_some() {}
            }
        });
        Throttle { addr, task }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, to: SocketAddr, bytes_per_sec: u64) {
    let Ok(server) = TcpStream::connect(to).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    // 10 slices a second.
    let slice = (bytes_per_sec / 10).max(1) as usize;
    let mut buf = vec![0u8; slice];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100) * n as u32 / slice as u32).await;
    }
    let _ = cw.shutdown().await;
    up.abort();
}
