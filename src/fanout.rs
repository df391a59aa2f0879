//! Commands that go to several nodes: multi-key commands whose keys span slots (MGET, MSET, DEL,
//! UNLINK, EXISTS, TOUCH: one sub-request per slot, since a node refuses keys of two slots in one
//! request), and commands that concern every master (DBSIZE, KEYS, FLUSHALL, PUBSUB NUMSUB, ...).
//! Sub-requests are sent at once, in parallel; their replies are merged in the client's order.
use crate::backend::conn::{ReplySink, ReplyTo};
use crate::cluster::slot::{key_slot, Slot};
use crate::forward::{route_error, Client, Forward};
use crate::protocol::command::SplitKind;
use crate::protocol::framer::{parse_int, Request};
use crate::protocol::reply::{self, put_array_header, put_bulk};
use crate::protocol::reply_framer::split_array;
use crate::proxy::Proxy;
use crate::router::RouteError;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

mod merge;
pub use merge::Merge;

pub mod broadcast;
mod logs;
pub mod wait;

mod gather;
use gather::Gather;

/// A request split over several nodes, parts in flight.
#[derive(Debug)]
pub struct Fanout {
    /// Routed parts, their first replies arriving in `gather` (slot i for part i).
    parts: Vec<Forward>,
    gather: Gathered,
    merge: Merge,
}

/// The fan-out's reply slots; dropping it (the client left) tells the connections nobody
/// waits for the replies any more.
struct Gathered(Arc<Gather>);

impl Drop for Gathered {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl std::fmt::Debug for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gathered")
    }
}

/// The keys of a multi-key request grouped by slot: each part is one run of `order`.
#[derive(Debug)]
pub struct Split {
    /// (slot, position among the client's keys), sorted: each slot's keys are one run, in the
    /// client's order.
    order: Vec<(Slot, u32)>,
    /// Parts in order of their first key in the client's request.
    parts: Vec<Part>,
    kind: SplitKind,
}

/// One slot's share of a multi-key request: the run `order[start..end]` of its [`Split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub slot: Slot,
    start: u32,
    end: u32,
}

impl Part {
    /// How many of the client's keys this part carries.
    fn keys(&self) -> usize {
        (self.end - self.start) as usize
    }
}

impl Split {
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Positions (among the client's keys) of `part`'s keys, in the client's order.
    pub fn positions(&self, part: &Part) -> impl Iterator<Item = u32> + '_ {
        self.order[part.start as usize..part.end as usize]
            .iter()
            .map(|&(_, pos)| pos)
    }

    /// Every part as a request of its own (the client's command name, then the part's keys,
    /// each with its value for MSET), in part order. One buffer holds them all; each part is a
    /// view of it.
    pub fn encode(&self, req: &Request, keys: &[usize]) -> Vec<Bytes> {
        let per_key = if self.kind == SplitKind::Mset { 2 } else { 1 };
        let name = req.arg(0);
        let mut buf =
            BytesMut::with_capacity(req.bytes().len() + self.parts.len() * (name.len() + 24));
        let mut ends = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            put_array_header(&mut buf, part.keys() * per_key + 1);
            put_bulk(&mut buf, name);
            for pos in self.positions(part) {
                let k = keys[pos as usize];
                put_bulk(&mut buf, req.arg(k));
                if per_key == 2 {
                    put_bulk(&mut buf, req.arg(k + 1));
                }
            }
            ends.push(buf.len());
        }
        let all = buf.freeze();
        let mut from = 0;
        ends.into_iter()
            .map(|end| {
                let b = all.slice(from..end);
                from = end;
                b
            })
            .collect()
    }
}

