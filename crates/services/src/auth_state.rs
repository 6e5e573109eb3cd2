//! Authentication's state: users and service accounts (argon2 password hashes), Ed25519
//! signing keys (rotated without downtime), tokens issued and verified, and the failed-login
//! table. Each replica signs with its own private key, kept in a file (`key_file`), never in the
//! store; it publishes the public key there, and every replica verifies locally with all
//! published public keys. Secrets never appear in logs or errors. Knows nothing of HTTP: the
//! handlers are in `auth.rs`, the middleware in `authenticate.rs`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use romana_api::records::{KeyRecord, StoredKeyRecord, UserRecord};
use romana_api::rest::{Credentials, TokenResponse};
use romana_auth::{
    Claims, KeySet, Principal, Role, SigningKey, TokenKind, VerifiedTokens, b64_decode, b64_encode,
};
use romana_store::{Compare, Op, Store, Txn};

use crate::hash_pool::HashPool;
use crate::keys::Keys;
use crate::login_limit::{FailureTable, Limits, Locked};
use crate::service_error::{ServiceError, ServiceResult};

/// Refresh tokens live a day (access tokens 15 minutes unless configured).
pub const REFRESH_TTL: u64 = 24 * 3600;
/// Wrong passwords allowed per user and source address per minute before that pair is refused
/// for the minute (the source and user locks are in `login_limit::Limits`).
pub const MAX_FAILURES: u32 = 5;
/// Longest username a login may name (a DNS name's length); longer is 400 before any work.
pub const MAX_USERNAME: usize = 253;

/// Whether a stored key may verify tokens: not revoked, and its private half was never in the
/// store (an older replica still writing such records is not trusted either).
pub(crate) fn verifies(k: &StoredKeyRecord) -> bool {
    !k.revoked && k.pkcs8.is_none()
}

/// A stored key's public key, from either version.
pub(crate) fn public_of(k: &StoredKeyRecord) -> Option<Vec<u8>> {
    match (&k.public, &k.pkcs8) {
        (Some(p), _) => b64_decode(p).filter(|b| b.len() == 32),
        (None, Some(key)) => b64_decode(key).and_then(|b| SigningKey::from_pkcs8(&b)).map(|k| k.public_key()),
        (None, None) => None,
    }
}

/// A role's name in records and answers.
pub fn role_name(r: Role) -> String {
    match r {
        Role::Admin => "admin",
        Role::Service => "service",
        Role::Tenant => "tenant",
    }
    .into()
}

/// A role from its name (`None`: not a role).
pub fn role_of(name: &str) -> Option<Role> {
    match name {
        "admin" => Some(Role::Admin),
        "service" => Some(Role::Service),
        "tenant" => Some(Role::Tenant),
        _ => None,
    }
}

/// A stored user's roles; `None` when one is not a role (the record is unreadable).
pub(crate) fn roles_of(u: &UserRecord) -> Option<Vec<Role>> {
    u.roles.iter().map(|r| role_of(r)).collect()
}

#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    pub(crate) set: KeySet,
}

/// This replica's signing key and where it lives (`None`: in memory only, for in-process servers).
struct OwnKey {
    key: Arc<SigningKey>,
    file: Option<PathBuf>,
}

pub struct AuthState {
    pub enabled: bool,
    access_ttl: u64,
    keys: RwLock<KeyRing>,
    own: RwLock<OwnKey>,
    /// Held while this replica's key record changes (rotation, the periodic re-publish), so that
    /// the re-publish never revives a key a rotation is retiring.
    key_change: tokio::sync::Mutex<()>,
    verified: Mutex<VerifiedTokens>,
    failures: Mutex<FailureTable>,
    hashing: HashPool,
    rng: SystemRandom,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState").field("enabled", &self.enabled).finish_non_exhaustive()
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_password(rng: &SystemRandom) -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    rng.fill(&mut bytes).expect("the system RNG works");
    bytes.iter().map(|b| CHARS[*b as usize % CHARS.len()] as char).collect()
}

