//! One request on its way to the cluster: sent to the node the router picked, then carried
//! through the [`redirect`](crate::redirect) policy (follow `-MOVED`/`-ASK`, retry `-TRYAGAIN`,
//! `-CLUSTERDOWN`, `-LOADING` and unreachable nodes) until there is a reply for the client.
//! Through a failover, a request that was not run is [held](crate::hold) until its slot has a
//! master to go to; one that may have run is never sent again.
use crate::backend::conn::{BackendConn, ReplyResult, ReplyRx};
use crate::backend::BackendError;
use crate::cluster::refresher::{Trigger, View};
use crate::cluster::slot::Slot;
use crate::cluster::topology::Role;
use crate::hold::Held;
use crate::protocol::reply::{self, parse_redirect, Proto, Redirect};
use crate::proxy::Proxy;
use crate::redirect::{
    after_failure, after_redirect, hold_step, HoldStep, RetryReason, Step, Unserved,
};
use crate::router::{pick_node_with, ReadFrom, RouteError};
use bytes::Bytes;
use std::net::SocketAddr;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Who is asking: picks the client's shared connection and spreads its reads.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub id: u64,
    pub proto: Proto,
}

/// A request in flight.
#[derive(Debug)]
pub struct Forward {
    /// Where the reply arrives; `None` while the first reply comes through the client's reply
    /// queue instead (see [`Forward::route`]).
    rx: Option<ReplyRx>,
    req: Bytes,
    slot: Option<Slot>,
    readonly: bool,
    addr: SocketAddr,
    attempt: u32,
    /// Set once the request has waited for a new master (its bound and its count).
    held: Option<Box<Held>>,
}

/// A request the session queues: sent now on the connection, or held (nothing sent) until its
/// slot's master is known and reachable; [`Forward::finish`] then sends it.
#[derive(Debug)]
pub enum Routed {
    Send(Forward, BackendConn),
    Held(Forward),
}

/// Where the topology sends a request now.
enum Target {
    Node(SocketAddr, BackendConn),
    /// The slot's master is flagged failing: hold the request, or send it anyway.
    Flagged(SocketAddr, BackendConn),
    /// No master serves the slot: hold the request, or answer this error.
    Uncovered(Bytes),
}

/// The reply a client gets when a request cannot be routed.
pub fn route_error(proxy: &Proxy, e: RouteError) -> Bytes {
    match e {
        RouteError::CrossSlot => Bytes::from_static(reply::CROSSSLOT),
        RouteError::Uncovered(slot) => {
            proxy.refresher.trigger(Trigger::ClusterDown);
            // No topology was ever loaded because the nodes refuse the proxy (credentials,
            // TLS): say so, instead of a CLUSTERDOWN that sends the operator to the cluster.
            if proxy.refresher.view().topology.nodes().is_empty() {
                if let Some(why) = proxy.refresher.last_refusal() {
                    return reply::error(&format!(
                        "ERR slotproxy: cannot read the cluster topology: {why}"
                    ));
                }
            }
            match slot {
                Some(_) => reply::error("CLUSTERDOWN Hash slot not served"),
                None => reply::error("CLUSTERDOWN The cluster is down"),
            }
        }
        RouteError::NoReplica(slot) => reply::error(&format!(
            "CLUSTERDOWN No healthy replica serves slot {} (read_from = replica)",
            slot.0
        )),
    }
}

impl Forward {
    /// Routes `req` by `slot` and sends it. `Err` is the reply for a request that cannot be
    /// routed.
    pub fn start(
        proxy: &Proxy,
        client: Client,
        req: Bytes,
        slot: Option<Slot>,
        readonly: bool,
    ) -> Result<Forward, Bytes> {
        let policy = proxy.config().read_from;
        let view = proxy.refresher.view();
        let (mut f, conn) = Forward::route(proxy, &view, policy, client, req, slot, readonly)?;
        f.rx = Some(conn.send(None, f.req.clone()));
        Ok(f)
    }

