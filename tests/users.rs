//! Client users (`password`, `[[users]]`, read-only access), end to end: a real cluster behind a
//! real `slotproxy serve`, and, for the exact reply bytes, a real standalone `redis-server`
//! configured with the same users (`requirepass`, `ACL SETUSER ...`), sent the same commands
//! on one connection each and compared reply by reply.
mod support;

use bytes::Bytes;
use slotproxy::cluster::slot::key_slot;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::standalone::{Conn, Standalone};
use support::{free_port, Cluster, Proxy};

/// SHA-256 of "pw", as `ACL SETUSER ro >pw` stores it.
const PW_SHA256: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

/// The proxy's users: `app` (all), `ro` (read-only, given by the hash), both with password `pw`.
fn users_toml() -> String {
    format!(
        "[[users]]\nname = \"app\"\npassword = \"pw\"\n\n\
         [[users]]\nname = \"ro\"\npassword_sha256 = \"{PW_SHA256}\"\naccess = \"read-only\"\n"
    )
}

/// The same users on a standalone Redis.
const REDIS_USERS: &[&[&str]] = &[
    &["ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all"],
    &[
        "ACL",
        "SETUSER",
        "ro",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@read",
        "+@connection",
    ],
];

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The connection id in a HELLO reply differs between any two servers: masked.
fn mask_id(b: &[u8]) -> String {
    let s = show(b);
    match s.find("$2\r\nid\r\n:") {
        Some(at) => {
            let start = at + "$2\r\nid\r\n:".len();
            let end = start + s[start..].find("\r\n").unwrap_or(0);
            format!("{}N{}", &s[..start], &s[end..])
        }
        None => s,
    }
}

/// The same commands to the proxy and to Redis, on one connection each.
struct Pair {
    proxy: Conn,
    redis: Conn,
}

impl Pair {
    fn open(proxy: SocketAddr, redis: SocketAddr) -> Pair {
        Pair {
            proxy: Conn::open(proxy),
            redis: Conn::open(redis),
        }
    }

    /// Sends `args` to both; their replies must be the same bytes. Returns the reply.
    fn same(&mut self, args: &[&str]) -> Bytes {
        let (p, r) = (self.proxy.call(args), self.redis.call(args));
        assert_eq!(
            mask_id(&p),
            mask_id(&r),
            "{args:?}: proxy (left) and redis-server (right) differ"
        );
        p
    }

    /// Sends each of `cmds` to both, comparing each reply.
    fn all_same(&mut self, cmds: &[&[&str]]) {
        for c in cmds {
            self.same(c);
        }
    }
}

