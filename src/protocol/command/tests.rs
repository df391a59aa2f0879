//! Tests of the command table, mostly on the shipped fallback (Redis 7.0.15's own COMMAND).
use super::*;

fn table() -> CommandTable {
    CommandTable::fallback()
}

fn req(args: &[&str]) -> Request {
    Request::from_args(args)
}

/// Key indices of `args` on the fallback table.
fn keys(args: &[&str]) -> Vec<usize> {
    let t = table();
    let r = req(args);
    let info = t
        .lookup(&r)
        .unwrap_or_else(|| panic!("{args:?} is unknown"));
    let mut out = Vec::new();
    t.keys(info, &r, &mut out);
    out
}

fn handling(args: &[&str]) -> Handling {
    let t = table();
    t.lookup(&req(args))
        .unwrap_or_else(|| panic!("{args:?} is unknown"))
        .handling
}

#[test]
fn fallback_parses_every_command_and_subcommand() {
    let t = table();
    assert_eq!(t.top_level().count(), 240);
    assert_eq!(t.len(), 366);
    assert_eq!(t.ids().count(), t.len());
    for id in t.ids() {
        assert_eq!(t.get(id).id, id);
        assert_eq!(t.name(id), t.get(id).name);
    }
    let get = t.lookup(&req(&["get", "k"])).unwrap();
    assert_eq!(
        (get.arity, get.first_key, get.last_key, get.step),
        (2, 1, 1, 1)
    );
    assert!(get.acl_categories.iter().any(|c| c == "@string"));
    assert_eq!(get.key_specs.len(), 1);
    let keys_cmd = t.lookup(&req(&["keys", "*"])).unwrap();
    assert!(keys_cmd
        .tips
        .iter()
        .any(|c| c == "request_policy:all_shards"));
}

#[test]
fn unknown_id_resolves_to_a_synthetic_forward_entry() {
    let t = table();
    assert_eq!(t.name(CommandId::UNKNOWN), "unknown");
    assert_eq!(t.get(CommandId::UNKNOWN).handling, Handling::Forward);
    assert!(t.ids().all(|id| id != CommandId::UNKNOWN));
}

#[test]
fn lookup_is_case_insensitive() {
    let t = table();
    for name in ["get", "GET", "gEt"] {
        assert_eq!(t.lookup(&req(&[name, "k"])).unwrap().name, "get");
    }
    assert!(t.lookup(&req(&["nosuchcommand"])).is_none());
    assert!(t.lookup(&req(&["g"])).is_none());
    assert!(t.lookup(&req(&["x".repeat(1000).as_str()])).is_none());
    assert!(t.lookup(&req(&[""])).is_none());
    // The table's internal subcommand names are not commands a client can send.
    assert!(t.lookup(&req(&["client|setname", "x"])).is_none());
}

#[test]
fn lookup_resolves_subcommands() {
    let t = table();
    let name = |args: &[&str]| t.lookup(&req(args)).unwrap().name.clone();
    assert_eq!(name(&["CLIENT", "SETNAME", "x"]), "client|setname");
    assert_eq!(name(&["config", "get", "maxmemory"]), "config|get");
    assert_eq!(name(&["Object", "Encoding", "k"]), "object|encoding");
    assert_eq!(name(&["XINFO", "stream", "s"]), "xinfo|stream");
    assert_eq!(
        name(&["cluster", "count-failure-reports", "id"]),
        "cluster|count-failure-reports"
    );
    // Unknown or missing subcommand: the container, so the node (or the proxy) answers.
    assert_eq!(name(&["client", "nosuchsub"]), "client");
    assert_eq!(name(&["client", "x".repeat(200).as_str()]), "client");
    assert_eq!(name(&["config"]), "config");
    // A command without subcommands ignores argv[1].
    assert_eq!(name(&["get", "setname"]), "get");
    let sub = t.lookup(&req(&["client", "setname", "x"])).unwrap();
    let parent = t.get(sub.parent.unwrap());
    assert_eq!(parent.name, "client");
    assert!(parent.subcommands.contains(&sub.id));
}

