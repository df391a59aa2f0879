//! WAIT numreplicas timeout: the replicas of every master the client wrote to since its last
//! WAIT (every master when it cannot tell, or wrote nowhere), the smallest count.
//!
//! A WAIT sent on a node connection counts acknowledgements of *that connection's* last write:
//! on a shared connection it would hold every other client behind it for up to `timeout`, and a
//! connection of the client's own has written nothing. So the proxy does what WAIT does, from
//! the outside: it reads each node's `master_repl_offset` (every write the client had answered
//! is at or below it) and polls `INFO replication` until enough replicas report an offset at
//! least that far, or the timeout passes. Replicas acknowledge on their own only once a second;
//! to hear from them sooner, each poll first blocks a connection of the client's own in a WAIT
//! that cannot be satisfied, for 1 ms, which makes the master ask its replicas for an
//! acknowledgement (`REPLCONF GETACK`) at once, as its own WAIT would.
use crate::backend::conn::ReplyRx;
use crate::backend::BackendError;
use crate::protocol::framer::parse_int;
use crate::protocol::reply::{self, Proto};
use crate::proxy::Proxy;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A WAIT to answer.
#[derive(Debug)]
pub struct Wait {
    nodes: Vec<SocketAddr>,
    replicas: i64,
    /// `None`: wait as long as it takes (`timeout 0`).
    deadline: Option<Instant>,
    session: u64,
}

/// Parses `WAIT numreplicas timeout` for the nodes in `nodes`; `Err` is Redis's error reply.
pub fn start(
    req_args: (&[u8], &[u8]),
    nodes: Vec<SocketAddr>,
    session: u64,
) -> Result<Wait, Bytes> {
    let not_int = || reply::error("ERR value is not an integer or out of range");
    let replicas = parse_int(req_args.0).ok_or_else(not_int)?;
    let timeout = parse_int(req_args.1)
        .ok_or_else(|| reply::error("ERR timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(reply::error("ERR timeout is negative"));
    }
    Ok(Wait {
        nodes,
        replicas,
        deadline: (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout as u64)),
        session,
    })
}

/// `INFO replication` of `addr` on the client's shared connection.
fn ask(proxy: &Proxy, addr: SocketAddr, session: u64) -> ReplyRx {
    let node = proxy.refresher.pool().node(addr);
    let req = crate::protocol::framer::Request::from_args(&["INFO", "replication"]);
    node.conn(Proto::Resp2, session)
        .send(None, req.bytes().clone())
}

/// `master_repl_offset` and each replica's acknowledged offset, from `INFO replication`.
fn offsets(reply: &[u8]) -> Option<(i64, Vec<i64>)> {
    let text = crate::backend::control::bulk_payload(reply).ok()?;
    let text = std::str::from_utf8(text).ok()?;
    let mut master = None;
    let mut replicas = Vec::new();
    for (k, v) in crate::protocol::reply::info_fields(text) {
        if k == "master_repl_offset" {
            master = parse_int(v.as_bytes());
        } else if k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()) {
            let off = v
                .split(',')
                .find_map(|f| f.strip_prefix("offset="))
                .and_then(|o| parse_int(o.as_bytes()));
            let online = v.split(',').any(|f| f == "state=online");
            if let (Some(off), true) = (off, online) {
                replicas.push(off);
            }
        }
    }
    Some((master?, replicas))
}

impl Wait {
    pub async fn finish(self, proxy: &Proxy) -> Bytes {
        let fail = |e: BackendError, addr| crate::forward::failure_reply(proxy, e, addr);
        // The offsets the client's writes reached, one per node.
        let mut targets = Vec::with_capacity(self.nodes.len());
        for &addr in &self.nodes {
            let r = match ask(proxy, addr, self.session).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return fail(e, addr),
                Err(_) => return fail(BackendError::Lost, addr),
            };
            match offsets(&r) {
                Some((master, _)) => targets.push(master),
                None if r.first() == Some(&b'-') => return r,
                None => return reply::error("ERR slotproxy: unexpected INFO reply from a node"),
            }
        }
        let nudge = crate::protocol::framer::Request::from_args(&["WAIT", "2147483647", "1"])
            .bytes()
            .clone();
        let own: Vec<_> = self
            .nodes
            .iter()
            .map(|&a| proxy.refresher.pool().node(a).dedicated(Proto::Resp2, true))
            .collect();
        loop {
            let nudged: Vec<_> = own.iter().map(|c| c.send(None, nudge.clone())).collect();
            for n in nudged {
                let _ = n.await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut least = i64::MAX;
            for (&addr, &target) in self.nodes.iter().zip(&targets) {
                let acked = match ask(proxy, addr, self.session).await {
                    Ok(Ok(r)) => offsets(&r).map_or(0, |(_, reps)| {
                        reps.iter().filter(|&&o| o >= target).count() as i64
                    }),
                    _ => 0,
                };
                least = least.min(acked);
            }
            let least = if least == i64::MAX { 0 } else { least };
            if least >= self.replicas || self.deadline.is_some_and(|d| Instant::now() >= d) {
                return reply::integer(least);
            }
            let nap = Duration::from_millis(50);
            match self.deadline {
                Some(d) => {
                    tokio::time::sleep(nap.min(d.saturating_duration_since(Instant::now()))).await
                }
                None => tokio::time::sleep(nap).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_of_online_replicas() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=1,state=online,offset=100,lag=0\r\nslave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\nmaster_repl_offset:120\r\n";
        let r = reply::bulk(text.as_bytes());
        assert_eq!(offsets(&r), Some((120, vec![100])));
    }
}