impl AuthState {
    /// Loads (or creates) this replica's signing key from `key_file` (in memory only without one),
    /// rewrites key records of older versions to public keys only, publishes its public key and,
    /// with `enabled`, creates the first admin, whose password goes to `credentials` (mode 0600).
    /// Keeps the key set current in the background.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: &Keys,
        enabled: bool,
        access_ttl: u64,
        credentials: Option<(PathBuf, String, Option<String>)>,
        key_file: Option<PathBuf>,
    ) -> ServiceResult<Arc<AuthState>> {
        let rng = SystemRandom::new();
        let key = match &key_file {
            Some(path) => {
                let (key, created) = crate::key_file::load_or_create(path, &rng)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                if created {
                    tracing::info!(path = %path.display(), kid = %key.kid, "created this replica's signing key (mode 0600)");
                }
                key
            }
            None => SigningKey::generate(&rng),
        };
        let state = Arc::new(AuthState {
            enabled,
            access_ttl: access_ttl.max(1),
            keys: RwLock::new(KeyRing::default()),
            own: RwLock::new(OwnKey { key: Arc::new(key), file: key_file }),
            key_change: tokio::sync::Mutex::new(()),
            verified: Mutex::new(VerifiedTokens::new(65_536)),
            failures: Mutex::new(FailureTable::new(Limits { pair: MAX_FAILURES, ..Limits::default() })),
            hashing: HashPool::for_this_machine().map_err(|e| {
                ServiceError::Internal(format!("cannot start the password hashing threads: {e}"))
            })?,
            rng,
        });
        state.migrate_keys(&*store, keys).await?;
        state.publish_own(&*store, keys).await?;
        if enabled {
            state.bootstrap_admin(&*store, keys, credentials).await?;
        }
        let (weak, store2, keys2) = (Arc::downgrade(&state), Arc::clone(&store), keys.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Some(s) = weak.upgrade() else { return };
                let _change = s.key_change.lock().await;
                if let Err(e) = s.publish_own(&*store2, &keys2).await {
                    tracing::warn!(error = %e, "cannot refresh the token keys");
                }
            }
        });
        Ok(state)
    }

    fn own_key(&self) -> Arc<SigningKey> {
        Arc::clone(&self.own.read().unwrap_or_else(|p| p.into_inner()).key)
    }

    /// Rewrites key records that still hold a private key (written before keys left the store) to
    /// public keys only, revoked: every older version streamed those private keys to any service
    /// credential (`GET /watch`), so a token they sign proves nothing. Their holders log in again
    /// (agents do on the first 401); the records go a day later, like retired keys.
    async fn migrate_keys(&self, store: &dyn Store, keys: &Keys) -> ServiceResult<()> {
        let (kvs, _) = store.range(&keys.auth_keys()).await?;
        let mut ops = Vec::new();
        for kv in &kvs {
            let Ok(old) = serde_json::from_slice::<StoredKeyRecord>(&kv.value) else { continue };
            if old.pkcs8.is_none() {
                continue;
            }
            match public_of(&old) {
                Some(public) => {
                    let rec = KeyRecord {
                        kid: romana_auth::KeySet::default().insert(public.clone()),
                        public: b64_encode(&public),
                        created: old.created,
                        retired: Some(old.retired.unwrap_or_else(now)),
                        revoked: true,
                    };
                    ops.push(Op::put(&kv.key, serde_json::to_vec(&rec).expect("serializes")));
                }
                // A private key we cannot even read verifies nothing: it only has to go.
                None => ops.push(Op::delete(&kv.key)),
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let n = ops.len();
        store.txn(Txn::when(vec![], ops)).await?;
        tracing::warn!(
            records = n,
            "rewrote signing-key records that held private keys to public keys only, revoked: tokens they signed no longer verify (log in again); see docs/security.md"
        );
        Ok(())
    }

    /// Publishes this replica's public key (again, if its record was retired or lost), and drops
    /// retired keys whose tokens have all expired.
    async fn publish_own(&self, store: &dyn Store, keys: &Keys) -> ServiceResult<()> {
        let own = self.own_key();
        let prefix = keys.auth_keys();
        let (kvs, _) = store.range(&prefix).await?;
        let t = now();
        let mut ops = Vec::new();
        let mut published = false;
        let own_key = keys.auth_key(&own.kid);
        for kv in &kvs {
            let Ok(rec) = serde_json::from_slice::<StoredKeyRecord>(&kv.value) else { continue };
            if kv.key == own_key && rec.retired.is_some() && self.adopt_rotated_file(&own.kid) {
                // Another replica sharing our key file rotated it: sign with the new key.
                return Box::pin(self.publish_own(store, keys)).await;
            }
            if kv.key == own_key && rec.retired.is_none() && !rec.revoked && rec.public.is_some() {
                published = true;
            } else if rec.retired.is_some_and(|r| r.saturating_add(REFRESH_TTL) < t) {
                ops.push(Op::delete(&kv.key));
            }
        }
        if !published {
            let rec = KeyRecord {
                kid: own.kid.clone(),
                public: b64_encode(&own.public_key()),
                created: t,
                retired: None,
                revoked: false,
            };
            ops.push(Op::put(keys.auth_key(&own.kid), serde_json::to_vec(&rec).expect("serializes")));
        }
        if !ops.is_empty() {
            store.txn(Txn::when(vec![], ops)).await?;
        }
        self.load_keys(store, keys).await?;
        Ok(())
    }

    /// Switches to the key now in our key file if it is not `current` (a replica sharing the file
    /// rotated it); whether it switched.
    fn adopt_rotated_file(&self, current: &str) -> bool {
        let mut own = self.own.write().unwrap_or_else(|p| p.into_inner());
        let Some(path) = own.file.clone() else { return false };
        match crate::key_file::read(&path) {
            Ok(k) if k.kid != current && own.key.kid == current => {
                tracing::info!(path = %path.display(), kid = %k.kid, "the key file was rotated by another replica; signing with its new key");
                own.key = Arc::new(k);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the signing key");
                false
            }
        }
    }

    async fn load_keys(&self, store: &dyn Store, keys: &Keys) -> ServiceResult<usize> {
        let (kvs, _) = store.range(&keys.auth_keys()).await?;
        let mut ring = KeyRing::default();
        for kv in &kvs {
            let Some(public) = serde_json::from_slice::<StoredKeyRecord>(&kv.value)
                .ok()
                .filter(verifies)
                .and_then(|r| public_of(&r))
            else {
                continue;
            };
            ring.set.insert(public);
        }
        let n = ring.set.len();
        let mut current = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let lost = current.set.kids().any(|k| !ring.set.kids().any(|x| x == k));
        *current = ring;
        if lost {
            // A removed key's tokens must stop working at once.
            self.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        Ok(n)
    }

    /// Rotation: this replica signs with a new key from now on (written to its key file first),
    /// publishes its public key and retires the old one, which verifies until its tokens expire.
    /// Other replicas keep their own keys.
    pub async fn rotate_own(&self, store: &dyn Store, keys: &Keys) -> ServiceResult<String> {
        let _change = self.key_change.lock().await;
        let key = SigningKey::generate(&self.rng);
        let old = self.own_key();
        let file = self.own.read().unwrap_or_else(|p| p.into_inner()).file.clone();
        if let Some(path) = &file {
            crate::key_file::replace(path, &key).map_err(|e| ServiceError::Internal(e.to_string()))?;
        }
        let t = now();
        let new_rec = KeyRecord {
            kid: key.kid.clone(),
            public: b64_encode(&key.public_key()),
            created: t,
            retired: None,
            revoked: false,
        };
        let old_key = keys.auth_key(&old.kid);
        let created = match store.get(&old_key).await? {
            Some(kv) => serde_json::from_slice::<StoredKeyRecord>(&kv.value).map_or(t, |r| r.created),
            None => t,
        };
        let old_rec = KeyRecord {
            kid: old.kid.clone(),
            public: b64_encode(&old.public_key()),
            created,
            retired: Some(t),
            revoked: false,
        };
        let ops = vec![
            Op::put(keys.auth_key(&key.kid), serde_json::to_vec(&new_rec).expect("serializes")),
            Op::put(old_key, serde_json::to_vec(&old_rec).expect("serializes")),
        ];
        let kid = key.kid.clone();
        store.txn(Txn::when(vec![], ops)).await?;
        // Signs only once its public key is published, so every token it signs verifies.
        self.own.write().unwrap_or_else(|p| p.into_inner()).key = Arc::new(key);
        self.publish_own(store, keys).await?;
        tracing::info!(kid = %kid, retired = %old.kid, "rotated this replica's signing key");
        Ok(kid)
    }

    async fn bootstrap_admin(
        &self,
        store: &dyn Store,
        keys: &Keys,
        credentials: Option<(PathBuf, String, Option<String>)>,
    ) -> ServiceResult<()> {
        let (users, _) = store.range(&keys.auth_users()).await?;
        if !users.is_empty() {
            return Ok(());
        }
        let password = random_password(&self.rng);
        let rec = UserRecord {
            name: "admin".into(),
            password_hash: self.hash(&password),
            roles: vec![role_name(Role::Admin)],
            tenants: vec![],
            hosts: vec![],
        };
        let key = keys.auth_user("admin");
        let r = store
            .txn(Txn::when(
                vec![Compare::absent(&key)],
                vec![Op::put(&key, serde_json::to_vec(&rec).expect("serializes"))],
            ))
            .await?;
        if !r.succeeded {
            return Ok(());
        }
        match credentials {
            Some((path, endpoint, ca)) => {
                let creds = Credentials { endpoint, username: "admin".into(), password, ca };
                write_private(&path, &serde_json::to_vec_pretty(&creds).expect("serializes"))
                    .map_err(|e| ServiceError::Internal(format!("cannot write {}: {e}", path.display())))?;
                tracing::info!(path = %path.display(), "created the admin account; its credentials are in this file (mode 0600)");
            }
            None => tracing::warn!("created the admin account but have nowhere to write its password"),
        }
        Ok(())
    }

    pub fn hash(&self, password: &str) -> String {
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt).expect("the system RNG works");
        romana_auth::hash_password(password, &salt)
    }

    fn signing(&self) -> ServiceResult<Arc<SigningKey>> {
        Ok(self.own_key())
    }

    /// Whether a login of `user` from `source` is refused at `now` by the failure locks.
    pub fn login_locked(&self, user: &str, source: Option<IpAddr>, now: Instant) -> Result<(), Locked> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).check(user, source, now)
    }

    /// Records a login's outcome for the failure locks.
    pub fn login_outcome(&self, user: &str, source: Option<IpAddr>, succeeded: bool, now: Instant) {
        let mut table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if succeeded { table.succeeded(user, source, now) } else { table.failed(user, source, now) }
    }

    /// Checks `password` against `hash` on the bounded hashing pool; `Err((threads, waiting))`
    /// when the pool is full (the login is shed).
    pub async fn verify_password(&self, password: String, hash: String) -> Result<bool, (usize, usize)> {
        self.hashing
            .run(move || romana_auth::verify_password(&password, &hash))
            .await
            .map_err(|_| self.hashing.size())
    }

    /// The claims of a refresh token signed by a key of the set, before its expiry.
    pub fn refresh_claims(&self, token: &str) -> ServiceResult<Claims> {
        let ring = self.keys.read().unwrap_or_else(|p| p.into_inner());
        romana_auth::verify(token, &ring.set, now(), TokenKind::Refresh)
            .map_err(|e| ServiceError::Unauthorized(e.to_string()))
    }

    /// Verifies a bearer token (access kind) at the current time.
    pub fn principal(&self, token: &str) -> Result<Principal, String> {
        let ring = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .verify(token, &ring.set, now(), TokenKind::Access)
            .map(Principal::from)
            .map_err(|e| e.to_string())
    }

    pub fn issue(&self, user: &UserRecord) -> ServiceResult<TokenResponse> {
        let key = self.signing()?;
        let t = now();
        let claims = |typ, ttl| Claims {
            sub: user.name.clone(),
            roles: roles_of(user).unwrap_or_default(),
            tenants: user.tenants.clone(),
            hosts: user.hosts.clone(),
            iat: t,
            exp: t + ttl,
            typ,
        };
        Ok(TokenResponse {
            access_token: key.sign(&claims(TokenKind::Access, self.access_ttl)),
            refresh_token: key.sign(&claims(TokenKind::Refresh, REFRESH_TTL)),
            expires_in: self.access_ttl,
            token_type: "Bearer".into(),
        })
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    // `mode` applies only on create; an existing file is made private too.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

/// The user record named `name`, if there is a readable one.
pub async fn user(store: &dyn Store, keys: &Keys, name: &str) -> ServiceResult<Option<UserRecord>> {
    match store.get(&keys.auth_user(name)).await? {
        Some(kv) => {
            Ok(serde_json::from_slice::<UserRecord>(&kv.value).ok().filter(|u| roles_of(u).is_some()))
        }
        None => Ok(None),
    }
}
