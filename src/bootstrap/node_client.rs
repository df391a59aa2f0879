//! A tiny blocking RESP2 client for the handful of commands bootstrap sends to a node (`PING`,
//! `INFO`, `CLUSTER ...`, `DBSIZE`, `CONFIG GET`).
//!
//! Bootstrap runs once, before any serving, against nodes it trusts; a synchronous socket with
//! timeouts keeps it simple and keeps tokio out of a one-shot command-line tool. Replies are
//! parsed here (RESP2 only: the client never says `HELLO 3`) with caps on lengths and nesting.
//!
//! [`NodeAccess`] says how to reach password-protected and TLS nodes: the connection speaks TLS
//! (rustls over the std socket, with the same contexts the proxy builds, `crate::tls`) and says
//! `AUTH` before anything else, so no command can go out unauthenticated.
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{NodeAuth, NodeTls};

/// Longest bulk string accepted (a `CLUSTER NODES` reply is a few KB).
const MAX_BULK: usize = 64 << 20;
/// Deepest array nesting accepted (`CLUSTER SLOTS` needs 3).
const MAX_DEPTH: usize = 8;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// What can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the node answered with an error: {0}")]
    Redis(String),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the node refused the credentials: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How to reach nodes: credentials to present and TLS to speak. The default is plain TCP with
/// no `AUTH`.
#[derive(Debug, Clone, Default)]
pub struct NodeAccess {
    pub auth: NodeAuth,
    pub tls: Option<NodeTlsContext>,
}

/// TLS towards nodes: the settings (for the server name) and the context built from them.
#[derive(Debug, Clone)]
pub struct NodeTlsContext {
    pub settings: NodeTls,
    pub config: Arc<rustls::ClientConfig>,
}

impl NodeAccess {
    /// Builds the TLS context, if any, from its files (errors name the file).
    pub fn new(auth: NodeAuth, tls: Option<&NodeTls>) -> Result<NodeAccess, crate::tls::TlsError> {
        let tls = match tls {
            Some(settings) => Some(NodeTlsContext {
                config: crate::tls::client_config(settings)?,
                settings: settings.clone(),
            }),
            None => None,
        };
        Ok(NodeAccess { auth, tls })
    }
}

/// The socket under a [`NodeClient`]: plain, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A blocking connection to one node.
pub struct NodeClient {
    addr: SocketAddr,
    stream: BufReader<Stream>,
}

