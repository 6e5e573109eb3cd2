//! Tenant and host scoping: what a principal may see and change of tenant-owned objects, and
//! which hosts' records an agent may change, asked in this one place by the auth middleware and
//! by every handler of a `TenantFiltered`, `TenantBody` or `TenantPath` route or of a write an
//! agent makes. Knows nothing of the store or of HTTP beyond the error it answers.
//!
//! The tenant rules: admin and service see everything; a tenant user sees only objects of its
//! own tenants. Another tenant's object is "not found" on reads (404, never 403: that would
//! confirm it exists), a write naming another tenant is 403 naming only what the request itself
//! named, and no message shown to a tenant user names another tenant's objects.
//!
//! The host rules: a `service` user bound to hosts is an agent. It reads what any service reads,
//! and writes only its own hosts' records: the host's registration, liveness and tags, addresses
//! on the host, and endpoint records (and their labels) on the host. Every other write (tenants,
//! segments, policies, NetworkPolicies) is 403 before the handler runs (`agent_route`); the
//! handlers of the writes it may make check the host they find in the body or in the stored
//! record (`require_host`). Pod records are the one read an agent is limited in: it reads only
//! its own hosts' pods (`pods.rs`), since it needs no other and labels may be private. Another host's object is 403, not 404: an agent may read every host's
//! records, so hiding them would hide nothing. An unbound service user (a controller) keeps every
//! service right.

use axum::http::StatusCode;
use romana_api::policy::{Policy, PolicyPeer};
use romana_auth::{Access, Principal};

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

/// Whether `p` may change records of `host` (everyone but an agent of other hosts).
pub fn may_host(p: &Principal, host: &str) -> bool {
    p.may_host(host)
}

/// `Ok` when `p` may change records of `host`, else 403 naming the host (host names are no
/// secret to an agent, which lists them).
pub fn require_host(p: &Principal, host: &str) -> Result<(), ApiError> {
    if may_host(p, host) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is the agent of host(s) {} and may not act for host {host:?}",
                p.name,
                p.hosts.join(",")
            ),
        ))
    }
}

/// How the writes an agent may make are checked: by the `{host}` of the path here, or by the
/// handler, which finds the host in the request body or in the stored record.
enum AgentWrite {
    PathHost,
    InHandler,
}

/// The writes an agent makes (registration, heartbeat, tags, removal of its host; address
/// allocation and release; endpoint records, a dual-stack endpoint's both at once, and their
/// labels); every other write is not an agent's.
fn agent_write(method: &str, template: &str) -> Option<AgentWrite> {
    match (method, template) {
        ("PUT", "/hosts/{host}/alive" | "/hosts/{host}/tags") | ("DELETE", "/hosts/{host}") => {
            Some(AgentWrite::PathHost)
        }
        ("POST", "/hosts" | "/address" | "/addresses" | "/address-stacks")
        | ("DELETE", "/address" | "/addresses/{name}" | "/endpoints/{name}")
        | ("PUT", "/endpoints/{name}" | "/endpoints/{name}/labels" | "/endpoint-stacks/{name}") => {
            Some(AgentWrite::InHandler)
        }
        _ => None,
    }
}

/// The `{param}` segment of `path` under the route template `template`.
fn path_param<'a>(template: &str, path: &'a str, param: &str) -> Option<&'a str> {
    template.split('/').zip(path.split('/')).find(|(t, _)| *t == param).map(|(_, p)| p)
}

/// The host dimension of a route, decided before the handler runs: an agent may read what a
/// service reads, make the writes of `agent_write` (for its own hosts), and nothing else.
/// `template` is the route as declared, `path` the request's (raw, so an encoded host name is
/// refused rather than decoded into a match: it fails closed).
pub fn agent_route(
    p: &Principal,
    access: Access,
    method: &str,
    template: &str,
    path: &str,
) -> Result<(), ApiError> {
    if !p.is_agent() || method == "GET" || access == Access::Public {
        return Ok(());
    }
    match agent_write(method, template) {
        Some(AgentWrite::InHandler) => Ok(()),
        Some(AgentWrite::PathHost) => {
            require_host(p, path_param(template, path, "{host}").unwrap_or_default())
        }
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is the agent of host(s) {} and may not {method} {template}: an agent changes only its \
                 own hosts' records; tenants, segments and policies are a controller's or an admin's",
                p.name,
                p.hosts.join(",")
            ),
        )),
    }
}

