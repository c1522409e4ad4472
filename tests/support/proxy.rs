//! A small HTTP proxy in front of moto for what moto will not do by itself: refuse AssumeRole for a
//! role (STS's 403 AccessDenied), answer a share of calls with IAM's `Throttling` error, slow
//! calls down (to catch a sync in the middle), or split list answers into pages (moto ignores
//! MaxItems and Marker and always answers in one page). It counts the calls it saw, by Action.

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
    /// JSON-protocol calls whose `X-Amz-Target` ends with this (e.g. `ListAccounts` of AWS
    /// Organizations) are answered with 400 `AccessDeniedException`.
    pub deny_json_target: Option<String>,
    /// Serve the paged IAM list calls ([`PAGED`]) at most this many items a page, with IAM's
    /// `IsTruncated`/`Marker`, the way IAM may (it can return fewer than MaxItems). See [`page`].
    pub page_size: Option<usize>,
    /// IAM calls answered with 403 AccessDenied: (Action, only for this UserName or any).
    pub deny_actions: Vec<(String, Option<String>)>,
    /// GenerateCredentialReport answers INPROGRESS forever (a report IAM never finishes).
    pub report_never_ready: bool,
    /// Edits of moto's credential report: (user, column, value). moto builds the CSV fresh at each
    /// request; this makes a row lag behind IAM the way a real report up to 4 hours old does.
    pub report_edits: Vec<(String, String, String)>,
    /// ListServiceSpecificCredentials (which moto 5.2.5 answers with a 500) answered with these
    /// credentials: (user, id, service, status), in IAM's response shape.
    pub service_credentials: Option<Vec<(String, String, String, String)>>,
    /// Per account (by the access key that signed the call: the caller's, or one AssumeRole
    /// handed out through this proxy): at most this many IAM calls per second, like IAM's own
    /// per-account limit; calls beyond it are answered with 400 Throttling.
    pub account_rate_limit: Vec<(String, f64)>,
}

#[derive(Default)]
struct Inner {
    rules: Rules,
    seen: u64,
    bucket: Option<(f64, std::time::Instant)>,
    calls: BTreeMap<String, u64>,
    /// Access key id → account, learnt from the AssumeRole answers that went through.
    keys: std::collections::HashMap<String, String>,
    /// IAM calls by account (keys the proxy never saw AssumeRole hand out count as `caller`).
    account_calls: BTreeMap<String, u64>,
    account_buckets: std::collections::HashMap<String, (f64, std::time::Instant)>,
    throttled: BTreeMap<String, u64>,
    pages: BTreeMap<String, u64>,
    followed: BTreeMap<String, u64>,
    /// Answers CloudTrail LookupEvents (see [`Proxy::attach_cloudtrail`]).
    cloudtrail: Option<super::cloudtrail::CloudTrail>,
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

