//! Delivery benchmark: 100,000 records from the store to a local HTTP receiver, through the real
//! sink path (pending query, batching, POST, acknowledgement). Baseline: the same bodies POSTed by a
//! bare reqwest loop (what HTTP on this machine allows without the store around it).
//! Then the SIEM kinds, BENCH_SIEM_USERS records (default 20,000) each: Elasticsearch `_bulk` into
//! osmem-server (an OpenSearch-compatible server) and Splunk HEC into the test fake, with and without
//! indexer acknowledgement; baseline: the same bodies (same encoder) POSTed by a bare loop to the
//! same receiver. Prints records/s side by side and the bytes per record on the wire.
//! `cargo bench --bench deliver` (BENCH_USERS to change the count; needs ./.venv for osmem-server).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use iam_inventory::clock::now_ms;
use iam_inventory::config::{Config, SinkConfig};
use iam_inventory::deliver::deliver_all;
use iam_inventory::pipeline::{peak_rss_bytes, write_account};
use iam_inventory::store::{OpenMode, Store};

fn sink(name: &str, url: &str, extra: &str) -> SinkConfig {
    let text = format!("[[sinks]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n");
    Config::from_toml_str(&text, "bench", &[])
        .expect("config")
        .sinks
        .remove(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("bench.db"), OpenMode::ReadWrite).unwrap());
    let run_id = store.begin_run(now_ms()).unwrap();
    write_account(
        &store,
        run_id,
        common::synthetic_account("123456789012", n, 0),
        false,
    )
    .unwrap();
    let (url, count) = common::receiver().await;
    let client = iam_inventory::deliver::client();
    let bare = client.clone().expect("an HTTP client");
    println!(
        "delivery benchmark: {n} records to a local receiver ({})",
        common::machine()
    );
    println!("{:<40} {:>10} {:>12}", "path", "seconds", "records/s");

    // Baseline: the bodies, already encoded, POSTed one after another.
    let mut body = Vec::new();
    store
        .export(&mut |r| {
            body.extend_from_slice(r.as_bytes());
            body.push(b'\n');
            Ok(())
        })
        .unwrap();
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let bodies: Vec<Vec<u8>> = lines
        .chunks(100)
        .map(|c| c.join(&b'\n'))
        .map(|mut b| {
            b.push(b'\n');
            b
        })
        .collect();
    let started = Instant::now();
    for b in bodies {
        bare.post(&url)
            .body(b)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<40} {:>10.2} {:>12.0}",
        "baseline: bare POSTs, batch 100",
        secs,
        n as f64 / secs
    );

    for (name, extra) in [
        ("ndjson-100", "batch_size = 100"),
        ("ndjson-1000", "batch_size = 1000"),
        (
            "ndjson-1000-gzip",
            "batch_size = 1000\ncompression = \"gzip\"",
        ),
        ("json-500", "batch_size = 500\nformat = \"json\""),
    ] {
        count.store(0, Ordering::Relaxed);
        let sinks = [sink(name, &url, extra)];
        let started = Instant::now();
        let report = deliver_all(&store, &sinks, &client, now_ms, run_id, None).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report[0].acknowledged, n as u64, "{report:?}");
        assert_eq!(report[0].pending, 0);
        println!(
            "{:<40} {:>10.2} {:>12.0}",
            format!("iam-inventory sink: {name}"),
            secs,
            n as f64 / secs
        );
    }
    siem(
        std::env::var("BENCH_SIEM_USERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000),
    )
    .await;
    println!("peak RSS: {}", common::mib(peak_rss_bytes()));
}

fn kind_sink(text: &str) -> SinkConfig {
    Config::from_toml_str(text, "bench", &[])
        .expect("config")
        .sinks
        .remove(0)
}

