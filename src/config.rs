//! Configuration: a TOML file, then `IAM_INVENTORY__SECTION__KEY` environment overrides, then `${VAR}`
//! expansion, then typed deserialization (unknown keys rejected) and validation.
//!
//! Every error a user can hit is one line that names the file and the key (`sinks[0].mode: …`).
//! Validation is pure: nothing here talks to AWS, opens the store or binds a port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

/// The default config path, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/iam-inventory.toml";
/// Prefix of the environment variables that override single config keys.
pub const ENV_OVERRIDE_PREFIX: &str = "IAM_INVENTORY__";

/// A configuration error, already phrased for the user: `<file>: <key>: <what is wrong>`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A value that must never reach a log line, the store or `check-config` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    /// Accepts any scalar: an external id set through the environment may look like a number, and a
    /// type error must not echo the secret back in its message.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Secret(s)),
            toml::Value::Integer(i) => Ok(Secret(i.to_string())),
            toml::Value::Float(f) => Ok(Secret(f.to_string())),
            toml::Value::Boolean(b) => Ok(Secret(b.to_string())),
            _ => Err(serde::de::Error::custom(
                "expected a string (the value is secret and not shown)",
            )),
        }
    }
}

impl Secret {
    /// The real value, for the one place that needs it (an HTTP header, an STS call).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Region for the STS and IAM clients (IAM itself is global). Falls back to `AWS_REGION`, then us-east-1.
    pub region: Option<String>,
    /// Custom endpoint (moto, a proxy, a VPC endpoint). `AWS_ENDPOINT_URL` is honoured too.
    pub endpoint_url: Option<String>,
    /// IAM `ListUsers` PathPrefix: only users whose path starts with it. Must start with `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Collect the account of the base credentials too.
    #[serde(default = "default_true")]
    pub include_caller_account: bool,
    /// Each assumed role is one more account.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    /// Discover accounts from AWS Organizations and assume one role name in each.
    pub organization: Option<OrganizationConfig>,
    /// SDK attempts per call (first try included). IAM throttles per account; large estates want 10.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `adaptive` (client-side rate limiting after throttles) or `standard`.
    #[serde(default)]
    pub retry_mode: RetryMode,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            endpoint_url: None,
            path_prefix: default_path_prefix(),
            include_caller_account: true,
            roles: Vec::new(),
            organization: None,
            max_attempts: default_max_attempts(),
            retry_mode: RetryMode::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetryMode {
    #[default]
    Adaptive,
    Standard,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// `arn:<partition>:iam::<account>:role/<name>` (any partition: aws, aws-cn, aws-us-gov…).
    pub arn: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<Secret>,
    /// STS session name (shows in CloudTrail). Default `iam-inventory`.
    pub session_name: Option<String>,
    /// Session length in seconds (900–43200). The credentials are refreshed before they expire.
    pub duration_seconds: Option<u32>,
}

/// `[aws.organization]`: every ACTIVE account that Organizations ListAccounts returns (called with
/// the base credentials: the management account or a delegated administrator) becomes one more
/// account, reached through `role_name`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    /// The reader role's name (with its path, if any) in every member account.
    pub role_name: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<Secret>,
    /// STS session name. Default `iam-inventory`.
    pub session_name: Option<String>,
    /// Session length in seconds (900–43200).
    pub duration_seconds: Option<u32>,
    /// Account ids to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl OrganizationConfig {
    /// The role to assume in `account_id` (`partition` from the organization's ARNs, e.g. `aws`).
    pub fn role_for(&self, partition: &str, account_id: &str) -> RoleConfig {
        RoleConfig {
            arn: format!("arn:{partition}:iam::{account_id}:role/{}", self.role_name),
            external_id: self.external_id.clone(),
            session_name: self.session_name.clone(),
            duration_seconds: self.duration_seconds,
        }
    }
}

impl RoleConfig {
    /// The account id named in the role ARN (validated at load time).
    pub fn account_id(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }
}

