//! Incremental, bounded framing of client requests: RESP arrays of bulk strings and inline
//! commands, with Redis 7.0.15's error strings.
//!
//! This module owns the boundary between a client's raw bytes and [`Request`]s: it decides where
//! one request ends, enforces the [`Limits`] before anything is allocated (a length header is a
//! claim, not a fact), and turns inline commands (`PING\r\n`) into forwardable RESP.
//!
//! Framing is resumable: [`RequestFramer`] remembers how far it scanned the request under
//! construction, so the work is linear in the bytes received however they are chunked. The
//! common case, a whole ordinary request already in the buffer, is framed by a fast path in one
//! pass (`frame_whole`) that hands anything unusual to the state machine untouched. A request
//! is cut off the buffer with `split_to(..).freeze()`: its bytes are never copied, and its
//! arguments are `(start, end)` offsets into them.
use super::inline;
use super::reply::put_header;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Limits a client's input must respect; checked before anything is allocated.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string accepted (Redis: proto-max-bulk-len, 512 MB).
    pub max_bulk_len: usize,
    /// Largest element count of one request array.
    pub max_args: usize,
    /// Longest inline command line, and longest `*`/`$` header line (Redis: 64 KB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A protocol error; the client gets `-ERR Protocol error: {self}` and is closed.
///
/// The first variants are Redis 7.0.15's own texts; the others cover cases Redis does not reject
/// (or has no text for) and the reply side of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// Redis prints the byte as is, but replaces CR and LF by spaces to keep its reply valid.
    #[error("expected '$', got '{}'", shown(*.0))]
    ExpectedBulk(u8),
    #[error("too big inline request")]
    TooBigInline,
    #[error("too big mbulk count string")]
    TooBigMbulkCount,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `$` header line longer than the inline limit (Redis's text).
    #[error("too big bulk count string")]
    TooBigBulkCount,
    /// A header line or bulk body not followed by `\r\n`. Redis skips those two bytes unchecked;
    /// a proxy that re-frames the stream must not guess, so it refuses.
    #[error("expected '\\r\\n'")]
    ExpectedCrlf,
    /// A request that would not fit the 32-bit argument offsets (over 4 GiB).
    #[error("too big request")]
    TooBigRequest,
    /// A reply starting with a byte that is no RESP2/RESP3 type.
    #[error("unknown reply type '{}'", shown(*.0))]
    UnknownReplyType(u8),
    /// A simple reply line (`+`, `-`, `:`, ...) longer than the reply framer's bulk cap.
    #[error("too big reply line")]
    TooBigReplyLine,
}

/// How a byte appears in an error text: as Redis does, CR and LF become spaces so the error stays
/// one RESP line.
fn shown(b: u8) -> char {
    match b {
        b'\r' | b'\n' => ' ',
        _ => b as char,
    }
}

