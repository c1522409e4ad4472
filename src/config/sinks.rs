//! `[[sinks]]`: where changed records go, and how.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{Secret, SinkUrl, check_http_url};

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum SinkType {
    /// A generic POST of NDJSON or a JSON array (v1).
    #[default]
    #[serde(rename = "http")]
    Http,
    /// NDJSON appended to a file.
    #[serde(rename = "file")]
    File,
    /// NDJSON on standard output.
    #[serde(rename = "stdout")]
    Stdout,
    /// Elasticsearch or OpenSearch `_bulk`.
    #[serde(rename = "elasticsearch", alias = "opensearch")]
    Elasticsearch,
    /// Splunk HTTP Event Collector.
    #[serde(rename = "splunk_hec")]
    SplunkHec,
    /// Sekoia.io asset connector.
    #[serde(rename = "sekoia_assets")]
    SekoiaAssets,
    /// Oomnitza bulk API.
    #[serde(rename = "oomnitza")]
    Oomnitza,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Http => "http",
            SinkType::File => "file",
            SinkType::Stdout => "stdout",
            SinkType::Elasticsearch => "elasticsearch",
            SinkType::SplunkHec => "splunk_hec",
            SinkType::SekoiaAssets => "sekoia_assets",
            SinkType::Oomnitza => "oomnitza",
        }
    }
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

/// `on_delete`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnDelete {
    /// Deleted users stay at the destination (the change log and change events still tell).
    #[default]
    Keep,
    /// Deleted users are removed from the destination.
    Delete,
}

/// What a sink receives (`events`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum EventStream {
    /// OCSF 5003 records of created and updated users, per the sink's `mode`.
    Inventory,
    /// One OCSF 3001 Account Change event per change, deletions included, in change order.
    Changes,
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
    /// `http` (default), `file`, `stdout`, `elasticsearch` (or `opensearch`), `splunk_hec`.
    #[serde(default, rename = "type")]
    pub kind: SinkType,
    /// http: where records are POSTed; elasticsearch and splunk_hec: the base URL.
    #[serde(default)]
    pub url: Option<SinkUrl>,
    /// file: NDJSON appended here.
    pub path: Option<PathBuf>,
    /// Which changes this sink receives.
    #[serde(default)]
    pub mode: SinkMode,
    /// `["inventory"]` (default), `["changes"]` or both: 5003 records and/or 3001 change events.
    #[serde(default = "default_events")]
    pub events: Vec<EventStream>,
    /// elasticsearch: where change events go (default `<index>-changes`).
    pub events_index: Option<String>,
    /// What a user deleted from IAM becomes at this sink: `keep` (default) or `delete` (for kinds
    /// with a delete operation: elasticsearch).
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Output field → minijinja expression over the OCSF 5003 record: the sink receives flat
    /// objects of exactly these fields instead of the record.
    pub fields: Option<BTreeMap<String, String>>,
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
    /// elasticsearch: the index (or alias) records are written to; splunk_hec: the Splunk index
    /// (unset: the token's default index).
    pub index: Option<String>,
    /// elasticsearch: user for Basic authentication (with `password`).
    pub username: Option<String>,
    /// elasticsearch: password for Basic authentication.
    pub password: Option<Secret>,
    /// elasticsearch: an API key, sent as `Authorization: ApiKey <api_key>` (the encoded key);
    /// sekoia_assets: the API key (`Authorization: Bearer`).
    pub api_key: Option<Secret>,
    /// elasticsearch: the ingest pipeline every document goes through.
    pub pipeline: Option<String>,
    /// splunk_hec: the HEC token (`Authorization: Splunk <token>`); oomnitza: the API token
    /// (`Authorization2`).
    pub token: Option<Secret>,
    /// sekoia_assets: the asset connector's UUID.
    pub connector_uuid: Option<String>,
    /// oomnitza: the connector name shown in Oomnitza's sync sessions.
    pub connector_name: Option<String>,
    /// oomnitza: the mapped fields Oomnitza matches records on (default `["arn"]`).
    pub sync_field: Option<Vec<String>>,
    /// oomnitza: the record type (default `"users"`).
    pub data_type: Option<String>,
    /// splunk_hec: the event `source` (default `iam-inventory`).
    pub source: Option<String>,
    /// splunk_hec: the event `sourcetype` (default `ocsf:user_inventory`).
    pub sourcetype: Option<String>,
    /// splunk_hec: the event `host` (unset: Splunk's default for the token).
    pub host: Option<String>,
    /// splunk_hec: indexer acknowledgement: records count as delivered only once Splunk says they
    /// are indexed (the token must have acknowledgement enabled).
    #[serde(default)]
    pub ack: bool,
    /// splunk_hec with `ack`: how long to wait for a batch to be indexed before it is left for the
    /// next sync.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
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
fn default_events() -> Vec<EventStream> {
    vec![EventStream::Inventory]
}
fn default_ack_timeout_secs() -> u64 {
    120
}

