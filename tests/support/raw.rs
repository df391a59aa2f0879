//! Byte-level test tools: a standalone `redis-server` to compare the proxy's replies with, and a
//! raw RESP connection that sends requests and reads back replies exactly as they came, with
//! generous read deadlines instead of hanging. Replies are framed by [`reply_len`], a plain
//! loop written for the tests, not by slotproxy's framer: the tool must not share the bugs of
//! the code it checks.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use slotproxy::protocol::framer::Request;

/// A standalone (non-cluster) redis-server on a free port, stopped on drop.
pub struct Standalone {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Standalone {
    pub fn start() -> Standalone {
        let port = super::free_port();
        let child = Command::new(super::redis_server_path())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let s = Standalone {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(s.addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long one read may wait before the test fails: generous, for a loaded machine.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// A plain TCP connection speaking RESP, replies kept as raw bytes.
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).expect("connecting");
        stream.set_read_timeout(Some(READ_DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The RESP encoding of one command.
    pub fn encode(args: &[&str]) -> Bytes {
        Request::from_args(args).bytes().clone()
    }

    /// A second handle on the socket, to write from another thread while this one reads.
    pub fn try_clone_writer(&self) -> TcpStream {
        self.stream.try_clone().expect("cloning the socket")
    }

    /// Writes bytes as they are (one or many requests).
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing");
    }

    /// Sends one command and returns its reply.
    pub fn call(&mut self, args: &[&str]) -> Bytes {
        self.write(&Self::encode(args));
        self.read_reply()
    }

    /// The next reply; panics when none comes within the read deadline or the peer closes.
    pub fn read_reply(&mut self) -> Bytes {
        loop {
            if let Some(len) = reply_len(&self.buf) {
                return self.buf.split_to(len).freeze();
            }
            self.buf.reserve(64 * 1024);
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed while a reply was owed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("no reply within {READ_DEADLINE:?}: {e}"),
            }
        }
    }

    /// Sends `HELLO 3` and drops its reply (it holds a connection id that differs per server).
    pub fn hello3(&mut self) {
        let r = self.call(&["HELLO", "3"]);
        assert_eq!(r.first(), Some(&b'%'), "HELLO 3: {}", show(&r));
    }
}

/// The elements of a flat aggregate reply (`*`, `>`, `%`, `~` of bulk strings, integers and
/// nulls) as text: a Pub/Sub message, a PUBSUB NUMSUB reply. Panics on anything else.
pub fn flat(reply: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(reply).expect("text reply");
    let mut lines = text.split("\r\n");
    let header = lines.next().expect("a header");
    assert!(
        matches!(header.as_bytes().first(), Some(b'*' | b'>' | b'%' | b'~')),
        "not an aggregate: {}",
        show(reply)
    );
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        match line.as_bytes().first() {
            Some(b'$') if line == "$-1" => out.push(String::from("(nil)")),
            Some(b'$') => out.push(lines.next().expect("bulk body").to_string()),
            Some(b':') => out.push(line[1..].to_string()),
            Some(b'_') => out.push(String::from("(nil)")),
            None => {}
            _ => panic!("not flat: {}", show(reply)),
        }
    }
    out
}

/// A reply for an assertion message: shortened, control characters visible.
pub fn show(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let text = text.replace("\r\n", "\\r\\n");
    if text.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &text[..cut], reply.len())
    } else {
        text
    }
}

/// The length of the complete RESP2/RESP3 reply at the front of `buf`, `None` while it is
/// incomplete; panics on bytes that are not RESP. Nesting is followed with a stack of element
/// counts, so any depth works. Re-scans from the start on each call: fine for tests.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    // Elements still owed by each open aggregate, innermost last.
    let mut open: Vec<u64> = Vec::new();
    loop {
        let kind = *buf.get(pos)?;
        let nl = pos + buf[pos..].iter().position(|&b| b == b'\n')?;
        assert_eq!(buf[nl - 1], b'\r', "not RESP at byte {pos}");
        let line = std::str::from_utf8(&buf[pos + 1..nl - 1]).expect("header is text");
        pos = nl + 1;
        let mut pushed = false;
        match kind {
            b'$' | b'=' | b'!' => {
                let len: i64 = line.parse().expect("bulk length");
                if len >= 0 {
                    pos += len as usize + 2;
                    if buf.len() < pos {
                        return None;
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n: i64 = line.parse().expect("aggregate length");
                let n = n.max(0) as u64 * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
                // An attribute precedes the value it annotates: one more element owed.
                let n = n + u64::from(kind == b'|');
                if n > 0 {
                    open.push(n);
                    pushed = true;
                }
            }
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
            other => panic!("not RESP: type byte {other:?} at {pos}"),
        }
        if !pushed {
            // One value ended: close every aggregate it completes.
            loop {
                match open.last_mut() {
                    None => return Some(pos),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        open.pop();
                    }
                }
            }
        }
    }
}
