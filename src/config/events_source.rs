//! `[events_source]`: where the daemon hears about IAM writes between full syncs (incremental
//! refresh). Absent = no incremental refresh; the cron sync alone keeps the inventory.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsSourceType {
    /// An SQS queue fed by an EventBridge rule on `aws.iam` CloudTrail events (seconds of lag).
    Sqs,
    /// CloudTrail `LookupEvents`, polled per collected account (no infrastructure; minutes of lag).
    Cloudtrail,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSourceConfig {
    #[serde(rename = "type")]
    pub kind: EventsSourceType,
    /// sqs: the queue's URL (the `QueueUrl` output of deploy/iam-events-queue.yaml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    /// The region of the queue or of CloudTrail. Default: the queue URL's region for sqs, and
    /// us-east-1 for cloudtrail (where IAM, a global service, records its events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// cloudtrail: seconds between polls of every account.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// cloudtrail: how far back each poll looks again for events CloudTrail delivered late
    /// (seconds; events already acted on are skipped by id). Also how far back the first poll of
    /// an account looks.
    #[serde(default = "default_overlap_secs")]
    pub overlap_secs: u64,
    /// LookupEvents requests per second per account (CloudTrail allows 2): the `cloudtrail` polls,
    /// and for either type the bulk sync's question of which users changed since an older report.
    #[serde(default = "default_requests_per_sec")]
    pub requests_per_sec: f64,
    /// sqs: after the first message, how long to keep gathering more before refreshing, so a
    /// burst of events about one user is one refresh (milliseconds).
    #[serde(default = "default_coalesce_ms")]
    pub coalesce_ms: u64,
    /// sqs: the long-poll wait of ReceiveMessage (seconds, 1–20).
    #[serde(default = "default_wait_secs")]
    pub wait_secs: u64,
}

fn default_poll_secs() -> u64 {
    300
}
fn default_overlap_secs() -> u64 {
    900
}
fn default_requests_per_sec() -> f64 {
    2.0
}
fn default_coalesce_ms() -> u64 {
    1000
}
fn default_wait_secs() -> u64 {
    20
}

impl EventsSourceConfig {
    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        match (self.kind, &self.queue_url) {
            (EventsSourceType::Sqs, None) => {
                return Err("events_source.queue_url: required for type = \"sqs\" (the QueueUrl output of deploy/iam-events-queue.yaml)".into());
            }
            (EventsSourceType::Sqs, Some(url)) => {
                let ok = reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path().len() > 1);
                if !ok {
                    return Err(format!(
                        "events_source.queue_url: {url:?} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
                    ));
                }
            }
            (EventsSourceType::Cloudtrail, Some(_)) => {
                return Err(
                    "events_source.queue_url: only for type = \"sqs\" (cloudtrail polls LookupEvents)"
                        .into(),
                );
            }
            (EventsSourceType::Cloudtrail, None) => {}
        }
        if !(1..=86_400).contains(&self.poll_secs) {
            return Err(format!(
                "events_source.poll_secs: {} is out of range (1 to 86400)",
                self.poll_secs
            ));
        }
        // CloudTrail keeps whole seconds and delivers events minutes late: each poll must look
        // back at least a minute (events already acted on are skipped by id).
        if !(60..=7 * 86_400).contains(&self.overlap_secs) {
            return Err(format!(
                "events_source.overlap_secs: {} is out of range (60 to 604800)",
                self.overlap_secs
            ));
        }
        if !(self.requests_per_sec > 0.0 && self.requests_per_sec <= 100.0) {
            return Err(format!(
                "events_source.requests_per_sec: {} is out of range (above 0, at most 100)",
                self.requests_per_sec
            ));
        }
        if self.coalesce_ms > 60_000 {
            return Err(format!(
                "events_source.coalesce_ms: {} is out of range (0 to 60000)",
                self.coalesce_ms
            ));
        }
        if !(1..=20).contains(&self.wait_secs) {
            return Err(format!(
                "events_source.wait_secs: {} is out of range (1 to 20, SQS's long-poll limit)",
                self.wait_secs
            ));
        }
        if let Some(r) = &self.region
            && (r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!("events_source.region: {r:?} is not a region name"));
        }
        Ok(())
    }

    /// The wait between two LookupEvents requests to one account (`requests_per_sec`).
    pub fn lookup_pace(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.requests_per_sec)
    }

    /// Where CloudTrail is asked (LookupEvents): the configured region for `cloudtrail`; for `sqs`
    /// (whose `region` is the queue's) us-east-1, where IAM records its events.
    pub fn trail_region(&self) -> String {
        match self.kind {
            EventsSourceType::Cloudtrail => self.effective_region(),
            EventsSourceType::Sqs => "us-east-1".into(),
        }
    }

    /// The region to call: configured, else the queue URL's (`sqs.<region>.amazonaws.com`), else
    /// us-east-1.
    pub fn effective_region(&self) -> String {
        if let Some(r) = &self.region {
            return r.clone();
        }
        self.queue_url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                let mut parts = host.split('.');
                (parts.next() == Some("sqs"))
                    .then(|| parts.next().map(str::to_string))
                    .flatten()
            })
            .unwrap_or_else(|| "us-east-1".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EventsSourceConfig, String> {
        let c: EventsSourceConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|_| c)
    }

    #[test]
    fn defaults_and_region() {
        let c = parse("type='sqs'\nqueue_url='https://sqs.eu-west-1.amazonaws.com/123456789012/q'")
            .unwrap();
        assert_eq!(c.effective_region(), "eu-west-1");
        assert_eq!((c.wait_secs, c.coalesce_ms), (20, 1000));
        let c = parse("type='cloudtrail'").unwrap();
        assert_eq!((c.poll_secs, c.overlap_secs), (300, 900));
        assert_eq!(c.effective_region(), "us-east-1");
        let c = parse("type='sqs'\nqueue_url='http://127.0.0.1:5000/123456789012/q'").unwrap();
        assert_eq!(c.effective_region(), "us-east-1");
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("type='sqs'", "events_source.queue_url"),
            ("type='sqs'\nqueue_url='nope'", "events_source.queue_url"),
            (
                "type='cloudtrail'\nqueue_url='https://sqs.us-east-1.amazonaws.com/1/q'",
                "events_source.queue_url",
            ),
            ("type='cloudtrail'\npoll_secs=0", "events_source.poll_secs"),
            (
                "type='cloudtrail'\noverlap_secs=0",
                "events_source.overlap_secs",
            ),
            (
                "type='cloudtrail'\nrequests_per_sec=0.0",
                "events_source.requests_per_sec",
            ),
            (
                "type='sqs'\nqueue_url='https://sqs.us-east-1.amazonaws.com/1/q'\nwait_secs=30",
                "events_source.wait_secs",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(key), "{text} -> {e}");
        }
    }
}
