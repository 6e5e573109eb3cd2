//! The IPAM replica's writes: each command as the pure core's decision, one store transaction
//! guarded by compare-and-swap on the keys it touches, and the retries (rollback, refresh from
//! the store, a jittered pause) when another replica got there first. Runs inside the actor
//! (`ipam_sync.rs`); knows nothing of HTTP.

use std::collections::BTreeMap;

use romana_api::records::{BlockRecord, NameRecord, TokenRecord};
use romana_api::topology::TopologyRequest;
use romana_ipam::spec::{HostSpec, TopologySpec};
use romana_ipam::{
    AllocRequest, Allocation, HostPlacement, IpamError, Released, ReleasedAddress, TopologyChange,
};
use romana_model::{Cidr, HostName};
use romana_store::{Compare, EventKind, KeyValue, Op, Revision, StoreError, Txn};

use crate::ipam_sync::{Actor, PendingAlloc, Shape, encode, read_lock};
use crate::ipam_view::Synced;
use crate::jitter::retry_pause;
use crate::service_error::{ServiceError, ServiceResult};

/// Most operations in one store transaction (etcd allows 128 by default).
const MAX_TXN_OPS: usize = 120;
const MAX_ATTEMPTS: usize = 40;
/// Allocation transactions of unknown outcome tried again before the callers are told 503.
const MAX_UNKNOWN: usize = 2;

