//! The proxy's own slow log: requests whose end-to-end time through the proxy (from the read
//! that completed them to their reply being ready to write) reached `slowlog_slower_than_us`,
//! kept process-wide in a ring of the last [`MAX_LEN`] and merged into `SLOWLOG GET` beside the
//! masters' entries, in Redis's entry format (`[id, unix time, microseconds, args, client addr,
//! client name]`, arguments cut as Redis cuts them). A node's slow command shows in its own
//! entry; the proxy's entry shows what the client waited, redirections and failover holds
//! included. `SLOWLOG LEN` counts it, `SLOWLOG RESET` clears it. Off by default (timing every
//! request and keeping its bytes is most of ~700 userspace instructions per request at -P 16).
use crate::protocol::framer::{Limits, Request, RequestFramer};
use crate::protocol::reply::{put_array_header, put_bulk, put_integer};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Entries kept (Redis's `slowlog-max-len` default).
pub const MAX_LEN: usize = 128;
/// Arguments kept per entry, and bytes per argument (as Redis keeps them).
const MAX_ARGS: usize = 32;
const MAX_ARG_LEN: usize = 128;

struct Entry {
    id: u64,
    unix: i64,
    micros: i64,
    args: Vec<Bytes>,
    addr: String,
    name: String,
}

/// The ring of slow requests, shared by every worker.
#[derive(Default)]
pub struct SlowLog {
    inner: Mutex<(u64, VecDeque<Entry>)>,
}

impl std::fmt::Debug for SlowLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowLog").finish_non_exhaustive()
    }
}

impl SlowLog {
    /// Records `req` (its raw bytes), which took `took`, from the client at `addr` named `name`.
    pub fn record(&self, req: &Bytes, took: Duration, addr: String, name: String) {
        let args = match parse_complete(req) {
            Some(r) => redis_args(&r),
            None => Vec::new(),
        };
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.0;
        inner.0 += 1;
        inner.1.push_front(Entry {
            id,
            unix,
            micros: took.as_micros().min(i64::MAX as u128) as i64,
            args,
            addr,
            name,
        });
        inner.1.truncate(MAX_LEN);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }

    /// The newest `count` entries as a `SLOWLOG GET` reply (RESP2 arrays, as a node sends).
    pub fn reply(&self, count: usize) -> Bytes {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entries: Vec<&Entry> = inner.1.iter().take(count).collect();
        let mut out = BytesMut::new();
        put_array_header(&mut out, entries.len());
        for e in entries {
            put_array_header(&mut out, 6);
            put_integer(&mut out, e.id as i64);
            put_integer(&mut out, e.unix);
            put_integer(&mut out, e.micros);
            put_array_header(&mut out, e.args.len());
            e.args.iter().for_each(|a| put_bulk(&mut out, a));
            put_bulk(&mut out, e.addr.as_bytes());
            put_bulk(&mut out, e.name.as_bytes());
        }
        out.freeze()
    }
}

/// The request in `raw` (a complete one, as the client sent it).
fn parse_complete(raw: &Bytes) -> Option<Request> {
    let mut framer = RequestFramer::new(Limits {
        max_bulk_len: usize::MAX,
        max_args: usize::MAX,
        max_inline_len: usize::MAX,
    });
    framer
        .next_request(&mut BytesMut::from(&raw[..]))
        .ok()
        .flatten()
}

/// The arguments as Redis's slow log keeps them: at most 32 (the last says how many more),
/// each cut at 128 bytes (with how many more).
fn redis_args(req: &Request) -> Vec<Bytes> {
    let argc = req.argc();
    let shown = argc.min(MAX_ARGS);
    let mut args = Vec::with_capacity(shown);
    for i in 0..shown {
        if shown < argc && i == shown - 1 {
            args.push(Bytes::from(format!(
                "... ({} more arguments)",
                argc - shown + 1
            )));
            break;
        }
        let a = req.arg(i);
        args.push(if a.len() > MAX_ARG_LEN {
            Bytes::from(format!(
                "{}... ({} more bytes)",
                String::from_utf8_lossy(&a[..MAX_ARG_LEN]),
                a.len() - MAX_ARG_LEN
            ))
        } else {
            Bytes::copy_from_slice(a)
        });
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_in_redis_format() {
        let log = SlowLog::default();
        let req = Request::from_args(&["GET", "k"]).bytes().clone();
        for _ in 0..MAX_LEN + 5 {
            log.record(
                &req,
                Duration::from_millis(12),
                "1.2.3.4:5".into(),
                "app".into(),
            );
        }
        assert_eq!(log.len(), MAX_LEN);
        let r = log.reply(1);
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with("*1\r\n*6\r\n:132\r\n"), "{text}");
        assert!(
            text.contains(
                ":12000\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n$9\r\n1.2.3.4:5\r\n$3\r\napp\r\n"
            ),
            "{text}"
        );
        log.reset();
        assert!(log.is_empty());
    }

    #[test]
    fn long_requests_are_cut_as_redis_cuts_them() {
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let mut args = vec!["DEL".to_string()];
        args.extend(many);
        let r = parse_complete(&Request::from_args(&args).bytes().clone()).unwrap();
        let kept = redis_args(&r);
        assert_eq!(kept.len(), 32);
        assert_eq!(&kept[31][..], b"... (10 more arguments)");
        let big = "x".repeat(200);
        let r = parse_complete(&Request::from_args(&["SET", "k", &big]).bytes().clone()).unwrap();
        assert_eq!(
            &redis_args(&r)[2][..],
            format!("{}... (72 more bytes)", &big[..128]).as_bytes()
        );
    }
}
