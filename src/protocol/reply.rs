//! Replies the proxy builds itself (in RESP2 or RESP3), and the parsing of the cluster errors a
//! node answers with (`-MOVED`, `-ASK`, `-TRYAGAIN`, `-CLUSTERDOWN`, `-LOADING`) into an enum, so
//! that routing code never matches on strings.
use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;

/// The protocol version a client speaks (chosen with `HELLO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

pub const OK: &[u8] = b"+OK\r\n";
pub const PONG: &[u8] = b"+PONG\r\n";
pub const QUEUED: &[u8] = b"+QUEUED\r\n";
pub const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";

/// `-{msg}\r\n`; `msg` must start with an error code such as `ERR `.
pub fn error(msg: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 3);
    b.put_u8(b'-');
    // An error line must not contain CR or LF; replace them rather than break the framing.
    b.extend(
        msg.bytes()
            .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    b.put_slice(b"\r\n");
    b.freeze()
}

pub fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_header(out, b'$', data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

pub fn bulk(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 16);
    put_bulk(&mut b, data);
    b.freeze()
}

pub fn null(proto: Proto) -> Bytes {
    Bytes::from_static(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    })
}

pub fn integer(n: i64) -> Bytes {
    let mut b = BytesMut::with_capacity(24);
    put_integer(&mut b, n);
    b.freeze()
}

pub fn put_integer(out: &mut BytesMut, n: i64) {
    put_header(out, b':', n);
}

/// An aggregate header: `*n` for arrays, `%n` for RESP3 maps (`*2n` in RESP2).
pub fn put_array_header(out: &mut BytesMut, n: usize) {
    put_header(out, b'*', n as i64);
}

pub fn put_map_header(out: &mut BytesMut, proto: Proto, n: usize) {
    match proto {
        Proto::Resp2 => put_array_header(out, 2 * n),
        Proto::Resp3 => put_header(out, b'%', n as i64),
    }
}

/// Writes a RESP line `{kind}{n}\r\n` (`$3`, `*2`, `:-1`, ...) without going through `fmt`: the
/// hot path of every header the proxy encodes.
pub(crate) fn put_header(out: &mut BytesMut, kind: u8, n: i64) {
    // Built right to left on the stack, then copied with one capacity check: a kind byte, a
    // sign, up to 19 digits and CRLF fit in 23 bytes.
    let mut buf = [0u8; 24];
    let mut i = buf.len() - 2;
    buf[i..].copy_from_slice(b"\r\n");
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    i -= 1;
    buf[i] = kind;
    out.put_slice(&buf[i..]);
}

/// A cluster error that the proxy acts on instead of passing it to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    Moved { slot: u16, addr: SocketAddr },
    Ask { slot: u16, addr: SocketAddr },
    TryAgain,
    ClusterDown,
    Loading,
}

/// Classifies a reply; `None` for anything that is not one of the cluster errors above (including
/// a MOVED whose address cannot be parsed, such as a hostname: the client then sees it).
pub fn parse_redirect(reply: &[u8]) -> Option<Redirect> {
    if reply.first() != Some(&b'-') {
        return None;
    }
    let line = reply[1..].strip_suffix(b"\r\n").unwrap_or(&reply[1..]);
    let (code, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    match code {
        b"MOVED" | b"ASK" => {
            let text = std::str::from_utf8(rest).ok()?;
            let mut parts = text.split(' ');
            let slot: u16 = parts.next()?.parse().ok()?;
            let addr: SocketAddr = parts.next()?.parse().ok()?;
            if slot >= 16384 {
                return None;
            }
            Some(if code == b"MOVED" {
                Redirect::Moved { slot, addr }
            } else {
                Redirect::Ask { slot, addr }
            })
        }
        b"TRYAGAIN" => Some(Redirect::TryAgain),
        b"CLUSTERDOWN" => Some(Redirect::ClusterDown),
        b"LOADING" => Some(Redirect::Loading),
        _ => None,
    }
}

/// Parses an integer reply (`:123\r\n`).
pub fn parse_integer(reply: &[u8]) -> Option<i64> {
    let line = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    super::framer::parse_int(line)
}

/// The `field:value` lines of an `INFO` payload (`# Section` headers and blank lines skipped).
pub fn info_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".parse().unwrap()
            })
        );
        assert_eq!(
            parse_redirect(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Ask {
                slot: 3999,
                addr: "127.0.0.1:6381".parse().unwrap()
            })
        );
        assert_eq!(
            parse_redirect(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(
            parse_redirect(b"-CLUSTERDOWN The cluster is down\r\n"),
            Some(Redirect::ClusterDown)
        );
        assert_eq!(
            parse_redirect(b"-LOADING Redis is loading\r\n"),
            Some(Redirect::Loading)
        );
        assert_eq!(parse_redirect(b"-ERR MOVED\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED 99999 127.0.0.1:1\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED 1 somehost:1\r\n"), None);
        assert_eq!(parse_redirect(b"+MOVED 1 127.0.0.1:1\r\n"), None);
    }

    #[test]
    fn builders() {
        assert_eq!(&integer(-42)[..], b":-42\r\n");
        assert_eq!(&integer(0)[..], b":0\r\n");
        assert_eq!(&integer(i64::MIN)[..], b":-9223372036854775808\r\n");
        assert_eq!(&integer(i64::MAX)[..], b":9223372036854775807\r\n");
        let mut b = BytesMut::new();
        put_array_header(&mut b, 10);
        put_bulk(&mut b, b"");
        assert_eq!(&b[..], b"*10\r\n$0\r\n\r\n");
        assert_eq!(&bulk(b"hi")[..], b"$2\r\nhi\r\n");
        assert_eq!(&error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
        assert_eq!(parse_integer(b":17\r\n"), Some(17));
    }
}