    /// Routes `req` by `slot` without sending it: the caller sends it on the returned
    /// connection with a reply slot of its own, and passes the reply to [`Forward::is_final`]
    /// and, if not final, [`Forward::finish`]. `view` and `read_from` are loaded once by the
    /// caller for all it routes (each load of either is an ArcSwap load).
    /// `Err` is the reply for a request that cannot be routed.
    pub fn route(
        proxy: &Proxy,
        view: &View,
        read_from: ReadFrom,
        client: Client,
        req: Bytes,
        slot: Option<Slot>,
        readonly: bool,
    ) -> Result<(Forward, BackendConn), Bytes> {
        let (addr, conn) = routed_conn(proxy, view, read_from, client, slot, readonly)?;
        Ok((Forward::new(req, slot, readonly, addr), conn))
    }

    /// Like [`route`](Forward::route), but a request whose slot's master is flagged failing,
    /// or whose slot has no master, is held (if the bounds allow) rather than sent or failed.
    /// `read_from` is the configuration's and `view` the topology, read once by the caller.
    pub fn route_or_hold(
        proxy: &Proxy,
        view: &View,
        client: Client,
        req: Bytes,
        slot: Option<Slot>,
        readonly: bool,
        read_from: ReadFrom,
    ) -> Result<Routed, Bytes> {
        let held = match target(proxy, view, client, slot, readonly, read_from)? {
            Target::Node(addr, conn) => {
                return Ok(Routed::Send(Forward::new(req, slot, readonly, addr), conn))
            }
            _ => proxy.start_hold(),
        };
        // Look again, at the newest view, now that the hold listens for changes: none is
        // missed in between.
        let view = proxy.refresher.view();
        let (addr, send) = match target(proxy, &view, client, slot, readonly, read_from)? {
            Target::Node(addr, conn) => (addr, Some(conn)),
            Target::Flagged(addr, conn) => (addr, held.is_none().then_some(conn)),
            Target::Uncovered(e) if held.is_none() => return Err(e),
            Target::Uncovered(_) => (UNROUTED, None),
        };
        let mut f = Forward::new(req, slot, readonly, addr);
        Ok(match send {
            Some(conn) => Routed::Send(f, conn),
            None => {
                f.held = held.map(Box::new);
                Routed::Held(f)
            }
        })
    }

    fn new(req: Bytes, slot: Option<Slot>, readonly: bool, addr: SocketAddr) -> Forward {
        Forward {
            rx: None,
            req,
            slot,
            readonly,
            addr,
            attempt: 0,
            held: None,
        }
    }

    /// The node the request went to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request's bytes, to send.
    pub fn request(&self) -> &Bytes {
        &self.req
    }

    /// Whether a node's `reply` goes to the client as it is: anything but a redirect or an
    /// error to retry, which [`finish`](Forward::finish) handles.
    pub fn is_final(reply: &[u8]) -> bool {
        reply.first() != Some(&b'-') || parse_redirect(reply).is_none()
    }

