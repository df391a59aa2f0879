//! Commands the proxy answers itself, as a standalone Redis would: PING, ECHO, QUIT, SELECT,
//! HELLO, AUTH, ACL WHOAMI, CLIENT, INFO, RESET, READONLY, READWRITE. (COMMAND is forwarded:
//! the cluster knows its commands best.) Who may log in, and as whom, is `auth`'s decision.
use crate::auth::{self, ClientAuth};
use crate::protocol::command::{CommandInfo, Handling, SplitKind};
use crate::protocol::framer::{parse_int, Request};
use crate::protocol::reply::{
    self, put_array_header, put_bulk, put_integer, put_map_header, Proto,
};
use crate::proxy::Proxy;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// The Redis version the proxy presents itself as (the command set it forwards is 7.0's).
pub const REDIS_VERSION: &str = "7.0.15";

/// Per-client state the proxy keeps.
#[derive(Debug, Default)]
pub struct ClientState {
    pub id: u64,
    pub proto: Proto,
    pub name: Option<Bytes>,
    /// Who the client is logged in as, and what it may run.
    pub auth: ClientAuth,
    /// The client's address (for logs), when the socket told it.
    pub peer: Option<SocketAddr>,
}

/// What the session does with a locally handled command.
pub enum Outcome {
    Reply(Bytes),
    /// Reply, then close the connection (QUIT).
    Close(Bytes),
    /// Send it to any master after all (COMMAND and its subcommands).
    Forward,
}

/// `-ERR wrong number of arguments for 'name' command`, if `req` breaks `info`'s arity. MSET
/// also needs a value for every key, as Redis's own MSET checks (a key without one would
/// otherwise reach the splitter, which sends every key with its value).
pub fn arity_error(info: &CommandInfo, req: &Request) -> Option<Bytes> {
    let argc = req.argc() as i64;
    let arity = info.arity as i64;
    let ok = if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    } && (info.handling != Handling::Split(SplitKind::Mset) || argc % 2 == 1);
    (!ok).then(|| {
        reply::error(&format!(
            "ERR wrong number of arguments for '{}' command",
            info.name
        ))
    })
}

/// Redis's reply to an unknown command, byte for byte.
pub fn unknown_command(req: &Request) -> Bytes {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        lossy(req.arg(0), 128)
    );
    let mut used = 0;
    for i in 1..req.argc() {
        if used >= 128 {
            break;
        }
        let a = lossy(req.arg(i), 128 - used);
        used += a.len();
        msg.push_str(&format!("'{a}' "));
    }
    reply::error(&msg)
}

fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// Answers a command whose handling is `Local`.
pub fn answer(
    proxy: &Proxy,
    state: &mut ClientState,
    info: &CommandInfo,
    req: &Request,
) -> Outcome {
    let name = info.name.as_str();
    let r = match name.split('|').next().unwrap_or(name) {
        "ping" => match req.argc() {
            1 => Bytes::from_static(reply::PONG),
            2 => reply::bulk(req.arg(1)),
            _ => reply::error("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => reply::bulk(req.arg(1)),
        "quit" => return Outcome::Close(Bytes::from_static(reply::OK)),
        "select" => match req.arg(1) {
            b"0" => Bytes::from_static(reply::OK),
            n if parse_int(n).is_some() => reply::error("ERR DB index is out of range"),
            _ => reply::error("ERR value is not an integer or out of range"),
        },
        "readonly" | "readwrite" => Bytes::from_static(reply::OK),
        "reset" => {
            state.proto = Proto::Resp2;
            state.name = None;
            state.auth.reset(proxy);
            Bytes::from_static(b"+RESET\r\n")
        }
        "auth" => {
            let args: Vec<&[u8]> = (1..req.argc()).map(|i| req.arg(i)).collect();
            auth::auth_command(proxy, &mut state.auth, state.peer, &args)
        }
        "acl" => reply::bulk(state.auth.user().as_bytes()), // ACL WHOAMI
        "hello" => hello(proxy, state, req),
        "client" => client(state, info, req),
        "info" => info_reply(proxy, state, req),
        "command" => return Outcome::Forward,
        _ => reply::error(&format!("ERR slotproxy does not answer '{name}'")),
    };
    Outcome::Reply(r)
}

fn hello(proxy: &Proxy, state: &mut ClientState, req: &Request) -> Bytes {
    let mut proto = state.proto;
    let mut i = 1;
    if req.argc() > 1 {
        proto = match req.arg(1) {
            b"2" => Proto::Resp2,
            b"3" => Proto::Resp3,
            v if std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_some() =>
            {
                return reply::error("NOPROTO unsupported protocol version");
            }
            _ => return reply::error("ERR Protocol version is not an integer or out of range"),
        };
        i = 2;
    }
    let mut name = None;
    let mut login = None;
    while i < req.argc() {
        let opt = req.arg(i).to_ascii_uppercase();
        match opt.as_slice() {
            b"AUTH" if i + 2 < req.argc() => {
                login = Some((req.arg(i + 1), req.arg(i + 2)));
                i += 3;
            }
            b"SETNAME" if i + 1 < req.argc() => {
                if let Err(e) = valid_name(req.arg(i + 1)) {
                    return e;
                }
                name = Some(req.arg_bytes(i + 1));
                i += 2;
            }
            _ => {
                return reply::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    lossy(req.arg(i), 128)
                ))
            }
        }
    }
    // As Redis: options are checked first, then the login, then whether the client is in.
    if let Some((user, pass)) = login {
        if let Err(e) = state.auth.login(proxy, state.peer, Some(user), pass) {
            return e;
        }
    }
    if !state.auth.is_logged_in() {
        return auth::hello_noauth();
    }
    state.proto = proto;
    if name.is_some() {
        state.name = name;
    }
    let mut out = BytesMut::with_capacity(160);
    put_map_header(&mut out, proto, 7);
    put_bulk(&mut out, b"server");
    put_bulk(&mut out, b"redis");
    put_bulk(&mut out, b"version");
    put_bulk(&mut out, REDIS_VERSION.as_bytes());
    put_bulk(&mut out, b"proto");
    put_integer(&mut out, if proto == Proto::Resp3 { 3 } else { 2 });
    put_bulk(&mut out, b"id");
    put_integer(&mut out, state.id as i64);
    put_bulk(&mut out, b"mode");
    put_bulk(&mut out, b"standalone");
    put_bulk(&mut out, b"role");
    put_bulk(&mut out, b"master");
    put_bulk(&mut out, b"modules");
    put_array_header(&mut out, 0);
    out.freeze()
}

