//! The consistency check's per-replica state: the reclaim graces, when each suspect was first
//! seen, and the endpoint records as last parsed, shared by the reclaim loop (`reclaim.rs`) and
//! `GET /check` (`check_api.rs`) through `AppState`.

use std::collections::HashMap;
use std::sync::Mutex;

use romana_store::{KeyValue, Revision};

use crate::consistency::{self, Endpoint, Graces, Picture, Sightings};

/// This replica's reclaim settings and what it has seen; shared by the loop and `GET /check`.
#[derive(Debug, Default)]
pub struct Tracker {
    pub graces: Graces,
    pub sightings: Mutex<Sightings>,
    pub records: Mutex<RecordCache>,
}

impl Tracker {
    pub fn new(graces: Graces) -> Tracker {
        Tracker { graces, sightings: Mutex::new(Sightings::new()), records: Mutex::default() }
    }

    /// Sightings updated with `p` at `now`.
    pub fn observe(&self, p: &Picture, now: u64) -> Sightings {
        let mut s = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
        *s = consistency::observe(&s, p, now);
        s.clone()
    }
}

/// Endpoint records as the check last parsed them, by key, each with the revision it was parsed
/// at (`None`: it did not parse): a pass parses only the records that changed since the last
/// one. Every pass parsed all of them (10,000 records: about 10 ms of romanad's CPU every 5 s, on
/// the cores a pod's start needs, issue 22).
#[derive(Debug, Default)]
pub struct RecordCache {
    by_key: HashMap<String, Cached>,
    /// Passes so far: an entry a pass did not list is gone.
    passes: u64,
}

#[derive(Debug)]
struct Cached {
    revision: Revision,
    endpoint: Option<Endpoint>,
    /// The last pass that listed the record.
    listed: u64,
}

impl RecordCache {
    /// The endpoints of `kvs` (a listing of every record, in its order), parsed with `parse` when
    /// new or changed; records no longer listed are forgotten. The map is kept from pass to pass
    /// (building it again cost every key copied and hashed into a new map: 50,000 records per
    /// pass at the 5x scale).
    pub fn endpoints(
        &mut self,
        kvs: &[KeyValue],
        parse: impl Fn(&[u8]) -> Option<Endpoint>,
    ) -> Vec<Endpoint> {
        self.passes += 1;
        let pass = self.passes;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let entry = match self.by_key.get_mut(kv.key.as_str()) {
                Some(e) => {
                    if e.revision != kv.mod_revision {
                        *e = Cached { revision: kv.mod_revision, endpoint: parse(&kv.value), listed: pass };
                    }
                    e.listed = pass;
                    e
                }
                None => self.by_key.entry(kv.key.clone()).or_insert(Cached {
                    revision: kv.mod_revision,
                    endpoint: parse(&kv.value),
                    listed: pass,
                }),
            };
            out.extend(entry.endpoint.clone());
        }
        if self.by_key.len() > kvs.len() {
            self.by_key.retain(|_, e| e.listed == pass);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn kv(key: &str, rev: Revision, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    /// Listings in turn: (key, revision, value) each; what each pass parsed and returned.
    #[test]
    fn only_new_and_changed_records_are_parsed() {
        let mut cache = RecordCache::default();
        let parsed = Cell::new(Vec::<String>::new());
        let parse = |v: &[u8]| {
            let text = String::from_utf8_lossy(v).into_owned();
            let mut p = parsed.take();
            p.push(text.clone());
            parsed.set(p);
            let (name, ip) = text.split_once(' ')?;
            Some(Endpoint { name: name.into(), ip: ip.into(), host: "h1".into(), kind: "pod".into() })
        };
        let mut check = |listing: &[(&str, Revision, &str)], want_parsed: &[&str], want: &[&str]| {
            let kvs: Vec<KeyValue> = listing.iter().map(|(k, r, v)| kv(k, *r, v)).collect();
            let got: Vec<String> =
                cache.endpoints(&kvs, parse).into_iter().map(|e| e.name + " " + &e.ip).collect();
            assert_eq!(parsed.take(), want_parsed, "parsed, for {listing:?}");
            assert_eq!(got, want, "endpoints, for {listing:?}");
        };
        check(
            &[("a", 2, "a 10.0.0.2"), ("b", 3, "b 10.0.0.3"), ("c", 4, "garbage")],
            &["a 10.0.0.2", "b 10.0.0.3", "garbage"],
            &["a 10.0.0.2", "b 10.0.0.3"],
        );
        // Nothing changed: nothing parsed (not even the record that did not parse).
        check(
            &[("a", 2, "a 10.0.0.2"), ("b", 3, "b 10.0.0.3"), ("c", 4, "garbage")],
            &[],
            &["a 10.0.0.2", "b 10.0.0.3"],
        );
        // b changed, c fixed, d new, a gone.
        check(
            &[("b", 7, "b 10.0.0.9"), ("c", 8, "c 10.0.0.4"), ("d", 9, "d 10.0.0.5")],
            &["b 10.0.0.9", "c 10.0.0.4", "d 10.0.0.5"],
            &["b 10.0.0.9", "c 10.0.0.4", "d 10.0.0.5"],
        );
        // a back at its old revision (deleted and written again would have a new one; a store
        // restored from a backup can go back): parsed again, since it was forgotten.
        check(&[("a", 2, "a 10.0.0.2")], &["a 10.0.0.2"], &["a 10.0.0.2"]);
    }
}
