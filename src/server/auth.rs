//! Users, their credentials and what they may publish and subscribe to.
//!
//! Passwords and tokens are kept only as argon2 or bcrypt hashes (PHC strings, `$argon2id$...` or
//! `$2b$...`), checked by the hashing threads (`auth_pool.rs`) so that a deliberately slow hash never
//! stalls a shard. Checking costs one hash whether or not the user name exists: an unknown name is
//! checked against a dummy hash of a configured user's algorithm and cost, so the time of a refusal
//! does not tell which names exist. Credentials that passed are remembered for a short while
//! ([`VerifiedCache`]), so that a client reconnecting many times does not pay the hash each time.
//! Permissions follow NATS: allow and deny subject patterns for publish and for subscribe; with no
//! allow list everything not denied is allowed. A subscription must lie within an allowed pattern
//! and may not reach any denied subject, so that nothing denied is ever delivered to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// One dummy per configured password hash: same algorithm and cost, random salt, a digest no
    /// secret produces. An unknown user name is checked against one of them.
    dummy_passwords: Vec<String>,
    /// The same for token hashes.
    dummy_tokens: Vec<String>,
}

/// Why a configuration's users are refused.
pub fn check(users: &[UserConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, u) in users.iter().enumerate() {
        let at = |what: &str| format!("key `users[{i}].{what}`");
        // A user known by its client certificate is named as the certificate names it: an
        // e-mail, a DNS name or a distinguished name, with dots, spaces and `=`.
        let named = match u.password.is_some() || u.token.is_some() {
            true => sluice_protocol::name::validate_name(&u.name).map_err(|e| e.to_string()),
            false => super::tls::check_certificate_name(&u.name),
        };
        if let Err(e) = named {
            return Err(format!("{}: {:?}: {e}", at("name"), u.name));
        }
        if !names.insert(u.name.as_str()) {
            return Err(format!("{}: repeated user name", at("name")));
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
    #[cfg(test)]
    tests::VERIFIES.with(|n| n.set(n.get() + 1));
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

/// A hash of the same algorithm and cost as `hash` (argon2 parameters, bcrypt cost) with a random
/// salt and an all-zero digest: verifying anything against it costs what verifying against `hash`
/// does, and it matches no secret that anyone knows. Built without hashing, so users cost nothing
/// at start-up.
pub fn dummy_of(hash: &str) -> Option<String> {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::{Output, PasswordHash, SaltString};
        let real = PasswordHash::new(hash).ok()?;
        let salt = SaltString::encode_b64(&fastrand::u128(..).to_le_bytes()).ok()?;
        let digest_bytes = real.hash.map_or(32, |h| h.len());
        let dummy = PasswordHash {
            algorithm: real.algorithm,
            version: real.version,
            params: real.params.clone(),
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&vec![0; digest_bytes]).ok()?),
        };
        Some(dummy.to_string())
    } else {
        // `$2b$12$` + 22 characters of salt + 31 of digest, in bcrypt's base64 (`./A-Za-z0-9`).
        const ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let prefix = hash.get(..7)?;
        let mut dummy = String::from(prefix);
        dummy.extend((0..21).map(|_| ALPHABET[fastrand::usize(..64)] as char));
        // 22 characters carry 132 bits for 128 of salt: the last one's low 4 bits are zero.
        dummy.push(ALPHABET[fastrand::usize(..4) * 16] as char);
        dummy.extend(std::iter::repeat_n('.', 31));
        Some(dummy)
    }
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
    /// Every hashing thread is busy and the queue in front of them is full: refused at once rather
    /// than queued without bound.
    Busy,
    /// No user without a password or token is named as the client certificate names its holder.
    UnknownCertificate,
}