/// How users are enriched (see the README, "Collection strategies").
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// per-user up to 100 users under the prefix, bulk above.
    #[default]
    Auto,
    /// Account-wide calls (GAAD, credential report) plus per-user calls only where needed.
    Bulk,
    /// Five calls per user plus one per key: exact and fresh, expensive at scale.
    PerUser,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// `auto`, `bulk` or `per-user`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Accounts collected at the same time.
    #[serde(default = "default_account_concurrency")]
    pub account_concurrency: usize,
    /// IAM calls in flight per account (IAM rate limits are per account).
    #[serde(default = "default_user_concurrency")]
    pub user_concurrency: usize,
    /// bulk: a credential report older than this (seconds) may predate a user's first access key,
    /// so every user's keys are listed. IAM regenerates a report older than 4 hours when asked.
    #[serde(default = "default_report_max_age_secs")]
    pub report_max_age_secs: u64,
    /// bulk: how long to wait for IAM to generate the credential report (seconds). In `auto` a
    /// report not ready in time falls back to per-user calls for that account; in `bulk` it fails it.
    #[serde(default = "default_report_wait_secs")]
    pub report_wait_secs: u64,
    /// auto: per-user calls up to this many users under the prefix (≈5 calls each, exact and
    /// fresh), bulk above it (a handful of account-wide calls plus about one per user).
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: usize,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            strategy: Strategy::default(),
            account_concurrency: default_account_concurrency(),
            user_concurrency: default_user_concurrency(),
            report_max_age_secs: default_report_max_age_secs(),
            report_wait_secs: default_report_wait_secs(),
            bulk_threshold: default_bulk_threshold(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file; created with its migrations, parent folder included.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// How long a sync waits for another process's sync on the same store (seconds) before it
    /// gives up with "store in use".
    #[serde(default = "default_lock_wait_secs")]
    pub lock_wait_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            lock_wait_secs: default_lock_wait_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Six fields: sec min hour day-of-month month day-of-week (UTC).
    #[serde(default = "default_cron")]
    pub cron: String,
    /// Sync once when `run` starts, before the first tick.
    #[serde(default = "default_true")]
    pub run_on_start: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: default_cron(),
            run_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` for `GET /healthz` and `GET /metrics`; unset = no server.
    pub listen: Option<String>,
}

impl ServerConfig {
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SinkType {
    #[default]
    Http,
    File,
    Stdout,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SinkMode {
    #[default]
    CreateUpdate,
    CreateOnly,
    UpdateOnly,
}

impl SinkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkMode::CreateUpdate => "create-update",
            SinkMode::CreateOnly => "create-only",
            SinkMode::UpdateOnly => "update-only",
        }
    }
    pub fn sends_creates(self) -> bool {
        matches!(self, SinkMode::CreateUpdate | SinkMode::CreateOnly)
    }
    pub fn sends_updates(self) -> bool {
        matches!(self, SinkMode::CreateUpdate | SinkMode::UpdateOnly)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SinkFormat {
    /// One record per line, `application/x-ndjson`.
    #[default]
    Ndjson,
    /// One JSON array per request, `application/json`.
    Json,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique; the key of this sink's acknowledged state in the store.
    pub name: String,
    /// `http` (default), `file` or `stdout`.
    #[serde(default, rename = "type")]
    pub kind: SinkType,
    /// http: where records are POSTed.
    #[serde(default)]
    pub url: Option<SinkUrl>,
    /// file: NDJSON appended here.
    pub path: Option<PathBuf>,
    /// Which changes this sink receives.
    #[serde(default)]
    pub mode: SinkMode,
    /// http: request body shape.
    #[serde(default)]
    pub format: SinkFormat,
    /// http: records per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// http: extra request headers; values may use `${VAR}` and are never shown.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// http: per-request timeout in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// http: retries after the first attempt for 408/429/5xx and transport errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// http: `none` or `gzip` request bodies.
    #[serde(default)]
    pub compression: Compression,
}

fn default_true() -> bool {
    true
}
fn default_path_prefix() -> String {
    "/".into()
}
fn default_max_attempts() -> u32 {
    10
}
fn default_account_concurrency() -> usize {
    4
}
/// A report IAM generates for the sync's own request is a few seconds old when it is read.
fn default_report_max_age_secs() -> u64 {
    60
}
fn default_report_wait_secs() -> u64 {
    120
}
fn default_bulk_threshold() -> usize {
    100
}
fn default_lock_wait_secs() -> u64 {
    60
}
fn default_user_concurrency() -> usize {
    8
}
fn default_store_path() -> PathBuf {
    PathBuf::from("data/iam-inventory.db")
}
fn default_cron() -> String {
    "0 0 2 * * *".into()
}
fn default_batch_size() -> usize {
    100
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    5
}

/// A sink URL: shown (Debug, `check-config`) with its password and query values redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SinkUrl(String);

impl SinkUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl Serialize for SinkUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

/// A URL as it may be shown: user-info password and query values replaced. URLs are also never logged
/// whole elsewhere (log lines name the sink), but a token in a query string is common enough to guard.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(raw) else {
        return "<unparseable url>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("redacted"));
    }
    // `https://TOKEN@host/` puts the secret in the user name.
    if !url.username().is_empty() {
        let _ = url.set_username("redacted");
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, _)| (k.into_owned(), "redacted".to_string()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
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
        apply_env_overrides(&mut table, env).map_err(err)?;
        let mut value = toml::Value::Table(table);
        expand_vars(&mut value, &mut Vec::new(), env).map_err(err)?;
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
        let a = &self.aws;
        if !a.path_prefix.starts_with('/') {
            return Err(format!(
                "aws.path_prefix: {:?} must start with \"/\" (\"/\" selects all users; \"/contractors/\" one folder)",
                a.path_prefix
            ));
        }
        if a.path_prefix.len() > 512 || a.path_prefix.chars().any(|c| !('!'..='~').contains(&c)) {
            return Err(format!(
                "aws.path_prefix: {:?} must be at most 512 printable ASCII characters without spaces",
                a.path_prefix
            ));
        }
        if a.region.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return Err("aws.region: must not be empty (e.g. \"us-east-1\")".into());
        }
        if let Some(u) = &a.endpoint_url {
            check_http_url(u).map_err(|m| format!("aws.endpoint_url: {m}"))?;
        }
        if !(1..=20).contains(&a.max_attempts) {
            return Err(format!(
                "aws.max_attempts: {} is out of range (1 to 20)",
                a.max_attempts
            ));
        }
        if !a.include_caller_account && a.roles.is_empty() && a.organization.is_none() {
            return Err(
                "aws.include_caller_account: false with no [[aws.roles]] and no [aws.organization] leaves no account to collect"
                    .into(),
            );
        }
        if let Some(org) = &a.organization {
            let name_ok = !org.role_name.is_empty()
                && org.role_name.len() <= 512
                && org
                    .role_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
                && !org.role_name.starts_with('/');
            if !name_ok {
                return Err(format!(
                    "aws.organization.role_name: {:?} is not a role name (letters, digits and +=,.@_-, optionally a path like team/Reader)",
                    org.role_name
                ));
            }
            if let Some(bad) = org
                .exclude
                .iter()
                .find(|id| id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "aws.organization.exclude: {bad:?} is not a 12-digit account id"
                ));
            }
            if let Some(d) = org.duration_seconds.filter(|d| !(900..=43200).contains(d)) {
                return Err(format!(
                    "aws.organization.duration_seconds: {d} is out of range (900 to 43200)"
                ));
            }
        }
        let mut seen_roles = std::collections::HashSet::new();
        for (i, role) in a.roles.iter().enumerate() {
            let key = format!("aws.roles[{i}]");
            if !is_role_arn(&role.arn) {
                return Err(format!(
                    "{key}.arn: {:?} is not a role ARN (expected arn:<partition>:iam::<12-digit account>:role/<name>, partition aws, aws-cn, aws-us-gov…)",
                    role.arn
                ));
            }
            if !seen_roles.insert(role.account_id().to_string()) {
                return Err(format!(
                    "{key}.arn: account {} is already reached by another role; one role per account",
                    role.account_id()
                ));
            }
            if let Some(d) = role.duration_seconds.filter(|d| !(900..=43200).contains(d)) {
                return Err(format!(
                    "{key}.duration_seconds: {d} is out of range (900 to 43200)"
                ));
            }
            if let Some(s) = &role.session_name {
                let ok = (2..=64).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c));
                if !ok {
                    return Err(format!(
                        "{key}.session_name: {s:?} must be 2-64 characters of letters, digits and =,.@-_"
                    ));
                }
            }
        }
        let c = &self.collect;
        if !(1..=64).contains(&c.account_concurrency) {
            return Err(format!(
                "collect.account_concurrency: {} is out of range (1 to 64)",
                c.account_concurrency
            ));
        }
        if !(1..=64).contains(&c.user_concurrency) {
            return Err(format!(
                "collect.user_concurrency: {} is out of range (1 to 64)",
                c.user_concurrency
            ));
        }
        if !(1..=3600).contains(&c.report_wait_secs) {
            return Err(format!(
                "collect.report_wait_secs: {} is out of range (1 to 3600)",
                c.report_wait_secs
            ));
        }
        if self.store.lock_wait_secs > 86_400 {
            return Err(format!(
                "store.lock_wait_secs: {} is out of range (0 to 86400)",
                self.store.lock_wait_secs
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err("store.path: must not be empty".into());
        }
        if let Some(l) = self
            .server
            .listen
            .as_ref()
            .filter(|l| l.parse::<SocketAddr>().is_err())
        {
            return Err(format!(
                "server.listen: {l:?} is not host:port (e.g. \"127.0.0.1:9464\")"
            ));
        }
        crate::schedule::parse_cron(&self.schedule.cron)
            .map_err(|m| format!("schedule.cron: {:?} {m}", self.schedule.cron))?;
        let mut names = std::collections::HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let key = format!("sinks[{i}]");
            if sink.name.trim().is_empty() {
                return Err(format!("{key}.name: must not be empty"));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(format!(
                    "{key}.name: {:?} is used by another sink; names must be unique (they key each sink's delivery state)",
                    sink.name
                ));
            }
            match sink.kind {
                SinkType::Http => {
                    let url = sink.url.as_ref().map(SinkUrl::as_str).ok_or_else(|| {
                        format!("{key}.url: required for an http sink ({:?})", sink.name)
                    })?;
                    check_http_url(url).map_err(|m| format!("{key}.url: {m}"))?;
                    if sink.path.is_some() {
                        return Err(format!(
                            "{key}.path: only for type = \"file\" (this sink is http)"
                        ));
                    }
                }
                SinkType::File => {
                    if sink.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                        return Err(format!(
                            "{key}.path: required for a file sink ({:?})",
                            sink.name
                        ));
                    }
                    if sink.url.is_some() {
                        return Err(format!("{key}.url: only for type = \"http\""));
                    }
                }
                SinkType::Stdout => {
                    if sink.url.is_some() || sink.path.is_some() {
                        return Err(format!("{key}: a stdout sink takes neither url nor path"));
                    }
                }
            }
            if !(1..=10_000).contains(&sink.batch_size) {
                return Err(format!(
                    "{key}.batch_size: {} is out of range (1 to 10000)",
                    sink.batch_size
                ));
            }
            if !(1..=3600).contains(&sink.timeout_secs) {
                return Err(format!(
                    "{key}.timeout_secs: {} is out of range (1 to 3600)",
                    sink.timeout_secs
                ));
            }
            if sink.max_retries > 20 {
                return Err(format!(
                    "{key}.max_retries: {} is out of range (0 to 20)",
                    sink.max_retries
                ));
            }
            for (name, value) in &sink.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!(
                        "{key}.headers: {name:?} is not a valid HTTP header name"
                    ));
                }
                if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                    return Err(format!(
                        "{key}.headers.{name}: the value is not a valid HTTP header value (control characters?)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The resolved configuration as TOML, secrets redacted: what `check-config` prints.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The sinks in effect: the configured ones, or one stdout sink when none is configured.
    pub fn effective_sinks(&self) -> Vec<SinkConfig> {
        if !self.sinks.is_empty() {
            return self.sinks.clone();
        }
        vec![SinkConfig {
            name: "stdout".into(),
            kind: SinkType::Stdout,
            url: None,
            path: None,
            mode: SinkMode::CreateUpdate,
            format: SinkFormat::Ndjson,
            batch_size: default_batch_size(),
            headers: BTreeMap::new(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            compression: Compression::None,
        }]
    }
}

impl SinkConfig {
    /// Every secret value this sink holds, to scrub from anything shown (answers that echo them).
    pub fn secret_values(&self) -> Vec<&str> {
        self.headers.values().map(Secret::expose).collect()
    }
}

fn check_http_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| format!("{:?} is not a valid URL ({e})", redact_url(raw)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{:?} must be an http:// or https:// URL with a host",
            redact_url(raw)
        ));
    }
    Ok(())
}

