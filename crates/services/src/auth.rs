//! The Authentication service: users and service accounts (argon2 password hashes), Ed25519
//! signing keys (rotated without downtime), login and refresh, and the middleware that checks
//! every request against the route table's access rule. Each replica signs with its own private
//! key, kept in a file (`key_file`), never in the store; it publishes the public key there, and
//! every replica verifies locally with all published public keys. Secrets never appear in logs
//! or error bodies.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ring::rand::{SecureRandom, SystemRandom};
use romana_api::rest::{Credentials, LoginRequest, RefreshRequest, TokenResponse, User, UserRequest};
use romana_auth::{
    Claims, Decision, KeySet, Principal, Role, SigningKey, TokenKind, VerifiedTokens, b64_decode, b64_encode,
    decide,
};
use romana_store::{Compare, Op, Store, Txn};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::hash_pool::HashPool;
use crate::keys::Keys;
use crate::login_limit::{FailureTable, Limits, LockKind};
use crate::state::AppState;

/// Refresh tokens live a day (access tokens 15 minutes unless configured).
pub const REFRESH_TTL: u64 = 24 * 3600;
/// Wrong passwords allowed per user and source address per minute before that pair is refused
/// for the minute (the source and user locks are in `login_limit::Limits`).
pub const MAX_FAILURES: u32 = 5;
/// Longest username a login may name (a DNS name's length); longer is 400 before any work.
pub const MAX_USERNAME: usize = 253;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRecord {
    name: String,
    password_hash: String,
    roles: Vec<Role>,
    #[serde(default)]
    tenants: Vec<String>,
    /// Hosts a service user acts for (an agent); empty for admins, tenants and controllers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<String>,
}

/// A verifying key as published in the store (`auth/keys/<kid>`): public only.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    kid: String,
    /// base64url Ed25519 public key.
    public: String,
    created: u64,
    /// When its replica stopped signing with it (rotation, or migration of an old record); it is
    /// deleted `REFRESH_TTL` later, when every token it signed has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired: Option<u64>,
    /// Verifies nothing: a key whose private half was in the store (see `migrate_keys`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revoked: bool,
}

/// A stored key record of any version: before this one, records held the private key (`pkcs8`).
#[derive(Debug, Deserialize)]
struct StoredKey {
    #[serde(default)]
    public: Option<String>,
    #[serde(default)]
    pkcs8: Option<String>,
    created: u64,
    #[serde(default)]
    retired: Option<u64>,
    #[serde(default)]
    revoked: bool,
}

impl StoredKey {
    /// Whether the key may verify tokens: not revoked, and its private half was never in the store
    /// (an older replica still writing such records is not trusted either).
    fn verifies(&self) -> bool {
        !self.revoked && self.pkcs8.is_none()
    }