impl ProtocolError {
    /// The exact reply Redis sends for this error: `-ERR Protocol error: ...\r\n`. Unlike
    /// `Display`, a non-ASCII byte in [`ProtocolError::ExpectedBulk`] is written raw, not as UTF-8.
    pub fn to_resp(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_slice(b"-ERR Protocol error: ");
        match *self {
            ProtocolError::ExpectedBulk(b) => {
                out.put_slice(b"expected '$', got '");
                out.put_u8(if shown(b) == ' ' { b' ' } else { b });
                out.put_u8(b'\'');
            }
            ref other => out.put_slice(other.to_string().as_bytes()),
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

/// One argument's `(start, end)` byte range within [`Request::bytes`].
type Span = (u32, u32);

/// Requests with at most this many arguments keep their offsets inline (no heap allocation);
/// that covers nearly all traffic (GET, SET with options, HSET with a few fields, ...).
const INLINE_ARGS: usize = 8;

/// Redis 7.0 pre-sizes argv for at most 1024 arguments whatever `*N` claims; so do we.
const MAX_PREALLOC_ARGS: usize = 1024;

/// Argument offsets: inline up to [`INLINE_ARGS`], then a `Vec`.
#[derive(Debug, Clone)]
enum Spans {
    Inline { len: u8, spans: [Span; INLINE_ARGS] },
    Heap(Vec<Span>),
}

impl Default for Spans {
    fn default() -> Self {
        Spans::Inline {
            len: 0,
            spans: [(0, 0); INLINE_ARGS],
        }
    }
}

impl Spans {
    /// Empty, sized for `expected` arguments (a claim: pre-allocation is capped).
    fn for_count(expected: usize) -> Spans {
        if expected <= INLINE_ARGS {
            Spans::default()
        } else {
            Spans::Heap(Vec::with_capacity(expected.min(MAX_PREALLOC_ARGS)))
        }
    }

    #[inline]
    fn push(&mut self, span: Span) {
        match self {
            Spans::Inline { len, spans } if (*len as usize) < INLINE_ARGS => {
                spans[*len as usize] = span;
                *len += 1;
            }
            _ => self.push_spilled(span),
        }
    }

    /// [`Spans::push`] past the inline capacity: moves to (or grows) the `Vec`.
    fn push_spilled(&mut self, span: Span) {
        match self {
            Spans::Inline { spans, .. } => {
                let mut v = Vec::with_capacity(INLINE_ARGS * 2);
                v.extend_from_slice(spans);
                v.push(span);
                *self = Spans::Heap(v);
            }
            Spans::Heap(v) => v.push(span),
        }
    }

    fn as_slice(&self) -> &[Span] {
        match self {
            Spans::Inline { len, spans } => &spans[..*len as usize],
            Spans::Heap(v) => v,
        }
    }
}

/// One complete request. `bytes` is always a RESP array of bulk strings (inline commands are
/// re-encoded), so it can be forwarded as-is; arguments are views into it.
#[derive(Debug, Clone)]
pub struct Request {
    bytes: Bytes,
    args: Spans,
}

impl Request {
    /// Builds a request from arguments (used for requests the proxy makes itself).
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        encode(args.iter().map(AsRef::as_ref))
    }
    /// The exact bytes to forward.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn argc(&self) -> usize {
        self.args.as_slice().len()
    }
    /// Argument `i`; panics if out of range.
    pub fn arg(&self, i: usize) -> &[u8] {
        let (s, e) = self.args.as_slice()[i];
        &self.bytes[s as usize..e as usize]
    }
    /// Argument `i` as a zero-copy `Bytes`.
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        let (s, e) = self.args.as_slice()[i];
        self.bytes.slice(s as usize..e as usize)
    }
    /// All arguments in order (the command name first).
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args
            .as_slice()
            .iter()
            .map(|&(s, e)| &self.bytes[s as usize..e as usize])
    }
}

/// Converts an offset known to be below `u32::MAX` (checked where requests are framed; requests
/// built with [`Request::from_args`] are the proxy's own and far smaller).
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("request offsets fit in u32")
}

/// Number of decimal digits of `n`.
fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Parses a decimal integer exactly as Redis's `string2ll` does: optional `-`, no `+`, no
/// leading zeros (except `0` itself), no spaces, at most 20 characters, no overflow.
pub(crate) fn parse_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// Position of the first `needle` in `buf[from..]`, as an index into `buf`. `#[inline]`: the
/// reply framer calls it too (see [`parse_len_line`]).
#[inline]
pub(crate) fn find_byte(buf: &[u8], from: usize, needle: u8) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|i| i + from)
}

/// Never reserve more than this for a bulk in one step unless that much has already arrived.
const RESERVE_STEP: usize = 1024 * 1024;

/// Spare capacity below which a buffer awaiting a known-size body is grown.
const RESERVE_LOW_WATER: usize = 64 * 1024;

