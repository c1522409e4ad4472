//! Content hashes and field-level diffs of OCSF records.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::FieldChange;

/// sha256 over a canonical serialization (object keys sorted at every level), so the hash does not
/// depend on serde_json's map order (a dependency enabling `preserve_order` would otherwise turn
/// every user into an "update").
pub fn content_hash(v: &Value) -> String {
    let mut buf = Vec::with_capacity(1024);
    write_canonical(v, &mut buf);
    hex::encode(Sha256::digest(&buf))
}

/// The record's text (canonical, as [`content_hash`] writes it) and its content hash (of the same
/// text without the volatile fields), in one walk: what `(text, content_hash(&strip_volatile(v)))`
/// gives without copying the record to strip it.
pub fn text_and_content_hash(v: &Value) -> (String, String) {
    static VOLATILE: std::sync::LazyLock<Vec<Vec<&'static str>>> = std::sync::LazyLock::new(|| {
        crate::transform::VOLATILE_FIELDS
            .iter()
            .map(|p| p.split('.').collect())
            .collect()
    });
    let paths: Vec<&[&str]> = VOLATILE.iter().map(Vec::as_slice).collect();
    let mut full = Vec::with_capacity(2048);
    let mut stable = Vec::with_capacity(2048);
    write_both(v, &mut full, &mut stable, &paths);
    // Serialized JSON is UTF-8.
    let text = String::from_utf8(full).unwrap_or_default();
    (text, hex::encode(Sha256::digest(&stable)))
}

/// Writes `v` to `full`, and to `stable` without what `volatile` (dotted paths below `v`, `[]`
/// marking an array's elements) names.
fn write_both(v: &Value, full: &mut Vec<u8>, stable: &mut Vec<u8>, volatile: &[&[&str]]) {
    let map = match v {
        Value::Object(map) if !volatile.is_empty() => map,
        // Nothing volatile below: written once, copied.
        _ => {
            let start = full.len();
            write_canonical(v, full);
            stable.extend_from_slice(&full[start..]);
            return;
        }
    };
    full.push(b'{');
    stable.push(b'{');
    let (mut first_full, mut first_stable) = (true, true);
    for k in sorted_keys(map) {
        let child = &map[k];
        let (mut gone, mut below, mut elements) = (false, Vec::new(), Vec::new());
        for path in volatile {
            let Some((head, rest)) = path.split_first() else {
                continue;
            };
            if *head == k.as_str() {
                if rest.is_empty() {
                    gone = true;
                } else {
                    below.push(rest);
                }
            } else if head.strip_suffix("[]") == Some(k.as_str()) {
                elements.push(rest);
            }
        }
        if !first_full {
            full.push(b',');
        }
        first_full = false;
        let key = full.len();
        let _ = serde_json::to_writer(&mut *full, k);
        full.push(b':');
        if gone {
            write_canonical(child, full);
            continue;
        }
        if !first_stable {
            stable.push(b',');
        }
        first_stable = false;
        stable.extend_from_slice(&full[key..]);
        match child {
            Value::Array(items) if !elements.is_empty() => {
                full.push(b'[');
                stable.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        full.push(b',');
                        stable.push(b',');
                    }
                    write_both(item, full, stable, &elements);
                }
                full.push(b']');
                stable.push(b']');
            }
            _ => write_both(child, full, stable, &below),
        }
    }
    full.push(b'}');
    stable.push(b'}');
}

