//! `IAM_INVENTORY__SECTION__KEY` environment overrides and `${VAR}` expansion, applied to the TOML
//! table before it is deserialized.

use super::ENV_OVERRIDE_PREFIX;

/// `IAM_INVENTORY__STORE__PATH=x` sets `[store] path = "x"`; numeric segments index arrays
/// (`IAM_INVENTORY__SINKS__0__URL`). A value keeps the type of the key it replaces; a new key is
/// a boolean or integer when it reads as one, else a string.
pub(crate) fn apply_env_overrides(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), String> {
    let mut overrides: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_OVERRIDE_PREFIX))
        .collect();
    overrides.sort();
    for (name, raw) in overrides {
        let segments: Vec<String> = name[ENV_OVERRIDE_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "environment variable {name}: expected IAM_INVENTORY__SECTION__KEY"
            ));
        }
        let mut node = &mut *table;
        let Some((last, parents)) = segments.split_last() else {
            continue;
        };
        let mut i = 0;
        while i < parents.len() {
            let seg = &existing_key(node, &parents[i]);
            let entry = node
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => node = t,
                toml::Value::Array(items) => {
                    let idx: usize = parents
                        .get(i + 1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| {
                            format!("environment variable {name}: {seg} is a list; name an index (e.g. {seg}__0)")
                        })?;
                    match items.get_mut(idx) {
                        Some(toml::Value::Table(t)) => node = t,
                        _ => {
                            return Err(format!(
                                "environment variable {name}: {seg}[{idx}] does not exist in the config file"
                            ));
                        }
                    }
                    i += 1;
                }
                _ => {
                    return Err(format!(
                        "environment variable {name}: {seg} is not a section"
                    ));
                }
            }
            i += 1;
        }
        // Keys match case-insensitively, so `…__HEADERS__AUTHORIZATION` replaces the file's
        // `Authorization` header instead of adding a second one.
        let last = &existing_key(node, last);
        let as_bool = match raw.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        // Only a value that reads back identically is a number: "00123" stays the string it is.
        let as_int = raw.parse::<i64>().ok().filter(|i| i.to_string() == *raw);
        let new = match (node.get(last), as_bool, as_int) {
            (Some(toml::Value::String(_)), _, _) => toml::Value::String(raw.clone()),
            (Some(toml::Value::Boolean(_)) | None, Some(b), _) => toml::Value::Boolean(b),
            (Some(toml::Value::Integer(_)) | None, _, Some(i)) => toml::Value::Integer(i),
            _ => toml::Value::String(raw.clone()),
        };
        node.insert(last.clone(), new);
    }
    Ok(())
}

/// The key of `table` equal to `wanted` ignoring ASCII case, or `wanted` itself.
fn existing_key(table: &toml::Table, wanted: &str) -> String {
    table
        .keys()
        .find(|k| k.eq_ignore_ascii_case(wanted))
        .cloned()
        .unwrap_or_else(|| wanted.to_string())
}

/// Replaces `${VAR}` in every string value with the environment's value; `$${` is a literal `${`.
/// An unset variable names itself and the key.
pub(crate) fn expand_vars(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &[(String, String)],
) -> Result<(), String> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            *s = expand_str(s, env).map_err(|var| {
                format!(
                    "{}: environment variable {var} is not set (referenced as ${{{var}}})",
                    key_path(path)
                )
            })?;
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                path.push(k.clone());
                expand_vars(v, path, env)?;
                path.pop();
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                expand_vars(v, path, env)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

fn expand_str(s: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let var = &tail[..end];
            match env.iter().find(|(k, _)| k == var) {
                Some((_, v)) => out.push_str(v),
                None => return Err(var.to_string()),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
