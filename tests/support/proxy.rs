//! A small HTTP proxy in front of moto for what moto will not do by itself: refuse AssumeRole for a
//! role (STS's 403 AccessDenied), answer a share of calls with IAM's `Throttling` error, or slow
//! calls down (to catch a sync in the middle). It counts the calls it saw, by Action.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;

#[derive(Debug, Default, Clone)]
pub struct Rules {
    /// AssumeRole for these role ARNs answers 403 AccessDenied.
    pub deny_assume_role: Vec<String>,
    /// Answer every n-th IAM call (n ≥ 2) with 400 Throttling; AssumeRole and GetCallerIdentity pass.
    pub throttle_every: Option<u64>,
    /// Added before forwarding each IAM call.
    pub delay: Duration,
    /// Like IAM itself: a token bucket of this many IAM calls per second (burst of the same size);
    /// calls beyond it are answered with 400 Throttling.
    pub rate_limit: Option<f64>,
}

#[derive(Default)]
struct Inner {
    rules: Rules,
    seen: u64,
    bucket: Option<(f64, std::time::Instant)>,
    calls: BTreeMap<String, u64>,
    throttled: BTreeMap<String, u64>,
}

pub struct Proxy {
    pub endpoint: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    upstream: String,
    client: reqwest::Client,
    inner: Arc<Mutex<Inner>>,
}

impl Proxy {
    pub async fn start(upstream: &str, rules: Rules) -> Proxy {
        let inner = Arc::new(Mutex::new(Inner {
            rules,
            ..Default::default()
        }));
        let ctx = Ctx {
            upstream: upstream.to_string(),
            client: reqwest::Client::new(),
            inner: inner.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            endpoint: format!("http://{addr}"),
            inner,
            task,
        }
    }

    pub fn set_rules(&self, rules: Rules) {
        self.inner.lock().unwrap().rules = rules;
    }

    /// Calls that reached the proxy, by Action (throttled ones included).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn throttled(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap().throttled.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn form_value(body: &[u8], key: &str) -> Option<String> {
    url_decode_pairs(body)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn url_decode_pairs(body: &[u8]) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn error_xml(service: &str, code: &str, message: &str) -> String {
    let ns = if service == "sts" {
        "https://sts.amazonaws.com/doc/2011-06-15/"
    } else {
        "https://iam.amazonaws.com/doc/2010-05-08/"
    };
    format!(
        "<ErrorResponse xmlns=\"{ns}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy-0000</RequestId></ErrorResponse>"
    )
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = form_value(&body, "Action").unwrap_or_else(|| "unknown".into());
    let is_sts = matches!(action.as_str(), "AssumeRole" | "GetCallerIdentity");
    let (deny, throttle, delay) = {
        let mut g = ctx.inner.lock().unwrap();
        *g.calls.entry(action.clone()).or_default() += 1;
        let deny = action == "AssumeRole"
            && form_value(&body, "RoleArn")
                .is_some_and(|arn| g.rules.deny_assume_role.contains(&arn));
        let mut throttle = false;
        if !is_sts {
            g.seen += 1;
            if let Some(n) = g.rules.throttle_every {
                throttle = g.seen % n.max(2) == 0;
            }
            if let Some(rate) = g.rules.rate_limit {
                let now = std::time::Instant::now();
                let (tokens, last) = g.bucket.unwrap_or((rate, now));
                let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
                if tokens >= 1.0 {
                    g.bucket = Some((tokens - 1.0, now));
                } else {
                    g.bucket = Some((tokens, now));
                    throttle = true;
                }
            }
        }
        if throttle {
            *g.throttled.entry(action.clone()).or_default() += 1;
        }
        (deny, throttle, g.rules.delay)
    };
    if deny {
        let arn = form_value(&body, "RoleArn").unwrap_or_default();
        let msg = format!(
            "User: arn:aws:iam::123456789012:user/test is not authorized to perform: sts:AssumeRole on resource: {arn}"
        );
        return xml(
            StatusCode::FORBIDDEN,
            error_xml("sts", "AccessDenied", &msg),
        );
    }
    if throttle {
        return xml(
            StatusCode::BAD_REQUEST,
            error_xml("iam", "Throttling", "Rate exceeded"),
        );
    }
    if !is_sts && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let url = format!(
        "{}{}",
        ctx.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = ctx.client.request(method, url).body(body);
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let ct = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = Response::builder().status(status);
            if let Some(ct) = ct {
                out = out.header("content-type", ct);
            }
            out.body(Body::from(bytes)).unwrap()
        }
        Err(e) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(e.to_string()))
            .unwrap(),
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Body::from(body))
        .unwrap()
}
