//! JSON patch (RFC 6902): `add`, `remove`, `replace`, `move`, `copy`, `test` on JSON pointers
//! (RFC 6901), as kube-rs `Patch::Json` and client-go send it. Pure.

use serde_json::Value;

/// Why a patch failed: `Malformed` is the request's fault (HTTP 400), `Failed` an operation that
/// does not apply to this object (HTTP 422), as the real server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPatchError {
    Malformed(String),
    Failed(String),
}

fn tokens(pointer: &str) -> Result<Vec<String>, JsonPatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| {
        JsonPatchError::Malformed(format!("JSON pointer {pointer:?} does not start with '/'"))
    })?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent<'a>(doc: &'a mut Value, toks: &[String], path: &str) -> Result<&'a mut Value, JsonPatchError> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| JsonPatchError::Failed(format!("path {path:?}: {t:?} does not exist")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), JsonPatchError> {
    let toks = tokens(path)?;
    let Some((last, up)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, up, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i <= a.len() => a.insert(i, value),
            _ => {
                return Err(JsonPatchError::Failed(format!("path {path:?}: index {last:?} is out of range")));
            }
        },
        _ => {
            return Err(JsonPatchError::Failed(format!(
                "path {path:?}: the parent is not an object or array"
            )));
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, JsonPatchError> {
    let toks = tokens(path)?;
    let Some((last, up)) = toks.split_last() else {
        return Err(JsonPatchError::Failed("cannot remove the whole document".into()));
    };
    let gone = match parent(doc, up, path)? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => last.parse::<usize>().ok().filter(|i| *i < a.len()).map(|i| a.remove(i)),
        _ => None,
    };
    gone.ok_or_else(|| JsonPatchError::Failed(format!("path {path:?} does not exist")))
}

fn get(doc: &Value, path: &str) -> Result<Value, JsonPatchError> {
    let toks = tokens(path)?;
    let mut d = doc.clone();
    parent(&mut d, &toks, path).map(|v| v.clone())
}

/// Applies every operation in order; any failure leaves nothing applied.
pub fn json_patch(target: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| JsonPatchError::Malformed("a JSON patch must be an array of operations".into()))?;
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| {
            op[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| JsonPatchError::Malformed(format!("operation {op} has no string {name:?}")))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| JsonPatchError::Malformed(format!("operation {op} has no value")))
        };
        let path = field("path")?;
        match field("op")?.as_str() {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                remove(&mut doc, &path)?;
                add(&mut doc, &path, value()?)?;
            }
            "move" => {
                let v = remove(&mut doc, &field("from")?)?;
                add(&mut doc, &path, v)?;
            }
            "copy" => {
                let v = get(&doc, &field("from")?)?;
                add(&mut doc, &path, v)?;
            }
            "test" => {
                if get(&doc, &path)? != value()? {
                    return Err(JsonPatchError::Failed(format!("test operation at {path:?} failed")));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!("unknown JSON patch operation {other:?}")));
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(target: Value, patch: Value, expect: Result<Value, &str>) {
        let got = json_patch(&target, &patch).map_err(|e| match e {
            JsonPatchError::Malformed(_) => "malformed",
            JsonPatchError::Failed(_) => "failed",
        });
        assert_eq!(got, expect, "patch {patch} on {target}");
    }

    #[test]
    fn rfc6902_operations() {
        let doc = || json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x", "y"]}});
        check(
            doc(),
            json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]),
            Ok(json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]}})),
        );
        check(
            doc(),
            json!([{"op": "remove", "path": "/metadata/finalizers/0"}]),
            Ok(json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["y"]}})),
        );
        check(
            doc(),
            json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "z"}]),
            Ok(json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x", "y", "z"]}})),
        );
        check(
            doc(),
            json!([{"op": "replace", "path": "/metadata/labels", "value": {}}]),
            Ok(json!({"metadata": {"labels": {}, "finalizers": ["x", "y"]}})),
        );
        check(
            json!({"a/b": 1, "m~n": 2}),
            json!([{"op": "move", "from": "/a~1b", "path": "/m~0n"}]),
            Ok(json!({"m~n": 1})),
        );
        check(
            json!({"a": [1]}),
            json!([{"op": "copy", "from": "/a", "path": "/b"}]),
            Ok(json!({"a": [1], "b": [1]})),
        );
        check(
            doc(),
            json!([{"op": "test", "path": "/metadata/labels/a", "value": "1"}, {"op": "remove", "path": "/metadata/labels/a"}]),
            Ok(json!({"metadata": {"labels": {}, "finalizers": ["x", "y"]}})),
        );
        check(doc(), json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}]), Err("failed"));
        check(doc(), json!([{"op": "remove", "path": "/metadata/labels/zz"}]), Err("failed"));
        check(doc(), json!([{"op": "replace", "path": "/nope/x", "value": 1}]), Err("failed"));
        check(doc(), json!([{"op": "add", "path": "/metadata/finalizers/5", "value": 1}]), Err("failed"));
        check(doc(), json!([{"op": "frobnicate", "path": "/a"}]), Err("malformed"));
        check(doc(), json!([{"op": "add", "path": "no-slash", "value": 1}]), Err("malformed"));
        check(doc(), json!({"op": "add"}), Err("malformed"));
    }
}
