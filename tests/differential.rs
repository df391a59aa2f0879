//! Random pipelines through the proxy and into one standalone Redis: the bytes that come back
//! must be the same, in the same order. What a client sees through the proxy is what a
//! standalone Redis would have told it. The pipelines (`support::pipelines`) cover basic
//! commands with keys over every slot (multi-key ones split; transactions and blocking commands
//! on connections of their own), every data type and its errors, transaction, script and
//! subscriber edges, odd keys and values, rarer command families, and eight clients at once;
//! admin and introspection commands are compared reply by reply. (The same over the TLS
//! listener: `tests/tls.rs`.)
mod support;

use slotproxy::protocol::framer::Request;
use std::net::SocketAddr;
use support::pipelines::*;
use support::standalone::Standalone;
use support::{Cluster, Proxy};

/// Sends `commands` (QUIT appended) through the proxy and into the standalone Redis and panics,
/// naming `label` and the first byte that differs, unless the replies are the same bytes.
fn assert_same_replies(
    proxy: SocketAddr,
    redis: SocketAddr,
    commands: Vec<Vec<String>>,
    resp3: bool,
    label: &str,
) {
    let pipeline = encode_with_quit(&commands);
    let want = after_hello(replies(redis, &pipeline), resp3);
    let got = after_hello(replies(proxy, &pipeline), resp3);
    assert_same_bytes(&format!("{label} (resp3: {resp3})"), &want, &got);
}

/// Starts a cluster, the proxy and a standalone Redis, and compares, for each `(seed, resp3)`,
/// a pipeline of `n` draws of `draw` (then `last`, if any).
fn compare_pipelines(seeds: &[(u64, bool)], n: usize, draw: Draw, last: Option<&[&str]>) {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let redis = Standalone::start(&[]);
    for &(seed, resp3) in seeds {
        let mut commands = pipeline_of(seed, resp3, n, draw);
        commands.extend(last.map(|l| l.iter().map(|w| w.to_string()).collect()));
        let label = format!("seed {seed}");
        assert_same_replies(proxy.addr(), redis.addr, commands, resp3, &label);
    }
}

#[test]
fn a_random_pipeline_gets_the_bytes_a_standalone_redis_sends() {
    // RESP2, then RESP3 (whose replies the proxy forwards from RESP3 node connections, and
    // builds in RESP3 when it merges them).
    let seeds = [(1, false), (2, false), (3, false), (4, true), (5, true)];
    compare_pipelines(&seeds, 3000, commands, None);
}

#[test]
fn every_data_type_and_error_gets_the_bytes_a_standalone_redis_sends() {
    let seeds = [(11, false), (12, false), (13, true), (14, true)];
    compare_pipelines(&seeds, 3000, typed_command, None);
}

#[test]
fn transaction_script_and_subscriber_edges_get_the_bytes_a_standalone_redis_sends() {
    // In RESP3 a subscribed client may run any command, and its pushes interleave with replies.
    compare_pipelines(
        &[(21, false), (22, false), (23, true)],
        600,
        edge_group,
        None,
    );
}

#[test]
fn odd_keys_and_values_get_the_bytes_a_standalone_redis_sends() {
    compare_pipelines(&[(31, false), (32, true)], 3000, odd_argument, None);
}

#[test]
fn streams_geo_bitfield_and_functions_get_the_bytes_a_standalone_redis_sends() {
    // Functions outlive FLUSHALL: the next seed starts without the library.
    let last: &[&str] = &["FUNCTION", "FLUSH"];
    compare_pipelines(&[(41, false), (42, true)], 1500, rare_family, Some(last));
}

#[test]
fn clients_at_once_each_get_the_bytes_a_standalone_redis_sends_them() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let redis = Standalone::start(&[]);
    const CLIENTS: u64 = 8;
    // Client c's pipeline: its own keys, RESP3 for odd c, the same on both sides.
    let pipeline = |c: u64| -> Vec<u8> {
        let mut rng = Rng((100 + c).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let prefix = format!("c{c}");
        let mut commands: Vec<Vec<String>> = Vec::new();
        if c % 2 == 1 {
            commands.push(vec!["HELLO".into(), "3".into()]);
        }
        for _ in 0..2000 {
            commands.extend(own_keys_command(&mut rng, &prefix));
        }
        encode_with_quit(&commands)
    };
    // All clients of one side at once, each sending its whole pipeline in one write.
    let side = |addr: SocketAddr| -> Vec<Vec<u8>> {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let p = pipeline(c);
                std::thread::spawn(move || after_hello(replies(addr, &p), c % 2 == 1))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    };
    let want = side(redis.addr);
    let got = side(proxy.addr());
    for c in 0..CLIENTS as usize {
        assert_same_bytes(&format!("client {c}"), &want[c], &got[c]);
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