/// Which secret a client presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Password,
    Token,
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
            dummy_passwords: configs
                .iter()
                .filter_map(|u| u.password.as_deref().and_then(dummy_of))
                .collect(),
            dummy_tokens: configs
                .iter()
                .filter_map(|u| u.token.as_deref().and_then(dummy_of))
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
        let index = self.verify(creds).ok_or(Refusal::BadCredentials)?;
        self.admit(index)
    }

    /// As [`Users::authenticate`], but credentials that `cache` saw pass within its time to live
    /// are not hashed again; credentials that pass now are remembered.
    pub fn authenticate_cached(
        &self,
        creds: &Credentials,
        cache: &std::sync::Mutex<VerifiedCache>,
        now: Instant,
    ) -> Result<Arc<User>, Refusal> {
        // The lock is not held while hashing: the other hashing threads keep using the cache.
        let lock = || {
            cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        let key = lock().key(creds);
        let hit = key.and_then(|key| lock().get(&key, now));
        let index = match hit {
            Some(index) => index,
            None => {
                let index = self.verify(creds).ok_or(Refusal::BadCredentials)?;
                if let Some(key) = key {
                    lock().insert(key, index, now);
                }
                index
            }
        };
        self.admit(index)
    }

    /// Finds the user a verified client certificate stands for: the first of its names (e-mails,
    /// DNS names, URIs, then the subject) that is the name of a user without a password or token;
    /// and takes one of its connections. Cheap: no hash.
    pub fn authenticate_certificate(
        &self,
        identity: &super::tls::CertIdentity,
    ) -> Result<Arc<User>, Refusal> {
        let index = identity
            .names()
            .find_map(|name| {
                self.users
                    .iter()
                    .position(|u| u.password.is_none() && u.token.is_none() && u.name == name)
            })
            .ok_or(Refusal::UnknownCertificate)?;
        self.admit(index)
    }

    /// The index of the user the credentials prove. Costs one hash when a user name is given,
    /// whether or not that user exists or has that kind of secret.
    fn verify(&self, creds: &Credentials) -> Option<usize> {
        match (&creds.user, &creds.password, &creds.token) {
            (Some(name), Some(password), _) => self.verify_named(name, password, Secret::Password),
            (Some(name), None, Some(token)) => self.verify_named(name, token, Secret::Token),
            (None, _, Some(token)) => self
                .users
                .iter()
                .position(|u| u.token.as_deref().is_some_and(|h| verify(token, h))),
            _ => None,
        }
    }

    fn verify_named(&self, name: &str, secret: &str, kind: Secret) -> Option<usize> {
        let found = self.users.iter().position(|u| u.name == name);
        let hash = found.and_then(|i| match kind {
            Secret::Password => self.users[i].password.as_deref(),
            Secret::Token => self.users[i].token.as_deref(),
        });
        match (found, hash) {
            (Some(index), Some(hash)) => verify(secret, hash).then_some(index),
            _ => {
                if let Some(dummy) = self.dummy_for(name, kind) {
                    let matched = verify(secret, dummy);
                    debug_assert!(!matched, "a dummy hash matches no secret");
                }
                None
            }
        }
    }

    /// The dummy hash an unknown name is checked against: chosen by the name, so that one name
    /// always costs the same, among the configured hashes of that kind (of the other kind when
    /// there are none), so that its cost is one a real user's check has.
    fn dummy_for(&self, name: &str, kind: Secret) -> Option<&str> {
        let (first, second) = match kind {
            Secret::Password => (&self.dummy_passwords, &self.dummy_tokens),
            Secret::Token => (&self.dummy_tokens, &self.dummy_passwords),
        };
        let dummies = if first.is_empty() { second } else { first };
        if dummies.is_empty() {
            return None;
        }
        let pick = name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        Some(dummies[pick % dummies.len()].as_str())
    }

    /// Takes one of the user's connections, unless it is at its limit.
    fn admit(&self, index: usize) -> Result<Arc<User>, Refusal> {
        let user = &self.users[index];
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

/// How long credentials that passed are taken on trust: long enough that a client reconnecting in
/// a storm (a restart, a network blip) pays the hash once, short enough that a stolen connection
/// attempt replayed later is checked again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// Most credentials remembered at once: a few thousand distinct clients reconnecting together; an
/// entry is about 64 bytes, so the cache stays under half a MiB.
pub const VERIFIED_ENTRIES_MAX: usize = 4096;

/// Credentials that passed recently, each kept as a keyed BLAKE2b digest of (kind, user name,
/// secret) and the index of the user it proved.
///
/// Why a keyed BLAKE2b: the key must be fast to compute (a microsecond, where argon2 takes
/// milliseconds by design, which would defeat the cache), must not let one secret stand for
/// another (a cryptographic digest, 256 bits), and must not keep the secret nor anything a stolen
/// memory dump could test guesses against cheaply (the digest is keyed with 32 random bytes drawn
/// per process, so precomputed tables do not apply). BLAKE2 is what argon2 is built on, so it
/// adds no code. Plaintext secrets are never stored.
pub struct VerifiedCache {
    mac_key: [u8; 32],
    entries: HashMap<[u8; 32], Verified>,
    ttl: Duration,
    entries_max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Verified {
    user: usize,
    expires: Instant,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        VerifiedCache::new(VERIFIED_TTL, VERIFIED_ENTRIES_MAX)
    }
}

impl VerifiedCache {
    pub fn new(ttl: Duration, entries_max: usize) -> VerifiedCache {
        assert!(entries_max > 0);
        let mut mac_key = [0u8; 32];
        mac_key.iter_mut().for_each(|b| *b = fastrand::u8(..));
        VerifiedCache {
            mac_key,
            entries: HashMap::with_capacity(entries_max.min(1024)),
            ttl,
            entries_max,
        }
    }

    /// The cache key of credentials that name what they prove (a user and a password or token),
    /// or `None` for those that do not go through the cache.
    fn key(&self, creds: &Credentials) -> Option<[u8; 32]> {
        use blake2::digest::Mac;
        let (kind, name, secret) = match (&creds.user, &creds.password, &creds.token) {
            (Some(name), Some(password), _) => (Secret::Password, name.as_str(), password),
            (name, None, Some(token)) | (name @ None, Some(_), Some(token)) => {
                (Secret::Token, name.as_deref().unwrap_or(""), token)
            }
            _ => return None,
        };
        let mut mac =
            blake2::Blake2bMac::<blake2::digest::consts::U32>::new_from_slice(&self.mac_key)
                .expect("32 bytes is a valid BLAKE2b key");
        // Lengths first, so that no two (name, secret) pairs feed the same bytes.
        mac.update(&[kind as u8]);
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac.update(&(secret.len() as u64).to_le_bytes());
        mac.update(secret.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// The user that these credentials proved within the time to live.
    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<usize> {
        match self.entries.get(key) {
            Some(v) if v.expires > now => Some(v.user),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers that these credentials proved `user`; when full, forgets the expired entries and
    /// then, if need be, the one closest to expiring.
    fn insert(&mut self, key: [u8; 32], user: usize, now: Instant) {
        if self.entries.len() >= self.entries_max && !self.entries.contains_key(&key) {
            self.entries.retain(|_, v| v.expires > now);
            if self.entries.len() >= self.entries_max {
                let oldest = self.entries.iter().min_by_key(|(_, v)| v.expires);
                if let Some((&oldest, _)) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        let expires = now + self.ttl;
        self.entries.insert(key, Verified { user, expires });
        assert!(self.entries.len() <= self.entries_max);
    }

    /// Entries held, expired ones included until they are next looked at.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("entries", &self.entries.len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Gives back a connection taken by [`Users::authenticate`].
    pub fn release(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether two secrets are equal, in time that depends only on their lengths.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Mutex;

    thread_local! {
        /// Hash verifications run on this thread.
        pub static VERIFIES: Cell<u64> = const { Cell::new(0) };
    }

    fn verifies_during(f: impl FnOnce()) -> u64 {
        let before = VERIFIES.with(Cell::get);
        f();
        VERIFIES.with(Cell::get) - before
    }

    /// A cheap argon2id hash (256 KiB, one pass), so that tests verify in milliseconds.
    fn cheap_argon2(secret: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(256, 1, 1, None).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(&[7; 16]).unwrap();
        argon
            .hash_password(secret.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn user(name: &str, password: Option<String>, token: Option<String>) -> UserConfig {
        UserConfig {
            name: name.into(),
            password,
            token,
            max_connections: None,
            publish: Rules::default(),
            subscribe: Rules::default(),
        }
    }

    fn creds(user: Option<&str>, password: Option<&str>, token: Option<&str>) -> Credentials {
        Credentials {
            user: user.map(str::to_string),
            password: password.map(str::to_string),
            token: token.map(str::to_string),
        }
    }

    /// alice: argon2 password; bob: bcrypt token only.
    fn users() -> Users {
        Users::new(&[
            user("alice", Some(cheap_argon2("alice-pw")), None),
            user("bob", None, Some(bcrypt::hash("bob-token", 4).unwrap())),
        ])
    }

    #[test]
    fn an_unknown_user_name_costs_one_hash_as_a_known_one_does() {
        let users = users();
        let wrong = |c: Credentials| {
            verifies_during(|| {
                assert_eq!(users.authenticate(&c).err(), Some(Refusal::BadCredentials))
            })
        };
        assert_eq!(wrong(creds(Some("alice"), Some("nope"), None)), 1);
        assert_eq!(wrong(creds(Some("mallory"), Some("nope"), None)), 1);
        assert_eq!(
            wrong(creds(Some("bob"), Some("nope"), None)),
            1,
            "bob has no password"
        );
        assert_eq!(wrong(creds(Some("bob"), None, Some("nope"))), 1);
        assert_eq!(wrong(creds(Some("mallory"), None, Some("nope"))), 1);
        assert_eq!(
            wrong(creds(Some("alice"), None, Some("nope"))),
            1,
            "alice has no token"
        );
        let ok = verifies_during(|| {
            users
                .authenticate(&creds(Some("alice"), Some("alice-pw"), None))
                .unwrap();
        });
        assert_eq!(ok, 1);
    }

    #[test]
    fn dummy_hashes_keep_the_algorithm_and_cost_and_match_nothing() {
        use argon2::password_hash::PasswordHash;
        let real = cheap_argon2("secret");
        let dummy = dummy_of(&real).unwrap();
        let (r, d) = (
            PasswordHash::new(&real).unwrap(),
            PasswordHash::new(&dummy).unwrap(),
        );
        assert_eq!(
            (r.algorithm, r.version, &r.params),
            (d.algorithm, d.version, &d.params)
        );
        assert_ne!(r.salt, d.salt);
        assert_eq!(r.hash.unwrap().len(), d.hash.unwrap().len());
        assert!(!verify("secret", &dummy));

        let real = bcrypt::hash("secret", 5).unwrap();
        let dummy = dummy_of(&real).unwrap();
        assert_eq!(dummy.len(), real.len());
        assert_eq!(&dummy[..7], &real[..7], "same variant and cost");
        // Ok(false), not an error: the hash was computed, at the same cost.
        assert_eq!(bcrypt::verify("secret", &dummy).ok(), Some(false));
    }

    #[test]
    fn verified_credentials_are_not_hashed_again_until_they_expire() {
        let users = users();
        let cache = Mutex::new(VerifiedCache::new(Duration::from_secs(60), 16));
        let t0 = Instant::now();
        let alice = creds(Some("alice"), Some("alice-pw"), None);
        let login = |c: &Credentials, at: Duration| {
            let mut result = None;
            let n =
                verifies_during(|| result = Some(users.authenticate_cached(c, &cache, t0 + at)));
            let result = result.unwrap().map(|u| {
                u.release();
                u.name.clone()
            });
            (result, n)
        };
        assert_eq!(login(&alice, Duration::ZERO), (Ok("alice".into()), 1));
        assert_eq!(
            login(&alice, Duration::from_secs(59)),
            (Ok("alice".into()), 0)
        );
        // A wrong password is never served from the cache, and never enters it.
        let wrong = creds(Some("alice"), Some("alice-pw!"), None);
        assert_eq!(
            login(&wrong, Duration::from_secs(1)),
            (Err(Refusal::BadCredentials), 1)
        );
        assert_eq!(
            login(&wrong, Duration::from_secs(2)),
            (Err(Refusal::BadCredentials), 1)
        );
        assert_eq!(cache.lock().unwrap().len(), 1);
        // Tokens without a name are cached too.
        let bob = creds(None, None, Some("bob-token"));
        // Only bob has a token: one hash.
        assert_eq!(login(&bob, Duration::ZERO), (Ok("bob".into()), 1));
        assert_eq!(login(&bob, Duration::from_secs(1)), (Ok("bob".into()), 0));
        // After the time to live, the hash runs again.
        assert_eq!(
            login(&alice, Duration::from_secs(60)),
            (Ok("alice".into()), 1)
        );
    }

    #[test]
    fn a_cache_hit_still_counts_against_the_connection_limit() {
        let mut config = user("carol", Some(bcrypt::hash("carol-pw", 4).unwrap()), None);
        config.max_connections = Some(1);
        let users = Users::new(&[config]);
        let cache = Mutex::new(VerifiedCache::default());
        let carol = creds(Some("carol"), Some("carol-pw"), None);
        let now = Instant::now();
        let first = users.authenticate_cached(&carol, &cache, now).unwrap();
        assert_eq!(
            users.authenticate_cached(&carol, &cache, now).err(),
            Some(Refusal::TooManyConnections)
        );
        first.release();
        assert!(users.authenticate_cached(&carol, &cache, now).is_ok());
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_closest_to_expiring_first() {
        let mut cache = VerifiedCache::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let key = |cache: &VerifiedCache, name: &str| {
            cache.key(&creds(Some(name), Some("pw"), None)).unwrap()
        };
        let (a, b, c) = (key(&cache, "a"), key(&cache, "b"), key(&cache, "c"));
        cache.insert(a, 0, t0);
        cache.insert(b, 1, t0 + Duration::from_secs(1));
        cache.insert(c, 2, t0 + Duration::from_secs(2));
        assert_eq!(cache.len(), 2);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(cache.get(&a, now), None);
        assert_eq!(cache.get(&b, now), Some(1));
        assert_eq!(cache.get(&c, now), Some(2));
        // Expired entries go before live ones.
        let late = t0 + Duration::from_secs(61) + Duration::from_millis(500);
        cache.insert(a, 0, late);
        assert_eq!(cache.get(&c, late), Some(2));
        assert_eq!(cache.get(&a, late), Some(0));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn cache_keys_depend_on_the_user_the_secret_its_kind_and_the_process_key() {
        let cache = VerifiedCache::default();
        let k = |c: Credentials| cache.key(&c);
        let alice = k(creds(Some("alice"), Some("pw"), None)).unwrap();
        assert_eq!(Some(alice), k(creds(Some("alice"), Some("pw"), None)));
        assert_ne!(Some(alice), k(creds(Some("alice"), Some("pw2"), None)));
        assert_ne!(Some(alice), k(creds(Some("alicep"), Some("w"), None)));
        assert_ne!(Some(alice), k(creds(Some("alice"), None, Some("pw"))));
        assert_eq!(k(creds(Some("alice"), None, None)), None);
        let other = VerifiedCache::default();
        assert_ne!(
            Some(alice),
            other.key(&creds(Some("alice"), Some("pw"), None))
        );
    }

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
