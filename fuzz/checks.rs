//! The invariants the fuzz targets check, through slotproxy's public API only. Shared by the
//! fuzz targets (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_corpus.rs`, which replays the
//! corpus and every input that ever failed in a normal `cargo test`.
//!
//! An input is `[split seed, limits selector, stream...]`: the first byte seeds the chunk sizes
//! the stream is fed in, the second picks the framer's limits (small ones reach the limit
//! paths), the rest is what a client (or a node) sends.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use slotproxy::protocol::framer::{Limits, ProtocolError, RequestFramer};
use slotproxy::protocol::reply_framer::ReplyFramer;

/// Chunk sizes from `seed`: a mix of 1-byte steps and larger reads, deterministic per seed.
fn chunks(seed: u8, len: usize) -> Vec<usize> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let r = (state >> 16) as usize;
        let n = match seed % 4 {
            0 => 1,
            1 => 1 + r % 7,
            _ => 1 + r % 64,
        }
        .min(len - at);
        out.push(n);
        at += n;
    }
    out
}

fn limits(selector: u8) -> Limits {
    match selector % 4 {
        0 => Limits::default(),
        1 => Limits {
            max_bulk_len: 16,
            max_args: 4,
            max_inline_len: 16,
        },
        2 => Limits {
            max_bulk_len: 1,
            max_args: 1,
            max_inline_len: 32,
        },
        _ => Limits {
            max_bulk_len: 1024,
            max_args: 64,
            max_inline_len: 1024,
        },
    }
}

/// What framing a stream produced: each request's bytes and arguments, then how it ended.
#[derive(Debug, PartialEq)]
struct Framed<T> {
    items: Vec<T>,
    error: Option<ProtocolError>,
}

type Req = (Bytes, Vec<Vec<u8>>);

fn frame_requests(limits: Limits, stream: &[u8], sizes: &[usize]) -> Framed<Req> {
    let mut framer = RequestFramer::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Framed {
        items: Vec::new(),
        error: None,
    };
    let mut at = 0;
    for &n in sizes {
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        loop {
            match framer.next_request(&mut buf) {
                Ok(Some(r)) => out
                    .items
                    .push((r.bytes().clone(), r.args().map(<[u8]>::to_vec).collect())),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out
}

/// The request framer: the same requests (bytes and arguments) and the same error whether the
/// stream comes at once or in pieces; every request is a RESP array that frames again, alone,
/// to itself with the same arguments.
pub fn check_request_framer(data: &[u8]) {
    let [seed, selector, stream @ ..] = data else {
        return;
    };
    let limits = limits(*selector);
    let whole = frame_requests(limits, stream, &[stream.len()]);
    let pieces = frame_requests(limits, stream, &chunks(*seed, stream.len()));
    assert_eq!(whole, pieces, "chunking changed the framing");
    for (bytes, args) in &whole.items {
        assert!(!args.is_empty(), "a request without arguments");
        // Inline commands are bounded by their line (max_inline_len), as in Redis, not by the
        // bulk and count limits.
        let inline = limits.max_inline_len;
        assert!(args.len() <= limits.max_args.max(inline), "over max_args");
        assert!(
            args.iter()
                .all(|a| a.len() <= limits.max_bulk_len.max(inline)),
            "an argument over max_bulk_len"
        );
        assert_eq!(
            bytes.first(),
            Some(&b'*'),
            "forwarded bytes are a RESP array"
        );
        let again = frame_requests(Limits::default(), bytes, &[bytes.len()]);
        assert_eq!(again.error, None, "a framed request does not frame again");
        assert_eq!(again.items.len(), 1, "a framed request is not one request");
        assert_eq!(&again.items[0].0, bytes, "reframing changed the bytes");
        assert_eq!(&again.items[0].1, args, "reframing changed the arguments");
    }
}

fn frame_replies(stream: &[u8], sizes: &[usize], max_bulk: usize) -> Framed<Bytes> {
    let mut framer = ReplyFramer::new().with_max_bulk_len(max_bulk);
    let mut buf = BytesMut::new();
    let mut out = Framed {
        items: Vec::new(),
        error: None,
    };
    let mut at = 0;
    for &n in sizes {
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        loop {
            match framer.next_reply(&mut buf) {
                Ok(Some(r)) => out.items.push(r),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out
}

/// The reply framer: the same replies and error at once or in pieces; the replies, in order,
/// are exactly the bytes at the front of the stream (nothing skipped, nothing altered); each
/// reply frames again, alone, to exactly itself.
pub fn check_reply_framer(data: &[u8]) {
    let [seed, selector, stream @ ..] = data else {
        return;
    };
    let max_bulk = match selector % 3 {
        0 => 512 * 1024 * 1024,
        1 => 16,
        _ => 1024,
    };
    let whole = frame_replies(stream, &[stream.len()], max_bulk);
    let pieces = frame_replies(stream, &chunks(*seed, stream.len()), max_bulk);
    assert_eq!(whole, pieces, "chunking changed the framing");
    let mut at = 0;
    for reply in &whole.items {
        assert!(!reply.is_empty(), "an empty reply");
        assert_eq!(
            &stream[at..at + reply.len()],
            &reply[..],
            "a reply is not the next slice of the input"
        );
        at += reply.len();
        let again = frame_replies(reply, &[reply.len()], max_bulk);
        assert_eq!(again.error, None, "a framed reply does not frame again");
        assert_eq!(
            again.items,
            vec![reply.clone()],
            "a reply does not frame to itself"
        );
    }
}
