//! The piece index: where each piece of an artifact lies and what it hashes to.
//!
//! Binary layout (all integers big-endian):
//!
//! ```text
//! offset size  field
//!      0    8  magic "SHOALIDX"
//!      8    4  format version = 1
//!     12    4  piece count N (at most MAX_PIECES_PER_ARTIFACT)
//!     16    8  artifact length (sum of the piece lengths)
//!     24 36*N  N entries: piece length (u32, 1..=MAX_PIECE_LEN) then its SHA-256 (32 bytes)
//! ```
//!
//! Offsets are not stored: piece `i` starts where piece `i-1` ends, so an index cannot
//! describe gaps or overlaps. The manifest pins the index by SHA-256 and length, so the
//! index itself needs no signature. [`PieceIndex::parse`] accepts exactly what
//! [`PieceIndex::encode`] writes and nothing else.

use crate::digest::Digest;
use crate::limits::{MAX_PIECE_LEN, MAX_PIECES_PER_ARTIFACT};

/// Bytes before the first entry.
pub const INDEX_HEADER_LEN: usize = 24;
/// Bytes per entry.
pub const INDEX_ENTRY_LEN: usize = 36;
const MAGIC: &[u8; 8] = b"SHOALIDX";
const FORMAT_VERSION: u32 = 1;

/// One piece of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Byte offset in the artifact.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
    /// SHA-256 of the piece's bytes.
    pub digest: Digest,
}

/// The ordered pieces of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceIndex {
    total: u64,
    pieces: Vec<Piece>,
}

/// Why bytes are not a valid piece index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// Shorter than the header, or not header plus whole entries.
    #[error("piece index is {0} bytes, which is not a header plus whole entries")]
    BadLength(usize),
    /// Wrong magic or format version.
    #[error("not a Shoal piece index (bad magic or format version)")]
    BadHeader,
    /// The count is over the limit or does not match the length.
    #[error("piece index declares {0} pieces, which its length or the limit does not allow")]
    BadCount(u32),
    /// A piece length is zero or over `MAX_PIECE_LEN`.
    #[error("piece {0} has length {1}, outside 1..={MAX_PIECE_LEN}")]
    BadPieceLength(u32, u32),
    /// The lengths do not add up to the declared artifact length.
    #[error("piece lengths add up to {sum}, but the index declares {declared}")]
    BadTotal {
        /// Sum of the entries.
        sum: u64,
        /// Header's artifact length.
        declared: u64,
    },
}

impl PieceIndex {
    /// Builds an index from (length, digest) pairs in artifact order.
    pub fn from_pieces(lengths_and_digests: impl IntoIterator<Item = (u32, Digest)>) -> Self {
        let mut offset = 0u64;
        let pieces = lengths_and_digests
            .into_iter()
            .map(|(length, digest)| {
                let p = Piece {
                    offset,
                    length,
                    digest,
                };
                offset += u64::from(length);
                p
            })
            .collect();
        PieceIndex {
            total: offset,
            pieces,
        }
    }

    /// Parses and validates an index (see the module docs for the rules).
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() < INDEX_HEADER_LEN
            || !(bytes.len() - INDEX_HEADER_LEN).is_multiple_of(INDEX_ENTRY_LEN)
        {
            return Err(IndexError::BadLength(bytes.len()));
        }
        let (header, body) = bytes.split_at(INDEX_HEADER_LEN);
        if &header[0..8] != MAGIC || be_u32(&header[8..12]) != FORMAT_VERSION {
            return Err(IndexError::BadHeader);
        }
        let count = be_u32(&header[12..16]);
        let declared = u64::from_be_bytes(header[16..24].try_into().unwrap_or_default());
        if count > MAX_PIECES_PER_ARTIFACT || body.len() / INDEX_ENTRY_LEN != count as usize {
            return Err(IndexError::BadCount(count));
        }
        let mut pieces = Vec::with_capacity(count as usize);
        let mut offset = 0u64;
        for (i, e) in body.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
            let length = be_u32(&e[0..4]);
            if length == 0 || length > MAX_PIECE_LEN {
                return Err(IndexError::BadPieceLength(i as u32, length));
            }
            let mut d = [0u8; 32];
            d.copy_from_slice(&e[4..36]);
            pieces.push(Piece {
                offset,
                length,
                digest: Digest(d),
            });
            offset += u64::from(length);
        }
        if offset != declared {
            return Err(IndexError::BadTotal {
                sum: offset,
                declared,
            });
        }
        Ok(PieceIndex {
            total: declared,
            pieces,
        })
    }

    /// The canonical bytes of this index.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + INDEX_ENTRY_LEN * self.pieces.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&(self.pieces.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.total.to_be_bytes());
        for p in &self.pieces {
            out.extend_from_slice(&p.length.to_be_bytes());
            out.extend_from_slice(&p.digest.0);
        }
        out
    }

    /// The pieces in artifact order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The artifact length the index describes.
    pub fn total_len(&self) -> u64 {
        self.total
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap_or_default())
}