    /// CloudTrail `LookupEvents` calls (X-Amz-Target ending in `.LookupEvents`, any case) go to
    /// this fake, never to moto (shared state: keep a clone to record events). Survives
    /// [`Proxy::set_rules`].
    pub fn attach_cloudtrail(&self, fake: &super::cloudtrail::CloudTrail) {
        self.inner.lock().unwrap().cloudtrail = Some(fake.clone());
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

    /// IAM calls by account (see [`Rules::account_rate_limit`]).
    pub fn calls_by_account(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap().account_calls.clone()
    }

    /// Pages served by the `page_size` rule, by Action (first pages included).
    pub fn pages(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap().pages.clone()
    }

    /// Pages asked for with a Marker this proxy handed out (i.e. the client followed a marker),
    /// by Action.
    pub fn followed(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap().followed.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The access key id of a SigV4 `Authorization` header (`… Credential=AKID/date/…`).
fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let rest = auth.split("Credential=").nth(1)?;
    rest.split('/').next().map(str::to_string)
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
    // CloudTrail LookupEvents (which moto does not serve): the fake, or UnknownOperation.
    if headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .is_some_and(|op| op.eq_ignore_ascii_case("LookupEvents"))
    {
        let fake = {
            let mut g = ctx.inner.lock().unwrap();
            *g.calls.entry("LookupEvents".into()).or_default() += 1;
            g.cloudtrail.clone()
        };
        return match fake {
            Some(fake) => fake.respond(&headers, &body),
            None => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header("content-type", "application/x-amz-json-1.1")
                .body(Body::from(
                    "{\"__type\":\"UnknownOperationException\",\"message\":\"proxy: no CloudTrail fake attached\"}",
                ))
                .unwrap(),
        };
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let action = form_value(&body, "Action")
        .or_else(|| {
            target
                .as_ref()
                .and_then(|t| t.rsplit('.').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let denied_target = {
        let g = ctx.inner.lock().unwrap();
        g.rules
            .deny_json_target
            .as_ref()
            .is_some_and(|t| target.as_deref().is_some_and(|x| x.ends_with(t.as_str())))
    };
    if denied_target {
        *ctx.inner
            .lock()
            .unwrap()
            .calls
            .entry(action.clone())
            .or_default() += 1;
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Body::from(format!(
                "{{\"__type\":\"AccessDeniedException\",\"Message\":\"You don't have permissions to access this resource ({action}).\"}}"
            )))
            .unwrap();
    }
    let is_sts = matches!(action.as_str(), "AssumeRole" | "GetCallerIdentity");
    let (deny, throttle, delay, page_size) = {
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
        if !is_sts {
            let account = access_key(&headers)
                .and_then(|k| g.keys.get(&k).cloned())
                .unwrap_or_else(|| "caller".into());
            *g.account_calls.entry(account.clone()).or_default() += 1;
            let limit = g
                .rules
                .account_rate_limit
                .iter()
                .find(|(a, _)| *a == account)
                .map(|(_, r)| *r);
            if let Some(rate) = limit {
                let now = std::time::Instant::now();
                let (tokens, last) = g
                    .account_buckets
                    .get(&account)
                    .copied()
                    .unwrap_or((rate, now));
                let tokens =
                    (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate.max(1.0));
                if tokens >= 1.0 {
                    g.account_buckets.insert(account, (tokens - 1.0, now));
                } else {
                    g.account_buckets.insert(account, (tokens, now));
                    throttle = true;
                }
            }
        }
        if throttle {
            *g.throttled.entry(action.clone()).or_default() += 1;
        }
        (deny, throttle, g.rules.delay, g.rules.page_size)
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
    let (denied, never_ready, report_edits) = {
        let g = ctx.inner.lock().unwrap();
        let user = form_value(&body, "UserName");
        let denied = g
            .rules
            .deny_actions
            .iter()
            .any(|(a, u)| *a == action && u.as_ref().is_none_or(|u| Some(u) == user.as_ref()));
        (
            denied,
            g.rules.report_never_ready,
            g.rules.report_edits.clone(),
        )
    };
    if denied {
        return xml(
            StatusCode::FORBIDDEN,
            error_xml(
                "iam",
                "AccessDenied",
                &format!(
                    "User: arn:aws:iam::123456789012:user/test is not authorized to perform: iam:{action} (proxy rule)"
                ),
            ),
        );
    }
    let service = ctx.inner.lock().unwrap().rules.service_credentials.clone();
    if let (Some(list), "ListServiceSpecificCredentials") = (service, action.as_str()) {
        let members: String = list
            .iter()
            .map(|(user, id, svc, status)| {
                format!(
                    "<member><UserName>{user}</UserName><Status>{status}</Status><ServiceUserName>{user}-at-123456789012</ServiceUserName><CreateDate>2026-01-02T03:04:05Z</CreateDate><ServiceSpecificCredentialId>{id}</ServiceSpecificCredentialId><ServiceName>{svc}</ServiceName></member>"
                )
            })
            .collect();
        return xml(
            StatusCode::OK,
            format!(
                "<ListServiceSpecificCredentialsResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><ListServiceSpecificCredentialsResult><ServiceSpecificCredentials>{members}</ServiceSpecificCredentials><IsTruncated>false</IsTruncated></ListServiceSpecificCredentialsResult><ResponseMetadata><RequestId>proxy-0002</RequestId></ResponseMetadata></ListServiceSpecificCredentialsResponse>"
            ),
        );
    }
    if never_ready && action == "GenerateCredentialReport" {
        return xml(
            StatusCode::OK,
            "<GenerateCredentialReportResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GenerateCredentialReportResult><State>INPROGRESS</State><Description>Report generation in progress</Description></GenerateCredentialReportResult><ResponseMetadata><RequestId>proxy-0001</RequestId></ResponseMetadata></GenerateCredentialReportResponse>".into(),
        );
    }
    if !is_sts && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The paging rule: moto gets the request without the Marker and answers the whole list; the
    // proxy cuts the page out of it.
    let paging = page_size
        .filter(|_| !is_sts)
        .and_then(|size| paged_lists(&action).map(|lists| (size.max(1), lists)));
    let mut offset = 0;
    let mut body = body;
    if let (Some(_), Some(marker)) = (paging, form_value(&body, "Marker")) {
        let Some(o) = parse_marker(&marker) else {
            return xml(
                StatusCode::BAD_REQUEST,
                error_xml(
                    "iam",
                    "InvalidInput",
                    &format!("proxy: Marker {marker:?} was not handed out by this proxy"),
                ),
            );
        };
        offset = o;
        *ctx.inner
            .lock()
            .unwrap()
            .followed
            .entry(action.clone())
            .or_default() += 1;
        body = without_param(&body, "Marker");
    }
    let assumed_account = (action == "AssumeRole")
        .then(|| form_value(&body, "RoleArn"))
        .flatten()
        .and_then(|arn| arn.split(':').nth(4).map(str::to_string));
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
            let mut bytes = resp.bytes().await.unwrap_or_default();
            if let (Some((size, lists)), true) = (paging, status.is_success()) {
                let text = String::from_utf8_lossy(&bytes);
                match page(&text, lists, offset, size) {
                    Some(paged) => {
                        *ctx.inner
                            .lock()
                            .unwrap()
                            .pages
                            .entry(action.clone())
                            .or_default() += 1;
                        bytes = Bytes::from(paged);
                    }
                    None => {
                        return Response::builder()
                            .status(StatusCode::BAD_GATEWAY)
                            .body(Body::from(format!(
                                "proxy: cannot page {action}'s answer: {text}"
                            )))
                            .unwrap();
                    }
                }
            }
            if action == "AssumeRole" && status.is_success() {
                // Remember whose keys these are, for the per-account rules and counts.
                let text = String::from_utf8_lossy(&bytes);
                let key = text
                    .split("<AccessKeyId>")
                    .nth(1)
                    .and_then(|r| r.split("</AccessKeyId>").next());
                let account = assumed_account.clone();
                if let (Some(key), Some(account)) = (key, account) {
                    ctx.inner
                        .lock()
                        .unwrap()
                        .keys
                        .insert(key.to_string(), account);
                }
            }
            if action == "GetCredentialReport" && !report_edits.is_empty() && status.is_success() {
                bytes = Bytes::from(edit_report(&String::from_utf8_lossy(&bytes), &report_edits));
            }
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

/// Applies (user, column, value) edits to the base64 CSV inside a GetCredentialReport answer.
fn edit_report(xml: &str, edits: &[(String, String, String)]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(start), Some(end)) = (xml.find("<Content>"), xml.find("</Content>")) else {
        return xml.to_string();
    };
    let content = &xml[start + "<Content>".len()..end];
    let csv = String::from_utf8(b64.decode(content.trim()).expect("report is base64"))
        .expect("report is UTF-8");
    let mut lines: Vec<Vec<String>> = csv
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let header = lines[0].clone();
    for (user, column, value) in edits {
        let col = header
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column}"));
        let row = lines
            .iter_mut()
            .find(|r| r[0] == *user)
            .unwrap_or_else(|| panic!("no report row for {user}"));
        row[col] = value.clone();
    }
    let csv: Vec<String> = lines.iter().map(|r| r.join(",")).collect();
    let encoded = b64.encode(csv.join("\n") + "\n");
    format!(
        "{}<Content>{encoded}</Content>{}",
        &xml[..start],
        &xml[end + "</Content>".len()..]
    )
}

fn xml(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Body::from(body))
        .unwrap()
}

/// The IAM list calls the `page_size` rule pages, with the list elements of each answer (children
/// of `<{Action}Result>`), in the order IAM writes them.
pub const PAGED: &[(&str, &[&str])] = &[
    ("ListUsers", &["Users"]),
    ("ListAccessKeys", &["AccessKeyMetadata"]),
    ("ListMFADevices", &["MFADevices"]),
    ("ListUserTags", &["Tags"]),
    ("ListGroupsForUser", &["Groups"]),
    ("ListVirtualMFADevices", &["VirtualMFADevices"]),
    (
        "GetAccountAuthorizationDetails",
        &[
            "UserDetailList",
            "GroupDetailList",
            "RoleDetailList",
            "Policies",
        ],
    ),
];

fn paged_lists(action: &str) -> Option<&'static [&'static str]> {
    PAGED
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, lists)| *lists)
}

const MARKER_PREFIX: &str = "proxy-page-";

fn parse_marker(marker: &str) -> Option<usize> {
    marker.strip_prefix(MARKER_PREFIX)?.parse().ok()
}

/// The form body without `key` (the other pairs byte for byte). moto ignores Marker anyway; the
/// proxy strips it so that moto surely answers the whole list.
fn without_param(body: &[u8], key: &str) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let kept: Vec<&str> = text
        .split('&')
        .filter(|pair| {
            url_decode_pairs(pair.as_bytes())
                .first()
                .is_none_or(|(k, _)| k != key)
        })
        .collect();
    Bytes::from(kept.join("&"))
}

