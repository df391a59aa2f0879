use super::*;
use crate::config::security::UserConfig;
use crate::protocol::command::CommandTable;
use crate::protocol::framer::Request;

/// SHA-256 of "pw", as `ACL LIST` shows it for `ACL SETUSER u >pw`.
const PW_SHA256: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

fn user_cfg(name: &str, clear: Option<&str>, sha: Option<&str>, access: Access) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: clear.map(Secret::new),
        password_sha256: sha.map(String::from),
        access,
    }
}

fn config(password: Option<&str>, users: Vec<UserConfig>) -> Config {
    Config {
        password: password.map(Secret::new),
        users,
        ..Config::default()
    }
}

/// A proxy whose refresher never runs: only its configuration matters here.
fn proxy(cfg: Config) -> Proxy {
    Proxy::idle(cfg, CommandTable::fallback())
}

fn info<'a>(t: &'a CommandTable, args: &[&str]) -> &'a CommandInfo {
    t.lookup(&Request::from_args(args)).expect("known command")
}

#[test]
fn requirements_follow_read_and_connection_categories() {
    let t = CommandTable::fallback();
    use Requires::*;
    for (args, want) in [
        (&["auth", "x"][..], Nothing),
        (&["hello", "3"], Nothing),
        (&["quit"], Nothing),
        (&["reset"], Nothing),
        (&["get", "k"], Login),
        (&["mget", "a", "b"], Login),
        (&["sort_ro", "k"], Login),
        (&["xread", "streams", "s", "0"], Login),
        (&["ping"], Login),
        (&["select", "0"], Login),
        (&["client", "setname", "x"], Login),
        (&["client", "setinfo", "lib-name", "x"], Login),
        (&["acl", "whoami"], Login),
        (&["command", "count"], Login),
        (&["readonly"], Login),
        (&["config", "nosuchsub"], Login),
        (&["set", "k", "v"], FullAccess),
        (&["getdel", "k"], FullAccess),
        (&["blpop", "k", "0"], FullAccess),
        (&["multi"], FullAccess),
        (&["exec"], FullAccess),
        (&["watch", "k"], FullAccess),
        (&["subscribe", "c"], FullAccess),
        (&["ssubscribe", "c"], FullAccess),
        (&["publish", "c", "m"], FullAccess),
        (&["eval", "return 1", "0"], FullAccess),
        (&["eval_ro", "return 1", "0"], FullAccess),
        (&["fcall_ro", "f", "0"], FullAccess),
        (&["info"], FullAccess),
        (&["config", "get", "x"], FullAccess),
        (&["acl", "list"], FullAccess),
        (&["flushall"], FullAccess),
    ] {
        assert_eq!(info(&t, args).requires, want, "{args:?}");
    }
}

#[test]
fn passwords_are_hashed_and_compared_whole() {
    let mut hex = String::new();
    for b in sha256(b"pw") {
        hex.push_str(&format!("{b:02x}"));
    }
    assert_eq!(hex, PW_SHA256);
    assert_eq!(unhex32(PW_SHA256), Some(sha256(b"pw")));
    assert_eq!(unhex32(&PW_SHA256.to_uppercase()), Some(sha256(b"pw")));
    assert_eq!(unhex32("zz"), None);
    assert_eq!(unhex32(&"g".repeat(64)), None);
    let a = sha256(b"a");
    let mut b = a;
    assert!(same_digest(&a, &b));
    b[31] ^= 1;
    assert!(!same_digest(&a, &b));
    b = a;
    b[0] ^= 0x80;
    assert!(!same_digest(&a, &b));
}

#[test]
fn who_may_log_in() {
    let users = || {
        vec![
            user_cfg("app", Some("pw"), None, Access::All),
            user_cfg("ro", None, Some(PW_SHA256), Access::ReadOnly),
        ]
    };
    // No password, no users: the default user is nopass.
    let open = config(None, vec![]);
    assert_eq!(
        authenticate(&open, b"default", b"anything"),
        Some(Access::All)
    );
    assert_eq!(authenticate(&open, b"app", b"pw"), None);
    // A password for the default user.
    let pw = config(Some("s3cret"), users());
    assert_eq!(authenticate(&pw, b"default", b"s3cret"), Some(Access::All));
    assert_eq!(authenticate(&pw, b"default", b"s3cre"), None);
    assert_eq!(authenticate(&pw, b"app", b"pw"), Some(Access::All));
    assert_eq!(authenticate(&pw, b"app", b"PW"), None);
    assert_eq!(authenticate(&pw, b"ro", b"pw"), Some(Access::ReadOnly));
    assert_eq!(authenticate(&pw, b"ro", b"pw "), None);
    assert_eq!(authenticate(&pw, b"nobody", b"pw"), None);
    assert_eq!(
        authenticate(&pw, b"APP", b"pw"),
        None,
        "names are case-sensitive"
    );
    // Users but no default password: the default user is disabled.
    let users_only = config(None, users());
    assert_eq!(authenticate(&users_only, b"default", b""), None);
    assert_eq!(authenticate(&users_only, b"default", b"pw"), None);
    assert_eq!(
        authenticate(&users_only, b"ro", b"pw"),
        Some(Access::ReadOnly)
    );
    // A `[[users]]` entry named default sets its password and access.
    let mut u = users();
    u.push(user_cfg("default", Some("d"), None, Access::ReadOnly));
    let named_default = config(None, u);
    assert_eq!(
        authenticate(&named_default, b"default", b"d"),
        Some(Access::ReadOnly)
    );
    assert_eq!(authenticate(&named_default, b"default", b"x"), None);
}

