//! The security settings of [`Config`](super::Config): client users, the proxy's credentials
//! towards the nodes, and TLS on either side. Only their shape and validation live here; the
//! client-side checks are in `auth`, the node side in `backend::connector`, and TLS contexts
//! are built from these paths by `tls`.
use serde::Deserialize;
use std::path::PathBuf;

/// A secret string (password): its `Debug` never shows it, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// What a client user may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Every command the proxy serves.
    #[default]
    All,
    /// What Redis grants a user defined `+@read +@connection`: reads and connection commands
    /// (the rule is `auth::requirement`).
    ReadOnly,
}

/// One `[[users]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The password in clear (prefer `password_sha256` in files).
    pub password: Option<Secret>,
    /// Hex SHA-256 of the password, as `ACL SETUSER ... #<hash>` takes it.
    pub password_sha256: Option<String>,
    #[serde(default)]
    pub access: Access,
}

/// The credentials the proxy presents to every node (`AUTH [user] password`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAuth {
    /// ACL user; `None` means the default user (`AUTH password`).
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl NodeAuth {
    /// The RESP2 `AUTH` command these credentials make (`AUTH [user] password`), if any.
    pub fn auth_args(&self) -> Option<Vec<&str>> {
        let password = self.password.as_ref()?.expose();
        Some(match &self.user {
            Some(user) => vec!["AUTH", user, password],
            None => vec!["AUTH", password],
        })
    }
}

/// TLS towards clients: a second listener that speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub listen: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// TLS towards the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTls {
    /// CAs that sign the nodes' certificates (required unless `insecure_skip_verify`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for nodes that require one (`tls-auth-clients yes`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name to verify the nodes' certificates against, for clusters that announce IP
    /// addresses; by default the node's IP address itself.
    pub server_name: Option<String>,
    /// Accept any certificate (labs only; logged as a warning at start-up).
    pub insecure_skip_verify: bool,
}

/// Checks the security settings; the message names the setting at fault.
pub fn validate(
    users: &[UserConfig],
    default_password: Option<&Secret>,
    node: &NodeAuth,
    node_tls: Option<&NodeTls>,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for u in users {
        if u.name.is_empty() || u.name.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
            return Err(format!(
                "users: name {:?} must be non-empty, without spaces or control characters",
                u.name
            ));
        }
        if !seen.insert(u.name.as_str()) {
            return Err(format!("users: {:?} is defined twice", u.name));
        }
        if u.name == "default" && default_password.is_some() {
            return Err(
                "users: a user named \"default\" and `password` both set the default user's password; keep one"
                    .into(),
            );
        }
        match (&u.password, &u.password_sha256) {
            (Some(_), None) => {}
            (None, Some(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            (None, Some(_)) => {
                return Err(format!(
                    "users: {:?}: password_sha256 must be 64 hex digits",
                    u.name
                ))
            }
            _ => {
                return Err(format!(
                    "users: {:?} needs exactly one of password or password_sha256",
                    u.name
                ))
            }
        }
    }
    if node.user.is_some() && node.password.is_none() {
        return Err("node_user needs node_password (or node_password_file)".into());
    }
    if let Some(t) = node_tls {
        if t.ca_file.is_none() && !t.insecure_skip_verify {
            return Err(
                "node_tls needs node_tls_ca_file (or node_tls_insecure_skip_verify for labs)"
                    .into(),
            );
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err("node_tls_cert_file and node_tls_key_file go together".into());
        }
    }
    Ok(())
}

/// Reads a secret from a file (`node_password_file`): the first line, without its line end.
pub fn read_secret_file(path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!("{} holds no password", path.display()));
    }
    Ok(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, pw: Option<&str>, sha: Option<&str>) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: pw.map(Secret::new),
            password_sha256: sha.map(String::from),
            access: Access::All,
        }
    }

    #[test]
    fn users_need_one_password_form_and_unique_names() {
        let ok = [user("app", Some("x"), None)];
        assert!(validate(&ok, None, &NodeAuth::default(), None).is_ok());
        let both = [user("app", Some("x"), Some(&"a".repeat(64)))];
        assert!(validate(&both, None, &NodeAuth::default(), None).is_err());
        let twice = [user("a", Some("x"), None), user("a", Some("y"), None)];
        assert!(validate(&twice, None, &NodeAuth::default(), None).is_err());
        let bad_hash = [user("a", None, Some("zz"))];
        assert!(validate(&bad_hash, None, &NodeAuth::default(), None).is_err());
        let default_twice = [user("default", Some("x"), None)];
        let pw = Secret::new("y");
        assert!(validate(&default_twice, Some(&pw), &NodeAuth::default(), None).is_err());
    }

    #[test]
    fn node_tls_needs_a_ca_unless_told_to_skip() {
        let tls = NodeTls::default();
        let e = validate(&[], None, &NodeAuth::default(), Some(&tls)).unwrap_err();
        assert!(e.contains("node_tls_ca_file"), "{e}");
        let skip = NodeTls {
            insecure_skip_verify: true,
            ..Default::default()
        };
        assert!(validate(&[], None, &NodeAuth::default(), Some(&skip)).is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
