//! A plain TCP client's socket shared by its writer task and the backend connections, so a
//! reply that arrives while the writer is idle is written by the task that framed it (see
//! [`crate::reply_queue`]): one task wake-up and poll fewer per request.
use super::writer::{note_reply, SlowClock};
use super::{Owed, Pending};
use crate::clients::ClientEntry;
use crate::forward::Forward;
use crate::proxy::Proxy;
use crate::reply_queue::DirectOut;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

/// The client's write half and what noting a reply needs.
pub(super) struct ClientOut {
    half: OwnedWriteHalf,
    proxy: Arc<Proxy>,
    entry: Arc<ClientEntry>,
}

impl ClientOut {
    pub(super) fn new(half: OwnedWriteHalf, proxy: Arc<Proxy>, entry: Arc<ClientEntry>) -> Self {
        ClientOut { half, proxy, entry }
    }
}

impl DirectOut<Owed> for ClientOut {
    fn is_plain(&self, (pending, _): &Owed, reply: &[u8]) -> bool {
        matches!(pending, Pending::Forward(..)) && Forward::is_final(reply)
    }

    fn answered(&self, (_, timed): Owed, reply: &[u8]) {
        note_reply(
            &self.proxy,
            &self.entry,
            timed,
            reply,
            &mut SlowClock::default(),
        );
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs {
            [one] => self.half.try_write(one),
            _ => self.half.try_write_vectored(bufs),
        }
    }
}

/// The writer task's side of a [`ClientOut`]. Shutting it down is a no-op: the socket's
/// write side is shut when the last handle goes, which is the writer's once it ends (the
/// reply queue lets go of its own when the writer closes it).
pub(super) struct SharedWrite(pub(super) Arc<ClientOut>);

impl AsyncWrite for SharedWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let half = &self.0.half;
        loop {
            ready!(half.as_ref().poll_write_ready(cx))?;
            match half.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
