//! One client connection. The reader half reads as much as the socket holds, frames every
//! complete request, routes it and sends it on (or answers it locally), and queues a
//! `Pending` reply per request; the writer half resolves them strictly in request order and
//! writes every reply that is ready in one syscall. A plain node reply that arrives while the
//! writer is idle is written by the backend connection's task that read it (see `direct`).
//! The queue is bounded by count (`max_pipeline`) and by the bytes of replies owed (see
//! [`crate::reply_memory`]): a client that does not read its replies stops being read, so
//! memory stays bounded.
//!
//! Stateful modes leave the shared connections: a transaction (MULTI/EXEC, WATCH) is pinned to a
//! dedicated connection to the one node its keys live on, and a blocking command (BLPOP, ...)
//! gets a dedicated connection so it blocks no one else.
use crate::backend::conn::{BackendConn, ReplyRx, ReplySink, ReplyTo};
use crate::backend::BackendError;
use crate::clients::ClientEntry;
use crate::cluster::slot::key_slot;
use crate::fanout::broadcast::Broadcast;
use crate::fanout::{self, Fanout};
use crate::forward::{failure_reply, route_error, Client, Forward};
use crate::local::{self, ClientState, Outcome};
use crate::metrics::Timed;
use crate::protocol::command::{CommandId, CommandInfo, Handling, LocalCommand, TxCommand};
use crate::protocol::framer::{Limits, Request, RequestFramer};
use crate::protocol::reply;
use crate::proxy::Proxy;
use crate::pubsub::Subscription;
use crate::reply_queue::ReplyQueue;
use crate::router::common_slot;
use bytes::{Bytes, BytesMut};
use client_io::{ClientRead, TlsClientStream};
use read_buffer::{park_spare, take_spare};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use writer::write_loop;

mod admin;
mod client_io;
mod direct;
mod halves;
mod read_buffer;
mod recent_writes;
mod route;
mod subscribe;
mod transaction;
mod writer;
use transaction::Multi;

/// Which connection a request to a node goes on. A client's requests stay in order on one
/// connection; when the next one needs another connection, the reader first waits until every
/// earlier request has been answered (see [`Step::Settle`]), as Redis runs a client's commands
/// one after the other: a GET after an EXEC sees what the transaction wrote, and a command after
/// a BLPOP waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lane {
    /// The shared, pipelined connections.
    #[default]
    Shared,
    /// The client's transaction connection (WATCH, MULTI ... EXEC).
    Pinned,
    /// The client's connection for blocking commands.
    Blocking,
    /// A dedicated connection was just given up (EXEC, DISCARD, UNWATCH, RESET): whatever
    /// comes next, on any connection, waits for what went on that one.
    Retired,
}

/// What the reader does after dispatching one request.
enum Step {
    /// The request needs another [`Lane`] than the client's previous ones: wait until those
    /// are answered, then dispatch it again.
    Settle(Request),
    Queue(Pending),
    /// A routed request: queued awaiting its reply, then sent on this connection.
    Route(Forward, BackendConn),
    /// Queue this, then stop reading (QUIT).
    Stop(Pending),
    /// A subscription command: goes to the client's subscription connection.
    Subscribe(Request),
    /// MONITOR: streams from every master.
    Monitor,
}

/// A reply owed to the client, in request order.
#[derive(Debug)]
pub(crate) enum Pending {
    Ready(Bytes),
    /// Write this, then close the connection.
    Close(Bytes),
    /// Not boxed: the allocation cost more than the moves of a larger item it saves (+200
    /// instructions per request at `-P 16`, callgrind, 2026-12-02).
    Forward(Forward, Client),
    Fanout(Fanout, Client),
    /// Boxed: rare, and the largest variant would make every queued reply bigger.
    Scan(Box<fanout::Scan>, Client),
    /// On a dedicated connection: no redirects are followed.
    Direct(ReplyRx, SocketAddr),
    /// A blocking command's reply (the client counts as blocked until it is in).
    Blocked(ReplyRx, SocketAddr),
    /// Sent to several nodes directly (CONFIG SET, INFO, ...).
    Broadcast(Box<Broadcast>),
    Wait(Box<fanout::wait::Wait>),
    /// Resolved as the inner reply, then not written (`CLIENT REPLY OFF|SKIP`).
    Silent(Box<Pending>),
}

