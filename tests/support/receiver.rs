//! A real HTTP sink receiver on 127.0.0.1: records every request and answers from a script.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// Abort the whole server while this request is in flight (a sink that dies mid-delivery).
    Die,
    /// A redirect (status, Location).
    Redirect(u16, String),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub records: Vec<Value>,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<u16>,
    received: Vec<Received>,
    /// Requests carrying a record whose `user.name` is listed are refused whole with 422, as a
    /// receiver whose schema check fails on one record does.
    poison: Vec<String>,
    /// Requests with more records than this are refused whole with 413.
    max_records: Option<usize>,
}

pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Receiver {
    /// Answers 200 to everything unless scripted otherwise.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let task = Arc::new(Mutex::new(None));
        let ctx = Ctx {
            inner: inner.clone(),
            task: task.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *task.lock().unwrap() = Some(handle);
        Receiver {
            url: format!("http://{addr}/ingest"),
            inner,
            task,
        }
    }

    /// Replies for the next requests, in order; after them, `default` (200 unless set).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// Refuse (422) every request that carries a record of one of these users.
    pub fn poison(&self, user_names: &[&str]) {
        self.inner.lock().unwrap().poison = user_names.iter().map(|s| s.to_string()).collect();
    }

    /// Refuse (413) every request with more than `n` records.
    pub fn max_records(&self, n: Option<usize>) {
        self.inner.lock().unwrap().max_records = n;
    }

    pub fn set_default(&self, status: u16) {
        self.inner.lock().unwrap().default = Some(status);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// ARNs (`user.uid`) of the records in requests this receiver answered with 2xx.
    pub fn acknowledged_uids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| {
                r.records
                    .iter()
                    .map(|rec| rec["user"]["uid"].as_str().unwrap_or("").to_string())
            })
            .collect();
        v.sort();
        v
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().received.clear();
    }

    pub fn is_dead(&self) -> bool {
        self.task
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|t| t.is_finished())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

fn decode(headers: &HeaderMap, body: &[u8]) -> Vec<Value> {
    let raw = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    } else {
        body.to_vec()
    };
    let text = String::from_utf8(raw).expect("utf-8 body");
    if headers
        .get("content-type")
        .is_some_and(|v| v == "application/json")
    {
        serde_json::from_str::<Vec<Value>>(&text).expect("JSON array body")
    } else {
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect()
    }
}

async fn handle(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let records = decode(&headers, &body);
    let reply = {
        let mut g = ctx.inner.lock().unwrap();
        let poisoned = records
            .iter()
            .any(|r| g.poison.iter().any(|p| r["user"]["name"] == p.as_str()));
        let too_many = g.max_records.is_some_and(|n| records.len() > n);
        if too_many {
            Reply::Status(413)
        } else if poisoned {
            Reply::Status(422)
        } else {
            g.script
                .pop_front()
                .unwrap_or(Reply::Status(g.default.unwrap_or(200)))
        }
    };
    let status = match &reply {
        Reply::Status(s) | Reply::RetryAfter(s, _) | Reply::Redirect(s, _) => *s,
        Reply::Die => 0,
    };
    ctx.inner.lock().unwrap().received.push(Received {
        headers,
        records,
        status,
    });
    match reply {
        Reply::Status(s) => Response::builder()
            .status(StatusCode::from_u16(s).unwrap())
            .body(Body::from(format!("status {s}")))
            .unwrap(),
        Reply::RetryAfter(s, secs) => Response::builder()
            .status(StatusCode::from_u16(s).unwrap())
            .header("retry-after", secs.to_string())
            .body(Body::from("slow down"))
            .unwrap(),
        Reply::Redirect(s, location) => Response::builder()
            .status(StatusCode::from_u16(s).unwrap())
            .header("location", location)
            .body(Body::empty())
            .unwrap(),
        Reply::Die => {
            if let Some(t) = ctx.task.lock().unwrap().take() {
                t.abort();
            }
            // The listener is gone; panicking drops this connection without a response, as a
            // process killed mid-request would.
            panic!("receiver killed mid-delivery (expected in this test)");
        }
    }
}
