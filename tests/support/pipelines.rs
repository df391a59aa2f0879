//! Random pipelines for differential tests: the same commands through the proxy and into a
//! standalone Redis must get the same bytes back. Generators draw from a seeded [`Rng`], so a
//! failure names a seed that replays it; each covers one area (basic commands, data types and
//! their errors, transaction and subscriber edges, odd keys and values, rarer command families,
//! clients on keys of their own).
use slotproxy::protocol::framer::Request;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A generator: one draw of commands (one, or a group that belongs together).
pub type Draw = fn(&mut Rng) -> Vec<Vec<String>>;

/// xorshift64: the same pipeline on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One random command over 40 keys (which land on many slots and every master).
pub fn command(rng: &mut Rng) -> Vec<String> {
    let key = |rng: &mut Rng| format!("k{}", rng.next(40));
    let keys = |rng: &mut Rng, most: usize| -> Vec<String> {
        (0..1 + rng.next(most)).map(|_| key(rng)).collect()
    };
    let digit = |rng: &mut Rng| rng.next(100).to_string();
    let mut c: Vec<String> = Vec::new();
    match rng.next(24) {
        0 => c.extend(["SET".into(), key(rng), digit(rng)]),
        1 => c.extend(["GET".into(), key(rng)]),
        2 => c.extend(["INCR".into(), key(rng)]),
        3 => c.extend(std::iter::once("DEL".into()).chain(keys(rng, 5))),
        4 => c.extend(std::iter::once("EXISTS".into()).chain(keys(rng, 5))),
        5 => {
            c.push("MSET".into());
            for k in keys(rng, 5) {
                c.extend([k, digit(rng)]);
            }
        }
        6 => c.extend(std::iter::once("MGET".into()).chain(keys(rng, 6))),
        7 => c.extend(["LPUSH".into(), key(rng), "a".into(), "b".into()]),
        8 => c.extend(["LRANGE".into(), key(rng), "0".into(), "-1".into()]),
        9 => c.extend(["HSET".into(), key(rng), "f".into(), digit(rng)]),
        10 => c.extend(["HGETALL".into(), key(rng)]),
        11 => c.extend(["TYPE".into(), key(rng)]),
        12 => c.extend(["APPEND".into(), key(rng), "z".into()]),
        13 => c.extend(std::iter::once("UNLINK".into()).chain(keys(rng, 3))),
        14 => c.extend(std::iter::once("TOUCH".into()).chain(keys(rng, 3))),
        15 => c.extend(["GETDEL".into(), key(rng)]),
        16 => c.extend(["SETNX".into(), key(rng), "n".into()]),
        17 => c.extend(["INCRBY".into(), key(rng), "5".into()]),
        18 => c.extend(["EXPIRE".into(), key(rng), "1000".into()]),
        19 => c.extend(["PERSIST".into(), key(rng)]),
        20 => c.extend(["SADD".into(), key(rng), "m1".into(), "m2".into()]),
        21 => c.extend(["ZADD".into(), key(rng), "1".into(), "x".into()]),
        22 => c.extend(["GETSET".into(), key(rng), "g".into()]),
        _ => c.extend(["ECHO".into(), digit(rng)]),
    }
    c
}

/// One random command, or now and then a group that moves between the client's connections: a
/// transaction (some with WATCH, some discarded) on a tagged key, or a push, a BLPOP and a
/// read of what the BLPOP left.
pub fn commands(rng: &mut Rng) -> Vec<Vec<String>> {
    let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<String>>();
    match rng.next(100) {
        0..=5 => {
            let mut group = Vec::new();
            if rng.next(3) == 0 {
                group.push(v(&["WATCH", "{t}a"]));
            }
            group.push(v(&["MULTI"]));
            for _ in 0..rng.next(5) {
                let digit = rng.next(10).to_string();
                group.push(match rng.next(5) {
                    0 => v(&["SET", "{t}a", &digit]),
                    1 => v(&["INCR", "{t}a"]),
                    2 => v(&["GET", "{t}a"]),
                    3 => v(&["LPUSH", "{t}l", "v"]),
                    _ => v(&["DEL", "{t}a"]),
                });
            }
            group.push(v(&[if rng.next(5) == 0 { "DISCARD" } else { "EXEC" }]));
            group
        }
        // A transaction whose commands are all keyless (it runs on a connection of its own),
        // then one on a key: the second must not overtake the first.
        96 => vec![
            v(&["MULTI"]),
            v(&["PING"]),
            v(&["ECHO", "keyless"]),
            v(&["EXEC"]),
            v(&["MULTI"]),
            v(&["INCR", "{t}a"]),
            v(&["EXEC"]),
            v(&["GET", "{t}a"]),
        ],
        6..=9 => vec![
            v(&["RPUSH", "{t}l", "x"]),
            v(&["BLPOP", "{t}l", "1"]),
            v(&["LLEN", "{t}l"]),
        ],
        // A BLPOP that times out (Redis times those out on its 100 ms clock: keep them rare).
        10 if rng.next(10) == 0 => vec![v(&["BLPOP", "{t}empty", "0.01"])],
        _ => vec![command(rng)],
    }
}