/// A pending reply and, when metrics are on, its command's timing.
type Owed = (Pending, Option<Timed>);

/// A dedicated connection to one node.
struct Pinned {
    addr: SocketAddr,
    conn: BackendConn,
}

/// Serves one client until it disconnects, quits or breaks the protocol.
pub async fn run(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let sock = Socket::of(&stream, peer);
    let (read, write) = stream.into_split();
    // Replies may be written by the backend connections' tasks too (see `direct`).
    serve(proxy, sock, read, |proxy, entry, queue| {
        let out = Arc::new(direct::ClientOut::new(write, proxy.clone(), entry.clone()));
        queue.set_direct(out.clone());
        direct::SharedWrite(out)
    })
    .await
}

/// What `CLIENT LIST` says about a client's socket.
struct Socket {
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    fd: i64,
}

impl Socket {
    /// `peer` as `accept` returned it.
    fn of(s: &TcpStream, peer: SocketAddr) -> Socket {
        use std::os::fd::AsRawFd;
        Socket {
            peer: Some(peer),
            local: s.local_addr().ok(),
            fd: i64::from(s.as_raw_fd()),
        }
    }
}

/// Serves one TLS client (handshake done) until it disconnects, quits or breaks the protocol.
/// (The TLS listener set TCP_NODELAY before the handshake.)
pub async fn run_tls(proxy: Arc<Proxy>, stream: TlsClientStream, peer: SocketAddr) {
    let sock = Socket::of(stream.get_ref().0, peer);
    let (read, write) = tokio::io::split(stream);
    serve(proxy, sock, tokio::io::BufReader::new(read), |_, _, _| {
        write
    })
    .await
}

/// Serves a client: `write` makes the writer's side of its socket once the client is known.
async fn serve<W: AsyncWrite + Unpin + Send + 'static>(
    proxy: Arc<Proxy>,
    sock: Socket,
    read: impl ClientRead + 'static,
    write: impl FnOnce(&Arc<Proxy>, &Arc<ClientEntry>, &ReplyQueue<Owed>) -> W,
) {
    let (reader, registered) = Reader::new(&proxy, &sock);
    let entry = registered.entry.clone();
    let write = write(&proxy, &entry, &reader.tx);
    let writing = writer_half(proxy.clone(), write, reader.tx.clone(), entry.clone());
    let mut halves = halves::Halves::spawn(reader_half(reader, read), writing);
    // CLIENT KILL ends both halves at once, whatever they wait for (dropping them aborts them).
    tokio::select! {
        biased;
        _ = halves.ended() => {}
        _ = entry.killed() => {}
    }
    drop(halves);
    drop(registered);
}

/// The reader's task: reads, routes and queues until the client stops, then tells the writer.
/// (A block that borrows the reader it owns, not an `async fn` taking it: that would keep the
/// 688-byte reader twice.)
#[allow(clippy::manual_async_fn)] // an async fn would hold `reader` twice
fn reader_half(
    mut reader: Reader,
    read: impl ClientRead + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        reader.run(read).await;
        reader.tx.close_producer();
    }
}

/// The writer's task: writes replies in order until the reader is done and all is written.
#[allow(clippy::manual_async_fn)] // the same shape as `reader_half`
fn writer_half(
    proxy: Arc<Proxy>,
    write: impl AsyncWrite + Unpin + Send + 'static,
    queue: Arc<ReplyQueue<Owed>>,
    entry: Arc<ClientEntry>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        // Closed however the writer ends, aborted included: the queue lets go of the socket.
        struct Close<'a>(&'a ReplyQueue<Owed>);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.close_consumer();
            }
        }
        let _close = Close(&queue);
        write_loop(proxy, write, &queue, &entry).await;
    }
}

