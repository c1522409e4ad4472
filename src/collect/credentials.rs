//! Credentials besides access keys: SSH public keys (CodeCommit), X.509 signing certificates and
//! service-specific credentials (CodeCommit, Keyspaces, Bedrock…), each with id, status and creation
//! time. Which of them are collected is `[collect] credential_types`.
//!
//! Calls: ListSSHPublicKeys per user (IAM has no account-wide call for them); ListSigningCertificates
//! per user, or in bulk only for users whose credential-report row shows a certificate
//! (`cert_N_last_rotated`, which is set for inactive certificates too, unlike `cert_N_active`);
//! ListServiceSpecificCredentials once per account with `AllUsers=true`.

use std::collections::HashMap;

use aws_sdk_iam::Client;
use serde::{Deserialize, Serialize};

use super::{CollectError, millis};
pub use crate::config::CredentialKind;

/// One credential of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub kind: CredentialKind,
    pub id: String,
    /// `Active`, `Inactive` (or `Expired` for service-specific credentials).
    pub status: String,
    pub created: Option<i64>,
    /// Service-specific credentials: the service (e.g. `codecommit.amazonaws.com`).
    pub service: Option<String>,
}

pub async fn ssh_keys(iam: &Client, user: &str) -> Result<Vec<Credential>, CollectError> {
    let keys: Vec<_> = iam
        .list_ssh_public_keys()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListSSHPublicKeys", e))?;
    Ok(keys
        .into_iter()
        .map(|k| Credential {
            kind: CredentialKind::SshKeys,
            id: k.ssh_public_key_id().to_string(),
            status: k.status().as_str().to_string(),
            created: Some(millis(k.upload_date())),
            service: None,
        })
        .collect())
}

pub async fn signing_certificates(
    iam: &Client,
    user: &str,
) -> Result<Vec<Credential>, CollectError> {
    let certs: Vec<_> = iam
        .list_signing_certificates()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListSigningCertificates", e))?;
    Ok(certs
        .into_iter()
        .map(|c| Credential {
            kind: CredentialKind::SigningCertificates,
            id: c.certificate_id().to_string(),
            status: c.status().as_str().to_string(),
            created: c.upload_date().map(millis),
            service: None,
        })
        .collect())
}

/// Every service-specific credential of the account, by user name: one paged call.
pub async fn service_specific_all(
    iam: &Client,
) -> Result<HashMap<String, Vec<Credential>>, CollectError> {
    let mut by_user: HashMap<String, Vec<Credential>> = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let out = iam
            .list_service_specific_credentials()
            .all_users(true)
            .max_items(1000)
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("iam:ListServiceSpecificCredentials", e))?;
        for c in out.service_specific_credentials() {
            by_user
                .entry(c.user_name().to_string())
                .or_default()
                .push(Credential {
                    kind: CredentialKind::ServiceSpecific,
                    id: c.service_specific_credential_id().to_string(),
                    status: c.status().as_str().to_string(),
                    created: Some(millis(c.create_date())),
                    service: Some(c.service_name().to_string()),
                });
        }
        match out.marker().filter(|_| out.is_truncated()) {
            Some(m) => marker = Some(m.to_string()),
            None => break,
        }
    }
    Ok(by_user)
}
