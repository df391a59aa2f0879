//! CLIENT, about the proxy's own clients (the nodes only see the proxy's connections), in
//! Redis's formats: SETNAME, GETNAME, ID, SETINFO, INFO, LIST [TYPE t] [ID id ...], KILL (the
//! old `ip:port` form and the filter form), PAUSE ms [WRITE|ALL], UNPAUSE, REPLY ON|OFF|SKIP,
//! NO-EVICT, NO-TOUCH, GETREDIR. TRACKING and CACHING stay unsupported: invalidation messages
//! would have to come from every node a client reads from.
use super::{lossy, valid_name, ClientState};
use crate::clients::{ClientEntry, ClientType};
use crate::protocol::command::{ClientCommand, CommandInfo};
use crate::protocol::framer::{parse_int, Request};
use crate::protocol::reply;
use crate::proxy::Proxy;
use bytes::Bytes;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Answers CLIENT `sub`.
pub(super) fn client(
    proxy: &Proxy,
    state: &mut ClientState,
    sub: ClientCommand,
    info: &CommandInfo,
    req: &Request,
) -> Bytes {
    use ClientCommand::*;
    let argc = req.argc();
    // Subcommands newer than the cluster's table (SETINFO and NO-TOUCH came with 7.2).
    let sub = match sub {
        Other if req.arg(1).eq_ignore_ascii_case(b"setinfo") => SetInfo,
        Other if req.arg(1).eq_ignore_ascii_case(b"no-touch") && argc == 3 => NoTouch,
        s => s,
    };
    let ok = || Bytes::from_static(reply::OK);
    match sub {
        SetName => match valid_name(req.arg(2)) {
            Ok(()) => {
                state.name = (!req.arg(2).is_empty()).then(|| req.arg_bytes(2));
                if let Some(e) = &state.entry {
                    e.meta().name = state.name.clone();
                }
                ok()
            }
            Err(e) => e,
        },
        GetName => match &state.name {
            Some(n) => reply::bulk(n),
            None => reply::null(state.proto),
        },
        Id => reply::integer(state.id as i64),
        SetInfo if argc == 4 => {
            if let Some(e) = &state.entry {
                let value = Some(req.arg_bytes(3));
                match req.arg(2).to_ascii_lowercase().as_slice() {
                    b"lib-name" => e.meta().lib_name = value,
                    b"lib-ver" => e.meta().lib_ver = value,
                    _ => {
                        return reply::error(&format!(
                            "ERR Unrecognized option '{}'",
                            lossy(req.arg(2), 128)
                        ))
                    }
                }
            }
            ok()
        }
        NoEvict | NoTouch => match req.arg(2).to_ascii_lowercase().as_slice() {
            b"on" | b"off" => ok(),
            _ => reply::error("ERR syntax error"),
        },
        GetRedir => reply::integer(-1),
        Info => match &state.entry {
            Some(e) => reply::bulk(line(proxy, e, proxy.clients().now_ms()).as_bytes()),
            None => reply::bulk(b""),
        },
        List => list(proxy, req),
        Kill => kill(proxy, state, req),
        Pause => {
            let ms = match parse_int(req.arg(2)) {
                Some(ms) if ms < 0 => return reply::error("ERR timeout is negative"),
                Some(ms) => ms,
                None => return reply::error("ERR timeout is not an integer or out of range"),
            };
            let all = match argc {
                3 => true,
                4 => match req.arg(3).to_ascii_lowercase().as_slice() {
                    b"all" => true,
                    b"write" => false,
                    _ => return reply::error("ERR CLIENT PAUSE mode must be WRITE or ALL"),
                },
                _ => return reply::error("ERR syntax error"),
            };
            proxy.clients().pause(ms as u64, all);
            ok()
        }
        Unpause => {
            proxy.clients().unpause();
            ok()
        }
        Reply => match req.arg(2).to_ascii_lowercase().as_slice() {
            b"on" => {
                state.reply_off = false;
                state.skip_next = false;
                ok()
            }
            // As Redis: the command itself gets no reply.
            b"off" => {
                state.reply_off = true;
                Bytes::new()
            }
            b"skip" => {
                state.skip_next = !state.reply_off;
                Bytes::new()
            }
            _ => reply::error("ERR syntax error"),
        },
        Help => reply::error("ERR slotproxy: see README for the CLIENT subcommands it answers"),
        SetInfo => reply::error("ERR wrong number of arguments for 'client|setinfo' command"),
        Other if info.name.contains('|') => reply::error(&format!(
            "ERR slotproxy does not support '{}': client-side caching (TRACKING, CACHING, \
             TRACKINGINFO) would need invalidations from every node",
            info.name
        )),
        Other => reply::error(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            lossy(req.arg(1), 128)
        )),
    }
}

/// Parses a `TYPE` argument as Redis does (`slave` and `replica` are one type).
fn parse_type(arg: &[u8]) -> Result<Option<ClientType>, Bytes> {
    match arg.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(Some(ClientType::Normal)),
        b"pubsub" => Ok(Some(ClientType::PubSub)),
        b"replica" | b"slave" => Ok(Some(ClientType::Monitor)),
        b"master" => Ok(None), // the proxy has no master client: matches nobody
        _ => Err(reply::error(&format!(
            "ERR Unknown client type '{}'",
            lossy(arg, 128)
        ))),
    }
}

