//! Pub/Sub for one client: which subscription commands go to its subscription connection
//! ([`crate::pubsub`]), which node that connection is opened to (the command table's
//! [`SubscribeAt`]), and what a subscribed RESP2 client may still do, as Redis allows.
use super::{route_error, Pending, Reader, Step};
use crate::cluster::slot::key_slot;
use crate::protocol::command::{CommandInfo, Handling, SubscribeAt};
use crate::protocol::framer::Request;
use crate::protocol::reply::{self, Proto};
use crate::pubsub::{self, Subscription};
use std::sync::atomic::Ordering;

impl Reader {
    /// Subscription commands, and what a subscribed client may do; `None` for the normal path.
    pub(super) fn pubsub_step(&mut self, info: &CommandInfo, req: &Request) -> Option<Step> {
        if self.sub.as_ref().is_some_and(|s| !s.is_active()) {
            self.sub = None; // the node reported no subscriptions left
            self.entry.subscribed.store(false, Ordering::Relaxed);
        }
        let name = info.name.as_str();
        let subscribed = self.sub.is_some();
        match name {
            "subscribe" | "psubscribe" | "ssubscribe" => Some(Step::Subscribe(req.clone())),
            "unsubscribe" | "punsubscribe" | "sunsubscribe" if subscribed => Some(Step::Subscribe(req.clone())),
            "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
                let channels: Vec<&[u8]> = (1..req.argc()).map(|i| req.arg(i)).collect();
                Some(Step::Queue(Pending::Ready(pubsub::unsubscribe_when_idle(name.as_bytes(), &channels, self.state.proto))))
            }
            // RESP2 clients in subscribed mode may only do this much, as with Redis.
            _ if subscribed && self.state.proto == Proto::Resp2 => match name {
                "ping" => Some(Step::Subscribe(req.clone())),
                "quit" | "reset" => None,
                _ => Some(Step::Queue(Pending::Ready(reply::error(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                ))))),
            },
            _ => None,
        }
    }

    /// Sends a subscription command on the client's subscription connection, opening it first
    /// if needed. Replies arrive through the connection's own task; `Some` only for an error.
    pub(super) async fn subscribe(&mut self, req: Request) -> Option<Pending> {
        if self.sub.as_ref().is_some_and(|s| !s.is_active()) {
            self.sub = None;
        }
        if self.sub.is_none() {
            let proxy = self.proxy.clone();
            let info = proxy.commands.lookup(&req);
            let at = match info.map(|i| i.handling) {
                Some(Handling::PubSub(at)) => at,
                _ => SubscribeAt::AnyMaster,
            };
            let slot = match (at, info) {
                // Arity checked: SUBSCRIBE has a channel.
                (SubscribeAt::ChannelSlot, _) => Some(key_slot(req.arg(1))),
                (SubscribeAt::ShardSlot, Some(info)) => match self.slot_of(info, &req) {
                    Ok(s) => s,
                    Err(e) => return Some(Pending::Ready(route_error(&self.proxy, e))),
                },
                _ => None,
            };
            let addr = match self.master_for(slot) {
                Ok(a) => a,
                Err(e) => return Some(Pending::Ready(e)),
            };
            let timeout = self.proxy.config().connect_timeout;
            match Subscription::open(
                self.proxy.refresher.pool().connector(),
                addr,
                self.state.proto,
                timeout,
                self.tx.clone(),
                |b| (Pending::Ready(b), None),
            )
            .await
            {
                Ok(s) => {
                    self.sub = Some(s);
                    self.entry.subscribed.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    return Some(Pending::Ready(reply::error(&format!(
                        "CLUSTERDOWN slotproxy: cannot reach node {addr}: {e}"
                    ))))
                }
            }
        }
        let sub = self.sub.as_mut().expect("opened above");
        // Waits until the node's replies to this command are queued, so that they come before
        // the replies to what the client sent next.
        if let Err(e) = sub
            .send(req.bytes(), self.proxy.config().command_timeout)
            .await
        {
            let addr = sub.addr;
            self.sub = None;
            return Some(Pending::Ready(reply::error(&format!(
                "ERR slotproxy: subscription connection to {addr} lost: {e}"
            ))));
        }
        None
    }
}
