//! The IPAM replica's view: the pure `Ipam` projected from the stored records (topology, hosts,
//! blocks, blackouts, tenant and segment numbers), with the revisions that make replaying a
//! record idempotent. Pure: no I/O, no clock; the actor (`ipam_sync.rs`) feeds it what the store
//! says and writes what it decides.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use romana_api::records::{BlockRecord, HostRecord, SegmentRecord, TenantRecord};
use romana_api::topology::TopologyRequest;
use romana_ipam::spec::{HostSpec, TopologySpec};
use romana_ipam::{AllocRequest, Allocation, HostOrigin, Ipam, IpamError};
use romana_model::{Cidr, HostName, NetworkName, SegmentName, TenantName};
use romana_store::{EventKind, KeyValue, Revision};

use crate::keys::{KeyOf, Keys};

/// The replica's view: readers take it briefly; only the actor writes.
#[derive(Debug)]
pub struct Synced {
    pub ipam: Ipam,
    /// The highest store revision applied.
    pub revision: Revision,
    /// The store revision this view was loaded at (`loaded`; 0 for an empty one): a reload
    /// makes a new `Ipam`, whose counters start over (`routes_mark`).
    pub loaded_at: Revision,
    /// Block records as stored, with their revision: the base of every write to a block.
    pub(crate) committed: HashMap<String, (Revision, BlockRecord)>,
    /// Revision applied per key, so that a late watch event never undoes a newer refresh.
    pub(crate) applied: HashMap<String, Revision>,
    pub(crate) tenant_numbers: HashMap<String, u32>,
    pub(crate) segment_numbers: HashMap<(String, String), u32>,
    pub(crate) topology_json: Option<TopologyRequest>,
}

impl Synced {
    pub(crate) fn empty() -> Synced {
        Synced {
            ipam: Ipam::new(TopologySpec::default()).expect("the empty topology is valid"),
            revision: 0,
            loaded_at: 0,
            committed: HashMap::new(),
            applied: HashMap::new(),
            tenant_numbers: HashMap::new(),
            segment_numbers: HashMap::new(),
            topology_json: None,
        }
    }

    /// What the route manager compares between passes: while it stands still, no host's route
    /// set can have moved but through liveness (`Ipam::routes_revision`, counted within one
    /// `Ipam`, whatever changed it: a stored record applied or the actor's own allocation; and
    /// the load the `Ipam` came from). An address allocated in a block already held leaves it,
    /// so most pod starts cost the route manager nothing (each was a pass over every host's
    /// stamp, and a comparison of every set, issue 22).
    pub fn routes_mark(&self) -> (Revision, u64) {
        (self.loaded_at, self.ipam.routes_revision())
    }

    /// The topology as posted (not as rendered), if any.
    pub fn topology_request(&self) -> Option<&TopologyRequest> {
        self.topology_json.as_ref()
    }

    pub(crate) fn record_for(&self, a: &Allocation, keys: &Keys) -> (String, Revision, BlockRecord) {
        let key = keys.block(a.network.as_str(), &a.block);
        match self.committed.get(&key) {
            Some((rev, rec)) => (key, *rev, rec.clone()),
            None => (
                key,
                0,
                BlockRecord {
                    network: a.network.to_string(),
                    cidr: a.block.to_string(),
                    tenant: a.tenant.to_string(),
                    segment: a.segment.to_string(),
                    host: a.host.to_string(),
                    addresses: BTreeMap::new(),
                },
            ),
        }
    }

    pub(crate) fn host_record(&self, name: &HostName) -> Option<HostRecord> {
        let h = self.ipam.hosts().into_iter().find(|h| &h.name == name)?;
        Some(HostRecord {
            name: h.name.to_string(),
            ip: h.ip.to_string(),
            ipv6: h.ipv6.map(|a| a.to_string()),
            agent_port: h.agent_port,
            tags: h.tags,
            origin: match h.origin {
                HostOrigin::Topology => "topology".into(),
                HostOrigin::Dynamic => "dynamic".into(),
            },
            placements: h.placement.networks.iter().map(|(n, p, _)| (n.to_string(), p.clone())).collect(),
        })
    }

