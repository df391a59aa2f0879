//! Incremental framing of RESP2/RESP3 replies from cluster nodes.
//!
//! This module owns finding where one reply from a node ends, so the backend connection can hand
//! each pending request exactly its reply as raw, zero-copy `Bytes` (replies are forwarded as the
//! node sent them). It understands every RESP2 and RESP3 type, nests to any depth with an explicit
//! stack of remaining element counts instead of recursion, and attaches a RESP3 attribute (`|`)
//! to the value it annotates. [`split_array`] cuts a framed aggregate into its elements for the
//! replies the proxy has to merge (MGET across slots).
//!
//! Nodes are trusted more than clients, but not blindly: bulk lengths and nesting depth are
//! capped, and a length header never causes more allocation than the bytes that arrived.
use super::framer::{find_byte, parse_int, reserve_toward, ProtocolError};
use bytes::{Bytes, BytesMut};

/// Redis's proto-max-bulk-len default; a node never sends a longer string unless reconfigured.
const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// Deeper than any reply Redis builds (its own RESP3 nesting stays in the single digits), small
/// enough that the stack of counts stays tiny.
const DEFAULT_MAX_DEPTH: usize = 1024;

/// Longest header line of a length or count (`$`, `*`, ...) including the type byte: 20 digits
/// and a sign fit; anything longer cannot be a valid length.
const MAX_HEADER_LINE: usize = 32;

/// An aggregate whose elements are still arriving.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Elements still to come (a map of N pairs counts 2N).
    left: u64,
    /// An attribute map: when it completes, the value it annotates is still to come, so it does
    /// not count as an element of its parent.
    attribute: bool,
}

/// Finds complete replies (any RESP2/RESP3 type, nested, attributes attached to the value that
/// follows them) in a node's input, resuming where the last call stopped.
///
/// The caller may only append to the buffer between calls. After an error the connection is
/// broken; the framer's state is then meaningless.
#[derive(Debug)]
pub struct ReplyFramer {
    max_bulk_len: usize,
    max_depth: usize,
    /// Where the next element's type byte is, from the start of the buffer (= of the reply).
    pos: usize,
    /// `buf[pos..scanned]` holds no `\n`: where the search for the line end resumes.
    scanned: usize,
    /// Set while awaiting a bulk body that ends at this offset (its `\r\n` follows).
    bulk_end: Option<usize>,
    /// The aggregates the current element is nested in, innermost last.
    open: Vec<Open>,
}

impl Default for ReplyFramer {
    fn default() -> Self {
        ReplyFramer::new()
    }
}

impl ReplyFramer {
    pub fn new() -> Self {
        ReplyFramer {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
            pos: 0,
            scanned: 0,
            bulk_end: None,
            open: Vec::new(),
        }
    }

    /// Caps bulk strings (`$`, `=`, `!`) and simple lines at `max` bytes (default 512 MB, match
    /// the nodes' proto-max-bulk-len).
    pub fn with_max_bulk_len(mut self, max: usize) -> Self {
        self.max_bulk_len = max;
        self
    }

    /// Caps nesting depth (default 1024); attributes count as a level.
    pub fn with_max_depth(mut self, max: usize) -> Self {
        self.max_depth = max;
        self
    }

    /// Splits the next complete reply off the front of `buf`; `Ok(None)` means more bytes needed.
    pub fn next_reply(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        match self.scan(buf)? {
            Some(len) => Ok(Some(buf.split_to(len).freeze())),
            None => {
                if let Some(end) = self.bulk_end {
                    reserve_toward(buf, end + 2);
                }
                Ok(None)
            }
        }
    }

