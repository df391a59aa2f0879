//! One-off request/reply exchanges on a fresh socket, for the control path (`CLUSTER NODES`,
//! `COMMAND`): never on a shared connection, so a slow control query delays no client. The
//! socket comes from the [`Connector`], authenticated and TLS-wrapped like every other.
use super::connector::{self, Connector, Setup};
use super::ConnectError;
use crate::protocol::framer::Request;
use crate::protocol::reply_framer::ReplyFramer;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `args` to `addr` and returns the raw reply, all within `timeout`. A reply that says
/// the proxy may not (`NOAUTH`, `NOPERM`) is a [`ConnectError::Auth`].
pub async fn query<A: AsRef<[u8]>>(
    connector: &Connector,
    addr: SocketAddr,
    args: &[A],
    timeout: Duration,
) -> Result<Bytes, ConnectError> {
    let exchange = async {
        let mut s = connector.connect(addr, Setup::CONTROL, timeout).await?;
        s.write_all(Request::from_args(args).bytes()).await?;
        s.flush().await?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut framer = ReplyFramer::new();
        loop {
            if let Some(reply) = framer
                .next_reply(&mut buf)
                .map_err(|e| std::io::Error::other(e.to_string()))?
            {
                if reply.first() == Some(&b'-') && connector::is_auth_error(&reply) {
                    return Err(connector::classify(&reply));
                }
                return Ok(reply);
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// The payload of a bulk string reply (`$n\r\n...\r\n`), or the error text of an error reply.
pub fn bulk_payload(reply: &[u8]) -> Result<&[u8], String> {
    match reply.first() {
        Some(b'$') | Some(b'=') => {
            let header_end = reply
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated bulk")?;
            let body = &reply[header_end + 2..reply.len().saturating_sub(2)];
            // RESP3 verbatim strings start with a 3-letter format and a colon.
            Ok(if reply[0] == b'=' && body.len() >= 4 {
                &body[4..]
            } else {
                body
            })
        }
        Some(b'-') => Err(String::from_utf8_lossy(&reply[1..]).trim_end().to_string()),
        _ => Err("unexpected reply type".into()),
    }
}
