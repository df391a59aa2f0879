//! The masters' logs merged into one, as one server would keep them: SLOWLOG GET (newest
//! first, ids unique and ordered), LATENCY LATEST (per event), LATENCY HISTORY (by time) and
//! ACL LOG (newest first).
use crate::protocol::framer::parse_int;
use crate::protocol::reply::{self, parse_integer, put_array_header};
use crate::protocol::reply_framer::split_array;
use bytes::{Bytes, BytesMut};

fn unexpected() -> Bytes {
    reply::error("ERR slotproxy: unexpected reply from a node while merging")
}

fn array(items: impl ExactSizeIterator<Item = Bytes>) -> Bytes {
    let mut out = BytesMut::new();
    put_array_header(&mut out, items.len());
    items.for_each(|i| out.extend_from_slice(&i));
    out.freeze()
}

/// The text of a simple, bulk, verbatim or double reply element.
fn text(item: &[u8]) -> Option<&[u8]> {
    let nl = item.iter().position(|&b| b == b'\n')?;
    match item.first()? {
        b'+' | b',' | b':' => item.get(1..nl - 1),
        b'$' => item.get(nl + 1..item.len() - 2),
        b'=' => item.get(nl + 5..item.len() - 2),
        _ => None,
    }
}

/// The number of entries SLOWLOG GET / ACL LOG return (`arg` is the count argument, if any;
/// the nodes have validated it). Negative: all of them.
pub fn count_arg(arg: Option<&[u8]>, default: usize) -> usize {
    match arg.map(parse_int) {
        None => default,
        Some(Some(n)) if n < 0 => usize::MAX,
        Some(Some(n)) => n as usize,
        Some(None) => default,
    }
}

