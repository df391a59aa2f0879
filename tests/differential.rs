//! The same long, random pipeline through the proxy (keys spread over every slot, so multi-key
//! commands are split, with transactions and blocking commands, which use connections of their
//! own) and into one standalone Redis: the bytes that come back must be the same, in the same
//! order. What a client sees through the proxy is what a standalone Redis
//! would have told it.
mod support;

use slotproxy::protocol::framer::Request;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::standalone::Standalone;
use support::{Cluster, Proxy};

/// xorshift64: the same pipeline on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One random command over 40 keys (which land on many slots and every master).
fn command(rng: &mut Rng) -> Vec<String> {
    let key = |rng: &mut Rng| format!("k{}", rng.next(40));
    let keys = |rng: &mut Rng, most: usize| -> Vec<String> {
        (0..1 + rng.next(most)).map(|_| key(rng)).collect()
    };
    let digit = |rng: &mut Rng| rng.next(100).to_string();
    let mut c: Vec<String> = Vec::new();
    match rng.next(24) {
        0 => c.extend(["SET".into(), key(rng), digit(rng)]),
        1 => c.extend(["GET".into(), key(rng)]),
        2 => c.extend(["INCR".into(), key(rng)]),
        3 => c.extend(std::iter::once("DEL".into()).chain(keys(rng, 5))),
        4 => c.extend(std::iter::once("EXISTS".into()).chain(keys(rng, 5))),
        5 => {
            c.push("MSET".into());
            for k in keys(rng, 5) {
                c.extend([k, digit(rng)]);
            }
        }
        6 => c.extend(std::iter::once("MGET".into()).chain(keys(rng, 6))),
        7 => c.extend(["LPUSH".into(), key(rng), "a".into(), "b".into()]),
        8 => c.extend(["LRANGE".into(), key(rng), "0".into(), "-1".into()]),
        9 => c.extend(["HSET".into(), key(rng), "f".into(), digit(rng)]),
        10 => c.extend(["HGETALL".into(), key(rng)]),
        11 => c.extend(["TYPE".into(), key(rng)]),
        12 => c.extend(["APPEND".into(), key(rng), "z".into()]),
        13 => c.extend(std::iter::once("UNLINK".into()).chain(keys(rng, 3))),
        14 => c.extend(std::iter::once("TOUCH".into()).chain(keys(rng, 3))),
        15 => c.extend(["GETDEL".into(), key(rng)]),
        16 => c.extend(["SETNX".into(), key(rng), "n".into()]),
        17 => c.extend(["INCRBY".into(), key(rng), "5".into()]),
        18 => c.extend(["EXPIRE".into(), key(rng), "1000".into()]),
        19 => c.extend(["PERSIST".into(), key(rng)]),
        20 => c.extend(["SADD".into(), key(rng), "m1".into(), "m2".into()]),
        21 => c.extend(["ZADD".into(), key(rng), "1".into(), "x".into()]),
        22 => c.extend(["GETSET".into(), key(rng), "g".into()]),
        _ => c.extend(["ECHO".into(), digit(rng)]),
    }
    c
}

/// One random command, or now and then a group that moves between the client's connections: a
/// transaction (some with WATCH, some discarded) on a tagged key, or a push, a BLPOP and a
/// read of what the BLPOP left.
fn commands(rng: &mut Rng) -> Vec<Vec<String>> {
    let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<String>>();
    match rng.next(100) {
        0..=5 => {
            let mut group = Vec::new();
            if rng.next(3) == 0 {
                group.push(v(&["WATCH", "{t}a"]));
            }
            group.push(v(&["MULTI"]));
            for _ in 0..rng.next(5) {
                let digit = rng.next(10).to_string();
                group.push(match rng.next(5) {
                    0 => v(&["SET", "{t}a", &digit]),
                    1 => v(&["INCR", "{t}a"]),
                    2 => v(&["GET", "{t}a"]),
                    3 => v(&["LPUSH", "{t}l", "v"]),
                    _ => v(&["DEL", "{t}a"]),
                });
            }
            group.push(v(&[if rng.next(5) == 0 { "DISCARD" } else { "EXEC" }]));
            group
        }
        // A transaction whose commands are all keyless (it runs on a connection of its own),
        // then one on a key: the second must not overtake the first.
        96 => vec![
            v(&["MULTI"]),
            v(&["PING"]),
            v(&["ECHO", "keyless"]),
            v(&["EXEC"]),
            v(&["MULTI"]),
            v(&["INCR", "{t}a"]),
            v(&["EXEC"]),
            v(&["GET", "{t}a"]),
        ],
        6..=9 => vec![
            v(&["RPUSH", "{t}l", "x"]),
            v(&["BLPOP", "{t}l", "1"]),
            v(&["LLEN", "{t}l"]),
        ],
        // A BLPOP that times out (Redis times those out on its 100 ms clock: keep them rare).
        10 if rng.next(10) == 0 => vec![v(&["BLPOP", "{t}empty", "0.01"])],
        _ => vec![command(rng)],
    }
}

