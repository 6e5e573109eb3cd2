//! What a caller may watch: the resource prefixes each role may read through `GET /watch`, and
//! the checks of a requested prefix and of each streamed key against them. Pure: knows nothing of
//! HTTP or the store.
//!
//! An allowlist, not a denylist: a key layout added later stays unwatchable until it is named
//! here. `auth/` (users' password hashes, signing keys) is in no role's list.

use romana_auth::{Principal, Role};

/// What the `service` role reads through REST routes anyway (hosts, blocks, names, topology,
/// tenants, segments, policies, NetworkPolicies, endpoints, routes, liveness, the service
/// registry, configuration, VIPs), so watching them reveals nothing more. Agents watch `routes/`,
/// `endpoints/`, `policies/`, `netpols/`, `tenants/`, `segments/` and `vips/`.
pub const SERVICE_PREFIXES: &[&str] = &[
    "config/",
    "endpoints/",
    "ipam/",
    "liveness/",
    "netpols/",
    "policies/",
    "routes/",
    "segments/",
    "services/",
    "tenants/",
    "vips/",
];

/// The service role's prefixes plus romanad's own bookkeeping (counters, leader leases, when each
/// host was last seen). Still never `auth/`: an admin reads users through `GET /auth/users`
/// (without hashes) and public keys through `GET /auth/keys`.
pub const ADMIN_PREFIXES: &[&str] = &[
    "config/",
    "counters/",
    "endpoints/",
    "ipam/",
    "leader/",
    "liveness/",
    "liveness-seen/",
    "netpols/",
    "policies/",
    "routes/",
    "segments/",
    "services/",
    "tenants/",
    "vips/",
];

/// Why a requested prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// 400: not a key prefix at all.
    #[error(
        "prefix {0:?} is not a key prefix below the store prefix (no \"..\", no leading \"/\", no control characters)"
    )]
    Malformed(String),
    /// 403: a prefix outside what the caller may read.
    #[error("{who} may not watch {prefix:?}; it may watch {allowed}")]
    Forbidden { who: String, prefix: String, allowed: String },
}

/// The prefixes `p` may watch (the union over its roles; empty for a tenant-only user, whose
/// objects the watch cannot yet filter by tenant).
pub fn allowed(p: &Principal) -> &'static [&'static str] {
    if p.roles.contains(&Role::Admin) {
        ADMIN_PREFIXES
    } else if p.roles.contains(&Role::Service) {
        SERVICE_PREFIXES
    } else {
        &[]
    }
}

/// Checks a requested prefix: it must lie inside an allowed prefix (`routes/h1`) or lead to at
/// least one (`""`, `ipam` for `ipam/`); then the stream filters every key with [`key_allowed`].
pub fn check(p: &Principal, prefix: &str) -> Result<(), ScopeError> {
    if prefix.contains("..") || prefix.starts_with('/') || prefix.chars().any(char::is_control) {
        return Err(ScopeError::Malformed(prefix.to_owned()));
    }
    let allowed = allowed(p);
    if allowed.iter().any(|a| prefix.starts_with(a) || a.starts_with(prefix)) {
        return Ok(());
    }
    Err(ScopeError::Forbidden {
        who: p.name.clone(),
        prefix: prefix.to_owned(),
        allowed: if allowed.is_empty() { "nothing".to_owned() } else { allowed.join(", ") },
    })
}

/// Whether a key (relative to the store prefix) may be streamed to a caller allowed `allowed`.
pub fn key_allowed(allowed: &[&str], key: &str) -> bool {
    allowed.iter().any(|a| key.starts_with(a))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(roles: &[Role]) -> Principal {
        Principal { name: "x".into(), roles: roles.to_vec(), tenants: vec!["red".into()], hosts: vec![] }
    }

    fn check_all(who: &Principal, cases: &[(&str, Result<(), &str>)]) {
        for (prefix, expect) in cases {
            let got = check(who, prefix).map_err(|e| match e {
                ScopeError::Malformed(_) => "malformed",
                ScopeError::Forbidden { .. } => "forbidden",
            });
            assert_eq!(got, *expect, "{:?} watching {prefix:?}", who.roles);
        }
    }

    #[test]
    fn prefixes_per_role() {
        let svc = p(&[Role::Service]);
        check_all(
            &svc,
            &[
                ("", Ok(())),
                ("routes/h1", Ok(())),
                ("ipam", Ok(())),
                ("ipam/names/", Ok(())),
                ("auth/", Err("forbidden")),
                ("auth/keys/", Err("forbidden")),
                ("auth", Err("forbidden")),
                ("a", Err("forbidden")),
                ("counters/", Err("forbidden")),
                ("../", Err("malformed")),
                ("routes/../auth/", Err("malformed")),
                ("/romana/auth/", Err("malformed")),
                ("routes/\n", Err("malformed")),
            ],
        );
        let admin = p(&[Role::Admin]);
        check_all(
            &admin,
            &[
                ("", Ok(())),
                ("counters/", Ok(())),
                ("auth/", Err("forbidden")),
                ("auth/users/", Err("forbidden")),
            ],
        );
        let tenant = p(&[Role::Tenant]);
        check_all(&tenant, &[("", Err("forbidden")), ("tenants/red", Err("forbidden"))]);
    }

    #[test]
    fn no_role_streams_auth_keys() {
        for who in
            [p(&[Role::Admin]), p(&[Role::Service]), p(&[Role::Tenant]), p(&[Role::Admin, Role::Tenant])]
        {
            let a = allowed(&who);
            for key in ["auth/keys/abc", "auth/users/admin", "auth/", "authx"] {
                assert!(!key_allowed(a, key), "{:?} would see {key}", who.roles);
            }
        }
        assert!(key_allowed(SERVICE_PREFIXES, "routes/h1"));
        assert!(!key_allowed(SERVICE_PREFIXES, "leader/route-manager"));
    }

    #[test]
    fn the_error_names_prefix_and_allowlist() {
        let e = check(&p(&[Role::Service]), "auth/keys/").unwrap_err().to_string();
        assert!(e.contains("\"auth/keys/\"") && e.contains("routes/"), "{e}");
        let e = check(&p(&[Role::Tenant]), "").unwrap_err().to_string();
        assert!(e.contains("may watch nothing"), "{e}");
    }
}
