//! Transactions: MULTI/EXEC/DISCARD/WATCH/UNWATCH on a connection of the client's own, pinned to
//! the one node that owns the transaction's keys. Commands queued before any key picks the node
//! are held here and replayed after `MULTI` once it is picked.
use super::{route_error, Lane, Pending, Reader};
use crate::protocol::command::{CommandInfo, Handling, TxCommand};
use crate::protocol::framer::Request;
use crate::protocol::reply;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// A MULTI in progress.
#[derive(Default)]
pub(super) struct Multi {
    /// Commands queued before any key chose the node (sent on pinning, replies dropped).
    queued: Vec<Bytes>,
    /// A command could not be queued; EXEC will abort.
    aborted: bool,
}

impl Multi {
    /// A command could not be queued: EXEC will answer EXECABORT, as Redis does.
    pub(super) fn abort(&mut self) {
        self.aborted = true;
    }
}

impl Reader {
    /// Gives up the transaction connection: the next request, on any connection, waits for
    /// what was sent on it (see [`Lane::Retired`]).
    fn retire_pinned(&mut self) -> Option<super::Pinned> {
        let p = self.pinned.take();
        if p.is_some() {
            self.lane = Lane::Retired;
        }
        p
    }

    fn send_pinned(&self, bytes: Bytes) -> Pending {
        let p = self.pinned.as_ref().expect("caller checked");
        Pending::Direct(p.conn.send(None, bytes), p.addr)
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH outside a MULTI.
    pub(super) fn transaction(
        &mut self,
        cmd: TxCommand,
        info: &CommandInfo,
        req: Request,
    ) -> Pending {
        match cmd {
            TxCommand::Multi => {
                self.multi = Some(Multi::default());
                self.entry.multi.store(0, Ordering::Relaxed);
                match self.pinned {
                    Some(_) => self.send_pinned(req.bytes().clone()),
                    None => Pending::Ready(Bytes::from_static(reply::OK)),
                }
            }
            TxCommand::Exec => Pending::Ready(reply::error("ERR EXEC without MULTI")),
            TxCommand::Discard => Pending::Ready(reply::error("ERR DISCARD without MULTI")),
            TxCommand::Watch => {
                let addr = match self.master_for_keys(info, &req) {
                    Ok(a) => a,
                    Err(e) => return Pending::Ready(e),
                };
                match &self.pinned {
                    Some(p) if p.addr != addr => return Pending::Ready(reply::error(
                        "ERR slotproxy: all keys WATCHed before a MULTI must be served by one node",
                    )),
                    Some(_) => {}
                    None => self.pinned = Some(self.dedicated(addr, false)),
                }
                self.send_pinned(req.bytes().clone())
            }
            TxCommand::Unwatch => match self.retire_pinned() {
                Some(p) => Pending::Direct(p.conn.send(None, req.bytes().clone()), p.addr),
                None => Pending::Ready(Bytes::from_static(reply::OK)),
            },
        }
    }

    /// Any command while a MULTI is open.
    pub(super) fn in_multi(&mut self, info: &CommandInfo, req: &Request) -> Pending {
        let Handling::Transaction(cmd) = info.handling else {
            return self.queue_in_multi(info, req);
        };
        match cmd {
            TxCommand::Multi => {
                return Pending::Ready(reply::error("ERR MULTI calls can not be nested"))
            }
            TxCommand::Watch => {
                return Pending::Ready(reply::error("ERR WATCH inside MULTI is not allowed"))
            }
            TxCommand::Exec | TxCommand::Discard => {
                let multi = self.multi.take().expect("in multi");
                self.entry.multi.store(-1, Ordering::Relaxed);
                let pinned = self.retire_pinned();
                if cmd == TxCommand::Discard {
                    return match pinned {
                        Some(p) => Pending::Direct(p.conn.send(None, req.bytes().clone()), p.addr),
                        None => Pending::Ready(Bytes::from_static(reply::OK)),
                    };
                }
                if multi.aborted {
                    if let Some(p) = pinned {
                        drop(
                            p.conn
                                .send(None, Request::from_args(&["DISCARD"]).bytes().clone()),
                        );
                    }
                    return Pending::Ready(reply::error(
                        "EXECABORT Transaction discarded because of previous errors.",
                    ));
                }
                let p = match pinned {
                    Some(p) => p,
                    None if multi.queued.is_empty() => {
                        return Pending::Ready(Bytes::from_static(b"*0\r\n"))
                    }
                    // Every queued command is keyless: any master runs them, on a connection
                    // of their own that is retired like any other, so what the client sends
                    // next waits for this EXEC.
                    None => match self.master_for(None) {
                        Ok(addr) => {
                            self.lane = Lane::Retired;
                            let p = self.dedicated(addr, false);
                            drop(
                                p.conn
                                    .send(None, Request::from_args(&["MULTI"]).bytes().clone()),
                            );
                            for q in multi.queued {
                                drop(p.conn.send(None, q));
                            }
                            p
                        }
                        Err(e) => return Pending::Ready(e),
                    },
                };
                return Pending::Direct(p.conn.send(None, req.bytes().clone()), p.addr);
            }
            TxCommand::Unwatch => {}
        }
        self.queue_in_multi(info, req)
    }

    /// A command other than MULTI/EXEC/DISCARD/WATCH while a MULTI is open: queued on the
    /// node of its keys (held until a key picks the node).
    fn queue_in_multi(&mut self, info: &CommandInfo, req: &Request) -> Pending {
        self.entry.multi.fetch_add(1, Ordering::Relaxed);
        let slot = match self.slot_of(info, req) {
            Ok(s) => s,
            Err(e) => {
                self.multi.as_mut().expect("in multi").aborted = true;
                return Pending::Ready(route_error(&self.proxy, e));
            }
        };
        match (&self.pinned, slot) {
            (Some(p), Some(slot)) => {
                if self.master_for(Some(slot)).ok() != Some(p.addr) {
                    self.multi.as_mut().expect("in multi").aborted = true;
                    return Pending::Ready(reply::error(
                        "CROSSSLOT slotproxy: all keys of a transaction must be served by one node",
                    ));
                }
            }
            (Some(_), None) => {}
            (None, None) => {
                self.multi
                    .as_mut()
                    .expect("in multi")
                    .queued
                    .push(req.bytes().clone());
                return Pending::Ready(Bytes::from_static(reply::QUEUED));
            }
            (None, Some(slot)) => {
                let addr = match self.master_for(Some(slot)) {
                    Ok(a) => a,
                    Err(e) => {
                        self.multi.as_mut().expect("in multi").aborted = true;
                        return Pending::Ready(e);
                    }
                };
                let p = self.dedicated(addr, false);
                drop(
                    p.conn
                        .send(None, Request::from_args(&["MULTI"]).bytes().clone()),
                );
                for q in std::mem::take(&mut self.multi.as_mut().expect("in multi").queued) {
                    drop(p.conn.send(None, q));
                }
                self.pinned = Some(p);
            }
        }
        self.send_pinned(req.bytes().clone())
    }
}
