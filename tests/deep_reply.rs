//! A reply nested as deep as a client can make Redis build passes through the proxy byte for
//! byte, and costs the other clients on the same shared backend connection nothing.
//!
//! `EVAL "local a = {}; local b = {a}; a[1] = b; return a" 0` makes Redis answer ~8,000 nested
//! one-element arrays (until Lua's stack limit, reported as an error element). The proxy runs
//! with one worker thread and one shared connection per node, so the EVAL's reply and another
//! client's 10,000 pipelined GETs travel on the same socket.
mod support;

use bytes::Bytes;
use std::sync::{Arc, Barrier};
use support::raw::{show, RawConn, Standalone};
use support::{Cluster, Proxy};

const DEEP_SCRIPT: &str = "local a = {}; local b = {a}; a[1] = b; return a";
const GETS: usize = 10_000;
/// Deep EVALs sent while the other client's pipeline is in flight.
const EVALS: usize = 20;

fn key(i: usize) -> String {
    format!("{{deep}}:{i}")
}

fn value(i: usize) -> String {
    format!("v{i}")
}

/// Sends `GETS` GETs of `{deep}:i` in one pipeline (written by a thread of its own, so the
/// replies are read while it writes) once `start` opens; returns the replies.
fn pipeline_gets(conn: &mut RawConn, start: &Barrier) -> Vec<Bytes> {
    let mut pipeline = Vec::new();
    for i in 0..GETS {
        pipeline.extend_from_slice(&RawConn::encode(&["GET", &key(i)]));
    }
    let mut writer = conn.try_clone_writer();
    start.wait();
    let writing = std::thread::spawn(move || {
        use std::io::Write;
        for chunk in pipeline.chunks(16 * 1024) {
            writer.write_all(chunk).expect("writing the pipeline");
        }
    });
    let replies = (0..GETS).map(|_| conn.read_reply()).collect();
    writing.join().unwrap();
    replies
}

fn deep_eval_alongside_a_pipeline(resp3: bool) {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &["--worker-threads", "1"]);
    let standalone = Standalone::start();

    // What one standalone Redis answers, keyless and with a key (the key pins the EVAL to the
    // node the GETs go to; the script does not touch it).
    let eval0 = ["EVAL", DEEP_SCRIPT, "0"];
    let eval1 = ["EVAL", DEEP_SCRIPT, "1", "{deep}"];
    let mut direct = RawConn::connect(standalone.addr);
    if resp3 {
        direct.hello3();
    }
    let want = direct.call(&eval0);
    let depth = want.windows(4).filter(|w| w == b"*1\r\n").count();
    assert!(
        depth > 7_000,
        "Redis nested only {depth} levels: {}",
        show(&want)
    );
    assert_eq!(direct.call(&eval1), want);

    let mut setup = RawConn::connect(proxy.addr());
    let pairs: Vec<String> = (0..GETS).flat_map(|i| [key(i), value(i)]).collect();
    let mut mset = vec!["MSET"];
    mset.extend(pairs.iter().map(String::as_str));
    assert_eq!(&setup.call(&mset)[..], b"+OK\r\n");

    let start = Arc::new(Barrier::new(2));
    let addr = proxy.addr();
    let gate = start.clone();
    let other = std::thread::spawn(move || {
        let mut conn = RawConn::connect(addr);
        if resp3 {
            conn.hello3();
        }
        pipeline_gets(&mut conn, &gate)
    });

    let mut deep = RawConn::connect(proxy.addr());
    if resp3 {
        deep.hello3();
    }
    start.wait();
    for i in 0..EVALS {
        let req: &[&str] = if i % 2 == 0 { &eval1 } else { &eval0 };
        let got = deep.call(req);
        assert!(
            got == want,
            "EVAL #{i} through the proxy: {} bytes, standalone Redis: {} bytes; proxy said {}",
            got.len(),
            want.len(),
            show(&got)
        );
    }

    let replies = other.join().expect("the pipelining client");
    for (i, r) in replies.iter().enumerate() {
        let v = value(i);
        let expected = format!("${}\r\n{v}\r\n", v.len());
        assert!(
            r[..] == *expected.as_bytes(),
            "GET #{i} of the other client answered {}",
            show(r)
        );
    }
    // The proxy and the EVAL client's connection are still fine.
    assert_eq!(&deep.call(&["GET", &key(7)])[..], b"$2\r\nv7\r\n");
}

#[test]
fn deep_eval_passes_through_while_another_client_pipelines_resp2() {
    deep_eval_alongside_a_pipeline(false);
}

#[test]
fn deep_eval_passes_through_while_another_client_pipelines_resp3() {
    deep_eval_alongside_a_pipeline(true);
}
