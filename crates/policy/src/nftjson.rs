//! Reads `nft -j list table inet romana` into an `Observed` table: our sets with their elements,
//! our chains with each rule's key (its comment). Pure parsing; anything we would not
//! have written (a set of another type, an element we cannot read) is reported so the plan
//! replaces it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use romana_model::Family;
use serde_json::Value;

use crate::nftplan::{Observed, ObservedChain};
use crate::ruleset::{Element, Hook, Set, SetType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(pub String);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable nft JSON: {}", self.0)
    }
}

impl std::error::Error for JsonError {}

fn set_type(v: &Value) -> Option<SetType> {
    let fam = |s: &str| match s {
        "ipv4_addr" => Some(Family::V4),
        "ipv6_addr" => Some(Family::V6),
        _ => None,
    };
    match v {
        Value::String(s) => fam(s).map(SetType::Addr),
        Value::Array(a) if a.len() == 2 && a[1] == "inet_service" => {
            a[0].as_str().and_then(fam).map(SetType::AddrPort)
        }
        _ => None,
    }
}

fn element(ty: SetType, v: &Value) -> Option<Element> {
    // Elements with per-element options come wrapped as {"elem": {"val": ...}}.
    let v = v.get("elem").and_then(|e| e.get("val")).unwrap_or(v);
    match ty {
        SetType::Addr(_) => v.as_str()?.parse::<IpAddr>().ok().map(Element::Addr),
        SetType::AddrPort(_) => {
            let c = v.get("concat")?.as_array()?;
            let ip = c.first()?.as_str()?.parse().ok()?;
            let port = u16::try_from(c.get(1)?.as_u64()?).ok()?;
            Some(Element::AddrPort(ip, port))
        }
    }
}

pub fn hook(s: &str) -> Option<Hook> {
    match s {
        "prerouting" => Some(Hook::Prerouting),
        "forward" => Some(Hook::Forward),
        "input" => Some(Hook::Input),
        "output" => Some(Hook::Output),
        "postrouting" => Some(Hook::Postrouting),
        _ => None,
    }
}

/// Parses the listing. `Ok(None)` would never come from nft; a missing table is the caller's
/// "No such file or directory" exit.
pub fn parse(text: &str) -> Result<Observed, JsonError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| JsonError(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| JsonError("no \"nftables\" array".into()))?;
    let mut obs = Observed::default();
    let mut rules: Vec<(String, String)> = Vec::new();
    for item in items {
        if let Some(s) = item.get("set") {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let ty = s.get("type").and_then(set_type);
            let Some(ty) = ty.filter(|_| s.get("flags").is_none()) else {
                obs.foreign_sets.insert(name);
                continue;
            };
            let mut elements = BTreeSet::new();
            let mut readable = true;
            for e in s.get("elem").and_then(Value::as_array).into_iter().flatten() {
                match element(ty, e) {
                    Some(e) => {
                        elements.insert(e);
                    }
                    None => readable = false,
                }
            }
            if readable {
                obs.sets.insert(name, std::sync::Arc::new(Set { ty, elements }));
            } else {
                obs.foreign_sets.insert(name);
            }
        } else if let Some(c) = item.get("chain") {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            // A chain of another type on one of our hooks cannot match ours either.
            let ours = |h: &Hook| c.get("type").and_then(Value::as_str) == Some(h.chain_type());
            let base =
                match (c.get("hook").and_then(Value::as_str).and_then(hook).filter(ours), c.get("prio")) {
                    (Some(h), Some(p)) => Some((h, p.as_i64().unwrap_or(i64::MIN) as i32)),
                    (None, None) => None,
                    // A hook we never use: a base chain that cannot match ours, rewritten.
                    _ => Some((Hook::Forward, i32::MIN)),
                };
            obs.chains.insert(name, ObservedChain { base, rules: Default::default() });
        } else if let Some(r) = item.get("rule") {
            let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default().to_owned();
            let key = r.get("comment").and_then(Value::as_str).unwrap_or_default().to_owned();
            rules.push((chain, key));
        }
    }
    for (chain, rule) in rules {
        if let Some(c) = obs.chains.get_mut(&chain) {
            Arc::make_mut(&mut c.rules).push(rule);
        }
    }
    Ok(obs)
}
