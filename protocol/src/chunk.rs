//! Content-defined chunking: where an artifact is cut into pieces.
//!
//! Cut points come from FastCDC (the 2020 variant of the `fastcdc` crate, normalisation
//! level 1) with pieces of [`MIN_PIECE_LEN`] to [`MAX_PIECE_LEN`] bytes averaging
//! [`AVG_PIECE_LEN`]. Because a cut depends only on the bytes just before it, inserting
//! or deleting a few bytes moves only the pieces around the edit: the rest of a new
//! release keeps the hashes of the old one, and an agent holding the old release fetches
//! only what changed. The cut points are part of the format: changing the algorithm or
//! its parameters changes every index, so the crate version is pinned.

use crate::digest::Digest;
use crate::index::PieceIndex;
use crate::limits::{AVG_PIECE_LEN, MAX_PIECE_LEN, MIN_PIECE_LEN};

/// The (offset, length) of every piece of `data`, in order. Empty data has no pieces.
pub fn cut_points(data: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    fastcdc::v2020::FastCDC::new(
        data,
        MIN_PIECE_LEN as usize,
        AVG_PIECE_LEN as usize,
        MAX_PIECE_LEN as usize,
    )
    .map(|c| (c.offset, c.length))
}

/// Chunks and hashes `data` on the calling thread (the publisher parallelises this).
pub fn index_of(data: &[u8]) -> PieceIndex {
    PieceIndex::from_pieces(
        cut_points(data).map(|(off, len)| (len as u32, Digest::of(&data[off..off + len]))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Deterministic pseudo-random bytes (xorshift), so the test needs no RNG crate.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn pieces_cover_the_data_within_bounds() {
        let data = noise(20 << 20, 1);
        let idx = index_of(&data);
        assert_eq!(idx.total_len(), data.len() as u64);
        let n = idx.pieces().len();
        assert!((40..=160).contains(&n), "{n} pieces for 20 MiB");
        for (i, p) in idx.pieces().iter().enumerate() {
            assert!(p.length <= MAX_PIECE_LEN);
            if i + 1 < n {
                assert!(p.length >= MIN_PIECE_LEN);
            }
        }
        assert!(index_of(&[]).pieces().is_empty());
    }

    #[test]
    fn an_insertion_moves_only_nearby_pieces() {
        let old = noise(64 << 20, 42);
        let mut new = old.clone();
        let mid = old.len() / 2;
        new.splice(mid..mid, b"a few new bytes".iter().copied());
        let old_idx = index_of(&old);
        let new_idx = index_of(&new);
        let old_set: HashSet<_> = old_idx.pieces().iter().map(|p| p.digest).collect();
        let changed = new_idx
            .pieces()
            .iter()
            .filter(|p| !old_set.contains(&p.digest))
            .count();
        assert!(old_idx.pieces().len() > 30);
        assert!(
            (1..=3).contains(&changed),
            "{changed} of {} pieces changed",
            new_idx.pieces().len()
        );
    }
}