/// One top-level element of an XML fragment: its name, and byte ranges of the whole element and
/// of its content.
struct Element {
    name: String,
    whole: std::ops::Range<usize>,
    inner: std::ops::Range<usize>,
}

/// The top-level elements of `s`, depth-aware: nested elements (a user's `<Tags><member>`, GAAD's
/// `<GroupList><member>`) stay inside their parent. Enough XML for moto's answers: text never holds
/// a raw `<` (it is escaped), and the only attributes are `xmlns`.
fn elements(s: &str) -> Option<Vec<Element>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut open: Option<(String, usize, usize)> = None;
    let mut i = 0;
    while let Some(lt) = s[i..].find('<').map(|p| p + i) {
        let gt = s[lt..].find('>')? + lt;
        let tag = &s[lt + 1..gt];
        i = gt + 1;
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                let (open_name, start, inner_start) = open.take()?;
                if open_name != name.trim() {
                    return None;
                }
                out.push(Element {
                    name: open_name,
                    whole: start..gt + 1,
                    inner: inner_start..lt,
                });
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let name = tag
            .trim_end_matches('/')
            .split_whitespace()
            .next()?
            .to_string();
        if depth == 0 {
            if self_closing {
                out.push(Element {
                    name,
                    whole: lt..gt + 1,
                    inner: gt..gt,
                });
            } else {
                open = Some((name, lt, gt + 1));
            }
        }
        if !self_closing {
            depth += 1;
        }
    }
    (depth == 0).then_some(out)
}