#[test]
fn flags_come_from_the_server() {
    let t = table();
    let info = |args: &[&str]| t.lookup(&req(args)).unwrap().clone();
    assert!(info(&["get", "k"]).readonly);
    assert!(!info(&["get", "k"]).write);
    assert!(info(&["getdel", "k"]).write);
    assert!(!info(&["getdel", "k"]).readonly);
    assert!(info(&["object", "encoding", "k"]).readonly);
    assert!(info(&["set", "k", "v"]).write);
}

#[test]
fn keys_of_single_and_multi_key_commands() {
    assert_eq!(keys(&["GET", "k"]), [1]);
    assert_eq!(keys(&["SET", "k", "v", "EX", "10"]), [1]);
    assert_eq!(keys(&["MSET", "a", "1", "b", "2", "c", "3"]), [1, 3, 5]);
    assert_eq!(keys(&["MGET", "a", "b", "c"]), [1, 2, 3]);
    assert_eq!(keys(&["DEL", "a", "b"]), [1, 2]);
    assert_eq!(keys(&["BLPOP", "a", "b", "0"]), [1, 2]);
    assert_eq!(keys(&["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"]), [1, 2]);
    assert_eq!(keys(&["COPY", "a", "b", "REPLACE"]), [1, 2]);
    assert!(keys(&["PING"]).is_empty());
    assert!(keys(&["CONFIG", "GET", "maxmemory"]).is_empty());
}

#[test]
fn keys_of_numkeys_commands() {
    assert_eq!(keys(&["EVAL", "return 1", "2", "a", "b", "x"]), [3, 4]);
    assert!(keys(&["EVAL", "return 1", "0", "x"]).is_empty());
    assert_eq!(keys(&["EVALSHA", "abc", "1", "a", "x"]), [3]);
    assert_eq!(keys(&["EVAL_RO", "return 1", "1", "a"]), [3]);
    assert_eq!(keys(&["FCALL", "f", "2", "a", "b", "x"]), [3, 4]);
    assert_eq!(
        keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
        [1, 3, 4]
    );
    assert_eq!(keys(&["ZINTERSTORE", "d", "2", "a", "b"]), [1, 3, 4]);
    assert_eq!(keys(&["ZDIFFSTORE", "d", "2", "a", "b"]), [1, 3, 4]);
    // The same key twice is two positions: dedupe is by index, not by name.
    assert_eq!(keys(&["ZUNIONSTORE", "d", "2", "d", "a"]), [1, 3, 4]);
    assert_eq!(
        keys(&["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"]),
        [2, 3]
    );
    assert_eq!(keys(&["ZMPOP", "1", "a", "MIN"]), [2]);
    assert_eq!(keys(&["BLMPOP", "0", "2", "a", "b", "LEFT"]), [3, 4]);
    assert_eq!(keys(&["BZMPOP", "0", "1", "a", "MAX"]), [3]);
}

#[test]
fn keys_of_keyword_commands() {
    assert_eq!(keys(&["XREAD", "STREAMS", "a", "b", "0", "0"]), [2, 3]);
    assert_eq!(
        keys(&["xread", "count", "1", "block", "0", "streams", "a", "0"]),
        [6]
    );
    // A stream named "streams": the first STREAMS is the keyword.
    assert_eq!(keys(&["XREAD", "STREAMS", "streams", "0"]), [2]);
    assert_eq!(
        keys(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "a",
            "b",
            ">",
            ">"
        ]),
        [7, 8]
    );
    assert_eq!(
        keys(&["XREADGROUP", "GROUP", "g", "streams", "STREAMS", "a", ">"]),
        [5]
    );
    assert_eq!(
        keys(&["GEORADIUS", "src", "0", "0", "10", "km", "STORE", "dst"]),
        [1, 7]
    );
    assert_eq!(
        keys(&[
            "GEORADIUS",
            "src",
            "0",
            "0",
            "10",
            "km",
            "STORE",
            "d1",
            "STOREDIST",
            "d2"
        ]),
        [1, 7, 9]
    );
    assert_eq!(
        keys(&["GEORADIUS", "src", "0", "0", "10", "km", "ASC"]),
        [1]
    );
    assert_eq!(
        keys(&[
            "GEORADIUSBYMEMBER",
            "src",
            "m",
            "10",
            "km",
            "STOREDIST",
            "dst"
        ]),
        [1, 6]
    );
}

