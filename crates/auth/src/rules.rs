//! Access rules: what each route demands, and the decision for a principal.

use crate::token::{Principal, Role};

/// What a route demands. Every route declares one (in romanad's route table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (health, login, the service index, public keys).
    Public,
    /// Any valid token.
    Authenticated,
    /// Admin only.
    Admin,
    /// Admin or service.
    Service,
    /// Any role; the route reveals nothing tenant-specific.
    Read,
    /// The `{tenant}` in the path must be one of the principal's tenants (admin and service: any).
    TenantPath,
    /// The tenant named in the request body must be one of the principal's (checked by the handler).
    TenantBody,
    /// Lists show only the principal's tenants; single objects of other tenants are not found
    /// (checked by the handler).
    TenantFiltered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no token, or a bad one.
    Unauthenticated,
    /// 403: a valid token without the right.
    Forbidden,
}

/// The decision before the handler runs. `principal` is `None` without a valid token.
pub fn decide(access: Access, principal: Option<&Principal>, path_tenant: Option<&str>) -> Decision {
    if access == Access::Public {
        return Decision::Allow;
    }
    let Some(p) = principal else { return Decision::Unauthenticated };
    let allowed = match access {
        Access::Public | Access::Authenticated | Access::Read => true,
        Access::Admin => p.is_admin(),
        Access::Service => p.is_privileged(),
        Access::TenantPath => path_tenant.is_some_and(|t| p.may(t)),
        Access::TenantBody | Access::TenantFiltered => p.is_privileged() || p.roles.contains(&Role::Tenant),
    };
    if allowed { Decision::Allow } else { Decision::Forbidden }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(roles: &[Role], tenants: &[&str]) -> Principal {
        Principal {
            name: "x".into(),
            roles: roles.to_vec(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            hosts: vec![],
        }
    }

    #[test]
    fn decisions() {
        let admin = p(&[Role::Admin], &[]);
        let svc = p(&[Role::Service], &[]);
        let red = p(&[Role::Tenant], &["red"]);
        assert_eq!(decide(Access::Public, None, None), Decision::Allow);
        assert_eq!(decide(Access::Read, None, None), Decision::Unauthenticated);
        assert_eq!(decide(Access::Admin, Some(&svc), None), Decision::Forbidden);
        assert_eq!(decide(Access::Admin, Some(&admin), None), Decision::Allow);
        assert_eq!(decide(Access::Service, Some(&red), None), Decision::Forbidden);
        assert_eq!(decide(Access::Service, Some(&svc), None), Decision::Allow);
        assert_eq!(decide(Access::TenantPath, Some(&red), Some("red")), Decision::Allow);
        assert_eq!(decide(Access::TenantPath, Some(&red), Some("blue")), Decision::Forbidden);
        assert_eq!(decide(Access::TenantPath, Some(&svc), Some("blue")), Decision::Allow);
        assert_eq!(decide(Access::TenantBody, Some(&red), None), Decision::Allow);
        assert_eq!(decide(Access::TenantBody, Some(&p(&[], &[])), None), Decision::Forbidden);
    }
}
