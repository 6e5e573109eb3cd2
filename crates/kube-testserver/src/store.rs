//! The object store: objects by (type, namespace, name), one global resourceVersion counter,
//! and the event history that watches and paginated lists read. Pure: time, UIDs and name
//! suffixes come in as a `Stamp`; no I/O, no locks.

use crate::patch::merge_patch;
use crate::resources::{NAMESPACES, RESOURCES, ResourceType};
use crate::status::ApiError;
use crate::{defaults, services};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub type Obj = Arc<Value>;

/// Where an object lives: type index into `RESOURCES`, namespace ("" when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub res: usize,
    pub ns: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change. `object` is the new state (for a deletion: the last state, stamped with the
/// deletion's resourceVersion); `prev` the state before, so selector-filtered watches can
/// turn a change that leaves the selection into DELETED and lists can be served at an older
/// resourceVersion.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    pub object: Obj,
    pub prev: Option<Obj>,
}

/// Facts from the edge for a create: the time and random values.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub now: String,
    pub uid: String,
    pub suffix: String,
}

/// DeleteOptions preconditions.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// One page of a list: items in key order, the list's resourceVersion, and where the next
/// page starts (the last returned key) when more items match.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Obj>,
    pub rv: u64,
    pub next: Option<(String, String)>,
}

#[derive(Debug)]
pub struct Store {
    rv: u64,
    /// Events after this resourceVersion are all in `history`; older ones are forgotten.
    compacted: u64,
    objects: BTreeMap<Key, Obj>,
    history: VecDeque<Event>,
    max_history: usize,
}

fn rt(res: usize) -> &'static ResourceType {
    &RESOURCES[res]
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or("")
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resourceVersion {s:?}: not a resourceVersion this server issued"
        ))
    })
}