/// A proxy with `toml` as its config file, in front of `cluster`; returned once a client
/// logged in as `user`/`pass` can write through it (its topology is loaded).
fn proxy_with(
    cluster: &Cluster,
    toml: &str,
    extra: &[&str],
    user: &str,
    pass: &str,
) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("slotproxy-users-conf-")
        .tempdir()
        .expect("temp dir");
    let path: PathBuf = dir.path().join("slotproxy.toml");
    std::fs::write(&path, toml).expect("writing the config");
    let mut args = vec!["--config", path.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let proxy = Proxy::start_unready(&cluster.nodes(), &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = Conn::open(proxy.addr());
    let login = c.call(&["AUTH", user, pass]);
    assert_eq!(show(&login), "+OK\r\n", "logging in as {user}");
    loop {
        let r = c.call(&["SET", "users:probe", "1"]);
        if r.starts_with(b"+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "no topology: {}", show(&r));
        std::thread::sleep(Duration::from_millis(100));
    }
    (proxy, dir)
}

/// NOPERM as Redis 7.0.15 words it.
fn noperm(command: &str) -> String {
    format!("-NOPERM this user has no permissions to run the '{command}' command\r\n")
}

#[test]
fn default_password_and_named_users_answer_like_redis() {
    let cluster = Cluster::start();
    let toml = format!("password = \"s3cret\"\n{}", users_toml());
    let (proxy, _conf) = proxy_with(&cluster, &toml, &[], "app", "pw");
    let mut setup = REDIS_USERS.to_vec();
    setup.push(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let redis = Standalone::start(&setup);
    let mut c = Pair::open(proxy.addr(), redis.addr);

    // Before logging in.
    let r = c.same(&["GET", "users:a"]);
    assert_eq!(show(&r), "-NOAUTH Authentication required.\r\n");
    let r = c.same(&["HELLO", "3"]);
    assert!(
        r.starts_with(b"-NOAUTH HELLO must be called"),
        "{}",
        show(&r)
    );
    c.all_same(&[
        &["GET"],
        &["FOOBAR", "x"],
        &["PING"],
        &["HELLO"],
        &["HELLO", "4"],
        &["HELLO", "3", "SETNAME", "a", "b"],
        &["HELLO", "3", "AUTH", "app"],
        &["AUTH", "a", "b", "c"],
        &["ACL", "WHOAMI"],
    ]);
    // Wrong passwords, unknown users.
    for cmd in [
        &["AUTH", "wrong"][..],
        &["AUTH", "default", "wrong"],
        &["AUTH", "someone", "s3cret"],
        &["AUTH", "app", "bad"],
        &["AUTH", "ro", "PW"],
        &["AUTH", "APP", "pw"],
        &["HELLO", "3", "AUTH", "app", "bad"],
        &["HELLO", "2", "AUTH", "nobody", "pw"],
    ] {
        let r = c.same(cmd);
        assert_eq!(
            show(&r),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            "{cmd:?}"
        );
    }
    // The default user's password, then named users; a failed AUTH keeps the login.
    assert_eq!(show(&c.same(&["AUTH", "s3cret"])), "+OK\r\n");
    assert_eq!(show(&c.same(&["ACL", "WHOAMI"])), "$7\r\ndefault\r\n");
    assert_eq!(show(&c.same(&["AUTH", "app", "pw"])), "+OK\r\n");
    c.same(&["AUTH", "ro", "wrong"]);
    assert_eq!(show(&c.same(&["ACL", "WHOAMI"])), "$3\r\napp\r\n");
    c.all_same(&[
        &["SET", "users:a", "1"],
        &["SET", "users:b", "2"],
        &["SET", "users:c", "3"],
    ]);
    // RESET: back to the default user, who needs its password again.
    assert_eq!(show(&c.same(&["RESET"])), "+RESET\r\n");
    c.all_same(&[&["ACL", "WHOAMI"], &["GET", "users:a"]]);

    // A read-only user, logged in by HELLO 3 AUTH.
    let hello = c.same(&["HELLO", "3", "AUTH", "ro", "pw"]);
    assert!(hello.starts_with(b"%7\r\n"), "{}", show(&hello));
    c.all_same(&[
        &["GET", "users:a"],
        &["MGET", "users:a", "users:b", "users:c", "users:none"],
        &["EXISTS", "users:a", "users:b", "users:none"],
        &["STRLEN", "users:b"],
        &["PING"],
        &["ECHO", "hi"],
        &["SELECT", "0"],
        &["CLIENT", "SETNAME", "reader"],
        &["CLIENT", "GETNAME"],
    ]);
    for (cmd, name) in [
        (&["SET", "users:a", "x"][..], "set"),
        (&["GETDEL", "users:a"], "getdel"),
        (&["DEL", "users:a", "users:b"], "del"),
        (&["MSET", "users:a", "x", "users:b", "y"], "mset"),
        (&["INCR", "users:c"], "incr"),
        (&["BLPOP", "users:list", "1"], "blpop"),
        (&["MULTI"], "multi"),
        (&["WATCH", "users:a"], "watch"),
        (&["DISCARD"], "discard"),
        (&["SUBSCRIBE", "users:chan"], "subscribe"),
        (&["PSUBSCRIBE", "users:*"], "psubscribe"),
        (&["SSUBSCRIBE", "users:chan"], "ssubscribe"),
        (&["PUBLISH", "users:chan", "m"], "publish"),
        (&["SPUBLISH", "users:chan", "m"], "spublish"),
        (
            &[
                "EVAL",
                "return redis.call('set', KEYS[1], 'x')",
                "1",
                "users:a",
            ],
            "eval",
        ),
        (
            &[
                "EVAL_RO",
                "return redis.call('get', KEYS[1])",
                "1",
                "users:a",
            ],
            "eval_ro",
        ),
        (&["FCALL_RO", "f", "1", "users:a"], "fcall_ro"),
        (&["INFO"], "info"),
        (&["CONFIG", "GET", "maxmemory"], "config|get"),
        (&["ACL", "LIST"], "acl|list"),
        (&["ACL", "SETUSER", "x", "on"], "acl|setuser"),
        (&["FLUSHALL"], "flushall"),
    ] {
        assert_eq!(show(&c.same(cmd)), noperm(name), "{cmd:?}");
    }
    let exec = c.same(&["EXEC"]);
    assert_eq!(
        show(&exec),
        format!(
            "-EXECABORT Transaction discarded because of: {}",
            &noperm("exec")[1..]
        )
    );
    // Nothing was written.
    c.all_same(&[&["MGET", "users:a", "users:b", "users:c"]]);
    // The one deliberate difference: Redis 7.0 puts ACL WHOAMI in @slow only, so a
    // `+@read +@connection` user may not ask who it is; the proxy answers it (see README).
    assert_eq!(show(&c.proxy.call(&["ACL", "WHOAMI"])), "$2\r\nro\r\n");
    assert_eq!(
        show(&c.redis.call(&["ACL", "WHOAMI"])),
        noperm("acl|whoami")
    );
    // HELLO 2 AUTH switches user and protocol at once.
    let hello = c.same(&["HELLO", "2", "AUTH", "app", "pw"]);
    assert!(hello.starts_with(b"*14\r\n"), "{}", show(&hello));
    c.all_same(&[
        &["ACL", "WHOAMI"],
        &["DEL", "users:a", "users:b", "users:c"],
        &["QUIT"],
    ]);
}

#[test]
fn users_without_a_default_password_disable_the_default_user() {
    let cluster = Cluster::start();
    let (proxy, _conf) = proxy_with(&cluster, &users_toml(), &[], "app", "pw");
    // The Redis equivalent of "defined users, no default password": default off, no nopass.
    let mut setup = REDIS_USERS.to_vec();
    setup.push(&["ACL", "SETUSER", "default", "off", "resetpass"]);
    let redis = Standalone::start(&setup);
    let mut c = Pair::open(proxy.addr(), redis.addr);
    let r = c.same(&["PING"]);
    assert_eq!(show(&r), "-NOAUTH Authentication required.\r\n");
    for cmd in [
        &["AUTH", "foo"][..],
        &["AUTH", "default", "foo"],
        &["AUTH", "default", ""],
        &["HELLO", "3", "AUTH", "default", "x"],
    ] {
        let r = c.same(cmd);
        assert!(r.starts_with(b"-WRONGPASS"), "{cmd:?}: {}", show(&r));
    }
    c.all_same(&[
        &["HELLO", "3"],
        &["GET", "users2:a"],
        &["AUTH", "ro", "pw"],
        &["GET", "users2:a"],
        &["SET", "users2:a", "1"],
        &["AUTH", "app", "pw"],
        &["SET", "users2:a", "1"],
        &["ACL", "WHOAMI"],
        &["RESET"],
        &["GET", "users2:a"],
        &["HELLO", "2", "AUTH", "app", "pw"],
        &["GET", "users2:a"],
        &["DEL", "users2:a"],
    ]);
}

/// A redis-crate connection logged in as `user`.
fn login(proxy: &Proxy, user: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{user}:pw@{}/", proxy.addr()))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("logging in as {user}: {e}"))
}

fn err_text(e: redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

#[test]
fn a_read_only_user_reads_across_slots_and_writes_nothing() {
    let cluster = Cluster::start();
    let (proxy, _conf) = proxy_with(&cluster, &users_toml(), &[], "app", "pw");
    let mut app = login(&proxy, "app");
    let mut ro = login(&proxy, "ro");
    // Keys on at least two masters.
    let keys = ["ro:a", "ro:b", "ro:c", "ro:d", "ro:e", "ro:f"];
    let masters: std::collections::HashSet<SocketAddr> = keys
        .iter()
        .map(|k| cluster.master_of_slot(key_slot(k.as_bytes()).0))
        .collect();
    assert!(masters.len() >= 2, "keys on one master only");
    for k in keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(format!("v-{k}"))
            .query(&mut app)
            .unwrap();
    }
    let v: String = redis::cmd("GET").arg("ro:a").query(&mut ro).unwrap();
    assert_eq!(v, "v-ro:a");
    let vs: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut ro).unwrap();
    assert_eq!(vs, keys.map(|k| format!("v-{k}")));

    let refused = |ro: &mut redis::Connection, cmd: &mut redis::Cmd| -> String {
        err_text(cmd.query::<redis::Value>(ro).expect_err("refused"))
    };
    let set = refused(&mut ro, redis::cmd("SET").arg("ro:a").arg("x"));
    assert!(set.starts_with("NOPERM") && set.contains("'set'"), "{set}");
    // A write inside MULTI: MULTI itself is refused (no @transaction), then the write, then
    // EXEC.
    assert!(refused(&mut ro, &mut redis::cmd("MULTI")).starts_with("NOPERM"));
    assert!(refused(&mut ro, redis::cmd("SET").arg("ro:b").arg("x")).starts_with("NOPERM"));
    assert!(refused(&mut ro, &mut redis::cmd("EXEC")).starts_with("EXECABORT"));
    let eval = refused(
        &mut ro,
        redis::cmd("EVAL")
            .arg("return redis.call('set', KEYS[1], 'x')")
            .arg(1)
            .arg("ro:c"),
    );
    assert!(
        eval.starts_with("NOPERM") && eval.contains("'eval'"),
        "{eval}"
    );
    let eval_ro = refused(
        &mut ro,
        redis::cmd("EVAL_RO").arg("return 1").arg(1).arg("ro:c"),
    );
    assert!(eval_ro.starts_with("NOPERM"), "{eval_ro}");
    assert!(refused(&mut ro, redis::cmd("BLPOP").arg("ro:list").arg(0)).starts_with("NOPERM"));
    assert!(refused(&mut ro, redis::cmd("SUBSCRIBE").arg("ro:chan")).starts_with("NOPERM"));

    // A refused PUBLISH reaches no subscriber: the first message a subscriber gets is the
    // one `app` publishes after it.
    let mut sub = Conn::open(proxy.addr());
    assert_eq!(show(&sub.call(&["AUTH", "app", "pw"])), "+OK\r\n");
    let subscribed = sub.call(&["SUBSCRIBE", "ro:chan"]);
    assert!(
        show(&subscribed).contains("subscribe"),
        "{}",
        show(&subscribed)
    );
    let publish = refused(&mut ro, redis::cmd("PUBLISH").arg("ro:chan").arg("from-ro"));
    assert!(publish.starts_with("NOPERM"), "{publish}");
    // (The count is the receiving node's subscribers only: the cluster bus carries the
    // message to the subscriber's node.)
    let _: i64 = redis::cmd("PUBLISH")
        .arg("ro:chan")
        .arg("from-app")
        .query(&mut app)
        .unwrap();
    let message = loop {
        if let Some(m) = sub.framer.next_reply(&mut sub.buf).expect("RESP") {
            break m;
        }
        let mut chunk = [0u8; 1024];
        let got = sub.s.read(&mut chunk).expect("a message");
        assert!(got > 0);
        sub.buf.extend_from_slice(&chunk[..got]);
    };
    assert!(show(&message).contains("from-app"), "{}", show(&message));

    // Nothing the read-only user tried was written.
    let vs: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut app).unwrap();
    assert_eq!(vs, keys.map(|k| format!("v-{k}")));
    let _: i64 = redis::cmd("DEL").arg(&keys).query(&mut app).unwrap();
}

/// `GET /metrics` over HTTP/1.0; the value of the unlabelled metric `name`.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).expect("metrics listener");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn failed_logins_are_counted_and_logged_at_a_bounded_rate() {
    let cluster = Cluster::start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = metrics.to_string();
    let toml = format!("password = \"s3cret\"\n{}", users_toml());
    let (proxy, _conf) = proxy_with(&cluster, &toml, &["--metrics-listen", &listen], "app", "pw");
    assert_eq!(metric(metrics, "slotproxy_auth_failures_total"), Some(0.0));
    let started = Instant::now();
    let mut c = Conn::open(proxy.addr());
    const FAILURES: usize = 20;
    for i in 0..FAILURES {
        let r = match i % 4 {
            0 => c.call(&["AUTH", "not-the-password"]),
            1 => c.call(&["AUTH", "nobody", "not-the-password"]),
            2 => c.call(&["AUTH", "ro", "not-the-password"]),
            _ => c.call(&["HELLO", "3", "AUTH", "app", "not-the-password"]),
        };
        assert!(r.starts_with(b"-WRONGPASS"), "{}", show(&r));
    }
    let elapsed = started.elapsed();
    // Successful logins and other errors are not failures.
    assert_eq!(show(&c.call(&["AUTH", "ro", "pw"])), "+OK\r\n");
    assert!(c
        .call(&["AUTH", "a", "b", "c"])
        .starts_with(b"-ERR syntax error"));
    assert_eq!(
        metric(metrics, "slotproxy_auth_failures_total"),
        Some(FAILURES as f64)
    );
    let log = support::strip_ansi(&proxy.log());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("client authentication failed"))
        .collect();
    assert!(!lines.is_empty(), "no WARN line: {log}");
    // At most one line a second: the failures took `elapsed`.
    assert!(
        lines.len() as u64 <= elapsed.as_secs() + 2,
        "{} lines in {elapsed:?}",
        lines.len()
    );
    let local = c.s.local_addr().expect("local addr").to_string();
    for l in &lines {
        assert!(l.contains("WARN"), "{l}");
        assert!(l.contains(&format!("client={local}")), "{l}");
        assert!(
            ["default", "nobody", "ro", "app"]
                .iter()
                .any(|u| l.contains(&format!("user=\"{u}\""))),
            "{l}"
        );
        assert!(l.contains("suppressed="), "{l}");
    }
    assert!(
        !log.contains("not-the-password"),
        "a password in the log: {log}"
    );
}
