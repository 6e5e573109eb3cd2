//! The inputs' sharing as data: which policy objects a pass gets after which events (the
//! compile cache knows an unchanged policy by its object), and when tenancy is derived again.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use romana_api::rest::{Tenant, WatchEvent, WatchKind};

use super::State;
use super::tests::{endpoint, lists, loaded, policy, tenant};

#[test]
fn an_unchanged_policy_keeps_its_object() {
    let mut s = loaded();
    let ev =
        |v: serde_json::Value| WatchEvent::with_value(7, WatchKind::Put, "policies/web".into(), Some(&v));
    s.inputs.apply_watch(&ev(policy("web", "red", "web")));
    // Held, so that no later object can take its address.
    let first = s.inputs.romana["web"][0].clone();
    let same = |s: &State| Arc::ptr_eq(&s.inputs.romana["web"][0], &first);
    // The same rules again, on the watch and in a re-read: the compile cache sees the same object.
    s.inputs.apply_watch(&ev(policy("web", "red", "web")));
    assert!(same(&s));
    let mut again = lists();
    again.policies = vec![serde_json::from_value(policy("web", "red", "web")).unwrap()];
    s.inputs.replace(again);
    assert!(same(&s));
    // Other rules under the same id: a new object, which the cache compares and compiles.
    s.inputs.apply_watch(&ev(policy("web", "blue", "x")));
    assert!(!same(&s));
    assert_eq!(s.inputs.romana["web"][0].tenant, "blue");
    // A re-read without it: gone.
    s.inputs.replace(lists());
    assert!(!s.inputs.romana.contains_key("web"));
}

#[test]
fn tenancy_is_derived_again_only_when_tenants_or_endpoints_change() {
    let mut s = loaded();
    let red = Tenant { isolation: "segment".into(), ..tenant("red", &["web"]) };
    s.inputs.set_tenants(vec![red, tenant("blue", &["x"])]);
    let (_, first) = s.inputs.tenancy();
    assert!(!first.is_empty(), "red's segments are isolated");
    let same = |a: &[Arc<romana_policy::PolicyRules>], b: &[Arc<romana_policy::PolicyRules>]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
    };
    // A policy write changes neither: the very same implicit policies.
    let ev =
        WatchEvent::with_value(7, WatchKind::Put, "policies/web".into(), Some(&policy("web", "red", "web")));
    s.inputs.apply_watch(&ev);
    assert!(same(&first, &s.inputs.tenancy().1));
    // An endpoint in a segment no record names: derived again, its segment's policy joins and
    // the others keep their objects.
    s.inputs.upsert(&endpoint("d", "10.0.0.9", "red", "db", "h1"));
    let (_, again) = s.inputs.tenancy();
    assert_eq!(again.len(), first.len() + 1);
    assert!(first.iter().all(|p| again.iter().any(|q| Arc::ptr_eq(p, q))));
}
