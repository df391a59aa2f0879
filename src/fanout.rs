//! Commands that go to several nodes: multi-key commands whose keys span slots (MGET, MSET, DEL,
//! UNLINK, EXISTS, TOUCH: one sub-request per slot, since a node refuses keys of two slots in one
//! request), and commands that concern every master (DBSIZE, KEYS, FLUSHALL, ...). Sub-requests
//! are sent at once, in parallel; their replies are merged in the client's order.
use crate::cluster::slot::{key_slot, Slot};
use crate::forward::{route_error, Client, Forward};
use crate::protocol::command::SplitKind;
use crate::protocol::framer::Request;
use crate::protocol::reply::{self, parse_integer, put_array_header, put_bulk};
use crate::protocol::reply_framer::split_array;
use crate::proxy::Proxy;
use crate::router::RouteError;
use bytes::{Bytes, BytesMut};

/// How sub-replies become the client's reply.
#[derive(Debug)]
pub enum Merge {
    /// MGET: `order[i]` lists, for part i, the positions of its keys in the client's request.
    Mget { order: Vec<Vec<u32>>, total: usize },
    /// Every part must answer `+OK` (MSET, FLUSHALL, SCRIPT FLUSH, ...).
    AllOk,
    /// Integer replies summed (DEL, EXISTS, DBSIZE, ...).
    SumInts,
    /// Array replies concatenated (KEYS).
    Concat,
    /// The first non-null reply (RANDOMKEY).
    FirstNonNull,
    /// Every part answers the same; that answer (SCRIPT LOAD).
    Same,
}

/// A request split over several nodes, parts in flight.
#[derive(Debug)]
pub struct Fanout {
    parts: Vec<Forward>,
    merge: Merge,
}

/// One slot's share of a multi-key request.
#[derive(Debug)]
pub struct Part {
    pub slot: Slot,
    /// Argument indices (into the client's request) this part sends after the command name.
    pub args: Vec<u32>,
    /// Positions (among the client's keys) of this part's keys, for merging MGET replies.
    pub positions: Vec<u32>,
}

impl Part {
    /// This part as a request of its own: the client's command name, then its arguments.
    pub fn encode(&self, req: &Request) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        put_array_header(&mut b, self.args.len() + 1);
        put_bulk(&mut b, req.arg(0));
        for &a in &self.args {
            put_bulk(&mut b, req.arg(a as usize));
        }
        b.freeze()
    }
}

/// Groups the keys of `req` (argument indices `keys`) by slot, in order of first appearance: the
/// pure half of [`split`], separate so it can be measured without sockets.
pub fn group_by_slot(req: &Request, kind: SplitKind, keys: &[usize]) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    for (pos, &k) in keys.iter().enumerate() {
        let slot = key_slot(req.arg(k));
        let part = match parts.iter_mut().position(|p| p.slot == slot) {
            Some(i) => &mut parts[i],
            None => {
                parts.push(Part {
                    slot,
                    args: Vec::new(),
                    positions: Vec::new(),
                });
                parts.last_mut().expect("just pushed")
            }
        };
        part.args.push(k as u32);
        if kind == SplitKind::Mset {
            part.args.push(k as u32 + 1);
        }
        part.positions.push(pos as u32);
    }
    parts
}

/// Splits a multi-key request whose keys (at `keys`) span slots into one request per slot and
/// sends them. `Err` is the reply when a part cannot be routed.
pub fn split(
    proxy: &Proxy,
    client: Client,
    req: &Request,
    kind: SplitKind,
    keys: &[usize],
    readonly: bool,
) -> Result<Fanout, Bytes> {
    let parts = group_by_slot(req, kind, keys);
    let mut forwards = Vec::with_capacity(parts.len());
    for p in &parts {
        forwards.push(Forward::start(
            proxy,
            client,
            p.encode(req),
            Some(p.slot),
            readonly,
        )?);
    }
    let merge = match kind {
        SplitKind::Mget => Merge::Mget {
            order: parts.into_iter().map(|p| p.positions).collect(),
            total: keys.len(),
        },
        SplitKind::Mset => Merge::AllOk,
        SplitKind::SumInts => Merge::SumInts,
    };
    Ok(Fanout {
        parts: forwards,
        merge,
    })
}

/// Sends `req` unchanged to every serving master.
pub fn all_masters(
    proxy: &Proxy,
    client: Client,
    req: &Request,
    merge: Merge,
) -> Result<Fanout, Bytes> {
    let view = proxy.refresher.view();
    let masters = view.topology.serving_masters();
    if masters.is_empty() {
        return Err(route_error(proxy, RouteError::Uncovered(None)));
    }
    let mut parts = Vec::with_capacity(masters.len());
    for m in masters {
        // Route by a slot the master owns so redirects and retries work as for any request.
        let slot = (0..16384u16)
            .map(Slot)
            .find(|s| view.topology.master_of(*s) == Some(m));
        parts.push(Forward::start(
            proxy,
            client,
            req.bytes().clone(),
            slot,
            false,
        )?);
    }
    Ok(Fanout { parts, merge })
}

