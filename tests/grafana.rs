//! `deploy/grafana/romana.json` against docs/metrics.md: the dashboard is valid JSON in Grafana's
//! shape (unique panel ids, every query on the dashboard's Prometheus variable), every metric a
//! query names is a documented family (or its `_bucket`/`_sum`/`_count`), every label it groups
//! or matches by is one of that family's documented labels, and every documented family is on
//! the dashboard. The processes' scrape tests check the same table against what they serve.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Every documented family (all sections) with its type and labels.
fn documented(doc: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, kind, labels, ..] = cells.as_slice()
            && let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`'))
            && ["counter", "gauge", "histogram"].contains(kind)
        {
            let labels =
                labels.split(',').map(|l| l.trim().trim_matches('`').to_owned()).filter(|l| !l.is_empty());
            out.insert(name.to_owned(), ((*kind).to_owned(), labels.collect()));
        }
    }
    out
}

/// The identifiers of a PromQL expression, in order, with whether each is followed by a label
/// matcher's operator (`name=`, `name!=`, `name=~`, `name!~`) and whether it sits in `by (...)`.
fn identifiers(expr: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut chars = expr.char_indices().peekable();
    let mut in_string = false;
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            in_string = !in_string;
            continue;
        }
        if in_string || !(c.is_ascii_alphabetic() || c == '_' || c == '$') {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if d.is_ascii_alphanumeric() || d == '_' {
                end = j + 1;
                chars.next();
            } else {
                break;
            }
        }
        let rest = expr[end..].trim_start();
        let is_label = rest.starts_with('=') || rest.starts_with("!=") || rest.starts_with("!~");
        out.push((expr[i..end].to_owned(), is_label));
    }
    out
}

/// The labels of every `by (...)` / `without (...)` clause.
fn grouping(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["by (", "without ("] {
        let mut rest = expr;
        while let Some(i) = rest.find(key) {
            let after = &rest[i + key.len()..];
            let close = after.find(')').unwrap_or(after.len());
            out.extend(after[..close].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
            rest = &after[close..];
        }
    }
    out
}

/// What is wrong with one query: metrics not documented, labels not theirs. `used` collects the
/// families it names.
fn check_expr(
    expr: &str,
    docs: &BTreeMap<String, (String, BTreeSet<String>)>,
    used: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut families = Vec::new();
    let mut matchers = Vec::new();
    for (id, is_label) in identifiers(expr) {
        if is_label {
            matchers.push(id);
        } else if id.starts_with("romana_") {
            let family = ["", "_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = id.strip_suffix(suffix)?;
                let (kind, _) = docs.get(base)?;
                (suffix.is_empty() || kind == "histogram").then(|| base.to_owned())
            });
            match family {
                Some(f) => families.push(f),
                None => problems.push(format!("{expr}: {id} is not a documented family")),
            }
        }
    }
    if families.is_empty() {
        problems.push(format!("{expr}: queries no Romana metric"));
    }
    // Labels Prometheus adds (`instance`, `job`) and histograms' `le` are every family's.
    let known: BTreeSet<&str> = families
        .iter()
        .flat_map(|f| docs[f].1.iter().map(String::as_str))
        .chain(["instance", "job", "le"])
        .collect();
    for label in matchers.iter().chain(grouping(expr).iter()) {
        if !known.contains(label.as_str()) {
            problems.push(format!("{expr}: label {label} is not documented for {families:?}"));
        }
    }
    used.extend(families);
    problems
}

fn read(path: &str) -> String {
    let p = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"))
}

fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

#[test]
fn the_dashboard_queries_exactly_the_documented_metrics() {
    let docs = documented(&read("docs/metrics.md"));
    assert!(docs.len() >= 40, "docs/metrics.md's tables: {docs:?}");
    let dash: Value =
        serde_json::from_str(&read("deploy/grafana/romana.json")).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "romana");
    assert!(dash["templating"]["list"].as_array().unwrap().iter().any(|v| v["name"] == "datasource"));
    let all = panels(&dash);
    let ids: Vec<i64> = all.iter().map(|p| p["id"].as_i64().expect("every panel has an id")).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "panel ids repeat: {ids:?}");
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for p in all.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {:?} has no query", p["title"]));
        }
        for t in targets {
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("panel {:?}: a query not on $datasource", p["title"]));
            }
            problems.extend(check_expr(t["expr"].as_str().unwrap_or(""), &docs, &mut used));
        }
    }
    problems.extend(docs.keys().filter(|f| !used.contains(*f)).map(|f| format!("{f} is on no panel")));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker finds each kind of problem (made-up queries).
#[test]
fn the_checker_finds_what_it_must() {
    let docs = documented(
        "| `a_total` | counter | `kind` | x |\n| `h_seconds` | histogram | | x |\n| `g` | gauge | | x |\n",
    );
    let check = |expr: &str| {
        let mut used = BTreeSet::new();
        (check_expr(expr, &docs, &mut used), used)
    };
    assert_eq!(
        check("sum by (kind) (rate(a_total[5m]))").0[0],
        "sum by (kind) (rate(a_total[5m])): queries no Romana metric"
    );
    let docs = documented(
        "| `romana_a_total` | counter | `kind` | x |\n| `romana_h` | histogram | | x |\n| `romana_g` | gauge | | x |\n",
    );
    let check = |expr: &str| {
        let mut used = BTreeSet::new();
        (check_expr(expr, &docs, &mut used), used)
    };
    let (p, used) = check("sum by (kind) (rate(romana_a_total{kind=\"x\"}[$__rate_interval]))");
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["romana_a_total"]);
    assert!(check("histogram_quantile(0.9, sum by (le) (rate(romana_h_bucket[5m])))").0.is_empty());
    assert_eq!(check("romana_g_bucket").0[0], "romana_g_bucket: romana_g_bucket is not a documented family");
    assert_eq!(
        check("romana_b").0,
        vec!["romana_b: romana_b is not a documented family", "romana_b: queries no Romana metric"]
    );
    assert_eq!(
        check("sum by (route) (romana_g)").0,
        vec!["sum by (route) (romana_g): label route is not documented for [\"romana_g\"]"]
    );
    assert_eq!(check("romana_a_total{status=~\"5..\"}").0.len(), 1);
}