/// Cuts one page out of moto's complete answer: the `size` list items from `offset`, with
/// `<IsTruncated>true</IsTruncated><Marker>proxy-page-N</Marker>` when more remain and
/// `<IsTruncated>false</IsTruncated>` (no Marker) on the last page. Both go where IAM puts them:
/// children of `<{Action}Result>`, after the lists (moto leaves IsTruncated out of some answers,
/// e.g. ListAccessKeys; whatever it wrote is replaced).
///
/// GAAD has several lists (UserDetailList, GroupDetailList, RoleDetailList, Policies): the page is
/// cut from their concatenation in that order, so one offset says where we are, a page can span
/// the end of one list and the start of the next, and a page may hold no users at all (only
/// groups). Each list element is always written (empty when none of its items is on the page).
/// Like IAM's MaxItems, `size` counts entities of every kind.
fn page(xml: &str, lists: &[&str], offset: usize, size: usize) -> Option<String> {
    let root = elements(xml)?
        .into_iter()
        .find(|e| e.name.ends_with("Response"))?;
    let root_inner = &xml[root.inner.clone()];
    let result = elements(root_inner)?
        .into_iter()
        .find(|e| e.name.ends_with("Result"))?;
    let base = root.inner.start + result.inner.start;
    let result_inner = &xml[base..root.inner.start + result.inner.end];
    let children = elements(result_inner)?;
    // (child index, item text) for every item of every list, in order.
    let mut items: Vec<(usize, &str)> = Vec::new();
    for (ci, child) in children.iter().enumerate() {
        if lists.contains(&child.name.as_str()) {
            let inner = &result_inner[child.inner.clone()];
            for m in elements(inner)? {
                if m.name != "member" {
                    return None;
                }
                items.push((ci, &inner[m.whole]));
            }
        }
    }
    let end = offset.saturating_add(size).min(items.len());
    let on_page = items.get(offset.min(end)..end).unwrap_or_default();
    let mut inner = String::new();
    for (ci, child) in children.iter().enumerate() {
        if lists.contains(&child.name.as_str()) {
            inner.push_str(&format!("<{}>", child.name));
            for (_, item) in on_page.iter().filter(|(i, _)| *i == ci) {
                inner.push_str(item);
            }
            inner.push_str(&format!("</{}>", child.name));
        } else if child.name != "IsTruncated" && child.name != "Marker" {
            inner.push_str(&result_inner[child.whole.clone()]);
        }
    }
    if end < items.len() {
        inner.push_str(&format!(
            "<IsTruncated>true</IsTruncated><Marker>{MARKER_PREFIX}{end}</Marker>"
        ));
    } else {
        inner.push_str("<IsTruncated>false</IsTruncated>");
    }
    Some(format!(
        "{}{}{}",
        &xml[..base],
        inner,
        &xml[root.inner.start + result.inner.end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAAD: &str = "<GetAccountAuthorizationDetailsResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GetAccountAuthorizationDetailsResult><UserDetailList><member><UserName>u1</UserName><GroupList><member>g1</member></GroupList><Tags><member><Key>a</Key><Value>R&amp;D</Value></member></Tags></member><member><UserName>u2</UserName><UserPolicyList/><GroupList/></member></UserDetailList><GroupDetailList><member><GroupName>g1</GroupName></member></GroupDetailList><RoleDetailList/><Policies/><IsTruncated>false</IsTruncated></GetAccountAuthorizationDetailsResult><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></GetAccountAuthorizationDetailsResponse>";

    fn gaad_page(offset: usize) -> String {
        page(
            GAAD,
            paged_lists("GetAccountAuthorizationDetails").unwrap(),
            offset,
            2,
        )
        .unwrap()
    }

    #[test]
    fn paging_splits_top_level_members_depth_aware_over_concatenated_lists() {
        let first = gaad_page(0);
        assert!(first.contains("<UserName>u1</UserName><GroupList><member>g1</member></GroupList><Tags><member><Key>a</Key><Value>R&amp;D</Value></member></Tags></member>"), "{first}");
        assert!(first.contains("<UserName>u2</UserName>"), "{first}");
        assert!(
            first.contains("<GroupDetailList></GroupDetailList>"),
            "{first}"
        );
        assert!(first.contains("<Policies></Policies><IsTruncated>true</IsTruncated><Marker>proxy-page-2</Marker></GetAccountAuthorizationDetailsResult><ResponseMetadata>"), "{first}");
        assert_eq!(first.matches("IsTruncated>").count(), 2, "{first}");

        let last = gaad_page(2);
        assert!(last.contains("<UserDetailList></UserDetailList><GroupDetailList><member><GroupName>g1</GroupName></member></GroupDetailList>"), "{last}");
        assert!(
            last.contains(
                "<IsTruncated>false</IsTruncated></GetAccountAuthorizationDetailsResult>"
            ),
            "{last}"
        );
        assert!(!last.contains("<Marker>"), "{last}");
        assert!(
            gaad_page(7)
                .contains("<UserDetailList></UserDetailList><GroupDetailList></GroupDetailList>")
        );
    }

    #[test]
    fn paging_strips_only_the_marker() {
        let body = b"Action=ListUsers&Marker=proxy-page-4&MaxItems=1000&PathPrefix=%2Fa%2F";
        assert_eq!(
            without_param(body, "Marker"),
            Bytes::from_static(b"Action=ListUsers&MaxItems=1000&PathPrefix=%2Fa%2F")
        );
        assert_eq!(parse_marker("proxy-page-4"), Some(4));
        assert_eq!(parse_marker("page-4"), None);
    }
}
