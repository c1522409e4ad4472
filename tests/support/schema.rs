//! The strict OCSF 1.6.0 schemas (copies of ../shared/ocsf, vendored in tests/ocsf): class 5003 User
//! Inventory Info and class 3001 Account Change, picked by the record's `class_uid` as
//! `validate.py` does.

use std::sync::OnceLock;

use serde_json::Value;

fn compile(text: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn validator(class_uid: u64) -> &'static jsonschema::Validator {
    static INVENTORY: OnceLock<jsonschema::Validator> = OnceLock::new();
    static CHANGE: OnceLock<jsonschema::Validator> = OnceLock::new();
    match class_uid {
        3001 => CHANGE.get_or_init(|| {
            compile(include_str!(
                "../ocsf/account_change_3001_strict.schema.json"
            ))
        }),
        _ => INVENTORY.get_or_init(|| {
            compile(include_str!(
                "../ocsf/user_inventory_info_5003_strict.schema.json"
            ))
        }),
    }
}

/// Panics with every schema error when `record` is not valid under the strict OCSF schema of its
/// class (5003, or 3001 for change events).
pub fn assert_valid(record: &Value) {
    let class = record["class_uid"].as_u64().unwrap_or(5003);
    assert!(
        class == 5003 || class == 3001,
        "unexpected class_uid {class}: {record}"
    );
    let errors: Vec<String> = validator(class)
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "record fails the strict OCSF {class} schema: {errors:#?}\n{record}"
    );
}

#[test]
fn schema_the_vendored_examples_pass_and_a_broken_event_fails() {
    for text in [
        include_str!("../ocsf/example_valid_5003.json"),
        include_str!("../ocsf/example_valid_3001.json"),
    ] {
        assert_valid(&serde_json::from_str(text).unwrap());
    }
    let mut bad: Value =
        serde_json::from_str(include_str!("../ocsf/example_valid_3001.json")).unwrap();
    bad["activity_name"] = "Create".into();
    assert!(
        !validator(3001).is_valid(&bad),
        "caption must match activity_id"
    );
}
