//! Forming a cluster from running nodes, the way an operator would by hand: inspect every node,
//! let [`plan`](super::plan) decide (refusing before any change), then `ADDSLOTSRANGE`,
//! `SET-CONFIG-EPOCH`, `MEET`, wait until every node knows every other, `REPLICATE`, and wait
//! until the cluster is healthy. Each step is reported as it happens; the end is a table of
//! nodes, roles and slots.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::cluster_view::{format_ranges, NodeLine};
use super::node_client::{NodeAccess, NodeClient, NodeError, Reply};
use super::plan::{assess, Assessment, Plan, Snapshot};
use super::spawn::BUS_PORT_OFFSET;
use super::{BootstrapError, Progress};

/// How long forming waits, and for what.
#[derive(Debug, Clone)]
pub struct FormOptions {
    /// Longest wait for each step (nodes meeting, the cluster turning healthy).
    pub timeout: Duration,
    /// Longest wait for a node to answer at all (and the timeout of each command).
    pub answer_timeout: Duration,
    /// Credentials and TLS for the nodes.
    pub access: NodeAccess,
}

impl Default for FormOptions {
    fn default() -> Self {
        FormOptions {
            timeout: Duration::from_secs(60),
            answer_timeout: Duration::from_secs(5),
            access: NodeAccess::default(),
        }
    }
}

/// What forming did.
#[derive(Debug, Clone)]
pub struct FormReport {
    /// The cluster was formed before this run (nothing was changed).
    pub already_formed: bool,
    /// The final table of nodes, roles and slot ranges, as printed.
    pub table: String,
}

/// One node being formed: its connection and what it last said.
struct Node {
    client: NodeClient,
    snap: Snapshot,
    bus_port: u16,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.snap.addr
    }

    /// Sends a command, turning any failure into an error naming the node and command.
    fn call(&mut self, args: &[&str]) -> Result<Reply, BootstrapError> {
        let addr = self.addr();
        self.client
            .call_checked(args)
            .map_err(|source| command_error(addr, args, source))
    }

    fn call_string(&mut self, args: &[&str]) -> Result<String, BootstrapError> {
        let addr = self.addr();
        self.client
            .call_string(args)
            .map_err(|source| command_error(addr, args, source))
    }

    /// Re-reads `CLUSTER NODES`.
    fn refresh(&mut self) -> Result<(), BootstrapError> {
        let text = self.call_string(&["CLUSTER", "NODES"])?;
        self.snap = Snapshot::new(self.addr(), self.snap.id.clone(), &text, self.snap.keys)
            .map_err(BootstrapError::Invalid)?;
        Ok(())
    }
}

fn command_error(addr: SocketAddr, args: &[&str], source: NodeError) -> BootstrapError {
    BootstrapError::Command {
        addr,
        command: args.join(" "),
        source,
    }
}

/// Forms a cluster of `addrs` (first half masters, second half their replicas), completes a
/// half-formed one, or recognises a formed one. Refuses, before changing anything, nodes that hold
/// keys or belong to another cluster.
pub fn form_cluster(
    addrs: &[SocketAddr],
    opts: &FormOptions,
    progress: &Progress,
) -> Result<FormReport, BootstrapError> {
    if addrs.len() < 6 || !addrs.len().is_multiple_of(2) {
        return Err(BootstrapError::Invalid(format!(
            "a cluster needs an even number of nodes, at least 6 (3 masters + 3 replicas); got {}",
            addrs.len()
        )));
    }
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i].contains(a) {
            return Err(BootstrapError::Invalid(format!("{a} is listed twice")));
        }
    }
    progress.step(&format!(
        "checking {} nodes: each must answer, run in cluster mode, and be empty or part of this cluster",
        addrs.len()
    ));
    let mut nodes = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let node = inspect(addr, opts)?;
        progress.detail(&format!(
            "{addr}: id {}, {}, {} key(s), knows {} node(s)",
            short(&node.snap.id),
            role_word(node.snap.me()),
            node.snap.keys,
            node.snap.view.len()
        ));
        nodes.push(node);
    }
    let snaps: Vec<Snapshot> = nodes.iter().map(|n| n.snap.clone()).collect();
    let already_formed = match assess(&snaps)? {
        Assessment::Formed => {
            progress.step("cluster already formed: every node knows every other, all 16384 slots are assigned, every master has a replica");
            true
        }
        Assessment::Plan(plan) => {
            apply(&mut nodes, &plan, opts, progress)?;
            false
        }
    };
    wait_healthy(&mut nodes, opts, progress)?;
    let table = table(&nodes);
    progress.step("cluster ready:");
    for line in table.lines() {
        progress.detail(line);
    }
    Ok(FormReport {
        already_formed,
        table,
    })
}

