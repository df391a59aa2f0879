//! Who a client is and what it may run. This module owns every authentication and access
//! decision the proxy makes for its clients:
//!
//! - the users, as the *current* configuration defines them (read through `proxy.config()`
//!   at each AUTH, so a reload changes who may log in without touching connected clients):
//!   - the default user: with `password` (or a `[[users]]` entry named `default`) it needs
//!     that password; with neither and no `[[users]]` it is `nopass`, and every client is
//!     logged in on connect; with `[[users]]` but no password for it, it is **disabled**
//!     (clients must AUTH as a named user; a proxy that defines users but lets everyone in
//!     unauthenticated would surprise its operator);
//!   - named users (`[[users]]`) and their [`Access`];
//! - checking a password: the SHA-256 of what the client sent against the SHA-256 of the
//!   configured password (`password_sha256`, or the hash of `password`), compared in constant
//!   time, as Redis compares its ACL password hashes;
//! - a client's login ([`ClientAuth`]): set on connect, by `AUTH` and `HELLO ... AUTH`, back to
//!   the default user by `RESET`. The access of a logged-in client follows the configuration:
//!   after a reload its next command sees its user's new access, and a user the reload removed
//!   (or a default user it disabled) is logged out: its commands get `-NOAUTH` until it
//!   authenticates again (Redis drops such clients; the proxy keeps the connection);
//! - what a command requires ([`Requires`]), decided once per command when the command table
//!   is built: read-only users may run what Redis grants a user defined `+@read +@connection`
//!   (see [`requirement`]);
//! - the replies (`-WRONGPASS`, `-NOAUTH`, `-NOPERM`) worded as Redis 7.0.15 words them, and
//!   the accounting of failed logins: `slotproxy_auth_failures_total` and a WARN line at most
//!   once a second per process, with the client's address and the user name (never the
//!   password), saying how many lines were held back.
use crate::config::security::{Access, Secret};
use crate::config::Config;
use crate::protocol::command::CommandInfo;
use crate::protocol::reply;
use crate::proxy::Proxy;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What a command requires of the client that sends it. Decided once per command by
/// [`requirement`] and kept in the command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requires {
    /// Runs before authentication: the server's `no_auth` flag (AUTH, HELLO, QUIT, RESET).
    Nothing,
    /// Any logged-in user, read-only users included.
    Login,
    /// A user with `access = "all"`.
    FullAccess,
}

/// Commands the proxy answers itself about the client's own connection, which read-only
/// users may run although Redis 7.0 puts them outside `@connection`: `ACL WHOAMI` (in `@slow`
/// only, so a `+@read +@connection` Redis user is refused it), and `CLIENT SETINFO`/`NO-TOUCH`
/// (absent from 7.0; `@connection` from 7.2 on).
const OWN_CONNECTION: &[&str] = &["acl|whoami", "client|setinfo", "client|no-touch"];

/// What command `name` requires, from the server's own flags and ACL categories (so it tracks
/// the cluster's Redis version, as Redis's ACLs do):
/// - `no_auth` flag: nothing;
/// - ACL category `@read` (the commands flagged `readonly`, except EVAL_RO, EVALSHA_RO and
///   FCALL_RO, which Redis files under `@scripting` only) or `@connection` (PING, ECHO, SELECT,
///   CLIENT ..., COMMAND ..., READONLY, READWRITE, WAIT, ...), and [`OWN_CONNECTION`]: a login;
/// - a container with subcommands (`CONFIG`): the table yields it only for a subcommand it
///   does not know, which gets Redis's `unknown subcommand` error (or, for `CLIENT SETINFO` on
///   a 7.0 table, the proxy's own OK), so a login;
/// - anything else (writes, MULTI/EXEC/WATCH, (S|P)SUBSCRIBE, PUBLISH, EVAL*, FCALL*, INFO,
///   CONFIG GET, ...): full access, as for a Redis user defined `+@read +@connection`.
pub fn requirement(
    name: &str,
    flags: &[String],
    categories: &[String],
    container: bool,
) -> Requires {
    let has = |list: &[String], x: &str| list.iter().any(|f| f == x);
    if has(flags, "no_auth") {
        Requires::Nothing
    } else if container
        || has(categories, "@read")
        || has(categories, "@connection")
        || OWN_CONNECTION.contains(&name)
    {
        Requires::Login
    } else {
        Requires::FullAccess
    }
}