#[test]
fn keys_of_sort() {
    assert_eq!(keys(&["SORT", "k"]), [1]);
    assert_eq!(
        keys(&["SORT", "k", "LIMIT", "0", "10", "STORE", "d"]),
        [1, 6]
    );
    // A BY pattern spelled "store" is not the STORE keyword; the last STORE wins.
    assert_eq!(keys(&["SORT", "k", "BY", "store", "GET", "#"]), [1]);
    assert_eq!(keys(&["sort", "k", "store", "d1", "STORE", "d2"]), [1, 5]);
    assert_eq!(keys(&["SORT", "k", "STORE"]), [1]);
    assert_eq!(keys(&["SORT_RO", "k", "BY", "w_*", "GET", "#"]), [1]);
}

#[test]
fn keys_of_migrate() {
    assert_eq!(keys(&["MIGRATE", "h", "6379", "k", "0", "5000"]), [3]);
    assert_eq!(
        keys(&["MIGRATE", "h", "6379", "", "0", "5000", "COPY", "KEYS", "a", "b"]),
        [8, 9]
    );
    // A password spelled "keys" is the AUTH argument, not the keyword; a key named "keys" is a key.
    assert_eq!(
        keys(&["MIGRATE", "h", "1", "", "0", "5", "AUTH", "keys", "KEYS", "a", "keys", "b"]),
        [9, 10, 11]
    );
    assert_eq!(
        keys(&["MIGRATE", "h", "1", "", "0", "5", "AUTH2", "u", "keys", "REPLACE", "KEYS", "a"]),
        [11]
    );
    assert!(keys(&["MIGRATE", "h", "1", "", "0", "5"]).is_empty());
}

#[test]
fn keys_of_subcommands() {
    assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), [2]);
    assert_eq!(keys(&["MEMORY", "USAGE", "k", "SAMPLES", "5"]), [2]);
    assert_eq!(keys(&["XINFO", "STREAM", "s", "FULL"]), [2]);
    assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]), [2]);
    assert!(keys(&["CLIENT", "SETNAME", "x"]).is_empty());
}

#[test]
fn shard_channels_route_like_keys() {
    assert_eq!(keys(&["SPUBLISH", "ch", "msg"]), [1]);
    assert_eq!(keys(&["SSUBSCRIBE", "a", "b"]), [1, 2]);
}

#[test]
fn keys_are_appended_after_existing_content() {
    let t = table();
    let r = req(&["ZUNIONSTORE", "d", "2", "a", "b"]);
    let mut out = vec![99];
    t.keys(t.lookup(&r).unwrap(), &r, &mut out);
    assert_eq!(out, [99, 1, 3, 4]);
}

#[test]
fn malformed_requests_yield_existing_keys_only() {
    assert_eq!(keys(&["EVAL", "s", "5", "a"]), [3]);
    assert!(keys(&["EVAL", "s", "-1", "a"]).is_empty());
    assert!(keys(&["EVAL", "s", "x", "a"]).is_empty());
    assert!(keys(&["EVAL", "s"]).is_empty());
    assert_eq!(
        keys(&["EVAL", "s", "9223372036854775807", "a", "b"]),
        [3, 4]
    );
    assert_eq!(keys(&["ZUNIONSTORE", "d", "99"]), [1]);
    assert_eq!(keys(&["XREAD", "STREAMS", "a", "b", "0"]), [2]);
    assert!(keys(&["XREAD", "STREAMS"]).is_empty());
    assert!(keys(&["XREAD", "COUNT", "1"]).is_empty());
    assert!(keys(&["GET"]).is_empty());
    assert_eq!(keys(&["MSET", "a"]), [1]);
    assert!(keys(&["SORT"]).is_empty());
    assert!(keys(&["MIGRATE", "h"]).is_empty());
    assert!(keys(&["LMPOP"]).is_empty());
}

