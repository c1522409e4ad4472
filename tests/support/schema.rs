//! The strict OCSF 1.6.0 class 5003 schema (a copy of ../shared/ocsf, vendored in tests/ocsf).

use std::sync::OnceLock;

use serde_json::Value;

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = include_str!("../ocsf/user_inventory_info_5003_strict.schema.json");
        let schema: Value = serde_json::from_str(text).expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    })
}

/// Panics with every schema error when `record` is not a valid strict OCSF 5003 record.
pub fn assert_valid(record: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "record fails the strict OCSF schema: {errors:#?}\n{record}"
    );
}
