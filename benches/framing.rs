//! Micro-benchmarks of the protocol framers: pipelined small requests (throughput in bytes), a
//! 3 MB SET arriving in 16 KiB reads against the same bytes in one piece (resumable framing must
//! keep the chunked case within 2x of the one-shot case), framing a pipelined mix of replies, and
//! the hot path's common case on both sides: one 36-byte `GET` (and its `$3` reply) at a time,
//! 16 per read as with `redis-benchmark -P 16`.
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slotproxy::protocol::framer::{Limits, Request, RequestFramer};
use slotproxy::protocol::reply_framer::ReplyFramer;
use std::hint::black_box;

/// 1000 pipelined commands, alternating `GET key:N` and `SET key:N <64-byte value>`.
fn pipeline() -> Vec<u8> {
    let value = [b'x'; 64];
    let mut out = Vec::new();
    for i in 0..1000 {
        let key = format!("key:{i}");
        let req = if i % 2 == 0 {
            Request::from_args(&[&b"GET"[..], key.as_bytes()])
        } else {
            Request::from_args(&[&b"SET"[..], key.as_bytes(), &value])
        };
        out.extend_from_slice(req.bytes());
    }
    out
}

/// A pipelined mix of what nodes answer: status, bulk, null, integer, MGET-style array, a RESP3
/// map, an error.
fn reply_mix() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..200 {
        out.extend_from_slice(b"+OK\r\n");
        out.extend_from_slice(format!("$64\r\n{}\r\n", "v".repeat(64)).as_bytes());
        out.extend_from_slice(b"$-1\r\n");
        out.extend_from_slice(format!(":{i}\r\n").as_bytes());
        out.extend_from_slice(b"*3\r\n$3\r\nabc\r\n$-1\r\n$5\r\nhello\r\n");
        out.extend_from_slice(b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n");
        out.extend_from_slice(b"-MOVED 3999 127.0.0.1:6381\r\n");
    }
    out
}

fn requests(c: &mut Criterion) {
    let input = pipeline();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("pipelined GET/SET x1000", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let mut framer = RequestFramer::new(Limits::default());
                let mut n = 0;
                while let Some(req) = framer.next_request(&mut buf).unwrap() {
                    black_box(&req);
                    n += 1;
                }
                assert_eq!(n, 1000);
            },
            BatchSize::SmallInput,
        )
    });
    // What one GET costs the framer, the buffer refilled as a socket read would, 16 at a time.
    let batch = GET_FRAME.repeat(PIPELINE);
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function("GET 36 bytes, 16 per read", |b| {
        let mut framer = RequestFramer::new(Limits::default());
        let mut buf = BytesMut::with_capacity(16 * 1024);
        b.iter(|| {
            buf.extend_from_slice(&batch);
            for _ in 0..PIPELINE {
                black_box(framer.next_request(&mut buf).unwrap().unwrap());
            }
        })
    });
    group.finish();
}

/// Requests (or replies) per socket read in the one-at-a-time cases.
const PIPELINE: usize = 16;
const GET_FRAME: &[u8] = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n";
const GET_REPLY: &[u8] = b"$3\r\nxxx\r\n";

fn big_bulk(c: &mut Criterion) {
    let value = vec![b'v'; 3 * 1024 * 1024];
    let input = Request::from_args(&[&b"SET"[..], b"big", &value])
        .bytes()
        .clone();
    let mut group = c.benchmark_group("request 3MB SET");
    group.throughput(Throughput::Bytes(input.len() as u64));
    // Both cases copy the bytes into the buffer, as a socket read would; they differ only in how
    // many reads (and framer calls) the bytes arrive in.
    group.bench_function("one piece", |b| {
        b.iter(|| {
            let mut framer = RequestFramer::new(Limits::default());
            let mut buf = BytesMut::with_capacity(16 * 1024);
            buf.extend_from_slice(&input);
            black_box(framer.next_request(&mut buf).unwrap().unwrap());
        })
    });
    group.bench_function("16 KiB chunks", |b| {
        b.iter(|| {
            let mut framer = RequestFramer::new(Limits::default());
            let mut buf = BytesMut::with_capacity(16 * 1024);
            let mut done = None;
            for piece in input.chunks(16 * 1024) {
                buf.extend_from_slice(piece);
                done = framer.next_request(&mut buf).unwrap();
            }
            black_box(done.unwrap());
        })
    });
    group.finish();
}

fn replies(c: &mut Criterion) {
    let input = reply_mix();
    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("pipelined mix x1400", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let mut framer = ReplyFramer::new();
                let mut n = 0;
                while let Some(reply) = framer.next_reply(&mut buf).unwrap() {
                    black_box(&reply);
                    n += 1;
                }
                assert_eq!(n, 1400);
            },
            BatchSize::SmallInput,
        )
    });
    let batch = GET_REPLY.repeat(PIPELINE);
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function("$3 bulk, 16 per read", |b| {
        let mut framer = ReplyFramer::new();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        b.iter(|| {
            buf.extend_from_slice(&batch);
            for _ in 0..PIPELINE {
                black_box(framer.next_reply(&mut buf).unwrap().unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, requests, big_bulk, replies);
criterion_main!(benches);
