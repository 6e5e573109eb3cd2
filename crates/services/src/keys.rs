//! The key layout under the configured prefix (default `/romana/`). One small key per object.

use romana_model::Cidr;

/// What a stored key names (`Keys::classify`); `Other` for everything the IPAM replica does not
/// read (names, tokens, policies, keys under another prefix...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOf<'a> {
    Topology,
    Host(&'a str),
    Block,
    /// The blackout's CIDR as a key segment (`10.0.0.0_24`).
    Blackout(&'a str),
    Tenant(&'a str),
    Segment,
    Other,
}

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// A CIDR as a key segment: `10.0.0.0/29` becomes `10.0.0.0_29`.
pub fn cidr_segment(c: &Cidr) -> String {
    c.to_string().replace('/', "_")
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    pub fn root(&self) -> &str {
        &self.prefix
    }

    /// The key of `path` below the prefix (a watch's resource prefix, e.g. `endpoints/`).
    pub fn under(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// What a stored key names, for readers that dispatch on keys (the IPAM replica): the
    /// layout's one parser, beside the builders below.
    pub fn classify<'a>(&self, key: &'a str) -> KeyOf<'a> {
        let Some(rel) = key.strip_prefix(&self.prefix) else { return KeyOf::Other };
        if rel == "ipam/topology" {
            KeyOf::Topology
        } else if let Some(name) = rel.strip_prefix("ipam/hosts/") {
            KeyOf::Host(name)
        } else if rel.starts_with("ipam/blocks/") {
            KeyOf::Block
        } else if let Some(c) = rel.strip_prefix("ipam/blackouts/") {
            KeyOf::Blackout(c)
        } else if let Some(name) = rel.strip_prefix("tenants/") {
            KeyOf::Tenant(name)
        } else if rel.starts_with("segments/") {
            KeyOf::Segment
        } else {
            KeyOf::Other
        }
    }

    /// The key without the prefix (as shown to watch clients).
    pub fn relative<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(&self.prefix).unwrap_or(key)
    }

    pub fn ipam(&self) -> String {
        format!("{}ipam/", self.prefix)
    }
    pub fn topology(&self) -> String {
        format!("{}ipam/topology", self.prefix)
    }
    pub fn hosts(&self) -> String {
        format!("{}ipam/hosts/", self.prefix)
    }
    pub fn host(&self, name: &str) -> String {
        format!("{}ipam/hosts/{name}", self.prefix)
    }
    pub fn host_ip(&self, ip: &str) -> String {
        format!("{}ipam/host-ips/{ip}", self.prefix)
    }
    pub fn blocks(&self) -> String {
        format!("{}ipam/blocks/", self.prefix)
    }
    pub fn block(&self, network: &str, cidr: &Cidr) -> String {
        format!("{}ipam/blocks/{network}/{}", self.prefix, cidr_segment(cidr))
    }
    pub fn name(&self, name: &str) -> String {
        format!("{}ipam/names/{name}", self.prefix)
    }
    /// The global key request tokens had before they were kept per tenant (read, never written).
    pub fn token(&self, token: &str) -> String {
        format!("{}ipam/tokens/{token}", self.prefix)
    }
    /// A request token of `tenant`: tokens are per tenant, so one tenant cannot reuse (or
    /// poison) another's.
    pub fn tenant_token(&self, tenant: &str, token: &str) -> String {
        format!("{}ipam/tokens/{tenant}/{token}", self.prefix)
    }
    pub fn blackouts(&self) -> String {
        format!("{}ipam/blackouts/", self.prefix)
    }
    pub fn blackout(&self, cidr: &Cidr) -> String {
        format!("{}ipam/blackouts/{}", self.prefix, cidr_segment(cidr))
    }
    pub fn tenants(&self) -> String {
        format!("{}tenants/", self.prefix)
    }
    pub fn tenant(&self, name: &str) -> String {
        format!("{}tenants/{name}", self.prefix)
    }
    pub fn segments(&self, tenant: &str) -> String {
        format!("{}segments/{tenant}/", self.prefix)
    }
    pub fn segment(&self, tenant: &str, name: &str) -> String {
        format!("{}segments/{tenant}/{name}", self.prefix)
    }
    pub fn all_segments(&self) -> String {
        format!("{}segments/", self.prefix)
    }
    pub fn tenant_counter(&self) -> String {
        format!("{}counters/tenant-number", self.prefix)
    }
    pub fn policies(&self) -> String {
        format!("{}policies/", self.prefix)
    }
    pub fn policy(&self, id: &str) -> String {
        format!("{}policies/{id}", self.prefix)
    }
    pub fn endpoints(&self) -> String {
        format!("{}endpoints/", self.prefix)
    }
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}endpoints/{name}", self.prefix)
    }
    pub fn pods(&self) -> String {
        format!("{}pods/", self.prefix)
    }
    /// The Kubernetes controller's record of one pod.
    pub fn pod(&self, namespace: &str, name: &str) -> String {
        format!("{}pods/{namespace}/{name}", self.prefix)
    }
    /// The endpoints registered for one pod (a JSON list of endpoint names): the index a pod
    /// record's change follows to its endpoints without a scan, and the key both sides of the
    /// join compare so that neither misses the other.
    pub fn pod_endpoints(&self, namespace: &str, name: &str) -> String {
        format!("{}pod-endpoints/{namespace}/{name}", self.prefix)
    }
    pub fn netpols(&self) -> String {
        format!("{}netpols/", self.prefix)
    }
    pub fn netpol(&self, namespace: &str, name: &str) -> String {
        format!("{}netpols/{namespace}/{name}", self.prefix)
    }
    pub fn liveness_prefix(&self) -> String {
        format!("{}liveness/", self.prefix)
    }
    pub fn liveness(&self, host: &str) -> String {
        format!("{}liveness/{host}", self.prefix)
    }
    pub fn liveness_seen_prefix(&self) -> String {
        format!("{}liveness-seen/", self.prefix)
    }
    pub fn liveness_seen(&self, host: &str) -> String {
        format!("{}liveness-seen/{host}", self.prefix)
    }
    /// The last report each host's agent sent with its heartbeat (`GET /check`'s kernel view).
    pub fn host_reports(&self) -> String {
        format!("{}liveness-report/", self.prefix)
    }
    pub fn host_report(&self, host: &str) -> String {
        format!("{}liveness-report/{host}", self.prefix)
    }
    pub fn routes(&self, host: &str) -> String {
        format!("{}routes/{host}", self.prefix)
    }
    pub fn leader(&self, role: &str) -> String {
        format!("{}leader/{role}", self.prefix)
    }
    pub fn services(&self) -> String {
        format!("{}services/", self.prefix)
    }
    pub fn service(&self, name: &str, instance: &str) -> String {
        format!("{}services/{name}/{instance}", self.prefix)
    }
    pub fn auth_keys(&self) -> String {
        format!("{}auth/keys/", self.prefix)
    }
    pub fn auth_key(&self, kid: &str) -> String {
        format!("{}auth/keys/{kid}", self.prefix)
    }
    pub fn auth_users(&self) -> String {
        format!("{}auth/users/", self.prefix)
    }
    pub fn auth_user(&self, name: &str) -> String {
        format!("{}auth/users/{name}", self.prefix)
    }
    pub fn vips(&self) -> String {
        format!("{}vips/", self.prefix)
    }
    /// A VIP by its address (one spelling: the parsed address's).
    pub fn vip(&self, address: &str) -> String {
        format!("{}vips/{address}", self.prefix)
    }
    pub fn configs(&self) -> String {
        format!("{}config/", self.prefix)
    }
    pub fn config(&self, service: &str) -> String {
        format!("{}config/{service}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, want: KeyOf<'_>) {
        assert_eq!(Keys::new("/romana").classify(key), want, "{key}");
    }

    #[test]
    fn classify_reads_what_the_builders_write() {
        let k = Keys::new("/romana/");
        let cidr: Cidr = "10.0.0.0/28".parse().expect("cidr");
        check(&k.topology(), KeyOf::Topology);
        check(&k.host("h1"), KeyOf::Host("h1"));
        check(&k.block("pods", &cidr), KeyOf::Block);
        check(&k.blackout(&cidr), KeyOf::Blackout("10.0.0.0_28"));
        check(&k.tenant("red"), KeyOf::Tenant("red"));
        check(&k.segment("red", "web"), KeyOf::Segment);
        for other in [
            k.name("p1"),
            k.host_ip("192.168.0.1"),
            k.policy("p"),
            k.auth_user("admin"),
            k.under("endpoints/"),
        ] {
            check(&other, KeyOf::Other);
        }
        check("/elsewhere/ipam/topology", KeyOf::Other);
        check("ipam/topology", KeyOf::Other);
    }
}