impl Store {
    /// An empty store keeping at most `max_history` events (older ones are compacted away, as
    /// etcd compaction would).
    pub fn new(max_history: usize) -> Store {
        Store { rv: 1, compacted: 1, objects: BTreeMap::new(), history: VecDeque::new(), max_history }
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Result<Obj, ApiError> {
        self.objects.get(key).cloned().ok_or_else(|| not_found(key))
    }

    fn record(&mut self, key: Key, kind: EventType, object: Obj, prev: Option<Obj>) {
        match kind {
            EventType::Deleted => self.objects.remove(&key),
            _ => self.objects.insert(key.clone(), object.clone()),
        };
        self.history.push_back(Event { rv: self.rv, key, kind, object, prev });
        while self.history.len() > self.max_history {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn namespace_exists(&self, ns: &str) -> Result<(), ApiError> {
        let key = Key { res: NAMESPACES, ns: String::new(), name: ns.to_string() };
        self.objects.get(&key).map(|_| ()).ok_or_else(|| not_found(&key))
    }

    /// Checks the body's apiVersion, kind and namespace against the request and fills them in.
    fn check_body(res: usize, ns: &str, body: &mut Value) -> Result<(), ApiError> {
        let t = rt(res);
        if !body.is_object() {
            return Err(ApiError::bad_request(format!("the body of a {} must be a JSON object", t.kind)));
        }
        let api = t.api_version();
        match body["apiVersion"].as_str() {
            Some(a) if !a.is_empty() && a != api => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({a}) does not match the expected API version ({api})"
                )));
            }
            _ => body["apiVersion"] = json!(api),
        }
        match body["kind"].as_str() {
            Some(k) if !k.is_empty() && k != t.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    t.kind
                )));
            }
            _ => body["kind"] = json!(t.kind),
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        if t.namespaced {
            let given = meta_str(body, "namespace");
            if !given.is_empty() && given != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .to_string(),
                ));
            }
            body["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        Ok(())
    }

    /// POST: creates the object (`generateName` honoured), or 409 AlreadyExists.
    pub fn create(&mut self, res: usize, ns: &str, mut body: Value, stamp: &Stamp) -> Result<Obj, ApiError> {
        let t = rt(res);
        Self::check_body(res, ns, &mut body)?;
        if meta_str(&body, "name").is_empty() {
            let prefix = meta_str(&body, "generateName");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    t.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            }
            body["metadata"]["name"] = json!(format!("{prefix}{}", stamp.suffix));
        }
        let name = meta_str(&body, "name").to_string();
        defaults::validate_name(t, &name)?;
        defaults::validate_metadata(t, &body)?;
        if t.namespaced {
            self.namespace_exists(ns)?;
        }
        let key = Key { res, ns: if t.namespaced { ns.to_string() } else { String::new() }, name };
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(t.group, t.resource, &key.name));
        }
        let rv = self.next_rv();
        let m = &mut body["metadata"];
        m["uid"] = json!(stamp.uid);
        m["creationTimestamp"] = json!(stamp.now);
        m["resourceVersion"] = json!(rv.to_string());
        if t.generation {
            m["generation"] = json!(1);
        }
        if let Some(m) = m.as_object_mut() {
            m.remove("deletionTimestamp");
        }
        // A create sets no status where status is a subresource (the real strategies clear it).
        if t.status_subresource
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        defaults::apply(t, &mut body);
        if t.kind == "Service" {
            let used = self
                .objects
                .iter()
                .filter(|(k, _)| k.res == res)
                .filter_map(|(_, o)| services::cluster_ip(o));
            services::allocate(&mut body, &used.collect())?;
            services::validate(&body)?;
        }
        let obj = Arc::new(body);
        self.record(key, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// PUT: replaces the object; 404 when absent, 409 Conflict when the body's
    /// `metadata.resourceVersion` is set and not the current one. An update that changes
    /// nothing keeps the resourceVersion and makes no event, as the real server does.
    pub fn replace(&mut self, key: &Key, body: Value) -> Result<Obj, ApiError> {
        self.write(key, body, false)
    }

    /// PUT on `/status`: only the status changes (the rest is kept as stored; a
    /// `metadata.resourceVersion` in the body is a precondition).
    pub fn replace_status(&mut self, key: &Key, body: Value) -> Result<Obj, ApiError> {
        self.write(key, body, true)
    }

    fn write(&mut self, key: &Key, mut body: Value, status: bool) -> Result<Obj, ApiError> {
        let t = rt(key.res);
        if status && !body.is_object() {
            return Err(ApiError::bad_request(format!("the body of a {} must be a JSON object", t.kind)));
        }
        if status {
            // Everything but the status (and the precondition) comes from the stored object.
            let old = self.get(key)?;
            let mut whole = (*old).clone();
            whole["status"] = body["status"].take();
            whole["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"].take();
            body = whole;
        }
        Self::check_body(key.res, &key.ns, &mut body)?;
        let name = meta_str(&body, "name");
        if name != key.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
        let old = self.get(key)?;
        defaults::validate_metadata(t, &body)?;
        let (uid, old_uid) = (meta_str(&body, "uid"), meta_str(&old, "uid"));
        if !uid.is_empty() && uid != old_uid {
            return Err(ApiError::conflict(
                t.group,
                t.resource,
                &key.name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"),
            ));
        }
        let given = meta_str(&body, "resourceVersion");
        if !given.is_empty() && parse_rv(given)?.to_string() != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(
                t.group,
                t.resource,
                &key.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        for field in ["uid", "creationTimestamp", "resourceVersion"] {
            body["metadata"][field] = old["metadata"][field].clone();
        }
        if t.status_subresource && !status {
            body["status"] = old["status"].clone();
        }
        // Defaults first: the spec is compared as stored, as the real server compares after defaulting.
        defaults::apply(t, &mut body);
        if t.kind == "Service" {
            services::carry(&old, &mut body)?;
            services::validate(&body)?;
        }
        if t.generation {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            body["metadata"]["generation"] = json!(if body["spec"] != old["spec"] { g + 1 } else { g });
        }
        if body == *old {
            return Ok(old);
        }
        let rv = self.next_rv();
        body["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Arc::new(body);
        self.record(key.clone(), EventType::Modified, obj.clone(), Some(old));
        Ok(obj)
    }

    /// PATCH with a JSON merge patch: the patched object goes through `replace`, so a
    /// `metadata.resourceVersion` in the patch is a precondition.
    pub fn patch(&mut self, key: &Key, patch: &Value, status: bool) -> Result<Obj, ApiError> {
        let old = self.get(key)?;
        if !patch.is_object() {
            return Err(ApiError::bad_request(format!("a merge patch must be a JSON object, got {patch}")));
        }
        let mut patched = merge_patch(&old, patch);
        // A patch is against the current object: only an RV the patch itself names is a precondition.
        if patch["metadata"]["resourceVersion"].is_null() {
            patched["metadata"]["resourceVersion"] = json!("");
        }
        self.write(key, patched, status)
    }

    /// DELETE: removes the object now (no graceful deletion or finalizers); deleting a
    /// namespace deletes every object in it first. 404 when absent, 409 on a failed
    /// precondition.
    pub fn delete(&mut self, key: &Key, pre: &Preconditions) -> Result<Obj, ApiError> {
        let t = rt(key.res);
        let old = self.get(key)?;
        let conflict = |what: &str, want: &str, have: &str| {
            ApiError::conflict(
                t.group,
                t.resource,
                &key.name,
                &format!(
                    "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
                ),
            )
        };
        if let Some(uid) = &pre.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(conflict("UID", uid, meta_str(&old, "uid")));
        }
        if let Some(rv) = &pre.resource_version
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(conflict("ResourceVersion", rv, meta_str(&old, "resourceVersion")));
        }
        if key.res == NAMESPACES {
            let inside: Vec<Key> =
                self.objects.keys().filter(|k| rt(k.res).namespaced && k.ns == key.name).cloned().collect();
            for k in inside {
                self.remove(&k);
            }
        }
        Ok(self.remove(key))
    }

    fn remove(&mut self, key: &Key) -> Obj {
        let old = self.objects.get(key).cloned().expect("remove is called for keys just looked up");
        let rv = self.next_rv();
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last = Arc::new(last);
        self.record(key.clone(), EventType::Deleted, last.clone(), Some(old));
        last
    }

    /// Forgets the history: resuming from any resourceVersion issued so far gives 410. The
    /// counter moves on by one so that even the newest issued version is older than the
    /// compaction point.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
    }

    fn expired(&self, rv: u64) -> ApiError {
        ApiError::expired(format!("too old resource version: {rv} ({})", self.compacted))
    }

    /// Events of type `res` (in namespace `ns` when given) after `rv`; 410 Expired when the
    /// history no longer reaches back to `rv`.
    pub fn events_after(&self, res: usize, ns: Option<&str>, rv: u64) -> Result<Vec<Event>, ApiError> {
        if rv < self.compacted {
            return Err(self.expired(rv));
        }
        if rv > self.rv {
            return Err(ApiError::too_large_rv(rv, self.rv));
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.key.res == res && ns.is_none_or(|n| e.key.ns == n))
            .cloned()
            .collect())
    }

    /// The objects of type `res` (in `ns` when given) as they were at `at` (default: now),
    /// keys after `after` only, in key order, filtered by `keep`, at most `limit`.
    pub fn list(
        &self,
        res: usize,
        ns: Option<&str>,
        at: Option<u64>,
        after: Option<(String, String)>,
        limit: Option<usize>,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Page, ApiError> {
        let at_rv = at.unwrap_or(self.rv);
        if at_rv > self.rv {
            return Err(ApiError::too_large_rv(at_rv, self.rv));
        }
        if at_rv < self.rv && at_rv < self.compacted {
            return Err(ApiError::expired(format!(
                "The resourceVersion for the provided list is too old (resourceVersion {at_rv}, compacted {}). Start a new list without resourceVersion or continue token.",
                self.compacted
            )));
        }
        let in_range = |k: &Key| {
            k.res == res
                && ns.is_none_or(|n| k.ns == n)
                && after.as_ref().is_none_or(|(ans, aname)| (&k.ns, &k.name) > (ans, aname))
        };
        let lo = Key { res, ns: ns.unwrap_or("").to_string(), name: String::new() };
        let mut view: BTreeMap<Key, Option<Obj>> = self
            .objects
            .range(lo..)
            .take_while(|(k, _)| k.res == res && ns.is_none_or(|n| k.ns == n))
            .filter(|(k, _)| in_range(k))
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        // Undo the changes made after `at_rv`, newest first, to see the state at `at_rv`.
        for e in self.history.iter().rev().take_while(|e| e.rv > at_rv) {
            if in_range(&e.key) {
                view.insert(e.key.clone(), e.prev.clone());
            }
        }
        let mut items = Vec::new();
        let mut next = None;
        for obj in view.into_values().flatten() {
            if !keep(&obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let last: &Obj = items.last().expect("limit is at least one");
                next = Some((meta_str(last, "namespace").to_string(), meta_str(last, "name").to_string()));
                break;
            }
            items.push(obj);
        }
        Ok(Page { items, rv: at_rv, next })
    }

    /// The whole state as JSON: the resourceVersion and every object with its type.
    pub fn snapshot(&self) -> Value {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|(k, o)| json!({"apiVersion": rt(k.res).api_version(), "resource": rt(k.res).resource, "object": **o}))
            .collect();
        json!({"resourceVersion": self.rv.to_string(), "objects": objects})
    }

    /// A store holding a `snapshot`'s state, with no history: like an API server restarted on
    /// the same etcd, every resourceVersion issued before is compacted away.
    pub fn restore(snapshot: &Value, max_history: usize) -> Result<Store, String> {
        let rv: u64 = snapshot["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or("the state has no resourceVersion")?;
        let mut store = Store::new(max_history);
        for entry in snapshot["objects"].as_array().ok_or("the state has no objects list")? {
            let (api, resource) =
                (entry["apiVersion"].as_str().unwrap_or(""), entry["resource"].as_str().unwrap_or(""));
            let res = crate::resources::find_by_api(api, resource)
                .ok_or_else(|| format!("unknown type {api} {resource}"))?;
            let obj = &entry["object"];
            let key = Key {
                res,
                ns: meta_str(obj, "namespace").to_string(),
                name: meta_str(obj, "name").to_string(),
            };
            store.objects.insert(key, Arc::new(obj.clone()));
        }
        store.rv = rv + 1;
        store.compacted = store.rv;
        Ok(store)
    }

    /// Every stored object of type `res` (for test access).
    pub fn all(&self, res: usize) -> Vec<Obj> {
        self.objects.iter().filter(|(k, _)| k.res == res).map(|(_, v)| v.clone()).collect()
    }
}

fn not_found(key: &Key) -> ApiError {
    let t = rt(key.res);
    ApiError::not_found(t.group, t.resource, &key.name)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
