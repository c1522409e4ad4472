//! Delivery benchmark: 100,000 records from the store to a local HTTP receiver, through the real
//! sink path (pending query, batching, POST, acknowledgement). Baseline: the same bodies POSTed by a
//! bare reqwest loop (what HTTP on this machine allows without the store around it).
//! `cargo bench --bench deliver` (BENCH_USERS to change the count).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use iam_inventory::clock::now_ms;
use iam_inventory::config::{Config, SinkConfig};
use iam_inventory::deliver::deliver_all;
use iam_inventory::pipeline::{peak_rss_bytes, write_account};
use iam_inventory::store::{OpenMode, Store};

async fn receiver() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let c = c.clone();
        async move {
            c.fetch_add(
                body.iter().filter(|b| **b == b'\n').count() as u64,
                Ordering::Relaxed,
            );
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/ingest"), count)
}

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
    let (url, count) = receiver().await;
    let client = iam_inventory::deliver::client();
    let bare = client.clone().expect("an HTTP client");
    println!(
        "delivery benchmark: {n} records to a local receiver ({})",
        common::machine()
    );
    println!("{:<40} {:>10} {:>12}", "path", "seconds", "records/s");

    // Baseline: the bodies, already encoded, POSTed one after another.
    let mut body = Vec::new();
    store.export(&mut body).unwrap();
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
        let report = deliver_all(&store, &sinks, &client, now_ms, None).await;
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
    println!("peak RSS: {}", common::mib(peak_rss_bytes()));
}
