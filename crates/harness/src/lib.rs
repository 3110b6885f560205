//! Tools beside the flagstream engine (like raft-engine's `ctl` and `stress`): everything
//! that drives a flagstream from the outside, as a client would.
//!
//! | module | owns |
//! |---|---|
//! | [`serve`] | starting `flagstream serve` on free loopback ports and stopping it; used by every end-to-end test and by `flagstream bench` |
//! | [`admin_api`] | `flagstream destinations …`: admin API calls (URL, token, refusals) |
//! | [`client`] | a minimal HTTP/1.1 client (no pooling; TLS trusting a given CA) for admin polling and the load generator's connections |
//! | [`load`] | `flagstream bench`: the end-to-end load generator and its report |
//! | [`procstat`] | CPU time and the resident-memory split of a process, from `/proc` |
//! | [`storage`] | a process' storage writes and the machine's busy / iowait / idle split, from `/proc` (was a run bound by the disk?) |
//! | [`top`] | `flagstream top`: a live (or one-shot) view of a server from its admin API |
//! | [`dead_letters`] | `flagstream dead-letters list/show/redrive` over the admin API |
//!
//! The server's library never depends on this crate: the `flagstream` binary uses it for its
//! `bench` and `top` subcommands and the integration tests use it as a dev-dependency.

pub mod admin_api;
pub mod client;
pub mod dead_letters;
pub mod load;
pub mod procstat;
pub mod serve;
pub mod storage;
pub mod top;

pub use serve::{ServeOptions, Server, StartError};
