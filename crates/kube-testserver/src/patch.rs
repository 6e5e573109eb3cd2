//! JSON merge patch (RFC 7386), the patch kubectl and most controllers send for labels and
//! annotations; strategic merge patch is applied as a merge patch (see the crate docs). Pure.

use serde_json::{Map, Value};

/// Applies `patch` to `target` as RFC 7386 says: objects merge key by key, `null` removes a key,
/// anything else (arrays included) replaces the value.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// Strategic merge patch directives carry no meaning for a plain merge; kubectl sends
/// `$setElementOrder/...` keys next to lists it changes, and `{"$patch": "delete", <key>}`
/// elements for the list items it removes. They are dropped before merging (the list the patch
/// carries replaces the stored one, so a removed item is gone either way).
pub fn strip_directives(patch: &Value) -> Value {
    match patch {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch") != Some(&Value::from("delete")))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(target: Value, patch: Value, expect: Value) {
        assert_eq!(merge_patch(&target, &patch), expect, "patch {patch} on {target}");
    }

    #[test]
    fn rfc7386_examples() {
        check(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
        check(json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"}));
        check(json!({"a": "b"}), json!({"a": null}), json!({}));
        check(json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"}));
        check(json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"}));
        check(json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]}));
        check(json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}}));
        check(json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]}));
        check(json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"]));
        check(json!({"a": "b"}), json!(["c"]), json!(["c"]));
        check(json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1}));
        check(json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"}));
        check(json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}}));
    }

    #[test]
    fn directives_dropped() {
        let p = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"$setElementOrder/ports": [{"port": 1}], "x": 1}});
        assert_eq!(strip_directives(&p), json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}}));
        let p = json!({"spec": {"ports": [{"port": 443}, {"$patch": "delete", "port": 80}]}});
        assert_eq!(strip_directives(&p), json!({"spec": {"ports": [{"port": 443}]}}));
    }
}
