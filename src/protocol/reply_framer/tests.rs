//! Reply framer tests: every RESP2/RESP3 type, attributes, chunking, hostile lengths, nesting
//! far deeper than Redis produces, and the whole-reply fast path against the state machine.
use super::*;
use crate::protocol::split_check::assert_every_split_agrees;

/// Frames `input` fed in `chunk`-byte pieces; the replies, then the error if one occurred.
fn frame_chunked(input: &[u8], chunk: usize) -> (Vec<Bytes>, Option<ProtocolError>) {
    let mut framer = ReplyFramer::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match framer.next_reply(&mut buf) {
                Ok(Some(reply)) => out.push(reply),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn frame_all(input: &[u8]) -> (Vec<Bytes>, Option<ProtocolError>) {
    frame_chunked(input, input.len())
}

/// Asserts `input` is exactly the given replies back to back, however it is chunked.
fn replies(parts: &[&[u8]]) {
    let input = parts.concat();
    for chunk in [input.len(), 1, 2, 5] {
        let (got, err) = frame_chunked(&input, chunk);
        assert_eq!(err, None, "chunk {chunk}");
        let got: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
        assert_eq!(got, parts, "chunk {chunk}");
    }
}

fn error_of(input: &[u8]) -> ProtocolError {
    frame_all(input).1.expect("an error")
}

#[test]
fn resp2_types() {
    replies(&[
        b"+OK\r\n",
        b"-ERR unknown command 'x'\r\n",
        b":-42\r\n",
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n",
        b"+\r\n",
    ]);
}

#[test]
fn bulk_bodies_may_hold_crlf() {
    replies(&[b"$4\r\n\r\n\r\n\r\n", b"*1\r\n$2\r\n\r\n\r\n"]);
}

#[test]
fn resp3_types() {
    replies(&[
        b"_\r\n",
        b",3.14\r\n",
        b",inf\r\n",
        b"#t\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"%2\r\n+first\r\n:1\r\n+second\r\n%1\r\n$1\r\nk\r\n~2\r\n#f\r\n_\r\n",
        b"~3\r\n+a\r\n+b\r\n+c\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nmsg\r\n",
        b"%0\r\n",
    ]);
}

#[test]
fn attributes_travel_with_the_value_they_annotate() {
    replies(&[
        b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.05\r\n*2\r\n:2039123\r\n:9543892\r\n",
        b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n",
        b"|0\r\n+OK\r\n",
        // An attribute inside an attribute's value: `:7` is annotated, `+v` is the reply.
        b"|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n:7\r\n+v\r\n",
    ]);
    // Inside an array the attribute does not count as an element.
    let (got, _) = frame_all(b"*1\r\n|1\r\n+a\r\n+b\r\n:5\r\n");
    assert_eq!(&got[0][..], b"*1\r\n|1\r\n+a\r\n+b\r\n:5\r\n");
}

#[test]
fn byte_at_a_time_equals_one_shot() {
    let input: &[u8] = b"+OK\r\n$3\r\nfoo\r\n*3\r\n$1\r\na\r\n*1\r\n%1\r\n+k\r\n~1\r\n:1\r\n_\r\n:5\r\n|1\r\n+x\r\n+y\r\n$-1\r\n-MOVED 1 127.0.0.1:7000\r\n";
    let whole = frame_all(input);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 6);
    for chunk in [1, 2, 3, 7] {
        assert_eq!(frame_chunked(input, chunk), whole, "chunk {chunk}");
    }
}

#[test]
fn three_megabyte_bulk_in_16k_chunks() {
    let mut input = b"$3145728\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'v', 3 * 1024 * 1024));
    input.extend_from_slice(b"\r\n");
    let mut framer = ReplyFramer::new();
    let mut buf = BytesMut::new();
    let mut done = None;
    for piece in input.chunks(16 * 1024) {
        assert!(done.is_none());
        buf.extend_from_slice(piece);
        done = framer.next_reply(&mut buf).unwrap();
    }
    assert_eq!(&done.expect("complete")[..], &input[..]);
}

/// `depth` nested one-element arrays around `:1`, as Redis answers a self-referencing Lua
/// table (~8,000 levels, then an error element), but as deep as asked.
fn nested(depth: usize, header: &[u8]) -> Vec<u8> {
    let mut input = header.repeat(depth);
    input.extend_from_slice(b":1\r\n");
    input
}

#[test]
fn depth_100k_one_byte_at_a_time() {
    // Two deep replies back to back, then a plain one: the state resets between them. Fed one
    // byte per call (~800,000 calls), this finishes only because framing resumes where it
    // stopped: re-scanning from byte 0 on each call would be ~10^11 steps.
    let deep = nested(100_000, b"*1\r\n");
    let (got, err) = frame_chunked(&[&deep[..], &deep, b"+OK\r\n"].concat(), 1);
    assert_eq!(err, None);
    let got: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
    assert_eq!(got, [&deep[..], &deep, b"+OK\r\n"]);
}

#[test]
fn depth_100k_in_big_chunks() {
    let deep = nested(100_000, b"*1\r\n");
    for chunk in [deep.len(), 64 * 1024, 16 * 1024, 4093] {
        let (got, err) = frame_chunked(&[&deep[..], b":7\r\n"].concat(), chunk);
        assert_eq!(err, None, "chunk {chunk}");
        assert_eq!(got.len(), 2, "chunk {chunk}");
        assert_eq!(&got[0][..], &deep[..], "chunk {chunk}");
        assert_eq!(&got[1][..], b":7\r\n", "chunk {chunk}");
    }
}

#[test]
fn deep_resp3_aggregates_and_attributes() {
    // Every aggregate type, nested alternately 30,000 levels deep; an attribute at every
    // level annotates the value that follows it and is not one of its parent's elements.
    let mut input = Vec::new();
    for i in 0..30_000 {
        input.extend_from_slice(match i % 4 {
            0 => &b"*1\r\n"[..],
            1 => b"~1\r\n",
            2 => b"|1\r\n+a\r\n:1\r\n%1\r\n+k\r\n",
            _ => b">1\r\n",
        });
    }
    input.extend_from_slice(b"_\r\n");
    replies(&[&input, b"+OK\r\n"]);
}

#[test]
fn a_deep_reply_does_not_pin_its_stack() {
    let mut framer = ReplyFramer::new();
    let mut buf = BytesMut::from(&nested(10_000, b"*1\r\n")[..]);
    assert!(framer.next_reply(&mut buf).unwrap().is_some());
    assert!(framer.open.capacity() <= KEEP_OPEN);
}

#[test]
fn split_array_keeps_deep_elements_whole() {
    let deep = nested(50_000, b"*1\r\n");
    let reply = Bytes::from([&b"*2\r\n"[..], &deep, b"$1\r\nx\r\n"].concat());
    let parts = split_array(&reply).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(&parts[0][..], &deep[..]);
    assert_eq!(&parts[1][..], b"$1\r\nx\r\n");
}

#[test]
fn malformed_replies() {
    use ProtocolError::*;
    assert_eq!(error_of(b"?x\r\n"), UnknownReplyType(b'?'));
    assert_eq!(error_of(b"*1\r\n\r\n"), UnknownReplyType(b'\r'));
    assert_eq!(error_of(b"$abc\r\n"), InvalidBulkLength);
    assert_eq!(error_of(b"$-2\r\n"), InvalidBulkLength);
    assert_eq!(error_of(b"*-2\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*x\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"$3\r\nfooXX"), ExpectedCrlf);
    assert_eq!(error_of(b"+OK\n"), ExpectedCrlf);
    assert_eq!(error_of(&[b'$'; 40]), InvalidBulkLength);
    let mut framer = ReplyFramer::new().with_max_bulk_len(4);
    let mut buf = BytesMut::from(&b"$5\r\nhello\r\n"[..]);
    assert_eq!(framer.next_reply(&mut buf), Err(InvalidBulkLength));
    let mut framer = ReplyFramer::new().with_max_bulk_len(4);
    let mut buf = BytesMut::from(&b"+hello"[..]);
    assert_eq!(framer.next_reply(&mut buf), Err(TooBigReplyLine));
}

#[test]
fn a_huge_claimed_bulk_reserves_little() {
    let mut framer = ReplyFramer::new();
    let mut buf = BytesMut::from(&b"$536870912\r\n"[..]);
    assert_eq!(framer.next_reply(&mut buf), Ok(None));
    assert!(
        buf.capacity() <= 2 * 1024 * 1024,
        "reserved {}",
        buf.capacity()
    );
}

#[test]
fn split_array_slices_elements() {
    let reply =
        Bytes::from_static(b"*4\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n:2\r\n|1\r\n+t\r\n+u\r\n_\r\n");
    let parts = split_array(&reply).unwrap();
    let parts: Vec<&[u8]> = parts.iter().map(|b| &b[..]).collect();
    assert_eq!(
        parts,
        [
            &b"$1\r\na\r\n"[..],
            b"$-1\r\n",
            b"*2\r\n:1\r\n:2\r\n",
            b"|1\r\n+t\r\n+u\r\n_\r\n"
        ]
    );
    let map = Bytes::from_static(b"%1\r\n+k\r\n:1\r\n");
    assert_eq!(split_array(&map).unwrap().len(), 2);
    let set = Bytes::from_static(b"~2\r\n+a\r\n+b\r\n");
    assert_eq!(split_array(&set).unwrap().len(), 2);
    let push = Bytes::from_static(b">1\r\n+a\r\n");
    assert_eq!(split_array(&push).unwrap().len(), 1);
    assert_eq!(split_array(&Bytes::from_static(b"*0\r\n")), Some(vec![]));
    assert_eq!(split_array(&Bytes::from_static(b"*-1\r\n")), None);
    assert_eq!(split_array(&Bytes::from_static(b"$1\r\na\r\n")), None);
    assert_eq!(split_array(&Bytes::from_static(b"*2\r\n+a\r\n")), None);
    assert_eq!(
        split_array(&Bytes::from_static(b"*1\r\n+a\r\n+b\r\n")),
        None
    );
    assert_eq!(split_array(&Bytes::from_static(b"*3000000000\r\n")), None);
    // Zero copy: the parts point into the reply.
    let first = &split_array(&reply).unwrap()[0];
    assert_eq!(first.as_ptr(), reply[4..].as_ptr());
}

/// What framing `input` produced, fed in the given pieces to a framer with `max` as its bulk
/// cap: the replies, then the error if one occurred, or else the bytes left over. With
/// `resumable_only`, every call goes straight to the state machine, never the fast path.
fn frame_pieces(
    max: usize,
    pieces: &[&[u8]],
    resumable_only: bool,
) -> (Vec<Vec<u8>>, Option<ProtocolError>, Vec<u8>) {
    let mut framer = ReplyFramer::new().with_max_bulk_len(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let next = if resumable_only {
                framer.resume(&buf)
            } else {
                framer.scan(&buf)
            };
            match next {
                Ok(Some(len)) => out.push(buf.split_to(len).to_vec()),
                Ok(None) => break,
                Err(e) => return (out, Some(e), Vec::new()),
            }
        }
    }
    (out, None, buf.to_vec())
}

/// Replies, valid and not, around what the fast path takes: one-line replies, bulk strings,
/// their malformed neighbours, and aggregates (always the state machine's).
fn corpus() -> Vec<Vec<u8>> {
    [
        &b"$3\r\nxxx\r\n"[..],
        b"+OK\r\n",
        b"+\r\n",
        b"-ERR unknown command 'x'\r\n",
        b"-MOVED 3999 127.0.0.1:6381\r\n",
        b":-42\r\n",
        b":\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"$-1\r",
        b"$-1\n",
        b"$-2\r\n",
        b"$-0\r\n",
        b"$01\r\na\r\n",
        b"$00\r\n\r\n",
        b"$+1\r\na\r\n",
        b"$abc\r\n",
        b"$\r\n",
        b"$3\r\nfooXX",
        b"$3\r\nfoo\r",
        b"$3\n\r\nfoo\r\n",
        b"$4\r\n\r\n\r\n\r\n",
        b"$5\r\nhello\r\n",
        b"$6\r\nhello\r\n",
        b"$999999999999999999\r\n",
        b"$9999999999999999999\r\n",
        b"$99999999999999999999\r\n",
        b"$000000000000000003\r\nabc\r\n",
        b"+OK\n",
        b"+OK\r",
        b"+hello\r\n",
        b"+hello world, a longer status line\r\n",
        b"+OK\r\n$3\r\nabc\r\n:1\r\n$-1\r\n-ERR x\r\n",
        b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n",
        b"%1\r\n+k\r\n:1\r\n",
        b"|1\r\n+a\r\n+b\r\n:5\r\n",
        b"_\r\n,3.14\r\n#t\r\n",
        b"?x\r\n",
    ]
    .iter()
    .map(|i| i.to_vec())
    .collect()
}

#[test]
fn fast_path_agrees_with_the_state_machine() {
    // Caps below, at and above the corpus's line and bulk lengths.
    for max in [0, 1, 2, 3, 4, 5, 6, 7, 8, 30, DEFAULT_MAX_BULK_LEN] {
        for input in corpus() {
            assert_eq!(
                frame_pieces(max, &[&input], false),
                frame_pieces(max, &[&input], true),
                "max {max} {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[test]
fn every_split_point_equals_one_piece() {
    let mut inputs = corpus();
    inputs.push(corpus().concat());
    for input in inputs {
        assert_every_split_agrees(&input, |pieces| {
            frame_pieces(DEFAULT_MAX_BULK_LEN, pieces, false)
        });
    }
}

#[test]
fn fast_path_takes_whole_simple_replies_only() {
    let max = DEFAULT_MAX_BULK_LEN;
    for reply in [
        &b"$3\r\nxxx\r\n"[..],
        b"$-1\r\n",
        b"+OK\r\n",
        b":1\r\n",
        b"-ERR x\r\n",
    ] {
        let mut input = reply.to_vec();
        input.extend_from_slice(b"+next\r\n");
        assert_eq!(whole_simple_reply(&input, max), Some(reply.len()));
        for at in 0..reply.len() {
            assert_eq!(whole_simple_reply(&reply[..at], max), None, "cut at {at}");
        }
    }
    for input in [&b"*1\r\n:1\r\n"[..], b"$01\r\na\r\n", b"_\r\n", b"$-2\r\n"] {
        assert_eq!(whole_simple_reply(input, max), None);
    }
}
