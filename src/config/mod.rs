//! Configuration: a TOML file, then `IAM_INVENTORY__SECTION__KEY` environment overrides, then `${VAR}`
//! expansion, then typed deserialization (unknown keys rejected) and validation.
//!
//! Every error a user can hit is one line that names the file and the key (`sinks[0].mode: …`).
//! Validation is pure: nothing here talks to AWS, opens the store or binds a port.
//!
//! One file per section: `aws`, `collect`, `store`, `schedule` (with `[server]`), `sinks`,
//! `events_source`, `shard`;
//! `secret` wraps what must never be shown; `env` applies environment overrides.

mod aws;
mod collect;
mod env;
mod events_source;
mod schedule;
mod secret;
mod shard;
mod sinks;
mod store;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use aws::{AwsConfig, OrganizationConfig, PARTITIONS, RetryMode, RoleConfig};
pub use collect::{CollectConfig, CredentialKind, Strategy};
pub use events_source::{EventsSourceConfig, EventsSourceType};
pub use schedule::{ScheduleConfig, ServerConfig};
pub use secret::{Secret, SinkUrl, redact_url};
pub use shard::{ShardConfig, shard_of};
pub use sinks::{Compression, EventStream, OnDelete, SinkConfig, SinkFormat, SinkMode, SinkType};
pub use store::StoreConfig;

/// The default config path, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/iam-inventory.toml";
/// Prefix of the environment variables that override single config keys.
pub const ENV_OVERRIDE_PREFIX: &str = "IAM_INVENTORY__";

/// A configuration error, already phrased for the user: `<file>: <key>: <what is wrong>`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The whole configuration, as resolved from file and environment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how to read IAM.
    #[serde(default)]
    pub aws: AwsConfig,
    /// How the collector spreads its calls.
    #[serde(default)]
    pub collect: CollectConfig,
    /// The SQLite snapshot and change log.
    #[serde(default)]
    pub store: StoreConfig,
    /// When `run` syncs.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// The daemon's health and metrics endpoint.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where changed records go. None at all: NDJSON on stdout.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Incremental refresh between full syncs (`run` only): IAM write events from SQS or
    /// CloudTrail name the users to refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_source: Option<EventsSourceConfig>,
    /// Which accounts this process collects when the inventory is split over several processes
    /// (`--shard I/N` overrides it).
    #[serde(default)]
    pub shard: ShardConfig,
}

impl Config {
    /// Reads, overrides, expands, deserializes and validates. `path` is only used for reading and messages.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (pass --config <PATH> or set IAM_INVENTORY_CONFIG)"
            } else {
                ""
            };
            ConfigError(format!(
                "cannot read config file {}: {e}{hint}",
                path.display()
            ))
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_toml_str(&text, &path.display().to_string(), &env)
    }

    /// The whole pipeline on a string, with the environment passed in (tests use their own).
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let err = |msg: String| ConfigError(format!("{origin}: {msg}"));
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            err(format!(
                "invalid TOML at line {line}, column {col}: {}",
                e.message().trim()
            ))
        })?;
        env::apply_env_overrides(&mut table, env).map_err(err)?;
        let mut value = toml::Value::Table(table);
        env::expand_vars(&mut value, &mut Vec::new(), env).map_err(err)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            // toml appends "in `sinks.mode`" on a second line; the path already says where.
            let msg = e.inner().to_string();
            let first = msg.lines().next().unwrap_or_default().trim().to_string();
            err(format!("{key}: {first}"))
        })?;
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        self.aws.validate()?;
        self.collect.validate()?;
        self.store.validate()?;
        self.server.validate()?;
        self.schedule.validate()?;
        if let Some(e) = &self.events_source {
            e.validate()?;
        }
        self.shard.validate()?;
        sinks::validate_sinks(&self.sinks)
    }

    /// The resolved configuration as TOML, secrets redacted: what `check-config` prints.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The sinks in effect: the configured ones, or one stdout sink when none is configured.
    pub fn effective_sinks(&self) -> Vec<SinkConfig> {
        if self.sinks.is_empty() {
            vec![sinks::default_stdout_sink()]
        } else {
            self.sinks.clone()
        }
    }
}

