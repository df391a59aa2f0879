//! The session's read buffer, shared between the sessions of one thread while they are idle.
use bytes::BytesMut;

thread_local! {
    /// An emptied read buffer with room left, parked by the session that emptied it for the
    /// next session on this thread to read into. With many clients sending one request at a
    /// time, their requests are read into one allocation in turn instead of one each, and no
    /// idle client holds a buffer.
    static SPARE: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

pub(super) fn take_spare() -> BytesMut {
    SPARE.take().unwrap_or_default()
}

/// Parks `buf` for reuse if it has room worth reusing and is small: the room left after a
/// large request would keep that request's whole allocation alive.
pub(super) fn park_spare(buf: BytesMut) {
    if (1024..=SPARE_MAX).contains(&buf.capacity()) {
        SPARE.set(Some(buf));
    }
}

/// The largest spare read buffer kept per thread.
const SPARE_MAX: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_read_buffers_are_parked() {
        // The room left after a 1 MB request would pin that request's allocation.
        park_spare(BytesMut::with_capacity(1 << 20));
        assert_eq!(take_spare().capacity(), 0);
        park_spare(BytesMut::with_capacity(512));
        assert_eq!(
            take_spare().capacity(),
            0,
            "too little room to be worth keeping"
        );
        park_spare(BytesMut::with_capacity(4096));
        assert!(take_spare().capacity() >= 4096);
        assert_eq!(take_spare().capacity(), 0, "taken once");
    }
}
