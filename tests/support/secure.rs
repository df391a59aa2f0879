//! Test clusters whose nodes require a password, an ACL user, or TLS: what the nodes are told
//! (a [`NodeSecurity`] from [`ClusterOptions`]), and how the harness itself gets in.
//!
//! Every node started by the harness registers how to reach it (its [`NodeAccess`]) by address,
//! so the plain helpers (`connect`, `cluster_nodes`, `info_field`, `Cluster::client`) keep
//! working for protected clusters without each test passing credentials around. redis-rs is
//! built without TLS, so TLS nodes are reached with bootstrap's `NodeClient` (and `redis-cli
//! --tls` in tests that want a real client).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use slotproxy::bootstrap::certs::{self, CertPaths};
use slotproxy::bootstrap::node_client::{NodeClient, Reply};
use slotproxy::bootstrap::{NodeAccess, NodeCredentials, NodeSecurity};
use slotproxy::config::Secret;

use super::{Cluster, ClusterOptions};

static ACCESS: Mutex<Option<HashMap<SocketAddr, NodeAccess>>> = Mutex::new(None);

/// Remembers how to reach the node at `addr`.
pub fn register(addr: SocketAddr, access: NodeAccess) {
    let mut map = ACCESS.lock().unwrap_or_else(|p| p.into_inner());
    map.get_or_insert_with(HashMap::new).insert(addr, access);
}

/// Forgets the node at `addr` (it was stopped for good).
pub fn unregister(addr: SocketAddr) {
    let mut map = ACCESS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = map.as_mut() {
        map.remove(&addr);
    }
}

/// How to reach `addr`: what its harness node registered, else plain TCP without `AUTH`.
pub fn access(addr: SocketAddr) -> NodeAccess {
    let map = ACCESS.lock().unwrap_or_else(|p| p.into_inner());
    map.as_ref()
        .and_then(|m| m.get(&addr).cloned())
        .unwrap_or_default()
}

/// A blocking, authenticated (and for TLS nodes encrypted) connection to one node.
pub fn node_client(addr: SocketAddr) -> NodeClient {
    NodeClient::connect_with(addr, Duration::from_secs(5), &access(addr))
        .unwrap_or_else(|e| panic!("connecting to node {addr}: {e}"))
}

/// One command to a node, its reply as a string (status or bulk); panics on anything else.
pub fn node_string(addr: SocketAddr, args: &[&str]) -> String {
    node_client(addr)
        .call_string(args)
        .unwrap_or_else(|e| panic!("{} on {addr}: {e}", args.join(" ")))
}

/// One command to a node, its raw reply.
pub fn node_call(addr: SocketAddr, args: &[&str]) -> Reply {
    node_client(addr)
        .call(args)
        .unwrap_or_else(|e| panic!("{} on {addr}: {e}", args.join(" ")))
}

/// The redis-rs connection settings for `addr`, with its credentials. Panics for a TLS node
/// (redis-rs is built without TLS here): use [`node_client`] or `redis-cli --tls` there.
pub fn connection_info(addr: SocketAddr) -> redis::ConnectionInfo {
    let access = access(addr);
    assert!(
        access.tls.is_none(),
        "{addr} speaks only TLS; use support::node_client (redis-rs here has no TLS)"
    );
    redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()),
        redis: redis::RedisConnectionInfo {
            username: access.auth.user.clone(),
            password: access
                .auth
                .password
                .as_ref()
                .map(|p| p.expose().to_string()),
            ..Default::default()
        },
    }
}

/// Credentials for test nodes: the default user with a password (`requirepass`).
pub fn password(pw: &str) -> NodeCredentials {
    NodeCredentials {
        user: None,
        password: Secret::new(pw),
        rules: String::new(),
    }
}

/// Credentials for test nodes: an ACL user with `rules` (the default user is turned off).
pub fn acl_user(user: &str, pw: &str, rules: &str) -> NodeCredentials {
    NodeCredentials {
        user: Some(user.into()),
        password: Secret::new(pw),
        rules: rules.into(),
    }
}

/// What nodes started with `opts` under `dir` require; certificates are generated into
/// `dir/tls` for TLS nodes.
pub fn node_security(dir: &Path, opts: &ClusterOptions) -> NodeSecurity {
    let tls = opts.tls.then(|| {
        certs::generate(&dir.join("tls"), &["127.0.0.1".parse().unwrap()])
            .unwrap_or_else(|e| panic!("generating test certificates: {e}"))
    });
    let security = NodeSecurity {
        auth: opts.auth.clone(),
        tls,
    };
    security
        .check()
        .unwrap_or_else(|e| panic!("test node security: {e}"));
    if let Some(auth) = &security.auth {
        write_private(&password_file(dir), auth.password.expose());
    }
    security
}

/// Where a test cluster's password file is (for `--node-password-file`).
pub fn password_file(dir: &Path) -> PathBuf {
    dir.join("node-password")
}

/// Writes a file only its owner may read.
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Cluster {
    /// The certificates of a TLS cluster.
    pub fn certs(&self) -> Option<&CertPaths> {
        self.raw().security().tls.as_ref()
    }

    /// The flags a proxy needs to reach these nodes: `--node-password-file` (and
    /// `--node-user`), and for TLS nodes `--node-tls` with the CA and the client certificate.
    pub fn proxy_args(&self) -> Vec<String> {
        let security = self.raw().security();
        let mut args = Vec::new();
        if let Some(auth) = &security.auth {
            args.push("--node-password-file".into());
            args.push(password_file(self.raw().dir()).display().to_string());
            if let Some(user) = &auth.user {
                args.push("--node-user".into());
                args.push(user.clone());
            }
        }
        if let Some(tls) = &security.tls {
            for (flag, path) in [
                ("--node-tls-ca-file", &tls.ca_cert),
                ("--node-tls-cert-file", &tls.client_cert),
                ("--node-tls-key-file", &tls.client_key),
            ] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            args.push("--node-tls".into());
        }
        args
    }

    /// A connection straight to one node, as a NodeClient (works for TLS nodes too).
    pub fn node_client(&self, addr: SocketAddr) -> NodeClient {
        node_client(addr)
    }
}

/// `args` as `&str`s, for `Proxy::start`.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
