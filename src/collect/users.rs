//! ListUsers under the path prefix, every page.

use aws_sdk_iam::Client;
use aws_sdk_iam::types::User;

use super::CollectError;

/// All users whose path starts with `path_prefix`. The paginator follows `Marker` until
/// `IsTruncated` is false: IAM may return fewer than MaxItems with more to come.
pub async fn list_users(iam: &Client, path_prefix: &str) -> Result<Vec<User>, CollectError> {
    iam.list_users()
        .path_prefix(path_prefix)
        .max_items(1000)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListUsers", e))
}