/// The tenant a policy target (`applied_to` entry) confines the policy to, as the policy core
/// reads it: `None` for `dest` (local, host) and CIDR targets, which reach beyond any one tenant.
pub fn target_tenant(e: &PolicyPeer) -> Option<&str> {
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
        Principal {
            name: "alice".into(),
            roles: vec![Role::Tenant],
            tenants: vec!["red".into()],
            hosts: vec![],
        }
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
            let admin =
                Principal { name: "a".into(), roles: vec![Role::Admin], tenants: vec![], hosts: vec![] };
            assert!(owns_policy(&admin, &policy(targets)), "admin owns all");
        }
    }

    fn agent(hosts: &[&str]) -> Principal {
        Principal {
            name: "agent-h1".into(),
            roles: vec![Role::Service],
            tenants: vec![],
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn an_agent_writes_only_its_own_hosts_records() {
        let h1 = agent(&["h1"]);
        fn ok(p: &Principal, access: Access, method: &str, template: &str, path: &str) -> bool {
            agent_route(p, access, method, template, path).is_ok()
        }
        // Its own host's liveness, tags and removal; another host's: no.
        for (method, template, own, other) in [
            ("PUT", "/hosts/{host}/alive", "/hosts/h1/alive", "/hosts/h2/alive"),
            ("PUT", "/hosts/{host}/tags", "/hosts/h1/tags", "/hosts/h2/tags"),
            ("DELETE", "/hosts/{host}", "/hosts/h1", "/hosts/h2"),
        ] {
            assert!(ok(&h1, Access::Service, method, template, own), "{method} {own}");
            assert!(!ok(&h1, Access::Service, method, template, other), "{method} {other}");
            // An encoded name is refused, not decoded into a match.
            let encoded = own.replace("h1", "%68%31");
            assert!(!ok(&h1, Access::Service, method, template, &encoded), "{method}");
        }
        // Writes whose host is in the body or the record: the handler decides.
        for (method, template) in [
            ("POST", "/hosts"),
            ("POST", "/addresses"),
            ("POST", "/address-stacks"),
            ("DELETE", "/addresses/{name}"),
        ] {
            assert!(ok(&h1, Access::Service, method, template, template), "{method} {template}");
        }
        // Cluster-wide writes are not an agent's; reads and public routes are.
        for (method, template) in [
            ("POST", "/tenants"),
            ("PUT", "/tenants/{tenant}"),
            ("DELETE", "/tenants/{tenant}"),
            ("POST", "/tenants/{tenant}/segments"),
            ("POST", "/policies"),
            ("PUT", "/policies/{id}"),
            ("DELETE", "/policies"),
            ("POST", "/networkpolicies"),
            ("DELETE", "/networkpolicies/{tenant}/{name}"),
            ("PUT", "/pods/{tenant}/{name}"),
            ("DELETE", "/pods/{tenant}/{name}"),
        ] {
            assert!(!ok(&h1, Access::Service, method, template, template), "{method} {template}");
            assert!(ok(&agent(&[]), Access::Service, method, template, template), "a controller: {template}");
        }
        assert!(ok(&h1, Access::Service, "GET", "/policies", "/policies"));
        assert!(ok(&h1, Access::Public, "POST", "/auth/refresh", "/auth/refresh"));
        assert!(may_host(&h1, "h1") && !may_host(&h1, "h2") && may_host(&agent(&[]), "h2"));
        assert!(require_host(&h1, "h2").is_err_and(|e| e.status == StatusCode::FORBIDDEN));
    }
}