impl SinkConfig {
    /// Every secret value this sink holds, to scrub from anything shown (answers that echo them).
    /// The field mapping, compiled (validated at load, so `None` here means "no fields").
    pub fn mapping(&self) -> Option<crate::mapping::Mapping> {
        self.fields
            .as_ref()
            .and_then(|f| crate::mapping::Mapping::new(f).ok())
    }

    /// oomnitza: the fields records are matched on.
    pub fn sync_fields(&self) -> Vec<String> {
        self.sync_field
            .clone()
            .unwrap_or_else(|| vec!["arn".to_string()])
    }

    pub fn takes(&self, stream: EventStream) -> bool {
        self.events.contains(&stream)
    }

    /// elasticsearch: the index change events go to.
    pub fn events_index(&self) -> String {
        self.events_index.clone().unwrap_or_else(|| {
            format!(
                "{}-changes",
                self.index.as_deref().unwrap_or("iam-inventory")
            )
        })
    }

    pub fn secret_values(&self) -> Vec<&str> {
        self.headers
            .values()
            .chain(&self.password)
            .chain(&self.api_key)
            .chain(&self.token)
            .map(Secret::expose)
            .collect()
    }

    /// The keys of this sink that only some kinds take, with the kinds that take them; a key set
    /// on a kind that does not use it is a configuration error, not silently ignored.
    fn kind_keys(&self) -> [(&'static str, bool, &'static [SinkType]); 17] {
        use SinkType::*;
        [
            (
                "url",
                self.url.is_some(),
                &[Http, Elasticsearch, SplunkHec, SekoiaAssets, Oomnitza],
            ),
            ("path", self.path.is_some(), &[File]),
            ("index", self.index.is_some(), &[Elasticsearch, SplunkHec]),
            ("username", self.username.is_some(), &[Elasticsearch]),
            ("password", self.password.is_some(), &[Elasticsearch]),
            (
                "api_key",
                self.api_key.is_some(),
                &[Elasticsearch, SekoiaAssets],
            ),
            ("pipeline", self.pipeline.is_some(), &[Elasticsearch]),
            (
                "events_index",
                self.events_index.is_some(),
                &[Elasticsearch],
            ),
            ("token", self.token.is_some(), &[SplunkHec, Oomnitza]),
            (
                "connector_uuid",
                self.connector_uuid.is_some(),
                &[SekoiaAssets],
            ),
            ("connector_name", self.connector_name.is_some(), &[Oomnitza]),
            ("sync_field", self.sync_field.is_some(), &[Oomnitza]),
            ("data_type", self.data_type.is_some(), &[Oomnitza]),
            ("source", self.source.is_some(), &[SplunkHec]),
            ("sourcetype", self.sourcetype.is_some(), &[SplunkHec]),
            ("host", self.host.is_some(), &[SplunkHec]),
            ("ack", self.ack, &[SplunkHec]),
        ]
    }
}

