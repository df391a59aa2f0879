//! How the replies of a request's parts (one per slot, or one per master) become the client's
//! one reply: MGET's values put back in the client's key order, sums, concatenations, sets,
//! per-channel counts.
use super::{logs, Split};
use crate::forward::Client;
use crate::protocol::command::AllMastersReply;
use crate::protocol::framer::Request;
use crate::protocol::reply::{self, parse_integer, put_array_header, put_map_header, Proto};
use crate::protocol::reply_framer::split_array;
use bytes::{Bytes, BytesMut};

/// How sub-replies become the client's reply.
#[derive(Debug)]
pub enum Merge {
    /// MGET: part i's reply holds the values of `split`'s part i's keys.
    Mget {
        split: Split,
        total: usize,
    },
    /// Every part must answer `+OK` (MSET, FLUSHALL, SCRIPT FLUSH, ...).
    AllOk,
    /// Integer replies summed (DEL, EXISTS, DBSIZE, ...).
    SumInts,
    /// Array replies concatenated (KEYS).
    Concat,
    /// The first non-null reply (RANDOMKEY).
    FirstNonNull,
    /// Every part answers the same; that answer (SCRIPT LOAD, FUNCTION LOAD).
    Same,
    /// Arrays of 0/1 integers, and-ed element by element (SCRIPT EXISTS: a script is there
    /// only if every master has it).
    AndInts,
    /// Arrays merged as a set: each element once, in order of first appearance (PUBSUB
    /// CHANNELS: a channel with subscribers on two masters is one channel).
    Union,
    /// `channel, count` pairs in the order the client asked (every node answers in that order),
    /// counts summed; an array or a map as the nodes answered (Redis 7.0's PUBSUB NUMSUB is an
    /// array even in RESP3).
    SumPerChannel,
    /// Every part succeeded: the first reply (BGSAVE, SAVE, BGREWRITEAOF).
    First,
    /// The smallest integer (LASTSAVE).
    Min,
    /// SLOWLOG GET, at most this many entries (the proxy's own slow log is one more reply).
    Slowlog(usize),
    /// SLOWLOG LEN: summed (the proxy's own count is one more reply).
    SlowlogLen,
    /// SLOWLOG RESET: every master `+OK` (the proxy's own log is cleared beside).
    SlowlogReset,
    LatencyLatest,
    LatencyHistory,
    /// ACL LOG, at most this many entries.
    AclLog(usize),
}

impl Merge {
    /// How the replies of `req`, sent to every master, merge (`policy` is its command's).
    pub fn for_request(policy: AllMastersReply, req: &Request) -> Merge {
        let arg2 = (req.argc() > 2).then(|| req.arg(2));
        match policy {
            AllMastersReply::Slowlog => Merge::Slowlog(logs::count_arg(arg2, 10)),
            AllMastersReply::AclLog => Merge::AclLog(logs::count_arg(arg2, 10)),
            p => Merge::from(p),
        }
    }
}

impl From<AllMastersReply> for Merge {
    fn from(policy: AllMastersReply) -> Merge {
        match policy {
            AllMastersReply::AllSucceed => Merge::First,
            AllMastersReply::Min => Merge::Min,
            AllMastersReply::Slowlog => Merge::Slowlog(10),
            AllMastersReply::LatencyLatest => Merge::LatencyLatest,
            AllMastersReply::LatencyHistory => Merge::LatencyHistory,
            AllMastersReply::AclLog => Merge::AclLog(10),
            AllMastersReply::Sum => Merge::SumInts,
            AllMastersReply::SlowlogLen => Merge::SlowlogLen,
            AllMastersReply::SlowlogReset => Merge::SlowlogReset,
            AllMastersReply::Concat => Merge::Concat,
            AllMastersReply::AllOk => Merge::AllOk,
            AllMastersReply::FirstNonNull => Merge::FirstNonNull,
            AllMastersReply::Same => Merge::Same,
            AllMastersReply::AndInts => Merge::AndInts,
            AllMastersReply::Union => Merge::Union,
            AllMastersReply::SumPerChannel => Merge::SumPerChannel,
        }
    }
}

