//! The authentication middleware: every matched route is checked against its access rule in the
//! route table before its handler runs; the handler finds the `Principal` in the request.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use romana_auth::{Decision, Principal, decide};

use crate::auth_state::role_name;
use crate::error::ApiError;
use crate::state::AppState;

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
