//! TLS on both sides of the proxy, with real servers and certificates generated at test time
//! (`bootstrap::certs`): redis-cli and Rust clients (tokio-rustls, and rustls over std) through
//! the TLS listener, mTLS accepting a good client certificate and refusing none or an expired
//! one, a TLS cluster formed by `bootstrap --spawn --tls` served end to end, certificate rotation
//! by SIGHUP with a connection open across it, hostile bytes on the TLS port, a missing
//! certificate file at start-up, and random pipelines (split commands, transactions, BLPOP, odd
//! keys, 100 KB values) compared byte for byte with a standalone Redis.
mod support;

use slotproxy::bootstrap::certs::{self, CertPaths, Validity};
use slotproxy::bootstrap::node_client::Reply;
use slotproxy::cluster::slot::key_slot;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::tls_client::{cert_der, wait_listening, TlsClient};
use support::{Cluster, Proxy};

/// Certificates for the proxy's listener (its node certificate names 127.0.0.1).
fn listener_certs(dir: &std::path::Path) -> CertPaths {
    certs::generate(dir, &["127.0.0.1".parse().unwrap()]).unwrap()
}

/// A proxy in front of `cluster` with a TLS listener; with `mtls`, clients need a certificate
/// from the same CA.
fn tls_proxy(cluster: &Cluster, certs: &CertPaths, mtls: bool) -> (Proxy, SocketAddr) {
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut args = vec![
        "--tls-listen".to_string(),
        tls_addr.to_string(),
        "--tls-cert-file".into(),
        certs.node_cert.display().to_string(),
        "--tls-key-file".into(),
        certs.node_key.display().to_string(),
    ];
    if mtls {
        args.push("--tls-client-ca-file".into());
        args.push(certs.ca_cert.display().to_string());
    }
    let proxy = Proxy::start(&cluster.nodes(), &support::secure::strs(&args));
    wait_listening(tls_addr);
    (proxy, tls_addr)
}

fn bulk(reply: Reply) -> String {
    match reply {
        Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

#[test]
fn redis_cli_with_tls_is_served_through_the_tls_port() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let certs = listener_certs(dir.path());
    let (_proxy, tls_addr) = tls_proxy(&cluster, &certs, false);
    let cli = |args: &[&str]| {
        let out = Command::new(support::redis_cli_path())
            .args(["--tls", "--cacert"])
            .arg(&certs.ca_cert)
            .args(["-h", "127.0.0.1", "-p", &tls_addr.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "tls-cli", "over tls"]), "OK");
    assert_eq!(cli(&["GET", "tls-cli"]), "over tls");
    // The value really went to the cluster.
    let owner = cluster.master_of_slot(key_slot(b"tls-cli").0);
    let v: String = redis::cmd("GET")
        .arg("tls-cli")
        .query(&mut cluster.client(owner))
        .unwrap();
    assert_eq!(v, "over tls");
}

/// A tokio-rustls connection to `addr`, verified against `ca`, handshake done.
async fn tls_connect(
    addr: SocketAddr,
    ca: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let settings = slotproxy::config::NodeTls {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    };
    let config = slotproxy::tls::client_config(&settings).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy")
}

#[test]
fn a_tokio_rustls_client_speaks_resp_through_the_tls_port() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let certs = listener_certs(dir.path());
    let (_proxy, tls_addr) = tls_proxy(&cluster, &certs, false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let replies = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = tls_connect(tls_addr, &certs.ca_cert).await;
        tls.write_all(
            b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$6\r\ntokio1\r\n$2\r\nv1\r\n*2\r\n$3\r\nGET\r\n$6\r\ntokio1\r\n",
        )
        .await
        .unwrap();
        let want = b"+PONG\r\n+OK\r\n$2\r\nv1\r\n";
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let read_all = async {
            while got.len() < want.len() {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("replies within 10 s");
        got
    });
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+PONG\r\n+OK\r\n$2\r\nv1\r\n"
    );
}

