//! The client's writer half: replies in request order, whatever is ready batched into one
//! write (a large one written uncopied), the proxy's slow log and metrics noted per reply,
//! the reply memory given back once written, and the connection closed after QUIT.
use super::*;
use crate::reply_queue::Popped;

/// Writes replies in request order, batching whatever is ready into one write.
pub(super) async fn write_loop(
    proxy: Arc<Proxy>,
    mut write: impl AsyncWrite + Unpin,
    queue: &ReplyQueue<Owed>,
    entry: &ClientEntry,
) {
    // Allocated on the first reply, sized by what is written: idle clients hold no buffer.
    let mut out = BytesMut::new();
    // The slow log's limit and clock, read once per batch of ready replies (not per reply).
    let mut slow = SlowClock::default();
    loop {
        // Taken straight off the queue (no `Option` in between: each move of an item is a
        // `memcpy` of ~150 bytes).
        let ((pending, timed), reply) = match queue.try_pop(&mut out) {
            Some(p) => p,
            None => {
                slow = SlowClock::default(); // about to wait: the next batch reads anew
                let mut ready = None;
                if !out.is_empty() {
                    // Replies are ready but the next is not in yet: let the backend
                    // connections run once first, so that a pipeline spread over several
                    // nodes usually goes back in one write rather than one per node. With
                    // nothing else owed (one request at a time) there is nothing to wait for.
                    if !queue.is_empty() {
                        tokio::task::yield_now().await;
                        ready = queue.try_pop(&mut out);
                    }
                    if ready.is_none() && !flush(&mut write, &mut out).await {
                        return;
                    }
                }
                match ready {
                    Some(p) => p,
                    // Bytes the backend connections could not write (see `direct`) come first.
                    None => match queue.pop(&mut out).await {
                        Popped::Item(item, reply) => (item, reply),
                        Popped::Unwritten => continue,
                        Popped::Closed => return,
                    },
                }
            }
        };
        // The bytes counted against the client's budget when this reply arrived.
        let charged = match &reply {
            Some(Ok(b)) => b.len(),
            _ => 0,
        };
        let (pending, silent) = match pending {
            Pending::Silent(p) => (*p, true),
            p => (p, false),
        };
        let blocked = matches!(pending, Pending::Blocked(..));
        let (bytes, close) = match pending {
            Pending::Ready(b) => (b, false),
            Pending::Silent(_) => (Bytes::new(), false), // not nested
            Pending::Broadcast(b) => {
                if !out.is_empty() && !flush(&mut write, &mut out).await {
                    return;
                }
                (Box::pin(b.finish(&proxy)).await, false)
            }
            Pending::Wait(w) => {
                if !out.is_empty() && !flush(&mut write, &mut out).await {
                    return;
                }
                (Box::pin(w.finish(&proxy)).await, false)
            }
            Pending::Close(b) => (b, true),
            Pending::Forward(f, client) => match reply {
                Some(Ok(b)) if Forward::is_final(&b) => (b, false),
                reply => {
                    if !out.is_empty() && !flush(&mut write, &mut out).await {
                        return;
                    }
                    (Box::pin(f.finish(&proxy, client, reply)).await, false)
                }
            },
            Pending::Scan(f, client) => {
                if !out.is_empty() && !flush(&mut write, &mut out).await {
                    return;
                }
                (Box::pin(f.finish(&proxy, client)).await, false)
            }
            Pending::Fanout(f, client) => {
                if !out.is_empty() && !flush(&mut write, &mut out).await {
                    return;
                }
                (Box::pin(f.finish(&proxy, client)).await, false)
            }
            Pending::Direct(mut rx, addr) | Pending::Blocked(mut rx, addr) => {
                let r = match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => {
                        if !out.is_empty() && !flush(&mut write, &mut out).await {
                            return;
                        }
                        rx.await.unwrap_or(Err(BackendError::Lost))
                    }
                };
                match r {
                    Ok(b) => (b, false),
                    Err(e) => (failure_reply(&proxy, e, addr), false),
                }
            }
        };
        if blocked {
            entry
                .blocked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let bytes = if silent { Bytes::new() } else { bytes };
        note_reply(&proxy, entry, timed, &bytes, &mut slow);
        if bytes.len() >= 64 * 1024 {
            // Large replies go out uncopied.
            if (!out.is_empty() && !flush(&mut write, &mut out).await)
                || write.write_all(&bytes).await.is_err()
                || write.flush().await.is_err()
            {
                return;
            }
        } else {
            out.extend_from_slice(&bytes);
        }
        // Its reply is in (a request on another lane may go now), and written or copied into
        // the (bounded) batch.
        queue.finished(charged);
        if close {
            let _ = flush(&mut write, &mut out).await;
            let _ = write.shutdown().await;
            return;
        }
        if out.len() >= 64 * 1024 && !flush(&mut write, &mut out).await {
            return;
        }
    }
}

/// What is noted as a reply goes out: the slow log (if `timed` took long enough) and the
/// metrics.
pub(super) fn note_reply(
    proxy: &Proxy,
    entry: &ClientEntry,
    timed: Option<Timed>,
    bytes: &[u8],
    slow: &mut SlowClock,
) {
    if let Some(t) = &timed {
        note_if_slow(proxy, t, entry, slow);
    }
    if let Some(m) = &proxy.metrics {
        match timed {
            Some(t) => m.command_done(t, bytes),
            None => m.sent(bytes.len()),
        }
    }
}

/// The slow log's limit and the time, read once for a batch of replies written together: a
/// configuration load and a clock read per reply cost 65-78 userspace instructions per
/// GET/SET at `-P 16` and 169 at `-c 1` (callgrind, 2026-12-02).
#[derive(Default)]
pub(super) struct SlowClock {
    read: Option<(Option<std::time::Duration>, std::time::Instant)>,
}

/// Records `t`'s request in the proxy's slow log if it took at least `slowlog_slower_than`.
fn note_if_slow(proxy: &Proxy, t: &Timed, entry: &ClientEntry, clock: &mut SlowClock) {
    let Some(req) = t.request() else {
        return;
    };
    let (limit, now) = *clock.read.get_or_insert_with(|| {
        (
            proxy.config().slowlog_slower_than,
            std::time::Instant::now(),
        )
    });
    let Some(limit) = limit else {
        return;
    };
    let took = now.saturating_duration_since(t.started());
    if took >= limit {
        let addr = entry.peer.map(|a| a.to_string()).unwrap_or_default();
        let name = entry
            .meta()
            .name
            .as_deref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        proxy.slowlog().record(req, took, addr, name);
    }
}

/// Writes `out` and flushes it through (a no-op for TCP; TLS may hold records back otherwise).
async fn flush(write: &mut (impl AsyncWrite + Unpin), out: &mut BytesMut) -> bool {
    let ok = write.write_all(out).await.is_ok() && write.flush().await.is_ok();
    out.clear();
    if out.capacity() > 256 * 1024 {
        *out = BytesMut::new();
    }
    ok
}
