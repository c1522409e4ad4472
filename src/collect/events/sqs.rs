//! `[events_source] type = "sqs"`: long-polls the queue that an EventBridge rule on `aws.iam`
//! "AWS API Call via CloudTrail" events feeds (deploy/iam-events-queue.yaml).
//!
//! At least once: a message is deleted only when the caller says its refresh is stored. A message
//! that cannot be parsed is never deleted here: after the queue's `maxReceiveCount` SQS moves it
//! to the dead-letter queue, where someone can look at it.

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use crate::collect::CollectError;
use crate::collect::calls::CallCounter;

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed this message out (1 the first time).
    pub receive_count: u32,
}

pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    /// A client for the queue with the caller's credentials (the queue is in the caller's
    /// account), in `region`.
    pub fn new(base: &SdkConfig, url: &str, region: &str, counter: CallCounter) -> Queue {
        let conf = aws_sdk_sqs::config::Builder::from(base)
            .region(aws_sdk_sqs::config::Region::new(region.to_string()))
            .interceptor(counter)
            .build();
        Queue {
            client: aws_sdk_sqs::Client::from_conf(conf),
            url: url.to_string(),
        }
    }

    /// Waits up to `wait_secs` for messages (long poll), at most `max` (1–10).
    pub async fn receive(&self, wait_secs: i32, max: i32) -> Result<Vec<Message>, CollectError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(wait_secs)
            .max_number_of_messages(max.clamp(1, 10))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("sqs:ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Message {
                    id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                })
            })
            .collect())
    }

    /// Deletes messages (batches of 10: DeleteMessageBatch, authorized by sqs:DeleteMessage).
    /// Returns how many SQS did not delete (they come back after the visibility timeout, and are
    /// refreshed again: harmless).
    pub async fn delete(&self, messages: &[&Message]) -> Result<usize, CollectError> {
        let mut failed = 0;
        for chunk in messages.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .build()
                        .ok()
                })
                .collect();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| CollectError::from_sdk("sqs:DeleteMessage", e))?;
            for f in out.failed() {
                tracing::warn!(
                    code = f.code(),
                    message = f.message().unwrap_or_default(),
                    "SQS did not delete a message; it will be received and refreshed again"
                );
            }
            failed += out.failed().len();
        }
        Ok(failed)
    }

    /// GetQueueAttributes: reachable and readable (check-config --connect, daemon start). Returns
    /// the approximate number of messages waiting.
    pub async fn probe(&self) -> Result<u64, CollectError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("sqs:GetQueueAttributes", e))?;
        Ok(out
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}
