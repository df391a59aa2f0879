//! slotproxy: a Redis Cluster proxy. Clients connect to one endpoint as if it were a standalone
//! Redis; slotproxy routes every command by the hash slot of its keys to the node that owns it.
//!
//! # Layout
//!
//! The file names are the architecture; one request flows top to bottom:
//!
//! - [`config`]: TOML config, CLI/env overrides, validation.
//! - [`server`]: the lifecycle: start-up, accept loop, client limit, one [`session`] per
//!   client, signals, drain.
//! - [`reload`]: SIGHUP: re-read, validate and swap the configuration; reload hooks.
//! - [`health`]: what the proxy can reach now, over all workers (`/readyz`, cluster gauges).
//! - [`logging`]: the log subscriber: level reload, text or JSON lines.
//! - [`proxy`]: the state all sessions share (config, refresher, command table).
//! - [`slowlog`]: the proxy's own slow requests, merged into SLOWLOG with the masters'.
//! - [`session`]: one client: read, frame, route, queue replies in order, write; its
//!   transactions (`session/transaction.rs`), subscriptions (`session/subscribe.rs`) and what
//!   admin commands need of it (`session/admin.rs`: CLIENT PAUSE/REPLY, WAIT, MONITOR).
//! - [`protocol::framer`]: incremental, bounded RESP request framing (and inline commands).
//! - [`protocol::command`]: the command table: flags, key positions, and each command's typed
//!   [`Handling`](protocol::command::Handling) (`protocol/command/handling.rs`).
//! - [`local`]: commands the proxy answers itself (PING, HELLO, AUTH, CLIENT, ...); INFO
//!   (`local/info.rs`) and CLIENT (`local/client.rs`).
//! - [`clients`]: the process-wide registry of clients (CLIENT LIST/KILL/PAUSE, INFO clients).
//! - [`auth`]: client users: who may log in (default and `[[users]]`), password checks, what
//!   a read-only user may run, `-NOAUTH`/`-WRONGPASS`/`-NOPERM`, failed-login accounting.
//! - [`router`]: pure routing: (keys, topology, read policy) -> node.
//! - [`forward`]: one request in flight, carried through redirects and retries.
//! - [`redirect`]: the bounded MOVED/ASK/TRYAGAIN/CLUSTERDOWN retry policy, and whether a
//!   request not run waits for a new master, as pure functions.
//! - [`hold`]: requests held through a failover: counted, bounded, woken by topology changes.
//! - [`fanout`]: multi-key split/merge and all-masters commands; the parts' first replies land
//!   in one set of reply slots (`fanout/gather.rs`) and are merged into one (`fanout/merge.rs`,
//!   `fanout/logs.rs` for SLOWLOG/LATENCY/ACL LOG); commands for every node, replicas too
//!   (`fanout/broadcast.rs`: CONFIG SET, ACL SETUSER, INFO's node sections).
//! - [`pubsub`]: a subscribed client's own connection to one node.
//! - [`monitor`]: MONITOR, one stream merged from every master.
//! - [`reply_queue`]: the bounded FIFO of replies owed to one client, reader to writer; backend
//!   connections deliver replies straight into its slots.
//! - [`reply_memory`]: the bytes of replies owed to each client and to all of them; when a
//!   client must stop being read (`client_reply_buffer_limit`, `max_reply_memory`).
//! - [`backend::pool`]: per-node connection handles that survive topology swaps.
//! - [`backend::conn`]: one multiplexed, pipelined backend socket, fed by a batch job queue
//!   (`backend::jobs`).
//! - [`backend::control`]: one-off control-path queries (`CLUSTER NODES`, `COMMAND`).
//! - [`protocol::reply_framer`]: incremental framing of RESP2/RESP3 replies from nodes.
//! - [`protocol::reply`]: replies the proxy builds; parsing of `-MOVED`/`-ASK`/... errors.
//! - [`cluster::slot`]: `Slot` and `key_slot()`.
//! - [`cluster::topology`]: immutable `Topology` and the `CLUSTER NODES` parser.
//! - [`cluster::refresher`]: background refresh, epoch checks, `ArcSwap` store, change
//!   notifications; its decisions (fast polling during a failover, which nodes to ask, which
//!   view wins) are pure functions in [`cluster::poll`].
//! - [`metrics`]: the Prometheus registry and the handles the hot path counts with;
//!   [`metrics::http`] serves `/metrics`, `/healthz` and `/readyz`.
//! - [`tls`]: TLS contexts (rustls) for the client listener and the node connections;
//!   [`tls_listener`] accepts TLS clients and hands them to a session.
//! - [`bootstrap`]: forming a cluster (`slotproxy bootstrap`, `down`, `up`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod bootstrap;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod fanout;
pub mod forward;
pub mod health;
pub mod hold;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod protocol;
pub mod proxy;
pub mod pubsub;
pub mod redirect;
pub mod reload;
pub mod reply_memory;
pub mod reply_queue;
pub mod router;
pub mod server;
pub mod session;
pub mod slowlog;
pub mod tls;
pub mod tls_listener;
