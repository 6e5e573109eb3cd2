//! The compiler's index of the cluster's endpoints, built once per compile: endpoints by label
//! (key and value), and each endpoint's tenant as a small number. A selector's set then looks only
//! at the endpoints that carry its first `In` value and decides each tenant once, without reading
//! the endpoints the tenant rules out: at 50,000 endpoints, reading every candidate's tenant
//! string (a cache miss each) was a third of a cold compile (docs/benchmarks.md, issue 22).

use std::collections::BTreeMap;

use crate::eval::Endpoint;
use crate::model::{Operator, Selector};

/// `tenant_of` for a host: never in a selector's set.
const HOST: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct EndpointIndex<'a> {
    /// Endpoints (positions) by label key and value, in order.
    by_label: BTreeMap<(&'a str, &'a str), Vec<u32>>,
    /// Each endpoint's tenant (a position in `tenants`), `HOST` for a host.
    tenant_of: Vec<u32>,
    tenants: Vec<&'a str>,
}

impl<'a> EndpointIndex<'a> {
    pub(crate) fn new(all: &'a [Endpoint]) -> EndpointIndex<'a> {
        let mut by_label: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
        let mut ids: BTreeMap<&str, u32> = BTreeMap::new();
        let mut tenants = Vec::new();
        let mut tenant_of = Vec::with_capacity(all.len());
        for (i, e) in all.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 endpoints");
            for (k, v) in &e.labels {
                by_label.entry((k.as_str(), v.as_str())).or_default().push(i);
            }
            let id = if e.is_host {
                HOST
            } else {
                *ids.entry(e.tenant.as_str()).or_insert_with(|| {
                    tenants.push(e.tenant.as_str());
                    (tenants.len() - 1) as u32
                })
            };
            tenant_of.push(id);
        }
        EndpointIndex { by_label, tenant_of, tenants }
    }

    /// Positions of the endpoints that may be in `sel`'s set: no host, of a tenant `tenant_ok`
    /// accepts (asked once per tenant), carrying a value of `sel`'s first `In` requirement (any
    /// endpoint when it has none). In order; the caller still matches `sel` on each.
    pub(crate) fn candidates(
        &self,
        sel: Option<&Selector>,
        mut tenant_ok: impl FnMut(&str) -> bool,
    ) -> Vec<usize> {
        let mut ok: Vec<Option<bool>> = vec![None; self.tenants.len()];
        let mut keep = |i: &u32| {
            let t = self.tenant_of[*i as usize];
            t != HOST && *ok[t as usize].get_or_insert_with(|| tenant_ok(self.tenants[t as usize]))
        };
        let first_in = sel.and_then(|s| s.requirements.iter().find(|r| r.op == Operator::In));
        match first_in {
            Some(r) => {
                let mut v: Vec<usize> = r
                    .values
                    .iter()
                    .flat_map(|val| self.by_label.get(&(r.key.as_str(), val.as_str())).into_iter().flatten())
                    .filter(|i| keep(i))
                    .map(|i| *i as usize)
                    .collect();
                // One value's list is in order already; several are merged.
                if r.values.len() > 1 {
                    v.sort_unstable();
                    v.dedup();
                }
                v
            }
            None => (0..self.tenant_of.len() as u32).filter(|i| keep(i)).map(|i| i as usize).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::Requirement;

    fn ep(tenant: &str, app: &str, is_host: bool) -> Endpoint {
        Endpoint {
            id: format!("{tenant}/{app}"),
            tenant: tenant.into(),
            labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            ip: None,
            ports: vec![],
            host: "h".into(),
            is_host,
        }
    }

    /// (selector values of `app In`, or none; accepted tenant) -> candidate positions.
    fn check(values: Option<&[&str]>, tenant: &str, want: &[usize]) {
        let all = [ep("a", "x", false), ep("b", "x", false), ep("a", "y", false), ep("a", "x", true)];
        let index = EndpointIndex::new(&all);
        let sel = values.map(|vs| Selector {
            requirements: vec![Requirement {
                key: "app".into(),
                op: Operator::In,
                values: vs.iter().map(|v| (*v).to_owned()).collect(),
            }],
        });
        let mut asked = Vec::new();
        let got = index.candidates(sel.as_ref(), |t| {
            asked.push(t.to_owned());
            t == tenant
        });
        assert_eq!(got, want, "values {values:?}, tenant {tenant}");
        let mut once = asked.clone();
        once.sort();
        once.dedup();
        assert_eq!(asked.len(), once.len(), "each tenant is asked once: {asked:?}");
    }

    #[test]
    fn candidates_by_first_in_value_and_tenant_never_hosts() {
        check(Some(&["x"]), "a", &[0]);
        check(Some(&["x"]), "b", &[1]);
        check(Some(&["y", "x"]), "a", &[0, 2]);
        check(Some(&["z"]), "a", &[]);
        check(None, "a", &[0, 2]);
    }
}