/// The replies after HELLO's, which carries the connection's id (different on each side).
pub fn after_hello(replies: Vec<u8>, hello: bool) -> Vec<u8> {
    const END: &[u8] = b"$7\r\nmodules\r\n*0\r\n";
    if !hello {
        return replies;
    }
    let at = replies
        .windows(END.len())
        .position(|w| w == END)
        .expect("a HELLO reply");
    replies[at + END.len()..].to_vec()
}

/// One random command of a wider mix: every data type's everyday commands on 30 keys shared by
/// all types (so WRONGTYPE errors come up by themselves), the errors a client gets for a wrong
/// arity, an unknown command, a bad option or a bad number, multi-key commands on one hash tag
/// (the proxy does not split those, a cluster refuses them across slots), and scripts. Nothing
/// whose reply depends on the time or on chance (TTL, SPOP, RANDOMKEY, ...).
pub fn typed_command(rng: &mut Rng) -> Vec<Vec<String>> {
    let key = format!("k{}", rng.next(30));
    let tagged = |rng: &mut Rng| format!("{{t}}{}", rng.next(4));
    let n = rng.next(10).to_string();
    let member = format!("m{}", rng.next(5));
    let words = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<String>>();
    let k = key.as_str();
    let (n, m) = (n.as_str(), member.as_str());
    let c = match rng.next(89) {
        // Strings and numbers.
        0 => words(&["SET", k, n]),
        1 => words(&["INCRBYFLOAT", k, "1.5"]),
        2 => words(&["DECRBY", k, n]),
        3 => words(&["STRLEN", k]),
        4 => words(&["GETRANGE", k, "0", "-2"]),
        5 => words(&["SETRANGE", k, n, "zz"]),
        6 => words(&["SET", k, "v", "GET"]),
        7 => words(&["SET", k, n, "NX"]),
        8 => words(&["SET", k, n, "XX", "KEEPTTL"]),
        9 => words(&["GETEX", k, "PERSIST"]),
        10 => words(&["SETEX", k, "1000", n]),
        11 => words(&["gEt", k]),
        // Lists.
        12 => words(&["RPUSH", k, m, n]),
        13 => words(&["LPOP", k, "2"]),
        14 => words(&["LINDEX", k, "-1"]),
        15 => words(&["LSET", k, "0", n]),
        16 => words(&["LREM", k, "0", m]),
        17 => words(&["LTRIM", k, "0", "3"]),
        18 => words(&["LINSERT", k, "BEFORE", m, "ins"]),
        19 => words(&["LPOS", k, m]),
        20 => words(&["LLEN", k]),
        // Hashes.
        21 => words(&["HSET", k, m, n, "g", "1"]),
        22 => words(&["HMGET", k, m, "g", "nope"]),
        23 => words(&["HINCRBY", k, "g", n]),
        24 => words(&["HINCRBYFLOAT", k, "g", "0.25"]),
        25 => words(&["HDEL", k, m]),
        26 => words(&["HKEYS", k]),
        27 => words(&["HSETNX", k, m, "x"]),
        28 => words(&["HSTRLEN", k, m]),
        // Sets.
        29 => words(&["SADD", k, m, n]),
        30 => words(&["SREM", k, m]),
        31 => words(&["SMISMEMBER", k, m, "1", "m9"]),
        // A set of strings is a hash table, whose order differs from process to process.
        32 => words(&["SORT", k, "ALPHA"]),
        33 => words(&["SCARD", k]),
        // Sorted sets.
        34 => words(&["ZADD", k, n, m]),
        35 => words(&["ZINCRBY", k, "2.5", m]),
        36 => words(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
        37 => words(&["ZRANGEBYSCORE", k, "(1", "+inf", "LIMIT", "0", "2"]),
        38 => words(&["ZSCORE", k, m]),
        39 => words(&["ZRANK", k, m]),
        40 => words(&["ZPOPMIN", k]),
        41 => words(&["ZCOUNT", k, "-inf", "5"]),
        // Bitmaps, HyperLogLog, streams with explicit ids.
        42 => words(&["SETBIT", k, n, "1"]),
        43 => words(&["BITCOUNT", k]),
        44 => words(&["BITPOS", k, "1"]),
        45 => words(&["PFADD", k, m, n]),
        46 => words(&["PFCOUNT", k]),
        47 => words(&["XADD", k, &format!("{}-1", rng.next(20) + 1), "f", n]),
        48 => words(&["XRANGE", k, "-", "+", "COUNT", "3"]),
        49 => words(&["XLEN", k]),
        50 => words(&["XTRIM", k, "MAXLEN", "2"]),
        // Keyspace.
        51 => words(&["TYPE", k]),
        52 => words(&["OBJECT", "ENCODING", k]),
        53 => words(&["EXPIRE", k, "1000", "NX"]),
        54 => words(&["PERSIST", k]),
        55 => words(&["EXISTS", k, k, "k0"]),
        56 => words(&["DEL", k]),
        // Errors: arity, unknown commands and subcommands, options, numbers.
        57 => words(&["GET"]),
        58 => words(&["HSET", k, m]),
        59 => words(&["NOSUCHCMD", k, "two"]),
        60 => words(&["OBJECT", "NOSUCH", k]),
        61 => words(&["SET", k, "v", "NX", "XX"]),
        62 => words(&["INCRBY", k, "abc"]),
        63 => words(&["EXPIRE", k, "soon"]),
        64 => words(&["ZADD", k, "NX", "XX", "1", m]),
        65 => words(&["SETRANGE", k, "-1", "x"]),
        66 => words(&["LPOP", k, "-1"]),
        67 => words(&["ZADD", k, "nan", m]),
        // Multi-key commands on one tag.
        68 => words(&["SINTERCARD", "2", &tagged(rng), &tagged(rng)]),
        69 => words(&["SUNIONSTORE", &tagged(rng), &tagged(rng), &tagged(rng)]),
        70 => words(&["RENAME", &tagged(rng), &tagged(rng)]),
        71 => words(&["LMOVE", &tagged(rng), &tagged(rng), "LEFT", "RIGHT"]),
        72 => words(&["MSETNX", &tagged(rng), n, &tagged(rng), m]),
        73 => words(&["COPY", &tagged(rng), &tagged(rng), "REPLACE"]),
        74 => words(&["ZUNIONSTORE", &tagged(rng), "2", &tagged(rng), &tagged(rng)]),
        75 => words(&["SADD", &tagged(rng), m, n]),
        76 => words(&["RPUSH", &tagged(rng), m]),
        // Keyless and whole-keyspace commands the proxy answers or merges itself, and
        // multi-key ones it splits, over keys of every type.
        79 => words(&["DBSIZE"]),
        80 => words(&["PING", m]),
        81 => words(&["SELECT", "0"]),
        82 => words(&["RENAME", k, k]),
        83 => words(&["CLIENT", "GETNAME"]),
        84 => words(&["MGET", k, "k1", "k2", "k3", "k4", "k5", "k6", "k7"]),
        85 => words(&["EXISTS", "k1", "k2", "k3", "k1", "k8", "k9", "k10", k]),
        86 => words(&["TOUCH", "k11", k, "k12", "k13"]),
        87 => words(&["COMMAND", "COUNT"]),
        // Scripts.
        77 => words(&["EVAL", "return redis.call('TYPE', KEYS[1])", "1", k]),
        78 => words(&[
            "EVAL",
            "return {1, 'two', {3.5, ARGV[1]}, redis.status_reply('OK')}",
            "0",
            n,
        ]),
        _ => words(&["EVAL", "return redis.call('INCR', KEYS[1])", "1", k]),
    };
    vec![c]
}

/// A random group at the edges of transactions, scripts and pub/sub: the errors a transaction
/// can end in (a queued command refused, nesting, EXEC or DISCARD alone, WATCH inside MULTI, a
/// WRONGTYPE at EXEC), a blocking command inside one, scripts that fail or are called by sha,
/// and a subscribed client's PINGs and refused commands (RESP2).
pub fn edge_group(rng: &mut Rng) -> Vec<Vec<String>> {
    let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<String>>();
    let k = format!("{{t}}{}", rng.next(3));
    let k = k.as_str();
    match rng.next(16) {
        0 => vec![v(&["MULTI"]), v(&["SET", k]), v(&["INCR", k]), v(&["EXEC"])],
        1 => vec![v(&["MULTI"]), v(&["INCR", k]), v(&["MULTI"]), v(&["EXEC"])],
        2 => vec![v(&["EXEC"]), v(&["DISCARD"])],
        3 => vec![
            v(&["MULTI"]),
            v(&["WATCH", k]),
            v(&["GET", k]),
            v(&["EXEC"]),
        ],
        4 => vec![
            v(&["MULTI"]),
            v(&["SET", k, "s"]),
            v(&["LPUSH", k, "x"]),
            v(&["GET", k]),
            v(&["EXEC"]),
        ],
        5 => vec![v(&["MULTI"]), v(&["BLPOP", "{t}none", "1"]), v(&["EXEC"])],
        6 => vec![
            v(&["MULTI"]),
            v(&["NOSUCHCMD"]),
            v(&["DISCARD"]),
            v(&["GET", k]),
        ],
        7 => vec![
            v(&["WATCH", k]),
            v(&["SET", k, "w"]),
            v(&["MULTI"]),
            v(&["GET", k]),
            v(&["EXEC"]),
        ],
        8 => vec![
            v(&["SCRIPT", "LOAD", "return ARGV[1]"]),
            v(&["EVALSHA", "e4b1a7b6c03c3e4f4e7a9e8da3bb7f0b8d6e1c2a", "0"]),
            v(&["EVAL", "return ARGV[1]", "0", "direct"]),
        ],
        9 => vec![v(&["EVAL", "return redis.call('nosuch')", "0"])],
        10 => vec![
            v(&["EVAL", "return 1", "5", "a"]),
            v(&["EVAL", "return 1", "-1"]),
        ],
        11 => vec![v(&[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            k,
            "e",
        ])],
        12 => vec![v(&["EVAL", "error(", "0"])],
        13 => vec![
            v(&["SUBSCRIBE", "ch"]),
            v(&["PING"]),
            v(&["PING", "x"]),
            v(&["GET", k]),
            v(&["UNSUBSCRIBE"]),
            v(&["GET", k]),
        ],
        14 => vec![
            v(&["PSUBSCRIBE", "p*", "q*"]),
            v(&["PUNSUBSCRIBE", "p*"]),
            v(&["PUNSUBSCRIBE"]),
            v(&["PING"]),
        ],
        _ => vec![v(&["SET", k, rng.next(9).to_string().as_str()])],
    }
}

/// One random command whose keys and values are odd: empty, hash-tag edge cases (`{}`, `{a}b`
/// beside `{a}c`, `{{a}}`, `a{b}c{d}`), CR LF, NUL and non-ASCII bytes, RESP look-alikes, a
/// 1,000-byte key, a 100 KB value now and then, and numbers at and past the edges of i64 and
/// double, in the commands that parse them; multi-key ones split over the slots these land on.
pub fn odd_argument(rng: &mut Rng) -> Vec<Vec<String>> {
    const KEYS: &[&str] = &[
        "",
        "{",
        "}",
        "{}",
        "{}a",
        "{a}b",
        "{a}c",
        "{{a}}",
        "a{b}c{d}",
        "x\r\ny",
        "nul\0key",
        "é€ключ",
        "sp ace",
        "*1\r\n$1\r\nx",
    ];
    const VALUES: &[&str] = &[
        "",
        "\r\n",
        "$5\r\nhello",
        "-ERR x",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "1e400",
        "inf",
        "-inf",
        "nan",
        "-0",
        "0x10",
        " 1",
        "1 ",
        "007",
        "3.0",
        "é",
    ];
    let key = |rng: &mut Rng| match rng.next(30) {
        0 => "k".repeat(1000),
        _ => KEYS[rng.next(KEYS.len())].to_string(),
    };
    let value = |rng: &mut Rng| match rng.next(50) {
        0 => "v".repeat(100_000),
        _ => VALUES[rng.next(VALUES.len())].to_string(),
    };
    let (k, v) = (key(rng), value(rng));
    let c: Vec<String> = match rng.next(22) {
        0 => vec!["SET".into(), k, v],
        1 => vec!["GET".into(), k],
        2 => vec!["APPEND".into(), k, v],
        3 => vec!["INCR".into(), k],
        4 => vec!["INCRBY".into(), k, v],
        5 => vec!["INCRBYFLOAT".into(), k, v],
        6 => vec!["STRLEN".into(), k],
        7 => vec![
            "MSET".into(),
            k,
            v,
            key(rng),
            value(rng),
            key(rng),
            value(rng),
        ],
        8 => vec!["MGET".into(), k, key(rng), key(rng), key(rng)],
        9 => vec!["DEL".into(), k, key(rng)],
        10 => vec!["EXISTS".into(), k, key(rng), key(rng)],
        11 => vec!["HSET".into(), k, v.clone(), v],
        12 => vec!["HGETALL".into(), k],
        13 => vec!["RPUSH".into(), k, v],
        14 => vec!["LRANGE".into(), k, "0".into(), "-1".into()],
        15 => vec!["ECHO".into(), v],
        16 => vec!["SETRANGE".into(), k, "3".into(), v],
        17 => vec!["GETRANGE".into(), k, "0".into(), v],
        18 => vec!["EXPIRE".into(), k, v],
        19 => vec!["ZADD".into(), k, v, "m".into()],
        20 => vec![
            "ZRANGE".into(),
            k,
            "0".into(),
            "-1".into(),
            "WITHSCORES".into(),
        ],
        _ => vec!["TYPE".into(), k],
    };
    vec![c]
}

/// One random command of the less common families: stream consumer groups (explicit ids, so
/// the replies are the same), geo, BITFIELD, functions (FUNCTION LOAD goes to every master, FCALL
/// by its declared keys), COMMAND introspection and a blocking read that is answered at once.
pub fn rare_family(rng: &mut Rng) -> Vec<Vec<String>> {
    const LIBRARY: &str = "#!lua name=difflib\n\
        redis.register_function('dget', function(keys, args) return redis.call('GET', keys[1]) end)\n\
        redis.register_function{function_name='dro', callback=function(keys, args) return #args end, flags={'no-writes'}}";
    let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<String>>();
    let k = format!("s{}", rng.next(8));
    let k = k.as_str();
    let id = format!("{}-{}", rng.next(5) + 1, rng.next(3));
    let n = rng.next(6).to_string();
    let c = match rng.next(30) {
        0 => v(&["XADD", k, &id, "f", &n]),
        1 => v(&["XGROUP", "CREATE", k, "g", "0", "MKSTREAM"]),
        2 => v(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            k,
            ">",
        ]),
        3 => v(&["XACK", k, "g", &id]),
        4 => v(&["XPENDING", k, "g"]),
        5 => v(&["XPENDING", k, "g", "-", "+", "10", "c1"]),
        6 => v(&["XCLAIM", k, "g", "c2", "0", &id, "JUSTID"]),
        7 => v(&["XINFO", "GROUPS", k]),
        8 => v(&["XREAD", "COUNT", "2", "STREAMS", k, "0"]),
        9 => v(&["XREAD", "BLOCK", "10", "STREAMS", k, "0-0"]),
        10 => v(&["XDEL", k, &id]),
        11 => v(&["XGROUP", "DESTROY", k, "g"]),
        12 => v(&[
            "GEOADD",
            k,
            "13.361389",
            "38.115556",
            "palermo",
            "15.087269",
            "37.502669",
            "catania",
        ]),
        13 => v(&["GEODIST", k, "palermo", "catania", "km"]),
        14 => v(&[
            "GEOSEARCH",
            k,
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "200",
            "km",
            "ASC",
            "WITHDIST",
        ]),
        15 => v(&["GEOPOS", k, "palermo", "nowhere"]),
        16 => v(&["BITFIELD", k, "INCRBY", "i5", "100", &n, "GET", "u4", "0"]),
        17 => v(&["BITFIELD_RO", k, "GET", "i8", "0"]),
        18 => v(&["FUNCTION", "LOAD", "REPLACE", LIBRARY]),
        19 => v(&["FCALL", "dget", "1", k]),
        20 => v(&["FCALL_RO", "dro", "0", "a", "b"]),
        21 => v(&["FCALL", "nosuchfn", "0"]),
        22 => v(&["COMMAND", "GETKEYS", "MSET", k, "1", "b", "2"]),
        23 => v(&["COMMAND", "INFO", "get", "nosuch"]),
        24 => v(&["SET", k, &n]),
        25 => v(&["OBJECT", "ENCODING", k]),
        26 => v(&["EXISTS", k]),
        27 => v(&["DEL", k]),
        28 => v(&["FUNCTION", "DELETE", "difflib"]),
        _ => v(&["TYPE", k]),
    };
    vec![c]
}

