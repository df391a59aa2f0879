//! Transactions: MULTI/EXEC/DISCARD/WATCH/UNWATCH on a connection of the client's own, pinned to
//! the one node that owns the transaction's keys. Commands queued before any key picks the node
//! are held here and replayed after `MULTI` once it is picked.
use super::{route_error, unsupported, Lane, Pending, Reader};
use crate::protocol::command::CommandInfo;
use crate::protocol::framer::Request;
use crate::protocol::reply;
use bytes::Bytes;

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
    pub(super) fn transaction(&mut self, info: &CommandInfo, req: Request) -> Pending {
        match info.name.as_str() {
            "multi" => {
                self.multi = Some(Multi::default());
                match self.pinned {
                    Some(_) => self.send_pinned(req.bytes().clone()),
                    None => Pending::Ready(Bytes::from_static(reply::OK)),
                }
            }
            "exec" => Pending::Ready(reply::error("ERR EXEC without MULTI")),
            "discard" => Pending::Ready(reply::error("ERR DISCARD without MULTI")),
            "watch" => {
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
            "unwatch" => match self.retire_pinned() {
                Some(p) => Pending::Direct(p.conn.send(None, req.bytes().clone()), p.addr),
                None => Pending::Ready(Bytes::from_static(reply::OK)),
            },
            _ => Pending::Ready(unsupported(info)),
        }
    }

    /// Any command while a MULTI is open.
    pub(super) fn in_multi(&mut self, info: &CommandInfo, req: &Request) -> Pending {
        let name = info.name.as_str();
        match name {
            "multi" => return Pending::Ready(reply::error("ERR MULTI calls can not be nested")),
            "watch" => {
                return Pending::Ready(reply::error("ERR WATCH inside MULTI is not allowed"))
            }
            "exec" | "discard" => {
                let multi = self.multi.take().expect("in multi");
                let pinned = self.retire_pinned();
                if name == "discard" {
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
                    None => match self.master_for(None) {
                        Ok(addr) => {
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
            _ => {}
        }
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