struct Reader {
    proxy: Arc<Proxy>,
    state: ClientState,
    tx: Arc<ReplyQueue<Owed>>,
    /// `tx`, as the backend connections see it.
    sink: Arc<dyn ReplySink>,
    keys: Vec<usize>,
    pinned: Option<Pinned>,
    multi: Option<Multi>,
    blocking: Option<Pinned>,
    sub: Option<Subscription>,
    /// MONITOR streams, closed when dropped.
    monitor: Option<crate::monitor::Monitor>,
    /// The command `dispatch` last resolved (metrics label).
    command: CommandId,
    /// Where the client's last request to a node went.
    lane: Lane,
    /// Every request the client sent before has been answered (the reader just waited for
    /// that): the next request may take any lane.
    settled: bool,
    /// Slots written lately (`read_your_writes_ms`).
    recent_writes: recent_writes::RecentWrites,
    /// The registry's clock at the last read (one clock read per read, not per request).
    now_ms: u64,
    /// This request's reply is not written (`CLIENT REPLY SKIP` came before it).
    skip_this: bool,
    /// This client in the process-wide registry.
    entry: Arc<ClientEntry>,
    /// The request being dispatched writes (`write` flag).
    writes: bool,
    /// Masters the client wrote to since its last WAIT; `written_everywhere` when a write went
    /// to several nodes or a connection of its own.
    written: Vec<SocketAddr>,
    written_everywhere: bool,
    /// The configuration, for per-request reads.
    config: crate::proxy::ConfigCache,
    /// The topology, kept while a batch of requests read together is routed and dropped
    /// after it, so an idle client holds no view (nor the connections in it).
    view: Option<crate::cluster::refresher::ViewCache>,
}

impl Reader {
    /// A new client's reader, its reply queue (`tx`) and its place in the client registry.
    fn new(proxy: &Arc<Proxy>, sock: &Socket) -> (Reader, crate::clients::Registered) {
        let id = proxy.next_session_id();
        let queue = Arc::new(ReplyQueue::with_budget(
            proxy.config().max_pipeline,
            proxy.reply_budget(),
        ));
        let auth = crate::auth::ClientAuth::on_connect(proxy);
        let registered = proxy
            .clients()
            .register(id, sock.peer, sock.local, sock.fd, auth.user());
        let entry = registered.entry.clone();
        let state = ClientState {
            id,
            auth,
            peer: sock.peer,
            entry: Some(entry.clone()),
            ..Default::default()
        };
        let reader = Reader {
            proxy: proxy.clone(),
            state,
            sink: queue.clone(),
            tx: queue,
            keys: Vec::new(),
            pinned: None,
            multi: None,
            blocking: None,
            sub: None,
            monitor: None,
            command: CommandId::UNKNOWN,
            lane: Lane::Shared,
            settled: false,
            recent_writes: Default::default(),
            now_ms: 0,
            skip_this: false,
            entry,
            writes: false,
            written: Vec::new(),
            written_everywhere: false,
            config: proxy.config_cache(),
            view: None,
        };
        (reader, registered)
    }

