//! slotproxy: a Redis Cluster proxy. Clients connect to one endpoint as if it were a standalone
//! Redis; slotproxy routes every command by the hash slot of its keys to the node that owns it.
//!
//! # Layout
//!
//! The file names are the architecture; one request flows top to bottom:
//!
//! - [`config`]: TOML config, CLI/env overrides, validation.
//! - [`server`]: accept loop, client limit, one [`session`] per client.
//! - [`session`]: one client: read, frame, route, await replies in order, write.
//! - [`protocol::framer`]: incremental, bounded RESP request framing (and inline commands).
//! - [`protocol::reply_framer`]: incremental framing of RESP2/RESP3 replies from nodes.
//! - [`protocol::command`]: the command table: flags, key positions, proxy handling.
//! - [`protocol::reply`]: replies the proxy builds; parsing of `-MOVED`/`-ASK`/... errors.
//! - [`cluster::slot`]: `Slot` and `key_slot()`.
//! - [`cluster::topology`]: immutable `Topology` and the `CLUSTER NODES` parser.
//! - [`cluster::refresher`]: background refresh, epoch checks, `ArcSwap` store.
//! - [`router`]: pure routing: (command, topology, read policy) -> `Route`.
//! - [`backend::pool`]: per-node connection handles that survive topology swaps.
//! - [`backend::conn`]: one multiplexed, pipelined backend socket.
//! - [`redirect`]: the bounded MOVED/ASK/TRYAGAIN/CLUSTERDOWN retry policy.
//! - [`fanout`]: multi-key split/merge and all-masters commands.
//! - [`bootstrap`]: forming a cluster (`slotproxy bootstrap`, `down`, `up`).
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod cluster;
pub mod protocol;
