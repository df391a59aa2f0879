//! Incremental framing of RESP2/RESP3 replies from cluster nodes. (Interface stub.)
use super::framer::ProtocolError;
use bytes::{Bytes, BytesMut};

/// Finds complete replies (any RESP2/RESP3 type, nested, attributes attached to the value that
/// follows them) in a node's input, resuming where the last call stopped.
#[derive(Debug, Default)]
pub struct ReplyFramer {}

impl ReplyFramer {
    pub fn new() -> Self {
        ReplyFramer {}
    }
    /// Splits the next complete reply off the front of `buf`; `Ok(None)` means more bytes needed.
    pub fn next_reply(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        let _ = buf;
        todo!()
    }
}

/// Splits a complete aggregate reply into its elements (zero-copy). (Interface stub.)
pub fn split_array(reply: &Bytes) -> Option<Vec<Bytes>> {
    let _ = reply;
    todo!()
}
