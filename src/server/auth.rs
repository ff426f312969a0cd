//! Users, their credentials and what they may publish and subscribe to.
//!
//! Passwords and tokens are kept only as argon2 or bcrypt hashes (PHC strings, `$argon2id$...` or
//! `$2b$...`), checked on a blocking thread so that a deliberately slow hash never stalls a shard.
//! Permissions follow NATS: allow and deny subject patterns for publish and for subscribe; with no
//! allow list everything not denied is allowed. A subscription must lie within an allowed pattern
//! and may not reach any denied subject, so that nothing denied is ever delivered to it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_protocol::subject::{covers, overlaps, validate_pattern};
use sluice_protocol::sublist::Sublist;

/// A user as the configuration file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// argon2 or bcrypt hash of the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// argon2 or bcrypt hash of a token (a client sends the token alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Most connections of this user at once, over all shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Rules::is_open")]
    pub publish: Rules,
    #[serde(default, skip_serializing_if = "Rules::is_open")]
    pub subscribe: Rules,
}

/// Allow and deny patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Rules {
    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// Rules ready for checking.
pub struct Compiled {
    allow: Option<(Vec<String>, Sublist<()>)>,
    deny: (Vec<String>, Sublist<()>),
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("allow", &self.allow.as_ref().map(|(p, _)| p))
            .field("deny", &self.deny.0)
            .finish()
    }
}

impl Compiled {
    fn new(rules: &Rules) -> Compiled {
        let list = |patterns: &[String]| {
            let mut l = Sublist::new();
            for p in patterns {
                l.insert(p, ());
            }
            l
        };
        Compiled {
            allow: rules.allow.as_ref().map(|a| (a.clone(), list(a))),
            deny: (rules.deny.clone(), list(&rules.deny)),
        }
    }

    fn any_match(list: &Sublist<()>, subject: &str) -> bool {
        let mut hit = false;
        list.for_each_match(subject, |_| hit = true);
        hit
    }

    /// May a message be published to this literal subject?
    pub fn allows_subject(&self, subject: &str) -> bool {
        let allowed = match &self.allow {
            None => true,
            Some((_, list)) => Compiled::any_match(list, subject),
        };
        allowed && !Compiled::any_match(&self.deny.1, subject)
    }

    /// May this pattern be subscribed to?
    pub fn allows_pattern(&self, pattern: &str) -> bool {
        let allowed = match &self.allow {
            None => true,
            Some((patterns, _)) => patterns.iter().any(|a| covers(a, pattern)),
        };
        allowed && !self.deny.0.iter().any(|d| overlaps(d, pattern))
    }
}

/// What an authenticated connection may do.
#[derive(Debug)]
pub struct Permissions {
    pub publish: Compiled,
    pub subscribe: Compiled,
}

/// One configured user.
#[derive(Debug)]
pub struct User {
    pub name: String,
    password: Option<String>,
    token: Option<String>,
    max_connections: Option<u32>,
    connections: AtomicU32,
    pub permissions: Arc<Permissions>,
}

/// Every configured user. Shared read-only by the shards; the only thing that changes is each
/// user's connection count, an atomic touched at connect and disconnect.
#[derive(Debug, Default)]
pub struct Users {
    users: Vec<Arc<User>>,
}

/// Why a configuration's users are refused.
pub fn check(users: &[UserConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, u) in users.iter().enumerate() {
        let at = |what: &str| format!("key `users[{i}].{what}`");
        if let Err(e) = sluice_protocol::name::validate_name(&u.name) {
            return Err(format!("{}: {:?}: {e}", at("name"), u.name));
        }
        if !names.insert(u.name.as_str()) {
            return Err(format!("{}: repeated user name", at("name")));
        }
        if u.password.is_none() && u.token.is_none() {
            return Err(format!(
                "{}: a user needs a password or a token",
                at("password")
            ));
        }
        for (what, hash) in [("password", &u.password), ("token", &u.token)] {
            if let Some(h) = hash {
                if !is_supported_hash(h) {
                    return Err(format!(
                        "{}: not an argon2 or bcrypt hash (make one with `sluice passwd`)",
                        at(what)
                    ));
                }
            }
        }
        for (what, rules) in [("publish", &u.publish), ("subscribe", &u.subscribe)] {
            let all = rules.allow.iter().flatten().chain(&rules.deny);
            for p in all {
                validate_pattern(p).map_err(|e| format!("{}: {p:?}: {e}", at(what)))?;
            }
        }
    }
    Ok(())
}

