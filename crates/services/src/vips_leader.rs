//! The leader's VIP pass: reads the VIPs and (only when there is one) the endpoint registry,
//! asks `vips_assign` where each is served now and writes back the VIPs whose assignment changed,
//! each guarded by its revision (a VIP deleted or recreated meanwhile is left to the next pass).
//! The route manager's loop runs it on every tick while this replica leads. Knows nothing of HTTP.

use std::collections::BTreeSet;

use romana_api::rest::EndpointInfo;
use romana_store::{Compare, Op, Store, StoreError, Txn};

use crate::keys::Keys;
use crate::vips_assign::assign;

/// What the last pass decided from: the store's revision and the live hosts. Nothing else
/// changes an assignment, so a pass with the same inputs reads no endpoints (10,000 of them
/// are megabytes of JSON, and the loop ticks every 200 ms).
pub type Seen = Option<(romana_store::Revision, BTreeSet<String>)>;

/// One pass at `now_ms`; returns how many VIPs it rewrote.
pub async fn pass(
    store: &dyn Store,
    keys: &Keys,
    live: &BTreeSet<String>,
    now_ms: u64,
    seen: &mut Seen,
) -> Result<usize, StoreError> {
    let (kvs, revision) = store.range(&keys.vips()).await?;
    if kvs.is_empty() {
        return Ok(0);
    }
    let input = Some((revision, live.clone()));
    if *seen == input {
        return Ok(0);
    }
    let mut vips = Vec::new();
    let mut revisions = Vec::new();
    for kv in &kvs {
        match serde_json::from_slice(&kv.value) {
            Ok(v) => {
                vips.push(v);
                revisions.push((kv.key.clone(), kv.mod_revision));
            }
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable VIP left as it is"),
        }
    }
    let (eps, _) = store.range(&keys.endpoints()).await?;
    let endpoints: Vec<EndpointInfo> =
        eps.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    let next = assign(&vips, live, &endpoints, now_ms);
    let mut written = 0;
    let mut complete = true;
    for ((before, after), (key, rev)) in vips.iter().zip(&next).zip(&revisions) {
        if before == after {
            continue;
        }
        let r = store
            .txn(Txn::when(
                vec![Compare::unchanged(key, *rev)],
                vec![Op::put(key, serde_json::to_vec(after).expect("serializes"))],
            ))
            .await?;
        complete &= r.succeeded;
        if r.succeeded {
            written += 1;
            if before.assigned != after.assigned {
                tracing::info!(vip = %after.address, from = %before.assigned, to = %after.assigned, standby = %after.standby, "VIP moved");
            }
        }
    }
    // Our own writes move the revision: the next pass reads once more and finds nothing to do.
    if complete {
        *seen = input;
    }
    Ok(written)
}