    /// Takes `&mut self`, not `self`: an `async fn` keeps a by-value argument twice in its
    /// state (the argument and the local it is moved into), 688 bytes more per client.
    async fn run(&mut self, mut read: impl ClientRead) {
        let c = self.proxy.config_arc();
        let mut framer = RequestFramer::new(Limits {
            max_bulk_len: c.max_bulk_len,
            max_args: c.max_args,
            max_inline_len: c.max_inline_len,
        });
        let idle = c.client_idle_timeout;
        // The read buffer exists only while the client has bytes for us: it is taken when the
        // socket turns readable and parked (see `SPARE`) when the socket has nothing more and
        // every complete request is cut off it, so an idle client holds none (4 KiB less per
        // idle connection), while a busy one keeps reading into the same buffer.
        let mut buf = BytesMut::new();
        // Shutdown: a client waiting for its next request stops being read (what it sent is
        // answered, then the connection closes); a subscriber stays until the drain deadline.
        let proxy = self.proxy.clone();
        let drain = proxy.draining();
        tokio::pin!(drain);
        let mut draining = false;
        loop {
            let readable = async {
                match idle {
                    Some(t) => tokio::time::timeout(t, read.readable()).await.ok(),
                    None => Some(read.readable().await),
                }
            };
            let ready = tokio::select! {
                biased;
                r = readable => match r {
                    Some(r) => r,
                    None => return, // idle too long: Redis closes silently too
                },
                _ = &mut drain, if !draining => {
                    draining = true;
                    if self.sub.is_none() {
                        return;
                    }
                    continue;
                }
            };
            if ready.is_err() {
                return;
            }
            if buf.is_empty() && buf.capacity() < 1024 {
                buf = take_spare();
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096.max(buf.len()));
            }
            let n = match read.read_once(&mut buf).await {
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(n)) => n,
                None => {
                    // No bytes after all: the readiness was stale, or this task has used up
                    // its turn (tokio's coop budget), which makes every read answer Pending
                    // while `readable()` keeps answering ready. Hand the turn back if so: a
                    // client's long pipeline must not spin its worker and starve everyone
                    // else on it. Then wait again, without the buffer if it is empty.
                    if buf.is_empty() {
                        park_spare(std::mem::take(&mut buf));
                    }
                    tokio::task::coop::consume_budget().await;
                    continue;
                }
            };
            // Requests framed from this read arrived now: one clock read per read (metrics).
            // The proxy's slow log times requests too (with metrics off, one clock read per read).
            let slow_log = self.config.load().slowlog_slower_than.is_some();
            let read_at = match &self.proxy.metrics {
                Some(m) => Some(m.received(n)),
                None => slow_log.then(std::time::Instant::now),
            };
            self.now_ms = self.proxy.clients().now_ms();
            loop {
                match framer.next_request(&mut buf) {
                    Ok(Some(req)) => {
                        let mut timed = read_at.map(Timed::start);
                        if slow_log {
                            timed
                                .iter_mut()
                                .for_each(|t| t.keep_request(req.bytes().clone()));
                        }
                        if self.proxy.clients().must_wait(true) {
                            Box::pin(self.wait_while_paused(&req)).await;
                        }
                        let mut step = self.dispatch(req);
                        if let Step::Settle(req) = step {
                            if !self.tx.wait_settled().await {
                                return;
                            }
                            self.settled = true;
                            step = self.dispatch(req);
                        }
                        timed.iter_mut().for_each(|t| t.set_command(self.command));
                        let silent = self.silence();
                        let quiet = |p: Pending| match silent {
                            true => Pending::Silent(Box::new(p)),
                            false => p,
                        };
                        let (pending, stop) = match step {
                            Step::Queue(p) => (Some(quiet(p)), false),
                            Step::Stop(p) => (Some(p), true),
                            Step::Settle(_) => unreachable!("dispatched again after settling"),
                            Step::Subscribe(req) => (Box::pin(self.subscribe(req)).await, false),
                            Step::Monitor => (Box::pin(self.monitor()).await, false),
                            Step::Route(f, conn) => {
                                if self.writes && !self.written.contains(&f.addr()) {
                                    self.written.push(f.addr());
                                }
                                let bytes = f.request().clone();
                                let owed = (quiet(Pending::Forward(f, self.client())), timed);
                                let seq = match self.tx.try_push_awaiting(owed) {
                                    Ok(seq) => seq,
                                    Err(owed) => self.tx.push_awaiting(owed).await,
                                };
                                let Some(seq) = seq else {
                                    return;
                                };
                                let to = ReplyTo::sink(self.sink.clone(), seq);
                                conn.send_to(None, bytes, to);
                                continue;
                            }
                        };
                        if let Some(p) = pending {
                            if !self.tx.push((p, timed)).await {
                                return;
                            }
                        } else if let (Some(t), Some(m)) = (timed, &self.proxy.metrics) {
                            m.command_done(t, b""); // answered on the subscription connection
                        }
                        if stop {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let msg = reply::error(&format!("ERR Protocol error: {e}"));
                        self.proxy.metrics.iter().for_each(|m| m.protocol_error());
                        let _ = self.tx.push((Pending::Close(msg), None)).await;
                        return;
                    }
                }
            }
            self.view = None;
            if buf.is_empty() {
                park_spare(std::mem::take(&mut buf)); // an idle client holds no buffer
            }
        }
    }

    /// Whether the next request may go on `lane` now: yes on the lane of the client's previous
    /// requests, or once those are all answered; `false` means return [`Step::Settle`].
    fn enter_lane(&mut self, lane: Lane) -> bool {
        let ok = lane == self.lane || self.settled;
        if ok {
            self.lane = lane;
            self.settled = false;
        }
        ok
    }

    fn client(&self) -> Client {
        Client {
            id: self.state.id,
            proto: self.state.proto,
        }
    }

    /// Routes one request.
    fn dispatch(&mut self, req: Request) -> Step {
        let proxy = self.proxy.clone();
        self.command = CommandId::UNKNOWN;
        let Some(info) = proxy.commands.lookup(&req) else {
            self.multi.iter_mut().for_each(Multi::abort); // as Redis: EXEC will abort
            return Step::Queue(Pending::Ready(local::unknown_command(&req)));
        };
        self.command = info.id;
        self.writes = info.write;
        self.entry.touch(info.id.0, self.now_ms);
        if let Some(e) = local::arity_error(info, &req) {
            self.multi.iter_mut().for_each(Multi::abort);
            return Step::Queue(Pending::Ready(e));
        }
        if let Err(e) = self.state.auth.permit(self.config.load(), info) {
            self.multi.iter_mut().for_each(Multi::abort); // as Redis: EXEC will abort
            return Step::Queue(Pending::Ready(e));
        }
        if info.admin && self.config.load().admin_commands == crate::config::AdminCommands::Deny {
            self.multi.iter_mut().for_each(Multi::abort);
            return Step::Queue(Pending::Ready(reply::error(&format!(
                "NOPERM this proxy refuses '{}' (admin_commands = \"deny\")",
                info.name
            ))));
        }
        use LocalCommand as L;
        if self.multi.is_some()
            && !matches!(
                info.handling,
                Handling::Local(L::Quit | L::Reset | L::Auth | L::Hello)
            )
        {
            if !self.enter_lane(Lane::Pinned) {
                return Step::Settle(req);
            }
            return Step::Queue(self.in_multi(info, &req));
        }
        if self.sub.is_some() || matches!(info.handling, Handling::PubSub(_)) {
            if let Some(step) = self.pubsub_step(info, &req) {
                return step;
            }
        }
        let may_block = info.handling == Handling::Blocking && proxy.commands.may_block(info, &req);
        if info.write && !matches!(info.handling, Handling::Forward | Handling::ByChannel) {
            self.written_everywhere = true; // several nodes, or a connection of its own
        }
        let lane = match info.handling {
            Handling::Forward
            | Handling::ByChannel
            | Handling::Split(_)
            | Handling::AllMasters(_)
            | Handling::AllNodes(_)
            | Handling::Info
            | Handling::Scan => Some(Lane::Shared),
            // A blocking command checks its lane itself: it also depends on the node.
            Handling::Blocking if may_block => None,
            Handling::Blocking => Some(Lane::Shared),
            Handling::Transaction(TxCommand::Watch) => Some(Lane::Pinned),
            Handling::Transaction(_) if self.pinned.is_some() => Some(Lane::Pinned),
            _ => None,
        };
        if lane.is_some_and(|l| !self.enter_lane(l)) {
            return Step::Settle(req);
        }
        if info.handling == Handling::Local(L::Reset) {
            self.entry
                .subscribed
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.entry
                .multi
                .store(-1, std::sync::atomic::Ordering::Relaxed);
            self.sub = None;
            self.monitor = None;
            self.entry
                .monitor
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.multi = None;
            self.pinned = None;
            self.blocking = None;
            self.lane = Lane::Retired;
        }
        match info.handling {
            Handling::Local(cmd) => match local::answer(&proxy, &mut self.state, cmd, info, &req) {
                Outcome::Reply(r) => Step::Queue(Pending::Ready(r)),
                Outcome::Close(r) => Step::Stop(Pending::Close(r)),
                Outcome::Forward => self.forward(req, None, false),
            },
            Handling::Forward => self.forward_keyed(info, req),
            Handling::Split(kind) => {
                self.keys.clear();
                proxy.commands.keys(info, &req, &mut self.keys);
                match common_slot(&req, &self.keys) {
                    Ok(slot) => self.forward(req, slot, info.readonly),
                    Err(_) => match fanout::split(
                        &proxy,
                        self.client(),
                        &req,
                        kind,
                        &self.keys,
                        info.readonly,
                    ) {
                        Ok(f) => Step::Queue(Pending::Fanout(f, self.client())),
                        Err(e) => Step::Queue(Pending::Ready(e)),
                    },
                }
            }
            // The channel is hashed like a key: one channel, one node, messages in order.
            Handling::ByChannel => {
                let slot = key_slot(req.arg(1));
                self.forward(req, Some(slot), false)
            }
            Handling::Scan => Step::Queue(match fanout::scan(&proxy, self.client(), &req) {
                Ok(s) => {
                    // A call may go on to the next master once the first answers: what the
                    // client sends next waits for it, so the scan cannot see a later write.
                    self.lane = Lane::Retired;
                    Pending::Scan(Box::new(s), self.client())
                }
                Err(e) => Pending::Ready(e),
            }),
            Handling::AllMasters(policy) => Step::Queue(
                match fanout::all_masters(
                    &proxy,
                    self.client(),
                    &req,
                    fanout::Merge::for_request(policy, &req),
                ) {
                    Ok(f) => Pending::Fanout(f, self.client()),
                    Err(e) => Pending::Ready(e),
                },
            ),
            Handling::AllNodes(kind) => Step::Queue(self.all_nodes(kind, info, &req)),
            Handling::Info => Step::Queue(self.info(&req)),
            Handling::Transaction(cmd) => Step::Queue(self.transaction(cmd, info, req)),
            Handling::Blocking if may_block => self.blocking(info, req),
            Handling::Blocking => self.forward_keyed(info, req),
            Handling::Monitor => Step::Monitor,
            Handling::Wait => self.wait(req),
            Handling::PubSub(_) | Handling::Unsupported => {
                Step::Queue(Pending::Ready(unsupported(info)))
            }
        }
    }
}