/// `-WRONGPASS ...`: wrong password, unknown user, or disabled user (Redis does not say which).
pub fn wrongpass() -> Bytes {
    reply::error("WRONGPASS invalid username-password pair or user is disabled.")
}

/// `-NOAUTH Authentication required.`
pub fn noauth() -> Bytes {
    reply::error("NOAUTH Authentication required.")
}

/// Redis's answer to `HELLO` (without `AUTH`) from a client that is not logged in.
pub fn hello_noauth() -> Bytes {
    reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
}

/// `-NOPERM ...` for a command the client's user may not run, as Redis 7.0.15 words it
/// (a refused EXEC also discards the transaction, hence Redis's EXECABORT wording).
pub fn noperm(info: &CommandInfo) -> Bytes {
    let msg = format!(
        "NOPERM this user has no permissions to run the '{}' command",
        info.name
    );
    if info.name == "exec" {
        reply::error(&format!(
            "EXECABORT Transaction discarded because of: {msg}"
        ))
    } else {
        reply::error(&msg)
    }
}

/// How a user's password is checked.
enum Password<'a> {
    /// `nopass`: any password works.
    Any,
    Clear(&'a Secret),
    /// 64 hex digits (checked by config validation).
    Sha256Hex(&'a str),
}

/// A user the configuration defines and enables.
struct User<'a> {
    password: Password<'a>,
    access: Access,
}