fn valid_name(name: &[u8]) -> Result<(), Bytes> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client(state: &mut ClientState, info: &CommandInfo, req: &Request) -> Bytes {
    let sub = req.arg(1).to_ascii_lowercase();
    match (sub.as_slice(), req.argc()) {
        (b"setname", 3) => match valid_name(req.arg(2)) {
            Ok(()) => {
                state.name = (!req.arg(2).is_empty()).then(|| req.arg_bytes(2));
                Bytes::from_static(reply::OK)
            }
            Err(e) => e,
        },
        (b"getname", 2) => match &state.name {
            Some(n) => reply::bulk(n),
            None => reply::null(state.proto),
        },
        (b"id", 2) => reply::integer(state.id as i64),
        (b"setinfo", 4) | (b"no-evict", 3) | (b"no-touch", 3) => Bytes::from_static(reply::OK),
        (b"info", 2) | (b"list", 2) => {
            let line = format!(
                "id={} name={} db=0 resp={} lib=slotproxy\n",
                state.id,
                state.name.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
                if state.proto == Proto::Resp3 { 3 } else { 2 }
            );
            reply::bulk(line.as_bytes())
        }
        (b"setname" | b"getname" | b"id" | b"setinfo" | b"info" | b"list" | b"no-evict" | b"no-touch", _) => {
            reply::error(&format!("ERR wrong number of arguments for 'client|{}' command", String::from_utf8_lossy(&sub)))
        }
        // A subcommand Redis has (the table knows it) that the proxy does not answer.
        _ if info.name.contains('|') => reply::error(&format!(
            "ERR slotproxy does not support '{}': it answers CLIENT SETNAME, GETNAME, ID, SETINFO, INFO, LIST, NO-EVICT, NO-TOUCH",
            info.name
        )),
        _ => reply::error(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            lossy(req.arg(1), 128)
        )),
    }
}

fn info_reply(proxy: &Proxy, state: &ClientState, req: &Request) -> Bytes {
    let view = proxy.refresher.view();
    let t = &view.topology;
    let masters = t.serving_masters().len();
    let sections: Vec<(&str, String)> = vec![
        (
            "server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nslotproxy_version:{}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                usize::BITS,
                std::process::id(),
                proxy.config().listen.rsplit(':').next().unwrap_or("0"),
                proxy.started.elapsed().as_secs(),
            ),
        ),
        ("clients", format!("connected_clients:{}\r\n", proxy.connected_clients())),
        ("replication", "role:master\r\nconnected_slaves:0\r\n".to_string()),
        ("cluster", "cluster_enabled:0\r\n".to_string()),
        (
            "proxy",
            format!(
                "cluster_nodes:{}\r\ncluster_masters:{masters}\r\ncluster_slots_covered:{}\r\ncluster_config_epoch:{}\r\nread_from:{:?}\r\n",
                t.nodes().len(),
                t.slots_covered(),
                t.epoch(),
                proxy.config().read_from,
            ),
        ),
    ];
    let wanted: Vec<String> = (1..req.argc())
        .map(|i| String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let mut text = String::new();
    for (name, body) in sections {
        if all || wanted.iter().any(|w| w == name) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            text.push_str(&format!("# {title}\r\n{body}"));
        }
    }
    match state.proto {
        Proto::Resp2 => reply::bulk(text.as_bytes()),
        Proto::Resp3 => {
            let mut out = BytesMut::new();
            let body = format!("txt:{text}");
            out.extend_from_slice(format!("={}\r\n", body.len()).as_bytes());
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.freeze()
        }
    }
}
