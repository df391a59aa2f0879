//! Pub/Sub through the proxy. A client's first (P|S)SUBSCRIBE opens a connection of its own to
//! one node: for SUBSCRIBE the master owning its first channel's slot, where PUBLISH to that
//! channel is routed too (so PUBLISH's reply counts it; Redis Cluster broadcasts messages to
//! every node anyway); for PSUBSCRIBE a master chosen by spread; for SSUBSCRIBE the master
//! owning the channel's slot. From then on its subscription commands are written to that
//! connection as the client sent them, and every frame the node sends (confirmations and
//! messages) is queued to the client in arrival order. When the node reports zero subscriptions
//! left, the connection is closed and the client is back on the shared path.
//!
//! Replies stay in request order: each command written to the node is followed by a `PING` with
//! a token of this connection's own, whose reply the reading task swallows and counts. The
//! client's reader waits for that count before it handles the client's next request, so a
//! confirmation is queued before the reply to whatever the client sent after it, and the
//! reader knows whether the client is still subscribed (as after `UNSUBSCRIBE` with no
//! channels, whose number of confirmations only the node knows).
use crate::backend::connector::{Connector, NodeStream, Setup};
use crate::protocol::framer::Request;
use crate::protocol::reply::{self, put_array_header, put_bulk, put_integer, Proto};
use crate::protocol::reply_framer::{split_array, ReplyFramer};
use crate::reply_queue::ReplyQueue;
use bytes::{Bytes, BytesMut};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::Notify;

/// A client's live subscription connection.
pub struct Subscription {
    pub addr: SocketAddr,
    write: WriteHalf<NodeStream>,
    /// Cleared by the reading task when the node says no subscriptions are left (or the
    /// connection breaks).
    active: Arc<AtomicBool>,
    markers: Arc<MarkerCount>,
    /// `PING <token>`, written after every command.
    marker: Bytes,
    /// Markers written so far.
    sent: u64,
}

/// What the reading task tells the reader: how many markers' replies it has seen (everything
/// the node sent before them is queued to the client); `u64::MAX` once the connection is gone.
struct MarkerCount {
    seen: AtomicU64,
    changed: Notify,
}

