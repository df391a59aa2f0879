//! The proxy in front of a real six-node cluster: routing by slot, pipelining order, multi-key
//! split/merge, CROSSSLOT, and reads from replicas.
mod support;

use redis::Commands;
use slotproxy::cluster::slot::key_slot;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::{Cluster, Proxy};

/// slot -> master address, from one node's CLUSTER SLOTS.
fn slot_map(cluster: &Cluster) -> HashMap<u16, SocketAddr> {
    let mut conn = cluster.client(cluster.nodes()[0]);
    let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
    let mut map = HashMap::new();
    let redis::Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    for range in ranges {
        let redis::Value::Array(items) = range else {
            panic!()
        };
        let lo: i64 = redis::from_redis_value(&items[0]).unwrap();
        let hi: i64 = redis::from_redis_value(&items[1]).unwrap();
        let redis::Value::Array(master) = &items[2] else {
            panic!()
        };
        let ip: String = redis::from_redis_value(&master[0]).unwrap();
        let port: i64 = redis::from_redis_value(&master[1]).unwrap();
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        for s in lo..=hi {
            map.insert(s as u16, addr);
        }
    }
    assert_eq!(map.len(), 16384);
    map
}

#[test]
fn keys_land_on_the_master_that_owns_their_slot() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    for i in 0..1200 {
        let _: () = c.set(format!("key:{i}"), i).unwrap();
    }
    let map = slot_map(&cluster);
    let mut direct: HashMap<SocketAddr, redis::Connection> = HashMap::new();
    let mut per_master: HashMap<SocketAddr, usize> = HashMap::new();
    for i in 0..1200 {
        let key = format!("key:{i}");
        let owner = map[&key_slot(key.as_bytes()).0];
        let conn = direct.entry(owner).or_insert_with(|| cluster.client(owner));
        // A direct GET on the owner: no MOVED, and the value is there.
        let v: i64 = conn
            .get(&key)
            .unwrap_or_else(|e| panic!("{key} not on {owner}: {e}"));
        assert_eq!(v, i);
        *per_master.entry(owner).or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "keys spread over all three masters");
    // Every master holds exactly the keys routed to it.
    let total: i64 = cluster
        .masters()
        .into_iter()
        .map(|m| {
            redis::cmd("DBSIZE")
                .query::<i64>(&mut cluster.client(m))
                .unwrap()
        })
        .sum();
    assert_eq!(total, 1200);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, 1200, "DBSIZE through the proxy sums every master");
}

/// Reads exactly `n` RESP replies of simple shapes (+, -, :, $) from a raw socket.
fn read_simple_replies(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut chunk = [0u8; 65536];
    while out.len() < n {
        // Parse what we have.
        while let Some(end) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[pos..pos + end]).to_string();
            if let Some(len) = line.strip_prefix('$') {
                let len: i64 = len.parse().unwrap();
                if len < 0 {
                    out.push("(nil)".into());
                    pos += end + 2;
                    continue;
                }
                let start = pos + end + 2;
                if buf.len() < start + len as usize + 2 {
                    break;
                }
                out.push(String::from_utf8_lossy(&buf[start..start + len as usize]).to_string());
                pos = start + len as usize + 2;
            } else {
                out.push(line);
                pos += end + 2;
            }
        }
        if out.len() >= n {
            break;
        }
        let k = s.read(&mut chunk).unwrap();
        assert!(
            k > 0,
            "proxy closed the connection after {} replies",
            out.len()
        );
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

#[test]
fn a_2000_command_pipeline_in_one_write_comes_back_in_order() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = Vec::new();
    for i in 0..1000 {
        let k = format!("p:{i}");
        let v = format!("v{i}");
        req.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    s.write_all(&req).unwrap();
    let replies = read_simple_replies(&mut s, 2000);
    for i in 0..1000 {
        assert_eq!(replies[2 * i], "+OK", "reply {}", 2 * i);
        assert_eq!(replies[2 * i + 1], format!("v{i}"), "reply {}", 2 * i + 1);
    }
}

#[test]
fn multi_key_commands_split_across_slots_and_merge_in_order() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    let pairs: Vec<(String, String)> = (0..100)
        .map(|i| (format!("m:{i}"), format!("val{i}")))
        .collect();
    let slots: std::collections::HashSet<u16> = pairs
        .iter()
        .map(|(k, _)| key_slot(k.as_bytes()).0)
        .collect();
    assert!(slots.len() > 50, "keys really span many slots");
    let _: () = redis::cmd("MSET").arg(&pairs).query(&mut c).unwrap();
    let mut keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    keys.insert(37, "m:missing".into());
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    assert_eq!(values.len(), 101);
    for (k, v) in keys.iter().zip(&values) {
        if k == "m:missing" {
            assert_eq!(v, &None);
        } else {
            assert_eq!(
                v.as_deref(),
                Some(format!("val{}", &k[2..]).as_str()),
                "{k}"
            );
        }
    }
    let exists: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut c).unwrap();
    assert_eq!(exists, 100);
    let touched: i64 = redis::cmd("TOUCH").arg(&keys[..10]).query(&mut c).unwrap();
    assert_eq!(touched, 10);
    let unlinked: i64 = redis::cmd("UNLINK").arg(&keys[..10]).query(&mut c).unwrap();
    assert_eq!(unlinked, 10);
    let deleted: i64 = redis::cmd("DEL").arg(&keys).query(&mut c).unwrap();
    assert_eq!(deleted, 90);
    let exists: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut c).unwrap();
    assert_eq!(exists, 0);

    // MSETNX: same slot works; across slots it is refused, as a cluster node would.
    let ok: i64 = redis::cmd("MSETNX")
        .arg("{u1}a")
        .arg("1")
        .arg("{u1}b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, 1);
    let err = redis::cmd("MSETNX")
        .arg("x1")
        .arg("1")
        .arg("x2")
        .arg("2")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    assert!(
        err.to_string()
            .contains("Keys in request don't hash to the same slot"),
        "{err}"
    );
    // Other multi-key commands across slots are refused too.
    let err = redis::cmd("SUNION")
        .arg("s1")
        .arg("s2")
        .query::<Vec<String>>(&mut c)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg("x1")
        .arg("x2")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0, "the refused MSETNX wrote nothing");
}

