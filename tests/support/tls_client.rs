//! A small blocking TLS client for tests of the proxy's TLS listener: rustls over a std socket,
//! verifying against a given CA (optionally presenting a client certificate), RESP2 commands,
//! and the certificate the server presented (to see a rotation).
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use slotproxy::bootstrap::node_client::{encode_command, read_reply, Reply};
use slotproxy::config::NodeTls;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One TLS connection to a server that speaks RESP.
pub struct TlsClient {
    stream: BufReader<Tls>,
}

impl TlsClient {
    /// Connects and completes the handshake; an error says what failed.
    pub fn connect(
        addr: SocketAddr,
        ca: &Path,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<TlsClient, String> {
        let settings = NodeTls {
            ca_file: Some(ca.to_path_buf()),
            cert_file: client_cert.map(|(c, _)| c.to_path_buf()),
            key_file: client_cert.map(|(_, k)| k.to_path_buf()),
            server_name: None,
            insecure_skip_verify: false,
        };
        let config = slotproxy::tls::client_config(&settings).map_err(|e| e.to_string())?;
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut conn =
            rustls::ClientConnection::new(config, ServerName::IpAddress(addr.ip().into()))
                .map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(TlsClient {
            stream: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
        })
    }

    /// Sends one command and reads its reply (an error reply is `Ok(Reply::Error)`).
    pub fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let out = self.stream.get_mut();
        out.write_all(&encode_command(args))
            .and_then(|()| out.flush())
            .map_err(|e| format!("write: {e}"))?;
        read_reply(&mut self.stream, 0).map_err(|e| format!("read: {e}"))
    }

    /// `PING` answered `PONG`.
    pub fn ping(&mut self) -> Result<(), String> {
        match self.call(&["PING"])? {
            Reply::Status(s) if s == "PONG" => Ok(()),
            other => Err(format!("PING answered {other:?}")),
        }
    }

    /// The DER of the certificate the server presented.
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }
}

/// Waits (up to 20 s) until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        sleep(Duration::from_millis(100));
    }
}

/// The DER of the first certificate in a PEM file.
pub fn cert_der(path: &Path) -> Vec<u8> {
    slotproxy::tls::load_certs(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
        .as_ref()
        .to_vec()
}
