//! Micro-benchmarks of the per-request routing work, the pure functions between a framed request
//! and the node it goes to: `key_slot`, command lookup and key extraction, routing one command,
//! splitting a 100-key MGET by slot, and parsing a 1,000-node `CLUSTER NODES` (the refresher's
//! cost, off the hot path but paid every refresh interval).
//!
//! Run: `cargo bench --bench routing -- --warm-up-time 1 --measurement-time 3`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slotproxy::cluster::slot::key_slot;
use slotproxy::cluster::topology::Topology;
use slotproxy::fanout::group_by_slot;
use slotproxy::protocol::command::{CommandTable, Handling, SplitKind};
use slotproxy::protocol::framer::Request;
use slotproxy::router::{common_slot, pick_node, ReadFrom};
use std::hint::black_box;
use std::net::SocketAddr;

fn bench_key_slot(c: &mut Criterion) {
    let long = vec![b'k'; 100];
    let cases: [(&str, &[u8]); 4] = [
        ("short", b"key:000042"),
        ("16_bytes", b"key:000000012345"),
        ("hash_tag", b"{user1000}.following"),
        ("100_bytes", &long),
    ];
    let mut g = c.benchmark_group("key_slot");
    for (name, key) in cases {
        g.bench_with_input(BenchmarkId::from_parameter(name), key, |b, key| {
            b.iter(|| key_slot(black_box(key)))
        });
    }
    g.finish();
}

/// The requests a session classifies most: plain single-key commands, and two whose keys are not
/// at `argv[1]` (EVAL: after numkeys; XREAD: after STREAMS).
fn sample_requests() -> Vec<(&'static str, Request)> {
    vec![
        ("get", Request::from_args(&["GET", "key:000042"])),
        ("set", Request::from_args(&["SET", "key:000042", "xxx"])),
        (
            "eval",
            Request::from_args(&["EVAL", "return 1", "2", "{k}a", "{k}b", "arg"]),
        ),
        (
            "xread",
            Request::from_args(&[
                "XREAD", "COUNT", "10", "STREAMS", "{s}1", "{s}2", "0-0", "0-0",
            ]),
        ),
    ]
}

fn bench_command(c: &mut Criterion) {
    let table = CommandTable::fallback();
    let mut g = c.benchmark_group("command_lookup_and_keys");
    for (name, req) in sample_requests() {
        g.bench_with_input(BenchmarkId::from_parameter(name), &req, |b, req| {
            let mut keys = Vec::with_capacity(8);
            b.iter(|| {
                let info = table.lookup(black_box(req)).expect("known command");
                keys.clear();
                table.keys(info, req, &mut keys);
                keys.len()
            })
        });
    }
    g.finish();
}

/// A synthetic `CLUSTER NODES` text: `masters` masters sharing the 16384 slots in contiguous
/// ranges, each with `replicas_per_master` replicas.
fn cluster_nodes_text(masters: usize, replicas_per_master: usize) -> String {
    let mut out = String::new();
    let id = |i: usize| format!("{i:040x}");
    let per = 16384 / masters;
    for m in 0..masters {
        let lo = m * per;
        let hi = if m + 1 == masters {
            16383
        } else {
            lo + per - 1
        };
        let port = 20000 + m;
        let flags = if m == 0 { "myself,master" } else { "master" };
        out.push_str(&format!(
            "{} 10.0.{}.{}:{port}@{} {flags} - 0 1700000000000 {} connected {lo}-{hi}\n",
            id(m),
            m / 250,
            m % 250,
            port + 10000,
            m + 1
        ));
        for r in 0..replicas_per_master {
            let n = masters + m * replicas_per_master + r;
            let port = 20000 + n;
            out.push_str(&format!(
                "{} 10.1.{}.{}:{port}@{} slave {} 0 1700000000000 {} connected\n",
                id(n),
                n / 250,
                n % 250,
                port + 10000,
                id(m),
                m + 1
            ));
        }
    }
    out
}

fn queried() -> SocketAddr {
    "10.0.0.0:20000".parse().expect("valid address")
}

fn bench_route(c: &mut Criterion) {
    let topology = Topology::from_cluster_nodes(&cluster_nodes_text(3, 1), queried())
        .expect("synthetic topology parses");
    let table = CommandTable::fallback();
    let mut g = c.benchmark_group("route_one_command");
    for (name, req) in sample_requests() {
        let info = table.lookup(&req).expect("known command");
        let mut keys = Vec::new();
        table.keys(info, &req, &mut keys);
        g.bench_with_input(BenchmarkId::new("slot_and_node", name), &req, |b, req| {
            b.iter(|| {
                let slot = common_slot(black_box(req), &keys).expect("one slot");
                pick_node(&topology, slot, info.readonly, ReadFrom::Master, 7).expect("covered")
            })
        });
        // What a session does per request: lookup, keys, slot, node.
        g.bench_with_input(BenchmarkId::new("lookup_to_node", name), &req, |b, req| {
            let mut keys = Vec::with_capacity(8);
            b.iter(|| {
                let info = table.lookup(black_box(req)).expect("known command");
                keys.clear();
                table.keys(info, req, &mut keys);
                let slot = common_slot(req, &keys).expect("one slot");
                pick_node(&topology, slot, info.readonly, ReadFrom::Master, 7).expect("covered")
            })
        });
    }
    g.finish();
}

fn bench_split_mget(c: &mut Criterion) {
    let table = CommandTable::fallback();
    let mut args = vec!["MGET".to_string()];
    args.extend((0..100).map(|i| format!("key:{i:06}")));
    let req = Request::from_args(&args);
    let info = table.lookup(&req).expect("mget is known");
    assert_eq!(info.handling, Handling::Split(SplitKind::Mget));
    let mut keys = Vec::new();
    table.keys(info, &req, &mut keys);
    assert_eq!(keys.len(), 100);
    let parts = group_by_slot(&req, SplitKind::Mget, &keys).len();
    assert!(parts > 90, "100 distinct keys span ~100 slots, got {parts}");

    let mut g = c.benchmark_group("split_mget_100_keys");
    g.throughput(Throughput::Elements(100));
    g.bench_function("group_by_slot", |b| {
        b.iter(|| group_by_slot(black_box(&req), SplitKind::Mget, &keys))
    });
    // Grouping plus encoding one sub-request per slot: everything but the sends.
    g.bench_function("group_and_encode", |b| {
        b.iter(|| {
            let split = group_by_slot(black_box(&req), SplitKind::Mget, &keys);
            split
                .encode(&req, &keys)
                .iter()
                .map(|p| p.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn bench_cluster_nodes(c: &mut Criterion) {
    let text = cluster_nodes_text(500, 1);
    assert_eq!(text.lines().count(), 1000);
    let t = Topology::from_cluster_nodes(&text, queried()).expect("synthetic topology parses");
    assert_eq!(t.slots_covered(), 16384);
    let mut g = c.benchmark_group("cluster_nodes_parse");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("1000_nodes", |b| {
        b.iter(|| Topology::from_cluster_nodes(black_box(&text), queried()).expect("parses"))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_key_slot,
    bench_command,
    bench_route,
    bench_split_mget,
    bench_cluster_nodes
);
criterion_main!(benches);