/// Every command and subcommand of the table, with argument lists of assorted shapes and
/// numbers (huge, negative, not numbers, keywords in odd places): no panic, every index is a
/// real argument, strictly ascending.
#[test]
fn no_request_shape_panics_or_escapes_argc() {
    let t = table();
    let fillers = [
        "0",
        "1",
        "2",
        "-1",
        "-5",
        "99999999999999999999",
        "9223372036854775807",
        "x",
        "",
        "STREAMS",
        "KEYS",
        "STORE",
        "STOREDIST",
        "BLOCK",
        "GROUP",
        "LIMIT",
        "BY",
        "AUTH",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = Vec::new();
    for info in t.iter() {
        let mut words: Vec<&str> = info.name.split('|').collect();
        let base = words.len();
        for _ in 0..60 {
            words.truncate(base);
            let extra = (next() % 12) as usize;
            for _ in 0..extra {
                words.push(fillers[(next() % fillers.len() as u64) as usize]);
            }
            let r = req(&words);
            let found = t.lookup(&r).expect("every table name resolves");
            out.clear();
            t.keys(found, &r, &mut out);
            assert!(
                out.iter().all(|&i| i >= 1 && i < r.argc()),
                "{words:?} -> {out:?}"
            );
            assert!(out.windows(2).all(|w| w[0] < w[1]), "{words:?} -> {out:?}");
            t.may_block(found, &r);
        }
    }
}

#[test]
fn handling_classification() {
    use Handling::*;
    let cases: &[(&[&str], Handling)] = &[
        (&["get", "k"], Forward),
        (&["migrate", "h", "1", "k", "0", "5"], Forward),
        (&["eval", "s", "0"], Forward),
        (&["config", "get", "x"], Forward),
        (&["mget", "a"], Split(SplitKind::Mget)),
        (&["mset", "a", "1"], Split(SplitKind::Mset)),
        (&["msetnx", "a", "1"], Forward),
        (&["del", "a"], Split(SplitKind::SumInts)),
        (&["unlink", "a"], Split(SplitKind::SumInts)),
        (&["exists", "a"], Split(SplitKind::SumInts)),
        (&["touch", "a"], Split(SplitKind::SumInts)),
        (&["ping"], Local(LocalCommand::Ping)),
        (&["echo", "x"], Local(LocalCommand::Echo)),
        (&["quit"], Local(LocalCommand::Quit)),
        (&["select", "0"], Local(LocalCommand::Select)),
        (&["hello", "3"], Local(LocalCommand::Hello)),
        (&["auth", "x"], Local(LocalCommand::Auth)),
        (
            &["client", "setname", "x"],
            Local(LocalCommand::Client(ClientCommand::SetName)),
        ),
        (
            &["client", "list"],
            Local(LocalCommand::Client(ClientCommand::List)),
        ),
        (
            &["client", "nosuchsub"],
            Local(LocalCommand::Client(ClientCommand::Other)),
        ),
        (
            &["client"],
            Local(LocalCommand::Client(ClientCommand::Other)),
        ),
        (&["command"], Local(LocalCommand::Command)),
        (&["command", "count"], Local(LocalCommand::Command)),
        (&["command", "docs", "get"], Local(LocalCommand::Command)),
        (&["info"], Info),
        (&["reset"], Local(LocalCommand::Reset)),
        (&["readonly"], Local(LocalCommand::ReadMode)),
        (&["readwrite"], Local(LocalCommand::ReadMode)),
        (&["acl", "whoami"], Local(LocalCommand::Whoami)),
        (&["acl", "list"], Forward),
        (&["dbsize"], AllMasters(AllMastersReply::Sum)),
        (&["keys", "*"], AllMasters(AllMastersReply::Concat)),
        (&["scan", "0"], Scan),
        (&["flushall"], AllMasters(AllMastersReply::AllOk)),
        (&["flushdb"], AllMasters(AllMastersReply::AllOk)),
        (&["randomkey"], AllMasters(AllMastersReply::FirstNonNull)),
        (
            &["script", "load", "return 1"],
            AllMasters(AllMastersReply::Same),
        ),
        (&["script", "flush"], AllMasters(AllMastersReply::AllOk)),
        (
            &["script", "exists", "abc"],
            AllMasters(AllMastersReply::AndInts),
        ),
        (
            &["function", "load", "code"],
            AllMasters(AllMastersReply::Same),
        ),
        (&["multi"], Transaction(TxCommand::Multi)),
        (&["exec"], Transaction(TxCommand::Exec)),
        (&["discard"], Transaction(TxCommand::Discard)),
        (&["watch", "k"], Transaction(TxCommand::Watch)),
        (&["unwatch"], Transaction(TxCommand::Unwatch)),
        (&["blpop", "a", "0"], Blocking),
        (&["brpop", "a", "0"], Blocking),
        (&["blmove", "a", "b", "left", "left", "0"], Blocking),
        (&["brpoplpush", "a", "b", "0"], Blocking),
        (&["bzpopmin", "a", "0"], Blocking),
        (&["bzpopmax", "a", "0"], Blocking),
        (&["blmpop", "0", "1", "a", "left"], Blocking),
        (&["bzmpop", "0", "1", "a", "min"], Blocking),
        (&["xread", "streams", "a", "0"], Blocking),
        (
            &["xreadgroup", "group", "g", "c", "streams", "a", ">"],
            Blocking,
        ),
        (&["wait", "1", "0"], Wait),
        (&["subscribe", "c"], PubSub(SubscribeAt::ChannelSlot)),
        (&["psubscribe", "c*"], PubSub(SubscribeAt::AnyMaster)),
        (&["ssubscribe", "c"], PubSub(SubscribeAt::ShardSlot)),
        (&["unsubscribe"], PubSub(SubscribeAt::AnyMaster)),
        (&["punsubscribe"], PubSub(SubscribeAt::AnyMaster)),
        (&["sunsubscribe"], PubSub(SubscribeAt::AnyMaster)),
        (&["monitor"], Monitor),
        (&["publish", "c", "m"], ByChannel),
        (&["pubsub", "channels"], AllMasters(AllMastersReply::Union)),
        (
            &["pubsub", "shardchannels", "a*"],
            AllMasters(AllMastersReply::Union),
        ),
        (
            &["pubsub", "numsub", "a", "b"],
            AllMasters(AllMastersReply::SumPerChannel),
        ),
        (
            &["pubsub", "shardnumsub", "a"],
            AllMasters(AllMastersReply::SumPerChannel),
        ),
        (&["pubsub", "numpat"], AllMasters(AllMastersReply::Sum)),
        (&["pubsub", "help"], Forward),
        (&["cluster", "nodes"], Unsupported),
        (&["cluster", "info"], Unsupported),
        (&["cluster"], Unsupported),
        (&["asking"], Unsupported),
        (&["swapdb", "0", "1"], Unsupported),
        (&["move", "k", "1"], Unsupported),
        (&["shutdown"], Unsupported),
        (&["failover"], Unsupported),
        (&["replicaof", "no", "one"], Unsupported),
        (&["slaveof", "no", "one"], Unsupported),
        (&["sync"], Unsupported),
        (&["psync", "x", "0"], Unsupported),
        (&["debug", "sleep", "0"], Unsupported),
        (&["save"], AllMasters(AllMastersReply::AllSucceed)),
        (&["bgsave"], AllMasters(AllMastersReply::AllSucceed)),
        (&["bgrewriteaof"], AllMasters(AllMastersReply::AllSucceed)),
        (&["lastsave"], AllMasters(AllMastersReply::Min)),
        (&["config", "set", "x", "y"], AllNodes(AllNodesReply::AllOk)),
        (
            &["config", "resetstat"],
            AllNodes(AllNodesReply::ResetStats),
        ),
        (&["acl", "setuser", "u"], AllNodes(AllNodesReply::AllOk)),
        (&["acl", "log"], AllMasters(AllMastersReply::AclLog)),
        (&["slowlog", "get"], AllMasters(AllMastersReply::Slowlog)),
        (&["slowlog", "len"], AllMasters(AllMastersReply::SlowlogLen)),
        (
            &["latency", "latest"],
            AllMasters(AllMastersReply::LatencyLatest),
        ),
        (&["memory", "usage", "k"], Forward),
        (&["object", "encoding", "k"], Forward),
        (&["script", "kill"], Unsupported),
    ];
    for (args, expected) in cases {
        assert_eq!(handling(args), *expected, "{args:?}");
    }
    // Every subcommand of CLIENT and COMMAND is local, of CLUSTER unsupported.
    let t = table();
    for info in t.iter() {
        let Some(parent) = info.parent else { continue };
        match t.name(parent) {
            "client" | "command" => {
                assert!(matches!(info.handling, Local(_)), "{}", info.name)
            }
            "cluster" => assert_eq!(info.handling, Unsupported, "{}", info.name),
            _ => {}
        }
    }
}

#[test]
fn may_block_only_when_the_request_blocks() {
    let t = table();
    let blocks = |args: &[&str]| {
        let r = req(args);
        t.may_block(t.lookup(&r).unwrap(), &r)
    };
    assert!(blocks(&["BLPOP", "a", "0"]));
    assert!(
        !blocks(&["WAIT", "1", "0"]),
        "WAIT is answered by polling the nodes"
    );
    assert!(blocks(&["BZMPOP", "0", "1", "a", "MIN"]));
    assert!(!blocks(&["XREAD", "STREAMS", "a", "0"]));
    assert!(!blocks(&["XREAD", "COUNT", "5", "STREAMS", "a", "0"]));
    assert!(blocks(&[
        "xread", "count", "5", "block", "100", "streams", "a", "0"
    ]));
    assert!(!blocks(&["XREAD", "STREAMS", "block", "0"]));
    assert!(blocks(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "a",
        ">"
    ]));
    assert!(!blocks(&[
        "XREADGROUP",
        "GROUP",
        "block",
        "block",
        "STREAMS",
        "a",
        ">"
    ]));
    assert!(!blocks(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "NOACK",
        "STREAMS",
        "a",
        ">"
    ]));
    assert!(!blocks(&["GET", "k"]));
}

