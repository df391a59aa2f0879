//! Pub/Sub through the proxy as one standalone Redis would do it: one publisher's messages reach
//! every subscriber in the order it published them, PUBLISH counts the subscribers, and PUBSUB
//! CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB see every subscriber, whichever master its
//! subscription connection landed on.
mod support;

use std::collections::{BTreeSet, HashMap};
use support::raw::{flat, show, RawConn, Standalone};
use support::{Cluster, Proxy};

const CHANNELS: [&str; 5] = ["orders", "news:eu", "news:us", "{tag}alerts", "chat"];
const MESSAGES: usize = 1_000;

fn connect(addr: std::net::SocketAddr, resp3: bool) -> RawConn {
    let mut c = RawConn::connect(addr);
    if resp3 {
        c.hello3();
    }
    c
}

/// Sends `args` (a subscription command) and reads its `confirmations` replies.
fn subscribe(c: &mut RawConn, args: &[&str], confirmations: usize) {
    c.write(&RawConn::encode(args));
    for _ in 0..confirmations {
        let r = flat(&c.read_reply());
        assert!(r[0].ends_with("subscribe"), "{args:?}: {r:?}");
    }
}

/// A subscriber and what it listens to.
struct Subscriber {
    conn: RawConn,
    /// Messages it must get: one per PUBLISH to these channels.
    channels: Vec<&'static str>,
    what: String,
}

/// xorshift64: the same channel sequence on every run.
fn channel_sequence() -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..MESSAGES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % CHANNELS.len() as u64) as usize
        })
        .collect()
}

fn publishes_arrive_in_order(resp3: bool) {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let addr = proxy.addr();

    let mut subs = Vec::new();
    for ch in CHANNELS {
        let mut conn = connect(addr, resp3);
        subscribe(&mut conn, &["SUBSCRIBE", ch], 1);
        subs.push(Subscriber {
            conn,
            channels: vec![ch],
            what: format!("subscriber of {ch}"),
        });
    }
    let mut all = connect(addr, resp3);
    let mut args = vec!["SUBSCRIBE"];
    args.extend(CHANNELS);
    subscribe(&mut all, &args, CHANNELS.len());
    subs.push(Subscriber {
        conn: all,
        channels: CHANNELS.to_vec(),
        what: "subscriber of all five channels".into(),
    });
    let mut pattern = connect(addr, resp3);
    subscribe(&mut pattern, &["PSUBSCRIBE", "*"], 1);
    subs.push(Subscriber {
        conn: pattern,
        channels: CHANNELS.to_vec(),
        what: "pattern subscriber".into(),
    });

    // One at a time: each PUBLISH is answered before the next is sent.
    let mut publisher = connect(addr, resp3);
    let mut published: HashMap<&str, Vec<String>> = HashMap::new();
    for (i, c) in channel_sequence().into_iter().enumerate() {
        let ch = CHANNELS[c];
        let msg = format!("m{i}");
        let r = publisher.call(&["PUBLISH", ch, &msg]);
        assert!(r.first() == Some(&b':'), "PUBLISH answered {}", show(&r));
        published.entry(ch).or_default().push(msg);
    }

    for s in &mut subs {
        let want: usize = s.channels.iter().map(|c| published[c].len()).sum();
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        for _ in 0..want {
            let m = flat(&s.conn.read_reply());
            let (ch, payload) = match m[0].as_str() {
                "message" => (m[1].clone(), m[2].clone()),
                "pmessage" => (m[2].clone(), m[3].clone()),
                _ => panic!("{} got {m:?}", s.what),
            };
            got.entry(ch).or_default().push(payload);
        }
        // Across channels (different nodes) Redis Cluster promises no order; within one
        // channel every message, once, in the order published.
        for ch in &s.channels {
            let got = got.remove(*ch).unwrap_or_default();
            let inversions = got
                .windows(2)
                .filter(|w| w[0][1..].parse::<u32>().unwrap() > w[1][1..].parse::<u32>().unwrap())
                .count();
            assert!(
                got == published[ch],
                "{}: channel {ch}: {} messages, {inversions} adjacent inversions",
                s.what,
                got.len()
            );
        }
        assert!(got.is_empty(), "{} got other channels: {got:?}", s.what);
        // Nothing more is queued: the next thing it reads answers its PING.
        let pong = s.conn.call(&["PING"]);
        let is_pong = if resp3 {
            pong[..] == b"+PONG\r\n"[..]
        } else {
            flat(&pong) == ["pong", ""]
        };
        assert!(is_pong, "{} after its messages: {}", s.what, show(&pong));
    }
}

