//! # shoal-agent
//!
//! The endpoint side of Shoal. Built so far: the origin client ([`origin`]), release
//! loading and verification ([`release`]), the content-addressed piece store ([`store`]),
//! peer connections with the handshake ([`peer`]), mDNS discovery ([`discovery`]), the node that drives the swarm core
//! ([`node`]) and one-shot `fetch` with static peers ([`fetch`]). The daemon ([`daemon`], [`config`]) follows a channel, delivers
//! releases and runs the install hook. Still to come (see the `shoal-agent` issue): the
//! stats API, manifest gossip, serving several releases at once. Swarm policy lives in `shoal_protocol::swarm`, never here.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod error;
pub mod fetch;
pub mod node;
pub mod origin;
pub mod peer;
pub mod progress;
pub mod release;
pub mod signals;
pub mod space;
pub mod store;
