//! The process-wide registry of the proxy's own clients, shared by every worker (per-core mode
//! runs one runtime per thread): what `CLIENT LIST`/`INFO`/`KILL` and `INFO clients` report
//! and act on, and the `CLIENT PAUSE` state every session checks.
//!
//! Cost per request stays near zero: a session owns an `Arc<ClientEntry>` and records its last
//! command and activity with relaxed atomic stores; the registry's lock is taken only when a
//! client connects or leaves and when someone lists or kills clients. What changes rarely
//! (name, user, library) sits behind the entry's own small lock.
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Every client of this process.
#[derive(Debug)]
pub struct Clients {
    entries: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    /// The registry's clock: activity is kept as milliseconds since this.
    epoch: Instant,
    pause: Pause,
    /// Clients accepted since start (or the last `CONFIG RESETSTAT`).
    pub connections_received: AtomicU64,
    /// Clients refused (the client limit) since start (or the last `CONFIG RESETSTAT`).
    pub rejected: AtomicU64,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            entries: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            pause: Pause::default(),
            connections_received: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

/// `CLIENT PAUSE`: until when (ms on the registry clock, 0 = not paused), and whether only
/// writes wait.
#[derive(Debug, Default)]
struct Pause {
    until_ms: AtomicU64,
    all: AtomicBool,
    ended: Notify,
}

/// What kind of client, for `CLIENT LIST TYPE` and `CLIENT KILL TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    Normal,
    PubSub,
    /// A MONITOR client (Redis files them under `replica`).
    Monitor,
}

/// The parts of a client that change rarely.
#[derive(Debug, Default, Clone)]
pub struct Meta {
    pub name: Option<Bytes>,
    pub user: String,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
}

/// One client, as the registry sees it.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub fd: i64,
    created_ms: u64,
    /// Registry-clock ms of the last request.
    last_ms: AtomicU64,
    /// The id of the last command (`u32::MAX`: none yet).
    pub cmd: AtomicU32,
    /// 2 or 3.
    pub resp: AtomicU8,
    /// Blocking commands in flight (BLPOP, ...): `blocked_clients` counts clients with one.
    pub blocked: AtomicU32,
    /// Subscribed (pub/sub connection active); MONITOR.
    pub subscribed: AtomicBool,
    pub monitor: AtomicBool,
    /// Commands queued in an open MULTI, -1 outside one.
    pub multi: AtomicI64,
    meta: Mutex<Meta>,
    killed: AtomicBool,
    kill: Notify,
}

impl ClientEntry {
    /// Records a request (command id `cmd`): two relaxed stores.
    #[inline]
    pub fn touch(&self, cmd: u16, now_ms: u64) {
        self.cmd.store(u32::from(cmd), Ordering::Relaxed);
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn kind(&self) -> ClientType {
        if self.monitor.load(Ordering::Relaxed) {
            ClientType::Monitor
        } else if self.subscribed.load(Ordering::Relaxed) {
            ClientType::PubSub
        } else {
            ClientType::Normal
        }
    }

    /// Asks the client's session to close the connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.kill.notify_waiters();
        self.kill.notify_one();
    }

    /// Resolves when the client is killed (`CLIENT KILL`).
    pub async fn killed(&self) {
        loop {
            let n = self.kill.notified();
            if self.killed.load(Ordering::Relaxed) {
                return;
            }
            n.await;
        }
    }

    /// Seconds since the client connected.
    pub fn age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.created_ms) / 1000
    }

    /// Seconds since the client's last request.
    pub fn idle(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)) / 1000
    }
}

/// Unregisters a client when its session ends.
pub struct Registered {
    clients: Arc<Clients>,
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.entry.id);
    }
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ClientEntry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds on the registry clock.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Adds a client; it leaves the registry when the returned guard is dropped.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        fd: i64,
        user: &str,
    ) -> Registered {
        let now = self.now_ms();
        let entry = Arc::new(ClientEntry {
            id,
            peer,
            local,
            fd,
            created_ms: now,
            last_ms: AtomicU64::new(now),
            cmd: AtomicU32::new(u32::MAX),
            resp: AtomicU8::new(2),
            blocked: AtomicU32::new(0),
            subscribed: AtomicBool::new(false),
            monitor: AtomicBool::new(false),
            multi: AtomicI64::new(-1),
            meta: Mutex::new(Meta {
                user: user.to_string(),
                ..Meta::default()
            }),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        });
        self.connections_received.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, entry.clone());
        Registered {
            clients: self.clone(),
            entry,
        }
    }

    /// Every client, by id.
    pub fn snapshot(&self) -> Vec<Arc<ClientEntry>> {
        self.lock().values().cloned().collect()
    }

    /// `CLIENT PAUSE ms`: every client's commands (`all`) or only writes wait until `ms` from
    /// now. A later pause never shortens an earlier one, nor turns ALL into WRITE, as Redis.
    pub fn pause(&self, ms: u64, all: bool) {
        let until = self.now_ms().saturating_add(ms).max(1);
        let p = &self.pause;
        let active = p.until_ms.load(Ordering::Relaxed) > self.now_ms();
        if active {
            p.all
                .store(all || p.all.load(Ordering::Relaxed), Ordering::Relaxed);
            p.until_ms.fetch_max(until, Ordering::Relaxed);
        } else {
            p.all.store(all, Ordering::Relaxed);
            p.until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// `CLIENT UNPAUSE`: waiting commands go on.
    pub fn unpause(&self) {
        self.pause.until_ms.store(0, Ordering::Relaxed);
        self.pause.ended.notify_waiters();
    }

    /// Whether a command that writes (`write`) must wait now: one atomic load when no pause
    /// was ever asked for.
    #[inline]
    pub fn must_wait(&self, write: bool) -> bool {
        let until = self.pause.until_ms.load(Ordering::Relaxed);
        until != 0 && (write || self.pause.all.load(Ordering::Relaxed)) && until > self.now_ms()
    }

    /// Waits until the pause ends (its deadline passes or `CLIENT UNPAUSE`).
    pub async fn pause_ended(&self) {
        loop {
            let ended = self.pause.ended.notified();
            let until = self.pause.until_ms.load(Ordering::Relaxed);
            let now = self.now_ms();
            if until <= now {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(until - now), ended).await;
        }
    }

    /// `CONFIG RESETSTAT`: the proxy's own counters start again.
    pub fn reset_stats(&self) {
        self.connections_received.store(0, Ordering::Relaxed);
        self.rejected.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_holds_writes_only_until_unpause() {
        let c = Arc::new(Clients::default());
        assert!(!c.must_wait(true));
        c.pause(60_000, false);
        assert!(c.must_wait(true));
        assert!(!c.must_wait(false), "WRITE pauses only writes");
        c.pause(10, true);
        assert!(c.must_wait(false), "ALL wins over WRITE");
        c.unpause();
        assert!(!c.must_wait(true));
        c.pause_ended().await;
    }

    #[tokio::test]
    async fn registry_forgets_a_client_when_it_leaves() {
        let c = Arc::new(Clients::default());
        let r = c.register(7, None, None, -1, "default");
        assert_eq!(c.snapshot().len(), 1);
        r.entry.kill();
        r.entry.killed().await;
        drop(r);
        assert!(c.snapshot().is_empty());
    }
}