/// Groups the keys of `req` (argument indices `keys`) by slot, parts in order of first appearance:
/// the pure half of [`split`], separate so it can be measured without sockets. One sort of
/// (slot, position) pairs makes each slot's keys one run: O(n log n), where a linear search for
/// each key's part was O(keys x slots) (100 keys on ~100 slots: ~5,000 comparisons). Two
/// allocations, whatever the number of parts.
pub fn group_by_slot(req: &Request, kind: SplitKind, keys: &[usize]) -> Split {
    let mut order: Vec<(Slot, u32)> = keys
        .iter()
        .enumerate()
        .map(|(pos, &k)| (key_slot(req.arg(k)), pos as u32))
        .collect();
    order.sort_unstable(); // positions are distinct: ties cannot happen
    let mut parts: Vec<Part> = Vec::with_capacity(order.len());
    let mut start = 0;
    for run in order.chunk_by(|a, b| a.0 == b.0) {
        let end = start + run.len() as u32;
        parts.push(Part {
            slot: run[0].0,
            start,
            end,
        });
        start = end;
    }
    parts.sort_unstable_by_key(|p| order[p.start as usize].1);
    Split { order, parts, kind }
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
    let split = group_by_slot(req, kind, keys);
    let slots = split.parts.iter().map(|p| Some(p.slot));
    let parts = split.encode(req, keys).into_iter().zip(slots);
    let mut fanout = Fanout::send(proxy, client, parts, readonly, Merge::AllOk)?;
    fanout.merge = match kind {
        SplitKind::Mget => Merge::Mget {
            split,
            total: keys.len(),
        },
        SplitKind::Mset => Merge::AllOk,
        SplitKind::SumInts => Merge::SumInts,
    };
    Ok(fanout)
}

impl Fanout {
    /// Routes every part (its bytes and slot) and sends it, its reply slot in one [`Gather`].
    /// `Err` is the reply when a part cannot be routed; parts already sent then answer into
    /// slots nobody reads.
    fn send(
        proxy: &Proxy,
        client: Client,
        parts: impl ExactSizeIterator<Item = (Bytes, Option<Slot>)>,
        readonly: bool,
        merge: Merge,
    ) -> Result<Fanout, Bytes> {
        let gather = Gathered(Gather::new(parts.len()));
        let sink: Arc<dyn ReplySink> = gather.0.clone();
        let mut forwards = Vec::with_capacity(parts.len());
        // One topology and configuration load for every part.
        let view = proxy.refresher.view();
        let read_from = proxy.config().read_from;
        for (i, (bytes, slot)) in parts.enumerate() {
            let (f, conn) = Forward::route(proxy, &view, read_from, client, bytes, slot, readonly)?;
            conn.send_to(
                None,
                f.request().clone(),
                ReplyTo::sink(sink.clone(), i as u64),
            );
            forwards.push(f);
        }
        Ok(Fanout {
            parts: forwards,
            gather,
            merge,
        })
    }
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
    // Route by a slot each master owns so redirects and retries work as for any request.
    let parts = masters
        .iter()
        .map(|&m| (req.bytes().clone(), view.topology.first_slot_of(m)));
    Fanout::send(proxy, client, parts, false, merge)
}

/// Bits of a client's SCAN cursor that say which master is being scanned; the node's own cursor
/// is kept in the bits above them.
const SCAN_MASTER_BITS: u32 = 8;

/// A SCAN over every master in turn. One call goes on to the next master when one is done
/// before `COUNT` keys were found, so a small key space comes back in one call.
#[derive(Debug)]
pub struct Scan {
    part: Forward,
    /// Index (in `masters`) of the master being scanned.
    master: usize,
    /// A slot of each master, ordered by address: the cursor's master bits index this.
    masters: Vec<Option<Slot>>,
    req: Request,
    /// Keys wanted in this call (`COUNT`, 10 by default, as Redis).
    count: usize,
}

/// SCAN's `COUNT` option (the nodes check its syntax; a bad value leaves the default here).
fn scan_count(req: &Request) -> usize {
    let mut i = 2;
    let mut count = 10;
    while i + 1 < req.argc() {
        if req.arg(i).eq_ignore_ascii_case(b"count") {
            count = parse_int(req.arg(i + 1)).map_or(10, |n| n.max(1) as usize);
        }
        i += 2;
    }
    count
}