/// Makes room in `buf` toward `need` bytes in total, for a body whose size a header announced.
/// Growth is geometric (by what has actually arrived, or [`RESERVE_STEP`]) and never beyond
/// `need`, so a header lying about 512 MB costs at most a megabyte, and a true big body is
/// copied O(1) times per byte.
pub(crate) fn reserve_toward(buf: &mut BytesMut, need: usize) {
    let missing = need.saturating_sub(buf.len());
    let spare = buf.capacity() - buf.len();
    if spare >= missing || spare >= RESERVE_LOW_WATER {
        return;
    }
    buf.reserve(missing.min(buf.len().max(RESERVE_STEP)));
}

/// Where the framer stands in the request at the front of the buffer. Offsets are from the start
/// of the buffer, which is the start of that request: the buffer is only cut at request
/// boundaries.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Nothing of the next request examined yet.
    Idle,
    /// In the `*N` line; `buf[..scanned]` holds no `\r`.
    Count { scanned: usize },
    /// In the `$len` line of an argument that starts at `start`; `buf[start..scanned]` holds no
    /// `\r`. `left` counts the arguments still to come, this one included.
    BulkHeader {
        start: usize,
        scanned: usize,
        left: u32,
    },
    /// Awaiting the body `buf[data..end]` and its `\r\n`.
    BulkBody { data: usize, end: usize, left: u32 },
    /// In an inline command line; `buf[..scanned]` holds no `\n`.
    Inline { scanned: usize },
}

/// Finds complete requests in a client's input buffer, resuming where the last call stopped.
///
/// The caller may only append to the buffer between calls. After an error the connection is
/// closed; the framer's state is then meaningless.
#[derive(Debug)]
pub struct RequestFramer {
    limits: Limits,
    state: State,
    /// Offsets of the arguments of the request under construction.
    spans: Spans,
    /// Reused scratch for splitting inline commands.
    inline: inline::Scratch,
}

impl RequestFramer {
    pub fn new(limits: Limits) -> Self {
        RequestFramer {
            limits,
            state: State::Idle,
            spans: Spans::default(),
            inline: inline::Scratch::default(),
        }
    }

