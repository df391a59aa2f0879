//! Where a client's request goes: the slot of its keys, the master serving it, the shared
//! connection or one of the client's own (blocking commands), with the lane rules of
//! [`Lane`](super::Lane).
use super::{route_error, Lane, Pending, Pinned, Reader, Step};
use crate::forward::{Forward, Routed};
use crate::protocol::command::CommandInfo;
use crate::protocol::framer::Request;
use crate::router::{common_slot, pick_node, ReadFrom, RouteError};
use bytes::Bytes;
use std::net::SocketAddr;

impl Reader {
    pub(super) fn slot_of(
        &mut self,
        info: &CommandInfo,
        req: &Request,
    ) -> Result<Option<crate::cluster::slot::Slot>, RouteError> {
        self.keys.clear();
        self.proxy.commands.keys(info, req, &mut self.keys);
        common_slot(req, &self.keys)
    }

    pub(super) fn forward_keyed(&mut self, info: &CommandInfo, req: Request) -> Step {
        match self.slot_of(info, &req) {
            Ok(slot) => self.forward(req, slot, info.readonly),
            Err(e) => Step::Queue(Pending::Ready(route_error(&self.proxy, e))),
        }
    }

    pub(super) fn forward(
        &mut self,
        req: Request,
        slot: Option<crate::cluster::slot::Slot>,
        readonly: bool,
    ) -> Step {
        // The configuration and the topology from the session's caches (see `Reader::config`).
        let c = self.config.load();
        let (read_from, window) = (c.read_from, c.read_your_writes);
        let readonly = self.read_your_writes(slot, readonly, read_from, window);
        let client = self.client();
        let proxy = &self.proxy;
        let view = self
            .view
            .get_or_insert_with(|| proxy.refresher.view_cache())
            .load();
        match Forward::route_or_hold(
            proxy,
            view,
            client,
            req.bytes().clone(),
            slot,
            readonly,
            read_from,
        ) {
            Ok(Routed::Send(f, conn)) => Step::Route(f, conn),
            // Held through a failover: queued in order, sent when its slot has a master.
            Ok(Routed::Held(f)) => Step::Queue(Pending::Forward(f, self.client())),
            Err(e) => Step::Queue(Pending::Ready(e)),
        }
    }

    /// With `read_your_writes_ms` and reads going to replicas: notes a write's slot, and sends a
    /// read of a slot the client wrote to lately to the master (`false`: not a replica read).
    fn read_your_writes(
        &mut self,
        slot: Option<crate::cluster::slot::Slot>,
        readonly: bool,
        read_from: ReadFrom,
        window: Option<std::time::Duration>,
    ) -> bool {
        let (Some(window), Some(slot)) = (window, slot) else {
            return readonly;
        };
        if read_from == ReadFrom::Master {
            return readonly;
        }
        let now = std::time::Instant::now();
        if !readonly {
            self.recent_writes.note(slot, now);
            return false;
        }
        !self.recent_writes.recent(slot, window, now)
    }

    /// The master serving `slot` (any master when `None`).
    pub(super) fn master_for(
        &self,
        slot: Option<crate::cluster::slot::Slot>,
    ) -> Result<SocketAddr, Bytes> {
        let view = self.proxy.refresher.view();
        let i = pick_node(
            &view.topology,
            slot,
            false,
            ReadFrom::Master,
            self.proxy.spread(self.state.id),
        )
        .map_err(|e| route_error(&self.proxy, e))?;
        Ok(view.backends[i].addr())
    }

    /// A connection of this client's own to `addr` (see `NodeBackend::dedicated`).
    pub(super) fn dedicated(&self, addr: SocketAddr, may_block: bool) -> Pinned {
        let node = self.proxy.refresher.pool().node(addr);
        Pinned {
            addr,
            conn: node.dedicated(self.state.proto, may_block),
        }
    }

    /// The master serving the slot of `req`'s keys (any master when it has none).
    pub(super) fn master_for_keys(
        &mut self,
        info: &CommandInfo,
        req: &Request,
    ) -> Result<SocketAddr, Bytes> {
        let slot = self
            .slot_of(info, req)
            .map_err(|e| route_error(&self.proxy, e))?;
        self.master_for(slot)
    }

    /// A blocking command, on the client's blocking connection to the node of its keys. Like
    /// any request it waits for the client's earlier ones unless they went on that same
    /// connection: a BLPOP on another node must not start before the one in flight ends.
    pub(super) fn blocking(&mut self, info: &CommandInfo, req: Request) -> Step {
        let addr = match self.master_for_keys(info, &req) {
            Ok(a) => a,
            Err(e) => return Step::Queue(Pending::Ready(e)),
        };
        let same = self.blocking.as_ref().is_some_and(|b| b.addr == addr);
        if !same {
            self.lane = Lane::Retired; // a new connection is a new lane, whatever the last one was
        }
        if !self.enter_lane(Lane::Blocking) {
            return Step::Settle(req);
        }
        if !same {
            self.blocking = Some(self.dedicated(addr, true));
        }
        let b = self.blocking.as_ref().expect("set above");
        self.entry
            .blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Step::Queue(Pending::Blocked(
            b.conn.send(None, req.bytes().clone()),
            addr,
        ))
    }
}
