//! Drives one hot-path function in a tight loop, for counting instructions per call under
//! callgrind (stable on a noisy shared machine, where criterion's times drift):
//!
//! ```sh
//! cargo build --release --example hot_path_instrs
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null --collect-atstart=no \
//!     --toggle-collect='hot_path_instrs::measured_*' target/release/examples/hot_path_instrs CASE
//! ```
//!
//! Divide the `Collected` instruction count by the iterations printed. Cases: `request`
//! (framing a `GET key:000000012345`, 16 pipelined per read), `request-refill` (only the
//! buffer refill the `request` case includes), `reply` (`$3\r\nxxx\r\n`, 16 per read),
//! `reply-refill`, `key-slot` (a 16-byte key), `lookup` (GET), `lookup-keys` (GET lookup and
//! key positions).
use bytes::BytesMut;
use slotproxy::cluster::slot::key_slot;
use slotproxy::protocol::command::CommandTable;
use slotproxy::protocol::framer::{Limits, Request, RequestFramer};
use slotproxy::protocol::reply_framer::ReplyFramer;
use std::hint::black_box;

const ITERATIONS: usize = 100_000;
const PIPELINE: usize = 16;
const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n";
const REPLY: &[u8] = b"$3\r\nxxx\r\n";

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let calls = match case.as_str() {
        "request" => measured_request(true),
        "request-refill" => measured_request(false),
        "reply" => measured_reply(true),
        "reply-refill" => measured_reply(false),
        "key-slot" => measured_key_slot(),
        "lookup" => run_lookup(false),
        "lookup-keys" => run_lookup(true),
        _ => {
            eprintln!("usage: hot_path_instrs request|request-refill|reply|reply-refill|key-slot|lookup|lookup-keys");
            std::process::exit(2);
        }
    };
    println!("{case}: {calls} calls");
}

#[inline(never)]
fn measured_request(frame: bool) -> usize {
    let batch = GET.repeat(PIPELINE);
    let mut framer = RequestFramer::new(Limits::default());
    let mut buf = BytesMut::with_capacity(16 * 1024);
    for _ in 0..ITERATIONS / PIPELINE {
        buf.extend_from_slice(&batch);
        if frame {
            for _ in 0..PIPELINE {
                black_box(framer.next_request(&mut buf).unwrap().unwrap());
            }
        } else {
            black_box(&mut buf).clear();
        }
    }
    ITERATIONS / PIPELINE * PIPELINE
}

#[inline(never)]
fn measured_reply(frame: bool) -> usize {
    let batch = REPLY.repeat(PIPELINE);
    let mut framer = ReplyFramer::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    for _ in 0..ITERATIONS / PIPELINE {
        buf.extend_from_slice(&batch);
        if frame {
            for _ in 0..PIPELINE {
                black_box(framer.next_reply(&mut buf).unwrap().unwrap());
            }
        } else {
            black_box(&mut buf).clear();
        }
    }
    ITERATIONS / PIPELINE * PIPELINE
}

#[inline(never)]
fn measured_key_slot() -> usize {
    let key = b"key:000000012345";
    for _ in 0..ITERATIONS {
        black_box(key_slot(black_box(key)));
    }
    ITERATIONS
}

fn run_lookup(keys: bool) -> usize {
    let table = CommandTable::fallback();
    let req = Request::from_args(&["GET", "key:000000012345"]);
    measured_lookup(&table, &req, keys)
}

/// The measured loop; the table is parsed before it.
#[inline(never)]
fn measured_lookup(table: &CommandTable, req: &Request, keys: bool) -> usize {
    let mut out = Vec::with_capacity(8);
    for _ in 0..ITERATIONS {
        let info = table.lookup(black_box(req)).unwrap();
        if keys {
            out.clear();
            table.keys(info, req, &mut out);
            black_box(&out);
        }
        black_box(info);
    }
    ITERATIONS
}
