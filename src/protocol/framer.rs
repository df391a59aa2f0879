//! Incremental, bounded framing of client requests: RESP arrays of bulk strings and inline
//! commands. (Interface stub: implementation in progress.)
use bytes::{Bytes, BytesMut};

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("expected '$', got '{}'", *.0 as char)]
    ExpectedBulk(u8),
    #[error("too big inline request")]
    TooBigInline,
    #[error("too big mbulk count string")]
    TooBigMbulkCount,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// One complete request. `bytes` is always a RESP array of bulk strings (inline commands are
/// re-encoded), so it can be forwarded as-is; arguments are views into it.
#[derive(Debug, Clone)]
pub struct Request {
    bytes: Bytes,
    args: Vec<(u32, u32)>,
}

impl Request {
    /// Builds a request from arguments (used for requests the proxy makes itself).
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        let mut buf = BytesMut::new();
        let mut offsets = Vec::with_capacity(args.len());
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let arg = arg.as_ref();
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            let start = buf.len() as u32;
            buf.extend_from_slice(arg);
            offsets.push((start, buf.len() as u32));
            buf.extend_from_slice(b"\r\n");
        }
        Request {
            bytes: buf.freeze(),
            args: offsets,
        }
    }
    /// The exact bytes to forward.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn argc(&self) -> usize {
        self.args.len()
    }
    /// Argument `i`; panics if out of range.
    pub fn arg(&self, i: usize) -> &[u8] {
        let (s, e) = self.args[i];
        &self.bytes[s as usize..e as usize]
    }
    /// Argument `i` as a zero-copy `Bytes`.
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        let (s, e) = self.args[i];
        self.bytes.slice(s as usize..e as usize)
    }
}

/// Finds complete requests in a client's input buffer, resuming where the last call stopped.
#[derive(Debug)]
pub struct RequestFramer {
    limits: Limits,
}

impl RequestFramer {
    pub fn new(limits: Limits) -> Self {
        RequestFramer { limits }
    }
    /// Splits the next complete request off the front of `buf`. `Ok(None)` means more bytes are
    /// needed. Empty lines, `*0` and negative counts are skipped, as Redis does.
    pub fn next_request(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let _ = (buf, self.limits);
        todo!()
    }
}