fn default_true() -> bool {
    true
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_str(text, "test.toml", &env).map_err(|e| e.0)
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.aws.path_prefix, "/");
        assert!(c.aws.include_caller_account);
        assert_eq!(c.store.path, PathBuf::from("data/iam-inventory.db"));
        assert_eq!(c.schedule.cron, "0 0 2 * * *");
        assert_eq!(c.effective_sinks()[0].kind, SinkType::Stdout);
    }

    #[test]
    fn bad_enum_names_the_key_and_the_allowed_values() {
        let e = load(
            "[[sinks]]\nname='a'\nurl='http://x/'\nmode='creat-only'\n",
            &[],
        )
        .unwrap_err();
        assert!(e.starts_with("test.toml: sinks[0].mode: "), "{e}");
        assert!(
            e.contains("creat-only") && e.contains("create-update"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let e = load("[aws]\nregoin='us-east-1'\n", &[]).unwrap_err();
        assert!(e.contains("aws") && e.contains("regoin"), "{e}");
    }

    #[test]
    fn malformed_toml_gives_line_and_column() {
        let e = load("[aws]\nregion = \n", &[]).unwrap_err();
        assert!(e.starts_with("test.toml: invalid TOML at line 2"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn env_overrides_keep_types_and_index_lists() {
        let text = "[store]\npath='a.db'\n[[sinks]]\nname='s'\nurl='http://a/'\nbatch_size=5\n";
        let c = load(
            text,
            &[
                ("IAM_INVENTORY__STORE__PATH", "b.db"),
                ("IAM_INVENTORY__SINKS__0__BATCH_SIZE", "7"),
                ("IAM_INVENTORY__AWS__INCLUDE_CALLER_ACCOUNT", "true"),
                ("IAM_INVENTORY__AWS__REGION", "eu-west-1"),
            ],
        )
        .unwrap();
        assert_eq!(c.store.path, PathBuf::from("b.db"));
        assert_eq!(c.sinks[0].batch_size, 7);
        assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn env_overrides_of_secrets_and_headers() {
        let text = "[[aws.roles]]\narn='arn:aws:iam::222222222222:role/R'\n[[sinks]]\nname='s'\nurl='http://a/'\nheaders={Authorization='x'}\n";
        let c = load(
            text,
            &[
                ("IAM_INVENTORY__AWS__ROLES__0__EXTERNAL_ID", "987654321"),
                (
                    "IAM_INVENTORY__SINKS__0__HEADERS__AUTHORIZATION",
                    "Bearer y",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            c.aws.roles[0].external_id.as_ref().unwrap().expose(),
            "987654321"
        );
        assert_eq!(
            c.sinks[0].headers.len(),
            1,
            "{:?}",
            c.sinks[0].headers.keys()
        );
        assert_eq!(c.sinks[0].headers["Authorization"].expose(), "Bearer y");
        let c = load(
            text,
            &[("IAM_INVENTORY__AWS__ROLES__0__EXTERNAL_ID", "00123")],
        )
        .unwrap();
        let ext = c.aws.roles[0]
            .external_id
            .as_ref()
            .unwrap()
            .expose()
            .to_string();
        assert_eq!(ext, "00123", "leading zeros kept");
    }

    #[test]
    fn vars_expand_and_unset_var_names_variable_and_key() {
        let text = "[[sinks]]\nname='s'\nurl='http://a/'\nheaders={Authorization='Bearer ${TOK}', X='$${literal}'}\n";
        let c = load(text, &[("TOK", "t0p")]).unwrap();
        assert_eq!(c.sinks[0].headers["Authorization"].expose(), "Bearer t0p");
        assert_eq!(c.sinks[0].headers["X"].expose(), "${literal}");
        let e = load(text, &[]).unwrap_err();
        assert_eq!(
            e,
            "test.toml: sinks[0].headers.Authorization: environment variable TOK is not set (referenced as ${TOK})"
        );
    }

    #[test]
    fn secrets_never_render() {
        let text = "[[aws.roles]]\narn='arn:aws:iam::222222222222:role/R'\nexternal_id='ext-secret'\n[[sinks]]\nname='s'\nurl='https://tokenuser:pw@h/p?token=abc'\nheaders={Authorization='Bearer sekrit'}\n";
        let c = load(text, &[]).unwrap();
        let shown = c.to_redacted_toml();
        let debug = format!("{c:?}");
        for leaked in ["ext-secret", "sekrit", ":pw@", "abc", "tokenuser"] {
            assert!(!shown.contains(leaked), "{leaked} in {shown}");
            assert!(!debug.contains(leaked), "{leaked} in {debug}");
        }
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn validation_names_keys() {
        let cases = [
            ("[aws]\npath_prefix='engineering/'", "aws.path_prefix"),
            (
                "[[aws.roles]]\narn='arn:aws:iam::12:role/x'",
                "aws.roles[0].arn",
            ),
            ("[[sinks]]\nname='s'\nurl='ftp://x/'", "sinks[0].url"),
            ("[[sinks]]\nname='s'", "sinks[0].url"),
            ("[[sinks]]\nname='s'\ntype='file'", "sinks[0].path"),
            (
                "[[sinks]]\nname='s'\nurl='http://a/'\n[[sinks]]\nname='s'\nurl='http://b/'",
                "sinks[1].name",
            ),
            (
                "[[sinks]]\nname='s'\nurl='http://a/'\nbatch_size=0",
                "sinks[0].batch_size",
            ),
            ("[server]\nlisten='nope'", "server.listen"),
            ("[schedule]\ncron='every day'", "schedule.cron"),
            (
                "[aws]\ninclude_caller_account=false",
                "aws.include_caller_account",
            ),
        ];
        for (text, key) in cases {
            let e = load(text, &[]).unwrap_err();
            assert!(e.starts_with(&format!("test.toml: {key}")), "{text} -> {e}");
        }
    }

    #[test]
    fn role_arns_of_every_partition_are_accepted_and_made_up_ones_are_not() {
        for p in ["aws", "aws-cn", "aws-us-gov", "aws-iso-b"] {
            let text = format!("[[aws.roles]]\narn='arn:{p}:iam::222222222222:role/R'\n");
            load(&text, &[]).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        let e = load(
            "[[aws.roles]]\narn='arn:awsx:iam::222222222222:role/R'\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("aws.roles[0].arn"), "{e}");
    }
}