    /// The public key, from either version.
    fn public(&self) -> Option<Vec<u8>> {
        match (&self.public, &self.pkcs8) {
            (Some(p), _) => b64_decode(p).filter(|b| b.len() == 32),
            (None, Some(k)) => b64_decode(k).and_then(|b| SigningKey::from_pkcs8(&b)).map(|k| k.public_key()),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Default)]
struct KeyRing {
    set: KeySet,
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

fn role_name(r: Role) -> String {
    match r {
        Role::Admin => "admin",
        Role::Service => "service",
        Role::Tenant => "tenant",
    }
    .into()
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
    ) -> ApiResult<Arc<AuthState>> {
        let rng = SystemRandom::new();
        let key = match &key_file {
            Some(path) => {
                let (key, created) = crate::key_file::load_or_create(path, &rng)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
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
            hashing: HashPool::for_this_machine()
                .map_err(|e| ApiError::internal(format!("cannot start the password hashing threads: {e}")))?,
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
                    tracing::warn!(error = %e.message, "cannot refresh the token keys");
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
    async fn migrate_keys(&self, store: &dyn Store, keys: &Keys) -> ApiResult<()> {
        let (kvs, _) = store.range(&format!("{}auth/keys/", keys.root())).await?;
        let mut ops = Vec::new();
        for kv in &kvs {
            let Ok(old) = serde_json::from_slice::<StoredKey>(&kv.value) else { continue };
            if old.pkcs8.is_none() {
                continue;
            }
            match old.public() {
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
    async fn publish_own(&self, store: &dyn Store, keys: &Keys) -> ApiResult<()> {
        let own = self.own_key();
        let prefix = format!("{}auth/keys/", keys.root());
        let (kvs, _) = store.range(&prefix).await?;
        let t = now();
        let mut ops = Vec::new();
        let mut published = false;
        let own_key = format!("{prefix}{}", own.kid);
        for kv in &kvs {
            let Ok(rec) = serde_json::from_slice::<StoredKey>(&kv.value) else { continue };
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
            ops.push(Op::put(format!("{prefix}{}", own.kid), serde_json::to_vec(&rec).expect("serializes")));
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

    async fn load_keys(&self, store: &dyn Store, keys: &Keys) -> ApiResult<usize> {
        let (kvs, _) = store.range(&format!("{}auth/keys/", keys.root())).await?;
        let mut ring = KeyRing::default();
        for kv in &kvs {
            let Some(public) = serde_json::from_slice::<StoredKey>(&kv.value)
                .ok()
                .filter(StoredKey::verifies)
                .and_then(|r| r.public())
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
    async fn rotate_own(&self, store: &dyn Store, keys: &Keys) -> ApiResult<String> {
        let _change = self.key_change.lock().await;
        let key = SigningKey::generate(&self.rng);
        let old = self.own_key();
        let file = self.own.read().unwrap_or_else(|p| p.into_inner()).file.clone();
        if let Some(path) = &file {
            crate::key_file::replace(path, &key).map_err(|e| ApiError::internal(e.to_string()))?;
        }
        let prefix = format!("{}auth/keys/", keys.root());
        let t = now();
        let new_rec = KeyRecord {
            kid: key.kid.clone(),
            public: b64_encode(&key.public_key()),
            created: t,
            retired: None,
            revoked: false,
        };
        let old_key = format!("{prefix}{}", old.kid);
        let created = match store.get(&old_key).await? {
            Some(kv) => serde_json::from_slice::<StoredKey>(&kv.value).map_or(t, |r| r.created),
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
            Op::put(format!("{prefix}{}", key.kid), serde_json::to_vec(&new_rec).expect("serializes")),
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
    ) -> ApiResult<()> {
        let (users, _) = store.range(&format!("{}auth/users/", keys.root())).await?;
        if !users.is_empty() {
            return Ok(());
        }
        let password = random_password(&self.rng);
        let rec = UserRecord {
            name: "admin".into(),
            password_hash: self.hash(&password),
            roles: vec![Role::Admin],
            tenants: vec![],
            hosts: vec![],
        };
        let key = format!("{}auth/users/admin", keys.root());
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
                    .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))?;
                tracing::info!(path = %path.display(), "created the admin account; its credentials are in this file (mode 0600)");
            }
            None => tracing::warn!("created the admin account but have nowhere to write its password"),
        }
        Ok(())
    }

    fn hash(&self, password: &str) -> String {
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt).expect("the system RNG works");
        romana_auth::hash_password(password, &salt)
    }

    fn signing(&self) -> ApiResult<Arc<SigningKey>> {
        Ok(self.own_key())
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

    fn issue(&self, user: &UserRecord) -> ApiResult<TokenResponse> {
        let key = self.signing()?;
        let t = now();
        let claims = |typ, ttl| Claims {
            sub: user.name.clone(),
            roles: user.roles.clone(),
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

/// The bearer token of a request: `Authorization: Bearer T` (or a raw token, as Romana 1.x sent it).
fn bearer(headers: &HeaderMap) -> Option<Result<&str, &'static str>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let Ok(v) = v.to_str() else { return Some(Err("the Authorization header is not text")) };
    let v = v.trim();
    if v.eq_ignore_ascii_case("bearer") {
        return Some(Err("the bearer token is empty"));
    }
    let token = match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return Some(Err("use 'Authorization: Bearer TOKEN'")),
        None => v,
    };
    Some(if token.is_empty() { Err("the bearer token is empty") } else { Ok(token) })
}

/// The `{tenant}` segment of `path` under the route template `template`.
fn path_tenant<'a>(template: &str, path: &'a str) -> Option<&'a str> {
    template.split('/').zip(path.split('/')).find(|(t, _)| *t == "{tenant}").map(|(_, p)| p)
}

/// Checks every request against its route's access rule; handlers find the `Principal` in the request.
pub async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let rule = template.as_deref().and_then(|t| crate::rest_routes::route(req.method().as_str(), t));
    // A served route missing from the table is a bug; refuse it rather than leave it open.
    let Some(rule) = rule else {
        return ApiError::internal(format!(
            "route {} {} declares no access rule",
            req.method(),
            template.unwrap_or_default()
        ))
        .into_response();
    };
    if !s.auth.enabled {
        req.extensions_mut().insert(Principal::superuser());
        return next.run(req).await;
    }
    let verified =
        match bearer(req.headers()) {
            None => Err("missing token: send 'Authorization: Bearer TOKEN' (get one from POST /auth/login)"
                .to_owned()),
            Some(Err(e)) => Err(e.to_owned()),
            Some(Ok(token)) => s.auth.principal(token),
        };
    let principal = verified.as_ref().ok();
    let tenant = path_tenant(rule.path, req.uri().path()).map(str::to_owned);
    match decide(rule.access, principal, tenant.as_deref()) {
        Decision::Allow => {
            if let Some(p) = principal {
                // The host dimension: an agent writes only what its own hosts own.
                if let Err(e) =
                    crate::scope::agent_route(p, rule.access, rule.method, rule.path, req.uri().path())
                {
                    return e.into_response();
                }
                req.extensions_mut().insert(p.clone());
            }
            next.run(req).await
        }
        Decision::Unauthenticated => {
            let why = verified.err().unwrap_or_default();
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            resp
        }
        Decision::Forbidden => {
            let p = principal.expect("forbidden implies a principal");
            let roles: Vec<String> = p.roles.iter().map(|r| role_name(*r)).collect();
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} (roles {}) may not {} {}: needs {:?}",
                    p.name,
                    roles.join(","),
                    rule.method,
                    rule.path,
                    rule.access
                ),
            )
            .into_response()
        }
    }
}

async fn user(store: &dyn Store, keys: &Keys, name: &str) -> ApiResult<Option<UserRecord>> {
    match store.get(&format!("{}auth/users/{name}", keys.root())).await? {
        Some(kv) => Ok(serde_json::from_slice(&kv.value).ok()),
        None => Ok(None),
    }
}

/// A JSON error with `Retry-After` (seconds, at least one).
fn retry_after(status: StatusCode, message: String, wait: Duration) -> Response {
    let mut resp = ApiError::new(status, message).into_response();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp
}

/// Logs in. In order, each before any costlier work: the username's length (400), the failure
/// locks (429), then the password hash on the bounded hashing pool (503 when it is full). An
/// unknown user is hashed against a dummy hash, so timing does not reveal which names exist.
async fn login(
    State(s): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    if req.username.len() > MAX_USERNAME {
        return Err(ApiError::bad_request(format!(
            "username: {} bytes is longer than the {MAX_USERNAME} allowed",
            req.username.len()
        )));
    }
    let source: Option<IpAddr> = peer.map(|Extension(ConnectInfo(a))| a.ip());
    let locked = s.auth.failures.lock().unwrap_or_else(|p| p.into_inner()).check(
        &req.username,
        source,
        Instant::now(),
    );
    if let Err(l) = locked {
        let whom = match l.by {
            LockKind::Pair => "for this user from this address",
            LockKind::Source => "from this address",
            LockKind::User => "for this user",
        };
        let wait = l.wait.as_secs() + 1;
        return Ok(retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins {whom}; try again in {wait} s"),
            l.wait,
        ));
    }
    let found = user(&*s.store, &s.keys, &req.username).await?;
    // Hash even for an unknown user, so that timing does not reveal which names exist.
    let hash = found.as_ref().map_or(
        "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = req.password;
    let verified = s.auth.hashing.run(move || romana_auth::verify_password(&password, &hash)).await;
    let Ok(matches) = verified else {
        let (threads, queue) = s.auth.hashing.size();
        return Ok(retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many logins in progress ({threads} hashing, {queue} waiting); try again in 1 s"),
            Duration::from_secs(1),
        ));
    };
    let Some(u) = found.filter(|_| matches) else {
        s.auth.failures.lock().unwrap_or_else(|p| p.into_inner()).failed(
            &req.username,
            source,
            Instant::now(),
        );
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong username or password"));
    };
    s.auth.failures.lock().unwrap_or_else(|p| p.into_inner()).succeeded(
        &req.username,
        source,
        Instant::now(),
    );
    Ok(Json(s.auth.issue(&u)?).into_response())
}

async fn refresh(
    State(s): State<AppState>,
    Body(req): Body<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let claims = {
        let ring = s.auth.keys.read().unwrap_or_else(|p| p.into_inner());
        romana_auth::verify(&req.refresh_token, &ring.set, now(), TokenKind::Refresh)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?
    };
    let u = user(&*s.store, &s.keys, &claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "the user no longer exists"))?;
    Ok(Json(s.auth.issue(&u)?))
}

async fn public_keys(State(s): State<AppState>) -> Json<serde_json::Value> {
    let (kvs, _) = s.store.range(&format!("{}auth/keys/", s.keys.root())).await.unwrap_or_default();
    let keys: Vec<serde_json::Value> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<StoredKey>(&kv.value).ok())
        .filter(StoredKey::verifies)
        .filter_map(|r| {
            // Built from the public half alone, whatever else an old record holds.
            let public = r.public()?;
            let kid = romana_auth::KeySet::default().insert(public.clone());
            let mut k = serde_json::json!({"kid": kid, "alg": "EdDSA", "crv": "Ed25519", "x": b64_encode(&public), "created": r.created});
            if let Some(t) = r.retired {
                k["retired"] = t.into();
            }
            Some(k)
        })
        .collect();
    Json(serde_json::json!({ "keys": keys }))
}

