//! What one `GET /watch` stream asks for and may see: its query (`from`, any number of `prefix`
//! parameters), the prefixes normalised (sorted, none inside another), each checked against the
//! caller's scope, and the per-stream filter the shared watch (`watch_hub`) applies to every key.
//! Pure: no HTTP, no store.

use romana_auth::Principal;
use romana_store::Revision;

use crate::watch_scope::{self, ScopeError};

/// At most this many `prefix` parameters on one stream (the agent asks for 7).
pub const MAX_PREFIXES: usize = 32;

/// Why a query is refused: 400 or 403, with a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    BadRequest(String),
    Scope(ScopeError),
}

/// A parsed query: the `from` text (parsed by the handler) and the prefixes, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    pub from: Option<String>,
    pub prefixes: Vec<String>,
}

/// Reads the query's pairs: `from` at most once, `prefix` any number of times (none: everything
/// the caller may read), nothing else. Each prefix is checked against `who`'s scope exactly as a
/// single-prefix watch is: one refused prefix refuses the stream.
pub fn parse(who: &Principal, pairs: &[(String, String)]) -> Result<WatchRequest, QueryError> {
    let mut from = None;
    let mut prefixes = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "from" if from.is_some() => return Err(QueryError::BadRequest("from: given twice".to_owned())),
            "from" => from = Some(v.clone()),
            "prefix" => prefixes.push(v.clone()),
            other => {
                return Err(QueryError::BadRequest(format!(
                    "unknown field `{other}`, expected `from` or `prefix`"
                )));
            }
        }
    }
    if prefixes.len() > MAX_PREFIXES {
        return Err(QueryError::BadRequest(format!(
            "{} prefix parameters; at most {MAX_PREFIXES} on one stream",
            prefixes.len()
        )));
    }
    if prefixes.is_empty() {
        prefixes.push(String::new());
    }
    for p in &prefixes {
        watch_scope::check(who, p).map_err(QueryError::Scope)?;
    }
    Ok(WatchRequest { from, prefixes: normalise(prefixes) })
}

/// Sorted, without duplicates, and without a prefix that another one already covers
/// (`routes/` covers `routes/h1`), so that the prefixes' ranges are disjoint and no key is sent
/// twice.
pub fn normalise(mut prefixes: Vec<String>) -> Vec<String> {
    prefixes.sort();
    prefixes.dedup();
    let mut out: Vec<String> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        // Sorted: a covering prefix sorts right before what it covers.
        if out.last().is_some_and(|l| p.starts_with(l.as_str())) {
            continue;
        }
        out.push(p);
    }
    out
}

/// The longest prefix every one of `prefixes` starts with (on a character boundary): what one
/// store watch for all of them follows.
pub fn common_prefix(prefixes: &[String]) -> String {
    let Some(first) = prefixes.first() else { return String::new() };
    let mut end = first.len();
    for p in &prefixes[1..] {
        end = first
            .char_indices()
            .zip(p.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(end);
    }
    first[..end].to_owned()
}

/// Which changes one stream gets: a key under one of its prefixes (relative to the store
/// prefix), at or after that prefix's first revision, and allowed to the caller's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Disjoint prefixes with the first revision wanted under each (after a list at revision
    /// R, R + 1; on a resume, the resume point).
    pub prefixes: Vec<(String, Revision)>,
    pub allowed: &'static [&'static str],
}