#[test]
fn thousand_publishes_arrive_in_published_order_resp2() {
    publishes_arrive_in_order(false);
}

#[test]
fn thousand_publishes_arrive_in_published_order_resp3() {
    publishes_arrive_in_order(true);
}

/// Subscribers made the same way on the proxy and on a standalone Redis.
struct Side {
    addr: std::net::SocketAddr,
    subscribers: Vec<RawConn>,
}

impl Side {
    fn new(addr: std::net::SocketAddr) -> Side {
        Side {
            addr,
            subscribers: Vec::new(),
        }
    }

    fn subscriber(&mut self, args: &[&str], confirmations: usize) {
        let mut c = RawConn::connect(self.addr);
        subscribe(&mut c, args, confirmations);
        self.subscribers.push(c);
    }
}

/// `CHANNELS[k]` gets `k + 1` subscribers that listen to it alone.
fn single_channel_subscribers(side: &mut Side) {
    for (k, ch) in CHANNELS.iter().enumerate() {
        for _ in 0..=k {
            side.subscriber(&["SUBSCRIBE", ch], 1);
        }
    }
}

/// Two clients on every channel, distinct patterns, and shard channels.
fn more_subscribers(side: &mut Side) {
    let mut all = vec!["SUBSCRIBE"];
    all.extend(CHANNELS);
    side.subscriber(&all, CHANNELS.len());
    side.subscriber(&all, CHANNELS.len());
    for pattern in ["news:*", "o*", "ch?t"] {
        side.subscriber(&["PSUBSCRIBE", pattern], 1);
    }
    side.subscriber(&["SSUBSCRIBE", "shard:{a}1", "shard:{a}2"], 2);
    side.subscriber(&["SSUBSCRIBE", "shard:{b}"], 1);
    side.subscriber(&["SSUBSCRIBE", "shard:{b}"], 1);
}

fn as_set(reply: &[u8]) -> BTreeSet<String> {
    flat(reply).into_iter().collect()
}

fn counts_match_standalone(resp3: bool) {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let standalone = Standalone::start();
    let mut through = Side::new(proxy.addr());
    let mut direct = Side::new(standalone.addr);
    let mut p = connect(proxy.addr(), resp3);
    let mut d = connect(standalone.addr, resp3);

    single_channel_subscribers(&mut through);
    single_channel_subscribers(&mut direct);
    for (k, ch) in CHANNELS.iter().enumerate() {
        let want = d.call(&["PUBLISH", ch, "hello"]);
        assert_eq!(&want[..], format!(":{}\r\n", k + 1).as_bytes());
        let got = p.call(&["PUBLISH", ch, "hello"]);
        assert!(
            got == want,
            "PUBLISH {ch}: proxy {}, Redis {}",
            show(&got),
            show(&want)
        );
    }

    more_subscribers(&mut through);
    more_subscribers(&mut direct);
    let mut numsub = vec!["PUBSUB", "NUMSUB"];
    numsub.extend(CHANNELS);
    numsub.extend(["nosuch", "news:eu"]);
    let exact: [&[&str]; 5] = [
        &numsub,
        &["PUBSUB", "NUMPAT"],
        &["PUBSUB", "SHARDNUMSUB", "shard:{b}", "shard:{a}1", "nosuch"],
        &["PUBSUB", "NUMSUB"],
        &["PUBSUB", "SHARDNUMSUB"],
    ];
    for args in exact {
        let (got, want) = (p.call(args), d.call(args));
        assert!(
            got == want,
            "{args:?}: proxy {}, Redis {}",
            show(&got),
            show(&want)
        );
    }
    let as_sets: [&[&str]; 5] = [
        &["PUBSUB", "CHANNELS"],
        &["PUBSUB", "CHANNELS", "news:*"],
        &["PUBSUB", "CHANNELS", "nothing*"],
        &["PUBSUB", "SHARDCHANNELS"],
        &["PUBSUB", "SHARDCHANNELS", "shard:{a}*"],
    ];
    for args in as_sets {
        let (got, want) = (p.call(args), d.call(args));
        assert_eq!(got.first(), want.first(), "{args:?}: {}", show(&got));
        assert_eq!(as_set(&got), as_set(&want), "{args:?}");
        assert_eq!(flat(&got).len(), as_set(&got).len(), "{args:?}: duplicates");
    }
}

#[test]
fn publish_and_pubsub_counts_match_a_standalone_redis_resp2() {
    counts_match_standalone(false);
}

#[test]
fn publish_and_pubsub_counts_match_a_standalone_redis_resp3() {
    counts_match_standalone(true);
}
