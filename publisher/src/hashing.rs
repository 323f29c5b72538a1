//! Chunking and hashing an artifact on every core.
//!
//! One pass over the file gives the whole-file SHA-256, another the piece cut points,
//! another the piece hashes. On two cores they are split like this: one thread hashes
//! the whole file while the other finds cut points and queues pieces; whichever finishes
//! first starts taking pieces off the queue, so both cores stay busy to the end.
//! The file is memory-mapped: no copy through user-space buffers.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use shoal_protocol::Digest;
use shoal_protocol::chunk::cut_points;
use shoal_protocol::digest::Hasher;
use shoal_protocol::index::PieceIndex;

use crate::error::{Error, Result};

/// What hashing an artifact yields.
pub struct Hashed {
    /// Length in bytes.
    pub length: u64,
    /// Whole-file SHA-256.
    pub sha256: Digest,
    /// The piece index.
    pub index: PieceIndex,
}

/// Whole-file hashing proceeds in steps of this size, so progress moves smoothly.
const STEP: usize = 8 << 20;

/// Maps `path` and hashes it; `progress` grows by the bytes of the whole-file pass.
pub fn hash_file(path: &Path, progress: &AtomicU64) -> Result<Hashed> {
    let file = File::open(path).map_err(Error::io("opening", path))?;
    let len = file.metadata().map_err(Error::io("reading", path))?.len();
    if len == 0 {
        return Ok(hash_bytes(&[], progress));
    }
    // SAFETY: the map is read-only and private to this process. The publisher hashes its
    // own copy inside the release directory, which nothing else writes while `release`
    // runs; a concurrent writer could at worst make the hashes disagree with the bytes,
    // which `verify` reports.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io("mapping", path))?;
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(hash_bytes(&map, progress))
}

/// The SHA-256 of a whole file, streamed.
pub fn sha256_file(path: &Path) -> Result<Digest> {
    use std::io::Read;
    let mut f = File::open(path).map_err(Error::io("opening", path))?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// Chunks and hashes `data` on two threads (see the module docs).
pub fn hash_bytes(data: &[u8], progress: &AtomicU64) -> Hashed {
    let (tx, rx) = mpsc::channel::<(usize, usize, usize)>();
    let rx = Mutex::new(rx);
    let (sha256, mut pieces) = std::thread::scope(|s| {
        let whole = s.spawn(|| {
            let mut h = Hasher::new();
            for step in data.chunks(STEP) {
                h.update(step);
                progress.fetch_add(step.len() as u64, Ordering::Relaxed);
            }
            (h.finish(), hash_queued(data, &rx))
        });
        for (i, (off, len)) in cut_points(data).enumerate() {
            // The receiver lives until both workers finish; a send cannot fail.
            let _ = tx.send((i, off, len));
        }
        drop(tx);
        let mut mine = hash_queued(data, &rx);
        let (sha, theirs) = whole
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        mine.extend(theirs);
        (sha, mine)
    });
    pieces.sort_unstable_by_key(|p| p.0);
    Hashed {
        length: data.len() as u64,
        sha256,
        index: PieceIndex::from_pieces(pieces.into_iter().map(|(_, len, d)| (len, d))),
    }
}

/// Hashes pieces off the shared queue until it is closed and empty.
fn hash_queued(
    data: &[u8],
    rx: &Mutex<mpsc::Receiver<(usize, usize, usize)>>,
) -> Vec<(usize, u32, Digest)> {
    let mut out = Vec::new();
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => break,
        };
        let Ok((i, off, len)) = job else { break };
        out.push((i, len as u32, Digest::of(&data[off..off + len])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_hashing_matches_the_reference() {
        let mut data = vec![0u8; 9 << 20];
        let mut x = 1u32;
        for b in data.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        let done = AtomicU64::new(0);
        let h = hash_bytes(&data, &done);
        assert_eq!(h.sha256, Digest::of(&data));
        assert_eq!(h.index, shoal_protocol::chunk::index_of(&data));
        assert_eq!(done.load(Ordering::Relaxed), data.len() as u64);
        assert!(hash_bytes(&[], &done).index.pieces().is_empty());
    }
}
