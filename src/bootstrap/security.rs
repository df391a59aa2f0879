//! What spawned nodes require of their clients, and how bootstrap itself gets in: a password
//! (`requirepass` + `masterauth`) or an ACL user (`user ...` + `masteruser`/`masterauth`, the
//! default user turned off), and TLS on every port (`tls-port`, `port 0`, `tls-cluster`,
//! `tls-replication`, client certificates required) with certificates from [`certs`](super::certs).
//!
//! Choices, documented in the README's production checklist:
//! - With an ACL user, the `default` user is turned **off**: the named user is then the only way
//!   in, so a forgotten `requirepass` cannot leave an open door, and a read-only or restricted
//!   user really is what a client gets.
//! - `tls-auth-clients yes`: a node talks only to clients with a certificate from the cluster's
//!   CA. Bootstrap and `up` present the generated client certificate; so must the proxy
//!   (`--node-tls-cert-file`/`--node-tls-key-file`).
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::certs::{self, CertPaths};
use super::node_client::NodeAccess;
use super::BootstrapError;
use crate::config::{NodeAuth, Secret};

/// ACL rules of a spawned node's user: everything, every key and channel.
pub const ALL_RULES: &str = "+@all ~* &*";

/// Credentials a spawned node requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    /// An ACL user; `None` protects the default user with `requirepass`.
    pub user: Option<String>,
    pub password: Secret,
    /// The ACL user's rules (with `user` only), e.g. [`ALL_RULES`] or `+@all -config ~* &*`.
    pub rules: String,
}

/// What a spawned node requires: nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSecurity {
    pub auth: Option<NodeCredentials>,
    pub tls: Option<CertPaths>,
}

impl NodeSecurity {
    /// From the command line: `--node-password-file`, `--node-user`, and `--tls` (certificates
    /// kept under `dir/tls`, generated there the first time, naming `bind`).
    pub fn from_flags(
        dir: &Path,
        bind: IpAddr,
        password_file: Option<&Path>,
        user: Option<&str>,
        tls: bool,
    ) -> Result<NodeSecurity, BootstrapError> {
        let auth = match (password_file, user) {
            (None, Some(_)) => {
                return Err(BootstrapError::Invalid(
                    "--node-user needs --node-password-file (the user's password)".into(),
                ))
            }
            (None, None) => None,
            (Some(file), user) => Some(NodeCredentials {
                user: user.map(str::to_string),
                password: crate::config::security::read_secret_file(file)
                    .map_err(BootstrapError::Invalid)?,
                rules: ALL_RULES.into(),
            }),
        };
        let tls = if tls {
            let tls_dir = tls_dir(dir);
            Some(
                certs::ensure(&tls_dir, &[bind])
                    .map_err(|e| BootstrapError::Invalid(e.to_string()))?,
            )
        } else {
            None
        };
        let security = NodeSecurity { auth, tls };
        security.check()?;
        Ok(security)
    }

