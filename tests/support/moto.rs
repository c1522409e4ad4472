//! A real moto server (from ./.venv, installed by scripts/bootstrap.sh) on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iam::config::Credentials;

pub const CALLER_ACCOUNT: &str = "123456789012";

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// With AWS-managed policies (AdministratorAccess, ReadOnlyAccess…) loaded, as moto only does
    /// when asked; it makes moto's first IAM call slower.
    pub fn start_with_managed_policies() -> Moto {
        Self::start_with(&[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")])
    }

    fn start_with(env: &[(&str, &str)]) -> Moto {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = root.join(".venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/bootstrap.sh (scripts/test.sh does it for you)",
            bin.display()
        );
        for _ in 0..5 {
            let port = super::free_port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            if moto.wait_ready(Duration::from_secs(30)) {
                return moto;
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!("GET /moto-api/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && buf.starts_with(b"HTTP/1.")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }

    /// An IAM client acting in the caller's account (123456789012).
    pub async fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk_config().await)
    }

    /// An IAM client acting in `account`: moto gives AssumeRole credentials the account named in
    /// the role ARN, so each account id is one more isolated IAM.
    pub async fn iam_in(&self, account: &str) -> aws_sdk_iam::Client {
        if account == CALLER_ACCOUNT {
            return self.iam().await;
        }
        let conf = self.sdk_config().await;
        let sts = aws_sdk_sts::Client::new(&conf);
        let out = sts
            .assume_role()
            .role_arn(role_arn(account))
            .role_session_name("seed")
            .send()
            .await
            .expect("moto AssumeRole");
        let c = out.credentials().expect("credentials");
        let creds = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "assumed",
        );
        let conf = aws_sdk_iam::config::Builder::from(&conf)
            .credentials_provider(creds)
            .build();
        aws_sdk_iam::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/IamInventoryReader")
}

/// What a seeded user gets.
#[derive(Default, Clone)]
pub struct Seed<'a> {
    pub name: &'a str,
    pub path: &'a str,
    pub tags: &'a [(&'a str, &'a str)],
    pub active_keys: usize,
    pub inactive_keys: usize,
    pub mfa: bool,
    pub console: bool,
    pub groups: &'a [&'a str],
}

/// Creates the user and everything `seed` asks for. Groups are created when missing.
pub async fn seed_user(iam: &aws_sdk_iam::Client, seed: &Seed<'_>) {
    let mut req = iam.create_user().user_name(seed.name).path(seed.path);
    for (k, v) in seed.tags {
        req = req.tags(
            aws_sdk_iam::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build()
                .unwrap(),
        );
    }
    req.send().await.expect("create user");
    for i in 0..(seed.active_keys + seed.inactive_keys) {
        let key = iam
            .create_access_key()
            .user_name(seed.name)
            .send()
            .await
            .expect("create key");
        if i >= seed.active_keys {
            let id = key.access_key().unwrap().access_key_id().to_string();
            iam.update_access_key()
                .user_name(seed.name)
                .access_key_id(id)
                .status(aws_sdk_iam::types::StatusType::Inactive)
                .send()
                .await
                .expect("deactivate key");
        }
    }
    if seed.mfa {
        add_mfa(iam, seed.name).await;
    }
    if seed.console {
        iam.create_login_profile()
            .user_name(seed.name)
            .password("Test-password-1!")
            .send()
            .await
            .expect("login profile");
    }
    for g in seed.groups {
        let _ = iam.create_group().group_name(*g).send().await;
        iam.add_user_to_group()
            .group_name(*g)
            .user_name(seed.name)
            .send()
            .await
            .expect("add to group");
    }
}

/// A virtual MFA device named after the user, enabled for them; returns its serial.
pub async fn add_mfa(iam: &aws_sdk_iam::Client, user: &str) -> String {
    add_mfa_named(iam, user, user).await
}

/// A virtual MFA device named `device`, enabled for `user` (a user may have several); its serial.
pub async fn add_mfa_named(iam: &aws_sdk_iam::Client, user: &str, device: &str) -> String {
    let dev = iam
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(device)
        .send()
        .await
        .expect("virtual mfa");
    let serial = dev
        .virtual_mfa_device()
        .unwrap()
        .serial_number()
        .to_string();
    iam.enable_mfa_device()
        .user_name(user)
        .serial_number(&serial)
        .authentication_code1("123456")
        .authentication_code2("654321")
        .send()
        .await
        .expect("enable mfa");
    serial
}

impl Moto {
    /// An SQS client in the caller's account (moto serves SQS on the same endpoint).
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }
}

