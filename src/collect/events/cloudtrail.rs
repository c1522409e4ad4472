//! `[events_source] type = "cloudtrail"`: polls CloudTrail `LookupEvents` for IAM's events, per
//! collected account, through the same credentials (assumed role) as its collection.
//!
//! LookupEvents takes one lookup attribute (EventSource = iam.amazonaws.com), answers at most 50
//! events a page, newest first, and allows 2 requests per second per account and region: pages
//! are paced. IAM is global and records its events in us-east-1.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_cloudtrail::primitives::DateTime;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use serde_json::Value;

use crate::collect::CollectError;
use crate::collect::calls::CallCounter;

pub struct Trail {
    client: aws_sdk_cloudtrail::Client,
}

/// What one lookup found.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The CloudTrail records, oldest first.
    pub records: Vec<Value>,
    /// Events whose `CloudTrailEvent` was missing or not JSON: logged and counted, skipped.
    pub malformed: usize,
    pub requests: usize,
}

impl Trail {
    pub fn new(sdk: &SdkConfig, region: &str, counter: CallCounter) -> Trail {
        let conf = aws_sdk_cloudtrail::config::Builder::from(sdk)
            .region(aws_sdk_cloudtrail::config::Region::new(region.to_string()))
            .interceptor(counter)
            .build();
        Trail {
            client: aws_sdk_cloudtrail::Client::from_conf(conf),
        }
    }

    /// Every IAM event with a time in `[start_ms, end_ms]`, at most one request per `pace`.
    pub async fn lookup(
        &self,
        start_ms: i64,
        end_ms: i64,
        pace: Duration,
    ) -> Result<Lookup, CollectError> {
        let attribute = LookupAttribute::builder()
            .attribute_key(LookupAttributeKey::EventSource)
            .attribute_value("iam.amazonaws.com")
            .build()
            .map_err(|e| CollectError {
                operation: "cloudtrail:LookupEvents",
                code: None,
                message: format!("cloudtrail:LookupEvents: cannot build the request: {e}"),
            })?;
        let mut found = Lookup::default();
        let mut token: Option<String> = None;
        loop {
            if found.requests > 0 {
                tokio::time::sleep(pace).await;
            }
            found.requests += 1;
            let out = self
                .client
                .lookup_events()
                .lookup_attributes(attribute.clone())
                .start_time(DateTime::from_millis(start_ms))
                .end_time(DateTime::from_millis(end_ms))
                .max_results(50)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| CollectError::from_sdk("cloudtrail:LookupEvents", e))?;
            for e in out.events() {
                match e
                    .cloud_trail_event()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                {
                    Some(record) => found.records.push(record),
                    None => {
                        found.malformed += 1;
                        tracing::warn!(
                            event_id = e.event_id().unwrap_or_default(),
                            "CloudTrail event without a readable CloudTrailEvent; skipped"
                        );
                    }
                }
            }
            match out.next_token().filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        // Newest first from CloudTrail; refreshes and the cursor go oldest first.
        found.records.reverse();
        Ok(found)
    }
}
