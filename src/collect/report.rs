//! The IAM credential report: generate (poll with a deadline), fetch, and parse.
//!
//! Corners (see ../shared/iam-api-notes.md): generated at most every 4 hours (a younger report is
//! returned as it is); users created after `GeneratedTime` are missing; `N/A`, `no_information` and
//! `not_supported` mean "unknown", never false; a key slot is matched to a key by
//! `access_key_N_last_rotated` = the key's CreateDate, not by position; the `<root_account>` row is
//! not an IAM user and is skipped here.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_iam::Client;
use aws_sdk_iam::types::ReportStateType;

use super::CollectError;

const POLL_EVERY: Duration = Duration::from_secs(1);
/// The [`CollectError::code`] of a report IAM did not finish within the wait (not an AWS code: IAM
/// only ever says STARTED/INPROGRESS).
pub const NOT_READY: &str = "ReportNotReady";

/// One user's row. `None` wherever the report says it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub arn: String,
    pub password_enabled: Option<bool>,
    pub mfa_active: Option<bool>,
    pub keys: Vec<ReportKey>,
    /// A signing certificate in slot 1 or 2, active or not (`cert_N_last_rotated` is set).
    pub has_certificate: bool,
}

/// The `<root_account>` row: the account's root user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRow {
    pub arn: String,
    pub created_ms: Option<i64>,
    pub password_last_used_ms: Option<i64>,
    pub mfa_active: Option<bool>,
    pub keys: Vec<ReportKey>,
}

/// A key slot (1 or 2) that holds a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    pub active: Option<bool>,
    /// The key's CreateDate, in epoch seconds.
    pub last_rotated_secs: i64,
    pub last_used_ms: Option<i64>,
    pub last_used_region: Option<String>,
    pub last_used_service: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CredentialReport {
    pub generated_ms: Option<i64>,
    /// By user ARN.
    pub rows: HashMap<String, ReportRow>,
    /// The root user's row (moto's reports have none).
    pub root: Option<RootRow>,
}

/// Generates (if needed) and fetches the report, polling with a sleep for at most `wait`.
pub async fn fetch(iam: &Client, wait: Duration) -> Result<CredentialReport, CollectError> {
    let deadline = tokio::time::Instant::now() + wait;
    let timeout = || CollectError {
        operation: "iam:GenerateCredentialReport",
        code: Some(NOT_READY.into()),
        message: format!(
            "the credential report was not ready after {}s (collect.report_wait_secs; or set [collect] strategy = \"per-user\" to do without it)",
            wait.as_secs()
        ),
    };
    loop {
        let out = iam
            .generate_credential_report()
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("iam:GenerateCredentialReport", e));
        match out {
            Ok(o) if o.state() == Some(&ReportStateType::Complete) => {}
            Ok(_) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(timeout());
                }
                tokio::time::sleep(POLL_EVERY).await;
                continue;
            }
            // Another caller generating a report at the same time: wait and ask again.
            Err(e)
                if e.code.as_deref() == Some("LimitExceeded")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL_EVERY).await;
                continue;
            }
            Err(e) => return Err(e),
        }
        match iam.get_credential_report().send().await {
            Ok(out) => {
                let csv = out.content().map(|b| b.as_ref()).unwrap_or_default();
                let generated_ms = out.generated_time().map(super::millis);
                return parse(csv)
                    .map(|(rows, root)| CredentialReport {
                        generated_ms,
                        rows,
                        root,
                    })
                    .map_err(|m| CollectError {
                        operation: "iam:GetCredentialReport",
                        code: None,
                        message: format!("cannot read the credential report: {m}"),
                    });
            }
            Err(e) => {
                let e = CollectError::from_sdk("iam:GetCredentialReport", e);
                let retry = matches!(
                    e.code.as_deref(),
                    Some("ReportInProgress" | "ReportNotPresent" | "ReportExpired")
                );
                if !retry || tokio::time::Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    }
}