#[test]
fn mtls_accepts_a_good_client_certificate_and_refuses_none_or_an_expired_one() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let certs = listener_certs(dir.path());
    let (mut proxy, tls_addr) = tls_proxy(&cluster, &certs, true);
    let good = (certs.client_cert.as_path(), certs.client_key.as_path());
    let mut bystander = TlsClient::connect(tls_addr, &certs.ca_cert, Some(good)).unwrap();
    bystander
        .ping()
        .expect("a client with a good certificate is served");

    // TLS 1.3 finishes the client's side of the handshake before the server has checked the
    // client's certificate, so the refusal may show on the first command instead.
    let refused = |client: Option<(&std::path::Path, &std::path::Path)>| match TlsClient::connect(
        tls_addr,
        &certs.ca_cert,
        client,
    ) {
        Err(e) => e,
        Ok(mut c) => match c.ping() {
            Err(e) => e,
            Ok(()) => panic!("the proxy served a client it should refuse"),
        },
    };
    let without = refused(None);
    let (old_cert, old_key) = certs::issue_client(&certs, "expired", Validity::Expired).unwrap();
    let expired = refused(Some((&old_cert, &old_key)));
    println!("without a certificate: {without}\nexpired certificate: {expired}");

    assert!(proxy.running(), "the proxy is alive");
    bystander
        .ping()
        .expect("the open connection is unharmed by the refusals");
    let mut fresh = TlsClient::connect(tls_addr, &certs.ca_cert, Some(good)).unwrap();
    assert_eq!(
        fresh.call(&["SET", "mtls", "ok"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(bulk(bystander.call(&["GET", "mtls"]).unwrap()), "ok");
}

#[test]
fn sighup_rotates_the_certificate_for_new_connections_and_keeps_open_ones() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let certs = listener_certs(&live);
    let (mut proxy, tls_addr) = tls_proxy(&cluster, &certs, false);
    let mut open = TlsClient::connect(tls_addr, &certs.ca_cert, None).unwrap();
    let old_der = cert_der(&certs.node_cert);
    assert_eq!(open.peer_certificate(), old_der);
    open.ping().unwrap();

    // A new CA and certificate replace the files the proxy was started with.
    let next = listener_certs(&dir.path().join("next"));
    std::fs::copy(&next.node_cert, &certs.node_cert).unwrap();
    std::fs::copy(&next.node_key, &certs.node_key).unwrap();
    let new_der = cert_der(&next.node_cert);
    assert_ne!(new_der, old_der);
    assert!(support::signal_pid(proxy.pid(), "HUP"), "SIGHUP sent");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the reload, the proxy still presents the old certificate, which only the old
        // CA verifies; after it, the new one, which only the new CA verifies.
        if let Ok(mut c) = TlsClient::connect(tls_addr, &next.ca_cert, None) {
            assert_eq!(c.peer_certificate(), new_der, "the new certificate");
            c.ping().unwrap();
            break;
        }
        assert!(
            proxy.running(),
            "the proxy died on SIGHUP:\n{}",
            proxy.log_tail(20)
        );
        assert!(
            Instant::now() < deadline,
            "no new connection saw the new certificate:\n{}",
            proxy.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        TlsClient::connect(tls_addr, &certs.ca_cert, None).is_err(),
        "new connections no longer get the old certificate"
    );
    // The connection opened before the reload keeps working, on its old certificate.
    assert_eq!(open.peer_certificate(), old_der);
    for i in 0..20 {
        let v = i.to_string();
        assert_eq!(
            open.call(&["SET", "rotated", &v]).unwrap(),
            Reply::Status("OK".into())
        );
        assert_eq!(bulk(open.call(&["GET", "rotated"]).unwrap()), v);
    }
    assert!(proxy.running());
}

#[test]
fn plaintext_and_random_bytes_on_the_tls_port_leave_everyone_else_unharmed() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let certs = listener_certs(dir.path());
    let (mut proxy, tls_addr) = tls_proxy(&cluster, &certs, false);
    let mut good = TlsClient::connect(tls_addr, &certs.ca_cert, None).unwrap();
    good.ping().unwrap();
    let mut plain_client = proxy.client();

    let hostile = std::thread::spawn(move || {
        let mut closed = 0;
        // A plaintext client speaking RESP to the TLS port.
        let mut plain = TcpStream::connect(tls_addr).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = plain.write_all(b"*1\r\n$4\r\nPING\r\n");
        let mut buf = [0u8; 64];
        let got = plain.read(&mut buf).unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&buf[..got]).contains("PONG"),
            "a plaintext client was served on the TLS port"
        );
        closed += 1;
        // Random bytes, in bursts, on many connections.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20 {
            let mut junk = vec![0u8; 64 * 1024];
            for b in junk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if let Ok(mut s) = TcpStream::connect(tls_addr) {
                let _ = s.write_all(&junk);
                closed += 1;
            }
        }
        closed
    });
    // Meanwhile the TLS client and a plain-port client are served, every request.
    for i in 0..300 {
        let v = i.to_string();
        assert_eq!(
            good.call(&["SET", "calm", &v]).unwrap(),
            Reply::Status("OK".into())
        );
        assert_eq!(bulk(good.call(&["GET", "calm"]).unwrap()), v);
        let got: String = redis::cmd("GET")
            .arg("calm")
            .query(&mut plain_client)
            .unwrap();
        assert_eq!(got, v);
    }
    assert!(hostile.join().unwrap() > 10);
    assert!(proxy.running(), "the proxy is alive");
    let mut after = TlsClient::connect(tls_addr, &certs.ca_cert, None).unwrap();
    after.ping().unwrap();
    good.ping().unwrap();
}

#[test]
fn a_missing_certificate_file_at_startup_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = listener_certs(dir.path());
    let missing = dir.path().join("no-such-cert.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["serve", "--seed", "127.0.0.1:1", "--listen"])
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .arg("--tls-listen")
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .arg("--tls-cert-file")
        .arg(&missing)
        .arg("--tls-key-file")
        .arg(&certs.node_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 20 s with a missing certificate file:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "names the file: {stderr}"
    );
}