impl MarkerCount {
    fn advance(&self, to: u64) {
        self.seen.store(to, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Why a subscription command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

impl Subscription {
    /// Connects to `addr` through `connector` (authenticated; `HELLO 3` for RESP3 clients) and
    /// starts forwarding every frame the node sends into `queue` (wrapped by `wrap`); a full
    /// queue (a client that does not read) stops the reading, and the node's own pubsub output
    /// limit then ends the subscription, so memory stays bounded.
    pub async fn open<T: Send + 'static>(
        connector: &Connector,
        addr: SocketAddr,
        proto: Proto,
        timeout: std::time::Duration,
        queue: Arc<ReplyQueue<T>>,
        wrap: fn(Bytes) -> T,
    ) -> std::io::Result<Subscription> {
        let setup = Setup {
            proto,
            readonly: false,
        };
        let stream = connector
            .connect(addr, setup, timeout)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (mut read, write) = tokio::io::split(stream);
        let active = Arc::new(AtomicBool::new(true));
        let flag = active.clone();
        let token = format!(
            "slotproxy-sync-{:016x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        );
        let marker = Request::from_args(&["PING", &token]).bytes().clone();
        let replies = MarkerReplies::new(token.as_bytes());
        let markers = Arc::new(MarkerCount {
            seen: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let synced = markers.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            let mut buf = BytesMut::with_capacity(4096);
            let mut framer = ReplyFramer::new();
            'conn: loop {
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match framer.next_reply(&mut buf) {
                        Ok(Some(frame)) => {
                            if replies.matches(&frame) {
                                seen += 1;
                                synced.advance(seen);
                                continue;
                            }
                            if ends_subscription(&frame) {
                                // Keep reading: the marker behind this reply is still due.
                                flag.store(false, Ordering::Release);
                            }
                            if !queue.push(wrap(frame)).await {
                                break 'conn;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'conn,
                    }
                }
            }
            flag.store(false, Ordering::Release);
            synced.advance(u64::MAX);
        });
        Ok(Subscription {
            addr,
            write,
            active,
            markers,
            marker,
            sent: 0,
        })
    }

    /// Whether the node still holds subscriptions for this client.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Writes a client request to the node as-is, then waits (at most `timeout`) until every
    /// reply it caused is queued to the client.
    pub async fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SubscriptionError> {
        let mut out = BytesMut::with_capacity(bytes.len() + self.marker.len());
        out.extend_from_slice(bytes);
        out.extend_from_slice(&self.marker);
        self.write.write_all(&out).await?;
        self.write.flush().await?;
        self.sent += 1;
        let want = self.sent;
        let markers = &self.markers;
        let answered = async {
            loop {
                let changed = markers.changed.notified();
                if markers.seen.load(Ordering::Acquire) >= want {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, answered)
            .await
            .map_err(|_| SubscriptionError::Timeout(timeout))
    }
}

/// The two forms of a marker's reply: a plain bulk string (RESP3, or no subscription left), and
/// the `pong` array of a subscribed RESP2 connection.
struct MarkerReplies {
    bulk: Bytes,
    pong: Bytes,
}

impl MarkerReplies {
    fn new(token: &[u8]) -> MarkerReplies {
        let bulk = reply::bulk(token);
        let mut pong = BytesMut::new();
        put_array_header(&mut pong, 2);
        put_bulk(&mut pong, b"pong");
        pong.extend_from_slice(&bulk);
        MarkerReplies {
            bulk,
            pong: pong.freeze(),
        }
    }

    fn matches(&self, frame: &[u8]) -> bool {
        frame == self.bulk || frame == self.pong
    }
}

/// An `unsubscribe`/`punsubscribe`/`sunsubscribe` confirmation whose count is 0.
fn ends_subscription(frame: &Bytes) -> bool {
    let Some(items) = split_array(frame) else {
        return false;
    };
    if items.len() != 3 {
        return false;
    }
    let kind = crate::backend::control::bulk_payload(&items[0]).unwrap_or_default();
    matches!(kind, b"unsubscribe" | b"punsubscribe" | b"sunsubscribe") && &items[2][..] == b":0\r\n"
}

/// What Redis answers to an UN(P|S)SUBSCRIBE from a client with no subscriptions: one
/// confirmation per channel (or one with a null channel), each with count 0.
pub fn unsubscribe_when_idle(kind: &[u8], channels: &[&[u8]], proto: Proto) -> Bytes {
    let mut out = BytesMut::new();
    let mut one = |channel: Option<&[u8]>| {
        match proto {
            Proto::Resp2 => put_array_header(&mut out, 3),
            Proto::Resp3 => out.extend_from_slice(b">3\r\n"),
        }
        put_bulk(&mut out, kind);
        match channel {
            Some(c) => put_bulk(&mut out, c),
            None => out.extend_from_slice(if proto == Proto::Resp3 {
                b"_\r\n"
            } else {
                b"$-1\r\n"
            }),
        }
        put_integer(&mut out, 0);
    };
    if channels.is_empty() {
        one(None);
    }
    for c in channels {
        one(Some(c));
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_last_unsubscribe() {
        assert!(ends_subscription(&Bytes::from_static(
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
        )));
        assert!(ends_subscription(&Bytes::from_static(
            b">3\r\n$12\r\npunsubscribe\r\n$1\r\na\r\n:0\r\n"
        )));
        assert!(!ends_subscription(&Bytes::from_static(
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
        )));
        assert!(!ends_subscription(&Bytes::from_static(
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n0\r\n"
        )));
    }

    #[test]
    fn idle_unsubscribe_matches_redis() {
        assert_eq!(
            &unsubscribe_when_idle(b"unsubscribe", &[], Proto::Resp2)[..],
            b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(
            &unsubscribe_when_idle(b"unsubscribe", &[b"a", b"b"], Proto::Resp2)[..],
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
        );
    }
}