/// Sends the whole pipeline in one write, QUIT last, and reads everything up to the close.
fn replies(addr: SocketAddr, pipeline: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let pipeline = pipeline.to_vec();
        std::thread::spawn(move || s.write_all(&pipeline).unwrap())
    };
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{addr}: {e} after {} bytes", out.len()));
    writer.join().unwrap();
    out
}

/// The replies after HELLO's, which carries the connection's id (different on each side).
fn after_hello(replies: Vec<u8>, hello: bool) -> Vec<u8> {
    const END: &[u8] = b"$7\r\nmodules\r\n*0\r\n";
    if !hello {
        return replies;
    }
    let at = replies
        .windows(END.len())
        .position(|w| w == END)
        .expect("a HELLO reply");
    replies[at + END.len()..].to_vec()
}

#[test]
fn a_random_pipeline_gets_the_bytes_a_standalone_redis_sends() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let redis = Standalone::start(&[]);
    // RESP2, then RESP3 (whose replies the proxy forwards from RESP3 node connections, and
    // builds in RESP3 when it merges them).
    for (seed, resp3) in [(1u64, false), (2, false), (3, false), (4, true), (5, true)] {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut commands = vec![vec!["FLUSHALL".to_string()]];
        if resp3 {
            commands.insert(0, vec!["HELLO".into(), "3".into()]);
        }
        for _ in 0..3000 {
            commands.extend(self::commands(&mut rng));
        }
        commands.push(vec!["QUIT".into()]);
        let mut pipeline = Vec::new();
        for c in &commands {
            pipeline.extend_from_slice(Request::from_args(c).bytes());
        }
        let want = after_hello(replies(redis.addr, &pipeline), resp3);
        let got = after_hello(replies(proxy.addr(), &pipeline), resp3);
        if got != want {
            let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            let show = |b: &[u8]| {
                String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())])
                    .into_owned()
            };
            panic!(
                "seed {seed} (resp3: {resp3}): replies differ at byte {at} of {}\nredis: {:?}\nproxy: {:?}",
                want.len(),
                show(&want),
                show(&got)
            );
        }
    }
}

/// How a reply through the proxy is compared with the standalone Redis's.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Byte for byte.
    Exact,
    /// The same RESP type (a cluster-wide value: ids, addresses, timings, sizes).
    Kind,
    /// SCAN: the same cursor and the same keys, in any order.
    ScanKeys,
    /// No reply at all (CLIENT REPLY OFF / SKIP).
    Nothing,
}

/// Splits a stream of replies into replies.
fn split_replies(mut bytes: &[u8]) -> Vec<bytes::Bytes> {
    let mut buf = bytes::BytesMut::from(std::mem::take(&mut bytes));
    let mut framer = slotproxy::protocol::reply_framer::ReplyFramer::new();
    let mut out = Vec::new();
    while let Some(r) = framer.next_reply(&mut buf).expect("valid RESP") {
        out.push(r);
    }
    assert!(buf.is_empty(), "trailing bytes");
    out
}

fn scan_keys(reply: &bytes::Bytes) -> (bytes::Bytes, Vec<bytes::Bytes>) {
    use slotproxy::protocol::reply_framer::split_array;
    let parts = split_array(reply).expect("SCAN reply");
    let mut keys = split_array(&parts[1]).expect("keys");
    keys.sort();
    (parts[0].clone(), keys)
}

