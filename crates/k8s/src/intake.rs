//! The loop's bookkeeping of watcher events: the desired picture, relists buffered until they
//! are complete (so a half-listed kind never looks like deletions), which kinds have synced,
//! and when the oldest unplanned event came. Pure: times arrive inside the events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::metrics::{KindLabels, Metrics};
use crate::state::{Desired, Kind};
use crate::watch::Event;

#[derive(Debug, Default)]
pub struct Intake {
    pub desired: Desired,
    relists: BTreeMap<Kind, Desired>,
    synced: BTreeSet<Kind>,
    /// A relist finished: romanad should be read again before planning (what changed there
    /// while the watch was down is as unknown as what changed here).
    pub relisted: bool,
    /// The earliest event not yet planned, for the event-to-write lag.
    pub oldest: Option<Instant>,
}

impl Intake {
    /// True once every kind has been listed completely at least once: before that a plan would
    /// delete what is simply not listed yet.
    pub fn ready(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Applied(o, at) => {
                self.desired.upsert(o);
                self.touch(at);
            }
            Event::Deleted(k, at) => {
                self.desired.remove(&k);
                self.touch(at);
            }
            Event::RelistBegin(kind) => {
                self.relists.insert(kind, Desired::default());
            }
            Event::RelistItem(o) => {
                // Items without a begun relist cannot happen with kube's watcher; keep them
                // anyway rather than lose them.
                match o {
                    crate::state::Obj::Tenant(_) => self.relists.entry(Kind::Namespace),
                    crate::state::Obj::Pod(_) => self.relists.entry(Kind::Pod),
                    crate::state::Obj::Host(_) => self.relists.entry(Kind::Node),
                    crate::state::Obj::Netpol(..) => self.relists.entry(Kind::NetworkPolicy),
                    crate::state::Obj::Service(_) => self.relists.entry(Kind::Service),
                }
                .or_default()
                .upsert(o);
            }
            Event::RelistDone(kind, at) => {
                let mut listed = self.relists.remove(&kind).unwrap_or_default();
                self.desired.replace_kind(kind, &mut listed);
                self.synced.insert(kind);
                self.relisted = true;
                self.touch(at);
            }
        }
    }

    fn touch(&mut self, at: Instant) {
        self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
    }

    pub fn publish(&self, m: &Metrics) {
        for k in Kind::ALL {
            let n = i64::try_from(self.desired.count(k)).unwrap_or(i64::MAX);
            m.objects.get_or_create(&KindLabels { kind: k.as_str().into() }).set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Obj, ObjKey};
    use romana_api::rest::PodInfo;

    fn pod(name: &str) -> Obj {
        Obj::Pod(PodInfo { namespace: "n".into(), name: name.into(), ..PodInfo::default() })
    }

    fn names(i: &Intake) -> Vec<String> {
        i.desired.pods.keys().map(|k| k.1.clone()).collect()
    }

    #[test]
    fn relists_replace_only_when_complete() {
        let t = Instant::now();
        let mut i = Intake::default();
        for k in [Kind::Namespace, Kind::Node, Kind::NetworkPolicy, Kind::Service] {
            i.handle(Event::RelistBegin(k));
            i.handle(Event::RelistDone(k, t));
        }
        i.handle(Event::RelistBegin(Kind::Pod));
        i.handle(Event::RelistItem(pod("a")));
        i.handle(Event::RelistItem(pod("b")));
        // Half listed: neither ready nor visible.
        assert!(!i.ready());
        assert!(names(&i).is_empty());
        i.handle(Event::RelistDone(Kind::Pod, t));
        assert!(i.ready() && std::mem::take(&mut i.relisted));
        assert_eq!(names(&i), ["a", "b"]);
        i.handle(Event::Applied(pod("c"), t));
        i.handle(Event::Deleted(ObjKey::Pod(("n".into(), "a".into())), t));
        assert_eq!(names(&i), ["b", "c"]);
        // A relist after a gap (410): "b" vanished meanwhile, "d" appeared; until it completes
        // the old picture stands.
        i.handle(Event::RelistBegin(Kind::Pod));
        i.handle(Event::RelistItem(pod("c")));
        i.handle(Event::RelistItem(pod("d")));
        assert_eq!(names(&i), ["b", "c"]);
        i.handle(Event::RelistDone(Kind::Pod, t));
        assert_eq!(names(&i), ["c", "d"]);
        assert!(i.relisted && i.ready());
    }
}
