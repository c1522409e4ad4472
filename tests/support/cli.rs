//! Runs the real binary with a clean environment: only what a test passes, plus fake AWS credentials.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_iam-inventory");

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout as NDJSON; panics on a line that is not JSON (stdout is for data only).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }
}

/// A temp dir with a config file in it and the store beside it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store.db")
    }

    /// Writes `config.toml` with the store in this workspace appended ([store] path), and
    /// returns its path.
    ///
    /// Unless the test sets them, `[collect]` gets `root_user = false` and `credential_types =
    /// ["signing_certificates"]` (the default but service-specific credentials): moto 5.2.5 answers
    /// ListServiceSpecificCredentials with a 500 (tests of service-specific credentials answer it
    /// from the proxy), and most tests count users without the root record. The tests of those
    /// features set the keys themselves.
    pub fn config(&self, body: &str) -> PathBuf {
        let p = self.path("config.toml");
        let mut text = if body.contains("[store]") {
            body.to_string()
        } else {
            format!(
                "{body}\n[store]\npath = {:?}\n",
                self.store().display().to_string()
            )
        };
        let mut defaults = String::new();
        if !text.contains("root_user") {
            defaults.push_str("root_user = false\n");
        }
        if !text.contains("credential_types") {
            defaults.push_str("credential_types = [\"signing_certificates\"]\n");
        }
        text = match text.find("[collect]\n") {
            Some(at) => {
                let end = at + "[collect]\n".len();
                format!("{}{defaults}{}", &text[..end], &text[end..])
            }
            None if !defaults.is_empty() => format!("{text}\n[collect]\n{defaults}"),
            None => text,
        };
        std::fs::write(&p, text).expect("write config");
        p
    }

    pub fn command(
        &self,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--config").arg(config).args(args);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub async fn run(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self
            .command(config, args, env)
            .output()
            .await
            .expect("binary runs");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The last line a failing command printed on stderr (where its one-line error is).
pub fn last_line(s: &str) -> &str {
    s.trim_end().lines().last().unwrap_or("")
}