    /// Length of the complete reply at the front of `buf`, or `None` if it is not all there yet
    /// (the progress made is kept for the next call, which must see the same bytes and more).
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            if let Some(end) = self.bulk_end {
                // Waiting for a body is a length check, not a scan.
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError::ExpectedCrlf);
                }
                self.bulk_end = None;
                if self.value_done(end + 2) {
                    return Ok(Some(self.finish()));
                }
                continue;
            }
            let start = self.pos;
            let Some(&kind) = buf.get(start) else {
                return Ok(None);
            };
            let (max_line, too_long) = match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    (self.max_bulk_len, ProtocolError::TooBigReplyLine)
                }
                b'$' | b'=' | b'!' => (MAX_HEADER_LINE, ProtocolError::InvalidBulkLength),
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    (MAX_HEADER_LINE, ProtocolError::InvalidMultibulkLength)
                }
                other => return Err(ProtocolError::UnknownReplyType(other)),
            };
            let Some(nl) = find_byte(buf, self.scanned, b'\n') else {
                if buf.len() - start > max_line {
                    return Err(too_long);
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            // Checked on the line's length, not on what happened to arrive: chunking never
            // changes the outcome.
            if nl - start > max_line {
                return Err(too_long);
            }
            // `buf[start]` is a type byte, so `nl > start`: the line is at least "X\n".
            if buf[nl - 1] != b'\r' || nl - 1 == start {
                return Err(ProtocolError::ExpectedCrlf);
            }
            let line = &buf[start + 1..nl - 1];
            let next = nl + 1;
            match kind {
                b'$' | b'=' | b'!' => {
                    let len = parse_int(line).ok_or(ProtocolError::InvalidBulkLength)?;
                    if len == -1 {
                        // RESP2 null bulk string: no body.
                        if self.value_done(next) {
                            return Ok(Some(self.finish()));
                        }
                    } else if len < 0 || len as u64 > self.max_bulk_len as u64 {
                        return Err(ProtocolError::InvalidBulkLength);
                    } else {
                        self.bulk_end = Some(next + len as usize);
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let count = parse_int(line)
                        .filter(|&n| n >= -1)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    // -1 is RESP2's null array; like 0 it has no elements.
                    let count = count.max(0) as u64;
                    let elements = if matches!(kind, b'%' | b'|') {
                        count * 2
                    } else {
                        count
                    };
                    let attribute = kind == b'|';
                    if elements > 0 {
                        if self.open.len() >= self.max_depth {
                            return Err(ProtocolError::TooDeepReply);
                        }
                        self.open.push(Open {
                            left: elements,
                            attribute,
                        });
                        self.pos = next;
                        self.scanned = next;
                    } else if attribute {
                        // An empty attribute still annotates the value that follows.
                        self.pos = next;
                        self.scanned = next;
                    } else if self.value_done(next) {
                        return Ok(Some(self.finish()));
                    }
                }
                // A one-line value: simple string, error, integer, null, double, boolean, big
                // number.
                _ => {
                    if self.value_done(next) {
                        return Ok(Some(self.finish()));
                    }
                }
            }
        }
    }

    /// Records that a value ended just before `next`; true when that completes the whole reply.
    fn value_done(&mut self, next: usize) -> bool {
        self.pos = next;
        self.scanned = next;
        while let Some(top) = self.open.last_mut() {
            top.left -= 1;
            if top.left > 0 {
                return false;
            }
            let attribute = top.attribute;
            self.open.pop();
            if attribute {
                // The attribute map is complete; the value it annotates comes next and counts
                // for the parent instead.
                return false;
            }
        }
        true
    }

    /// Ends the current reply: its length, with the state reset for the next one.
    fn finish(&mut self) -> usize {
        let len = self.pos;
        self.pos = 0;
        self.scanned = 0;
        len
    }
}

/// Splits a complete aggregate reply (`*` array, `~` set, `>` push, or `%` map as key, value,
/// key, value...) into its elements, each a zero-copy slice of `reply`. `None` for anything else,
/// including a null array, a reply starting with an attribute, or malformed bytes.
pub fn split_array(reply: &Bytes) -> Option<Vec<Bytes>> {
    let kind = *reply.first()?;
    if !matches!(kind, b'*' | b'~' | b'>' | b'%') {
        return None;
    }
    let nl = find_byte(reply, 0, b'\n')?;
    if nl < 2 || reply[nl - 1] != b'\r' {
        return None;
    }
    let count = u64::try_from(parse_int(&reply[1..nl - 1])?).ok()?;
    let count = if kind == b'%' { count * 2 } else { count };
    let mut pos = nl + 1;
    // The count is a claim: each element takes at least 3 bytes ("_\r\n"), so no more can fit.
    let capacity = (count as usize).min((reply.len() - pos) / 3);
    let mut elements = Vec::with_capacity(capacity);
    // Whatever framed `reply` accepted it; no element can be longer or deeper than the reply.
    let mut framer = ReplyFramer::new()
        .with_max_bulk_len(reply.len())
        .with_max_depth(reply.len());
    for _ in 0..count {
        let len = framer.scan(&reply[pos..]).ok()??;
        elements.push(reply.slice(pos..pos + len));
        pos += len;
    }
    (pos == reply.len()).then_some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let input = b"*1\r\n".repeat(20_000);
        assert_eq!(error_of(&input), ProtocolError::TooDeepReply);
        // Up to the cap is fine.
        let mut ok = b"*1\r\n".repeat(DEFAULT_MAX_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        replies(&[&ok]);
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
        let reply = Bytes::from_static(
            b"*4\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n:2\r\n|1\r\n+t\r\n+u\r\n_\r\n",
        );
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
}