/// The enabled user named `name` in `cfg`; `None` if there is none (or it is disabled).
fn user<'a>(cfg: &'a Config, name: &[u8]) -> Option<User<'a>> {
    if let Some(u) = cfg.users.iter().find(|u| u.name.as_bytes() == name) {
        let password = match (&u.password, &u.password_sha256) {
            (Some(p), _) => Password::Clear(p),
            (None, Some(h)) => Password::Sha256Hex(h),
            (None, None) => return None, // validation refuses this; never an open door
        };
        return Some(User {
            password,
            access: u.access,
        });
    }
    if name != b"default" {
        return None;
    }
    match &cfg.password {
        Some(p) => Some(User {
            password: Password::Clear(p),
            access: Access::All,
        }),
        None if cfg.users.is_empty() => Some(User {
            password: Password::Any,
            access: Access::All,
        }),
        None => None, // users are defined: the default user is disabled
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// Hex digits to bytes; `None` unless exactly 64 hex digits.
fn unhex32(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Some(out)
}

/// Compares two digests in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// The access `name` gets in `cfg` with password `pass`; `None`: WRONGPASS. The password is
/// hashed whether or not the user exists, so the time taken does not tell them apart.
fn authenticate(cfg: &Config, name: &[u8], pass: &[u8]) -> Option<Access> {
    let given = sha256(pass);
    let u = user(cfg, name)?;
    let ok = match u.password {
        Password::Any => true,
        Password::Clear(p) => same_digest(&given, &sha256(p.expose().as_bytes())),
        Password::Sha256Hex(h) => unhex32(h).is_some_and(|want| same_digest(&given, &want)),
    };
    ok.then_some(u.access)
}

/// Who one client is logged in as.
#[derive(Debug, Default)]
pub struct ClientAuth {
    login: Option<Login>,
}

#[derive(Debug)]
struct Login {
    user: Box<str>,
    access: Access,
    /// The configuration `access` was read from: when the current one is another, the
    /// access is read again (see [`ClientAuth::permit`]).
    seen: Arc<Config>,
}

impl ClientAuth {
    /// A new client: logged in as the default user when it is `nopass`, else not at all.
    pub fn on_connect(proxy: &Proxy) -> ClientAuth {
        let mut a = ClientAuth::default();
        a.reset(proxy);
        a
    }

    /// Back to the default user, as on connect (`RESET`).
    pub fn reset(&mut self, proxy: &Proxy) {
        let cfg = proxy.config_arc();
        let access = user(&cfg, b"default")
            .filter(|u| matches!(u.password, Password::Any))
            .map(|u| u.access);
        self.login = access.map(|access| Login {
            user: "default".into(),
            access,
            seen: cfg,
        });
    }

    pub fn is_logged_in(&self) -> bool {
        self.login.is_some()
    }

    /// The user name (`ACL WHOAMI`); `default` before any login, as Redis answers.
    pub fn user(&self) -> &str {
        self.login.as_ref().map_or("default", |l| &l.user)
    }

    /// Whether the client may run `info` now: `Err` holds the reply (`-NOAUTH`, `-NOPERM`).
    /// `cfg` is the current configuration, from the session's cache of it: a pointer compare
    /// per request, where loading it from the proxy's `ArcSwap` here cost ~110 instructions per
    /// request (callgrind, `SET -c 50 -P 16`: 3,105 in all).
    #[inline]
    pub fn permit(&mut self, cfg: &Arc<Config>, info: &CommandInfo) -> Result<(), Bytes> {
        if info.requires == Requires::Nothing {
            return Ok(());
        }
        let Some(login) = &mut self.login else {
            return Err(noauth());
        };
        if !Arc::ptr_eq(cfg, &login.seen) {
            match user(cfg, login.user.as_bytes()) {
                Some(u) => {
                    login.access = u.access;
                    login.seen = Arc::clone(cfg);
                }
                None => {
                    self.login = None; // the reload removed or disabled this user
                    return Err(noauth());
                }
            }
        }
        match (login.access, info.requires) {
            (Access::ReadOnly, Requires::FullAccess) => Err(noperm(info)),
            _ => Ok(()),
        }
    }

    /// `AUTH [user] pass` and `HELLO ... AUTH user pass`: logs in as `user` (the default user
    /// when `None`), or answers WRONGPASS, counts the failure and logs it (rate-limited). A
    /// failed attempt leaves the client logged in as before, as with Redis.
    pub fn login(
        &mut self,
        proxy: &Proxy,
        peer: Option<SocketAddr>,
        user: Option<&[u8]>,
        pass: &[u8],
    ) -> Result<(), Bytes> {
        let name = user.unwrap_or(b"default");
        let cfg = proxy.config_arc();
        match authenticate(&cfg, name, pass) {
            Some(access) => {
                self.login = Some(Login {
                    user: String::from_utf8_lossy(name).into(),
                    access,
                    seen: cfg,
                });
                Ok(())
            }
            None => {
                failed(proxy, peer, name);
                Err(wrongpass())
            }
        }
    }
}

/// `AUTH [user] pass`.
pub fn auth_command(
    proxy: &Proxy,
    auth: &mut ClientAuth,
    peer: Option<SocketAddr>,
    args: &[&[u8]],
) -> Bytes {
    let r = match args {
        [pass] => {
            let cfg = proxy.config();
            if user(&cfg, b"default").is_some_and(|u| matches!(u.password, Password::Any)) {
                // Redis's hint that the client's configuration and the server's disagree.
                return reply::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            }
            auth.login(proxy, peer, None, pass)
        }
        [user, pass] => auth.login(proxy, peer, Some(user), pass),
        _ => return reply::error("ERR syntax error"),
    };
    match r {
        Ok(()) => Bytes::from_static(reply::OK),
        Err(e) => e,
    }
}

/// Counts a failed login and logs it, at most one line a second per process.
fn failed(proxy: &Proxy, peer: Option<SocketAddr>, user: &[u8]) {
    if let Some(m) = &proxy.metrics {
        m.auth_failed();
    }
    static LIMIT: LogLimiter = LogLimiter::new();
    static START: OnceLock<Instant> = OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
    if let Some(suppressed) = LIMIT.admit(now) {
        let user = String::from_utf8_lossy(&user[..user.len().min(64)]).into_owned();
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        tracing::warn!(
            client = %peer,
            user = ?user,
            suppressed,
            "client authentication failed (WRONGPASS); `suppressed` is how many more failures since the last such line were not logged"
        );
    }
}

/// Lets one event through per second; counts the ones it holds back.
struct LogLimiter {
    /// The second (of the caller's clock, from 1) of the last line let through; 0 = none.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    const fn new() -> LogLimiter {
        LogLimiter {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when an event at second `now` may be logged, `n` being how many were held
    /// back since the last one logged; `None` (and counted) otherwise.
    fn admit(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if last < now
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests;
