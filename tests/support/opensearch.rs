//! A real OpenSearch-compatible server for the sink tests: osmem-server (PyPI `osmem-server`,
//! installed into ./.venv by scripts/bootstrap.sh), an in-memory Go server speaking the OpenSearch
//! 3.x REST API with real per-item `_bulk` semantics (201 created / 200 updated, 409 on `create`
//! of an existing id, 404 on `update` of a missing one, `errors: true`, 400 for a body without the
//! trailing newline, 413 over 100 MiB, `Content-Encoding: gzip` bodies).
//!
//! The wheel ships the binary inside the package (`osmem_server/bin/osmem-server`), not in
//! `.venv/bin`. It listens on `--addr` (127.0.0.1 only here; port 0 lets it pick a free port, so
//! there is no race for the port), prints one JSON line `{"url":…}` on stdout once it listens,
//! and exits when its stdin closes or the `--parent-pid` process disappears: a test process that
//! dies leaves no server behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

pub struct OpenSearch {
    /// `http://127.0.0.1:PORT`, the same across [`OpenSearch::stop`] and
    /// [`OpenSearch::start_again`].
    pub url: String,
    port: u16,
    proc: Option<Proc>,
    /// The seed written by `stop()`: what the server held, loaded again by `start_again()`.
    saved: Option<tempfile::TempDir>,
    client: reqwest::Client,
}

struct Proc {
    child: Child,
    /// Held open: osmem-server exits when its stdin reaches end of file.
    _stdin: ChildStdin,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The osmem-server binary: `OSMEM_SERVER_BIN` when set (as the upstream helpers honour it), else
/// the one bundled in the wheel under `.venv/lib/python3.*/site-packages`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("OSMEM_SERVER_BIN") {
        return p.into();
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/osmem_server/bin/osmem-server"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "osmem-server is not installed under {}: run scripts/bootstrap.sh (scripts/test.sh does it for you)",
            lib.display()
        )
    })
}

fn spawn(addr: &str, seed: Option<&Path>) -> Result<(Proc, String), String> {
    let mut cmd = Command::new(binary());
    cmd.args(["--addr", addr, "--no-ja", "--parent-pid"])
        .arg(std::process::id().to_string());
    if let Some(seed) = seed {
        cmd.arg("--seed").arg(seed);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("osmem-server starts");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    // stderr carries warnings and the reason for an exit: kept for the panic message.
    let errors = Arc::new(Mutex::new(String::new()));
    let sink = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut g = sink.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    // The ready line is the only thing written to stdout; the thread drains it to the end anyway.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["url"].as_str().map(str::to_string))
            {
                let _ = tx.send(url);
            }
        }
    });
    let proc = Proc {
        child,
        _stdin: stdin,
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => Ok((proc, url)),
        Err(e) => {
            drop(proc);
            // Let the stderr thread take the last words.
            std::thread::sleep(Duration::from_millis(50));
            Err(format!(
                "osmem-server on {addr} did not start ({e}): {}",
                errors.lock().unwrap()
            ))
        }
    }
}

