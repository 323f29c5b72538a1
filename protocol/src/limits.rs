//! Every hard limit of the protocol, in one place.
//!
//! Bytes from a peer, a mirror or the origin are checked against one of these constants
//! before anything is allocated or parsed. Changing a limit that is visible on the wire
//! (`MAX_FRAME_LEN`, `MAX_BLOCK_LEN`, …) is a protocol change: `docs/PROTOCOL.md` lists
//! the same numbers.

/// Largest trust document file (envelope included) accepted, checked before parsing.
pub const MAX_TRUST_LEN: usize = 64 * 1024;
/// Largest release manifest file (envelope included) accepted, checked before parsing.
pub const MAX_MANIFEST_LEN: usize = 1024 * 1024;
/// Most signatures one envelope may carry.
pub const MAX_SIGNATURES: usize = 32;
/// Most keys in one role (root or release) of a trust document.
pub const MAX_ROLE_KEYS: usize = 32;
/// Most artifacts in one release manifest.
pub const MAX_ARTIFACTS: usize = 1024;
/// Longest name (artifact, product, channel, platform) in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest human version string of a release, in bytes.
pub const MAX_RELEASE_LABEL_LEN: usize = 128;
/// How far in the future a manifest's `created` time may lie (clock skew allowance).
pub const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;

/// Smallest piece the chunker cuts (the last piece of an artifact may be shorter).
pub const MIN_PIECE_LEN: u32 = 64 * 1024;
/// Average piece length the chunker aims at.
pub const AVG_PIECE_LEN: u32 = 256 * 1024;
/// Largest piece the chunker cuts and the largest a piece index may declare.
pub const MAX_PIECE_LEN: u32 = 1024 * 1024;
/// Largest artifact a manifest may declare (256 GiB).
pub const MAX_ARTIFACT_LEN: u64 = 256 * 1024 * 1024 * 1024;
/// Most pieces one artifact may have: a piece index beyond this is refused unread.
pub const MAX_PIECES_PER_ARTIFACT: u32 = 1 << 20;
/// Most pieces one release (all artifacts together) may have; bounds piece maps.
pub const MAX_PIECES_PER_RELEASE: u32 = 1 << 22;
/// Header plus every entry of the largest piece index.
pub const MAX_INDEX_LEN: u64 =
    crate::index::INDEX_HEADER_LEN as u64 + MAX_PIECES_PER_ARTIFACT as u64 * 36;

/// Largest block of piece data one `Piece` message carries.
pub const MAX_BLOCK_LEN: u32 = 256 * 1024;
/// Largest frame body (type byte plus payload). A piece map of `MAX_PIECES_PER_RELEASE`
/// bits (512 KiB) and a manifest offer of `MAX_MANIFEST_LEN` both fit.
pub const MAX_FRAME_LEN: u32 = MAX_MANIFEST_LEN as u32 + 64;
/// Longest reason text in a `Reject` message.
pub const MAX_REASON_LEN: usize = 256;
/// Longest display name in a `Stats` message, in bytes.
pub const MAX_PEER_NAME_LEN: usize = 64;