    /// The limits this framer enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when part of a request has been examined and the rest is awaited (for idle-timeout
    /// and shutdown decisions: a client mid-request is not idle between requests).
    pub fn is_mid_request(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Splits the next complete request off the front of `buf`. `Ok(None)` means more bytes are
    /// needed. Empty lines, `*0` and negative counts are skipped, as Redis does.
    pub fn next_request(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        // The common case first: a whole, ordinary request is already in the buffer. Tried only
        // at the start of a request, before anything of it was examined, so each byte is looked
        // at by this fast path at most once and the total work stays linear.
        if matches!(self.state, State::Idle) && buf.first() == Some(&b'*') {
            if let Some((len, args)) = frame_whole(buf, &self.limits) {
                let bytes = buf.split_to(len).freeze();
                return Ok(Some(Request { bytes, args }));
            }
        }
        self.resume(buf)
    }

    /// The resumable state machine: handles every input, however chunked, and every error.
    /// Kept out of line so the fast path's caller stays small.
    #[inline(never)]
    fn resume(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let max_line = self.limits.max_inline_len;
        loop {
            match self.state {
                State::Idle => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => self.state = State::Count { scanned: 1 },
                    Some(_) => self.state = State::Inline { scanned: 0 },
                },
                State::Count { scanned } => {
                    // Redis looks for '\r' and complains only when over 64 KB have arrived
                    // without one; comparing the line's length instead gives the same answer
                    // however the bytes are chunked.
                    let Some(cr) = find_byte(buf, scanned, b'\r') else {
                        if buf.len() > max_line {
                            return Err(ProtocolError::TooBigMbulkCount);
                        }
                        self.state = State::Count { scanned: buf.len() };
                        return Ok(None);
                    };
                    if cr > max_line {
                        return Err(ProtocolError::TooBigMbulkCount);
                    }
                    if cr + 1 >= buf.len() {
                        self.state = State::Count { scanned: cr };
                        return Ok(None);
                    }
                    let count = parse_int(&buf[1..cr])
                        .filter(|&n| n <= i64::from(i32::MAX) && n <= self.limits.max_args as i64)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if buf[cr + 1] != b'\n' {
                        return Err(ProtocolError::ExpectedCrlf);
                    }
                    if count <= 0 {
                        buf.advance(cr + 2);
                        self.state = State::Idle;
                        continue;
                    }
                    self.spans = Spans::for_count(count as usize);
                    self.state = State::BulkHeader {
                        start: cr + 2,
                        scanned: cr + 2,
                        left: count as u32,
                    };
                }
                State::BulkHeader {
                    start,
                    scanned,
                    left,
                } => {
                    let Some(cr) = find_byte(buf, scanned, b'\r') else {
                        if buf.len() - start > max_line {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        self.state = State::BulkHeader {
                            start,
                            scanned: buf.len(),
                            left,
                        };
                        return Ok(None);
                    };
                    if cr - start > max_line {
                        return Err(ProtocolError::TooBigBulkCount);
                    }
                    if cr + 1 >= buf.len() {
                        self.state = State::BulkHeader {
                            start,
                            scanned: cr,
                            left,
                        };
                        return Ok(None);
                    }
                    // Like Redis, the element type is judged once its whole line is there.
                    if buf[start] != b'$' {
                        return Err(ProtocolError::ExpectedBulk(buf[start]));
                    }
                    let len = parse_int(&buf[start + 1..cr])
                        .filter(|&n| n >= 0 && n as u64 <= self.limits.max_bulk_len as u64)
                        .ok_or(ProtocolError::InvalidBulkLength)?
                        as usize;
                    if buf[cr + 1] != b'\n' {
                        return Err(ProtocolError::ExpectedCrlf);
                    }
                    let data = cr + 2;
                    let end = data + len;
                    if end + 2 > u32::MAX as usize {
                        return Err(ProtocolError::TooBigRequest);
                    }
                    self.state = State::BulkBody { data, end, left };
                }
                State::BulkBody { data, end, left } => {
                    // Waiting for a body is a length check, not a scan.
                    if buf.len() < end + 2 {
                        reserve_toward(buf, end + 2);
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(ProtocolError::ExpectedCrlf);
                    }
                    self.spans.push((data as u32, end as u32));
                    let next = end + 2;
                    if left == 1 {
                        self.state = State::Idle;
                        let bytes = buf.split_to(next).freeze();
                        let args = std::mem::take(&mut self.spans);
                        return Ok(Some(Request { bytes, args }));
                    }
                    self.state = State::BulkHeader {
                        start: next,
                        scanned: next,
                        left: left - 1,
                    };
                }
                State::Inline { scanned } => {
                    let Some(nl) = find_byte(buf, scanned, b'\n') else {
                        if buf.len() > max_line {
                            return Err(ProtocolError::TooBigInline);
                        }
                        self.state = State::Inline { scanned: buf.len() };
                        return Ok(None);
                    };
                    if nl > max_line {
                        return Err(ProtocolError::TooBigInline);
                    }
                    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
                        nl - 1
                    } else {
                        nl
                    };
                    let request = self.inline.split_line(&buf[..line_end])?;
                    buf.advance(nl + 1);
                    self.state = State::Idle;
                    if let Some(request) = request {
                        return Ok(Some(request));
                    }
                }
            }
        }
    }
}

/// Longest length or count the fast path parses: 18 digits cannot overflow a `u64`, and no
/// limit comes near that. Longer numbers (valid or not) are left to [`parse_int`].
const FAST_MAX_DIGITS: usize = 18;