async fn rotate(State(s): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let kid = s.auth.rotate_own(&*s.store, &s.keys).await?;
    Ok(Json(serde_json::json!({ "kid": kid })))
}

fn user_view(u: &UserRecord) -> User {
    User {
        name: u.name.clone(),
        roles: u.roles.iter().map(|r| role_name(*r)).collect(),
        tenants: u.tenants.clone(),
        hosts: u.hosts.clone(),
    }
}

async fn users(State(s): State<AppState>) -> ApiResult<Json<Vec<User>>> {
    let (kvs, _) = s.store.range(&format!("{}auth/users/", s.keys.root())).await?;
    Ok(Json(
        kvs.iter()
            .filter_map(|kv| serde_json::from_slice::<UserRecord>(&kv.value).ok())
            .map(|u| user_view(&u))
            .collect(),
    ))
}

async fn create_user(
    State(s): State<AppState>,
    Body(req): Body<UserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let mut problems = Vec::new();
    if req.name.is_empty()
        || req.name.len() > 64
        || !req.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        problems.push(format!("name: {:?} must be 1 to 64 characters from A-Z a-z 0-9 - _ . @", req.name));
    }
    if req.password.chars().count() < 12 {
        problems.push("password: at least 12 characters".into());
    }
    let mut roles = Vec::new();
    for r in &req.roles {
        match r.as_str() {
            "admin" => roles.push(Role::Admin),
            "service" => roles.push(Role::Service),
            "tenant" => roles.push(Role::Tenant),
            other => problems.push(format!("roles: {other:?} is not admin, service or tenant")),
        }
    }
    if roles.is_empty() {
        problems.push("roles: give at least one".into());
    }
    if roles.contains(&Role::Tenant) && req.tenants.is_empty() {
        problems.push("tenants: a tenant role needs the tenants it may act on".into());
    }
    if !req.hosts.is_empty() && (!roles.contains(&Role::Service) || roles.contains(&Role::Admin)) {
        problems.push("hosts: only a service user (not an admin) is bound to hosts".into());
    }
    for h in &req.hosts {
        if let Err(e) = romana_model::HostName::new(h.clone()) {
            problems.push(format!("hosts: {h:?}: {e}"));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid user", problems));
    }
    let rec = UserRecord {
        name: req.name.clone(),
        password_hash: s.auth.hash(&req.password),
        roles,
        tenants: req.tenants,
        hosts: req.hosts,
    };
    let key = format!("{}auth/users/{}", s.keys.root(), req.name);
    let r = s
        .store
        .txn(Txn::when(
            vec![Compare::absent(&key)],
            vec![Op::put(&key, serde_json::to_vec(&rec).expect("serializes"))],
        ))
        .await?;
    if !r.succeeded {
        return Err(ApiError::conflict(format!("user {} already exists", req.name)));
    }
    Ok((StatusCode::CREATED, Json(user_view(&rec))))
}

async fn delete_user(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let key = format!("{}auth/users/{name}", s.keys.root());
    let r = s
        .store
        .txn(Txn::when(
            vec![Compare::CreateRevision(key.clone(), romana_store::Cmp::Greater, 0)],
            vec![Op::delete(&key)],
        ))
        .await?;
    if r.succeeded {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("unknown user {name}")))
    }
}

async fn whoami(Extension(p): Extension<Principal>) -> Json<User> {
    Json(User {
        name: p.name.clone(),
        roles: p.roles.iter().map(|r| role_name(*r)).collect(),
        tenants: p.tenants.clone(),
        hosts: p.hosts.clone(),
    })
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/keys", get(public_keys))
        .route("/auth/keys/rotate", post(rotate))
        .route("/auth/users", get(users).post(create_user))
        .route("/auth/users/{user}", axum::routing::delete(delete_user))
        .route("/auth/whoami", get(whoami))
}
