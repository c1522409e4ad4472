//! Values that must never be shown: secrets, and sink URLs shown only redacted.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

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

pub(crate) fn check_http_url(raw: &str) -> Result<(), String> {
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