/// One random command (or a transaction, or a push and a BLPOP) on keys of client `p`'s own
/// (`p:0`..`p:19`, spread over the slots, and `{p}` for the one-node groups), so clients
/// running at once cannot change each other's replies.
pub fn own_keys_command(rng: &mut Rng, p: &str) -> Vec<Vec<String>> {
    let key = |rng: &mut Rng| format!("{p}:{}", rng.next(20));
    let tag = format!("{{{p}}}");
    let n = rng.next(100).to_string();
    let (k1, k2, k3) = (key(rng), key(rng), key(rng));
    let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<String>>();
    match rng.next(16) {
        0 => vec![v(&["SET", &k1, &n])],
        1 => vec![v(&["GET", &k1])],
        2 => vec![v(&["INCR", &k1])],
        3 => vec![v(&["MSET", &k1, &n, &k2, "x", &k3, "y"])],
        4 => vec![v(&["MGET", &k1, &k2, &k3])],
        5 => vec![v(&["DEL", &k1, &k2])],
        6 => vec![v(&["EXISTS", &k1, &k2, &k3])],
        7 => vec![v(&["RPUSH", &k1, &n])],
        8 => vec![v(&["LRANGE", &k1, "0", "-1"])],
        9 => vec![v(&["HSET", &k1, "f", &n])],
        10 => vec![v(&["HGETALL", &k1])],
        11 => vec![v(&["APPEND", &k1, "z"])],
        12 => vec![
            v(&["MULTI"]),
            v(&["INCR", &format!("{tag}a")]),
            v(&["RPUSH", &format!("{tag}l"), &n]),
            v(&["GET", &format!("{tag}a")]),
            v(&["EXEC"]),
        ],
        13 => vec![
            v(&["RPUSH", &format!("{tag}b"), &n]),
            v(&["BLPOP", &format!("{tag}b"), "1"]),
        ],
        14 => vec![v(&[
            "EVAL",
            "return redis.call('INCRBY', KEYS[1], ARGV[1])",
            "1",
            &k1,
            &n,
        ])],
        _ => vec![v(&["ECHO", &n])],
    }
}