/// The AWS partitions (the second field of an ARN).
pub const PARTITIONS: &[&str] = &[
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
    "aws-eusc",
];

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && PARTITIONS.contains(&parts[1])
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > "role/".len()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `IAM_INVENTORY__STORE__PATH=x` sets `[store] path = "x"`; numeric segments index arrays
/// (`IAM_INVENTORY__SINKS__0__URL`). A value keeps the type of the key it replaces; a new key is
/// a boolean or integer when it reads as one, else a string.
fn apply_env_overrides(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), String> {
    let mut overrides: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_OVERRIDE_PREFIX))
        .collect();
    overrides.sort();
    for (name, raw) in overrides {
        let segments: Vec<String> = name[ENV_OVERRIDE_PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "environment variable {name}: expected IAM_INVENTORY__SECTION__KEY"
            ));
        }
        let mut node = &mut *table;
        let Some((last, parents)) = segments.split_last() else {
            continue;
        };
        let mut i = 0;
        while i < parents.len() {
            let seg = &existing_key(node, &parents[i]);
            let entry = node
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => node = t,
                toml::Value::Array(items) => {
                    let idx: usize = parents
                        .get(i + 1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| {
                            format!("environment variable {name}: {seg} is a list; name an index (e.g. {seg}__0)")
                        })?;
                    match items.get_mut(idx) {
                        Some(toml::Value::Table(t)) => node = t,
                        _ => {
                            return Err(format!(
                                "environment variable {name}: {seg}[{idx}] does not exist in the config file"
                            ));
                        }
                    }
                    i += 1;
                }
                _ => {
                    return Err(format!(
                        "environment variable {name}: {seg} is not a section"
                    ));
                }
            }
            i += 1;
        }
        // Keys match case-insensitively, so `…__HEADERS__AUTHORIZATION` replaces the file's
        // `Authorization` header instead of adding a second one.
        let last = &existing_key(node, last);
        let as_bool = match raw.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        // Only a value that reads back identically is a number: "00123" stays the string it is.
        let as_int = raw.parse::<i64>().ok().filter(|i| i.to_string() == *raw);
        let new = match (node.get(last), as_bool, as_int) {
            (Some(toml::Value::String(_)), _, _) => toml::Value::String(raw.clone()),
            (Some(toml::Value::Boolean(_)) | None, Some(b), _) => toml::Value::Boolean(b),
            (Some(toml::Value::Integer(_)) | None, _, Some(i)) => toml::Value::Integer(i),
            _ => toml::Value::String(raw.clone()),
        };
        node.insert(last.clone(), new);
    }
    Ok(())
}

/// The key of `table` equal to `wanted` ignoring ASCII case, or `wanted` itself.
fn existing_key(table: &toml::Table, wanted: &str) -> String {
    table
        .keys()
        .find(|k| k.eq_ignore_ascii_case(wanted))
        .cloned()
        .unwrap_or_else(|| wanted.to_string())
}

/// Replaces `${VAR}` in every string value with the environment's value; `$${` is a literal `${`.
/// An unset variable names itself and the key.
fn expand_vars(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &[(String, String)],
) -> Result<(), String> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            *s = expand_str(s, env).map_err(|var| {
                format!(
                    "{}: environment variable {var} is not set (referenced as ${{{var}}})",
                    key_path(path)
                )
            })?;
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                path.push(k.clone());
                expand_vars(v, path, env)?;
                path.pop();
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                expand_vars(v, path, env)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

fn expand_str(s: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let var = &tail[..end];
            match env.iter().find(|(k, _)| k == var) {
                Some((_, v)) => out.push_str(v),
                None => return Err(var.to_string()),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
