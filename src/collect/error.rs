//! One error type for every failed AWS call, phrased for the person who has to fix it.

use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

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
            (None, SdkError::DispatchFailure(_)) | (None, SdkError::TimeoutError(_)) => format!(
                "{operation} could not reach AWS: {} (check aws.endpoint_url, network and proxy settings)",
                DisplayErrorContext(&err)
            ),
            (None, _) => format!("{operation} failed: {}", DisplayErrorContext(&err)),
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

/// Log lines and summaries are one line each; AWS messages sometimes carry newlines.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