fn commandstat_calls(conn: &mut redis::Connection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn read_from_replica_serves_gets_from_replicas_and_writes_from_masters() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &["--read-from", "replica"]);
    let mut c = proxy.client();
    for i in 0..300 {
        let _: () = c.set(format!("r:{i}"), i).unwrap();
    }
    // Let replication catch up: every replica holds as many keys as the masters together.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<i64> = cluster
            .replicas()
            .iter()
            .map(|r| redis::cmd("DBSIZE").query(&mut cluster.client(*r)).unwrap())
            .collect();
        if counts.iter().sum::<i64>() == 300 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas did not catch up: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in cluster.nodes() {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut cluster.client(n))
            .unwrap();
    }
    for i in 0..300 {
        let v: i64 = c.get(format!("r:{i}")).unwrap();
        assert_eq!(v, i);
    }
    let mut replica_gets = 0;
    for r in cluster.replicas() {
        let n = commandstat_calls(&mut cluster.client(r), "get");
        assert!(n > 0, "replica {r} served no GET");
        replica_gets += n;
    }
    assert_eq!(replica_gets, 300);
    for m in cluster.masters() {
        assert_eq!(
            commandstat_calls(&mut cluster.client(m), "get"),
            0,
            "master {m} served a GET"
        );
    }
    // Writes still go to masters.
    let _: () = c.set("r:write", 1).unwrap();
    let set_on_masters: u64 = cluster
        .masters()
        .iter()
        .map(|m| commandstat_calls(&mut cluster.client(*m), "set"))
        .sum();
    assert_eq!(set_on_masters, 1);
}

#[test]
fn replies_that_fill_a_client_socket_it_does_not_read_come_back_whole_and_in_order() {
    // A reply that arrives while the client's writer is idle is written by the backend
    // connection's task; what a full socket does not take must reach the writer ahead of
    // every later reply. The client sends GETs of 5-59 KB values and reads nothing until
    // they are all sent: first 1,500 in one pipeline, then 400 one at a time (each then is
    // the only reply owed, so it is written where it arrives, until the socket is full).
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    let keys: Vec<(String, Vec<u8>)> = (0..19)
        .map(|i| {
            let len = 5_000 + i * 3_000;
            (format!("big:{i}"), vec![b'a' + i as u8; len])
        })
        .collect();
    for (k, v) in &keys {
        let _: () = c.set(k, v).unwrap();
    }
    let order: Vec<usize> = (0..1500).map(|i| (i * 7) % keys.len()).collect();
    send_then_read(&proxy, &keys, &order, None);
    let order: Vec<usize> = (0..400).map(|i| (i * 5) % keys.len()).collect();
    send_then_read(&proxy, &keys, &order, Some(Duration::from_millis(2)));
}

/// Sends a GET of `keys[i]` for each `i` of `order` (all in one write, or one per `pace`),
/// reading nothing until all are sent and half a second has passed; then checks the replies
/// byte for byte.
fn send_then_read(
    proxy: &Proxy,
    keys: &[(String, Vec<u8>)],
    order: &[usize],
    pace: Option<Duration>,
) {
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for &i in order {
        let (k, v) = &keys[i];
        requests.push(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).into_bytes());
        expected.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
        expected.extend_from_slice(v);
        expected.extend_from_slice(b"\r\n");
    }
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || match pace {
        None => w.write_all(&requests.concat()).unwrap(),
        Some(pace) => {
            for r in requests {
                w.write_all(&r).unwrap();
                std::thread::sleep(pace);
            }
        }
    });
    // Let the replies pile up in the socket before reading any.
    std::thread::sleep(Duration::from_millis(500));
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = vec![0u8; 1 << 16];
    while got.len() < expected.len() {
        match s.read(&mut buf) {
            Ok(k) if k > 0 => got.extend_from_slice(&buf[..k]),
            r => panic!("after {} of {} bytes: {r:?}", got.len(), expected.len()),
        }
    }
    writer.join().unwrap();
    let first_difference = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        got == expected,
        "replies differ from the values (first difference at byte {first_difference:?})"
    );
}
