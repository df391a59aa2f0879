//! Commands the proxy answers itself, as a standalone Redis would: PING, ECHO, QUIT, SELECT,
//! HELLO, AUTH, ACL WHOAMI, RESET, READONLY, READWRITE; CLIENT in `local/client.rs`, INFO in
//! [`info`]. (COMMAND is forwarded: the cluster knows its commands best.) Who may log in, and
//! as whom, is `auth`'s decision.
use crate::auth::{self, ClientAuth};
use crate::clients::ClientEntry;
use crate::protocol::command::{CommandInfo, Handling, LocalCommand, SplitKind};
use crate::protocol::framer::{parse_int, Request};
use crate::protocol::reply::{
    self, put_array_header, put_bulk, put_integer, put_map_header, Proto,
};
use crate::proxy::Proxy;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

mod client;
pub mod info;

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
    /// The client in the process-wide registry (`None` only in unit tests).
    pub entry: Option<Arc<ClientEntry>>,
    /// `CLIENT REPLY OFF`: no replies until `CLIENT REPLY ON`.
    pub reply_off: bool,
    /// `CLIENT REPLY SKIP`: the next command's reply is not sent.
    pub skip_next: bool,
}

impl ClientState {
    /// Tells the registry what changed with the login or the protocol.
    fn sync_entry(&self) {
        if let Some(e) = &self.entry {
            e.resp.store(
                if self.proto == Proto::Resp3 { 3 } else { 2 },
                Ordering::Relaxed,
            );
            let mut m = e.meta();
            if m.user != self.auth.user() {
                m.user = self.auth.user().to_string();
            }
            m.name = self.name.clone();
        }
    }
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

pub(crate) fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// Answers a command whose handling is `Local`.
pub fn answer(
    proxy: &Proxy,
    state: &mut ClientState,
    cmd: LocalCommand,
    info: &CommandInfo,
    req: &Request,
) -> Outcome {
    use LocalCommand as L;
    let r = match cmd {
        L::Ping => match req.argc() {
            1 => Bytes::from_static(reply::PONG),
            2 => reply::bulk(req.arg(1)),
            _ => reply::error("ERR wrong number of arguments for 'ping' command"),
        },
        L::Echo => reply::bulk(req.arg(1)),
        L::Quit => return Outcome::Close(Bytes::from_static(reply::OK)),
        L::Select => match req.arg(1) {
            b"0" => Bytes::from_static(reply::OK),
            n if parse_int(n).is_some() => reply::error("ERR DB index is out of range"),
            _ => reply::error("ERR value is not an integer or out of range"),
        },
        L::ReadMode => Bytes::from_static(reply::OK),
        L::Reset => {
            state.proto = Proto::Resp2;
            state.name = None;
            state.reply_off = false;
            state.skip_next = false;
            state.auth.reset(proxy);
            state.sync_entry();
            Bytes::from_static(b"+RESET\r\n")
        }
        L::Auth => {
            let args: Vec<&[u8]> = (1..req.argc()).map(|i| req.arg(i)).collect();
            let r = auth::auth_command(proxy, &mut state.auth, state.peer, &args);
            state.sync_entry();
            r
        }
        L::Whoami => reply::bulk(state.auth.user().as_bytes()),
        L::Hello => {
            let r = hello(proxy, state, req);
            state.sync_entry();
            r
        }
        L::Client(sub) => client::client(proxy, state, sub, info, req),
        L::Command => return Outcome::Forward,
    };
    Outcome::Reply(r)
}

fn hello(proxy: &Proxy, state: &mut ClientState, req: &Request) -> Bytes {
    let mut proto = state.proto;
    let mut i = 1;
    if req.argc() > 1 {
        // Redis reads the version with string2ll: `+3` and `03` are not integers.
        proto = match parse_int(req.arg(1)) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return reply::error("NOPROTO unsupported protocol version"),
            None => return reply::error("ERR Protocol version is not an integer or out of range"),
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

pub(crate) fn valid_name(name: &[u8]) -> Result<(), Bytes> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}