/// SLOWLOG GET: entries `[id, unix time, duration, args, addr, name]` from every master,
/// newest first, at most `count`. Each node numbers its own entries, so ids are renumbered
/// `time << 20 | (node id & 0xffff) << 4 | master`: unique across masters, the same on every
/// call (tools that remember the last id they saw keep working), and ordered by time.
pub fn slowlog(replies: &[Bytes], count: usize) -> Bytes {
    let mut entries: Vec<(i64, i64, Vec<Bytes>)> = Vec::new();
    for (master, r) in replies.iter().enumerate() {
        let Some(items) = split_array(r) else {
            return unexpected();
        };
        for e in items {
            let Some(fields) = split_array(&e) else {
                return unexpected();
            };
            let (Some(id), Some(time)) = (
                fields.first().and_then(|f| parse_integer(f)),
                fields.get(1).and_then(|f| parse_integer(f)),
            ) else {
                return unexpected();
            };
            let new_id = (time << 20) | ((id & 0xffff) << 4) | (master as i64 & 0xf);
            entries.push((new_id, time, fields));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.truncate(count);
    array(entries.into_iter().map(|(id, _, mut fields)| {
        fields[0] = reply::integer(id);
        array(fields.into_iter())
    }))
}

/// LATENCY LATEST: `[event, time, latest, max]` per event, across masters: the most recent
/// sample's time and latency, and the largest maximum.
pub fn latency_latest(replies: &[Bytes]) -> Bytes {
    let mut events: Vec<(Bytes, i64, i64, i64)> = Vec::new();
    for r in replies {
        let Some(items) = split_array(r) else {
            return unexpected();
        };
        for e in items {
            let Some(f) = split_array(&e) else {
                return unexpected();
            };
            let ints: Vec<i64> = f.iter().skip(1).filter_map(|x| parse_integer(x)).collect();
            let ([time, latest, max], Some(name)) = (ints.as_slice(), f.first()) else {
                return unexpected();
            };
            match events.iter_mut().find(|(n, ..)| n == name) {
                Some(ev) => {
                    if *time > ev.1 {
                        (ev.1, ev.2) = (*time, *latest);
                    }
                    ev.3 = ev.3.max(*max);
                }
                None => events.push((name.clone(), *time, *latest, *max)),
            }
        }
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    array(events.into_iter().map(|(name, time, latest, max)| {
        let parts = [
            name,
            reply::integer(time),
            reply::integer(latest),
            reply::integer(max),
        ];
        array(parts.into_iter())
    }))
}

/// LATENCY HISTORY event: every master's `[time, latency]` samples, oldest first.
pub fn latency_history(replies: &[Bytes]) -> Bytes {
    let mut samples: Vec<(i64, Bytes)> = Vec::new();
    for r in replies {
        let Some(items) = split_array(r) else {
            return unexpected();
        };
        for s in items {
            let time = split_array(&s).and_then(|f| f.first().and_then(|t| parse_integer(t)));
            let Some(time) = time else {
                return unexpected();
            };
            samples.push((time, s));
        }
    }
    samples.sort_by_key(|(t, _)| *t);
    array(samples.into_iter().map(|(_, s)| s))
}

/// ACL LOG [count]: every master's entries (field/value pairs, a map in RESP3), newest first
/// by `age-seconds`, at most `count`. `ACL LOG RESET`: `+OK` from every master.
pub fn acl_log(replies: &[Bytes], count: usize) -> Bytes {
    if replies.iter().all(|r| &r[..] == reply::OK) {
        return Bytes::from_static(reply::OK);
    }
    let mut entries: Vec<(f64, Bytes)> = Vec::new();
    for r in replies {
        let Some(items) = split_array(r) else {
            return unexpected();
        };
        for e in items {
            let Some(f) = split_array(&e) else {
                return unexpected();
            };
            let age = f
                .chunks(2)
                .find(|kv| text(&kv[0]) == Some(b"age-seconds"))
                .and_then(|kv| kv.get(1))
                .and_then(|v| text(v))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<f64>().ok())
                .unwrap_or(f64::MAX);
            entries.push((age, e));
        }
    }
    entries.sort_by(|a, b| a.0.total_cmp(&b.0));
    entries.truncate(count);
    array(entries.into_iter().map(|(_, e)| e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::put_bulk;

    fn entry(id: i64, time: i64) -> Bytes {
        let mut b = BytesMut::new();
        put_array_header(&mut b, 6);
        reply::put_integer(&mut b, id);
        reply::put_integer(&mut b, time);
        reply::put_integer(&mut b, 10);
        b.extend_from_slice(b"*1\r\n$3\r\nget\r\n");
        put_bulk(&mut b, b"127.0.0.1:1");
        put_bulk(&mut b, b"");
        b.freeze()
    }

    #[test]
    fn slowlog_is_newest_first_with_unique_ordered_ids() {
        let a = array([entry(1, 100), entry(0, 90)].into_iter());
        let b = array([entry(1, 95), entry(0, 80)].into_iter());
        let merged = slowlog(&[a, b], 3);
        let items = split_array(&merged).unwrap();
        assert_eq!(items.len(), 3);
        let ids: Vec<i64> = items
            .iter()
            .map(|e| parse_integer(&split_array(e).unwrap()[0]).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        let times: Vec<i64> = items
            .iter()
            .map(|e| parse_integer(&split_array(e).unwrap()[1]).unwrap())
            .collect();
        assert_eq!(times, vec![100, 95, 90]);
    }

    #[test]
    fn latency_latest_keeps_the_latest_sample_and_largest_max() {
        let ev = |t: i64, l: i64, m: i64| {
            let parts = [
                reply::bulk(b"command"),
                reply::integer(t),
                reply::integer(l),
                reply::integer(m),
            ];
            array([array(parts.into_iter())].into_iter())
        };
        let merged = latency_latest(&[ev(10, 5, 50), ev(20, 7, 30)]);
        assert_eq!(
            merged,
            array(
                [array(
                    [
                        reply::bulk(b"command"),
                        reply::integer(20),
                        reply::integer(7),
                        reply::integer(50)
                    ]
                    .into_iter()
                )]
                .into_iter()
            )
        );
    }

    #[test]
    fn count_argument() {
        assert_eq!(count_arg(None, 10), 10);
        assert_eq!(count_arg(Some(b"-1"), 10), usize::MAX);
        assert_eq!(count_arg(Some(b"3"), 10), 3);
    }
}
