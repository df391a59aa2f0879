//! The one way the proxy opens a connection to a node. Every connection (shared request
//! connections, dedicated ones for transactions and blocking commands, subscription
//! connections, and the control path's `CLUSTER NODES` and `COMMAND`) is opened, TLS-wrapped
//! and authenticated here, so no path can forget the credentials or the TLS settings.
//!
//! Set-up is one write and one round trip: `AUTH [user] pass` (or `HELLO 3 AUTH user pass` for
//! RESP3 connections), then `READONLY` where asked, pipelined. A refusal (`WRONGPASS`, `NOAUTH`,
//! `NOPERM`) comes back as [`ConnectError::Auth`] with the node's own text, so logs, health and
//! clients can name the cause. The settings sit in an `ArcSwap`: a reload (new password, new
//! certificates) applies to connections opened after it, and open ones are left alone.
use super::ConnectError;
use crate::config::{Config, NodeAuth, NodeTls};
use crate::protocol::framer::Request;
use crate::protocol::reply::Proto;
use crate::protocol::reply_framer::ReplyFramer;
use crate::tls::{self, TlsError};
use arc_swap::ArcSwap;
use bytes::BytesMut;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What a new connection says after connecting, beside authenticating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub proto: Proto,
    /// Send `READONLY`, so that a replica serves reads (harmless on a master).
    pub readonly: bool,
}

impl Setup {
    /// A control-path connection: RESP2, nothing but authentication.
    pub const CONTROL: Setup = Setup {
        proto: Proto::Resp2,
        readonly: false,
    };
}

/// The node-side settings, swapped whole on reload.
struct Settings {
    auth: NodeAuth,
    tls: Option<(NodeTls, tokio_rustls::TlsConnector)>,
}

/// Opens authenticated (and, if configured, TLS) connections to nodes. Shared by every worker.
pub struct Connector {
    settings: ArcSwap<Settings>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.settings.load();
        f.debug_struct("Connector")
            .field("user", &s.auth.user)
            .field("tls", &s.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// From the configuration; fails when a TLS file cannot be used.
    pub fn new(config: &Config) -> Result<Connector, TlsError> {
        Ok(Connector {
            settings: ArcSwap::from_pointee(Self::settings(config)?),
        })
    }

    /// Plain TCP, no credentials (tests and tools).
    pub fn plain() -> Connector {
        Connector {
            settings: ArcSwap::from_pointee(Settings {
                auth: NodeAuth::default(),
                tls: None,
            }),
        }
    }

    fn settings(config: &Config) -> Result<Settings, TlsError> {
        let tls = match &config.node_tls {
            Some(t) => {
                let connector = tokio_rustls::TlsConnector::from(tls::client_config(t)?);
                Some((t.clone(), connector))
            }
            None => None,
        };
        Ok(Settings {
            auth: config.node_auth.clone(),
            tls,
        })
    }

    /// Takes new credentials and certificates for connections opened from now on; on error
    /// the current ones stay.
    pub fn reload(&self, config: &Config) -> Result<(), TlsError> {
        self.settings.store(Arc::new(Self::settings(config)?));
        Ok(())
    }

    /// Connects to `addr`, wraps in TLS if configured, authenticates and runs `setup`, all
    /// within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        setup: Setup,
        timeout: Duration,
    ) -> Result<NodeStream, ConnectError> {
        let settings = self.settings.load_full();
        match tokio::time::timeout(timeout, open(&settings, addr, setup)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(timeout)),
        }
    }
}

