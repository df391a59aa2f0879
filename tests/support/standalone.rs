//! A standalone `redis-server` (what slotproxy answers like) and a one-reply-at-a-time RESP
//! connection, for tests that send the same commands to the proxy and to Redis and compare
//! the reply bytes.
use super::{free_port, redis_server_path};
use bytes::{Bytes, BytesMut};
use slotproxy::protocol::reply_framer::ReplyFramer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A standalone `redis-server` on a free port, stopped (by its pid) on drop.
pub struct Standalone {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Standalone {
    /// Starts one and runs `setup` on it (as its nopass default user).
    pub fn start(setup: &[&[&str]]) -> Standalone {
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-standalone-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let child = Command::new(redis_server_path())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Standalone {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = loop {
            if let Ok(s) = TcpStream::connect(addr) {
                break Conn::new(s);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for cmd in setup {
            let r = c.call(cmd);
            assert!(
                r.starts_with(b"+OK"),
                "{cmd:?} on redis-server: {}",
                String::from_utf8_lossy(&r)
            );
        }
        server
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One RESP connection: sends a command, reads exactly one reply.
pub struct Conn {
    pub s: TcpStream,
    pub buf: BytesMut,
    pub framer: ReplyFramer,
}

impl Conn {
    pub fn new(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            s,
            buf: BytesMut::new(),
            framer: ReplyFramer::new(),
        }
    }

    pub fn open(addr: SocketAddr) -> Conn {
        Conn::new(TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}")))
    }

    pub fn call(&mut self, args: &[&str]) -> Bytes {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.s.write_all(req.as_bytes()).expect("writing");
        loop {
            if let Some(r) = self.framer.next_reply(&mut self.buf).expect("valid RESP") {
                return r;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("reading a reply");
            assert!(n > 0, "closed after {args:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