    /// Refuses names and passwords a `redis.conf` line could not carry safely.
    pub fn check(&self) -> Result<(), BootstrapError> {
        if let Some(auth) = &self.auth {
            let password = auth.password.expose();
            if password.is_empty() || password.chars().any(char::is_control) {
                return Err(BootstrapError::Invalid(
                    "the node password must be non-empty, without control characters".into(),
                ));
            }
            if let Some(user) = &auth.user {
                if user.is_empty()
                    || user == "default"
                    || user
                        .bytes()
                        .any(|b| !(b'!'..=b'~').contains(&b) || b == b'"')
                {
                    return Err(BootstrapError::Invalid(format!(
                        "--node-user {user:?}: use a name without spaces, quotes or control \
                         characters, other than \"default\" (leave --node-user out to protect \
                         the default user with requirepass)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The lines appended to a node's `redis.conf` (with `port` rendered as 0 under TLS).
    pub fn config_lines(&self, port: u16) -> String {
        let mut out = String::new();
        if let Some(auth) = &self.auth {
            let password = quote(auth.password.expose());
            match &auth.user {
                None => {
                    out.push_str("\n# Password (bootstrap --node-password-file): clients and replicas authenticate.\n");
                    out.push_str(&format!("requirepass {password}\nmasterauth {password}\n"));
                }
                Some(user) => {
                    out.push_str("\n# ACL user (bootstrap --node-user): the only way in; the default user is off.\n");
                    out.push_str("user default off\n");
                    out.push_str(&format!(
                        "user {} on {} {}\n",
                        quote(user),
                        quote(&format!(">{}", auth.password.expose())),
                        auth.rules
                    ));
                    out.push_str(&format!(
                        "masteruser {}\nmasterauth {password}\n",
                        quote(user)
                    ));
                }
            }
        }
        if let Some(tls) = &self.tls {
            out.push_str(
                "\n# TLS (bootstrap --tls): clients, replication and the cluster bus all speak TLS;\n\
                 # clients must present a certificate from the cluster's CA.\n",
            );
            out.push_str(&format!(
                "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients yes\ntls-replication yes\ntls-cluster yes\n",
                quote_path(&tls.node_cert),
                quote_path(&tls.node_key),
                quote_path(&tls.ca_cert)
            ));
        }
        out
    }

    /// The credentials a client presents to these nodes.
    pub fn node_auth(&self) -> NodeAuth {
        match &self.auth {
            None => NodeAuth::default(),
            Some(a) => NodeAuth {
                user: a.user.clone(),
                password: Some(a.password.clone()),
            },
        }
    }

    /// How bootstrap (and the harness) reaches these nodes.
    pub fn access(&self) -> Result<NodeAccess, BootstrapError> {
        let tls = self.tls.as_ref().map(CertPaths::node_tls);
        NodeAccess::new(self.node_auth(), tls.as_ref())
            .map_err(|e| BootstrapError::Invalid(format!("TLS towards the nodes: {e}")))
    }
}

/// Where a spawned cluster under `dir` keeps its certificates.
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

/// A double-quoted redis.conf string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_path(path: &Path) -> String {
    quote(&path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: Option<&str>) -> NodeCredentials {
        NodeCredentials {
            user: user.map(String::from),
            password: Secret::new("p\"w"),
            rules: "+@all -config ~* &*".into(),
        }
    }

    #[test]
    fn a_password_protects_the_default_user_and_replication() {
        let s = NodeSecurity {
            auth: Some(creds(None)),
            tls: None,
        };
        let conf = s.config_lines(5001);
        assert!(conf.contains("requirepass \"p\\\"w\"\n"), "{conf}");
        assert!(conf.contains("masterauth \"p\\\"w\"\n"), "{conf}");
        assert!(!conf.contains("tls"), "{conf}");
    }

    #[test]
    fn an_acl_user_turns_the_default_user_off() {
        let s = NodeSecurity {
            auth: Some(creds(Some("proxy"))),
            tls: None,
        };
        let conf = s.config_lines(5001);
        for line in [
            "user default off",
            "user \"proxy\" on \">p\\\"w\" +@all -config ~* &*",
            "masteruser \"proxy\"",
            "masterauth \"p\\\"w\"",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} in {conf}");
        }
        assert!(!conf.contains("requirepass"));
    }

    #[test]
    fn tls_lines_name_every_file_and_bad_names_are_refused() {
        let s = NodeSecurity {
            auth: None,
            tls: Some(CertPaths::in_dir(Path::new("/c/tls"))),
        };
        let conf = s.config_lines(5001);
        for line in [
            "tls-port 5001",
            "tls-cert-file \"/c/tls/node.crt\"",
            "tls-key-file \"/c/tls/node.key\"",
            "tls-ca-cert-file \"/c/tls/ca.crt\"",
            "tls-auth-clients yes",
            "tls-replication yes",
            "tls-cluster yes",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} in {conf}");
        }
        let mut bad = NodeSecurity {
            auth: Some(creds(Some("a b"))),
            tls: None,
        };
        assert!(bad.check().is_err());
        bad.auth = Some(creds(Some("default")));
        assert!(bad.check().is_err());
        bad.auth = Some(NodeCredentials {
            password: Secret::new("x\ny"),
            ..creds(None)
        });
        assert!(bad.check().is_err());
    }
}