impl Actor {
    /// Re-reads keys from the store and applies them (after a conflict with another replica).
    pub(crate) async fn refresh(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            let kv = self.store.get(key).await?;
            match kv {
                Some(kv) => self.write().apply(&self.keys, EventKind::Put, &kv),
                None => {
                    let rev = self.store.revision().await?;
                    let gone = KeyValue {
                        key: key.clone(),
                        value: vec![],
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                        lease: 0,
                    };
                    self.write().apply(&self.keys, EventKind::Delete, &gone);
                }
            }
        }
        Ok(())
    }

    /// Tenant and segment numbers for classic networks, created on first use.
    pub(crate) async fn numbers(&self, allocs: &[PendingAlloc]) -> ServiceResult<()> {
        let missing: Vec<(String, String)> = {
            let s = read_lock(&self.view);
            if s.ipam.classic_networks().is_empty() {
                return Ok(());
            }
            allocs
                .iter()
                .map(|(r, ..)| (r.tenant.to_string(), r.segment.to_string()))
                .filter(|(t, sg)| {
                    !s.tenant_numbers.contains_key(t)
                        || !s.segment_numbers.contains_key(&(t.clone(), sg.clone()))
                })
                .collect()
        };
        for (t, sg) in missing {
            let limits = crate::tenant_store::limits(&read_lock(&self.view).ipam);
            let ts = crate::tenant_store::TenantStore { store: &*self.store, keys: &self.keys, limits };
            let (tn, sn) = ts.ensure(&t, &sg).await?;
            let mut s = self.write();
            s.tenant_numbers.insert(t.clone(), tn);
            s.segment_numbers.insert((t.clone(), sg.clone()), sn);
            s.push_numbers(&t, Some(&sg));
        }
        Ok(())
    }

    pub(crate) async fn allocate(&self, mut allocs: Vec<PendingAlloc>) {
        if let Err(e) = self.numbers(&allocs).await {
            for (.., reply) in allocs {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        // Request tokens seen before (by the same tenant) resolve to the name they created.
        for (req, _, token, ..) in &mut allocs {
            if let Some(t) = token {
                let holder = |name: &str| {
                    let v = self.view.read().unwrap_or_else(|p| p.into_inner());
                    v.ipam.lookup(name).map(|a| a.tenant.to_string())
                };
                if let Some(name) = token_name(&*self.store, &self.keys, req.tenant.as_str(), t, holder).await
                    && let Ok(name) = name.parse()
                {
                    req.name = name;
                }
            }
        }
        // Transactions whose outcome is unknown (the etcd member died with it in flight) that
        // were tried again: compare-and-swap makes that safe (if it was applied, the retry sees
        // the name taken, refreshes and answers with what was applied).
        let mut unknown = 0;
        for attempt in 1..=MAX_ATTEMPTS {
            // At most 3 operations per allocation (name, token, block): a batch fits one transaction.
            let mut results: Vec<ServiceResult<Vec<Allocation>>> = Vec::with_capacity(allocs.len());
            let mut fresh: Vec<Allocation> = Vec::new();
            let mut blocks: BTreeMap<String, (Revision, BlockRecord)> = BTreeMap::new();
            let mut ops = Vec::new();
            let mut compares = Vec::new();
            {
                let mut s = self.write();
                for (req, ip, token, shape, _) in &allocs {
                    let got = match (ip, shape) {
                        (ip, Shape::Family(f)) => s.ipam.allocate_family(req, *f, *ip).map(|a| vec![a]),
                        (Some(ip), _) => s.ipam.allocate_specific(req, *ip).map(|a| vec![a]),
                        (None, Shape::Stack) => s.ipam.allocate_stack(req),
                        (None, Shape::One) => s.ipam.allocate(req).map(|a| vec![a]),
                    };
                    let got = match got {
                        Ok(got) => got,
                        Err(e) => {
                            results.push(Err(e.into()));
                            continue;
                        }
                    };
                    // A dual-stack endpoint's addresses go in the same transaction: both or neither.
                    for (i, a) in got.iter().enumerate() {
                        if !a.fresh {
                            continue;
                        }
                        let token = token.as_ref().filter(|_| i == 0);
                        let (key, rev, mut rec) = blocks
                            .get(&self.keys.block(a.network.as_str(), &a.block))
                            .map(|(r, rec)| (self.keys.block(a.network.as_str(), &a.block), *r, rec.clone()))
                            .unwrap_or_else(|| s.record_for(a, &self.keys));
                        rec.addresses.insert(a.ip.to_string(), a.name.to_string());
                        blocks.insert(key, (rev, rec));
                        let name_key = self.keys.name(a.name.as_str());
                        compares.push(Compare::absent(&name_key));
                        let nr = NameRecord {
                            ip: a.ip.to_string(),
                            network: a.network.to_string(),
                            block: a.block.to_string(),
                        };
                        ops.push(Op::put(name_key, encode(&nr)));
                        if let Some(t) = token {
                            ops.push(Op::put(
                                self.keys.tenant_token(a.tenant.as_str(), t),
                                encode(&TokenRecord { name: a.name.to_string() }),
                            ));
                        }
                        fresh.push(a.clone());
                    }
                    results.push(Ok(got));
                }
            }
            if fresh.is_empty() {
                return self.finish(allocs, results);
            }
            for (key, (rev, rec)) in &blocks {
                compares.push(Compare::unchanged(key, *rev));
                ops.push(Op::put(key, encode(rec)));
            }
            let outcome = self.store.txn(Txn { compare: compares, success: ops, failure: vec![] }).await;
            match outcome {
                Ok(r) if r.succeeded => {
                    let mut s = self.write();
                    for (key, (_, rec)) in blocks {
                        s.applied.insert(key.clone(), r.revision);
                        s.committed.insert(key, (r.revision, rec));
                    }
                    drop(s);
                    return self.finish(allocs, results);
                }
                Err(StoreError::Unavailable(e)) if unknown < MAX_UNKNOWN => {
                    unknown += 1;
                    tracing::info!(error = %e, "allocation's outcome unknown (store connection lost); trying again");
                    self.rollback(&fresh);
                    let stale: Vec<String> = blocks.keys().cloned().collect();
                    if let Err(e) = self.refresh(&stale).await {
                        return self.fail_fresh(allocs, results, &fresh, e.into());
                    }
                }
                Ok(_) => {
                    self.rollback(&fresh);
                    let mut stale: Vec<String> = blocks.keys().cloned().collect();
                    for a in &fresh {
                        // A name taken elsewhere points at the block to refresh.
                        if let Ok(Some(kv)) = self.store.get(&self.keys.name(a.name.as_str())).await
                            && let Ok(nr) = serde_json::from_slice::<NameRecord>(&kv.value)
                            && let Ok(c) = nr.block.parse::<Cidr>()
                        {
                            stale.push(self.keys.block(&nr.network, &c));
                        }
                    }
                    stale.sort();
                    stale.dedup();
                    if let Err(e) = self.refresh(&stale).await {
                        return self.fail_fresh(allocs, results, &fresh, e.into());
                    }
                    tracing::debug!(attempt, "allocation conflicted with another replica; retrying");
                    tokio::time::sleep(retry_pause(&*self.jitter, attempt)).await;
                    // A batch that collided goes on one allocation at a time: smaller transactions
                    // collide less with another replica working on the same blocks.
                    if allocs.len() > 1 {
                        for one in allocs {
                            Box::pin(self.allocate(vec![one])).await;
                        }
                        return;
                    }
                }
                Err(e) => {
                    self.rollback(&fresh);
                    return self.fail_fresh(allocs, results, &fresh, e.into());
                }
            }
        }
        let results: Vec<_> = allocs
            .iter()
            .map(|_| Err(ServiceError::Unavailable("too much contention on the IPAM; try again".into())))
            .collect();
        self.finish(allocs, results)
    }

    pub(crate) fn rollback(&self, fresh: &[Allocation]) {
        let mut s = self.write();
        for a in fresh.iter().rev() {
            let _ = s.ipam.release(a.name.as_str());
        }
    }

    pub(crate) fn fail_fresh(
        &self,
        allocs: Vec<PendingAlloc>,
        mut results: Vec<ServiceResult<Vec<Allocation>>>,
        fresh: &[Allocation],
        e: ServiceError,
    ) {
        for r in &mut results {
            if let Ok(got) = r
                && got.iter().any(|a| fresh.iter().any(|f| f.name == a.name))
            {
                *r = Err(e.clone());
            }
        }
        self.finish(allocs, results);
    }

    pub(crate) fn finish(&self, allocs: Vec<PendingAlloc>, results: Vec<ServiceResult<Vec<Allocation>>>) {
        for ((.., reply), r) in allocs.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }

    pub(crate) async fn release(&self, key: &str) -> ServiceResult<Released> {
        for attempt in 1..=MAX_ATTEMPTS {
            let (released, allocation, block_key, rev, rec) = {
                let mut s = self.write();
                let a = s.ipam.lookup(key).or_else(|| key.parse().ok().and_then(|ip| s.ipam.lookup_ip(ip)));
                let Some(a) = a else {
                    return Err(ServiceError::NotFound(format!(
                        "no allocated address named or numbered {key}"
                    )));
                };
                let (block_key, rev, mut rec) = s.record_for(&a, &self.keys);
                let released = s.ipam.release(a.name.as_str())?;
                rec.addresses.remove(&a.ip.to_string());
                (released, a, block_key, rev, rec)
            };
            let mut ops = vec![Op::delete(self.keys.name(allocation.name.as_str()))];
            ops.push(if rec.addresses.is_empty() {
                Op::delete(&block_key)
            } else {
                Op::put(&block_key, encode(&rec))
            });
            match self.store.txn(Txn::when(vec![Compare::unchanged(&block_key, rev)], ops)).await {
                Ok(r) if r.succeeded => {
                    let mut s = self.write();
                    s.applied.insert(block_key.clone(), r.revision);
                    if rec.addresses.is_empty() {
                        s.committed.remove(&block_key);
                    } else {
                        s.committed.insert(block_key, (r.revision, rec));
                    }
                    return Ok(released);
                }
                outcome => {
                    let req = AllocRequest {
                        name: allocation.name.clone(),
                        host: allocation.host.clone(),
                        tenant: allocation.tenant.clone(),
                        segment: allocation.segment.clone(),
                    };
                    let _ = self.write().ipam.allocate_specific(&req, allocation.ip);
                    if let Err(e) = outcome {
                        return Err(e.into());
                    }
                    self.refresh(&[block_key]).await?;
                    tokio::time::sleep(retry_pause(&*self.jitter, attempt)).await;
                }
            }
        }
        Err(ServiceError::Unavailable("too much contention on the IPAM; try again".into()))
    }

    pub(crate) async fn add_host(&self, spec: HostSpec) -> ServiceResult<HostPlacement> {
        let name = spec.name.clone();
        let key = self.keys.host(name.as_str());
        // One key per underlay address (IPv4, and IPv6 on a dual-stack underlay), so two
        // replicas cannot give one address to two hosts.
        let ip_keys: Vec<(std::net::IpAddr, String)> =
            spec.addresses().map(|ip| (ip, self.keys.host_ip(&ip.to_string()))).collect();
        for _ in 0..MAX_ATTEMPTS {
            let (placement, rec, existed) = {
                let mut s = self.write();
                let existed = s.ipam.host_placement(&name).is_some();
                let placement = s.ipam.add_host(spec.clone())?;
                let rec = s.host_record(&name).expect("just added");
                (placement, rec, existed)
            };
            if existed {
                return Ok(placement);
            }
            let mut compares = vec![Compare::absent(&key)];
            let mut ops = vec![Op::put(&key, encode(&rec))];
            for (_, ip_key) in &ip_keys {
                compares.push(Compare::absent(ip_key));
                ops.push(Op::put(ip_key, name.as_str()));
            }
            let txn = Txn::when(compares, ops);
            match self.store.txn(txn).await {
                Ok(r) if r.succeeded => {
                    let mut s = self.write();
                    s.applied.insert(key.clone(), r.revision);
                    return Ok(placement);
                }
                outcome => {
                    let _ = self.write().ipam.remove_host(&name);
                    outcome?;
                    self.refresh(std::slice::from_ref(&key)).await?;
                    for (ip, ip_key) in &ip_keys {
                        if let Ok(Some(kv)) = self.store.get(ip_key).await
                            && kv.value != name.as_str().as_bytes()
                        {
                            return Err(ServiceError::Conflict(format!(
                                "address {ip} is already used by host {}",
                                String::from_utf8_lossy(&kv.value)
                            )));
                        }
                    }
                }
            }
        }
        Err(ServiceError::Unavailable("too much contention adding hosts; try again".into()))
    }

    pub(crate) async fn remove_host(&self, name: &HostName) -> ServiceResult<Vec<ReleasedAddress>> {
        let (rec, held) = {
            let s = read_lock(&self.view);
            let rec =
                s.host_record(name).ok_or_else(|| ServiceError::NotFound(format!("unknown host {name}")))?;
            let held: Vec<Allocation> =
                s.ipam.allocations().into_iter().filter(|a| &a.host == name).collect();
            (rec, held)
        };
        let key = self.keys.host(name.as_str());
        let mut ops = vec![Op::delete(&key), Op::delete(self.keys.host_ip(&rec.ip))];
        ops.extend(rec.ipv6.iter().map(|v6| Op::delete(self.keys.host_ip(v6))));
        let r = self.store.txn(Txn::when(vec![], ops)).await?;
        // Release the host's addresses block by block, in transactions etcd accepts.
        let mut by_block: BTreeMap<String, Vec<Allocation>> = BTreeMap::new();
        for a in held {
            by_block.entry(self.keys.block(a.network.as_str(), &a.block)).or_default().push(a);
        }
        for (block_key, addresses) in by_block {
            for chunk in addresses.chunks(MAX_TXN_OPS - 2) {
                for _ in 0..MAX_ATTEMPTS {
                    let (rev, mut rec) = {
                        let s = read_lock(&self.view);
                        match s.committed.get(&block_key) {
                            Some(c) => c.clone(),
                            None => break,
                        }
                    };
                    for a in chunk {
                        rec.addresses.remove(&a.ip.to_string());
                    }
                    let mut ops: Vec<Op> =
                        chunk.iter().map(|a| Op::delete(self.keys.name(a.name.as_str()))).collect();
                    ops.push(if rec.addresses.is_empty() {
                        Op::delete(&block_key)
                    } else {
                        Op::put(&block_key, encode(&rec))
                    });
                    let out =
                        self.store.txn(Txn::when(vec![Compare::unchanged(&block_key, rev)], ops)).await?;
                    if out.succeeded {
                        let mut s = self.write();
                        s.applied.insert(block_key.clone(), out.revision);
                        if rec.addresses.is_empty() {
                            s.committed.remove(&block_key);
                        } else {
                            s.committed.insert(block_key.clone(), (out.revision, rec));
                        }
                        break;
                    }
                    self.refresh(std::slice::from_ref(&block_key)).await?;
                }
            }
        }
        let mut s = self.write();
        s.applied.insert(key, r.revision);
        match s.ipam.remove_host(name) {
            Ok(released) => Ok(released),
            Err(IpamError::UnknownHost(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn tags(&self, name: &HostName, tags: BTreeMap<String, String>) -> ServiceResult<()> {
        let key = self.keys.host(name.as_str());
        let (rev, old_tags, rec) = {
            let mut s = self.write();
            let old = s.ipam.hosts().into_iter().find(|h| &h.name == name).map(|h| h.tags);
            let old = old.ok_or_else(|| ServiceError::NotFound(format!("unknown host {name}")))?;
            s.ipam.update_host_tags(name, tags)?;
            (s.applied.get(&key).copied().unwrap_or(0), old, s.host_record(name).expect("known host"))
        };
        match self
            .store
            .txn(Txn::when(vec![Compare::unchanged(&key, rev)], vec![Op::put(&key, encode(&rec))]))
            .await
        {
            Ok(r) if r.succeeded => {
                self.write().applied.insert(key, r.revision);
                Ok(())
            }
            outcome => {
                let _ = self.write().ipam.update_host_tags(name, old_tags);
                outcome?;
                self.refresh(&[key]).await?;
                Err(ServiceError::Conflict(format!("host {name} changed meanwhile; try again")))
            }
        }
    }

    pub(crate) async fn blackout(&self, cidr: Cidr, add: bool) -> ServiceResult<()> {
        let key = self.keys.blackout(&cidr);
        {
            let mut s = self.write();
            if add { s.ipam.blackout(cidr)? } else { s.ipam.unblackout(cidr)? }
        }
        let op = if add { Op::put(&key, cidr.to_string()) } else { Op::delete(&key) };
        match self.store.txn(Txn::when(vec![], vec![op])).await {
            Ok(r) => {
                self.write().applied.insert(key, r.revision);
                Ok(())
            }
            Err(e) => {
                let mut s = self.write();
                let _ = if add { s.ipam.unblackout(cidr) } else { s.ipam.blackout(cidr) };
                Err(e.into())
            }
        }
    }

    pub(crate) async fn topology(
        &self,
        request: TopologyRequest,
        spec: TopologySpec,
    ) -> ServiceResult<TopologyChange> {
        let key = self.keys.topology();
        let (next, change, rev, hosts) = {
            let s = read_lock(&self.view);
            let (next, change) = s.ipam.update_topology(spec)?;
            let rev = s.applied.get(&key).copied().unwrap_or(0);
            // Hosts whose stored placement changes are rewritten with the topology.
            let mut hosts = Vec::new();
            let tmp = Synced { ipam: next, ..Synced::empty() };
            for h in tmp.ipam.hosts() {
                let new = tmp.host_record(&h.name).expect("listed host");
                if s.host_record(&h.name).as_ref() != Some(&new) && new.origin == "dynamic" {
                    hosts.push(new);
                }
            }
            (tmp.ipam, change, rev, hosts)
        };
        let mut ops = vec![Op::put(&key, encode(&request))];
        for h in hosts.iter().take(MAX_TXN_OPS - 1) {
            ops.push(Op::put(self.keys.host(&h.name), encode(h)));
        }
        let r = self.store.txn(Txn::when(vec![Compare::unchanged(&key, rev)], ops)).await?;
        if !r.succeeded {
            self.refresh(&[key]).await?;
            return Err(ServiceError::Conflict(
                "the topology changed meanwhile; review and post again".into(),
            ));
        }
        for h in hosts.iter().skip(MAX_TXN_OPS - 1) {
            self.store.txn(Txn::when(vec![], vec![Op::put(self.keys.host(&h.name), encode(h))])).await?;
        }
        let mut s = self.write();
        s.ipam = next;
        s.topology_json = Some(request);
        s.applied.insert(key, r.revision);
        for h in &hosts {
            s.applied.insert(self.keys.host(&h.name), r.revision);
        }
        Ok(change)
    }
}

/// The name a request token created for `tenant`: under the tenant's key, or (a token written
/// before tokens were kept per tenant) under the old global key when that name is still held by
/// `tenant` (`holder` says which tenant holds a name), so an old token of another tenant is
/// never followed.
pub(crate) async fn token_name(
    store: &dyn romana_store::Store,
    keys: &crate::keys::Keys,
    tenant: &str,
    token: &str,
    holder: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let record = |kv: Option<romana_store::KeyValue>| {
        kv.and_then(|kv| serde_json::from_slice::<TokenRecord>(&kv.value).ok()).map(|r| r.name)
    };
    if let Some(name) = record(store.get(&keys.tenant_token(tenant, token)).await.ok().flatten()) {
        return Some(name);
    }
    record(store.get(&keys.token(token)).await.ok().flatten())
        .filter(|n| holder(n).as_deref() == Some(tenant))
}
