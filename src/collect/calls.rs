//! Counts AWS calls (IAM, STS, and CloudTrail/SQS for `[events_source]`) (every attempt, retries included) and throttled answers, per operation.
//! Installed as an SDK interceptor on every client of an account, so the figures are what AWS saw.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_iam::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use serde::Serialize;

/// Attempts and throttles by operation name (e.g. `ListUsers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallStats {
    pub attempts: BTreeMap<String, u64>,
    pub throttles: BTreeMap<String, u64>,
}

impl CallStats {
    pub fn total_attempts(&self) -> u64 {
        self.attempts.values().sum()
    }
    pub fn total_throttles(&self) -> u64 {
        self.throttles.values().sum()
    }
    /// What happened after `before` (a snapshot of the same counter).
    pub fn since(&self, before: &CallStats) -> CallStats {
        let diff = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .filter_map(|(k, v)| {
                    let d = v - then.get(k).copied().unwrap_or(0).min(*v);
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect()
        };
        CallStats {
            attempts: diff(&self.attempts, &before.attempts),
            throttles: diff(&self.throttles, &before.throttles),
        }
    }
    pub fn merge(&mut self, other: &CallStats) {
        for (k, v) in &other.attempts {
            *self.attempts.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.throttles {
            *self.throttles.entry(k.clone()).or_default() += v;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    inner: Arc<Mutex<CallStats>>,
}

impl CallCounter {
    pub fn snapshot(&self) -> CallStats {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "iam-inventory-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        // IAM and STS use the query protocol: a throttled call is HTTP 400 with
        // <Code>Throttling</Code> in the XML body, which the orchestrator has buffered by now.
        let throttled = context.response().is_some_and(|r| {
            let status = r.status().as_u16();
            status == 429
                || (status == 400
                    && r.body().bytes().is_some_and(|b| {
                        contains(b, b"<Code>Throttling</Code>")
                            || contains(b, b"<Code>RequestLimitExceeded</Code>")
                            // JSON protocols (CloudTrail, SQS): `"__type":"ThrottlingException"`.
                            || contains(b, b"ThrottlingException")
                    }))
        });
        if let Ok(mut stats) = self.inner.lock() {
            *stats.attempts.entry(op.clone()).or_default() += 1;
            if throttled {
                *stats.throttles.entry(op).or_default() += 1;
            }
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