impl Filter {
    /// Every prefix from the same revision.
    pub fn from(prefixes: &[String], from: Revision, allowed: &'static [&'static str]) -> Filter {
        Filter { prefixes: prefixes.iter().map(|p| (p.clone(), from)).collect(), allowed }
    }

    /// The earliest revision any prefix wants.
    pub fn first(&self) -> Revision {
        self.prefixes.iter().map(|(_, r)| *r).min().unwrap_or(0)
    }

    /// Whether the change of `key` (relative) at `revision` goes to this stream.
    pub fn wants(&self, key: &str, revision: Revision) -> bool {
        self.prefixes.iter().any(|(p, from)| revision >= *from && key.starts_with(p.as_str()))
            && watch_scope::key_allowed(self.allowed, key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use romana_auth::Role;

    fn principal(roles: &[Role]) -> Principal {
        Principal {
            name: "agent-h1".into(),
            roles: roles.to_vec(),
            tenants: vec![],
            hosts: vec!["h1".into()],
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// One case: a role, a query, and the prefixes it gives or the start of the error.
    fn check(roles: &[Role], q: &[(&str, &str)], expect: Result<&[&str], &str>) {
        let got = parse(&principal(roles), &pairs(q));
        match (got, expect) {
            (Ok(r), Ok(want)) => assert_eq!(r.prefixes, want, "{q:?}"),
            (Err(QueryError::BadRequest(m)), Err(needle)) => assert!(m.contains(needle), "{q:?}: {m}"),
            (Err(QueryError::Scope(e)), Err(needle)) => {
                assert!(e.to_string().contains(needle), "{q:?}: {e}")
            }
            (got, _) => panic!("{q:?}: {got:?}"),
        }
    }

    #[test]
    fn queries() {
        let svc = &[Role::Service][..];
        let agent = [
            ("prefix", "routes/h1"),
            ("prefix", "endpoints/"),
            ("prefix", "policies/"),
            ("prefix", "netpols/"),
            ("prefix", "tenants/"),
            ("prefix", "segments/"),
            ("prefix", "vips/"),
            ("from", "0"),
        ];
        check(
            svc,
            &agent,
            Ok(&["endpoints/", "netpols/", "policies/", "routes/h1", "segments/", "tenants/", "vips/"]),
        );
        check(svc, &[("from", "0")], Ok(&[""]));
        check(svc, &[("prefix", "routes/h1"), ("prefix", "routes/")], Ok(&["routes/"]));
        check(svc, &[("prefix", "tenants/"), ("prefix", "tenants/")], Ok(&["tenants/"]));
        check(svc, &[("prefix", ""), ("prefix", "tenants/")], Ok(&[""]));
        // The attacker's forms: one forbidden prefix among allowed ones refuses the stream.
        check(svc, &[("prefix", "routes/h1"), ("prefix", "auth/keys/")], Err("may not watch \"auth/keys/\""));
        check(svc, &[("prefix", "auth/"), ("prefix", "routes/")], Err("may not watch \"auth/\""));
        check(svc, &[("prefix", "tenants/"), ("prefix", "counters/")], Err("may not watch \"counters/\""));
        check(svc, &[("prefix", "tenants/"), ("prefix", "routes/../auth/")], Err("is not a key prefix"));
        check(svc, &[("prefix", "tenants/"), ("prefix", "auth")], Err("may not watch \"auth\""));
        check(&[Role::Tenant], &[("prefix", "tenants/"), ("prefix", "")], Err("may watch nothing"));
        check(&[Role::Admin], &[("prefix", "counters/"), ("prefix", "auth/users/")], Err("may not watch"));
        check(svc, &[("from", "0"), ("from", "1")], Err("from: given twice"));
        check(svc, &[("color", "red")], Err("unknown field `color`"));
        let many: Vec<(&str, &str)> = (0..=MAX_PREFIXES).map(|_| ("prefix", "tenants/")).collect();
        check(svc, &many, Err("at most 32"));
    }

    #[test]
    fn common_prefixes() {
        for (ps, want) in [
            (&["routes/h1", "routes/h2"][..], "routes/h"),
            (&["endpoints/", "policies/"][..], ""),
            (&["tenants/"][..], "tenants/"),
            (&[][..], ""),
            (&["ré/a", "ré/b"][..], "ré/"),
            (&["é", "è"][..], ""),
        ] {
            let ps: Vec<String> = ps.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(common_prefix(&ps), want, "{ps:?}");
        }
    }

    #[test]
    fn filter_wants() {
        let f = Filter {
            prefixes: vec![("routes/h1".into(), 10), ("tenants/".into(), 5)],
            allowed: watch_scope::SERVICE_PREFIXES,
        };
        for (key, rev, want) in [
            ("routes/h1", 10, true),
            ("routes/h1", 9, false),
            ("routes/h10", 12, true),
            ("routes/h2", 12, false),
            ("tenants/red", 5, true),
            ("tenants/red", 4, false),
            ("auth/keys/x", 99, false),
            ("counters/x", 99, false),
        ] {
            assert_eq!(f.wants(key, rev), want, "{key}@{rev}");
        }
        assert_eq!(f.first(), 5);
        // A prefix the role may list but whose keys it may not read stays filtered by key.
        let all = Filter::from(&[String::new()], 1, watch_scope::SERVICE_PREFIXES);
        assert!(!all.wants("auth/users/admin", 3) && all.wants("vips/x", 3));
    }
}