/// Connects (retrying while the node starts or loads) and reads what forming needs to know.
fn inspect(addr: SocketAddr, opts: &FormOptions) -> Result<Node, BootstrapError> {
    let deadline = Instant::now() + opts.answer_timeout;
    let mut client = loop {
        let attempt = NodeClient::connect_with(addr, opts.answer_timeout, &opts.access);
        let error = match attempt.and_then(|mut c| c.call(&["PING"]).map(|r| (c, r))) {
            Ok((c, Reply::Status(pong))) if pong == "PONG" => break c,
            Err(NodeError::Auth(e)) => {
                return Err(BootstrapError::Refused {
                    addr,
                    reason: format!("refused the credentials ({e})"),
                    fix: "give the nodes' password with --node-password-file (and their ACL \
                          user with --node-user)"
                        .into(),
                })
            }
            Ok((_, Reply::Error(e))) if e.starts_with("NOAUTH") => {
                return Err(BootstrapError::Refused {
                    addr,
                    reason: format!("requires a password ({e})"),
                    fix: "give the nodes' password with --node-password-file (and their ACL \
                          user with --node-user)"
                        .into(),
                })
            }
            Ok((_, Reply::Error(e))) if !e.starts_with("LOADING") => {
                return Err(BootstrapError::Refused {
                    addr,
                    reason: format!("answers PING with {e:?}"),
                    fix: "bootstrap forms nodes that answer PING".into(),
                })
            }
            Ok((_, reply)) => format!("{reply:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(BootstrapError::NoAnswer {
                addr,
                secs: opts.answer_timeout.as_secs().max(1),
                detail: error,
                fix: "check that redis-server runs there and the address is right \
                      (start one with `redis-server /path/to/redis.conf`)"
                    .into(),
            });
        }
        sleep(Duration::from_millis(200));
    };
    let info = client
        .info("cluster")
        .map_err(|e| command_error(addr, &["INFO", "cluster"], e))?;
    if info.get("cluster_enabled").map(String::as_str) != Some("1") {
        return Err(BootstrapError::Refused {
            addr,
            reason: "runs with cluster mode off".into(),
            fix: "set `cluster-enabled yes` in its config and restart it".into(),
        });
    }
    let id = client
        .call_string(&["CLUSTER", "MYID"])
        .map_err(|e| command_error(addr, &["CLUSTER", "MYID"], e))?;
    let keys = client
        .call_int(&["DBSIZE"])
        .map_err(|e| command_error(addr, &["DBSIZE"], e))?;
    // A node may run its bus on another port (`cluster-port`); MEET must use it.
    let bus_port = match client.config_get("cluster-port") {
        Ok(Some(p)) if p != "0" => p.parse().ok(),
        _ => None,
    }
    .unwrap_or_else(|| addr.port().saturating_add(BUS_PORT_OFFSET));
    let nodes_text = client
        .call_string(&["CLUSTER", "NODES"])
        .map_err(|e| command_error(addr, &["CLUSTER", "NODES"], e))?;
    let snap = Snapshot::new(addr, id, &nodes_text, keys.max(0) as u64)
        .map_err(BootstrapError::Invalid)?;
    Ok(Node {
        client,
        snap,
        bus_port,
    })
}