impl OpenSearch {
    /// Starts an empty server on a free loopback port and waits until it listens.
    pub fn start() -> OpenSearch {
        let (proc, url) = spawn("127.0.0.1:0", None).unwrap_or_else(|e| panic!("{e}"));
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("osmem-server reported {url}"));
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        OpenSearch {
            url,
            port,
            proc: Some(proc),
            saved: None,
            client: reqwest::Client::new(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// An outage: saves what the server holds (index templates, each index's mappings and
    /// aliases, every document by id) and kills the process; until [`OpenSearch::start_again`]
    /// the port refuses connections. A second `stop()` does nothing.
    pub async fn stop(&mut self) {
        if self.proc.is_none() {
            return;
        }
        let dir = self.save().await;
        self.proc = None;
        self.saved = Some(dir);
    }

    /// Starts the server again on the same port with what `stop()` saved, as a restarted cluster
    /// would come back with its data. Documents keep their ids and sources; `_version` and
    /// `_seq_no` start again at 1 and 0. Does nothing while the server runs.
    pub fn start_again(&mut self) {
        if self.proc.is_some() {
            return;
        }
        let addr = format!("127.0.0.1:{}", self.port);
        let seed = self.saved.take();
        let (proc, url) = spawn(&addr, seed.as_ref().map(|d| d.path()))
            .unwrap_or_else(|e| panic!("restarting: {e}"));
        assert_eq!(url, self.url);
        self.proc = Some(proc);
    }

    /// Writes the server's state as an osmem seed directory (`<name>.template.json`,
    /// `<index>.index.json`, `<index>.ndjson`, loaded in that order by `--seed`).
    async fn save(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, templates) = self.request(Method::GET, "/_index_template", None).await;
        for t in templates["index_templates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = t["name"].as_str().unwrap_or_default();
            std::fs::write(
                dir.path().join(format!("{name}.template.json")),
                t["index_template"].to_string(),
            )
            .expect("write template");
        }
        let (_, mappings) = self.request(Method::GET, "/_mapping", None).await;
        let (_, aliases) = self.request(Method::GET, "/_alias", None).await;
        for (index, m) in mappings.as_object().into_iter().flatten() {
            let mut spec = json!({"mappings": m["mappings"]});
            if aliases[index]["aliases"]
                .as_object()
                .is_some_and(|a| !a.is_empty())
            {
                spec["aliases"] = aliases[index]["aliases"].clone();
            }
            std::fs::write(
                dir.path().join(format!("{index}.index.json")),
                spec.to_string(),
            )
            .expect("write index");
            let docs = self.docs(index).await;
            // osmem refuses an empty bulk file: an index without documents has none.
            if !docs.is_empty() {
                let mut nd = String::new();
                for (id, source) in docs {
                    nd.push_str(&json!({"index": {"_id": id}}).to_string());
                    nd.push('\n');
                    nd.push_str(&source.to_string());
                    nd.push('\n');
                }
                std::fs::write(dir.path().join(format!("{index}.ndjson")), nd)
                    .expect("write documents");
            }
        }
        dir
    }

    fn url_of(&self, segments: &[&str]) -> reqwest::Url {
        let mut u = reqwest::Url::parse(&self.url).expect("url");
        // `push` percent-encodes each segment: ids may hold '/' (ARNs do).
        u.path_segments_mut().expect("base url").extend(segments);
        u
    }

    /// Any request (path with its query, e.g. `/inv/_settings`); the status and the JSON answer
    /// (`Value::Null` when the answer is not JSON).
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        Self::json(req).await
    }