/// Deletes a user as IAM requires: out of its groups, without its console password, then the
/// user (seeded users have no keys left to delete when this is used).
pub async fn delete_user(iam: &aws_sdk_iam::Client, user: &str) {
    let groups = iam
        .list_groups_for_user()
        .user_name(user)
        .send()
        .await
        .expect("list groups");
    for g in groups.groups() {
        iam.remove_user_from_group()
            .group_name(g.group_name())
            .user_name(user)
            .send()
            .await
            .expect("leave group");
    }
    // NoSuchEntity when the user has no password: nothing to delete.
    if let Err(e) = iam.delete_login_profile().user_name(user).send().await {
        assert!(
            e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()),
            "delete login profile: {e:?}"
        );
    }
    iam.delete_user()
        .user_name(user)
        .send()
        .await
        .expect("delete user");
}

/// Creates a queue with a dead-letter queue that takes a message after `max_receives` receipts,
/// and a visibility timeout of `visibility_secs`, as deploy/iam-events-queue.yaml does. Returns
/// (queue URL, DLQ URL).
pub async fn events_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receives: u32,
    visibility_secs: u32,
) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("create DLQ");
    let dlq_url = dlq.queue_url().unwrap().to_string();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(A::QueueArn)
        .send()
        .await
        .expect("DLQ arn")
        .attributes()
        .and_then(|a| a.get(&A::QueueArn).cloned())
        .unwrap();
    let q = sqs
        .create_queue()
        .queue_name(name)
        .attributes(A::VisibilityTimeout, visibility_secs.to_string())
        .attributes(
            A::RedrivePolicy,
            format!(
                "{{\"deadLetterTargetArn\":\"{dlq_arn}\",\"maxReceiveCount\":\"{max_receives}\"}}"
            ),
        )
        .send()
        .await
        .expect("create queue");
    (q.queue_url().unwrap().to_string(), dlq_url)
}

/// Messages in a queue, visible or in flight.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let a = out.attributes().cloned().unwrap_or_default();
    let n = |k: A| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
}

/// A CloudTrail record of an IAM call, as CloudTrail writes it (and EventBridge carries it in
/// `detail`): made by the assumed role `Admin`, session `jane`.
pub fn trail_record(
    account: &str,
    event_name: &str,
    event_id: &str,
    time: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLEADMIN:jane",
            "arn": format!("arn:aws:sts::{account}:assumed-role/Admin/jane"),
            "accountId": account,
            "accessKeyId": "ASIAEXAMPLEJANE00001",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLEADMIN",
                    "arn": format!("arn:aws:iam::{account}:role/Admin"), "accountId": account, "userName": "Admin"},
                "attributes": {"creationDate": time, "mfaAuthenticated": "true"}
            }
        },
        "eventTime": time,
        "eventSource": "iam.amazonaws.com",
        "eventName": event_name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": params,
        "responseElements": null,
        "requestID": format!("req-{event_id}"),
        "eventID": event_id,
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management"
    })
}

/// The EventBridge event an `aws.iam` rule puts on the queue for that record.
pub fn eventbridge_message(record: &serde_json::Value) -> String {
    serde_json::json!({
        "version": "0",
        "id": format!("eb-{}", record["eventID"].as_str().unwrap_or("x")),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.iam",
        "account": record["recipientAccountId"],
        "time": record["eventTime"],
        "region": "us-east-1",
        "resources": [],
        "detail": record
    })
    .to_string()
}
