//! Why a signed document (trust document or release manifest) was refused.
//!
//! One enum for both kinds: every variant names the rule that failed, so a caller can
//! print it and a test can assert on it. None of these are fatal to the process; they
//! are verdicts on bytes that came from outside.

use crate::envelope::DocumentKind;

/// A refused trust document or release manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The file is larger than its kind's cap; it was not parsed.
    #[error("{kind} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Which kind of document.
        kind: DocumentKind,
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The envelope or the signed body does not parse or breaks a structural rule.
    #[error("{kind} is malformed: {reason}")]
    Malformed {
        /// Which kind of document.
        kind: DocumentKind,
        /// What is wrong.
        reason: String,
    },
    /// Fewer distinct authorised keys signed than the threshold requires.
    #[error("{kind} has {have} valid signature(s) from {role} keys, {need} required")]
    Threshold {
        /// Which kind of document.
        kind: DocumentKind,
        /// Which key set was asked: "root", "previous root", "release".
        role: &'static str,
        /// Distinct keys of that set whose signature verified.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// A successor trust document does not carry exactly the next version.
    #[error("trust document version {got} cannot follow version {current}: it must be {}", current + 1)]
    TrustVersion {
        /// The version the holder has now.
        current: u64,
        /// The version offered.
        got: u64,
    },
    /// The document names another product.
    #[error("{kind} is for product {got:?}, expected {want:?}")]
    WrongProduct {
        /// Which kind of document.
        kind: DocumentKind,
        /// Product expected.
        want: String,
        /// Product found.
        got: String,
    },
    /// The manifest is for another channel.
    #[error("manifest is for channel {got:?}, expected {want:?}")]
    WrongChannel {
        /// Channel expected.
        want: String,
        /// Channel found.
        got: String,
    },
    /// The document's expiry time has passed.
    #[error("{kind} expired at {expires} (now {now}); the publisher must re-sign it")]
    Expired {
        /// Which kind of document.
        kind: DocumentKind,
        /// Its expiry, Unix seconds.
        expires: u64,
        /// The clock passed in.
        now: u64,
    },
    /// The manifest claims to have been created in the future (beyond clock skew).
    #[error("manifest was created at {created}, more than {skew} s after now ({now})")]
    FromTheFuture {
        /// Its creation time, Unix seconds.
        created: u64,
        /// The clock passed in.
        now: u64,
        /// The allowed skew.
        skew: u64,
    },
    /// The manifest version is lower than one already accepted (rollback attack).
    #[error("manifest version {got} is lower than version {floor} already accepted")]
    Rollback {
        /// The highest version accepted so far.
        floor: u64,
        /// The version offered.
        got: u64,
    },
    /// The same manifest version was seen with different bytes (equivocation).
    #[error("manifest version {version} was already accepted with different content")]
    Equivocation {
        /// The version in question.
        version: u64,
    },
}
