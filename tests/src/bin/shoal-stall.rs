//! `shoal-stall`: many peers that join a release, ask an agent for data and never read
//! it (the attack of the agent-core issue, #8), for `bench/never-reads.sh`. Each peer is
//! a thread with a 4 KiB receive buffer; it floods requests (valid blocks, requests the
//! agent must reject, index ranges: one third each) until a write fails (the agent
//! dropped it) or the time is up, and prints one JSON line of what happened. A peer whose
//! writes stall stops writing (a frame may be cut) and watches the connection's TCP
//! state instead. The 4 KiB receive buffer is set after connecting, so the first window
//! it advertises is the system default.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_protocol::Digest;
use shoal_protocol::index::PieceIndex;
use shoal_protocol::wire::{
    BlockRef, Capabilities, FrameDecoder, Handshake, Hello, Message, PROTOCOL_VERSION, PeerId,
    PieceNumber, Role,
};

/// Peers that never read.
#[derive(Parser)]
struct Args {
    /// The release directory `shoal-publisher release` wrote (for the release id).
    #[arg(long)]
    repo: PathBuf,
    /// Channel.
    #[arg(long, default_value = "stable")]
    channel: String,
    /// The agent to attack.
    #[arg(long)]
    peer: SocketAddr,
    /// How many peers.
    #[arg(long, default_value_t = 1000)]
    count: u32,
    /// How long each peer keeps trying, in seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
}

#[derive(Default)]
struct Tally {
    joined: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    lasted: AtomicU64,
    sent_bytes: AtomicU64,
}

fn main() {
    let a = Args::parse();
    let manifest = std::fs::read(a.repo.join(format!("channels/{}.json", a.channel)))
        .expect("the channel's manifest");
    let release = Digest::of(&manifest);
    let index_path = std::fs::read_dir(a.repo.join("indexes"))
        .expect("indexes/")
        .next()
        .expect("one index")
        .expect("readable")
        .path();
    let index = std::fs::read(&index_path).expect("the index");
    let pieces = PieceIndex::parse(&index)
        .expect("a valid index")
        .pieces()
        .len() as u32;
    let index = Digest::of(&index).0;
    let tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(a.secs);
    std::thread::scope(|s| {
        for k in 0..a.count {
            let tally = &tally;
            let peer = a.peer;
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn_scoped(s, move || {
                    let flood = requests(k, pieces, index);
                    match join(peer, release, pieces, k) {
                        Some(s) => {
                            tally.joined.fetch_add(1, Ordering::Relaxed);
                            stall(s, &flood, deadline, tally);
                        }
                        None => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("a thread");
        }
    });
    println!(
        "{{\"peers\":{},\"joined\":{},\"refused_or_timed_out\":{},\"dropped_by_agent\":{},\"lasted_to_the_end\":{},\"request_bytes_sent\":{}}}",
        a.count,
        tally.joined.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.dropped.load(Ordering::Relaxed),
        tally.lasted.load(Ordering::Relaxed),
        tally.sent_bytes.load(Ordering::Relaxed),
    );
}

/// Connects, shrinks the receive buffer, and joins the release; `None` if the agent did
/// not let us in within 15 s (its connection table is full: the rest wait in its backlog).
fn join(addr: SocketAddr, release: Digest, pieces: u32, k: u32) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket and a c_int option value of the right length.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&k.to_be_bytes());
    id[15] = 0x5a;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::SEED,
        peer_id: PeerId(id),
        nonce: [k as u8; 32],
    };
    let (mut hs, first) = Handshake::new(Role::Initiator, hello, release, Vec::new());
    s.write_all(&first.to_frame()).ok()?;
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 256];
    loop {
        let msg = loop {
            if let Some(m) = dec.next_message().ok()? {
                break m;
            }
            let want = dec.wanted().ok()?.min(buf.len());
            let n = s.read(&mut buf[..want]).ok()?;
            if n == 0 {
                return None;
            }
            dec.push(&buf[..n]);
        };
        let step = hs.handle(msg).ok()?;
        if let Some(m) = step.send {
            s.write_all(&m.to_frame()).ok()?;
        }
        if step.joined.is_some() {
            break;
        }
    }
    let map = Message::PieceMap {
        piece_count: pieces,
        bits: vec![0; pieces.div_ceil(8) as usize],
    };
    s.write_all(&map.to_frame()).ok()?;
    Some(s)
}

/// 1,000 requests of peer `k`'s kind: valid 64 KiB blocks, requests past a piece's end,
/// or 256 KiB index ranges.
fn requests(k: u32, pieces: u32, index: [u8; 32]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let piece = PieceNumber(i % pieces.saturating_sub(1).max(1));
        let msg = match k % 3 {
            0 => Message::Request(BlockRef {
                piece,
                offset: 0,
                length: 64 * 1024,
            }),
            1 => Message::Request(BlockRef {
                piece,
                offset: 2 << 20,
                length: 1024,
            }),
            _ => Message::IndexRequest {
                index,
                offset: 0,
                length: 256 * 1024,
            },
        };
        msg.encode(&mut out);
    }
    out
}

/// Writes `flood` again and again, never reading, until a write fails or `deadline`.
fn stall(mut s: TcpStream, flood: &[u8], deadline: Instant, tally: &Tally) {
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    while Instant::now() < deadline {
        match s.write_all(flood) {
            Ok(()) => {
                tally
                    .sent_bytes
                    .fetch_add(flood.len() as u64, Ordering::Relaxed);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                // The agent is not taking our requests (a frame may be cut, so no more
                // writes): hold the connection, watching whether the agent closes it.
                while Instant::now() < deadline {
                    if closed_by_agent(&s) {
                        tally.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                break;
            }
            Err(_) => {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tally.lasted.fetch_add(1, Ordering::Relaxed);
}

/// Whether the agent closed (or reset) the connection, read from the kernel's TCP state
/// without reading any data.
fn closed_by_agent(s: &TcpStream) -> bool {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // 1 is TCP_ESTABLISHED; a FIN from the agent moves us to CLOSE_WAIT, a reset to CLOSE.
    rc == 0 && info.tcpi_state != 1
}
