//! `[sinks.fields]`: output field → a minijinja expression over the OCSF 5003 record. Expressions
//! are compiled with `compile_expression`, so results keep their types (bool, number, string, list,
//! object, null). Shared by config validation (a bad expression is a configuration error naming the
//! sink and the field) and delivery (the view a sink receives), so it sits below both.
//!
//! Undefined paths are chainable and come out as `null` (`unmapped.user.nothing.deeper` is `null`,
//! not an error). Besides minijinja's built-in filters (`default`, `length`, `join`, `map`,
//! `selectattr`, `lower`, `upper`, `replace`, `first`, `last`, `sort`, `unique`, `int`, `string`…)
//! there are two for IAM data:
//! - `days_since`: epoch milliseconds → whole days before now (`null` stays `null`);
//! - `rfc3339`: epoch milliseconds → `2026-12-04T05:30:00.000Z` (`null` stays `null`).

use std::collections::BTreeMap;

use minijinja::value::{Serde, Value as JValue};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A sink's field mapping, validated.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// (output field, expression), in field order.
    fields: Vec<(String, String)>,
    /// A short hash of the mapping: part of what the sink acknowledges, so a mapping change re-sends
    /// every record once, to this sink only.
    pub fingerprint: String,
}

fn environment(now_ms: i64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.add_filter("days_since", move |v: JValue| -> JValue {
        match v.as_i64() {
            Some(ms) => JValue::from((now_ms - ms).div_euclid(86_400_000)),
            None => JValue::from(()),
        }
    });
    env.add_filter("rfc3339", |v: JValue| -> JValue {
        match v.as_i64() {
            Some(ms) => JValue::from(crate::clock::rfc3339(ms)),
            None => JValue::from(()),
        }
    });
    env
}

/// A record that has every attribute the 5003 records can carry, to evaluate expressions against
/// at validation time (so an unknown filter or a type error shows at startup, not mid-sync).
fn sample() -> Value {
    serde_json::from_str(include_str!("../tests/golden/alice.json")).unwrap_or(Value::Null)
}

impl Mapping {
    /// Compiles and test-evaluates every expression. `Err((field, message))` names the first bad one.
    pub fn new(fields: &BTreeMap<String, String>) -> Result<Mapping, (String, String)> {
        let env = environment(0);
        let sample = sample();
        for (name, expr) in fields {
            let compiled = env
                .compile_expression(expr)
                .map_err(|e| (name.clone(), describe(&e)))?;
            compiled
                .eval(JValue::from(Serde(&sample)))
                .map_err(|e| (name.clone(), describe(&e)))?;
        }
        let mut h = Sha256::new();
        for (name, expr) in fields {
            h.update(name.as_bytes());
            h.update(b"=");
            h.update(expr.as_bytes());
            h.update(b"\n");
        }
        Ok(Mapping {
            fields: fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            fingerprint: hex::encode(&h.finalize()[..6]),
        })
    }

    /// The flat object a sink receives for `record`: exactly the mapped fields.
    pub fn apply(&self, record: &Value, now_ms: i64) -> Result<Value, String> {
        let env = environment(now_ms);
        let ctx = JValue::from(Serde(record));
        let mut out = serde_json::Map::with_capacity(self.fields.len());
        for (name, expr) in &self.fields {
            let value = env
                .compile_expression(expr)
                .and_then(|c| c.eval(ctx.clone()))
                .map_err(|e| format!("fields.{name}: {}", describe(&e)))?;
            let json = if value.is_undefined() {
                Value::Null
            } else {
                serde_json::to_value(&value).map_err(|e| format!("fields.{name}: {e}"))?
            };
            out.insert(name.clone(), json);
        }
        Ok(Value::Object(out))
    }
}

/// minijinja's message without the template-source decoration.
fn describe(e: &minijinja::Error) -> String {
    let kind = e.kind().to_string();
    match e.detail() {
        Some(d) => format!("{kind}: {d}"),
        None => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(pairs: &[(&str, &str)]) -> Result<Mapping, (String, String)> {
        Mapping::new(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn results_keep_their_types_and_missing_paths_are_null() {
        let m = mapping(&[
            ("arn", "user.uid"),
            ("email", "user.name ~ '@example.com'"),
            ("mfa", "user.has_mfa"),
            ("keys", "user.programmatic_credentials | selectattr('type', 'eq', 'AWS Access Key') | list | length"),
            ("credentials", "user.programmatic_credentials | length"),
            ("groups", "user.groups | map(attribute='name') | join(', ')"),
            ("nothing", "unmapped.user.nothing.deeper"),
            ("team", "(user.ldap_person.tags | selectattr('name', 'eq', 'team') | first).value | default('none')"),
            ("idle_days", "user.ldap_person.last_login_time | days_since"),
            ("created", "user.ldap_person.created_time | rfc3339"),
        ])
        .unwrap();
        let out = m
            .apply(&sample(), 1_700_000_000_000 + 3 * 86_400_000)
            .unwrap();
        assert_eq!(
            out["arn"],
            "arn:aws:iam::123456789012:user/engineering/alice"
        );
        assert_eq!(out["email"], "alice@example.com");
        assert_eq!(out["mfa"], true);
        assert_eq!(out["keys"], 2);
        assert_eq!(out["credentials"], 3, "two access keys and an SSH key");
        assert_eq!(out["groups"], "admins");
        assert_eq!(out["nothing"], Value::Null);
        assert_eq!(out["team"], "платформа ✓");
        assert_eq!(out["idle_days"], 3);
        assert_eq!(out["created"], "2020-09-13T12:26:40.000Z");
        assert_eq!(
            out.as_object().unwrap().len(),
            10,
            "exactly the mapped fields"
        );
    }

    #[test]
    fn bad_expressions_and_unknown_filters_name_the_field() {
        let (field, msg) = mapping(&[("a", "user.uid"), ("b", "user.name ~")]).unwrap_err();
        assert_eq!(field, "b");
        assert!(msg.contains("syntax error"), "{msg}");
        let (field, msg) = mapping(&[("c", "user.name | shout")]).unwrap_err();
        assert_eq!(field, "c");
        assert!(msg.contains("shout"), "{msg}");
    }

    #[test]
    fn the_fingerprint_follows_the_mapping() {
        let a = mapping(&[("x", "user.uid")]).unwrap();
        assert_eq!(
            a.fingerprint,
            mapping(&[("x", "user.uid")]).unwrap().fingerprint
        );
        assert_ne!(
            a.fingerprint,
            mapping(&[("x", "user.name")]).unwrap().fingerprint
        );
    }
}
