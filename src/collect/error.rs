//! One error type for every failed AWS call, phrased for the person who has to fix it.

use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};

use crate::text::{error_chain as chain, one_line};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CollectError {
    /// `iam:ListUsers`, `sts:AssumeRole`…
    pub operation: &'static str,
    /// The AWS error code (`AccessDenied`, `Throttling`, `NoSuchEntity`…) when AWS answered.
    pub code: Option<String>,
    pub message: String,
}

impl CollectError {
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_string);
        let aws_message = err.message().map(str::to_string);
        let message = match (&code, &err) {
            (Some(code), _) => {
                let text = aws_message.unwrap_or_default();
                let hint = hint_for(code, operation);
                format!("{code} on {operation}: {text}{hint}")
            }
            (None, _) if chain(&err).contains("no credentials found") => format!(
                "{operation}: no AWS credentials found (tried environment variables, profile, web identity, ECS and instance metadata); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance or pod role"
            ),
            (None, SdkError::DispatchFailure(_)) | (None, SdkError::TimeoutError(_)) => format!(
                "{operation} could not reach AWS: {} (check aws.endpoint_url, network and proxy settings)",
                chain(&err)
            ),
            (None, _) => format!("{operation} failed: {}", chain(&err)),
        };
        CollectError {
            operation,
            code,
            message: one_line(&message),
        }
    }

    pub fn is_no_such_entity(&self) -> bool {
        self.code.as_deref() == Some("NoSuchEntity")
    }
}

fn hint_for(code: &str, operation: &str) -> String {
    match code {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            if operation == "sts:AssumeRole" {
                " (check the role's trust policy allows the base credentials and that external_id matches)".into()
            } else if operation.starts_with("organizations:") {
                format!(" (grant {operation} to the base identity, in the management account or a delegated administrator; see deploy/assume-role-policy.json)")
            } else {
                format!(" (grant {operation} to the reader; see deploy/iam-policy.json)")
            }
        }
        "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken" => {
            " (the base AWS credentials are invalid or expired)".into()
        }
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
            " (still throttled after all retries; raise aws.max_attempts or lower collect.user_concurrency)".into()
        }
        _ => String::new(),
    }
}