/// Makes the planned changes, in order, reporting each.
fn apply(
    nodes: &mut [Node],
    plan: &Plan,
    opts: &FormOptions,
    progress: &Progress,
) -> Result<(), BootstrapError> {
    if !plan.add_slots.is_empty() {
        progress.step("assigning slots to the masters (CLUSTER ADDSLOTSRANGE)");
        for (pos, ranges) in &plan.add_slots {
            let node = &mut nodes[*pos];
            let mut args = vec!["CLUSTER".to_string(), "ADDSLOTSRANGE".to_string()];
            for r in ranges {
                args.push(r.start.to_string());
                args.push(r.end.to_string());
            }
            node.call(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            progress.detail(&format!("{}: {}", node.addr(), format_ranges(ranges)));
        }
    }
    if !plan.epochs.is_empty() {
        progress.step("giving each node a distinct config epoch (CLUSTER SET-CONFIG-EPOCH)");
        for (pos, epoch) in &plan.epochs {
            let node = &mut nodes[*pos];
            let epoch_arg = epoch.to_string();
            let args = ["CLUSTER", "SET-CONFIG-EPOCH", epoch_arg.as_str()];
            let addr = node.addr();
            match node.client.call_checked(&args) {
                Ok(_) => progress.detail(&format!("{addr}: epoch {epoch}")),
                // A half-formed cluster: the node was met by another after the inspection (the
                // handshake finishes on its own). Redis only takes an epoch from a node that
                // knows no other; it gives colliding masters distinct epochs by itself.
                Err(NodeError::Redis(e)) if e.contains("does not know any other node") => progress
                    .detail(&format!(
                        "{addr}: already knows another node; its epoch is left to the cluster"
                    )),
                Err(source) => return Err(command_error(addr, &args, source)),
            }
        }
    }
    if !plan.meet.is_empty() {
        let first = nodes[0].addr();
        progress.step(&format!("introducing the nodes to {first} (CLUSTER MEET)"));
        for &pos in &plan.meet {
            let (ip, port, bus) = (
                nodes[pos].addr().ip(),
                nodes[pos].addr().port(),
                nodes[pos].bus_port,
            );
            nodes[0].call(&[
                "CLUSTER",
                "MEET",
                &ip.to_string(),
                &port.to_string(),
                &bus.to_string(),
            ])?;
            progress.detail(&format!("{first} meets {}", nodes[pos].addr()));
        }
    }
    let n = nodes.len();
    wait_for(
        nodes,
        opts,
        progress,
        &format!("every node to know all {n} nodes (gossip)"),
        "check that the cluster bus ports (port+10000) are reachable between the nodes",
        |nodes| {
            let mut pending = Vec::new();
            for node in nodes.iter_mut() {
                node.refresh()?;
                let view = &node.snap.view;
                let handshakes = view.iter().filter(|l| l.in_handshake()).count();
                if view.len() != n || handshakes > 0 {
                    pending.push(format!(
                        "{} knows {} of {n}{}",
                        node.addr(),
                        view.len() - handshakes,
                        if handshakes > 0 {
                            format!(", {handshakes} in handshake")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
            Ok(pending)
        },
    )?;
    if !plan.replicate.is_empty() {
        progress.step("making replicas (CLUSTER REPLICATE)");
        for &(replica, master) in &plan.replicate {
            let (master_id, master_addr) = (nodes[master].snap.id.clone(), nodes[master].addr());
            nodes[replica].call(&["CLUSTER", "REPLICATE", &master_id])?;
            progress.detail(&format!(
                "{} replicates {master_addr}",
                nodes[replica].addr()
            ));
        }
    }
    Ok(())
}

/// Waits until every node says `cluster_state:ok`, all agree on roles and slots, no node is
/// flagged failing, and every replica's link to its master is up.
fn wait_healthy(
    nodes: &mut [Node],
    opts: &FormOptions,
    progress: &Progress,
) -> Result<(), BootstrapError> {
    wait_for(
        nodes,
        opts,
        progress,
        "cluster_state:ok on every node and every replica in sync",
        "look at the nodes' logs (DIR/node-PORT/redis.log for --spawn) and check the cluster bus ports (port+10000) are reachable",
        |nodes| {
            let mut pending = Vec::new();
            let mut signatures = Vec::new();
            for node in nodes.iter_mut() {
                node.refresh()?;
                let addr = node.addr();
                let state = node.call_string(&["CLUSTER", "INFO"])?;
                if !state.lines().any(|l| l.trim() == "cluster_state:ok") {
                    pending.push(format!("{addr} cluster_state is not ok"));
                }
                for line in node.snap.view.iter().filter(|l| l.is_troubled() || l.in_handshake()) {
                    pending.push(format!("{addr} flags {} as {}", short(&line.id), line.flags.join(",")));
                }
                if node.snap.me().is_replica() {
                    let repl = node.call_string(&["INFO", "replication"])?;
                    if !repl.lines().any(|l| l.trim() == "master_link_status:up") {
                        pending.push(format!("{addr} master_link_status is not up"));
                    }
                }
                signatures.push(signature(&node.snap.view));
            }
            if signatures.windows(2).any(|w| w[0] != w[1]) {
                pending.push("the nodes do not agree yet on roles and slots".into());
            }
            Ok(pending)
        },
    )
}

/// Polls `check` (which lists what is still pending) until it lists nothing, or times out.
fn wait_for(
    nodes: &mut [Node],
    opts: &FormOptions,
    progress: &Progress,
    what: &str,
    fix: &str,
    mut check: impl FnMut(&mut [Node]) -> Result<Vec<String>, BootstrapError>,
) -> Result<(), BootstrapError> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let pending = check(nodes)?;
        if pending.is_empty() {
            if announced {
                progress.detail(&format!("done in {:.1}s", start.elapsed().as_secs_f64()));
            }
            return Ok(());
        }
        if !announced {
            progress.step(&format!("waiting for {what}"));
            announced = true;
        }
        if start.elapsed() >= opts.timeout {
            return Err(BootstrapError::Timeout {
                what: what.to_string(),
                secs: opts.timeout.as_secs_f64(),
                pending: pending.join("; "),
                fix: fix.to_string(),
            });
        }
        sleep(Duration::from_millis(200));
    }
}

/// What a node believes about every node's role, master and slots, order-independent.
fn signature(view: &[NodeLine]) -> Vec<(String, bool, Option<String>, String)> {
    let mut sig: Vec<_> = view
        .iter()
        .map(|l| {
            (
                l.id.clone(),
                l.is_master(),
                l.master_id.clone(),
                format_ranges(&l.slots),
            )
        })
        .collect();
    sig.sort();
    sig
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn role_word(line: &NodeLine) -> &'static str {
    if line.is_replica() {
        "replica"
    } else if line.slots.is_empty() {
        "master without slots"
    } else {
        "master with slots"
    }
}

/// The table of nodes, roles and slot ranges: each master (by first slot) followed by its
/// replicas. Addresses are the ones bootstrap was given.
fn table(nodes: &[Node]) -> String {
    let addr_of: HashMap<&str, SocketAddr> = nodes
        .iter()
        .map(|n| (n.snap.id.as_str(), n.addr()))
        .collect();
    let view = &nodes[0].snap.view;
    let mut masters: Vec<&NodeLine> = view.iter().filter(|l| l.is_master()).collect();
    masters.sort_by_key(|l| l.slots.first().map(|r| r.start));
    let mut rows = vec![(
        "ADDRESS".to_string(),
        "ROLE".to_string(),
        "SLOTS".to_string(),
        "ID".to_string(),
    )];
    let name = |id: &str| addr_of.get(id).map_or(id.to_string(), |a| a.to_string());
    for master in masters {
        rows.push((
            name(&master.id),
            "master".into(),
            format!(
                "{} ({} slots)",
                format_ranges(&master.slots),
                master.slot_count()
            ),
            master.id.clone(),
        ));
        for replica in view
            .iter()
            .filter(|l| l.master_id.as_deref() == Some(master.id.as_str()))
        {
            rows.push((
                name(&replica.id),
                "replica".into(),
                format!("replica of {}", name(&master.id)),
                replica.id.clone(),
            ));
        }
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(a, role, slots, id)| format!("{a:w0$}  {role:7}  {slots:w2$}  {id}\n"))
        .collect()
}