#[test]
fn a_client_is_in_on_connect_only_with_a_nopass_default_user() {
    let t = CommandTable::fallback();
    let get = info(&t, &["get", "k"]);
    let open = proxy(config(None, vec![]));
    let mut a = ClientAuth::on_connect(&open);
    assert!(a.is_logged_in());
    assert_eq!(a.user(), "default");
    assert!(a
        .permit(&open.config_arc(), info(&t, &["set", "k", "v"]))
        .is_ok());

    for cfg in [
        config(Some("pw"), vec![]),
        config(None, vec![user_cfg("app", Some("pw"), None, Access::All)]),
    ] {
        let p = proxy(cfg);
        let mut a = ClientAuth::on_connect(&p);
        assert!(!a.is_logged_in());
        assert_eq!(a.permit(&p.config_arc(), get).unwrap_err(), noauth());
        assert!(a.permit(&p.config_arc(), info(&t, &["auth", "x"])).is_ok());
    }
}

#[test]
fn read_only_users_get_noperm_for_writes_and_logins_survive_failures() {
    let t = CommandTable::fallback();
    let p = proxy(config(
        Some("pw"),
        vec![
            user_cfg("app", Some("pw"), None, Access::All),
            user_cfg("ro", Some("pw"), None, Access::ReadOnly),
        ],
    ));
    let mut a = ClientAuth::on_connect(&p);
    assert_eq!(a.login(&p, None, Some(b"ro"), b"pw"), Ok(()));
    assert_eq!(a.user(), "ro");
    assert!(a.permit(&p.config_arc(), info(&t, &["get", "k"])).is_ok());
    let set = info(&t, &["set", "k", "v"]);
    assert_eq!(
        a.permit(&p.config_arc(), set).unwrap_err(),
        Bytes::from_static(b"-NOPERM this user has no permissions to run the 'set' command\r\n")
    );
    assert_eq!(
        a.permit(&p.config_arc(), info(&t, &["exec"])).unwrap_err(),
        Bytes::from_static(b"-EXECABORT Transaction discarded because of: NOPERM this user has no permissions to run the 'exec' command\r\n")
    );
    // A failed login leaves the client as it was, as with Redis.
    assert_eq!(a.login(&p, None, Some(b"app"), b"bad"), Err(wrongpass()));
    assert_eq!(a.user(), "ro");
    assert_eq!(a.login(&p, None, Some(b"app"), b"pw"), Ok(()));
    assert!(a.permit(&p.config_arc(), set).is_ok());
    // RESET: back to the default user, which needs a password here.
    a.reset(&p);
    assert!(!a.is_logged_in());
    assert_eq!(a.permit(&p.config_arc(), set).unwrap_err(), noauth());
}

#[test]
fn a_reload_changes_access_and_logs_removed_users_out() {
    let t = CommandTable::fallback();
    let set = info(&t, &["set", "k", "v"]);
    let p = proxy(config(
        None,
        vec![
            user_cfg("app", Some("pw"), None, Access::All),
            user_cfg("gone", Some("pw"), None, Access::All),
        ],
    ));
    let mut app = ClientAuth::on_connect(&p);
    let mut gone = ClientAuth::on_connect(&p);
    assert_eq!(app.login(&p, None, Some(b"app"), b"pw"), Ok(()));
    assert_eq!(gone.login(&p, None, Some(b"gone"), b"pw"), Ok(()));
    assert!(app.permit(&p.config_arc(), set).is_ok());
    // The reload makes app read-only with a new password and removes "gone".
    p.config_source().store(Arc::new(config(
        None,
        vec![user_cfg("app", Some("new"), None, Access::ReadOnly)],
    )));
    assert_eq!(app.permit(&p.config_arc(), set).unwrap_err(), noperm(set));
    assert!(app.permit(&p.config_arc(), info(&t, &["get", "k"])).is_ok());
    assert_eq!(app.user(), "app", "a new password does not log anyone out");
    assert_eq!(
        gone.permit(&p.config_arc(), info(&t, &["get", "k"]))
            .unwrap_err(),
        noauth()
    );
    assert!(!gone.is_logged_in());
    // New logins see the new passwords.
    assert_eq!(gone.login(&p, None, Some(b"app"), b"pw"), Err(wrongpass()));
    assert_eq!(gone.login(&p, None, Some(b"app"), b"new"), Ok(()));
}

#[test]
fn auth_with_one_argument_tells_a_nopass_default_user() {
    let open = proxy(config(None, vec![]));
    let mut a = ClientAuth::on_connect(&open);
    let r = auth_command(&open, &mut a, None, &[b"foo"]);
    assert!(r.starts_with(b"-ERR AUTH <password> called without any password configured"));
    assert_eq!(
        auth_command(&open, &mut a, None, &[b"default", b"foo"]),
        Bytes::from_static(reply::OK)
    );
    assert_eq!(
        auth_command(&open, &mut a, None, &[b"a", b"b", b"c"]),
        reply::error("ERR syntax error")
    );
    // With the default user disabled, AUTH <password> is a failed login, not that hint.
    let users = proxy(config(
        None,
        vec![user_cfg("app", Some("pw"), None, Access::All)],
    ));
    let mut a = ClientAuth::on_connect(&users);
    assert_eq!(auth_command(&users, &mut a, None, &[b"pw"]), wrongpass());
}

#[test]
fn the_log_limiter_lets_one_line_a_second_through_and_counts_the_rest() {
    let l = LogLimiter::new();
    assert_eq!(l.admit(1), Some(0));
    assert_eq!(l.admit(1), None);
    assert_eq!(l.admit(1), None);
    assert_eq!(l.admit(2), Some(2));
    assert_eq!(l.admit(2), None);
    assert_eq!(l.admit(9), Some(1));
    assert_eq!(l.admit(8), None, "a clock read late never logs twice");
}