fn unknown(v: &str) -> bool {
    matches!(v, "" | "N/A" | "no_information" | "not_supported")
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn time_ms(v: &str) -> Option<i64> {
    if unknown(v) {
        return None;
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn text(v: &str) -> Option<String> {
    (!unknown(v)).then(|| v.to_string())
}

/// Parses the report CSV into user rows by ARN, and the root row. Columns are found by header name,
/// so added or reordered columns do not break it.
pub fn parse(csv_bytes: &[u8]) -> Result<(HashMap<String, ReportRow>, Option<RootRow>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(csv_bytes);
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let need = |name: &str| col(name).ok_or_else(|| format!("missing column {name}"));
    let (user, arn, password, mfa) = (
        need("user")?,
        need("arn")?,
        need("password_enabled")?,
        need("mfa_active")?,
    );
    let mut rows = HashMap::new();
    let mut root = None;
    for record in reader.records() {
        let r = record.map_err(|e| e.to_string())?;
        let get = |i: Option<usize>| i.and_then(|i| r.get(i)).unwrap_or("");
        let mut keys = Vec::new();
        for n in [1, 2] {
            let rotated = get(col(&format!("access_key_{n}_last_rotated")));
            let Some(rotated_ms) = time_ms(rotated) else {
                continue;
            };
            keys.push(ReportKey {
                active: boolean(get(col(&format!("access_key_{n}_active")))),
                last_rotated_secs: rotated_ms.div_euclid(1000),
                last_used_ms: time_ms(get(col(&format!("access_key_{n}_last_used_date")))),
                last_used_region: text(get(col(&format!("access_key_{n}_last_used_region")))),
                last_used_service: text(get(col(&format!("access_key_{n}_last_used_service")))),
            });
        }
        if get(Some(user)) == "<root_account>" {
            root = Some(RootRow {
                arn: get(Some(arn)).to_string(),
                created_ms: time_ms(get(col("user_creation_time"))),
                password_last_used_ms: time_ms(get(col("password_last_used"))),
                mfa_active: boolean(get(Some(mfa))),
                keys,
            });
            continue;
        }
        // `cert_N_last_rotated` is set for inactive certificates too (`cert_N_active` only says
        // whether the one in that slot is active); moto leaves it N/A, hence both.
        let has_certificate = [1, 2].iter().any(|n| {
            time_ms(get(col(&format!("cert_{n}_last_rotated")))).is_some()
                || boolean(get(col(&format!("cert_{n}_active")))) == Some(true)
        });
        let row = ReportRow {
            arn: get(Some(arn)).to_string(),
            password_enabled: boolean(get(Some(password))),
            mfa_active: boolean(get(Some(mfa))),
            keys,
            has_certificate,
        };
        rows.insert(row.arn.clone(), row);
    }
    Ok((rows, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded report with the corners moto does not produce: the root row, a never-used key,
    /// a used key in slot 2 only, `no_information`, and a user name with a comma (quoted).
    const REPORT: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated
<root_account>,arn:aws:iam::123456789012:root,2020-01-01T00:00:00+00:00,not_supported,2026-11-01T10:00:00+00:00,not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A
alice,arn:aws:iam::123456789012:user/alice,2021-01-01T00:00:00+00:00,true,2026-11-20T08:00:00+00:00,2021-01-01T00:00:00+00:00,N/A,true,true,2021-02-01T12:00:00+00:00,2026-11-24T09:30:00+00:00,eu-west-1,s3,false,2021-03-01T12:00:00+00:00,N/A,N/A,N/A,false,N/A,false,N/A
\"ops,bot\",\"arn:aws:iam::123456789012:user/ops,bot\",2022-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,false,N/A,N/A,N/A,N/A,true,2022-05-05T05:05:05+00:00,2026-11-01T00:00:00+00:00,us-east-1,iam,false,N/A,false,N/A
carol,arn:aws:iam::123456789012:user/carol,2022-01-01T00:00:00+00:00,no_information,N/A,N/A,N/A,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A
";

    #[test]
    fn parses_the_corners() {
        let (rows, root) = parse(REPORT.as_bytes()).unwrap();
        assert_eq!(rows.len(), 3, "the root row is not a user");
        let root = root.expect("the root row");
        assert_eq!(root.arn, "arn:aws:iam::123456789012:root");
        assert_eq!(root.mfa_active, Some(true));
        assert!(root.keys.is_empty());
        assert_eq!(root.password_last_used_ms, Some(1_793_527_200_000));
        let alice = &rows["arn:aws:iam::123456789012:user/alice"];
        assert_eq!(alice.password_enabled, Some(true));
        assert_eq!(alice.mfa_active, Some(true));
        assert_eq!(alice.keys.len(), 2);
        assert_eq!(alice.keys[0].last_rotated_secs, 1_612_180_800);
        assert_eq!(alice.keys[0].last_used_ms, Some(1_795_512_600_000));
        assert_eq!(alice.keys[0].last_used_service.as_deref(), Some("s3"));
        assert_eq!(alice.keys[1].active, Some(false));
        assert_eq!(
            alice.keys[1].last_used_ms, None,
            "N/A is unknown, not a time"
        );
        assert_eq!(alice.keys[1].last_used_region, None);
        let bot = &rows["arn:aws:iam::123456789012:user/ops,bot"];
        assert_eq!(bot.keys.len(), 1, "slot 1 empty, slot 2 used");
        assert_eq!(bot.keys[0].last_used_region.as_deref(), Some("us-east-1"));
        let carol = &rows["arn:aws:iam::123456789012:user/carol"];
        assert_eq!(carol.password_enabled, None, "no_information is not false");
        assert!(carol.keys.is_empty());
        assert!(!carol.has_certificate && !alice.has_certificate);
    }

    #[test]
    fn a_report_without_the_needed_columns_is_an_error() {
        assert!(
            parse(b"user,arn\nx,y\n")
                .unwrap_err()
                .contains("password_enabled")
        );
    }
}
