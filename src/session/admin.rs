//! What the admin and introspection commands need of a client's session: `CLIENT REPLY`
//! silence, `CLIENT PAUSE` waits, WAIT (after the client's earlier requests), MONITOR streams,
//! and the commands sent to every node (CONFIG SET, INFO).
use super::{route_error, Lane, Pending, Reader, Step};
use crate::fanout;
use crate::fanout::broadcast::{self, Nodes, Then};
use crate::local;
use crate::protocol::command::{AllNodesReply, CommandInfo, Handling};
use crate::protocol::framer::Request;
use crate::protocol::reply;
use crate::router::RouteError;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

impl Reader {
    /// Whether this request's reply is withheld (`CLIENT REPLY OFF`, or `SKIP` just before);
    /// a `SKIP` seen now applies to the next request.
    pub(super) fn silence(&mut self) -> bool {
        let silent = self.state.reply_off || self.skip_this;
        self.skip_this = std::mem::take(&mut self.state.skip_next);
        silent
    }

    /// `CLIENT PAUSE`: a command the pause holds waits (with every later one of this client,
    /// as Redis postpones the client) until the pause ends.
    pub(super) async fn wait_while_paused(&mut self, req: &Request) {
        let write = self.proxy.commands.lookup(req).is_some_and(|i| {
            i.pauses_on_write
                || (matches!(i.handling, Handling::Transaction(_)) && self.multi.is_some())
        });
        while self.proxy.clients().must_wait(write) {
            self.proxy.clients().pause_ended().await;
        }
        self.now_ms = self.proxy.clients().now_ms();
    }

    /// WAIT: once the client's earlier requests are answered, polls the masters it wrote to.
    pub(super) fn wait(&mut self, req: Request) -> Step {
        if !self.settled {
            return Step::Settle(req);
        }
        self.settled = false;
        self.lane = Lane::Retired; // what follows waits for the WAIT, as on one Redis
        let mut nodes = std::mem::take(&mut self.written);
        if std::mem::take(&mut self.written_everywhere) || nodes.is_empty() {
            let view = self.proxy.refresher.view();
            let t = &view.topology;
            nodes = t
                .serving_masters()
                .into_iter()
                .map(|m| t.nodes()[m].addr)
                .collect();
        }
        Step::Queue(
            match fanout::wait::start((req.arg(1), req.arg(2)), nodes, self.state.id) {
                Ok(w) => Pending::Wait(Box::new(w)),
                Err(e) => Pending::Ready(e),
            },
        )
    }

    /// MONITOR: opens the streams from every master (`+OK` first); `Some` only for an error.
    pub(super) async fn monitor(&mut self) -> Option<Pending> {
        if self.monitor.is_some() {
            return Some(Pending::Ready(Bytes::from_static(reply::OK)));
        }
        let masters: Vec<SocketAddr> = {
            let view = self.proxy.refresher.view();
            let t = &view.topology;
            t.serving_masters()
                .into_iter()
                .map(|m| t.nodes()[m].addr)
                .collect()
        };
        if masters.is_empty() {
            return Some(Pending::Ready(route_error(
                &self.proxy,
                RouteError::Uncovered(None),
            )));
        }
        let timeout = self.proxy.config().connect_timeout;
        let ok = (Pending::Ready(Bytes::from_static(reply::OK)), None);
        match crate::monitor::open(
            self.proxy.refresher.pool().connector(),
            &masters,
            timeout,
            self.tx.clone(),
            ok,
            |b| (Pending::Ready(b), None),
        )
        .await
        {
            Ok(m) => {
                self.monitor = m;
                self.entry.monitor.store(true, Ordering::Relaxed);
                None
            }
            Err(e) => Some(Pending::Ready(reply::error(&format!(
                "ERR slotproxy: MONITOR {e}"
            )))),
        }
    }

    /// CONFIG SET/REWRITE/RESETSTAT, ACL SETUSER/...: to every node, masters and replicas.
    pub(super) fn all_nodes(
        &mut self,
        kind: AllNodesReply,
        info: &CommandInfo,
        req: &Request,
    ) -> Pending {
        let then = Then::AllOk {
            command: info.name.clone(),
            reset_stats: kind == AllNodesReply::ResetStats,
        };
        match broadcast::send(
            &self.proxy,
            self.client(),
            req.bytes().clone(),
            Nodes::All,
            then,
        ) {
            Ok(b) => Pending::Broadcast(Box::new(b)),
            Err(e) => Pending::Ready(e),
        }
    }

    /// INFO: the proxy's sections, and the masters' combined.
    pub(super) fn info(&mut self, req: &Request) -> Pending {
        match local::info::start(&self.proxy, self.client(), req) {
            Ok(r) => Pending::Ready(r),
            Err(b) => Pending::Broadcast(Box::new(b)),
        }
    }
}