/// A hand-written reply: a Redis 7 entry with a keynum spec and a subcommand, an entry
/// with a keyword spec, and a pre-7 entry with only the legacy triple.
const SMALL_REPLY: &str = concat!(
    "*3\r\n",
    // myeval: keynum spec at index 2.
    "*10\r\n$6\r\nMYEVAL\r\n:-3\r\n*2\r\n+write\r\n+movablekeys\r\n:0\r\n:0\r\n:0\r\n",
    "*1\r\n+@scripting\r\n*0\r\n",
    "*1\r\n*6\r\n$5\r\nflags\r\n*1\r\n+RW\r\n",
    "$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:2\r\n",
    "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$6\r\nkeynum\r\n$4\r\nspec\r\n",
    "*6\r\n$9\r\nkeynumidx\r\n:0\r\n$8\r\nfirstkey\r\n:1\r\n$7\r\nkeystep\r\n:1\r\n",
    // ... with one subcommand, myeval|ro, that has no keys.
    "*1\r\n*10\r\n$9\r\nmyeval|ro\r\n:2\r\n*1\r\n+readonly\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n",
    // myread: keys after the last WITH, searched backward from the end.
    "*10\r\n$6\r\nmyread\r\n:-2\r\n*1\r\n+readonly\r\n:0\r\n:0\r\n:0\r\n*0\r\n",
    "*1\r\n$21\r\nrequest_policy:simple\r\n",
    "*1\r\n*4\r\n",
    "$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$7\r\nkeyword\r\n$4\r\nspec\r\n",
    "*4\r\n$7\r\nkeyword\r\n$4\r\nWITH\r\n$9\r\nstartfrom\r\n:-1\r\n",
    "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n",
    "*6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n",
    "*0\r\n",
    // oldmget: a Redis 6 style entry (7 fields).
    "*7\r\n$7\r\noldmget\r\n:-2\r\n*1\r\n+readonly\r\n:1\r\n:-1\r\n:1\r\n*1\r\n+@read\r\n",
);