/// Stops what `bootstrap --spawn` started under a dir, even when the test fails midway.
struct DownOnDrop(std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
            .args(["down", "--purge", "--dir"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn a_cluster_formed_by_bootstrap_spawn_tls_is_served_end_to_end() {
    support::redis_server_path();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let pw = tmp.path().join("pw");
    support::secure::write_private(&pw, "tls and a password");
    let base = support::free_base_port(6);
    let _down = DownOnDrop(dir.clone());
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["bootstrap", "--spawn", "--tls", "--dir"])
        .arg(&dir)
        .args(["--base-port", &base.to_string(), "--node-password-file"])
        .arg(&pw)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cluster ready"), "{stdout}");
    let certs = CertPaths::in_dir(&dir.join("tls"));
    assert!(certs.complete(), "certificates in {}", certs.dir.display());
    let seeds: Vec<SocketAddr> = (0..6)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], base + i)))
        .collect();
    // The nodes speak nothing but TLS: a plaintext PING gets no PONG.
    assert!(!slotproxy::bootstrap::spawn::answers_ping(seeds[0]));

    let args = [
        "--node-tls".to_string(),
        "--node-tls-ca-file".into(),
        certs.ca_cert.display().to_string(),
        "--node-tls-cert-file".into(),
        certs.client_cert.display().to_string(),
        "--node-tls-key-file".into(),
        certs.client_key.display().to_string(),
        "--node-password-file".into(),
        pw.display().to_string(),
    ];
    let proxy = Proxy::start(&seeds, &support::secure::strs(&args));
    let mut c = proxy.client();
    let access = slotproxy::bootstrap::NodeAccess::new(
        slotproxy::config::NodeAuth {
            user: None,
            password: Some(slotproxy::config::Secret::new("tls and a password")),
        },
        Some(&certs.node_tls()),
    )
    .unwrap();
    let mut owners = std::collections::HashSet::new();
    for i in 0..200 {
        let key = format!("enc:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
        let v: i64 = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, i);
        // Straight to the nodes over TLS: the key is on exactly one master.
        if owners.len() < 3 {
            let holders: Vec<SocketAddr> = seeds[..3]
                .iter()
                .copied()
                .filter(|&node| {
                    let mut nc = slotproxy::bootstrap::node_client::NodeClient::connect_with(
                        node,
                        Duration::from_secs(5),
                        &access,
                    )
                    .unwrap();
                    // Other masters answer MOVED.
                    nc.call(&["EXISTS", &key]).unwrap() == Reply::Int(1)
                })
                .collect();
            assert_eq!(holders.len(), 1, "{key} on {holders:?}");
            owners.insert(holders[0]);
        }
    }
    assert_eq!(owners.len(), 3, "keys on every master");
    // A transaction and a blocking command use dedicated TLS connections.
    let (_, n): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("{enc}n")
        .arg(1)
        .cmd("INCR")
        .arg("{enc}n")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let _: i64 = redis::cmd("RPUSH")
        .arg("{enc}q")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let popped: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("{enc}q")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(popped, Some(("{enc}q".into(), "x".into())));
}

/// Sends `pipeline` through a TLS connection to `addr` (one write, while a second task reads)
/// and returns every byte up to the close.
fn tls_replies(addr: SocketAddr, ca: &std::path::Path, pipeline: Vec<u8>) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut rd, mut wr) = tokio::io::split(tls_connect(addr, ca).await);
        let writer = tokio::spawn(async move {
            wr.write_all(&pipeline).await.unwrap();
            wr.flush().await.unwrap();
            wr // kept open: closing it would send close_notify before the replies are read
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut out)).await;
        match read.expect("replies within 60 s") {
            Ok(_) => {}
            // A peer that closes its socket without close_notify: the replies are all there.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("TLS read: {e} after {} bytes", out.len()),
        }
        drop(writer.await.unwrap());
        out
    })
}

#[test]
fn a_random_pipeline_through_the_tls_port_gets_the_bytes_a_standalone_redis_sends() {
    use support::pipelines::{
        assert_same_bytes, commands, encode_with_quit, odd_argument, pipeline_of, replies, Draw,
    };
    use support::standalone::Standalone;
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let certs = listener_certs(dir.path());
    let (_proxy, tls_addr) = tls_proxy(&cluster, &certs, false);
    let redis = Standalone::start(&[]);
    // Everyday commands (split multi-key ones, transactions, BLPOP), then odd keys and values
    // with 100 KB values now and then: replies larger than a TLS record, many records per write.
    let draws: [(u64, Draw); 2] = [(51, commands), (52, odd_argument)];
    for (seed, draw) in draws {
        let pipeline = encode_with_quit(&pipeline_of(seed, false, 2000, draw));
        let want = replies(redis.addr, &pipeline);
        let got = tls_replies(tls_addr, &certs.ca_cert, pipeline);
        assert_same_bytes(&format!("seed {seed} through TLS"), &want, &got);
    }
}