/// Bare POSTs of pre-built bodies: records/s.
async fn bare(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    bodies: Vec<(Vec<u8>, usize)>,
) -> f64 {
    let total: usize = bodies.iter().map(|(_, n)| n).sum();
    let started = Instant::now();
    for (body, _) in bodies {
        let mut req = client.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn siem(m: usize) {
    use iam_inventory::config::SinkMode;
    use iam_inventory::deliver::batch::batches;
    use iam_inventory::deliver::{elasticsearch, splunk_hec};

    println!();
    println!("SIEM kinds: {m} records each, batch 1,000");
    println!(
        "{:<44} {:>12} {:>12} {:>8} {:>12}",
        "kind", "records/s", "bare POSTs", "ratio", "bytes/record"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("siem.db"), OpenMode::ReadWrite).unwrap());
    let run_id = store.begin_run(now_ms()).unwrap();
    write_account(
        &store,
        run_id,
        common::synthetic_account("123456789012", m, 0),
        false,
    )
    .unwrap();
    let pending = store
        .pending("bare", SinkMode::CreateUpdate, "", "", m)
        .unwrap();
    println!(
        "peak RSS before the SIEM kinds: {}",
        common::mib(peak_rss_bytes())
    );
    let client = iam_inventory::deliver::client().unwrap();
    let os = support::opensearch::OpenSearch::start();
    let hec = support::hec::Hec::start("bench-token", false).await;
    let hec_ack = support::hec::Hec::start("bench-token", true).await;
    hec_ack.set_ack_delay_polls(0);

    let cases: [(&str, String, String); 3] = [
        (
            "elasticsearch _bulk (osmem-server)",
            format!(
                "[[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{}\"\nindex = \"bench\"\nbatch_size = 1000\n",
                os.url
            ),
            format!("{}/_bulk", os.url),
        ),
        (
            "splunk_hec (fake)",
            format!(
                "[[sinks]]\nname = \"hec\"\ntype = \"splunk_hec\"\nurl = \"{}\"\ntoken = \"bench-token\"\nbatch_size = 1000\n",
                hec.url
            ),
            format!("{}/services/collector/event", hec.url),
        ),
        (
            "splunk_hec with ack (fake, acked at 1st poll)",
            format!(
                "[[sinks]]\nname = \"hec-ack\"\ntype = \"splunk_hec\"\nurl = \"{}\"\ntoken = \"bench-token\"\nbatch_size = 1000\nack = true\n",
                hec_ack.url
            ),
            format!("{}/services/collector/event", hec_ack.url),
        ),
    ];
    for (label, text, bare_url) in cases {
        let sink = kind_sink(&text);
        let bodies: Vec<(Vec<u8>, usize)> = batches(&pending, 1000)
            .iter()
            .map(|b| {
                let body = if label.starts_with("elastic") {
                    elasticsearch::encode(b, "bench-bare", SinkMode::CreateUpdate)
                } else {
                    splunk_hec::encode(b, &sink)
                };
                (body, b.records.len())
            })
            .collect();
        let bytes_per_record = bodies.iter().map(|(b, _)| b.len()).sum::<usize>() as f64 / m as f64;
        let channel = splunk_hec::channel_for("bare");
        let headers: Vec<(&str, &str)> = if label.starts_with("elastic") {
            vec![("content-type", "application/x-ndjson")]
        } else {
            vec![
                ("authorization", "Splunk bench-token"),
                ("x-splunk-request-channel", channel.as_str()),
            ]
        };
        // The fakes keep what they receive; start each measurement from an empty one.
        hec.clear();
        hec_ack.clear();
        let bare_rate = bare(&client, &bare_url, &headers, bodies).await;
        hec.clear();
        hec_ack.clear();
        let started = Instant::now();
        let report = deliver_all(&store, &[sink], &Ok(client.clone()), now_ms, run_id, None).await;
        let rate = m as f64 / started.elapsed().as_secs_f64();
        assert_eq!(report[0].acknowledged, m as u64, "{report:?}");
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>7.0}% {:>12.0}   (peak RSS so far {})",
            label,
            rate,
            bare_rate,
            100.0 * rate / bare_rate,
            bytes_per_record,
            common::mib(peak_rss_bytes())
        );
    }
}
