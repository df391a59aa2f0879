//! A slot migrated by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while a client
//! increments a key in it through the proxy: the proxy follows ASK and MOVED itself, so the client
//! sees no error and no increment is lost.
mod support;

use slotproxy::cluster::slot::key_slot;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Cluster, Proxy};

/// A worker's count of good rounds, once it is clear it saw no error at all.
fn rounds_without_errors(who: &str, (ok, errors): (i64, Vec<String>)) -> i64 {
    assert!(
        errors.is_empty(),
        "{who} saw {} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    ok
}

fn node_id(conn: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(conn).unwrap()
}

#[test]
fn slot_migration_under_load_loses_nothing_and_shows_no_redirect() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let key = "{mig}counter";
    let slot = key_slot(key.as_bytes()).0;
    let source = cluster.master_of_slot(slot);
    let target = *cluster.masters().iter().find(|m| **m != source).unwrap();

    // Fill the slot so the migration takes a while (and keys move in several batches).
    let mut c = proxy.client();
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{mig}}filler:{i}"))
            .arg("x".repeat(100))
            .query(&mut c)
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        let mut c = proxy.client();
        std::thread::spawn(move || {
            let (mut ok, mut errors) = (0i64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match redis::cmd("INCR").arg(key).query::<i64>(&mut c) {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        })
    };
    // A second client splits MSET and MGET across slots, one key of each in the migrating slot:
    // that part meets ASK and then MOVED while the others do not, and the merged reply must still
    // be exactly what was just written.
    let splitter = {
        let stop = stop.clone();
        let mut c = proxy.client();
        std::thread::spawn(move || {
            let keys = ["{mig}split", "split:a", "split:b", "split:c"];
            let (mut ok, mut errors) = (0i64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let v = ok.to_string();
                let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, v.as_str())).collect();
                let result = redis::cmd("MSET")
                    .arg(&pairs)
                    .query::<()>(&mut c)
                    .and_then(|()| redis::cmd("MGET").arg(&keys).query::<Vec<String>>(&mut c));
                match result {
                    Ok(got) if got.iter().all(|g| *g == v) => ok += 1,
                    Ok(got) => errors.push(format!("MGET after MSET {v}: {got:?}")),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    let mut src = cluster.client(source);
    let mut tgt = cluster.client(target);
    let src_id = node_id(&mut src);
    let tgt_id = node_id(&mut tgt);
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&src_id)
        .query(&mut tgt)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&tgt_id)
        .query(&mut src)
        .unwrap();
    let started = Instant::now();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg(target.ip().to_string())
            .arg(target.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .unwrap();
        // Keep the ASK window open long enough for the client to cross it many times.
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "migration did not finish"
        );
    }
    // Target first, then source, then the rest, as the cluster spec recommends.
    let mut order = vec![target, source];
    order.extend(
        cluster
            .masters()
            .into_iter()
            .filter(|m| *m != target && *m != source),
    );
    for node in &order {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&tgt_id)
            .query(&mut cluster.client(*node))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let ok = rounds_without_errors("the INCR client", worker.join().unwrap());
    assert!(ok > 100, "only {ok} INCRs ran");
    let split_ok = rounds_without_errors("the splitting client", splitter.join().unwrap());
    assert!(split_ok > 50, "only {split_ok} split MSET/MGET rounds ran");

    let owner: SocketAddr = cluster.master_of_slot(slot);
    assert_eq!(owner, target, "the slot moved");
    let direct: i64 = redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.client(target))
        .unwrap();
    assert_eq!(direct, ok, "every INCR counted exactly once");
    let through: i64 = redis::cmd("GET")
        .arg(key)
        .query(&mut proxy.client())
        .unwrap();
    assert_eq!(through, ok);
}