    /// Waits for the final reply, following redirects and retrying as the policy says. `first`
    /// is the reply already delivered for a [routed](Forward::route) request.
    pub async fn finish(
        mut self,
        proxy: &Proxy,
        client: Client,
        mut first: Option<ReplyResult>,
    ) -> Bytes {
        loop {
            let result = match (first.take(), self.rx.as_mut()) {
                (Some(r), _) => r,
                (None, Some(rx)) => rx.await.unwrap_or(Err(BackendError::Lost)),
                // Held when routed: wait for a master to send it to.
                (None, None) if self.held.is_some() => {
                    let why = if self.addr == UNROUTED {
                        Unserved::Uncovered
                    } else {
                        Unserved::Flagged
                    };
                    if let Err(reply) = self.resume(proxy, client, why).await {
                        return reply;
                    }
                    continue;
                }
                (None, None) => Err(BackendError::Lost), // no reply can come
            };
            let step = match result {
                Ok(b) => {
                    let Some(redirect) = (if b.first() == Some(&b'-') {
                        parse_redirect(&b)
                    } else {
                        None
                    }) else {
                        return b;
                    };
                    if matches!(redirect, Redirect::Moved { .. }) {
                        proxy.refresher.trigger(Trigger::Moved);
                    } else if matches!(redirect, Redirect::ClusterDown) {
                        proxy.refresher.trigger(Trigger::ClusterDown);
                        // The node did not run it: wait for the failover to end.
                        if self.hold(proxy, Unserved::ClusterDown) {
                            proxy.observe_retry(RetryReason::ClusterDown);
                            if let Err(reply) =
                                self.resume(proxy, client, Unserved::ClusterDown).await
                            {
                                return reply;
                            }
                            continue;
                        }
                    }
                    let (step, reason) = after_redirect(&redirect, self.attempt);
                    if step == Step::GiveUp {
                        return b;
                    }
                    proxy.observe_retry(reason);
                    step
                }
                Err(e) => {
                    if matches!(
                        e,
                        BackendError::Connect | BackendError::Lost | BackendError::Timeout
                    ) {
                        proxy.refresher.report_unreachable(self.addr);
                    } else {
                        proxy.refresher.trigger(Trigger::ConnError);
                    }
                    // Never written: wait for the node to come back or a new master.
                    if e == BackendError::Connect && self.hold(proxy, Unserved::Unreachable) {
                        proxy.observe_retry(RetryReason::Connect);
                        if let Err(reply) = self.resume(proxy, client, Unserved::Unreachable).await
                        {
                            return reply;
                        }
                        continue;
                    }
                    let step = after_failure(e, self.attempt);
                    if step == Step::GiveUp {
                        return failure_reply(proxy, e, self.addr);
                    }
                    proxy.observe_retry(RetryReason::Connect);
                    step
                }
            };
            self.attempt += 1;
            match step {
                Step::Follow { addr, asking } => {
                    let node = proxy.refresher.pool().node(addr);
                    self.addr = addr;
                    self.rx = Some(
                        node.conn(client.proto, client.id)
                            .send(asking.then_some(ASKING), self.req.clone()),
                    );
                }
                Step::Reroute { after, master } => {
                    tokio::time::sleep(after).await;
                    let readonly = self.readonly && !master;
                    let policy = match master {
                        true => ReadFrom::Master,
                        false => proxy.config().read_from,
                    };
                    let view = proxy.refresher.view();
                    match routed_conn(proxy, &view, policy, client, self.slot, readonly) {
                        Ok((addr, conn)) => {
                            self.addr = addr;
                            self.rx = Some(conn.send(None, self.req.clone()));
                        }
                        Err(reply) if self.attempt + 1 >= crate::redirect::MAX_ATTEMPTS => {
                            return reply
                        }
                        Err(_) => {
                            // Nothing serves the slot yet (a failover in progress): try again.
                            first = Some(Err(BackendError::Connect));
                        }
                    }
                }
                Step::GiveUp => unreachable!("handled above"),
            }
        }
    }
}

/// The address of a held request whose slot had no master.
const UNROUTED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl Forward {
    /// Whether the request (not run) waits for a new master now: it is held already, or a hold
    /// can start; `false` when its hold ran out or the bounds refuse one.
    fn hold(&mut self, proxy: &Proxy, why: Unserved) -> bool {
        if self.slot.is_none() {
            return false; // keyless: any master will do, nothing to wait for
        }
        match &self.held {
            Some(h) => hold_step(why, h.remaining()) != HoldStep::Release,
            None => match proxy.start_hold() {
                Some(h) => {
                    self.held = Some(Box::new(h));
                    true
                }
                None => false,
            },
        }
    }

    /// Holds the request until the topology names a reachable master for its slot, then sends
    /// it there. At the end of the hold it gets what it would have got without one: sent
    /// anyway to a flagged master, or the error (`Err`).
    async fn resume(
        &mut self,
        proxy: &Proxy,
        client: Client,
        mut why: Unserved,
    ) -> Result<(), Bytes> {
        loop {
            let Some(held) = self.held.as_mut() else {
                return Err(failure_reply(proxy, BackendError::Connect, self.addr));
            };
            let step = hold_step(why, held.remaining());
            if let HoldStep::Wait { recheck } = step {
                held.wait(recheck).await;
            }
            let release = step == HoldStep::Release || held.remaining().is_zero();
            let read_from = proxy.config().read_from;
            let view = proxy.refresher.view();
            let (addr, conn) =
                match target(proxy, &view, client, self.slot, self.readonly, read_from) {
                    Err(reply) => return Err(reply),
                    Ok(Target::Node(addr, conn)) => (addr, conn),
                    Ok(Target::Flagged(addr, conn)) if release => {
                        proxy.hold_expired();
                        (addr, conn)
                    }
                    Ok(Target::Uncovered(reply)) if release => {
                        proxy.hold_expired();
                        return Err(reply);
                    }
                    Ok(Target::Flagged(..)) => {
                        why = Unserved::Flagged;
                        continue;
                    }
                    Ok(Target::Uncovered(_)) => {
                        why = Unserved::Uncovered;
                        continue;
                    }
                };
            self.addr = addr;
            self.rx = Some(conn.send(None, self.req.clone()));
            return Ok(());
        }
    }
}