/// An object's keys in order: serde_json's map is already sorted, unless a dependency turns on
/// `preserve_order`.
fn sorted_keys(map: &serde_json::Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    if !keys.is_sorted() {
        keys.sort();
    }
    keys
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let keys = sorted_keys(map);
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a string to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The field-level changes from `old` to `new` (both already without volatile fields).
/// Arrays of objects with an identity (`uid`, `name`, `serial`) are matched by it, so a new access key
/// is one change `user.programmatic_credentials[AKIA…]` (added), not a shifted list.
pub fn field_changes(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(String::new(), old, new, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk(path: String, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = join(&path, k);
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        old: x.cloned().unwrap_or(Value::Null),
                        new: y.cloned().unwrap_or(Value::Null),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => match (identity_key(a), identity_key(b)) {
            (Some(ka), Some(kb)) if ka == kb || a.is_empty() || b.is_empty() => {
                let key = if a.is_empty() { kb } else { ka };
                let id = |v: &Value| v.get(key).map(id_text).unwrap_or_default();
                let mut ids: Vec<String> = a.iter().chain(b.iter()).map(id).collect();
                ids.sort();
                ids.dedup();
                for i in ids {
                    let x = a.iter().find(|v| id(v) == i);
                    let y = b.iter().find(|v| id(v) == i);
                    let p = format!("{path}[{i}]");
                    match (x, y) {
                        (Some(x), Some(y)) => walk(p, x, y, out),
                        (x, y) => out.push(FieldChange {
                            path: p,
                            old: x.cloned().unwrap_or(Value::Null),
                            new: y.cloned().unwrap_or(Value::Null),
                        }),
                    }
                }
            }
            _ => out.push(FieldChange {
                path,
                old: old.clone(),
                new: new.clone(),
            }),
        },
        _ => out.push(FieldChange {
            path,
            old: old.clone(),
            new: new.clone(),
        }),
    }
}

/// The key that identifies elements of an array of objects, if every element has it.
/// An empty array matches any key (everything on the other side was added or removed).
fn identity_key(items: &[Value]) -> Option<&'static str> {
    ["uid", "name", "serial"]
        .into_iter()
        .find(|k| items.iter().all(|v| v.get(*k).is_some()))
}

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order() {
        let a = json!({"a": 1, "b": {"x": [1, 2], "y": "z"}});
        let b: Value = serde_json::from_str(r#"{"b": {"y": "z", "x": [1, 2]}, "a": 1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&json!({"a": 2})));
    }

    #[test]
    fn keyed_arrays_report_added_removed_and_changed_elements() {
        let old = json!({"user": {"has_mfa": true,
            "programmatic_credentials": [{"uid": "AKIA1", "type": "AWS Access Key"}],
            "ldap_person": {"tags": [{"name": "team", "value": "a"}, {"name": "gone", "value": "x"}]}}});
        let new = json!({"user": {"has_mfa": false,
            "programmatic_credentials": [{"uid": "AKIA1", "type": "AWS Access Key"}, {"uid": "AKIA2", "type": "AWS Access Key"}],
            "ldap_person": {"tags": [{"name": "team", "value": "b"}]}}});
        let got: Vec<(String, Value, Value)> = field_changes(&old, &new)
            .into_iter()
            .map(|c| (c.path, c.old, c.new))
            .collect();
        assert_eq!(
            got,
            vec![
                ("user.has_mfa".into(), json!(true), json!(false)),
                (
                    "user.ldap_person.tags[gone]".into(),
                    json!({"name": "gone", "value": "x"}),
                    Value::Null
                ),
                (
                    "user.ldap_person.tags[team].value".into(),
                    json!("a"),
                    json!("b")
                ),
                (
                    "user.programmatic_credentials[AKIA2]".into(),
                    Value::Null,
                    json!({"uid": "AKIA2", "type": "AWS Access Key"})
                ),
            ]
        );
    }

    /// One walk gives what the record's text and the hash of its stripped copy give.
    #[test]
    fn text_and_content_hash_match_the_stripped_copy() {
        use crate::transform::{strip_volatile, to_ocsf};
        let user = crate::transform::ocsf::tests::sample_user();
        let source = crate::transform::ocsf::tests::source();
        let records = [
            to_ocsf(&user, &source, 1_700_000_000_000),
            json!({"time": 5, "a": [{"last_used_time": 1, "b": 2}], "user": {"programmatic_credentials": [{"uid": "K", "last_used_time": 3}], "ldap_person": {"last_login_time": 4, "z": null}}}),
            json!([1, {"time": 2}]),
        ];
        for record in records {
            let (text, hash) = text_and_content_hash(&record);
            assert_eq!(text, record.to_string());
            assert_eq!(hash, content_hash(&strip_volatile(&record)));
        }
    }

    #[test]
    fn from_empty_array_each_element_is_added() {
        let got = field_changes(&json!({"k": []}), &json!({"k": [{"uid": "A"}]}));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "k[A]");
    }
}
