//! Commands sent straight to a set of nodes, replicas included, without slot routing: node
//! settings and users (CONFIG SET/REWRITE/RESETSTAT, ACL SETUSER/DELUSER/LOAD/SAVE), which must
//! hold on every node, since a replica may become a master at any time; and INFO's node
//! sections, read from every master. Requests go on the client's shared RESP2 connection to each
//! node, all at once; replies are awaited in node order.
use crate::backend::conn::ReplyRx;
use crate::backend::BackendError;
use crate::cluster::topology::Role;
use crate::forward::{failure_reply, route_error, Client};
use crate::local::info::InfoReply;
use crate::protocol::reply::{self, Proto};
use crate::proxy::Proxy;
use crate::router::RouteError;
use bytes::Bytes;
use std::net::SocketAddr;

/// A request in flight on several nodes.
#[derive(Debug)]
pub struct Broadcast {
    parts: Vec<(SocketAddr, ReplyRx)>,
    then: Then,
    proto: Proto,
}

/// What becomes of the nodes' replies.
#[derive(Debug)]
pub enum Then {
    /// The common reply if every node answered alike, else the first error; `command` names
    /// the request in the log line, and `reset_stats` resets the proxy's own statistics too.
    AllOk { command: String, reset_stats: bool },
    /// INFO: the proxy's sections and the masters' replies combined.
    Info(Box<InfoReply>),
}

/// Which nodes a broadcast goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// Every node not flagged failed, masters and replicas.
    All,
    /// The masters serving slots.
    Masters,
}

/// Sends `bytes` to `nodes` at once. `Err` is the client's reply when no node is known.
/// The request goes on the client's own shared connection to each node (the one its other
/// requests use), so it runs after the client's earlier requests to that node.
pub fn send(
    proxy: &Proxy,
    client: Client,
    bytes: Bytes,
    nodes: Nodes,
    then: Then,
) -> Result<Broadcast, Bytes> {
    let view = proxy.refresher.view();
    let t = &view.topology;
    let targets: Vec<usize> = match nodes {
        Nodes::Masters => t.serving_masters(),
        Nodes::All => (0..t.nodes().len())
            .filter(|&i| {
                let n = &t.nodes()[i];
                !n.failed && (n.role == Role::Replica || t.first_slot_of(i).is_some())
            })
            .collect(),
    };
    if targets.is_empty() {
        return Err(route_error(proxy, RouteError::Uncovered(None)));
    }
    let parts = targets
        .into_iter()
        .map(|i| {
            let node = &view.backends[i];
            let rx = node.conn(client.proto, client.id).send(None, bytes.clone());
            (node.addr(), rx)
        })
        .collect();
    Ok(Broadcast {
        parts,
        then,
        proto: client.proto,
    })
}

impl Broadcast {
    /// Waits for every node's reply, then answers as [`Then`] says.
    pub async fn finish(self, proxy: &Proxy) -> Bytes {
        let mut replies = Vec::with_capacity(self.parts.len());
        for (addr, rx) in self.parts {
            let r = match rx.await.unwrap_or(Err(BackendError::Lost)) {
                Ok(b) => b,
                Err(e) => failure_reply(proxy, e, addr),
            };
            replies.push((addr, r));
        }
        match self.then {
            Then::AllOk {
                command,
                reset_stats,
            } => {
                if reset_stats {
                    proxy.clients().reset_stats();
                }
                all_ok(&command, &replies)
            }
            Then::Info(info) => info.finish(&replies, self.proto),
        }
    }
}

/// The nodes' common reply (`+OK`, or `:1` for ACL DELUSER) when every node answered the same;
/// otherwise the first node's error, and a WARN line naming the nodes that applied it and
/// those that did not, since the cluster's nodes now disagree and an operator must know which.
fn all_ok(command: &str, replies: &[(SocketAddr, Bytes)]) -> Bytes {
    let Some((_, first)) = replies.first() else {
        return reply::error("ERR slotproxy: no node answered");
    };
    let failed = |r: &Bytes| r.first() == Some(&b'-');
    if !failed(first) && replies.iter().all(|(_, r)| r == first) {
        return first.clone();
    }
    let list = |ok: bool| {
        replies
            .iter()
            .filter(|(_, r)| failed(r) != ok)
            .map(|(a, _)| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let answer = replies
        .iter()
        .map(|(_, r)| r)
        .find(|r| failed(r))
        .unwrap_or(first);
    tracing::warn!(
        command,
        applied = %list(true),
        failed = %list(false),
        reply = %String::from_utf8_lossy(answer).trim_end(),
        "not every node applied the command alike; the nodes now differ"
    );
    answer.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ok_only_when_every_node_applied_it() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let ok = Bytes::from_static(reply::OK);
        assert_eq!(all_ok("x", &[(a, ok.clone()), (b, ok.clone())]), ok);
        let err = reply::error("ERR Unknown option or number of arguments for CONFIG SET - 'x'");
        assert_eq!(all_ok("x", &[(a, ok), (b, err.clone())]), err);
    }
}
