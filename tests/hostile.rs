//! Malformed and hostile input: each case gets Redis's error (or a close), the proxy stays up,
//! and another client's connection is unaffected.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::{Cluster, Proxy};

/// Sends `input`, then reads until the proxy closes the connection (or 5 s pass).
fn send_and_read_to_close(proxy: &Proxy, input: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The proxy may close before reading everything: a failed write is fine.
    let _ = s.write_all(input);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn assert_alive(bystander: &mut redis::Connection, proxy: &Proxy) {
    let pong: String = redis::cmd("PING")
        .query(bystander)
        .expect("bystander connection broken");
    assert_eq!(pong, "PONG");
    let v: String = redis::cmd("GET").arg("bystander").query(bystander).unwrap();
    assert_eq!(v, "still here");
    let mut fresh = proxy.client();
    let pong: String = redis::cmd("PING")
        .query(&mut fresh)
        .expect("proxy stopped accepting");
    assert_eq!(pong, "PONG");
}

/// A cluster, a proxy, and a well-behaved client that must stay unaffected.
fn with_bystander() -> (Cluster, Proxy, redis::Connection) {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut bystander = proxy.client();
    let _: () = redis::cmd("SET")
        .arg("bystander")
        .arg("still here")
        .query(&mut bystander)
        .unwrap();
    (cluster, proxy, bystander)
}

#[test]
fn protocol_errors_close_only_the_offender() {
    let (_cluster, proxy, mut bystander) = with_bystander();

    let mut nested = Vec::new();
    for _ in 0..20_000 {
        nested.extend_from_slice(b"*1\r\n");
    }
    let mut huge_inline = vec![b'a'; 70 * 1024];
    huge_inline.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "huge count",
            b"*3000000000\r\n".to_vec(),
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            "not a bulk",
            b"*1\r\nfooz\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got 'f'\r\n",
        ),
        (
            "integer element",
            b"*1\r\n:1\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            "negative bulk",
            b"*1\r\n$-10\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "non-numeric bulk",
            b"*1\r\n$blabla\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "oversized bulk header",
            b"*1\r\n$536870913\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            "20000 nested arrays",
            nested,
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            "inline over 64 KB",
            huge_inline,
            "-ERR Protocol error: too big inline request\r\n",
        ),
        (
            "unbalanced quotes",
            b"SET \"foo bar\r\n".to_vec(),
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (name, input, expected) in cases {
        let (reply, closed) = send_and_read_to_close(&proxy, &input);
        assert_eq!(String::from_utf8_lossy(&reply), expected, "{name}");
        assert!(closed, "{name}: connection should be closed");
        assert_alive(&mut bystander, &proxy);
    }
}

#[test]
fn ignorable_input_and_command_errors_keep_the_connection() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Empty lines, *0 and *-10 are ignored, as Redis does; inline PING works.
    s.write_all(b"\r\n*0\r\n*-10\r\nPING\r\n*2\r\n$7\r\nFOOBAR!\r\n$1\r\nx\r\n*1\r\n$3\r\nGET\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n").unwrap();
    let expected = "+PONG\r\n-ERR unknown command 'FOOBAR!', with args beginning with: 'x' \r\n-ERR wrong number of arguments for 'get' command\r\n$2\r\nhi\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < expected.len() {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed early; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[test]
fn binary_garbage_and_half_commands_do_not_hurt_anyone() {
    let (_cluster, proxy, mut bystander) = with_bystander();
    // Deterministic pseudo-random garbage (xorshift), several seeds.
    for seed in 1..=20u64 {
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15);
        let garbage: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x & 0xff) as u8
            })
            .collect();
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = s.write_all(&garbage);
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf); // an error reply, a close, or nothing yet: all fine
        drop(s);
        assert_alive(&mut bystander, &proxy);
    }
    // Half a command, then the client goes away.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc")
        .unwrap();
    drop(s);
    // A header claiming 512 MB does not make the proxy allocate it.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870000\r\nabc")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:").map(|v| {
                v.trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
        })
        .unwrap();
    assert!(
        rss_kb < 200 * 1024,
        "proxy RSS {rss_kb} kB after a 512 MB claim"
    );
    drop(s);
    assert_alive(&mut bystander, &proxy);
}

/// Reads until one reply has started (a full line), the connection closes, or 3 s pass.
fn first_reply_line(s: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err("closed without a reply"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err("reset without a reply")
            }
            Err(_) => return Err("no reply within 3 s"),
        }
    }
    Ok(out)
}

#[test]
fn every_command_with_any_number_of_arguments_gets_a_reply() {
    // Every command and subcommand of the table, with 0 to 5 arguments that are keys of
    // different slots and never numbers (so nothing blocks): whatever the command makes of them,
    // the client gets a reply, not a dropped connection. A panic in the proxy shows up here as
    // a close without a reply.
    let (_cluster, proxy, mut bystander) = with_bystander();
    let table = slotproxy::protocol::command::CommandTable::fallback();
    let args = ["sweep:a", "sweep:b", "sweep:c", "sweep:d", "sweep:e"];
    let mut failures = Vec::new();
    let mut sent = 0;
    for info in table.iter() {
        let name: Vec<&str> = info.name.split('|').collect();
        for n in 0..=args.len() {
            let argv: Vec<&str> = name
                .iter()
                .copied()
                .chain(args[..n].iter().copied())
                .collect();
            let mut s = TcpStream::connect(proxy.addr()).unwrap();
            s.write_all(slotproxy::protocol::framer::Request::from_args(&argv).bytes())
                .unwrap();
            sent += 1;
            if let Err(why) = first_reply_line(&mut s) {
                failures.push(format!("{}: {why}", argv.join(" ")));
            }
        }
    }
    assert!(sent > 1000, "only {sent} requests: the table looks empty");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests got no reply:\n{}\nproxy log tail:\n{}",
        failures.len(),
        failures.join("\n"),
        proxy.log_tail(20)
    );
    // FLUSHALL and friends were among them: put the bystander's key back, then check on it.
    let _: () = redis::cmd("SET")
        .arg("bystander")
        .arg("still here")
        .query(&mut bystander)
        .unwrap();
    assert_alive(&mut bystander, &proxy);
}

#[test]
fn a_long_pipeline_of_split_commands_is_answered_and_starves_no_one() {
    // 5,000 cross-slot MGETs in one write: each one's parts are awaited in the client's task,
    // which used up tokio's per-turn budget; the reader then spun on a readable socket whose
    // reads all answered Pending, and the whole worker (every client on it) stalled.
    let (_cluster, proxy, mut bystander) = with_bystander();
    let mut c = proxy.client();
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3"])
        .query(&mut c)
        .unwrap();
    let one = b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n";
    let reply = b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n";
    let n = 5000;
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&one.repeat(n)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < reply.len() * n {
        match s.read(&mut buf) {
            Ok(k) if k > 0 => got.extend_from_slice(&buf[..k]),
            r => panic!("after {} of {n} replies: {r:?}", got.len() / reply.len()),
        }
    }
    assert!(got == reply.repeat(n), "replies differ from Redis's");
    assert_alive(&mut bystander, &proxy);
}