/// A pipeline of `n` draws of `draw` seeded by `seed`, after a FLUSHALL (and HELLO 3).
pub fn pipeline_of(seed: u64, resp3: bool, n: usize, draw: Draw) -> Vec<Vec<String>> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut commands = vec![vec!["FLUSHALL".to_string()]];
    if resp3 {
        commands.insert(0, vec!["HELLO".into(), "3".into()]);
    }
    for _ in 0..n {
        commands.extend(draw(&mut rng));
    }
    commands
}

/// `commands` as one RESP byte string, `QUIT` appended (the server closes after answering).
pub fn encode_with_quit(commands: &[Vec<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(Request::from_args(c).bytes());
    }
    out.extend_from_slice(Request::from_args(&["QUIT"]).bytes());
    out
}

/// Sends the whole pipeline in one write, QUIT last, and reads everything up to the close.
pub fn replies(addr: SocketAddr, pipeline: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let pipeline = pipeline.to_vec();
        std::thread::spawn(move || s.write_all(&pipeline).unwrap())
    };
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{addr}: {e} after {} bytes", out.len()));
    writer.join().unwrap();
    out
}

/// Panics, naming `label`, the first byte where `got` differs from `want` and 80 bytes either
/// side of it on both, unless they are the same bytes.
pub fn assert_same_bytes(label: &str, want: &[u8], got: &[u8]) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())]).into_owned()
    };
    panic!(
        "{label}: replies differ at byte {at} of {} (got {})\nredis: {:?}\nproxy: {:?}",
        want.len(),
        got.len(),
        show(want),
        show(got)
    );
}