/// The merge for an all-masters command, by its lower-case name; `None` if it has no sensible
/// merge.
pub fn all_masters_merge(name: &str) -> Option<Merge> {
    Some(match name {
        "dbsize" => Merge::SumInts,
        "keys" => Merge::Concat,
        "flushall" | "flushdb" | "script|flush" => Merge::AllOk,
        "randomkey" => Merge::FirstNonNull,
        "script|load" => Merge::Same,
        _ => return None,
    })
}

impl Fanout {
    /// Waits for every part and merges. The first error a part answers is the client's reply.
    pub async fn finish(self, proxy: &Proxy, client: Client) -> Bytes {
        let mut replies = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            replies.push(part.finish(proxy, client).await);
        }
        if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
            return err.clone();
        }
        merge(self.merge, replies, client)
    }
}

fn merge(merge: Merge, replies: Vec<Bytes>, client: Client) -> Bytes {
    let unexpected = || reply::error("ERR slotproxy: unexpected reply from a node while merging");
    match merge {
        Merge::Mget { order, total } => {
            let mut slots: Vec<Option<Bytes>> = vec![None; total];
            for (reply, positions) in replies.iter().zip(order) {
                let Some(items) = split_array(reply) else {
                    return unexpected();
                };
                if items.len() != positions.len() {
                    return unexpected();
                }
                for (item, pos) in items.into_iter().zip(positions) {
                    slots[pos as usize] = Some(item);
                }
            }
            let mut out = BytesMut::new();
            put_array_header(&mut out, total);
            for item in slots {
                match item {
                    Some(b) => out.extend_from_slice(&b),
                    None => return unexpected(),
                }
            }
            out.freeze()
        }
        Merge::AllOk => {
            if replies.iter().all(|r| &r[..] == reply::OK) {
                Bytes::from_static(reply::OK)
            } else {
                unexpected()
            }
        }
        Merge::SumInts => {
            let mut sum = 0i64;
            for r in &replies {
                match parse_integer(r) {
                    Some(n) => sum += n,
                    None => return unexpected(),
                }
            }
            reply::integer(sum)
        }
        Merge::Concat => {
            let mut items = Vec::new();
            for r in &replies {
                match split_array(r) {
                    Some(mut v) => items.append(&mut v),
                    None => return unexpected(),
                }
            }
            let mut out = BytesMut::new();
            put_array_header(&mut out, items.len());
            for i in items {
                out.extend_from_slice(&i);
            }
            out.freeze()
        }
        Merge::FirstNonNull => replies
            .into_iter()
            .find(|r| !matches!(&r[..], b"$-1\r\n" | b"_\r\n" | b"*-1\r\n"))
            .unwrap_or_else(|| reply::null(client.proto)),
        Merge::Same => {
            let first = replies.first().cloned().unwrap_or_else(unexpected);
            if replies.iter().all(|r| *r == first) {
                first
            } else {
                unexpected()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::Proto;

    fn c() -> Client {
        Client {
            id: 1,
            proto: Proto::Resp2,
        }
    }

    #[test]
    fn mget_merges_in_client_order() {
        let replies = vec![
            Bytes::from_static(b"*2\r\n$1\r\na\r\n$-1\r\n"),
            Bytes::from_static(b"*1\r\n$1\r\nb\r\n"),
        ];
        let m = Merge::Mget {
            order: vec![vec![0, 2], vec![1]],
            total: 3,
        };
        assert_eq!(
            &merge(m, replies, c())[..],
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n"
        );
    }

    #[test]
    fn sums_and_oks() {
        let r = vec![Bytes::from_static(b":2\r\n"), Bytes::from_static(b":3\r\n")];
        assert_eq!(&merge(Merge::SumInts, r, c())[..], b":5\r\n");
        let r = vec![
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b"+OK\r\n"),
        ];
        assert_eq!(&merge(Merge::AllOk, r, c())[..], b"+OK\r\n");
        let r = vec![
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b":1\r\n"),
        ];
        assert!(merge(Merge::AllOk, r, c()).starts_with(b"-ERR"));
    }

    #[test]
    fn concat_and_first_non_null() {
        let r = vec![
            Bytes::from_static(b"*1\r\n$1\r\nx\r\n"),
            Bytes::from_static(b"*0\r\n"),
            Bytes::from_static(b"*1\r\n$1\r\ny\r\n"),
        ];
        assert_eq!(
            &merge(Merge::Concat, r, c())[..],
            b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
        );
        let r = vec![
            Bytes::from_static(b"$-1\r\n"),
            Bytes::from_static(b"$1\r\nk\r\n"),
        ];
        assert_eq!(&merge(Merge::FirstNonNull, r, c())[..], b"$1\r\nk\r\n");
        assert_eq!(
            &merge(
                Merge::FirstNonNull,
                vec![Bytes::from_static(b"$-1\r\n")],
                c()
            )[..],
            b"$-1\r\n"
        );
    }
}
