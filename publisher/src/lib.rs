//! # shoal-publisher
//!
//! The vendor's side of Shoal: key sets and trust documents ([`keygen`], [`keystore`]),
//! signed releases laid out as static files ([`release`], [`hashing`]; paths from `shoal_protocol::layout`),
//! re-signing before expiry ([`refresh`]), end-to-end checks of a directory or a served origin ([`verify`], [`source`]) and an
//! HTTPS origin server ([`serve`]). [`cli`] is the thin command line over them.

pub mod cli;
pub mod error;
pub mod fsutil;
pub mod hashing;
pub mod keygen;
pub mod keystore;
pub mod package;
pub mod progress;
pub mod refresh;
pub mod release;
pub mod serve;
pub mod source;
pub mod stats;
pub mod verify;