/// Why an index file is not the one a verified manifest names for its artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexCheckError {
    /// Another length than the manifest's `index.length`.
    #[error("is {got} bytes, the manifest says {want}")]
    Length {
        /// Bytes received.
        got: u64,
        /// Bytes the manifest names.
        want: u64,
    },
    /// Another SHA-256 than the manifest's `index.sha256`.
    #[error("SHA-256 does not match the manifest")]
    Digest,
    /// The bytes are not a valid piece index.
    #[error(transparent)]
    Format(#[from] IndexError),
    /// The index describes another artifact length than the manifest.
    #[error("describes {describes} bytes, the manifest says {artifact}")]
    Total {
        /// Bytes the index covers.
        describes: u64,
        /// The artifact's length in the manifest.
        artifact: u64,
    },
}

/// Checks `bytes` against the index the verified manifest names for `artifact` (length,
/// SHA-256, format, total), in that order, and parses it. The one check agents and
/// `shoal-publisher verify` both run: nothing from a peer, a mirror or the origin is
/// parsed before its length and digest match what the vendor signed.
pub fn verify_index(
    artifact: &crate::manifest::Artifact,
    bytes: &[u8],
) -> Result<PieceIndex, IndexCheckError> {
    if bytes.len() as u64 != artifact.index.length {
        return Err(IndexCheckError::Length {
            got: bytes.len() as u64,
            want: artifact.index.length,
        });
    }
    if Digest::of(bytes) != artifact.index.sha256 {
        return Err(IndexCheckError::Digest);
    }
    let index = PieceIndex::parse(bytes)?;
    if index.total_len() != artifact.length {
        return Err(IndexCheckError::Total {
            describes: index.total_len(),
            artifact: artifact.length,
        });
    }
    Ok(index)
}

/// The index files of one verified manifest, reassembled from `IndexData` parts a peer
/// pushes in order. Each file grows only at its end and never past the length the
/// manifest declares, so a peer cannot make it buffer more than the vendor signed; the
/// result is checked against the manifest's digests by whoever builds the release.
#[derive(Debug)]
pub struct IndexAssembly {
    wanted: Vec<(Digest, u64)>,
    bufs: Vec<Vec<u8>>,
}

impl IndexAssembly {
    /// Collects the index files of `artifacts`, in manifest order.
    pub fn new(artifacts: &[crate::manifest::Artifact]) -> Self {
        IndexAssembly {
            wanted: artifacts
                .iter()
                .map(|a| (a.index.sha256, a.index.length))
                .collect(),
            bufs: artifacts.iter().map(|_| Vec::new()).collect(),
        }
    }

    /// Takes `data` at `offset` of the index file named `index`; returns whether it was
    /// the next part of a file still wanted (other parts are ignored).
    pub fn push(&mut self, index: &[u8; 32], offset: u32, data: &[u8]) -> bool {
        let mut taken = false;
        for ((sha, len), buf) in self.wanted.iter().zip(self.bufs.iter_mut()) {
            let fits = (buf.len() as u64).saturating_add(data.len() as u64) <= *len;
            if sha.0 == *index && offset as usize == buf.len() && fits && !data.is_empty() {
                buf.extend_from_slice(data);
                taken = true;
            }
        }
        taken
    }

    /// Whether every file has its declared length.
    pub fn is_complete(&self) -> bool {
        self.bufs
            .iter()
            .zip(&self.wanted)
            .all(|(b, (_, len))| b.len() as u64 == *len)
    }

    /// The files' bytes, in manifest order.
    pub fn into_parts(self) -> Vec<Vec<u8>> {
        self.bufs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PieceIndex {
        PieceIndex::from_pieces([(10, Digest::of(b"a")), (5, Digest::of(b"b"))])
    }

    #[test]
    fn round_trip() {
        let idx = sample();
        let bytes = idx.encode();
        assert_eq!(bytes.len(), INDEX_HEADER_LEN + 2 * INDEX_ENTRY_LEN);
        let back = PieceIndex::parse(&bytes).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.pieces()[1].offset, 10);
        assert_eq!(back.total_len(), 15);
    }

    #[test]
    fn every_rule_is_enforced() {
        let good = sample().encode();
        let mut truncated = good.clone();
        truncated.pop();
        let mut magic = good.clone();
        magic[0] = b'X';
        let mut count = good.clone();
        count[15] = 3;
        let mut zero = good.clone();
        zero[24..28].copy_from_slice(&0u32.to_be_bytes());
        let mut huge = good.clone();
        huge[24..28].copy_from_slice(&(MAX_PIECE_LEN + 1).to_be_bytes());
        let mut total = good.clone();
        total[23] = 16;
        let cases: Vec<(Vec<u8>, IndexError)> = vec![
            (truncated, IndexError::BadLength(good.len() - 1)),
            (vec![0; 10], IndexError::BadLength(10)),
            (magic, IndexError::BadHeader),
            (count, IndexError::BadCount(3)),
            (zero, IndexError::BadPieceLength(0, 0)),
            (huge, IndexError::BadPieceLength(0, MAX_PIECE_LEN + 1)),
            (
                total,
                IndexError::BadTotal {
                    sum: 15,
                    declared: 16,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(PieceIndex::parse(&bytes), Err(want));
        }
    }
}
