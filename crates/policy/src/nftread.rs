//! Our table as read over netlink (romana-host's `nftread`) turned into the planner's
//! `Observed`, with the JSON reader's decisions (`nftjson.rs`): a set of a type or with flags we
//! never create, or with a key we cannot read, is foreign (replaced); a base chain on a hook we
//! never use or of another chain type cannot match ours (rewritten); rules are their comments.
//! Pure; the host adapter gives the parts.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::nftjson::hook;
use crate::nftplan::{Observed, ObservedChain};
use crate::ruleset::{Element, Hook, Set, SetType};

/// A set as read: `ty` is `None` for a type or flags we never create, `elements` `None` when a
/// key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSet {
    pub name: String,
    pub ty: Option<SetType>,
    pub elements: Option<Vec<Element>>,
}

/// A chain as read: hook name, priority and chain type for a base chain; rule comments in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChain {
    pub name: String,
    pub base: Option<(String, i32, String)>,
    pub rules: Vec<String>,
}

pub fn observed(sets: Vec<ReadSet>, chains: Vec<ReadChain>) -> Observed {
    let mut obs = Observed::default();
    for s in sets {
        match (s.ty, s.elements) {
            (Some(ty), Some(elements)) => {
                let elements: BTreeSet<Element> = elements.into_iter().collect();
                obs.sets.insert(s.name, Arc::new(Set { ty, elements }));
            }
            _ => {
                obs.foreign_sets.insert(s.name);
            }
        }
    }
    for c in chains {
        let base = c.base.map(|(h, prio, ty)| match hook(&h).filter(|h| h.chain_type() == ty) {
            Some(h) => (h, prio),
            None => (Hook::Forward, i32::MIN),
        });
        obs.chains.insert(c.name, ObservedChain { base, rules: Arc::new(c.rules) });
    }
    obs
}
