//! The tenant store: tenant and segment records with the numbers the classic address layout
//! needs. Numbers come from a counter that only grows, so they are never reused; they are bounded
//! by the classic layout's bits (`limits`). Used by the Tenant service's handlers and by the IPAM
//! replica (which creates numbers on first use). Knows nothing of HTTP.

use std::collections::BTreeMap;

use romana_api::records::{SegmentRecord, TenantRecord};
use romana_api::rest::{SegmentRequest, TenantRequest};
use romana_store::{Compare, Op, Store, Txn};

use crate::keys::Keys;
use crate::service_error::{ServiceError, ServiceResult};

/// How many tenant and segment numbers the classic layout can encode (2^24 each without a classic network).
pub fn limits(ipam: &romana_ipam::Ipam) -> (u64, u64) {
    let classic = ipam.classic_networks();
    let t = classic.iter().map(|(_, b)| b.tenant_bits).min().unwrap_or(24);
    let s = classic.iter().map(|(_, b)| b.segment_bits).min().unwrap_or(24);
    (1u64 << t, 1u64 << s)
}

/// Tenant and segment records in the store, with bounded numbers.
pub struct TenantStore<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a Keys,
    pub limits: (u64, u64),
}

impl std::fmt::Debug for TenantStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore").field("limits", &self.limits).finish()
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> ServiceResult<T> {
    serde_json::from_slice(v)
        .map_err(|e| ServiceError::Internal(format!("stored record {key} is unreadable: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

impl TenantStore<'_> {
    pub async fn get_tenant(&self, name: &str) -> ServiceResult<Option<(TenantRecord, i64)>> {
        let state = self;
        let key = state.keys.tenant(name);
        match state.store.get(&key).await? {
            Some(kv) => Ok(Some((decode(&key, &kv.value)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Creates a tenant with the next number. `Ok(None)` if it already exists.
    pub async fn create_tenant(&self, req: &TenantRequest) -> ServiceResult<Option<TenantRecord>> {
        let state = self;
        let (limit, _) = self.limits;
        for _ in 0..50 {
            let counter = state.store.get(&state.keys.tenant_counter()).await?;
            let (next, rev): (u64, i64) = match &counter {
                Some(kv) => (String::from_utf8_lossy(&kv.value).parse().unwrap_or(0), kv.mod_revision),
                None => (0, 0),
            };
            if next >= limit {
                return Err(ServiceError::Conflict(format!(
                    "no tenant number left: the classic layout allows {limit}"
                )));
            }
            let rec = TenantRecord {
                name: req.name.clone(),
                external_id: req.external_id.clone(),
                labels: req.labels.clone(),
                number: next as u32,
                next_segment: 0,
                isolation: req.isolation.clone(),
            };
            let key = state.keys.tenant(&req.name);
            let txn = Txn {
                compare: vec![Compare::absent(&key), Compare::unchanged(state.keys.tenant_counter(), rev)],
                success: vec![
                    Op::put(&key, encode(&rec)),
                    Op::put(state.keys.tenant_counter(), (next + 1).to_string()),
                ],
                failure: vec![Op::Get { key: key.clone() }],
            };
            let r = state.store.txn(txn).await?;
            if r.succeeded {
                return Ok(Some(rec));
            }
            if !r.reads.first().is_none_or(Vec::is_empty) {
                return Ok(None);
            }
        }
        Err(ServiceError::Unavailable("too much contention creating tenants; try again".into()))
    }

    /// Creates a segment with its tenant's next number. `Ok(None)` if it exists.
    pub async fn create_segment(
        &self,
        tenant: &str,
        req: &SegmentRequest,
    ) -> ServiceResult<Option<SegmentRecord>> {
        let state = self;
        let (_, limit) = self.limits;
        for _ in 0..50 {
            let (t, trev) = self
                .get_tenant(tenant)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("unknown tenant {tenant}")))?;
            if u64::from(t.next_segment) >= limit {
                return Err(ServiceError::Conflict(format!(
                    "tenant {tenant}: no segment number left: the classic layout allows {limit}"
                )));
            }
            let rec = SegmentRecord {
                name: req.name.clone(),
                tenant: tenant.to_owned(),
                external_id: req.external_id.clone(),
                labels: req.labels.clone(),
                number: t.next_segment,
            };
            let key = state.keys.segment(tenant, &req.name);
            let next = TenantRecord { next_segment: t.next_segment + 1, ..t };
            let txn = Txn {
                compare: vec![Compare::absent(&key), Compare::unchanged(state.keys.tenant(tenant), trev)],
                success: vec![Op::put(&key, encode(&rec)), Op::put(state.keys.tenant(tenant), encode(&next))],
                failure: vec![Op::Get { key: key.clone() }],
            };
            let r = state.store.txn(txn).await?;
            if r.succeeded {
                return Ok(Some(rec));
            }
            if !r.reads.first().is_none_or(Vec::is_empty) {
                return Ok(None);
            }
        }
        Err(ServiceError::Unavailable("too much contention creating segments; try again".into()))
    }

    /// The numbers of a tenant and segment, creating them (as the classic layout needs) if missing.
    pub async fn ensure(&self, tenant: &str, segment: &str) -> ServiceResult<(u32, u32)> {
        let state = self;
        let t = match self.get_tenant(tenant).await? {
            Some((t, _)) => t,
            None => {
                let req = TenantRequest {
                    name: tenant.to_owned(),
                    external_id: String::new(),
                    labels: BTreeMap::new(),
                    isolation: Default::default(),
                };
                match self.create_tenant(&req).await? {
                    Some(t) => t,
                    None => self
                        .get_tenant(tenant)
                        .await?
                        .map(|x| x.0)
                        .ok_or_else(|| ServiceError::Unavailable("tenant vanished".into()))?,
                }
            }
        };
        let key = state.keys.segment(tenant, segment);
        let s: SegmentRecord = match state.store.get(&key).await? {
            Some(kv) => decode(&key, &kv.value)?,
            None => {
                let req = SegmentRequest {
                    name: segment.to_owned(),
                    external_id: String::new(),
                    labels: BTreeMap::new(),
                };
                match self.create_segment(tenant, &req).await? {
                    Some(s) => s,
                    None => decode(
                        &key,
                        &state
                            .store
                            .get(&key)
                            .await?
                            .ok_or_else(|| ServiceError::Unavailable("segment vanished".into()))?
                            .value,
                    )?,
                }
            }
        };
        Ok((t.number, s.number))
    }
}
