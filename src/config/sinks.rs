//! `[[sinks]]`: where changed records go, and how.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{Secret, SinkUrl, check_http_url};

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

fn default_batch_size() -> usize {
    100
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    5
}

impl SinkConfig {
    /// Every secret value this sink holds, to scrub from anything shown (answers that echo them).
    pub fn secret_values(&self) -> Vec<&str> {
        self.headers.values().map(Secret::expose).collect()
    }
}

/// Checks every sink. Messages start with the key (`sinks[0].url: …`).
pub fn validate_sinks(sinks: &[SinkConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, sink) in sinks.iter().enumerate() {
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

/// The sink in effect when none is configured: NDJSON on stdout.
pub fn default_stdout_sink() -> SinkConfig {
    SinkConfig {
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
    }
}