/// One `CLIENT LIST` line, in Redis 7's field order (`lib-name`/`lib-ver` as 7.2 adds them).
fn line(proxy: &Proxy, e: &ClientEntry, now_ms: u64) -> String {
    let meta = e.meta().clone();
    let kind = e.kind();
    let multi = e.multi.load(Ordering::Relaxed);
    let blocked = e.blocked.load(Ordering::Relaxed) > 0;
    let mut flags = String::new();
    match kind {
        ClientType::PubSub => flags.push('P'),
        ClientType::Monitor => flags.push('O'),
        ClientType::Normal => {}
    }
    if blocked {
        flags.push('b');
    }
    if multi >= 0 {
        flags.push('x');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let cmd = match e.cmd.load(Ordering::Relaxed) {
        u32::MAX => "NULL".to_string(),
        id => proxy
            .commands
            .name(crate::protocol::command::CommandId(id as u16))
            .to_string(),
    };
    let text = |b: &Option<Bytes>| -> String {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut s = String::with_capacity(300);
    let _ = writeln!(
        s,
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub=0 psub=0 \
         ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
         omem=0 tot-mem=0 events=r cmd={cmd} user={} redir=-1 resp={} lib-name={} lib-ver={}",
        e.id,
        addr(e.peer),
        addr(e.local),
        e.fd,
        text(&meta.name),
        e.age(now_ms),
        e.idle(now_ms),
        meta.user,
        e.resp.load(Ordering::Relaxed),
        text(&meta.lib_name),
        text(&meta.lib_ver),
    );
    s
}

/// `CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]`.
fn list(proxy: &Proxy, req: &Request) -> Bytes {
    let mut kind: Option<Option<ClientType>> = None;
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < req.argc() {
        let opt = req.arg(i).to_ascii_lowercase();
        match opt.as_slice() {
            b"type" if i + 1 < req.argc() => {
                match parse_type(req.arg(i + 1)) {
                    Ok(t) => kind = Some(t),
                    Err(e) => return e,
                }
                i += 2;
            }
            b"id" if i + 1 < req.argc() => {
                let mut v = Vec::new();
                i += 1;
                while i < req.argc() {
                    match parse_int(req.arg(i)).filter(|&n| n > 0) {
                        Some(n) => v.push(n as u64),
                        None => return reply::error("ERR Invalid client ID"),
                    }
                    i += 1;
                }
                ids = Some(v);
            }
            _ => return reply::error("ERR syntax error"),
        }
    }
    let now = proxy.clients().now_ms();
    let mut out = String::new();
    for e in proxy.clients().snapshot() {
        if kind.is_some_and(|k| k != Some(e.kind())) {
            continue;
        }
        if ids.as_ref().is_some_and(|ids| !ids.contains(&e.id)) {
            continue;
        }
        out.push_str(&line(proxy, &e, now));
    }
    reply::bulk(out.as_bytes())
}

/// `CLIENT KILL ip:port` (`+OK` or `-ERR No such client`) and `CLIENT KILL <filter> <value>
/// ...` (the number killed): ID, ADDR, LADDR, USER, TYPE, SKIPME (default yes), MAXAGE.
fn kill(proxy: &Proxy, state: &ClientState, req: &Request) -> Bytes {
    let all = proxy.clients().snapshot();
    let now = proxy.clients().now_ms();
    let me = state.id;
    if req.argc() == 3 {
        let addr = req.arg(2);
        let found = all
            .iter()
            .find(|e| e.peer.map(|a| a.to_string().as_bytes() == addr) == Some(true));
        return match found {
            Some(e) => {
                e.kill();
                Bytes::from_static(reply::OK)
            }
            None => reply::error("ERR No such client"),
        };
    }
    if !req.argc().is_multiple_of(2) {
        return reply::error("ERR syntax error");
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut user = None;
    let mut kind: Option<Option<ClientType>> = None;
    let mut skipme = true;
    let mut maxage = None;
    for i in (2..req.argc()).step_by(2) {
        let v = req.arg(i + 1);
        match req.arg(i).to_ascii_lowercase().as_slice() {
            b"id" => match parse_int(v).filter(|&n| n > 0) {
                Some(n) => id = Some(n as u64),
                None => return reply::error("ERR client-id should be greater than 0"),
            },
            b"addr" => addr = Some(v),
            b"laddr" => laddr = Some(v),
            b"user" => user = Some(v),
            b"type" => match parse_type(v) {
                Ok(t) => kind = Some(t),
                Err(e) => return e,
            },
            b"skipme" => match v.to_ascii_lowercase().as_slice() {
                b"yes" => skipme = true,
                b"no" => skipme = false,
                _ => return reply::error("ERR syntax error"),
            },
            b"maxage" => match parse_int(v).filter(|&n| n >= 0) {
                Some(n) => maxage = Some(n as u64),
                None => return reply::error("ERR syntax error"),
            },
            _ => return reply::error("ERR syntax error"),
        }
    }
    let text = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut killed = 0;
    for e in &all {
        let hit = id.is_none_or(|id| e.id == id)
            && addr.is_none_or(|a| text(e.peer).as_bytes() == a)
            && laddr.is_none_or(|a| text(e.local).as_bytes() == a)
            && user.is_none_or(|u| e.meta().user.as_bytes() == u)
            && kind.is_none_or(|k| k == Some(e.kind()))
            && maxage.is_none_or(|m| e.age(now) >= m)
            && !(skipme && e.id == me);
        if hit {
            e.kill();
            killed += 1;
        }
    }
    reply::integer(killed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_as_redis_names_them() {
        assert_eq!(parse_type(b"NORMAL").unwrap(), Some(ClientType::Normal));
        assert_eq!(parse_type(b"slave").unwrap(), Some(ClientType::Monitor));
        assert_eq!(parse_type(b"master").unwrap(), None);
        assert_eq!(
            &parse_type(b"x").unwrap_err()[..],
            b"-ERR Unknown client type 'x'\r\n"
        );
    }
}
