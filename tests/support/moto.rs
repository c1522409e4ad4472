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
