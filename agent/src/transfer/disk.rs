//! The transfer's disk IO, all of it on blocking threads: the start-up scan of the piece
//! store, the writes of verified pieces, and the block reads of uploads.
//!
//! A verified piece is kept in memory from the moment the core counts it as held until
//! its file has landed, so a peer that asks for it at once is served from memory; at
//! most [`MAX_PENDING_WRITES`] such pieces exist (the node waits for a write to land
//! before it starts another). Uploads are read here just before the connection writes
//! them, never queued as data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use shoal_protocol::swarm::PieceSpec;
use shoal_protocol::wire::BlockRef;

use crate::error::{Error, Result, exit};
use crate::release::Release;
use crate::store::Store;

/// Piece writes in flight at most (each holds its piece, at most 1 MiB, in memory).
pub const MAX_PENDING_WRITES: usize = 16;

/// The disk side of one transfer; cheap to clone.
#[derive(Clone)]
pub struct Disk {
    store: Store,
    release: Arc<Release>,
    /// Verified pieces whose write has not landed yet.
    pending: Arc<Mutex<HashMap<u32, Arc<Vec<u8>>>>>,
}

fn joined<T>(r: std::result::Result<T, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| Error::new(exit::IO, format!("a disk task failed: {e}"), ""))
}

impl Disk {
    /// The disk side of `release`'s transfer over `store`.
    pub fn new(store: Store, release: Arc<Release>) -> Self {
        Disk {
            store,
            release,
            pending: Arc::default(),
        }
    }

    /// Which of the release's pieces the store holds, each re-hashed.
    pub async fn scan(&self) -> Result<Vec<bool>> {
        let (store, release) = (self.store.clone(), self.release.clone());
        joined(tokio::task::spawn_blocking(move || store.scan(&release.pieces)).await)
    }

    /// Writes verified piece `piece`; it is served from memory until the write landed.
    /// Returns the piece number with the outcome.
    pub fn write(
        &self,
        piece: u32,
        data: Vec<u8>,
    ) -> impl Future<Output = (u32, Result<()>)> + use<> {
        let data = Arc::new(data);
        let spec: Option<PieceSpec> = self.release.pieces.get(piece as usize).copied();
        self.pending_map().insert(piece, data.clone());
        let (store, pending) = (self.store.clone(), self.pending.clone());
        let task = tokio::task::spawn_blocking(move || {
            let r = match spec {
                Some(s) => store.put(&s.digest, &data),
                None => Ok(()),
            };
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&piece);
            r
        });
        async move { (piece, joined(task.await).and_then(|r| r)) }
    }

    /// The bytes of each of `blocks` (of held pieces), in order: from memory for pieces
    /// whose write is pending, the rest read from the store in one blocking task.
    pub async fn read_blocks(&self, blocks: Vec<BlockRef>) -> Vec<Result<Vec<u8>>> {
        if blocks.is_empty() {
            return Vec::new();
        }
        let (disk, n) = (self.clone(), blocks.len());
        let task = tokio::task::spawn_blocking(move || {
            blocks
                .iter()
                .map(|b| disk.read_block(*b))
                .collect::<Vec<_>>()
        });
        match task.await {
            Ok(v) => v,
            Err(e) => (0..n)
                .map(|_| Err(Error::new(exit::IO, format!("a disk task failed: {e}"), "")))
                .collect(),
        }
    }

    /// The bytes of `block` of a held piece (blocking).
    fn read_block(&self, block: BlockRef) -> Result<Vec<u8>> {
        let p = block.piece.0;
        let spec = self
            .release
            .pieces
            .get(p as usize)
            .copied()
            .ok_or_else(|| Error::new(exit::IO, format!("piece {p} is not in the release"), ""))?;
        let end = u64::from(block.offset) + u64::from(block.length);
        if end > u64::from(spec.length) {
            return Err(Error::new(exit::IO, format!("block past piece {p}"), ""));
        }
        if let Some(data) = self.pending_map().get(&p).cloned() {
            return Ok(data[block.offset as usize..end as usize].to_vec());
        }
        self.store.read(&spec.digest, block.offset, block.length)
    }

    /// Bytes `offset..offset + length` of the release's index file `index` (clipped to
    /// the file); empty when the release has no such index.
    pub fn index_range(&self, index: &[u8; 32], offset: u32, length: u32) -> Vec<u8> {
        index_range(&self.release, index, offset, length)
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Vec<u8>>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bytes `offset..offset + length` of `release`'s index file named `index` (clipped to
/// the file); empty if the release has no such index.
pub fn index_range(release: &Release, index: &[u8; 32], offset: u32, length: u32) -> Vec<u8> {
    let found = release
        .artifacts()
        .iter()
        .position(|a| a.index.sha256.0 == *index)
        .and_then(|i| release.index_bytes.get(i));
    let Some(bytes) = found else {
        return Vec::new();
    };
    let start = (offset as usize).min(bytes.len());
    let end = start.saturating_add(length as usize).min(bytes.len());
    bytes[start..end].to_vec()
}
