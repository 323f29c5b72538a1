//! # shoal-agent
//!
//! The endpoint side of Shoal. Swarm policy lives in `shoal_protocol::swarm` and the
//! handshake's rules in `shoal_protocol::wire`, never here; this crate moves bytes
//! between them, the network, the disk and the host.
//!
//! | module | owns |
//! |---|---|
//! | [`release`] | loading a release: trust chain walk, manifest and index verification |
//! | [`trustchain`] | the trust documents this agent verified after its anchor, kept in the state directory |
//! | [`origin`] | the HTTPS client of the vendor's origin |
//! | [`store`] | the content-addressed piece store on disk |
//! | [`transfer`] | one release's swarm runtime: connections, dialers, discovery, the node |
//! | [`discovery`] | mDNS announcement and browsing |
//! | [`secure`] | private swarms: swarm keys, the Noise handshake and encrypted records |
//! | [`link`] | whether this machine's link is slow (a light peer id) |
//! | [`delivery`] | handing a complete release to the host, once per release content |
//! | [`fetch`] | `shoal-agent fetch`: one download |
//! | [`daemon`], [`config`] | `shoal-agent run`: following a channel |
//! | [`space`] | the free-disk check before a download |
//! | [`service`], [`logfile`] | `shoal-agent service`: the agent as a Windows service, logging to a rotated file |
//! | [`status`], [`api`] | what the daemon records about itself, and the local HTTP API, `/metrics` and dashboard that show it |
//! | [`show`] | `shoal-agent status` and `swarm`: the daemon's API as tables |
//! | [`cli`], [`error`] | the command line, its output and exit codes (plumbing shared with the publisher in `shoal-cli`) |

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod discovery;
pub mod error;
pub mod fetch;
pub mod link;
pub mod logfile;
pub mod origin;
pub mod release;
pub mod secure;
pub mod service;
pub mod show;
pub mod space;
pub mod status;
pub mod store;
pub mod transfer;
pub mod trustchain;
