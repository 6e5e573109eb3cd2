//! The Authentication service's HTTP handlers: login (with the failure locks and the bounded
//! hashing pool), refresh, the published keys, rotation, users and whoami. The state they act on
//! is `auth_state.rs`; the middleware is `authenticate.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use romana_api::records::{StoredKeyRecord, UserRecord};
use romana_api::rest::{LoginRequest, RefreshRequest, TokenResponse, User, UserRequest};
use romana_auth::{Principal, Role, b64_encode};
use romana_store::{Compare, Op, Txn};

pub use crate::auth_state::{AuthState, MAX_FAILURES, MAX_USERNAME, REFRESH_TTL, now};
use crate::auth_state::{public_of, role_name, roles_of, user, verifies};
pub use crate::authenticate::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::login_limit::LockKind;
use crate::state::AppState;

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
    if let Err(l) = s.auth.login_locked(&req.username, source, Instant::now()) {
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
    let matches = match s.auth.verify_password(req.password, hash).await {
        Ok(m) => m,
        Err((threads, queue)) => {
            return Ok(retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many logins in progress ({threads} hashing, {queue} waiting); try again in 1 s"),
                Duration::from_secs(1),
            ));
        }
    };
    let Some(u) = found.filter(|_| matches) else {
        s.auth.login_outcome(&req.username, source, false, Instant::now());
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong username or password"));
    };
    s.auth.login_outcome(&req.username, source, true, Instant::now());
    Ok(Json(s.auth.issue(&u)?).into_response())
}

async fn refresh(
    State(s): State<AppState>,
    Body(req): Body<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let claims = s.auth.refresh_claims(&req.refresh_token)?;
    let u = user(&*s.store, &s.keys, &claims.sub)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "the user no longer exists"))?;
    Ok(Json(s.auth.issue(&u)?))
}

async fn public_keys(State(s): State<AppState>) -> Json<serde_json::Value> {
    let (kvs, _) = s.store.range(&s.keys.auth_keys()).await.unwrap_or_default();
    let keys: Vec<serde_json::Value> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<StoredKeyRecord>(&kv.value).ok())
        .filter(verifies)
        .filter_map(|r| {
            // Built from the public half alone, whatever else an old record holds.
            let public = public_of(&r)?;
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
    User { name: u.name.clone(), roles: u.roles.clone(), tenants: u.tenants.clone(), hosts: u.hosts.clone() }
}

async fn users(State(s): State<AppState>) -> ApiResult<Json<Vec<User>>> {
    let (kvs, _) = s.store.range(&s.keys.auth_users()).await?;
    Ok(Json(
        kvs.iter()
            .filter_map(|kv| serde_json::from_slice::<UserRecord>(&kv.value).ok())
            .filter(|u| roles_of(u).is_some())
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
        roles: roles.iter().map(|r| role_name(*r)).collect(),
        tenants: req.tenants,
        hosts: req.hosts,
    };
    let key = s.keys.auth_user(&req.name);
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
    let key = s.keys.auth_user(&name);
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