/// Where the topology sends a request for `slot` now, on the client's shared connection,
/// under read policy `policy`.
fn target(
    proxy: &Proxy,
    view: &View,
    client: Client,
    slot: Option<Slot>,
    readonly: bool,
    policy: ReadFrom,
) -> Result<Target, Bytes> {
    // The spread counter is shared by every worker: touch it only when the pick uses it
    // (keyless commands, reads that may go to a replica), not on every request.
    let spread = if slot.is_none() || (readonly && policy != ReadFrom::Master) {
        proxy.spread(client.id)
    } else {
        0
    };
    let idx = match pick_node_with(&view.topology, slot, readonly, policy, spread, |i| {
        view.backends[i].replica_ok()
    }) {
        Ok(idx) => idx,
        // With no view loaded yet there is no failover to wait for: the error at once.
        Err(e @ RouteError::Uncovered(Some(_))) if !view.topology.nodes().is_empty() => {
            return Ok(Target::Uncovered(route_error(proxy, e)))
        }
        Err(e) => return Err(route_error(proxy, e)),
    };
    let node = &view.backends[idx];
    let conn = node.conn(client.proto, client.id).clone();
    let info = &view.topology.nodes()[idx];
    Ok(
        if info.failed && info.role == Role::Master && slot.is_some() {
            Target::Flagged(node.addr(), conn)
        } else {
            Target::Node(node.addr(), conn)
        },
    )
}

/// The node the router picks for `slot`, and the client's shared connection to it (a flagged
/// master too: callers that do not hold send there anyway, as before holds existed).
fn routed_conn(
    proxy: &Proxy,
    view: &View,
    policy: ReadFrom,
    client: Client,
    slot: Option<Slot>,
    readonly: bool,
) -> Result<(SocketAddr, BackendConn), Bytes> {
    match target(proxy, view, client, slot, readonly, policy)? {
        Target::Node(addr, conn) | Target::Flagged(addr, conn) => Ok((addr, conn)),
        Target::Uncovered(reply) => Err(reply),
    }
}

/// The error a client sees when a node could not answer.
pub fn failure_reply(proxy: &Proxy, e: BackendError, addr: SocketAddr) -> Bytes {
    match e {
        BackendError::Connect => reply::error(&format!("CLUSTERDOWN slotproxy: cannot reach node {addr}")),
        BackendError::Lost => {
            reply::error(&format!("ERR slotproxy: connection to node {addr} lost; the command may or may not have run"))
        }
        BackendError::Timeout => reply::error(&format!(
            "ERR slotproxy: node {addr} did not reply within {} ms; the command may or may not have run",
            proxy.config().command_timeout.as_millis()
        )),
        BackendError::Auth => reply::error(&format!(
            "ERR slotproxy: node {addr} refused the proxy's credentials (check node_user / node_password; the proxy's log has the node's reply)"
        )),
        BackendError::Tls => reply::error(&format!(
            "ERR slotproxy: TLS handshake with node {addr} failed (check node_tls_* settings; the proxy's log has the reason)"
        )),
    }
}