async fn open(
    settings: &Settings,
    addr: SocketAddr,
    setup: Setup,
) -> Result<NodeStream, ConnectError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut stream = match &settings.tls {
        None => NodeStream::Plain(tcp),
        Some((t, connector)) => {
            let name = tls::node_server_name(t, addr);
            let s = connector
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
            NodeStream::Tls(Box::new(s))
        }
    };
    let hello = handshake(&settings.auth, setup);
    if hello.is_empty() {
        return Ok(stream);
    }
    stream.write_all(&hello.bytes).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut framer = ReplyFramer::new();
    let mut first_error: Option<ConnectError> = None;
    let mut due = hello.replies;
    while due > 0 {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(
                first_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof).into())
            );
        }
        while let Some(reply) = framer
            .next_reply(&mut buf)
            .map_err(|e| io::Error::other(e.to_string()))?
        {
            due -= 1;
            if reply.first() == Some(&b'-') && first_error.is_none() {
                first_error = Some(classify(&reply));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// The set-up commands, pipelined, and how many replies they bring.
struct Handshake {
    bytes: Vec<u8>,
    replies: usize,
}

impl Handshake {
    fn is_empty(&self) -> bool {
        self.replies == 0
    }
}

fn handshake(auth: &NodeAuth, setup: Setup) -> Handshake {
    let mut h = Handshake {
        bytes: Vec::new(),
        replies: 0,
    };
    let mut push = |args: &[&str]| {
        h.bytes
            .extend_from_slice(Request::from_args(args).bytes().as_ref());
        h.replies += 1;
    };
    let password = auth.password.as_ref().map(|p| p.expose());
    let user = auth.user.as_deref().unwrap_or("default");
    match (setup.proto, password) {
        (Proto::Resp3, Some(pass)) => push(&["HELLO", "3", "AUTH", user, pass]),
        (Proto::Resp3, None) => push(&["HELLO", "3"]),
        (Proto::Resp2, _) => {
            if let Some(args) = auth.auth_args() {
                push(&args);
            }
        }
    }
    if setup.readonly {
        push(&["READONLY"]);
    }
    h
}

/// Whether an error reply means the node refused the proxy's credentials.
pub fn is_auth_error(reply: &[u8]) -> bool {
    let text = reply.strip_prefix(b"-").unwrap_or(reply);
    [&b"WRONGPASS"[..], b"NOAUTH", b"NOPERM", b"ERR AUTH"]
        .iter()
        .any(|p| text.starts_with(p))
}

/// A set-up error reply as a [`ConnectError`], with the node's text.
pub fn classify(reply: &[u8]) -> ConnectError {
    let text = String::from_utf8_lossy(reply.strip_prefix(b"-").unwrap_or(reply))
        .trim_end()
        .to_string();
    if is_auth_error(reply) {
        ConnectError::Auth(text)
    } else {
        ConnectError::Refused(text)
    }
}

/// A connection to a node: plain TCP or TLS over it.
pub enum NodeStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Plain(s) => s.is_write_vectored(),
            NodeStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn auth(user: Option<&str>, pass: Option<&str>) -> NodeAuth {
        NodeAuth {
            user: user.map(String::from),
            password: pass.map(Secret::new),
        }
    }

    fn text(h: &Handshake) -> String {
        String::from_utf8_lossy(&h.bytes).replace("\r\n", " ")
    }

    #[test]
    fn handshake_authenticates_first_and_counts_replies() {
        let rw = |proto, readonly| Setup { proto, readonly };
        let h = handshake(&auth(None, None), rw(Proto::Resp2, false));
        assert!(h.is_empty());
        let h = handshake(&auth(None, Some("pw")), rw(Proto::Resp2, true));
        assert_eq!(h.replies, 2);
        assert!(
            text(&h).starts_with("*2 $4 AUTH $2 pw *1 $8 READONLY"),
            "{}",
            text(&h)
        );
        let h = handshake(&auth(Some("app"), Some("pw")), rw(Proto::Resp2, false));
        assert!(text(&h).contains("AUTH $3 app $2 pw"), "{}", text(&h));
        let h = handshake(&auth(None, Some("pw")), rw(Proto::Resp3, true));
        assert_eq!(h.replies, 2);
        assert!(
            text(&h).contains("HELLO $1 3 $4 AUTH $7 default $2 pw"),
            "{}",
            text(&h)
        );
        let h = handshake(&auth(None, None), rw(Proto::Resp3, false));
        assert_eq!(h.replies, 1);
    }

    #[test]
    fn refusals_are_classified_with_the_nodes_text() {
        let e = classify(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
        assert!(matches!(&e, ConnectError::Auth(t) if t.starts_with("WRONGPASS invalid")));
        assert!(matches!(
            classify(b"-NOAUTH Authentication required.\r\n"),
            ConnectError::Auth(_)
        ));
        assert!(matches!(
            classify(b"-NOPERM this user has no permissions\r\n"),
            ConnectError::Auth(_)
        ));
        assert!(matches!(
            classify(b"-ERR unknown command\r\n"),
            ConnectError::Refused(_)
        ));
    }
}