/// The kind-specific checks of one sink.
fn validate_kind(key: &str, sink: &SinkConfig) -> Result<(), String> {
    let kind = sink.kind.as_str();
    for (name, set, kinds) in sink.kind_keys() {
        if set && !kinds.contains(&sink.kind) {
            let takes: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "{key}.{name}: not a key of a {kind} sink (only of type {})",
                takes.join(", ")
            ));
        }
    }
    let required = |name: &str, set: bool| {
        if set {
            Ok(())
        } else {
            Err(format!(
                "{key}.{name}: required for a {kind} sink ({:?})",
                sink.name
            ))
        }
    };
    match sink.kind {
        SinkType::Http | SinkType::Elasticsearch | SinkType::SplunkHec | SinkType::Oomnitza => {
            required("url", sink.url.is_some())?;
            let url = sink.url.as_ref().map(SinkUrl::as_str).unwrap_or_default();
            check_http_url(url).map_err(|m| format!("{key}.url: {m}"))?;
        }
        SinkType::SekoiaAssets => {
            if let Some(url) = sink.url.as_ref().map(SinkUrl::as_str) {
                check_http_url(url).map_err(|m| format!("{key}.url: {m}"))?;
            }
        }
        SinkType::File => {
            required(
                "path",
                sink.path
                    .as_ref()
                    .is_some_and(|p| !p.as_os_str().is_empty()),
            )?;
        }
        SinkType::Stdout => {}
    }
    match sink.kind {
        SinkType::Elasticsearch => {
            required("index", sink.index.is_some())?;
            let index = sink.index.as_deref().unwrap_or_default();
            check_es_index(index).map_err(|m| format!("{key}.index: {index:?} {m}"))?;
            if sink.password.is_some() != sink.username.is_some() {
                return Err(format!(
                    "{key}.password: username and password go together (Basic authentication)"
                ));
            }
            if sink.api_key.is_some() && sink.username.is_some() {
                return Err(format!(
                    "{key}.api_key: choose api_key or username/password, not both"
                ));
            }
            if let Some(ev) = &sink.events_index {
                check_es_index(ev).map_err(|m| format!("{key}.events_index: {ev:?} {m}"))?;
            }
            if sink.pipeline.as_deref().is_some_and(str::is_empty) {
                return Err(format!("{key}.pipeline: must not be empty"));
            }
        }
        SinkType::SekoiaAssets => {
            required("connector_uuid", sink.connector_uuid.is_some())?;
            required("api_key", sink.api_key.is_some())?;
            let uuid = sink.connector_uuid.as_deref().unwrap_or_default();
            let ok = uuid.len() == 36
                && uuid.chars().enumerate().all(|(i, c)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                });
            if !ok {
                return Err(format!(
                    "{key}.connector_uuid: {uuid:?} is not a UUID (the asset connector's id in Sekoia)"
                ));
            }
            if sink.events.contains(&EventStream::Changes) {
                return Err(format!(
                    "{key}.events: an asset connector takes inventory records only, not change events"
                ));
            }
        }
        SinkType::Oomnitza => {
            required("token", sink.token.is_some())?;
            required("connector_name", sink.connector_name.is_some())?;
            let Some(fields) = &sink.fields else {
                return Err(format!(
                    "{key}.fields: required for an oomnitza sink ({:?}): Oomnitza takes flat records of your own fields (see the README's Field mapping)",
                    sink.name
                ));
            };
            let sync = sink.sync_fields();
            if sync.is_empty() {
                return Err(format!("{key}.sync_field: name at least one mapped field"));
            }
            if let Some(missing) = sync.iter().find(|f| !fields.contains_key(*f)) {
                return Err(format!(
                    "{key}.sync_field: {missing:?} is not one of the mapped [sinks.fields] (Oomnitza matches records on it)"
                ));
            }
            if sink.events.contains(&EventStream::Changes) {
                return Err(format!(
                    "{key}.events: Oomnitza takes inventory records only, not change events"
                ));
            }
        }
        SinkType::SplunkHec => {
            required("token", sink.token.is_some())?;
            if !(1..=3600).contains(&sink.ack_timeout_secs) {
                return Err(format!(
                    "{key}.ack_timeout_secs: {} is out of range (1 to 3600)",
                    sink.ack_timeout_secs
                ));
            }
            for (name, value) in [
                ("index", &sink.index),
                ("source", &sink.source),
                ("sourcetype", &sink.sourcetype),
                ("host", &sink.host),
            ] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(format!("{key}.{name}: must not be empty"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Elasticsearch/OpenSearch index names: lowercase, none of `\ / * ? " < > | , #` or spaces, not
/// starting with `-`, `_` or `+`, not `.` or `..`, at most 255 bytes.
fn check_es_index(index: &str) -> Result<(), &'static str> {
    if index.is_empty() || index.len() > 255 || index == "." || index == ".." {
        return Err("is not an index name (1 to 255 bytes)");
    }
    if index.starts_with(['-', '_', '+']) {
        return Err("must not start with -, _ or +");
    }
    if index
        .chars()
        .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c))
    {
        return Err("must be lowercase without spaces or any of \\ / * ? \" < > | , # :");
    }
    Ok(())
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
        validate_kind(&key, sink)?;
        if let Some(fields) = &sink.fields {
            if fields.is_empty() {
                return Err(format!(
                    "{key}.fields: empty; remove it to send the OCSF record, or map at least one field"
                ));
            }
            crate::mapping::Mapping::new(fields).map_err(|(field, msg)| {
                format!("{key}.fields.{field}: {msg} (sink {:?})", sink.name)
            })?;
        }
        if sink.on_delete == OnDelete::Delete && sink.kind != SinkType::Elasticsearch {
            return Err(format!(
                "{key}.on_delete: \"delete\" needs a destination with a delete operation (elasticsearch); a {} sink has none",
                sink.kind.as_str()
            ));
        }
        if sink.events.is_empty() {
            return Err(format!(
                "{key}.events: must name at least one of \"inventory\", \"changes\""
            ));
        }
        let mut streams = sink.events.clone();
        streams.sort();
        streams.dedup();
        if streams.len() != sink.events.len() {
            return Err(format!("{key}.events: lists a stream twice"));
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
        events: default_events(),
        events_index: None,
        on_delete: OnDelete::Keep,
        fields: None,
        connector_uuid: None,
        connector_name: None,
        sync_field: None,
        data_type: None,
        format: SinkFormat::Ndjson,
        batch_size: default_batch_size(),
        headers: BTreeMap::new(),
        timeout_secs: default_timeout_secs(),
        max_retries: default_max_retries(),
        compression: Compression::None,
        index: None,
        username: None,
        password: None,
        api_key: None,
        pipeline: None,
        token: None,
        source: None,
        sourcetype: None,
        host: None,
        ack: false,
        ack_timeout_secs: default_ack_timeout_secs(),
    }
}