fn is_supported_hash(hash: &str) -> bool {
    hash.starts_with("$argon2") || ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// Whether `secret` matches `hash` (argon2 PHC string or bcrypt); slow by design.
pub fn verify(secret: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        match PasswordHash::new(hash) {
            Ok(parsed) => argon2::Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    } else {
        bcrypt::verify(secret, hash).unwrap_or(false)
    }
}

/// An argon2id hash of `secret`, for the configuration file.
pub fn hash(secret: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&fastrand::u128(..).to_le_bytes()).expect("16 bytes of salt");
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Credentials a client presented.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

/// Why a client was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadCredentials,
    TooManyConnections,
}

impl Users {
    pub fn new(configs: &[UserConfig]) -> Users {
        Users {
            users: configs
                .iter()
                .map(|u| {
                    Arc::new(User {
                        name: u.name.clone(),
                        password: u.password.clone(),
                        token: u.token.clone(),
                        max_connections: u.max_connections,
                        connections: AtomicU32::new(0),
                        permissions: Arc::new(Permissions {
                            publish: Compiled::new(&u.publish),
                            subscribe: Compiled::new(&u.subscribe),
                        }),
                    })
                })
                .collect(),
        }
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Finds the user the credentials prove (slow: run it off the shard), and takes one of its
    /// connections; [`User::release`] gives it back.
    pub fn authenticate(&self, creds: &Credentials) -> Result<Arc<User>, Refusal> {
        let user = match (&creds.user, &creds.password, &creds.token) {
            (Some(name), Some(password), _) => self
                .users
                .iter()
                .find(|u| &u.name == name)
                .filter(|u| u.password.as_deref().is_some_and(|h| verify(password, h))),
            (_, _, Some(token)) => self
                .users
                .iter()
                .filter(|u| creds.user.as_ref().is_none_or(|n| *n == u.name))
                .find(|u| u.token.as_deref().is_some_and(|h| verify(token, h))),
            _ => None,
        };
        let user = user.ok_or(Refusal::BadCredentials)?;
        let limit = user.max_connections.unwrap_or(u32::MAX);
        let taken = user
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refusal::TooManyConnections);
        }
        Ok(user.clone())
    }
}

impl User {
    /// Gives back a connection taken by [`Users::authenticate`].
    pub fn release(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_their_secret_only() {
        let h = hash("s3cret");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret!", &h));
        let b = bcrypt::hash("tok", 4).unwrap();
        assert!(verify("tok", &b));
        assert!(!verify("tak", &b));
    }

    #[test]
    fn subscriptions_stay_within_allowed_patterns_and_away_from_denied_ones() {
        let rules = Compiled::new(&Rules {
            allow: Some(vec!["user.alice.>".into(), "_INBOX.*".into()]),
            deny: vec!["user.alice.secret.>".into()],
        });
        assert!(rules.allows_pattern("user.alice.audio"));
        assert!(rules.allows_pattern("user.alice.*"));
        assert!(rules.allows_pattern("_INBOX.abc"));
        assert!(!rules.allows_pattern("_INBOX.>"), "wider than allowed");
        assert!(!rules.allows_pattern("user.*.audio"), "reaches other users");
        assert!(
            !rules.allows_pattern("user.alice.>"),
            "reaches the denied subjects"
        );
        assert!(rules.allows_subject("user.alice.x"));
        assert!(!rules.allows_subject("user.alice.secret.x"));
        assert!(!rules.allows_subject("user.bob.x"));
    }
}
