//! The client's socket as the session sees it: plain TCP, or TLS over TCP. The reader waits
//! until bytes are there (`readable`) and then takes what is there without waiting
//! (`read_once`), so it can hand its turn back when a read would block; the writer only
//! writes. Plain TCP keeps its split, lock-free halves; TLS is split with `tokio::io::split`
//! and its read side buffered, so "readable" means decrypted bytes are waiting, not merely
//! that a TLS record (which may hold no data) arrived.
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::task::Poll;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadHalf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// A TLS connection from a client.
pub type TlsClientStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The read side of a client connection.
pub trait ClientRead: Send {
    /// Waits until a read would return bytes (or the end of the stream, or an error).
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// One read attempt into `buf`: `None` instead of waiting when nothing is there.
    fn read_once(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl Future<Output = Option<io::Result<usize>>> + Send;
}

impl ClientRead for OwnedReadHalf {
    async fn readable(&mut self) -> io::Result<()> {
        OwnedReadHalf::readable(self).await
    }

    /// `read_buf` (unlike `try_read_buf`) marks the socket drained after a short read, which
    /// saves the next wait a WouldBlock read syscall.
    async fn read_once(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        poll_once(self, buf).await
    }
}

/// TLS: decrypted bytes are buffered by the `BufReader`.
pub type TlsRead = BufReader<ReadHalf<TlsClientStream>>;

impl ClientRead for TlsRead {
    async fn readable(&mut self) -> io::Result<()> {
        self.fill_buf().await.map(|_| ())
    }

    async fn read_once(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        poll_once(self, buf).await
    }
}

async fn poll_once<R: AsyncRead + Unpin + Send>(
    read: &mut R,
    buf: &mut BytesMut,
) -> Option<io::Result<usize>> {
    let mut fut = std::pin::pin!(read.read_buf(buf));
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        })
    })
    .await
}