#[test]
fn parses_a_small_hand_written_reply() {
    let t = CommandTable::from_command_reply(SMALL_REPLY.as_bytes()).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t.top_level().count(), 3);
    let key_indices = |args: &[&str]| {
        let r = req(args);
        let mut out = Vec::new();
        t.keys(t.lookup(&r).unwrap(), &r, &mut out);
        out
    };
    let myeval = t.lookup(&req(&["MyEval", "s", "2", "a", "b"])).unwrap();
    assert_eq!(myeval.name, "myeval");
    assert_eq!(myeval.arity, -3);
    assert!(myeval.write && !myeval.readonly);
    assert_eq!(myeval.acl_categories, ["@scripting"]);
    assert_eq!(key_indices(&["myeval", "s", "2", "a", "b", "x"]), [3, 4]);
    let ro = t.lookup(&req(&["myeval", "RO"])).unwrap();
    assert_eq!(ro.name, "myeval|ro");
    assert!(ro.readonly);
    assert_eq!(ro.parent, Some(myeval.id));
    let myread = t.lookup(&req(&["myread", "x"])).unwrap();
    assert_eq!(myread.tips, ["request_policy:simple"]);
    assert_eq!(
        key_indices(&["myread", "with", "x", "WITH", "a", "b"]),
        [4, 5]
    );
    assert!(key_indices(&["myread", "a", "b"]).is_empty());
    assert_eq!(key_indices(&["oldmget", "a", "b", "c"]), [1, 2, 3]);
    assert_eq!(
        t.lookup(&req(&["oldmget"])).unwrap().key_finder,
        KeyFinder::Legacy
    );
}