pub(super) fn merge(merge: Merge, replies: Vec<Bytes>, client: Client) -> Bytes {
    let unexpected = || reply::error("ERR slotproxy: unexpected reply from a node while merging");
    match merge {
        Merge::First => replies.into_iter().next().unwrap_or_else(unexpected),
        Merge::Min => match replies
            .iter()
            .map(|r| parse_integer(r))
            .collect::<Option<Vec<_>>>()
        {
            Some(v) => v
                .into_iter()
                .min()
                .map(reply::integer)
                .unwrap_or_else(unexpected),
            None => unexpected(),
        },
        Merge::Slowlog(count) => logs::slowlog(&replies, count),
        Merge::SlowlogLen => self::merge(Merge::SumInts, replies, client),
        Merge::SlowlogReset => self::merge(Merge::AllOk, replies, client),
        Merge::LatencyLatest => logs::latency_latest(&replies),
        Merge::LatencyHistory => logs::latency_history(&replies),
        Merge::AclLog(count) => logs::acl_log(&replies, count),
        Merge::Mget { split, total } => {
            let mut slots: Vec<Option<Bytes>> = vec![None; total];
            for (reply, part) in replies.iter().zip(split.parts()) {
                let Some(items) = split_array(reply) else {
                    return unexpected();
                };
                if items.len() != part.keys() {
                    return unexpected();
                }
                for (item, pos) in items.into_iter().zip(split.positions(part)) {
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
        Merge::AndInts => {
            let mut acc: Option<Vec<bool>> = None;
            for r in &replies {
                let Some(items) = split_array(r) else {
                    return unexpected();
                };
                let bits: Vec<bool> = items.iter().map(|i| parse_integer(i) == Some(1)).collect();
                acc = Some(match acc {
                    None => bits,
                    Some(a) if a.len() == bits.len() => {
                        a.iter().zip(bits).map(|(x, y)| *x && y).collect()
                    }
                    Some(_) => return unexpected(),
                });
            }
            let acc = acc.unwrap_or_default();
            let mut out = BytesMut::new();
            put_array_header(&mut out, acc.len());
            for b in acc {
                reply::put_integer(&mut out, b as i64);
            }
            out.freeze()
        }
        Merge::Union => {
            let mut seen = std::collections::HashSet::new();
            let mut items = Vec::new();
            for r in &replies {
                let Some(v) = split_array(r) else {
                    return unexpected();
                };
                items.extend(v.into_iter().filter(|i| seen.insert(i.clone())));
            }
            let mut out = BytesMut::new();
            put_array_header(&mut out, items.len());
            items.iter().for_each(|i| out.extend_from_slice(i));
            out.freeze()
        }
        Merge::SumPerChannel => {
            let mut sums: Option<Vec<(Bytes, i64)>> = None;
            for r in &replies {
                let Some(items) = split_array(r) else {
                    return unexpected();
                };
                let sums = sums.get_or_insert_with(|| {
                    let channels = items.iter().step_by(2);
                    channels.map(|c| (c.clone(), 0)).collect()
                });
                if items.len() != 2 * sums.len() {
                    return unexpected();
                }
                for ((channel, sum), pair) in sums.iter_mut().zip(items.chunks(2)) {
                    match parse_integer(&pair[1]) {
                        Some(n) if pair[0] == *channel => *sum += n,
                        _ => return unexpected(),
                    }
                }
            }
            let sums = sums.unwrap_or_default();
            // In the nodes' own shape: Redis 7.0 answers an array even in RESP3.
            let map = replies.first().and_then(|r| r.first()) == Some(&b'%');
            let proto = if map { Proto::Resp3 } else { Proto::Resp2 };
            let mut out = BytesMut::new();
            put_map_header(&mut out, proto, sums.len());
            for (channel, sum) in sums {
                out.extend_from_slice(&channel);
                reply::put_integer(&mut out, sum);
            }
            out.freeze()
        }
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
    use crate::fanout::group_by_slot;
    use crate::protocol::command::SplitKind;
    use crate::protocol::framer::Request;

    fn c() -> Client {
        Client {
            id: 1,
            proto: Proto::Resp2,
        }
    }

    #[test]
    fn mget_merges_in_client_order() {
        let req = Request::from_args(&["MGET", "a", "b", "{a}y"]);
        let split = group_by_slot(&req, SplitKind::Mget, &[1, 2, 3]);
        // Part 0 holds a and {a}y, part 1 holds b.
        let replies = vec![
            Bytes::from_static(b"*2\r\n$1\r\na\r\n$-1\r\n"),
            Bytes::from_static(b"*1\r\n$1\r\nb\r\n"),
        ];
        let m = Merge::Mget { split, total: 3 };
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

    #[test]
    fn union_keeps_each_channel_once() {
        let r = vec![
            Bytes::from_static(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            Bytes::from_static(b"*0\r\n"),
            Bytes::from_static(b"*2\r\n$1\r\nc\r\n$1\r\na\r\n"),
        ];
        assert_eq!(
            &merge(Merge::Union, r, c())[..],
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
    }

    #[test]
    fn numsub_counts_are_summed_per_channel_in_both_protocols() {
        let r = vec![
            Bytes::from_static(b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n"),
            Bytes::from_static(b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:5\r\n"),
        ];
        assert_eq!(
            &merge(Merge::SumPerChannel, r, c())[..],
            b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:5\r\n"
        );
        // A map stays a map (should a node answer one).
        let r = vec![
            Bytes::from_static(b"%1\r\n$1\r\na\r\n:1\r\n"),
            Bytes::from_static(b"%1\r\n$1\r\na\r\n:2\r\n"),
        ];
        assert_eq!(
            &merge(Merge::SumPerChannel, r, c())[..],
            b"%1\r\n$1\r\na\r\n:3\r\n"
        );
        let none = vec![Bytes::from_static(b"*0\r\n"), Bytes::from_static(b"*0\r\n")];
        assert_eq!(&merge(Merge::SumPerChannel, none, c())[..], b"*0\r\n");
        // Nodes that disagree on the channels asked are not summed blindly.
        let r = vec![
            Bytes::from_static(b"*2\r\n$1\r\na\r\n:1\r\n"),
            Bytes::from_static(b"*2\r\n$1\r\nb\r\n:1\r\n"),
        ];
        assert!(merge(Merge::SumPerChannel, r, c()).starts_with(b"-ERR"));
    }
}
