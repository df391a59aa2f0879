//! One request on its way to the cluster: sent to the node the router picked, then carried
//! through the [`redirect`](crate::redirect) policy (follow `-MOVED`/`-ASK`, retry `-TRYAGAIN`,
//! `-CLUSTERDOWN`, `-LOADING` and unreachable nodes) until there is a reply for the client.
use crate::backend::conn::{BackendConn, ReplyResult, ReplyRx};
use crate::backend::BackendError;
use crate::cluster::refresher::Trigger;
use crate::cluster::slot::Slot;
use crate::protocol::reply::{self, parse_redirect, Proto, Redirect};
use crate::proxy::Proxy;
use crate::redirect::{after_failure, after_redirect, RetryReason, Step};
use crate::router::{pick_node, ReadFrom, RouteError};
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
        let (mut f, conn) = Forward::route(proxy, client, req, slot, readonly)?;
        f.rx = Some(conn.send(None, f.req.clone()));
        Ok(f)
    }

    /// Routes `req` by `slot` without sending it: the caller sends it on the returned
    /// connection with a reply slot of its own, and passes the reply to [`Forward::is_final`]
    /// and, if not final, [`Forward::finish`].
    /// `Err` is the reply for a request that cannot be routed.
    pub fn route(
        proxy: &Proxy,
        client: Client,
        req: Bytes,
        slot: Option<Slot>,
        readonly: bool,
    ) -> Result<(Forward, BackendConn), Bytes> {
        let (addr, conn) = routed_conn(proxy, client, slot, readonly, false)?;
        let f = Forward {
            rx: None,
            req,
            slot,
            readonly,
            addr,
            attempt: 0,
        };
        Ok((f, conn))
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
                    let (step, reason) = after_redirect(&redirect, self.attempt);
                    if matches!(redirect, Redirect::Moved { .. }) {
                        proxy.refresher.trigger(Trigger::Moved);
                    } else if matches!(redirect, Redirect::ClusterDown) {
                        proxy.refresher.trigger(Trigger::ClusterDown);
                    }
                    if step == Step::GiveUp {
                        return b;
                    }
                    proxy.observe_retry(reason);
                    step
                }
                Err(e) => {
                    proxy.refresher.trigger(Trigger::ConnError);
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
                    match routed_conn(proxy, client, self.slot, readonly, master) {
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

/// The node the router picks for `slot`, and the client's shared connection to it.
fn routed_conn(
    proxy: &Proxy,
    client: Client,
    slot: Option<Slot>,
    readonly: bool,
    force_master: bool,
) -> Result<(SocketAddr, BackendConn), Bytes> {
    let view = proxy.refresher.view();
    let policy = if force_master {
        ReadFrom::Master
    } else {
        proxy.config().read_from
    };
    // The spread counter is shared by every worker: touch it only when the pick uses it
    // (keyless commands, reads that may go to a replica), not on every request.
    let spread = if slot.is_none() || (readonly && policy != ReadFrom::Master) {
        proxy.spread(client.id)
    } else {
        0
    };
    let idx = pick_node(&view.topology, slot, readonly, policy, spread)
        .map_err(|e| route_error(proxy, e))?;
    let node = &view.backends[idx];
    Ok((node.addr(), node.conn(client.proto, client.id).clone()))
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