    /// Applies one stored key-value (a watch event, a refresh or the initial load).
    pub(crate) fn apply(&mut self, keys: &Keys, kind: EventKind, kv: &KeyValue) {
        self.revision = self.revision.max(kv.mod_revision);
        // Only these keys shape the IPAM; names, tokens, policies and the rest are not tracked.
        let of = keys.classify(&kv.key);
        if of == KeyOf::Other {
            return;
        }
        if self.applied.get(&kv.key).is_some_and(|r| *r >= kv.mod_revision) {
            return;
        }
        self.applied.insert(kv.key.clone(), kv.mod_revision);
        let put = kind == EventKind::Put;
        let result: Result<(), String> = match of {
            KeyOf::Topology => self.apply_topology(put, &kv.value),
            KeyOf::Host(name) => self.apply_host(name, put, &kv.value),
            KeyOf::Block => self.apply_block(&kv.key, put, &kv.value),
            KeyOf::Blackout(c) => match c.replacen('_', "/", 1).parse::<Cidr>() {
                Ok(cidr) if put => self.ipam.blackout(cidr).map_err(|e| e.to_string()),
                Ok(cidr) => self
                    .ipam
                    .unblackout(cidr)
                    .or_else(|e| if matches!(e, IpamError::NotBlackedOut { .. }) { Ok(()) } else { Err(e) })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            KeyOf::Tenant(t) => {
                if put && let Ok(rec) = serde_json::from_slice::<TenantRecord>(&kv.value) {
                    self.tenant_numbers.insert(t.to_owned(), rec.number);
                    self.push_numbers(t, None);
                }
                Ok(())
            }
            KeyOf::Segment => {
                if put && let Ok(rec) = serde_json::from_slice::<SegmentRecord>(&kv.value) {
                    self.segment_numbers.insert((rec.tenant.clone(), rec.name.clone()), rec.number);
                    self.push_numbers(&rec.tenant, Some(&rec.name));
                }
                Ok(())
            }
            KeyOf::Other => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(key = %kv.key, error = %e, "could not apply a stored change to the IPAM replica");
        }
    }

    pub(crate) fn push_numbers(&mut self, tenant: &str, segment: Option<&str>) {
        let Some(tn) = self.tenant_numbers.get(tenant).copied() else { return };
        let (Ok(t), seg) = (TenantName::new(tenant), segment.and_then(|s| SegmentName::new(s).ok())) else {
            return;
        };
        let sn =
            seg.as_ref().and_then(|s| self.segment_numbers.get(&(tenant.to_owned(), s.to_string())).copied());
        for (net, _) in self.ipam.classic_networks() {
            let pair = seg.as_ref().zip(sn);
            let _ = self.ipam.set_classic_numbers(&net, &t, tn, pair);
        }
    }

    fn apply_topology(&mut self, put: bool, value: &[u8]) -> Result<(), String> {
        if !put {
            return Ok(());
        }
        let req: TopologyRequest = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        let spec = req.to_spec().map_err(|e| e.to_string())?;
        let (next, _) = self.ipam.update_topology(spec).map_err(|e| e.to_string())?;
        self.ipam = next;
        self.topology_json = Some(req);
        let tenants: Vec<String> = self.tenant_numbers.keys().cloned().collect();
        for t in tenants {
            self.push_numbers(&t, None);
        }
        let segs: Vec<(String, String)> = self.segment_numbers.keys().cloned().collect();
        for (t, s) in segs {
            self.push_numbers(&t, Some(&s));
        }
        Ok(())
    }

    fn apply_host(&mut self, name: &str, put: bool, value: &[u8]) -> Result<(), String> {
        let host = HostName::new(name).map_err(|e| e.to_string())?;
        if !put {
            return match self.ipam.remove_host(&host) {
                Ok(_) | Err(IpamError::UnknownHost(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
        }
        let rec: HostRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if let Some(p) = self.ipam.hosts().into_iter().find(|h| h.name == host) {
            if p.tags != rec.tags {
                self.ipam.update_host_tags(&host, rec.tags).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let mut spec = HostSpec::new(host, rec.ip.parse().map_err(|_| format!("bad address {}", rec.ip))?);
        spec.ipv6 = match &rec.ipv6 {
            None => None,
            Some(v6) => Some(v6.parse().map_err(|_| format!("bad IPv6 address {v6}"))?),
        };
        spec.agent_port = rec.agent_port;
        spec.tags = rec.tags;
        let paths: BTreeMap<NetworkName, String> = rec
            .placements
            .into_iter()
            .filter_map(|(n, p)| NetworkName::new(n).ok().map(|n| (n, p)))
            .collect();
        let origin = if rec.origin == "topology" { HostOrigin::Topology } else { HostOrigin::Dynamic };
        self.ipam.add_host_at(spec, origin, &paths).map(|_| ()).map_err(|e| e.to_string())
    }

    fn apply_block(&mut self, key: &str, put: bool, value: &[u8]) -> Result<(), String> {
        let rec: Option<BlockRecord> =
            if put { Some(serde_json::from_slice(value).map_err(|e| e.to_string())?) } else { None };
        let cidr: Cidr = match (&rec, self.committed.get(key)) {
            (Some(r), _) => r.cidr.parse().map_err(|e: romana_model::CidrError| e.to_string())?,
            (None, Some((_, old))) => old.cidr.parse().map_err(|e: romana_model::CidrError| e.to_string())?,
            (None, None) => return Ok(()),
        };
        let want: BTreeMap<String, String> = rec.as_ref().map(|r| r.addresses.clone()).unwrap_or_default();
        for a in self.ipam.block_allocations(cidr) {
            if want.get(&a.ip.to_string()) != Some(&a.name.to_string()) {
                let _ = self.ipam.release(&a.ip.to_string());
            }
        }
        if let Some(r) = &rec {
            let mut problems = Vec::new();
            for (ip, name) in &r.addresses {
                let Ok(ip_addr) = ip.parse::<IpAddr>() else { continue };
                if self.ipam.lookup(name).is_some_and(|a| a.ip == ip_addr) {
                    continue;
                }
                if self.ipam.lookup(name).is_some() {
                    let _ = self.ipam.release(name);
                }
                let req = match request(name, &r.host, &r.tenant, &r.segment) {
                    Ok(req) => req,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                if let Err(e) = self.ipam.allocate_specific(&req, ip_addr) {
                    problems.push(format!("{name} {ip}: {e}"));
                }
            }
            self.committed.insert(key.to_owned(), (self.applied.get(key).copied().unwrap_or(0), r.clone()));
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
        } else {
            self.committed.remove(key);
        }
        Ok(())
    }
}

fn request(name: &str, host: &str, tenant: &str, segment: &str) -> Result<AllocRequest, String> {
    Ok(AllocRequest {
        name: name.parse().map_err(|e: romana_model::NameError| e.to_string())?,
        host: host.parse().map_err(|e: romana_model::NameError| e.to_string())?,
        tenant: tenant.parse().map_err(|e: romana_model::NameError| e.to_string())?,
        segment: segment.parse().map_err(|e: romana_model::NameError| e.to_string())?,
    })
}

impl Synced {
    /// The view of everything stored under the prefix at revision `rev`, applied in dependency
    /// order (the topology, then tenant and segment numbers, hosts, blackouts, blocks).
    pub fn loaded(keys: &Keys, kvs: &[KeyValue], rev: Revision) -> Synced {
        let mut s = Synced::empty();
        let rank = |kv: &KeyValue| match keys.classify(&kv.key) {
            KeyOf::Topology => 0,
            KeyOf::Tenant(_) => 1,
            KeyOf::Segment => 2,
            KeyOf::Host(_) => 3,
            KeyOf::Blackout(_) => 4,
            KeyOf::Block | KeyOf::Other => 5,
        };
        let mut ordered: Vec<&KeyValue> = kvs.iter().collect();
        ordered.sort_by_key(|kv| (rank(kv), kv.key.clone()));
        for kv in ordered {
            s.apply(keys, EventKind::Put, kv);
        }
        s.revision = rev;
        s.loaded_at = rev;
        s
    }
}

#[cfg(test)]
mod tests;