impl NodeClient {
    /// Connects over plain TCP without `AUTH`, with `timeout` for the connect and for every
    /// later read and write.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<NodeClient> {
        let tcp = tcp_connect(addr, timeout)?;
        Ok(NodeClient {
            addr,
            stream: BufReader::new(Stream::Plain(tcp)),
        })
    }

    /// Connects as `access` says: the TLS handshake (if any) completes and `AUTH` (if any) is
    /// accepted before this returns. A refused `AUTH` is [`NodeError::Auth`] with Redis's text.
    pub fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        access: &NodeAccess,
    ) -> Result<NodeClient, NodeError> {
        let mut tcp = tcp_connect(addr, timeout)?;
        let stream = match &access.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let name = crate::tls::node_server_name(&tls.settings, addr);
                let mut conn = rustls::ClientConnection::new(tls.config.clone(), name)
                    .map_err(|e| NodeError::Tls(e.to_string()))?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).map_err(|e| {
                        NodeError::Tls(format!("handshake with {addr} failed: {e}"))
                    })?;
                }
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        let mut client = NodeClient {
            addr,
            stream: BufReader::new(stream),
        };
        if let Some(auth) = access.auth.auth_args() {
            match client.call(&auth)? {
                Reply::Status(ok) if ok == "OK" => {}
                Reply::Error(e) => return Err(NodeError::Auth(e)),
                other => return Err(NodeError::Unexpected(format!("AUTH answered {other:?}"))),
            }
        }
        Ok(client)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one command and reads its reply. A Redis error reply is `Ok(Reply::Error)`.
    pub fn call(&mut self, args: &[&str]) -> Result<Reply, NodeError> {
        let out = self.stream.get_mut();
        out.write_all(&encode_command(args))?;
        out.flush()?;
        read_reply(&mut self.stream, 0)
    }

    /// Sends one command; a Redis error reply becomes `NodeError::Redis`.
    pub fn call_checked(&mut self, args: &[&str]) -> Result<Reply, NodeError> {
        match self.call(args)? {
            Reply::Error(e) => Err(NodeError::Redis(e)),
            other => Ok(other),
        }
    }

    /// Sends a command that must answer `+OK`.
    pub fn call_ok(&mut self, args: &[&str]) -> Result<(), NodeError> {
        match self.call_checked(args)? {
            Reply::Status(s) if s == "OK" => Ok(()),
            other => Err(NodeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends a command that answers a string (status or bulk).
    pub fn call_string(&mut self, args: &[&str]) -> Result<String, NodeError> {
        match self.call_checked(args)? {
            Reply::Status(s) => Ok(s),
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => Err(NodeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends a command that answers an integer.
    pub fn call_int(&mut self, args: &[&str]) -> Result<i64, NodeError> {
        match self.call_checked(args)? {
            Reply::Int(n) => Ok(n),
            other => Err(NodeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// `INFO <section>` as a field map.
    pub fn info(&mut self, section: &str) -> Result<HashMap<String, String>, NodeError> {
        Ok(parse_info(&self.call_string(&["INFO", section])?))
    }

    /// `CONFIG GET <name>`'s value, if the parameter exists.
    pub fn config_get(&mut self, name: &str) -> Result<Option<String>, NodeError> {
        match self.call_checked(&["CONFIG", "GET", name])? {
            Reply::Array(Some(items)) => Ok(items.get(1).and_then(|v| match v {
                Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })),
            other => Err(NodeError::Unexpected(format!("{other:?}"))),
        }
    }
}

fn tcp_connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply; `depth` is the current array nesting.
pub fn read_reply(r: &mut impl BufRead, depth: usize) -> Result<Reply, NodeError> {
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| NodeError::Protocol("empty line".into()))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Status(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => Ok(Reply::Int(parse_int(rest)?)),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_BULK {
                return Err(NodeError::Protocol(format!("bulk of {len} bytes")));
            }
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf)?;
            if !buf.ends_with(b"\r\n") {
                return Err(NodeError::Protocol("bulk not terminated by CRLF".into()));
            }
            buf.truncate(len);
            Ok(Reply::Bulk(Some(buf)))
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            if depth >= MAX_DEPTH {
                return Err(NodeError::Protocol("arrays nested too deeply".into()));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(read_reply(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => Err(NodeError::Protocol(format!(
            "unexpected reply type byte {:?}",
            *other as char
        ))),
    }
}

/// Reads a CRLF-terminated line, without the CRLF.
fn read_line(r: &mut impl BufRead) -> Result<Vec<u8>, NodeError> {
    let mut line = Vec::new();
    r.by_ref().take(64 * 1024).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(NodeError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the node",
        )));
    }
    if !line.ends_with(b"\r\n") {
        return Err(NodeError::Protocol("line not terminated by CRLF".into()));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(digits: &[u8]) -> Result<i64, NodeError> {
    crate::protocol::framer::parse_int(digits).ok_or_else(|| {
        NodeError::Protocol(format!("bad integer {:?}", String::from_utf8_lossy(digits)))
    })
}

/// Parses `INFO` text (`field:value` lines, `# Section` headers) into a map.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    crate::protocol::reply::info_fields(text)
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, NodeError> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        assert_eq!(
            encode_command(&["CLUSTER", "MEET", "127.0.0.1", "5002"]),
            b"*4\r\n$7\r\nCLUSTER\r\n$4\r\nMEET\r\n$9\r\n127.0.0.1\r\n$4\r\n5002\r\n"
        );
    }

    #[test]
    fn parses_every_resp2_type() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Reply::Error("ERR no".into())
        );
        assert_eq!(parse(b":-7\r\n").unwrap(), Reply::Int(-7));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\nb".to_vec()))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n").unwrap(),
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec()))]))
            ]))
        );
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(parse(b"").is_err());
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":abc\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"$999999999999\r\n").is_err());
        assert!(parse(&b"*1\r\n".repeat(20)).is_err());
    }

    #[test]
    fn parses_info_fields() {
        let info = parse_info("# Cluster\r\ncluster_enabled:1\r\n\r\nrole:master\r\n");
        assert_eq!(info["cluster_enabled"], "1");
        assert_eq!(info["role"], "master");
        assert_eq!(info.len(), 2);
    }
}
