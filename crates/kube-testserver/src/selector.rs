//! Label and field selectors: parsing the query-string syntax and matching JSON objects (pure).
//!
//! Label selectors follow the documented grammar: comma-separated requirements `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`. Field selectors
//! accept `=`, `==` and `!=` on the fields each type allows (see `ResourceType::accepts_field`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed field selector: (dotted field path, wanted value, equal?).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, String, bool)>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A label key: optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
pub(crate) fn valid_key(k: &str) -> bool {
    let name = k.rsplit_once('/').map_or(k, |(_, n)| n);
    !name.is_empty()
        && name.len() <= 63
        && k.len() <= 253 + 64
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_', '.', alphanumeric at both ends.
pub(crate) fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement {whole:?}: a set needs parentheses"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(bad) = values.iter().find(|v| !valid_value(v)) {
        return Err(format!("invalid label value {bad:?} in {whole:?}"));
    }
    Ok(values)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let p = part.trim();
    let fail = |what: &str| format!("unable to parse requirement {p:?}: {what}");
    let (key, op) = if let Some(k) = p.strip_prefix('!') {
        (k.trim().to_string(), Op::NotExists)
    } else if let Some((k, v)) = p.split_once("!=") {
        (k.trim().to_string(), Op::Ne(v.trim().to_string()))
    } else if let Some((k, v)) = p.split_once("==") {
        (k.trim().to_string(), Op::Eq(v.trim().to_string()))
    } else if let Some((k, v)) = p.split_once('=') {
        (k.trim().to_string(), Op::Eq(v.trim().to_string()))
    } else if let Some((k, rest)) = p.split_once(" notin ") {
        (k.trim().to_string(), Op::NotIn(set_values(rest, p)?))
    } else if let Some((k, rest)) = p.split_once(" in ") {
        (k.trim().to_string(), Op::In(set_values(rest, p)?))
    } else {
        (p.to_string(), Op::Exists)
    };
    if !valid_key(&key) {
        return Err(fail("invalid label key"));
    }
    if let Op::Eq(v) | Op::Ne(v) = &op
        && !valid_value(v)
    {
        return Err(fail("invalid label value"));
    }
    Ok(Requirement { key, op })
}

impl LabelSelector {
    /// Parses `labelSelector`; the error says which requirement is malformed.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        if s.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        split_top(s).into_iter().map(parse_requirement).collect::<Result<_, _>>().map(LabelSelector)
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.iter().all(|r| {
            let v = labels.get(&r.key).and_then(Value::as_str);
            match &r.op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

/// The field's value as the real server's field-label functions render it: strings as they
/// are, booleans as `true`/`false`, absent as "".
fn field_value(obj: &Value, path: &str) -> String {
    let v = path.split('.').fold(obj, |v, seg| &v[seg]);
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

impl FieldSelector {
    /// Parses `fieldSelector`, refusing fields `accepts` does not allow (as the real server
    /// answers 400 `field label not supported`).
    pub fn parse(s: &str, accepts: impl Fn(&str) -> bool) -> Result<FieldSelector, String> {
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut out = Vec::new();
        for part in s.split(',') {
            let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !accepts(field) {
                return Err(format!("field label not supported: {field}"));
            }
            out.push((field.to_string(), value.trim().to_string(), eq));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, want, eq)| (field_value(obj, field) == *want) == *eq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (selector, labels, expected match); a `None` expectation means the selector is refused.
    fn check(selector: &str, labels: Value, expect: Option<bool>) {
        let obj = json!({"metadata": {"labels": labels}});
        let got = LabelSelector::parse(selector).map(|s| s.matches(&obj)).ok();
        assert_eq!(got, expect, "selector {selector:?} on {obj}");
    }

    #[test]
    fn label_selectors() {
        let l = || json!({"app": "web", "tier": "front"});
        check("", l(), Some(true));
        check("app=web", l(), Some(true));
        check("app==web", l(), Some(true));
        check("app=db", l(), Some(false));
        check("app!=db", l(), Some(true));
        check("missing!=x", l(), Some(true));
        check("app in (db, web)", l(), Some(true));
        check("app in (db)", l(), Some(false));
        check("app notin (db)", l(), Some(true));
        check("missing notin (db)", l(), Some(true));
        check("app notin (web,db)", l(), Some(false));
        check("tier", l(), Some(true));
        check("!tier", l(), Some(false));
        check("!missing", l(), Some(true));
        check("app=web,tier in (front,back),!missing", l(), Some(true));
        check("app=web,tier=back", l(), Some(false));
        check("example.com/app", json!({"example.com/app": "x"}), Some(true));
        check("app in web", l(), None);
        check("=web", l(), None);
        check("app=we b", l(), None);
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "a"}, "spec": {"nodeName": "h1", "hostNetwork": true}});
        let ok = |f: &str| f.starts_with("metadata.") || f.starts_with("spec.");
        let m = |s: &str| FieldSelector::parse(s, ok).map(|f| f.matches(&pod));
        assert_eq!(m("spec.nodeName=h1"), Ok(true));
        assert_eq!(m("spec.nodeName==h2"), Ok(false));
        assert_eq!(m("spec.nodeName!=h2,metadata.name=p"), Ok(true));
        assert_eq!(m("spec.hostNetwork=true"), Ok(true));
        assert_eq!(m("spec.missing="), Ok(true));
        assert_eq!(m("status.phase=Running"), Err("field label not supported: status.phase".into()));
        assert!(m("nonsense").is_err());
    }
}
