//! Framer tests: Redis 7.0.15's answers to hostile input, inline quoting, and chunking.
use super::*;
use crate::protocol::split_check::assert_every_split_agrees;

fn framer() -> RequestFramer {
    RequestFramer::new(Limits::default())
}

/// Feeds `input` in one piece and collects requests until more bytes are needed or an
/// error occurs.
fn frame_all(input: &[u8]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    frame_chunked(input, input.len().max(1))
}

fn frame_chunked(input: &[u8], chunk: usize) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut f = framer();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match f.next_request(&mut buf) {
                Ok(Some(req)) => out.push(req.args().map(<[u8]>::to_vec).collect()),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn error_of(input: &[u8]) -> ProtocolError {
    frame_all(input).1.expect("an error")
}

#[test]
fn frames_a_request_without_copying() {
    let mut f = framer();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1"[..]);
    let req = f.next_request(&mut buf).unwrap().unwrap();
    assert_eq!(&req.bytes()[..], b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    assert_eq!(
        (req.argc(), req.arg(0), req.arg(1)),
        (2, &b"GET"[..], &b"key"[..])
    );
    assert_eq!(&req.arg_bytes(1)[..], b"key");
    assert_eq!(&buf[..], b"*1");
    assert!(f.next_request(&mut buf).unwrap().is_none());
    assert!(f.is_mid_request());
}

#[test]
fn empty_lines_and_non_positive_counts_are_ignored() {
    let (reqs, err) = frame_all(b"\r\n\n*0\r\n*-10\r\n   \r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!((reqs, err), (vec![args(&["PING"])], None));
}

#[test]
fn hostile_counts() {
    use ProtocolError::*;
    assert_eq!(error_of(b"*3000000000\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*2147483648\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*abc\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*+1\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*01\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*-0\r\n"), InvalidMultibulkLength);
    assert_eq!(error_of(b"*1048577\r\n"), InvalidMultibulkLength); // over max_args
                                                                   // Within max_args is only a claim: nothing is allocated for it.
    assert_eq!(frame_all(b"*1048576\r\n"), (vec![], None));
}

#[test]
fn array_elements_must_be_bulk_strings() {
    use ProtocolError::*;
    assert_eq!(error_of(b"*1\r\nfooz\r\n"), ExpectedBulk(b'f'));
    assert_eq!(error_of(b"*1\r\n*1\r\n$1\r\na\r\n"), ExpectedBulk(b'*'));
    assert_eq!(error_of(b"*1\r\n:1\r\n"), ExpectedBulk(b':'));
    assert_eq!(error_of(b"*2\r\n$1\r\na\r\n+x\r\n"), ExpectedBulk(b'+'));
    // Judged once the element's line is complete, as Redis does.
    assert_eq!(frame_all(b"*1\r\nfoo"), (vec![], None));
}

#[test]
fn twenty_thousand_nested_headers_fail_at_the_first_inner_array() {
    let input = b"*1\r\n".repeat(20_000);
    assert_eq!(error_of(&input), ProtocolError::ExpectedBulk(b'*'));
}

#[test]
fn hostile_bulk_lengths() {
    use ProtocolError::*;
    assert_eq!(error_of(b"*1\r\n$-10\r\n"), InvalidBulkLength);
    assert_eq!(error_of(b"*1\r\n$-1\r\n"), InvalidBulkLength);
    assert_eq!(error_of(b"*1\r\n$blabla\r\n"), InvalidBulkLength);
    assert_eq!(error_of(b"*1\r\n$\r\n"), InvalidBulkLength);
    assert_eq!(error_of(b"*1\r\n$536870913\r\n"), InvalidBulkLength);
    // Exactly proto-max-bulk-len is accepted, and reserves far less than it claims.
    let mut f = framer();
    let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\n"[..]);
    assert!(f.next_request(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= 2 * RESERVE_STEP,
        "reserved {}",
        buf.capacity()
    );
}

#[test]
fn too_long_header_and_inline_lines() {
    use ProtocolError::*;
    let long = vec![b'1'; 64 * 1024 + 1];
    assert_eq!(error_of(&[b"*", &long[..]].concat()), TooBigMbulkCount);
    assert_eq!(error_of(&[b"*1\r\n$", &long[..]].concat()), TooBigBulkCount);
    assert_eq!(error_of(&[&b"a"[..], &long[..]].concat()), TooBigInline);
    // The same answer when the line ending arrives in the same read.
    assert_eq!(
        error_of(&[b"*", &long[..], b"\r\n"].concat()),
        TooBigMbulkCount
    );
    assert_eq!(
        error_of(&[&b"a"[..], &long[..], b"\r\n"].concat()),
        TooBigInline
    );
    // 64 KB before the '\n' (a '\r' included, as Redis counts it) is fine.
    let mut line = vec![b'a'; 64 * 1024 - 1];
    line.extend_from_slice(b"\r\n");
    assert_eq!(
        frame_all(&line),
        (vec![vec![line[..line.len() - 2].to_vec()]], None)
    );
    line.insert(0, b'a');
    assert_eq!(error_of(&line), TooBigInline);
}

#[test]
fn missing_crlf_is_refused() {
    use ProtocolError::*;
    assert_eq!(error_of(b"*1\r\n$3\r\nfooXY"), ExpectedCrlf);
    assert_eq!(error_of(b"*1\r\n$3\r\nfoo\r*"), ExpectedCrlf);
    assert_eq!(error_of(b"*1\rX"), ExpectedCrlf);
    assert_eq!(error_of(b"*1\r\n$3\rX"), ExpectedCrlf);
}

#[test]
fn requests_over_4_gib_are_refused() {
    let limits = Limits {
        max_bulk_len: usize::MAX,
        ..Limits::default()
    };
    let mut f = RequestFramer::new(limits);
    let mut buf = BytesMut::from(&b"*1\r\n$4294967290\r\n"[..]);
    assert_eq!(
        f.next_request(&mut buf).unwrap_err(),
        ProtocolError::TooBigRequest
    );
}

#[test]
fn inline_commands_become_resp() {
    let (reqs, err) = frame_all(b"PING\r\nset \"a b\" 'c'\nGET x\r\n");
    assert_eq!(err, None);
    assert_eq!(
        reqs,
        vec![
            args(&["PING"]),
            args(&["set", "a b", "c"]),
            args(&["GET", "x"])
        ]
    );
    let mut f = framer();
    let mut buf = BytesMut::from(&b"get  k \r\n"[..]);
    let req = f.next_request(&mut buf).unwrap().unwrap();
    assert_eq!(
        &req.bytes()[..],
        &Request::from_args(&["get", "k"]).bytes()[..]
    );
    assert_eq!(error_of(b"get \"k\r\n"), ProtocolError::UnbalancedQuotes);
}

#[test]
fn error_texts_match_redis() {
    use ProtocolError::*;
    let text = |e: ProtocolError| String::from_utf8(e.to_resp().to_vec()).unwrap();
    assert_eq!(
        text(InvalidMultibulkLength),
        "-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert_eq!(
        text(InvalidBulkLength),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    assert_eq!(
        text(ExpectedBulk(b'f')),
        "-ERR Protocol error: expected '$', got 'f'\r\n"
    );
    assert_eq!(
        text(ExpectedBulk(b'\r')),
        "-ERR Protocol error: expected '$', got ' '\r\n"
    );
    assert_eq!(
        text(TooBigInline),
        "-ERR Protocol error: too big inline request\r\n"
    );
    assert_eq!(
        text(TooBigMbulkCount),
        "-ERR Protocol error: too big mbulk count string\r\n"
    );
    assert_eq!(
        text(TooBigBulkCount),
        "-ERR Protocol error: too big bulk count string\r\n"
    );
    assert_eq!(
        text(UnbalancedQuotes),
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    assert_eq!(
        &ExpectedBulk(0xff).to_resp()[..],
        b"-ERR Protocol error: expected '$', got '\xff'\r\n"
    );
}

#[test]
fn byte_at_a_time_equals_one_shot() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*0\r\nPING\r\n");
    input.extend_from_slice(
        &Request::from_args(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"])
            .bytes()[..],
    );
    input.extend_from_slice(
        b"*-1\r\nset 'x y' \"\\x00\"\n*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\nhello\r\n",
    );
    let whole = frame_all(&input);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 5);
    assert_eq!(whole.0[2].len(), 11);
    for chunk in [1, 2, 3, 7, 16] {
        assert_eq!(frame_chunked(&input, chunk), whole, "chunk {chunk}");
    }
}

#[test]
fn three_megabyte_bulk_in_16k_chunks() {
    let value = vec![b'v'; 3 * 1024 * 1024];
    let input = Request::from_args(&[&b"SET"[..], b"k", &value])
        .bytes()
        .clone();
    let mut f = framer();
    let mut buf = BytesMut::new();
    let mut done = None;
    for piece in input.chunks(16 * 1024) {
        assert!(done.is_none());
        buf.extend_from_slice(piece);
        done = f.next_request(&mut buf).unwrap();
    }
    let req = done.expect("complete after the last chunk");
    assert_eq!(req.bytes(), &input);
    assert_eq!(req.arg(2).len(), value.len());
    assert!(buf.is_empty());
}

#[test]
fn from_args_encodes_resp_and_spills_past_inline_offsets() {
    let req = Request::from_args(&["SET", "k", ""]);
    assert_eq!(
        &req.bytes()[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    );
    let many: Vec<String> = (0..20).map(|i| format!("arg{i}")).collect();
    let req = Request::from_args(&many);
    assert_eq!(req.argc(), 20);
    assert_eq!(req.arg(19), b"arg19");
    let (reqs, _) = frame_all(req.bytes());
    assert_eq!(reqs[0].len(), 20);
    assert_eq!(Request::from_args::<&str>(&[]).bytes().as_ref(), b"*0\r\n");
}

#[test]
fn parse_int_matches_string2ll() {
    assert_eq!(parse_int(b"0"), Some(0));
    assert_eq!(parse_int(b"-1"), Some(-1));
    assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"00",
        b"01",
        b" 1",
        b"1 ",
        b"+1",
        b"9223372036854775808",
    ] {
        assert_eq!(parse_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// What framing `input` produced: each request's bytes and arguments, then the error if one
/// occurred, or else what was left in the buffer (after an error the connection is closed).
type Outcome = (Vec<(Vec<u8>, Vec<Vec<u8>>)>, Option<ProtocolError>, Vec<u8>);

/// Frames `input` arriving in the given pieces. With `resumable_only`, every call goes straight
/// to the state machine, never through the whole-request fast path.
fn frame_pieces(limits: Limits, pieces: &[&[u8]], resumable_only: bool) -> Outcome {
    let mut f = RequestFramer::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let next = if resumable_only {
                f.resume(&mut buf)
            } else {
                f.next_request(&mut buf)
            };
            match next {
                Ok(Some(req)) => out.push((
                    req.bytes().to_vec(),
                    req.args().map(<[u8]>::to_vec).collect(),
                )),
                Ok(None) => break,
                Err(e) => return (out, Some(e), Vec::new()),
            }
        }
    }
    (out, None, buf.to_vec())
}

/// Valid and invalid input for comparing the fast path with the state machine: the hostile
/// cases tested above, numbers at the edges of what the fast path parses, and ordinary traffic.
fn corpus() -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = [
        &b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n"[..],
        b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\nhello\r\n",
        b"*1\r\n$4\r\n\r\n\r\n\r\n",
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1",
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        b"\r\n\n*0\r\n*-10\r\n   \r\n*1\r\n$4\r\nPING\r\n",
        b"*3000000000\r\n",
        b"*2147483648\r\n",
        b"*2147483647\r\n",
        b"*abc\r\n",
        b"*\r\n",
        b"*+1\r\n",
        b"*01\r\n$1\r\na\r\n",
        b"*-0\r\n",
        b"*0\r\n",
        b"*-1\r\n*1\r\n$1\r\na\r\n",
        b"*1048577\r\n",
        b"*1048576\r\n",
        b"*1\r\nfooz\r\n",
        b"*1\r\n*1\r\n$1\r\na\r\n",
        b"*1\r\n:1\r\n",
        b"*2\r\n$1\r\na\r\n+x\r\n",
        b"*1\r\n$-10\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$blabla\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$01\r\na\r\n",
        b"*1\r\n$00\r\n\r\n",
        b"*1\r\n$+1\r\na\r\n",
        b"*1\r\n$536870913\r\n",
        b"*1\r\n$536870912\r\n",
        b"*1\r\n$3\r\nfooXY",
        b"*1\r\n$3\r\nfoo\r*",
        b"*1\r\n$3\r\nfoo\n\r",
        b"*1\rX",
        b"*1\n$1\r\na\r\n",
        b"*1\r\n$3\rX",
        b"*1\r\n$1 \r\na\r\n",
        b"*1 \r\n$1\r\na\r\n",
        b"*1\r\n$1\r\nab\r\n",
        b"*2\r\n$1\r\na\r\n",
        b"*1\r\n$000000000000000001\r\na\r\n",
        b"*1\r\n$999999999999999999\r\n",
        b"*1\r\n$9999999999999999999\r\n",
        b"*1\r\n$99999999999999999999\r\n",
        b"*999999999999999999\r\n",
        b"*9999999999999999999\r\n",
        b"*99999999999999999999999\r\n",
        b"get  k \r\n*1\r\n$1\r\na\r\n",
    ]
    .iter()
    .map(|i| i.to_vec())
    .collect();
    // More arguments than fit inline, whole and cut short.
    let many: Vec<String> = (0..20).map(|i| format!("arg{i}")).collect();
    let many = Request::from_args(&many).bytes().to_vec();
    inputs.push(many[..many.len() - 3].to_vec());
    inputs.push(many);
    // Header lines around the 64 KB line limit.
    for n in [64 * 1024 - 2, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1] {
        inputs.push([&b"*"[..], &vec![b'1'; n], b"\r\n"].concat());
        inputs.push([&b"*1\r\n$"[..], &vec![b'1'; n], b"\r\n"].concat());
    }
    inputs
}

/// Limits that put every check of the corpus on both sides of its edge.
fn limit_sets() -> Vec<Limits> {
    vec![
        Limits::default(),
        Limits {
            max_bulk_len: 3,
            max_args: 2,
            max_inline_len: 3,
        },
        Limits {
            max_bulk_len: 4,
            max_args: 3,
            max_inline_len: 4,
        },
        Limits {
            max_bulk_len: 16,
            max_args: 1,
            max_inline_len: 2,
        },
    ]
}

#[test]
fn fast_path_agrees_with_the_state_machine() {
    for limits in limit_sets() {
        for input in corpus() {
            let fast = frame_pieces(limits, &[&input], false);
            let slow = frame_pieces(limits, &[&input], true);
            assert_eq!(
                fast,
                slow,
                "{limits:?} {:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
        }
    }
}

#[test]
fn every_split_point_equals_one_piece() {
    let limits = Limits::default();
    let mut inputs = corpus();
    inputs.retain(|i| i.len() < 1000);
    inputs.push(corpus()[..6].concat());
    for input in inputs {
        assert_every_split_agrees(&input, |pieces| frame_pieces(limits, pieces, false));
    }
}

#[test]
fn fast_path_frames_whole_ordinary_requests_only() {
    let limits = Limits::default();
    let get = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n*1";
    let (len, spans) = frame_whole(get, &limits).expect("a whole GET");
    assert_eq!(
        (len, spans.as_slice()),
        (get.len() - 2, &[(8, 11), (18, 34)][..])
    );
    let many: Vec<String> = (0..20).map(|i| format!("arg{i}")).collect();
    let many = Request::from_args(&many);
    let (len, spans) = frame_whole(many.bytes(), &limits).expect("a whole 20-arg request");
    assert_eq!((len, spans.as_slice().len()), (many.bytes().len(), 20));
    // Cut short anywhere, or anything the state machine must judge: left to it.
    for at in 0..get.len() - 2 {
        assert!(frame_whole(&get[..at], &limits).is_none(), "cut at {at}");
    }
    for input in [
        &b"*0\r\n"[..],
        b"*-1\r\n",
        b"*1\r\n$01\r\na\r\n",
        b"*1\r\n:1\r\n",
    ] {
        assert!(frame_whole(input, &limits).is_none());
    }
}
