//! # shoal-agent
//!
//! The endpoint daemon: discovery, peer connections, the origin client, the piece store,
//! the install hook, stats. Not built yet: this crate only reserves its place in the
//! workspace (see the `shoal-agent` issue). Swarm policy will live in `shoal-protocol`'s
//! state machine, never here.
