//! INFO, as one standalone Redis holding the whole data set would answer it: the proxy's own
//! `server` (with the nodes' `redis_version`), `clients`, `cpu`, `cluster` (`cluster_enabled:0`)
//! and `proxy` sections, and the masters' `memory`, `persistence`, `stats`, `replication`,
//! `commandstats`, `errorstats`, `latencystats` and `keyspace` combined, each field in the way
//! that keeps its meaning (README lists them).
use crate::clients::ClientType;
use crate::fanout::broadcast::{self, Broadcast, Nodes, Then};
use crate::forward::Client;
use crate::local::REDIS_VERSION;
use crate::protocol::framer::Request;
use crate::protocol::reply::{self, Proto};
use crate::proxy::Proxy;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Every section, in Redis's order; `(name, from the nodes, in "default")`.
const SECTIONS: &[(&str, bool, bool)] = &[
    ("server", true, true),
    ("clients", false, true),
    ("memory", true, true),
    ("persistence", true, true),
    ("stats", true, true),
    ("replication", true, true),
    ("cpu", false, true),
    ("modules", true, true),
    ("commandstats", true, false),
    ("errorstats", true, true),
    ("latencystats", true, false),
    ("cluster", false, true),
    ("keyspace", true, true),
    ("proxy", false, true),
];

