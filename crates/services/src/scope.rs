//! Tenant scoping: what a principal may see and change of tenant-owned objects, asked in this
//! one place by every handler of a `TenantFiltered`, `TenantBody` or `TenantPath` route. Knows
//! nothing of the store or of HTTP beyond the error it answers.
//!
//! The rules: admin and service see everything; a tenant user sees only objects of its own
//! tenants. Another tenant's object is "not found" on reads (404, never 403: that would confirm
//! it exists), a write naming another tenant is 403 naming only what the request itself named,
//! and no message shown to a tenant user names another tenant's objects.

use axum::http::StatusCode;
use romana_api::policy::{Endpoint, Policy};
use romana_auth::Principal;

use crate::error::ApiError;

/// Whether `p` may see and change objects of `tenant` (the one question; `Principal::may`).
pub fn visible(p: &Principal, tenant: &str) -> bool {
    p.may(tenant)
}

/// 403 for a request that names a tenant `p` may not act for (the name is the caller's own input).
pub fn forbid_tenant(p: &Principal, tenant: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, format!("{} may not act for tenant {tenant:?}", p.name))
}

/// `Ok` when `p` may act for `tenant`, else 403.
pub fn require(p: &Principal, tenant: &str) -> Result<(), ApiError> {
    if visible(p, tenant) { Ok(()) } else { Err(forbid_tenant(p, tenant)) }
}

/// The tenant a policy target (`applied_to` entry) confines the policy to, as the policy core
/// reads it: `None` for `dest` (local, host) and CIDR targets, which reach beyond any one tenant.
pub fn target_tenant(e: &Endpoint) -> Option<&str> {
    if !e.dest.is_empty() || !e.cidr.is_empty() {
        return None;
    }
    let name = if e.tenant.is_empty() { e.tenant_id.as_ref().and_then(|v| v.as_str())? } else { &e.tenant };
    (!name.is_empty()).then_some(name)
}

/// Whether `p` owns `policy`: admin and service always; a tenant user only when every target is
/// one of its tenants by name (a policy on a CIDR, on all endpoints or on the host is not a
/// tenant's to write, nor to see).
pub fn owns_policy(p: &Principal, policy: &Policy) -> bool {
    p.is_privileged()
        || (!policy.applied_to.is_empty()
            && policy.applied_to.iter().all(|e| target_tenant(e).is_some_and(|t| visible(p, t))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use romana_auth::Role;

    fn red() -> Principal {
        Principal { name: "alice".into(), roles: vec![Role::Tenant], tenants: vec!["red".into()] }
    }

    fn policy(targets: serde_json::Value) -> Policy {
        serde_json::from_value(serde_json::json!({
            "id": "p", "applied_to": targets,
            "ingress": [{"peers": [{"peer": "any"}], "rules": [{"protocol": "any"}]}]
        }))
        .expect("a policy")
    }

    #[test]
    fn a_tenant_owns_only_policies_confined_to_its_tenants() {
        let cases = [
            (serde_json::json!([{"tenant": "red"}]), true),
            (serde_json::json!([{"tenant": "red", "segment": "web"}]), true),
            (serde_json::json!([{"tenant_id": "red"}]), true),
            (serde_json::json!([{"tenant": "red"}, {"tenant": "blue"}]), false),
            (serde_json::json!([{"tenant": "blue"}]), false),
            (serde_json::json!([{"cidr": "0.0.0.0/0"}]), false),
            (serde_json::json!([{"tenant": "red", "cidr": "0.0.0.0/0"}]), false),
            (serde_json::json!([{"dest": "local"}]), false),
            (serde_json::json!([{"dest": "host"}]), false),
            (serde_json::json!([{"tenant_id": 7}]), false),
            (serde_json::json!([]), false),
        ];
        for (targets, expect) in cases {
            assert_eq!(owns_policy(&red(), &policy(targets.clone())), expect, "{targets}");
            let admin = Principal { name: "a".into(), roles: vec![Role::Admin], tenants: vec![] };
            assert!(owns_policy(&admin, &policy(targets)), "admin owns all");
        }
    }
}