fn unsupported(info: &CommandInfo) -> Bytes {
    reply::error(&format!(
        "ERR slotproxy does not support '{}' (see README: what is not supported)",
        info.name
    ))
}

#[cfg(test)]
mod tests {
    /// What a client costs while it idles is mostly its tasks: each future is allocated whole,
    /// and written whole when spawned. The one session future was 15.7 KB before the rare
    /// awaits were boxed and the halves stopped being kept twice (RSS per idle client 20.7 KB);
    /// the session and its two halves' futures together are bounded here (issue 13's bound is
    /// 8 KB per idle client, with the task cells and the rest).
    #[tokio::test]
    async fn the_client_tasks_stay_small() {
        use super::*;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let proxy = Arc::new(Proxy::idle(
            Default::default(),
            crate::protocol::command::CommandTable::fallback(),
        ));
        let sock = Socket::of(&stream, stream.peer_addr().unwrap());
        let (read, write) = stream.into_split();
        let (reader, registered) = Reader::new(&proxy, &sock);
        let writing = writer_half(
            proxy.clone(),
            write,
            reader.tx.clone(),
            registered.entry.clone(),
        );
        let reading = reader_half(reader, read);
        let stream = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let session = super::run(proxy, stream, l.local_addr().unwrap());
        let sizes = [
            std::mem::size_of_val(&session),
            std::mem::size_of_val(&reading),
            std::mem::size_of_val(&writing),
        ];
        let total: usize = sizes.iter().sum();
        assert!(
            total <= 6 * 1024,
            "session, reader and writer futures: {sizes:?} bytes"
        );
    }
}
