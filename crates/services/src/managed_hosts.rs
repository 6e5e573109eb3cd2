//! Hosts romana-k8s manages: it tags every node it registers `romana.io/managed-by=romana-k8s`
//! (crates/k8s/src/map.rs). There a pod's labels and named ports come only from its pod record
//! (pod_join), so an agent may neither register an endpoint with labels or ports of its own, nor
//! relabel one, nor take the tag off its host: a compromised node cannot choose the labels
//! other nodes' policies select on. Admins and unbound service users are not restricted.

use axum::http::StatusCode;
use romana_api::rest::EndpointInfo;
use romana_auth::Principal;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The tag, and the value romana-k8s gives it.
pub const MANAGED_BY: &str = "romana.io/managed-by";
pub const CONTROLLER: &str = "romana-k8s";

fn marked(tags: &std::collections::BTreeMap<String, String>) -> bool {
    tags.get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER)
}

/// Whether `host` carries romana-k8s's tag.
pub fn managed(s: &AppState, host: &str) -> bool {
    s.ipam.read(|v| v.ipam.hosts().iter().any(|h| h.name.as_str() == host && marked(&h.tags)))
}

/// An agent's endpoint `e` on a managed host: only without labels and ports of its own (a pod's
/// come from its record, with `pod` set).
pub fn check_endpoint(s: &AppState, p: &Principal, e: &EndpointInfo) -> ApiResult<()> {
    let own = e.pod.is_empty() && (!e.labels.is_empty() || !e.ports.is_empty());
    if p.hosts.is_empty() || !own || !managed(s, &e.host) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "host {} is managed by {CONTROLLER}: endpoint {}'s labels and ports come from its pod \
             record (register it with pod set), not from agent {}",
            e.host, e.name, p.name
        ),
    ))
}

/// An agent's relabelling of an endpoint on host `host`.
pub fn check_relabel(s: &AppState, p: &Principal, name: &str, host: &str) -> ApiResult<()> {
    if p.hosts.is_empty() || !managed(s, host) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("host {host} is managed by {CONTROLLER}: agent {} may not relabel endpoint {name}", p.name),
    ))
}

/// An agent's new tags for its host `host`: the tag stays as it is.
pub fn check_tags(
    s: &AppState,
    p: &Principal,
    host: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> ApiResult<()> {
    if p.hosts.is_empty() || managed(s, host) == marked(tags) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("agent {} may not change the tag {MANAGED_BY} of host {host}; {CONTROLLER} sets it", p.name),
    ))
}