/// An INFO whose node sections are on their way: the proxy's sections, rendered when asked.
#[derive(Debug)]
pub struct InfoReply {
    /// The sections, in output order.
    sections: Vec<(&'static str, Section)>,
}

#[derive(Debug)]
enum Section {
    /// The proxy's own text.
    Own(String),
    /// Combined from the masters' replies.
    Nodes,
    /// The proxy's server fields (these) after the nodes' version and build.
    Server(String),
    /// The masters' stats, with the proxy's own connection counts in place of theirs (the
    /// nodes count the proxy's connections, not the clients').
    Stats { connections: u64, rejected: u64 },
}

/// INFO [section ...]: renders the proxy's sections now and asks every master for the rest
/// (`Err`: the broadcast to await).
pub fn start(proxy: &Proxy, client: Client, req: &Request) -> Result<Bytes, Broadcast> {
    let wanted: Vec<String> = (1..req.argc())
        .map(|i| String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase())
        .collect();
    let has = |w: &str| wanted.iter().any(|x| x == w);
    let everything = has("all") || has("everything");
    let default = wanted.is_empty() || has("default");
    let sections: Vec<(&'static str, Section)> = SECTIONS
        .iter()
        .filter(|(name, _, dflt)| everything || (default && *dflt) || has(name))
        .map(|&(name, node, _)| {
            let s = match (name, node) {
                ("server", _) => Section::Server(server_tail(proxy)),
                ("stats", _) => Section::Stats {
                    connections: proxy.clients().connections_received.load(Ordering::Relaxed),
                    rejected: proxy.clients().rejected.load(Ordering::Relaxed),
                },
                (_, true) => Section::Nodes,
                (_, false) => Section::Own(local_section(proxy, name)),
            };
            (name, s)
        })
        .collect();
    let node_sections: Vec<&str> = sections
        .iter()
        .filter(|(_, s)| !matches!(s, Section::Own(_)))
        .map(|(n, _)| *n)
        .collect();
    let info = InfoReply { sections };
    if node_sections.is_empty() {
        return Ok(info.finish(&[], client.proto));
    }
    let mut args = vec!["INFO"];
    args.extend(node_sections);
    let bytes = Request::from_args(&args).bytes().clone();
    match broadcast::send(
        proxy,
        client,
        bytes,
        Nodes::Masters,
        Then::Info(Box::new(info)),
    ) {
        Ok(b) => Err(b),
        Err(e) => Ok(e),
    }
}

impl InfoReply {
    /// The client's reply, from the masters' INFO replies.
    pub fn finish(self, replies: &[(SocketAddr, Bytes)], proto: Proto) -> Bytes {
        if let Some((_, e)) = replies.iter().find(|(_, r)| r.first() == Some(&b'-')) {
            return e.clone();
        }
        let nodes: Vec<BTreeMap<String, Vec<(String, String)>>> = replies
            .iter()
            .map(|(_, r)| parse(&String::from_utf8_lossy(text_payload(r))))
            .collect();
        let mut text = String::new();
        for (name, own) in self.sections {
            let body = match own {
                Section::Own(body) => body,
                Section::Server(tail) => server_section(&nodes) + &tail,
                Section::Nodes => combine(name, &nodes),
                Section::Stats {
                    connections,
                    rejected,
                } => combine(name, &nodes)
                    .split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|l| match l.split_once(':') {
                        Some(("total_connections_received", _)) => {
                            format!("total_connections_received:{connections}\r\n")
                        }
                        Some(("rejected_connections", _)) => {
                            format!("rejected_connections:{rejected}\r\n")
                        }
                        _ => format!("{l}\r\n"),
                    })
                    .collect(),
            };
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = name.to_string();
            match name {
                "cpu" => title.make_ascii_uppercase(),
                _ => title[..1].make_ascii_uppercase(),
            }
            let _ = write!(text, "# {title}\r\n{body}");
        }
        verbatim(&text, proto)
    }
}

/// A bulk string in RESP2, a verbatim `txt` string in RESP3, as Redis answers INFO.
pub fn verbatim(text: &str, proto: Proto) -> Bytes {
    match proto {
        Proto::Resp2 => reply::bulk(text.as_bytes()),
        Proto::Resp3 => {
            let mut out = BytesMut::with_capacity(text.len() + 16);
            out.extend_from_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.freeze()
        }
    }
}

/// The text of a bulk (`$`) or verbatim (`=`, RESP3) string reply; empty for anything else.
fn text_payload(r: &[u8]) -> &[u8] {
    let Some(nl) = r.iter().position(|&b| b == b'\n') else {
        return b"";
    };
    let body = r[nl + 1..].strip_suffix(b"\r\n").unwrap_or(b"");
    match r.first() {
        Some(b'$') => body,
        Some(b'=') => body.get(4..).unwrap_or(b""), // `txt:`
        _ => b"",
    }
}

/// An INFO reply as section -> fields in order.
fn parse(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim_end) {
        if let Some(title) = line.strip_prefix("# ") {
            section = title.to_ascii_lowercase();
            out.entry(section.clone()).or_default();
        } else if let Some((k, v)) = line.split_once(':') {
            out.entry(section.clone())
                .or_default()
                .push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// One value from one node, for fields that are settings or identities, not amounts.
const FIRST: &[&str] = &[
    "total_system_memory",
    "lru_clock",
    "master_repl_offset",
    "second_repl_offset",
    "repl_backlog_first_byte_offset",
    "master_replid",
    "master_replid2",
    "mem_fragmentation_ratio",
    "allocator_frag_ratio",
    "allocator_rss_ratio",
    "rss_overhead_ratio",
    "used_memory_dataset_perc",
    "maxmemory_policy",
    "mem_allocator",
    "io_threads_active",
    "current_eviction_exceeded_time",
];

/// The largest value: flags (in progress, enabled) and durations.
fn takes_max(k: &str) -> bool {
    k.ends_with("_in_progress")
        || k.ends_with("_time_sec")
        || k.ends_with("_scheduled")
        || matches!(
            k,
            "loading"
                | "async_loading"
                | "aof_enabled"
                | "repl_backlog_active"
                | "mem_not_counted_for_evict"
        )
}

/// The fields of section `name` combined over the masters: integers summed (sizes, counters),
/// except [`FIRST`] (one node's), the oldest `rdb_last_save_time`, the largest of flags and
/// durations, a status `ok` only if every node's is; `*_human` recomputed from the sum;
/// `key=value,...` fields (keyspace, commandstats, errorstats) combined sub-field by sub-field
/// (see [`combine_subfields`]); `slaveN` lines (one node's replicas) left out.
fn combine(name: &str, nodes: &[BTreeMap<String, Vec<(String, String)>>]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in nodes {
        for (k, v) in node.get(name).map(Vec::as_slice).unwrap_or(&[]) {
            if k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let e = values.entry(k.clone()).or_insert_with(|| {
                order.push(k.clone());
                Vec::new()
            });
            e.push(v.clone());
        }
    }
    let mut out = String::new();
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    for k in &order {
        let vs = &values[k];
        let v = if let Some(base) = k.strip_suffix("_human") {
            match merged.get(base).and_then(|b| b.parse::<i64>().ok()) {
                Some(n) => bytes_to_human(n),
                None => vs[0].clone(),
            }
        } else if k == "rdb_last_save_time" {
            let min = vs.iter().filter_map(|v| v.parse::<i64>().ok()).min();
            min.map_or_else(|| vs[0].clone(), |m| m.to_string())
        } else if k.ends_with("_status") {
            vs.iter()
                .find(|v| v.as_str() != "ok")
                .unwrap_or(&vs[0])
                .clone()
        } else if FIRST.contains(&k.as_str()) {
            vs[0].clone()
        } else if vs.iter().all(|v| v.parse::<i64>().is_ok()) {
            let ints = vs.iter().filter_map(|v| v.parse::<i64>().ok());
            if takes_max(k) {
                ints.max().unwrap_or(0).to_string()
            } else {
                ints.fold(0i64, i64::saturating_add).to_string()
            }
        } else if vs.iter().all(|v| v.contains('=')) {
            combine_subfields(vs)
        } else if k.starts_with("instantaneous_") && vs.iter().all(|v| v.parse::<f64>().is_ok()) {
            let sum: f64 = vs.iter().filter_map(|v| v.parse::<f64>().ok()).sum();
            format!("{sum:.2}")
        } else {
            vs[0].clone()
        };
        let _ = write!(out, "{k}:{v}\r\n");
        merged.insert(k.clone(), v);
    }
    out
}

/// `a=1,b=2` values from several nodes, combined per sub-field: integers summed, except
/// `avg_ttl` (weighted by `expires`), `usec_per_call` (recomputed from the sums), latency
/// percentiles `pNN` (the largest); anything else from the first node.
fn combine_subfields(vs: &[String]) -> String {
    let parsed: Vec<Vec<(&str, &str)>> = vs
        .iter()
        .map(|v| v.split(',').filter_map(|kv| kv.split_once('=')).collect())
        .collect();
    let get = |node: &[(&str, &str)], k: &str| -> Option<f64> {
        node.iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| v.parse().ok())
    };
    let sum = |k: &str| -> f64 { parsed.iter().filter_map(|n| get(n, k)).sum() };
    let mut out = Vec::new();
    for (k, v) in &parsed[0] {
        let merged = match *k {
            "avg_ttl" => {
                let expires = sum("expires");
                let weighted: f64 = parsed
                    .iter()
                    .map(|n| get(n, "avg_ttl").unwrap_or(0.0) * get(n, "expires").unwrap_or(0.0))
                    .sum();
                let avg = if expires > 0.0 {
                    weighted / expires
                } else {
                    0.0
                };
                format!("{}", avg as i64)
            }
            "usec_per_call" => {
                let calls = sum("calls");
                let per = if calls > 0.0 {
                    sum("usec") / calls
                } else {
                    0.0
                };
                format!("{per:.2}")
            }
            p if p.starts_with('p') && v.contains('.') => {
                let max = parsed.iter().filter_map(|n| get(n, p)).fold(0.0, f64::max);
                format!("{max:.3}")
            }
            _ if v.parse::<i64>().is_ok() => {
                let s: i64 = parsed
                    .iter()
                    .filter_map(|n| n.iter().find(|(n, _)| n == k))
                    .filter_map(|(_, v)| v.parse::<i64>().ok())
                    .sum();
                s.to_string()
            }
            _ => v.to_string(),
        };
        out.push(format!("{k}={merged}"));
    }
    // Sub-fields absent from the first node (an error only the second node counted) are lost
    // only if the field itself is missing there; fields are grouped by name above.
    out.join(",")
}

/// Redis's `bytesToHuman`.
fn bytes_to_human(n: i64) -> String {
    let d = n as f64;
    const K: f64 = 1024.0;
    if d < K {
        format!("{n}B")
    } else if d < K * K {
        format!("{:.2}K", d / K)
    } else if d < K * K * K {
        format!("{:.2}M", d / (K * K))
    } else if d < K * K * K * K {
        format!("{:.2}G", d / (K * K * K))
    } else if d < K * K * K * K * K {
        format!("{:.2}T", d / (K * K * K * K))
    } else {
        format!("{:.2}P", d / (K * K * K * K * K))
    }
}

/// The proxy's server section, with the nodes' Redis version and build.
fn server_section(nodes: &[BTreeMap<String, Vec<(String, String)>>]) -> String {
    let node = |k: &str| {
        nodes
            .first()
            .and_then(|n| n.get("server"))
            .and_then(|f| f.iter().find(|(n, _)| n == k))
            .map(|(_, v)| v.clone())
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "redis_version:{}\r\nredis_git_sha1:{}\r\nredis_git_dirty:{}\r\nredis_build_id:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\nmultiplexing_api:epoll\r\ngcc_version:0.0.0\r\nprocess_id:{}\r\nprocess_supervised:no\r\n",
        node("redis_version").unwrap_or_else(|| REDIS_VERSION.to_string()),
        node("redis_git_sha1").unwrap_or_else(|| "00000000".into()),
        node("redis_git_dirty").unwrap_or_else(|| "0".into()),
        node("redis_build_id").unwrap_or_else(|| "0".into()),
        std::env::consts::OS,
        usize::BITS,
        std::process::id(),
    );
    for k in ["hz", "configured_hz", "lru_clock"] {
        if let Some(v) = node(k) {
            let _ = write!(out, "{k}:{v}\r\n");
        }
    }
    out
}

/// A section the proxy answers itself.
fn local_section(proxy: &Proxy, name: &str) -> String {
    match name {
        "clients" => {
            let all = proxy.clients().snapshot();
            let blocked = all
                .iter()
                .filter(|c| c.blocked.load(Ordering::Relaxed) > 0)
                .count();
            let pubsub = all
                .iter()
                .filter(|c| c.kind() == ClientType::PubSub)
                .count();
            format!(
                "connected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{blocked}\r\ntracking_clients:0\r\npubsub_clients:{pubsub}\r\nclients_in_timeout_table:0\r\n",
                proxy.connected_clients(),
                proxy.config().max_clients,
            )
        }
        "cpu" => cpu_section(),
        "cluster" => "cluster_enabled:0\r\n".to_string(),
        "proxy" => {
            let view = proxy.refresher.view();
            let t = &view.topology;
            format!(
                "slotproxy_version:{}\r\ncluster_nodes:{}\r\ncluster_masters:{}\r\ncluster_slots_covered:{}\r\ncluster_config_epoch:{}\r\nread_from:{:?}\r\n",
                env!("CARGO_PKG_VERSION"),
                t.nodes().len(),
                t.serving_masters().len(),
                t.slots_covered(),
                t.epoch(),
                proxy.config().read_from,
            )
        }
        _ => String::new(),
    }
}

/// The proxy's own server fields (port, uptime, version).
fn server_tail(proxy: &Proxy) -> String {
    let up = proxy.started.elapsed().as_secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let tail = format!(
        "slotproxy_version:{}\r\ntcp_port:{}\r\nserver_time_usec:{now}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:\r\n",
        env!("CARGO_PKG_VERSION"),
        proxy.config().listen.rsplit(':').next().unwrap_or("0"),
        up / 86400,
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    tail
}

/// `used_cpu_*` from `/proc/self/stat` (clock ticks of 1/100 s, the kernel ABI's `USER_HZ`).
fn cpu_section() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Fields after the name: state(3) ... utime(14) stime(15) cutime(16) cstime(17).
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse::<f64>().unwrap_or(0.0) / 100.0)
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0.0);
    format!(
        "used_cpu_sys:{:.6}\r\nused_cpu_user:{:.6}\r\nused_cpu_sys_children:{:.6}\r\nused_cpu_user_children:{:.6}\r\n",
        g(1),
        g(0),
        g(3),
        g(2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
        parse(text)
    }

    #[test]
    fn keyspace_sums_keys_and_weights_avg_ttl() {
        let a = node("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\n");
        let b = node("# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=3000\r\n");
        let c = node("# Keyspace\r\n");
        assert_eq!(
            combine("keyspace", &[a, b, c]),
            "db0:keys=15,expires=8,avg_ttl=2500\r\n"
        );
    }

    #[test]
    fn memory_and_persistence_keep_their_meaning() {
        let a = node("# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory_policy:noeviction\r\n# Persistence\r\nrdb_last_save_time:200\r\nrdb_last_bgsave_status:ok\r\nrdb_bgsave_in_progress:0\r\n");
        let b = node("# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory_policy:noeviction\r\n# Persistence\r\nrdb_last_save_time:100\r\nrdb_last_bgsave_status:err\r\nrdb_bgsave_in_progress:1\r\n");
        let nodes = [a, b];
        assert_eq!(
            combine("memory", &nodes),
            "used_memory:2097152\r\nused_memory_human:2.00M\r\nmaxmemory_policy:noeviction\r\n"
        );
        assert_eq!(
            combine("persistence", &nodes),
            "rdb_last_save_time:100\r\nrdb_last_bgsave_status:err\r\nrdb_bgsave_in_progress:1\r\n"
        );
    }

    #[test]
    fn commandstats_recompute_per_call() {
        let a = node("# Commandstats\r\ncmdstat_get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=1\r\n");
        let b = node("# Commandstats\r\ncmdstat_get:calls=3,usec=5,usec_per_call=1.67,rejected_calls=1,failed_calls=0\r\n");
        assert_eq!(
            combine("commandstats", &[a, b]),
            "cmdstat_get:calls=5,usec=15,usec_per_call=3.00,rejected_calls=1,failed_calls=1\r\n"
        );
    }
}
