//! `slotproxy up`: from nothing to a working proxy in one command, and `down` stops the nodes.
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Stops whatever `up` started under `dir`, even when the test fails midway.
struct DownOnDrop(std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
            .args(["down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// Kills the `up` process (the proxy) on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_spawns_a_cluster_and_serves_right_after_it_says_ready() {
    support::redis_server_path();
    let dir = tempfile::tempdir().unwrap();
    let base = support::free_base_port(6);
    let listen = format!("127.0.0.1:{}", support::free_port());
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let bin = env!("CARGO_BIN_EXE_slotproxy");
    let _down = DownOnDrop(dir.path().to_path_buf());
    let mut child = Command::new(bin)
        .args(["up", "--dir"])
        .arg(dir.path())
        .args([
            "--base-port",
            &base.to_string(),
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) if line.starts_with("slotproxy ready") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                panic!("no ready line; output so far:\n{}", seen.join("\n"));
            }
        }
    };
    assert!(ready.contains("16384/16384"), "{ready}");
    assert!(
        seen.iter().any(|l| l.to_lowercase().contains("meet")),
        "progress was printed: {seen:?}"
    );

    // Right away: a SET/GET through the proxy.
    let mut c = redis::Client::open(format!("redis://{listen}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("up-key")
        .arg("works")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET").arg("up-key").query(&mut c).unwrap();
    assert_eq!(v, "works");

    drop(child);
    let down = Command::new(bin)
        .args(["down", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    // Every node is gone: nothing answers on the node ports.
    for p in base..base + 6 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "node on port {p} still running after down"
        );
    }
}

#[test]
fn up_with_tls_and_a_node_password_serves_with_them_and_down_stops_its_proxy() {
    support::redis_server_path();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("node-pw");
    support::secure::write_private(&pw, "up node secret");
    let cluster_dir = dir.path().join("cluster");
    let base = support::free_base_port(6);
    let listen = format!("127.0.0.1:{}", support::free_port());
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let bin = env!("CARGO_BIN_EXE_slotproxy");
    let _down = DownOnDrop(cluster_dir.clone());
    let mut child = Command::new(bin)
        .args(["up", "--tls", "--dir"])
        .arg(&cluster_dir)
        .args(["--base-port", &base.to_string(), "--listen", &listen])
        .args(["--metrics-listen", &metrics, "--password", "client-pw"])
        .arg("--node-password-file")
        .arg(&pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) if line.starts_with("slotproxy ready") => break,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no ready line; output so far:\n{}", seen.join("\n")),
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("TLS")) && seen.iter().any(|l| l.contains("password")),
        "up says what the nodes require: {seen:?}"
    );
    // The nodes speak only TLS and want the password; the proxy serves with both.
    let node = std::net::SocketAddr::from(([127, 0, 0, 1], base));
    assert!(!slotproxy::bootstrap::spawn::answers_ping(node));
    let certs = slotproxy::bootstrap::certs::CertPaths::in_dir(&cluster_dir.join("tls"));
    let conf =
        std::fs::read_to_string(cluster_dir.join(format!("node-{base}/redis.conf"))).unwrap();
    for line in [
        "port 0",
        "tls-cluster yes",
        "tls-replication yes",
        "requirepass \"up node secret\"",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line} in {conf}");
    }
    assert!(certs.complete());

    // `up` took the serve setting --password: clients must authenticate.
    let mut c = redis::Client::open(format!("redis://:client-pw@{listen}"))
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..50 {
        let key = format!("up-tls:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
        let v: i64 = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, i);
    }
    let mut anonymous = redis::Client::open(format!("redis://{listen}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let err = redis::cmd("GET")
        .arg("up-tls:1")
        .query::<Option<String>>(&mut anonymous)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");

    // `down` stops the proxy `up` started there, and says so, then the nodes.
    let down = Command::new(bin)
        .args(["down", "--dir"])
        .arg(&cluster_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(
        down.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(said.contains("stopping the proxy"), "{said}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy `up` started still runs after down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "nothing on {listen}"
    );
    assert!(!cluster_dir.join("slotproxy.pid").exists());
    for p in base..base + 6 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "node on port {p} still running after down"
        );
    }
}
