//! A watch line's value typed by the resource its key names (`endpoints/`, `policies/`,
//! `netpols/`, `routes/`), so that consumers match on a type instead of re-parsing prefixes and
//! JSON; keys of other resources stay untyped (`Other`). Decoding only: the JSON on the wire is
//! `rest::WatchEvent`'s.

use crate::netpol::NetworkPolicy;
use crate::policy::Policy;
use crate::rest::{EndpointInfo, RouteSetNotice, WatchEvent, WatchKind};

/// A change on the watch, by resource; `value` is `None` for a delete (or a put without one).
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    Endpoint {
        name: String,
        value: Option<EndpointInfo>,
    },
    Policy {
        id: String,
        value: Option<Policy>,
    },
    /// Keyed `namespace/name`.
    NetworkPolicy {
        key: String,
        value: Option<NetworkPolicy>,
    },
    /// The host's route set changed (the set is `GET /routes/{host}`).
    Routes {
        host: String,
        value: Option<RouteSetNotice>,
    },
    /// A key this module does not type (tenants, segments, blocks...), or a line that is not a
    /// change (`synced`, `error`).
    Other {
        key: String,
    },
}

/// A put whose value does not decode as its resource: names the resource, the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable {resource} {key} on the watch: {problem}")]
pub struct Unreadable {
    pub resource: &'static str,
    pub key: String,
    pub problem: String,
}

impl WatchEvent {
    /// The change as a typed value of the resource its key names.
    pub fn watched(&self) -> Result<Watched, Unreadable> {
        fn decode<T: serde::de::DeserializeOwned>(
            ev: &WatchEvent,
            resource: &'static str,
        ) -> Result<Option<T>, Unreadable> {
            // A put without a value says as little as a delete: the object is gone.
            let Some(value) = ev.value.as_ref().filter(|_| ev.kind == WatchKind::Put) else {
                return Ok(None);
            };
            // Straight from the line's text into the type: a stream's first listing is tens of
            // thousands of values (issue 22).
            serde_json::from_str::<T>(value.get()).map(Some).map_err(|e| Unreadable {
                resource,
                key: ev.key.clone(),
                problem: e.to_string(),
            })
        }
        if !matches!(self.kind, WatchKind::Put | WatchKind::Delete) {
            return Ok(Watched::Other { key: self.key.clone() });
        }
        let key = self.key.as_str();
        Ok(if let Some(name) = key.strip_prefix("endpoints/") {
            Watched::Endpoint { name: name.to_owned(), value: decode(self, "endpoint")? }
        } else if let Some(id) = key.strip_prefix("policies/") {
            Watched::Policy { id: id.to_owned(), value: decode(self, "policy")? }
        } else if let Some(k) = key.strip_prefix("netpols/") {
            Watched::NetworkPolicy { key: k.to_owned(), value: decode(self, "NetworkPolicy")? }
        } else if let Some(host) = key.strip_prefix("routes/") {
            Watched::Routes { host: host.to_owned(), value: decode(self, "route set notice")? }
        } else {
            Watched::Other { key: self.key.clone() }
        })
    }
}