/// The request for one master: the client's, with the node's own cursor.
fn scan_part(req: &Request, node_cursor: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(req.bytes().len() + 8);
    put_array_header(&mut b, req.argc());
    put_bulk(&mut b, req.arg(0));
    put_bulk(&mut b, node_cursor.to_string().as_bytes());
    for i in 2..req.argc() {
        put_bulk(&mut b, req.arg(i));
    }
    b.freeze()
}

/// A SCAN cursor as Redis 7.0 reads it (`strtoul`): digits with an optional sign (a negative
/// one wraps around), nothing before or after, no overflow.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let (negative, digits) = match arg.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, arg),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits.iter().try_fold(0u64, |v, d| {
        v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some(if negative { v.wrapping_neg() } else { v })
}

/// Starts a SCAN call: the client's cursor names the master (ordered by address) and that
/// master's own cursor. The cursor is read as Redis reads it (no sign, no leading zeros).
pub fn scan(proxy: &Proxy, client: Client, req: &Request) -> Result<Scan, Bytes> {
    let invalid = || reply::error("ERR invalid cursor");
    let cursor = parse_cursor(req.arg(1)).ok_or_else(invalid)?;
    let view = proxy.refresher.view();
    let mut masters = view.topology.serving_masters();
    if masters.is_empty() {
        return Err(route_error(proxy, RouteError::Uncovered(None)));
    }
    masters.sort_by_key(|&m| view.topology.nodes()[m].addr);
    let masters: Vec<Option<Slot>> = masters
        .iter()
        .map(|&m| view.topology.first_slot_of(m))
        .collect();
    let master = (cursor & ((1 << SCAN_MASTER_BITS) - 1)) as usize;
    let Some(&slot) = masters.get(master) else {
        // No cursor of ours: Redis answers a cursor it never gave with whatever that position
        // holds; past the last master nothing is left.
        return Err(Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n"));
    };
    let bytes = scan_part(req, cursor >> SCAN_MASTER_BITS);
    let part = Forward::start(proxy, client, bytes, slot, false)?;
    Ok(Scan {
        part,
        master,
        masters,
        req: req.clone(),
        count: scan_count(req),
    })
}

impl Scan {
    /// The keys of every master scanned in this call, with the client's next cursor: this
    /// master's next position, the next master's start when this one is done, 0 when the last
    /// one is.
    pub async fn finish(self, proxy: &Proxy, client: Client) -> Bytes {
        let unexpected = || reply::error("ERR slotproxy: unexpected SCAN reply from a node");
        let Scan {
            mut part,
            mut master,
            masters,
            req,
            count,
        } = self;
        let mut keys: Vec<Bytes> = Vec::new();
        let next = loop {
            let r = part.finish(proxy, client, None).await;
            if r.first() == Some(&b'-') {
                return r;
            }
            let Some(items) = split_array(&r) else {
                return unexpected();
            };
            let [cursor, page] = items.as_slice() else {
                return unexpected();
            };
            let node_cursor = crate::backend::control::bulk_payload(cursor)
                .ok()
                .and_then(parse_int)
                .and_then(|c| u64::try_from(c).ok());
            let (Some(node_cursor), Some(page)) = (node_cursor, split_array(page)) else {
                return unexpected();
            };
            keys.extend(page);
            if node_cursor != 0 {
                if node_cursor >> (63 - SCAN_MASTER_BITS) != 0 {
                    return reply::error("ERR slotproxy: node cursor too large to carry");
                }
                break (node_cursor << SCAN_MASTER_BITS) | master as u64;
            }
            if master + 1 >= masters.len() {
                break 0;
            }
            master += 1;
            if keys.len() >= count {
                break master as u64;
            }
            // This master is done and the page is not full: go on with the next one.
            match Forward::start(proxy, client, scan_part(&req, 0), masters[master], false) {
                Ok(p) => part = p,
                Err(e) => return e,
            }
        };
        let mut out = BytesMut::new();
        put_array_header(&mut out, 2);
        put_bulk(&mut out, next.to_string().as_bytes());
        put_array_header(&mut out, keys.len());
        keys.iter().for_each(|k| out.extend_from_slice(k));
        out.freeze()
    }
}

impl Fanout {
    /// Waits for every part and merges. The first error a part answers is the client's reply.
    pub async fn finish(self, proxy: &Proxy, client: Client) -> Bytes {
        let mut replies = Vec::with_capacity(self.parts.len() + 1);
        for (i, part) in self.parts.into_iter().enumerate() {
            let first = self.gather.0.take(i).await;
            replies.push(part.finish(proxy, client, Some(first)).await);
        }
        if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
            return err.clone();
        }
        // The proxy's own slow log joins the masters' as one more node.
        match self.merge {
            Merge::Slowlog(count) => replies.push(proxy.slowlog().reply(count)),
            Merge::SlowlogLen => replies.push(reply::integer(proxy.slowlog().len() as i64)),
            Merge::SlowlogReset => proxy.slowlog().reset(),
            _ => {}
        }
        merge::merge(self.merge, replies, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part as (slot, argument indices it sends after the command name, key positions).
    fn view(split: &Split, keys: &[usize]) -> Vec<(Slot, Vec<u32>, Vec<u32>)> {
        split
            .parts()
            .iter()
            .map(|p| {
                let positions: Vec<u32> = split.positions(p).collect();
                let mut args = Vec::new();
                for &pos in &positions {
                    let k = keys[pos as usize] as u32;
                    args.push(k);
                    if split.kind == SplitKind::Mset {
                        args.push(k + 1);
                    }
                }
                (p.slot, args, positions)
            })
            .collect()
    }

    #[test]
    fn scan_cursors_parse_as_redis_reads_them() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b"00"), Some(0));
        assert_eq!(parse_cursor(b"+7"), Some(7));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"1x"), None);
        assert_eq!(parse_cursor(b""), None);
        assert_eq!(parse_cursor(b"99999999999999999999"), None);
    }

    #[test]
    fn groups_keys_by_slot_in_order_of_first_appearance() {
        // "{a}x" and "a" share a slot; "b" and "c" have their own.
        let req = Request::from_args(&["MSET", "b", "1", "a", "2", "c", "3", "{a}x", "4"]);
        let keys = [1, 3, 5, 7];
        let split = group_by_slot(&req, SplitKind::Mset, &keys);
        assert_eq!(
            view(&split, &keys),
            vec![
                (key_slot(b"b"), vec![1, 2], vec![0]),
                (key_slot(b"a"), vec![3, 4, 7, 8], vec![1, 3]),
                (key_slot(b"c"), vec![5, 6], vec![2]),
            ]
        );
        let parts = split.encode(&req, &keys);
        let want: [&[u8]; 3] = [
            b"*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$1\r\n1\r\n",
            b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n2\r\n$4\r\n{a}x\r\n$1\r\n4\r\n",
            b"*3\r\n$4\r\nMSET\r\n$1\r\nc\r\n$1\r\n3\r\n",
        ];
        assert_eq!(parts, want);
        let req = Request::from_args(&["MGET", "a", "b", "{a}y"]);
        let keys = [1, 2, 3];
        let split = group_by_slot(&req, SplitKind::Mget, &keys);
        let v = view(&split, &keys);
        assert_eq!((&v[0].1, &v[0].2), (&vec![1, 3], &vec![0, 2]));
        assert_eq!(v[1].1, vec![2]);
        assert_eq!(
            split.encode(&req, &keys)[0],
            &b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$4\r\n{a}y\r\n"[..]
        );
        assert!(group_by_slot(&req, SplitKind::Mget, &[]).is_empty());
    }
}