    async fn json(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("osmem-server answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("osmem-server body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `PUT /{index}` with `body` (settings, mappings, aliases); panics unless acknowledged.
    pub async fn create_index(&self, index: &str, body: Value) {
        let req = self
            .client
            .put(self.url_of(&[index]))
            .header("content-type", "application/json")
            .body(body.to_string());
        let (status, v) = Self::json(req).await;
        assert_eq!(status, 200, "create index {index}: {v}");
    }

    /// Sets or clears `index.blocks.write`: every write item then fails with 403
    /// `cluster_block_exception`, as on OpenSearch.
    pub async fn set_write_block(&self, index: &str, blocked: bool) {
        let req = self
            .client
            .put(self.url_of(&[index, "_settings"]))
            .header("content-type", "application/json")
            .body(json!({"index": {"blocks": {"write": blocked}}}).to_string());
        let (status, v) = Self::json(req).await;
        assert_eq!(status, 200, "write block on {index}: {v}");
    }

    /// `POST /_refresh` (osmem's reads are real-time already; kept for fidelity).
    pub async fn refresh(&self) {
        let (status, v) = self.request(Method::POST, "/_refresh", None).await;
        assert_eq!(status, 200, "refresh: {v}");
    }

    /// The names of the indices that exist.
    pub async fn indices(&self) -> Vec<String> {
        let (_, v) = self.request(Method::GET, "/_mapping", None).await;
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The `_source` of one document; `None` when it or its index does not exist.
    pub async fn doc(&self, index: &str, id: &str) -> Option<Value> {
        let (status, v) = Self::json(self.client.get(self.url_of(&[index, "_doc", id]))).await;
        match status {
            200 => Some(v["_source"].clone()),
            404 => None,
            s => panic!("GET {index}/_doc/{id}: {s} {v}"),
        }
    }

    /// The number of documents in `index` after a refresh; 0 when the index does not exist.
    pub async fn count(&self, index: &str) -> u64 {
        self.refresh().await;
        let (status, v) = Self::json(self.client.get(self.url_of(&[index, "_count"]))).await;
        match status {
            200 => v["count"].as_u64().expect("count"),
            404 => 0,
            s => panic!("{index}/_count: {s} {v}"),
        }
    }

    /// The ids of the documents in `index`, sorted; empty when the index does not exist.
    pub async fn ids(&self, index: &str) -> Vec<String> {
        self.scan(index, false).await.into_keys().collect()
    }

    /// Every document of `index` by id (its `_source`); empty when the index does not exist.
    pub async fn docs(&self, index: &str) -> BTreeMap<String, Value> {
        self.scan(index, true).await
    }

    /// Pages through the index by `_id` with `search_after` (no 10,000-hit window limit).
    async fn scan(&self, index: &str, source: bool) -> BTreeMap<String, Value> {
        self.refresh().await;
        let mut out = BTreeMap::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({"size": 1000, "_source": source, "sort": [{"_id": "asc"}], "query": {"match_all": {}}});
            if let Some(a) = &after {
                body["search_after"] = a.clone();
            }
            let req = self
                .client
                .post(self.url_of(&[index, "_search"]))
                .header("content-type", "application/json")
                .body(body.to_string());
            let (status, v) = Self::json(req).await;
            match status {
                200 => {}
                404 => return out,
                s => panic!("{index}/_search: {s} {v}"),
            }
            let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                return out;
            }
            for h in &hits {
                let id = h["_id"].as_str().expect("_id").to_string();
                out.insert(id, h.get("_source").cloned().unwrap_or(Value::Null));
            }
            after = hits.last().map(|h| h["sort"].clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// POSTs an NDJSON body to `/_bulk`; the status and the answer.
    async fn bulk(url: &str, body: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{url}/_bulk"))
            .header("content-type", "application/x-ndjson")
            .body(body.to_string())
            .send()
            .await
            .expect("bulk");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn statuses(v: &Value) -> Vec<u64> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i.as_object().unwrap().values().next().unwrap()["status"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn osmem_fake_bulk_has_real_per_item_semantics() {
        let os = OpenSearch::start();
        let (s, root) = os.request(Method::GET, "/", None).await;
        assert_eq!(s, 200);
        assert_eq!(root["version"]["distribution"], "opensearch", "{root}");

        let three = "{\"index\":{\"_index\":\"inv\",\"_id\":\"a\"}}\n{\"n\":1}\n\
                     {\"index\":{\"_index\":\"inv\",\"_id\":\"arn:aws:iam::1:user/p/b\"}}\n{\"n\":2}\n\
                     {\"index\":{\"_index\":\"inv\",\"_id\":\"c\"}}\n{\"n\":3}\n";
        let (s, v) = bulk(&os.url, three).await;
        assert_eq!((s, v["errors"].as_bool()), (200, Some(false)), "{v}");
        assert_eq!(statuses(&v), [201, 201, 201]);

        let again = three.replace("\"index\"", "\"create\"");
        let (s, v) = bulk(&os.url, &again).await;
        assert_eq!((s, v["errors"].as_bool()), (200, Some(true)), "{v}");
        assert_eq!(statuses(&v), [409, 409, 409]);
        assert_eq!(
            v["items"][0]["create"]["error"]["type"],
            "version_conflict_engine_exception"
        );

        let mixed = "{\"update\":{\"_index\":\"inv\",\"_id\":\"zz\"}}\n{\"doc\":{\"n\":9}}\n\
                     {\"delete\":{\"_index\":\"inv\",\"_id\":\"c\"}}\n\
                     {\"delete\":{\"_index\":\"inv\",\"_id\":\"c\"}}\n\
                     {\"index\":{\"_index\":\"inv\",\"_id\":\"a\"}}\n{\"n\":10}\n";
        let (_, v) = bulk(&os.url, mixed).await;
        assert_eq!(statuses(&v), [404, 200, 404, 200], "{v}");

        let (s, v) = bulk(
            &os.url,
            "{\"index\":{\"_index\":\"inv\",\"_id\":\"x\"}}\n{}",
        )
        .await;
        assert_eq!(s, 400, "no trailing newline: {v}");

        assert_eq!(os.count("inv").await, 2);
        assert_eq!(os.ids("inv").await, ["a", "arn:aws:iam::1:user/p/b"]);
        assert_eq!(os.doc("inv", "a").await, Some(json!({"n": 10})));
        assert_eq!(
            os.doc("inv", "arn:aws:iam::1:user/p/b").await,
            Some(json!({"n": 2}))
        );
        assert_eq!(os.doc("inv", "c").await, None);
        assert_eq!(os.doc("missing", "a").await, None);
        assert_eq!(os.count("missing").await, 0);
        assert!(os.ids("missing").await.is_empty());
    }

    #[tokio::test]
    async fn osmem_fake_write_block_fails_items_with_403() {
        let os = OpenSearch::start();
        os.create_index(
            "inv",
            json!({"mappings": {"dynamic": "strict", "properties": {"n": {"type": "long"}}}}),
        )
        .await;
        let (_, v) = bulk(
            &os.url,
            "{\"index\":{\"_index\":\"inv\",\"_id\":\"a\"}}\n{\"n\":1,\"other\":2}\n",
        )
        .await;
        assert_eq!(statuses(&v), [400], "strict mapping: {v}");
        os.set_write_block("inv", true).await;
        let (_, v) = bulk(
            &os.url,
            "{\"index\":{\"_index\":\"inv\",\"_id\":\"a\"}}\n{\"n\":1}\n",
        )
        .await;
        assert_eq!(statuses(&v), [403], "{v}");
        assert_eq!(
            v["items"][0]["index"]["error"]["type"],
            "cluster_block_exception"
        );
        os.set_write_block("inv", false).await;
        let (_, v) = bulk(
            &os.url,
            "{\"index\":{\"_index\":\"inv\",\"_id\":\"a\"}}\n{\"n\":1}\n",
        )
        .await;
        assert_eq!(statuses(&v), [201], "{v}");
    }

    #[tokio::test]
    async fn osmem_fake_stop_and_start_again_keeps_port_and_data() {
        let mut os = OpenSearch::start();
        os.create_index(
            "empty",
            json!({"mappings": {"properties": {"k": {"type": "keyword"}}}}),
        )
        .await;
        let mut body = String::new();
        for i in 0..1500 {
            body.push_str(&format!(
                "{{\"index\":{{\"_index\":\"inv\",\"_id\":\"u{i:04}\"}}}}\n{{\"n\":{i}}}\n"
            ));
        }
        let (s, v) = bulk(&os.url, &body).await;
        assert_eq!((s, v["errors"].as_bool()), (200, Some(false)));
        let url = os.url.clone();

        os.stop().await;
        assert!(!os.is_running());
        let refused = reqwest::Client::new().get(&url).send().await;
        assert!(refused.is_err(), "the port is closed during the outage");

        os.start_again();
        assert_eq!(os.url, url);
        assert_eq!(os.count("inv").await, 1500);
        assert_eq!(os.ids("inv").await.len(), 1500);
        assert_eq!(os.doc("inv", "u1499").await, Some(json!({"n": 1499})));
        let mut indices = os.indices().await;
        indices.sort();
        assert_eq!(indices, ["empty", "inv"]);
        let (_, m) = os.request(Method::GET, "/empty/_mapping", None).await;
        assert_eq!(m["empty"]["mappings"]["properties"]["k"]["type"], "keyword");
    }
}
