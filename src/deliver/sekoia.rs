//! `type = "sekoia_assets"`: Sekoia.io asset connector. `POST
//! {url}/api/v2/asset-management/asset-connector/{connector_uuid}` with `Authorization: Bearer
//! <api_key>` and `{"version": 1, "items": [records]}`; success is HTTP 200 exactly (any other
//! answer delivers nothing). Records are the OCSF 5003 records (what Sekoia's own AWS IAM connector
//! sends), or the mapped fields when the sink has `[sinks.fields]`.

use reqwest::header::CONTENT_TYPE;

use super::batch::Batch;
use super::transport::{encode_body, exchange, request};
use super::{Outcome, SinkReport};
use crate::config::{Compression, SinkConfig};

/// Where Sekoia's API lives unless `url` says otherwise.
pub const DEFAULT_URL: &str = "https://api.sekoia.io";

pub struct Sekoia<'a> {
    pub client: &'a reqwest::Client,
    pub sink: &'a SinkConfig,
}

/// `{"version": 1, "items": [...]}` with the records as they are (already JSON).
pub fn encode(batch: &Batch<'_>) -> Vec<u8> {
    let items = batch.encode(crate::config::SinkFormat::Json);
    let mut body = Vec::with_capacity(items.len() + 32);
    body.extend_from_slice(b"{\"version\":1,\"items\":");
    body.extend_from_slice(&items);
    body.push(b'}');
    body
}

/// `{url}/api/v2/asset-management/asset-connector/{connector_uuid}`.
pub fn endpoint(sink: &SinkConfig) -> String {
    let base = sink
        .url
        .as_ref()
        .map(|u| u.as_str())
        .unwrap_or(DEFAULT_URL)
        .trim_end_matches('/');
    let uuid = sink.connector_uuid.as_deref().unwrap_or_default();
    format!("{base}/api/v2/asset-management/asset-connector/{uuid}")
}

impl Sekoia<'_> {
    pub fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let key = self
            .sink
            .api_key
            .as_ref()
            .map(|k| k.expose())
            .unwrap_or_default();
        let auth = Some(("Authorization", format!("Bearer {key}")));
        request(self.client, self.sink, method, endpoint(self.sink), auth)
    }
}

impl super::Kind for Sekoia<'_> {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        let sink = self.sink;
        let body = match encode_body(sink, encode(batch)) {
            Ok(b) => b,
            Err(m) => return Outcome::Down(m),
        };
        let build = || {
            self.request(reqwest::Method::POST)
                .header(CONTENT_TYPE, "application/json")
        };
        let gzipped = sink.compression == Compression::Gzip;
        match exchange(sink, build, body, gzipped, report).await {
            Err(m) => Outcome::Down(m),
            Ok(r) if r.status == 200 => Outcome::all_acked(batch),
            Ok(r) if r.is_success() => Outcome::Failed(format!(
                "{} (Sekoia answers 200 when it takes the items; not acknowledged)",
                r.describe(sink)
            )),
            Ok(r) => match r.status {
                401 | 403 => Outcome::Down(format!(
                    "{} (Sekoia refused the api_key of sink {:?})",
                    r.describe(sink),
                    sink.name
                )),
                404 => Outcome::Down(format!(
                    "{} (no asset connector {:?}: check connector_uuid)",
                    r.describe(sink),
                    sink.connector_uuid.as_deref().unwrap_or_default()
                )),
                status => Outcome::from_batch_status(status, r.describe(sink)),
            },
        }
    }
}
