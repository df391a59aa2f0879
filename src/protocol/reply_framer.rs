//! Incremental framing of RESP2/RESP3 replies from cluster nodes.
//!
//! This module owns finding where one reply from a node ends, so the backend connection can hand
//! each pending request exactly its reply as raw, zero-copy `Bytes` (replies are forwarded as the
//! node sent them). It understands every RESP2 and RESP3 type, nests to any depth with an explicit
//! stack of remaining element counts instead of recursion, and attaches a RESP3 attribute (`|`)
//! to the value it annotates. The common replies (a whole `+`/`-`/`:` line or `$` bulk string
//! already in the buffer) are framed by a fast path that hands anything else to the state
//! machine untouched. [`split_array`] cuts a framed aggregate into its elements for the
//! replies the proxy has to merge (MGET across slots).
//!
//! Nodes are trusted more than clients, but not blindly: bulk lengths are capped, and a length
//! header never causes more allocation than the bytes that arrived. Nesting depth is not capped:
//! a client can make a node answer as deep as it likes (a self-referencing Lua table comes back
//! as ~8,000 nested arrays), and refusing such a reply would drop the shared connection and
//! every other client's requests on it. Depth costs no recursion, only one [`Open`] entry per
//! level, and every level costs at least 4 bytes of input (`*1\r\n`), so the stack stays
//! proportional to the reply's bytes, which the connection buffers anyway.
use super::framer::{find_byte, parse_int, parse_len_line, reserve_toward, ProtocolError};
use bytes::{Bytes, BytesMut};

/// Redis's proto-max-bulk-len default; a node never sends a longer string unless reconfigured.
const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// Capacity of the stack of open aggregates kept between replies: after a deeply nested reply,
/// a larger stack is given back, so one deep reply does not pin memory on a long-lived
/// connection.
const KEEP_OPEN: usize = 64;

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
        // The common case first: a whole one-line reply or bulk string. Tried only before
        // anything of the reply was examined, so each byte is looked at by this fast path at
        // most once and the total work stays linear.
        if self.pos == 0 && self.scanned == 0 && self.bulk_end.is_none() && self.open.is_empty() {
            if let Some(len) = whole_simple_reply(buf, self.max_bulk_len) {
                return Ok(Some(len));
            }
        }
        self.resume(buf)
    }

    /// The resumable state machine behind [`ReplyFramer::scan`]: every type, nesting, chunking
    /// and error. Kept out of line so the fast path's caller stays small.
    #[inline(never)]
    fn resume(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
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
        if self.open.capacity() > KEEP_OPEN {
            self.open = Vec::new();
        }
        len
    }
}

/// The length of the reply at the front of `buf` if it is a whole `+`, `-` or `:` line, a whole
/// `$` bulk string with a plain length (digits only, as [`parse_len_line`] reads them), or
/// `$-1`, and the state machine would accept it as is. `None` for anything else, incomplete or
/// malformed, which the state machine then frames from the start and judges: this path never
/// reports an error or keeps state.
fn whole_simple_reply(buf: &[u8], max_bulk_len: usize) -> Option<usize> {
    match *buf.first()? {
        b'+' | b'-' | b':' => {
            // The state machine's checks: the line ends with "\r\n" (`buf[0]` is no '\r') and,
            // counted from its type byte to the '\n', is no longer than the cap.
            let nl = find_byte(buf, 1, b'\n')?;
            (buf[nl - 1] == b'\r' && nl <= max_bulk_len).then_some(nl + 1)
        }
        b'$' if buf.starts_with(b"$-1\r\n") => Some(5),
        b'$' => {
            let (len, data) = parse_len_line(buf, 1)?;
            if len > max_bulk_len as u64 {
                return None;
            }
            let end = data + len as usize; // at most max_bulk_len
            (buf.get(end..end + 2)? == b"\r\n").then_some(end + 2)
        }
        _ => None,
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
    // Whatever framed `reply` accepted it; no element can be longer than the reply.
    let mut framer = ReplyFramer::new().with_max_bulk_len(reply.len());
    for _ in 0..count {
        let len = framer.scan(&reply[pos..]).ok()??;
        elements.push(reply.slice(pos..pos + len));
        pos += len;
    }
    (pos == reply.len()).then_some(elements)
}

#[cfg(test)]
mod tests;