#[test]
fn rejects_bad_replies() {
    for bad in [
        &b"-ERR unknown command\r\n"[..],
        b"*2\r\n*1\r\n",
        b":1\r\n",
        b"*1\r\n*2\r\n$3\r\nget\r\n:2\r\n",
        b"*1\r\n*6\r\n$3\r\nget\r\n+x\r\n*0\r\n:1\r\n:1\r\n:1\r\n",
        b"*0\r\nextra",
    ] {
        assert!(CommandTable::from_command_reply(bad).is_err(), "{bad:?}");
    }
    assert!(CommandTable::from_command_reply(b"*0\r\n")
        .unwrap()
        .is_empty());
}

/// The first step of lookup as it was before the [`TopLevelIndex`]: refuse a `|`, lower-case,
/// look up in `by_name`.
fn top_level_by_hashing(t: &CommandTable, name: &[u8]) -> Option<CommandId> {
    if name.len() > t.longest || name.contains(&b'|') {
        return None;
    }
    t.by_name.get(&name.to_ascii_lowercase()[..]).copied()
}

#[test]
fn top_level_index_agrees_with_the_name_map() {
    let t = table();
    let mut names: Vec<Vec<u8>> = Vec::new();
    for info in t.iter() {
        let name = info.name.as_bytes();
        names.push(name.to_vec());
        names.push(name.to_ascii_uppercase());
        // Mixed case, one byte short, one byte long, the last byte changed.
        let mixed: Vec<u8> = name
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i % 2 == 0 {
                    b.to_ascii_uppercase()
                } else {
                    *b
                }
            })
            .collect();
        names.push(mixed);
        names.push(name[..name.len() - 1].to_vec());
        names.push([name, b"x"].concat());
        let mut last = name.to_vec();
        *last.last_mut().unwrap() ^= 0x20; // '-' <-> '\r', '_' <-> DEL: not letters
        names.push(last);
    }
    for odd in [
        &b""[..],
        b"|",
        b"get|",
        b"client|setname",
        b"\xc7et",
        b"'et",
        b"GET\0",
    ] {
        names.push(odd.to_vec());
    }
    names.push(vec![b'a'; 100]);
    for name in names {
        assert_eq!(
            t.top_level.get(&name),
            top_level_by_hashing(&t, &name),
            "{:?}",
            String::from_utf8_lossy(&name)
        );
    }
    assert_eq!(t.lookup(&req(&["GeT", "k"])).unwrap().name, "get");
    assert_eq!(
        t.lookup(&req(&["CLIENT", "SetName", "x"])).unwrap().name,
        "client|setname"
    );
}

#[test]
fn range_finder_finds_what_its_spec_finds() {
    let t = table();
    let ranged: Vec<&CommandInfo> = t
        .iter()
        .filter(|i| matches!(i.key_finder, KeyFinder::Range { .. }))
        .collect();
    // The plain commands take this path (and the spec of GET is the plainest there is).
    for name in [
        "get", "set", "mget", "mset", "del", "hset", "incr", "lpush", "getdel",
    ] {
        assert!(ranged.iter().any(|i| i.name == name), "{name}");
    }
    for info in ranged {
        for argc in 0..10 {
            let mut args = vec![info.name.clone()];
            args.extend((1..argc).map(|i| format!("a{i}")));
            let r = Request::from_args(&args);
            let mut by_range = Vec::new();
            t.keys(info, &r, &mut by_range);
            let mut by_spec = Vec::new();
            info.key_specs[0].push_keys(&r, &mut by_spec);
            assert_eq!(by_range, by_spec, "{} argc {argc}", info.name);
        }
    }
}