#[test]
fn admin_and_introspection_commands_answer_as_a_standalone_redis() {
    use Compare::*;
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let redis = Standalone::start(&[]);
    let script: &[(Compare, &[&str])] = &[
        (Exact, &["FLUSHALL"]),
        (Exact, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        (Exact, &["CONFIG", "GET", "maxmemory-policy"]),
        (Exact, &["CONFIG", "SET", "no-such-option", "1"]),
        (Exact, &["CONFIG", "SET", "maxmemory-policy", "sometimes"]),
        (Exact, &["CONFIG", "RESETSTAT"]),
        (Exact, &["SET", "a", "12"]),
        (Exact, &["SET", "b", "x"]),
        (Exact, &["SET", "c", "y"]),
        (Exact, &["PEXPIRE", "c", "100000000"]),
        (Kind, &["MEMORY", "USAGE", "a"]),
        (Exact, &["OBJECT", "ENCODING", "a"]),
        (Exact, &["OBJECT", "ENCODING", "b"]),
        (Exact, &["OBJECT", "FREQ", "a"]),
        (Exact, &["DBSIZE"]),
        (Exact, &["INFO", "keyspace"]),
        (ScanKeys, &["SCAN", "0"]),
        (ScanKeys, &["SCAN", "00", "MATCH", "[ab]", "COUNT", "100"]),
        (ScanKeys, &["SCAN", "0", "TYPE", "string"]),
        (Exact, &["SCAN", "x"]),
        (Exact, &["SLOWLOG", "RESET"]),
        (Kind, &["SLOWLOG", "LEN"]),
        (Kind, &["SLOWLOG", "GET"]),
        (Kind, &["SLOWLOG", "GET", "-1"]),
        (Exact, &["LATENCY", "LATEST"]),
        (Exact, &["LATENCY", "RESET"]),
        (Exact, &["LATENCY", "HISTORY", "command"]),
        (Kind, &["LASTSAVE"]),
        (
            Exact,
            &["ACL", "SETUSER", "bob", "on", ">pw", "~*", "+@all"],
        ),
        (Kind, &["ACL", "GETUSER", "bob"]),
        (Exact, &["ACL", "USERS"]),
        (Exact, &["ACL", "DELUSER", "bob"]),
        (Exact, &["ACL", "DELUSER", "bob"]),
        (Exact, &["ACL", "LOG", "RESET"]),
        (Exact, &["ACL", "LOG"]),
        (Exact, &["CLIENT", "GETREDIR"]),
        (Exact, &["CLIENT", "NO-EVICT", "on"]),
        (Exact, &["CLIENT", "NO-EVICT", "maybe"]),
        (Exact, &["CLIENT", "PAUSE", "-1"]),
        (Exact, &["CLIENT", "PAUSE", "10", "FOO"]),
        (Exact, &["CLIENT", "KILL", "ID", "0"]),
        (Exact, &["CLIENT", "KILL", "ADDR", "1.2.3.4:5"]),
        (Exact, &["CLIENT", "LIST", "TYPE", "foo"]),
        (Exact, &["CLIENT", "LIST", "ID", "x"]),
        (Kind, &["CLIENT", "LIST", "TYPE", "normal"]),
        (Kind, &["CLIENT", "INFO"]),
        (Nothing, &["CLIENT", "REPLY", "SKIP"]),
        (Nothing, &["SET", "skipped", "1"]),
        (Exact, &["GET", "skipped"]),
        (Nothing, &["CLIENT", "REPLY", "OFF"]),
        (Nothing, &["SET", "quiet", "1"]),
        (Nothing, &["GET", "quiet"]),
        (Exact, &["CLIENT", "REPLY", "ON"]),
        (Exact, &["GET", "quiet"]),
        (Exact, &["CLIENT", "REPLY", "maybe"]),
        (Exact, &["HELLO", "+3"]),
        (Exact, &["HELLO", "03"]),
        (Exact, &["HELLO", "4"]),
        (Exact, &["EVAL", "return 1", "00"]),
        (Kind, &["WAIT", "0", "0"]),
        (Exact, &["WAIT", "x", "0"]),
        (Exact, &["WAIT", "0", "-1"]),
        (Exact, &["WAIT", "0", "y"]),
        (Exact, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
    ];
    let mut pipeline = Vec::new();
    for (_, args) in script {
        pipeline.extend_from_slice(Request::from_args(args).bytes());
    }
    pipeline.extend_from_slice(Request::from_args(&["QUIT"]).bytes());
    let want = split_replies(&replies(redis.addr, &pipeline));
    let got = split_replies(&replies(proxy.addr(), &pipeline));
    assert_eq!(
        want.len(),
        got.len(),
        "reply counts\nredis: {want:?}\nproxy: {got:?}"
    );
    let answered = script.iter().filter(|(c, _)| *c != Nothing);
    for (i, (compare, args)) in answered.enumerate() {
        let (w, g) = (&want[i], &got[i]);
        match compare {
            Exact => assert_eq!(g, w, "{args:?}"),
            Kind => assert_eq!(g.first(), w.first(), "{args:?}: {g:?} vs {w:?}"),
            ScanKeys => assert_eq!(scan_keys(g), scan_keys(w), "{args:?}"),
            Nothing => unreachable!(),
        }
    }
}