/// Frames a whole multibulk request in one go, if `buf` starts with one that is complete and
/// ordinary: `*N` with 1 <= N, then N `$len` bulk strings, every number plain digits (no sign,
/// no leading zero, at most [`FAST_MAX_DIGITS`]) within the limits, every line ended by `\r\n`.
/// Returns its length and argument offsets.
///
/// Anything else, incomplete or malformed, is `None`, and [`RequestFramer::resume`] frames it
/// from the start: this path never reports an error or keeps state, it only skips the state
/// machine's bookkeeping (one scan per header for `\r`, then a parse of the same bytes, and a
/// state transition per line) for what the state machine would accept anyway.
fn frame_whole(buf: &[u8], limits: &Limits) -> Option<(usize, Spans)> {
    let (count, mut pos) = parse_len_line(buf, 1)?;
    // The same checks as the state machine's, in the same units: `pos - 2` is where the line's
    // '\r' is, which is also its length from the start of the buffer.
    if count == 0
        || pos - 2 > limits.max_inline_len
        || count > limits.max_args as u64
        || count > i32::MAX as u64
    {
        return None;
    }
    let count = count as usize; // at most i32::MAX
                                // Each argument takes at least 6 bytes (`$0\r\n\r\n`): a count that cannot fit in what has
                                // arrived means an incomplete request, known before anything is allocated for it.
    if count > (buf.len() - pos) / 6 {
        return None;
    }
    let mut spans = Spans::for_count(count);
    for _ in 0..count {
        if buf.get(pos) != Some(&b'$') {
            return None;
        }
        let (len, data) = parse_len_line(buf, pos + 1)?;
        if data - 2 - pos > limits.max_inline_len || len > limits.max_bulk_len as u64 {
            return None;
        }
        let end = data + len as usize; // at most max_bulk_len
        if end + 2 > u32::MAX as usize || buf.get(end..end + 2) != Some(b"\r\n") {
            return None;
        }
        spans.push((data as u32, end as u32));
        pos = end + 2;
    }
    Some((pos, spans))
}

/// Parses the plain decimal number at `buf[at..]` that ends with `\r\n`: the value and where
/// the next line starts. `None` for no digits, a leading zero (other than `0` itself), more
/// than [`FAST_MAX_DIGITS`] digits, any other byte before the `\r\n`, or a line not complete.
///
/// `#[inline]` because the reply framer calls it too, and with several codegen units a call
/// across them is otherwise never inlined (a call and return cost as much as the parse).
#[inline]
pub(crate) fn parse_len_line(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let stop = buf.len().min(at + FAST_MAX_DIGITS + 1);
    let mut value: u64 = 0;
    let mut i = at;
    while i < stop && buf[i].is_ascii_digit() {
        value = value * 10 + u64::from(buf[i] - b'0');
        i += 1;
    }
    let n = i - at;
    if n == 0 || n > FAST_MAX_DIGITS || (n > 1 && buf[at] == b'0') {
        return None;
    }
    (buf.get(i..i + 2)? == b"\r\n").then_some((value, i + 2))
}

/// Builds a request from inline-split arguments: `data` holds them back to back, `bounds`
/// their `(start, end)` in `data`.
pub(crate) fn encode_split(data: &[u8], bounds: &[(usize, usize)]) -> Request {
    encode(bounds.iter().map(|&(s, e)| &data[s..e]))
}

/// Encodes arguments as a RESP array of bulk strings, sized exactly up front.
fn encode<'a, I>(args: I) -> Request
where
    I: ExactSizeIterator<Item = &'a [u8]> + Clone,
{
    let body: usize = args
        .clone()
        .map(|a| 1 + decimal_len(a.len() as u64) + 2 + a.len() + 2)
        .sum();
    let mut out = BytesMut::with_capacity(1 + decimal_len(args.len() as u64) + 2 + body);
    let mut spans = Spans::for_count(args.len());
    put_header(&mut out, b'*', args.len() as i64);
    for arg in args {
        put_header(&mut out, b'$', arg.len() as i64);
        let start = out.len();
        out.put_slice(arg);
        spans.push((offset(start), offset(out.len())));
        out.put_slice(b"\r\n");
    }
    Request {
        bytes: out.freeze(),
        args: spans,
    }
}

#[cfg(test)]
mod tests;
