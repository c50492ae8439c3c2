//! The config model: what a `renkei.yaml` says, as typed values.
//!
//! [`load`] turns text into a [`Config`] (or every problem in it, with path and line); the types here are
//! what the rest of renkei works with. Templates stay as source text ([`Tmpl`], [`Expr`]) in the model and
//! are compiled once into the [`crate::template::Engine`] built beside it, so a typo is reported at load.

pub mod edit;
mod load;
pub mod storage;
pub mod subscriptions;
pub mod yaml;

use std::net::SocketAddr;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::body::{BodyFormat, CsvInOptions, CsvOutOptions, Split};
use crate::types::{ByteSize, Name, Secret, Span};

pub use load::{load, Loaded};
pub use subscriptions::{Signing, SigningSecret, Subscription};
pub use yaml::{Path, Problem};

/// A template: text with `{{ ... }}` parts, rendered to a string (or, for a body leaf that is exactly one
/// `{{ expression }}`, to the expression's value with its type).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct Tmpl(pub String);

/// An expression without braces, e.g. `event.type is startingwith('rakuraku_')`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct Expr(pub String);

#[derive(Clone, Debug)]
pub struct Config {
    pub server: Server,
    pub storage: String,
    pub network: Network,
    pub history: History,
    pub worker: Worker,
    pub tables: IndexMap<Name, Table>,
    pub sources: IndexMap<Name, Source>,
    pub destinations: IndexMap<Name, Destination>,
    pub flows: IndexMap<Name, Flow>,
    /// As written; each also stands in `flows` and `destinations` as `subscription-NAME`.
    pub subscriptions: IndexMap<Name, Subscription>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    /// Largest request body accepted on `/hooks/*`.
    pub body_limit: ByteSize,
    /// Bearer token for `/api/v1`; `RENKEI_ADMIN_TOKEN` is used when this is not set.
    pub admin_token: Option<Secret>,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Load balancers whose `X-Forwarded-For` is believed (for source IP allow-lists).
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// The master key file (base64 of 32 bytes), when `RENKEI_MASTER_KEY` is not set; created with mode 0600
    /// if missing. Default: `renkei.key` beside the SQLite file. PostgreSQL needs this or the variable (every
    /// node must use the same key).
    pub key_file: Option<String>,
    /// Requests per second to `/hooks/*` from one client address (all sources together).
    pub rate_limit_per_client: Option<RateLimit>,
    /// How long a sender may take to send its body; a slower one is answered 408.
    pub read_timeout: Span,
}

/// A token bucket: `burst` requests at once, then `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            body_limit: ByteSize(10 * 1024 * 1024),
            admin_token: None,
            log_json: false,
            trusted_proxies: Vec::new(),
            key_file: None,
            rate_limit_per_client: None,
            read_timeout: Span(std::time::Duration::from_secs(30)),
        }
    }
}

/// Exceptions to the SSRF guard (`renkei_connectors::http::guard`), which every outbound request passes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Ranges outbound requests may reach although they are loopback, private, link-local...
    pub allow_private: Vec<crate::net::Cidr>,
    /// Plain `http://` for every destination (otherwise `https` only, unless a destination says `allow_http`).
    pub allow_http: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    /// Events (with their deliveries and attempts) older than this are deleted once finished.
    pub retention: Span,
    /// How much of each request and response body an attempt keeps.
    pub max_body: ByteSize,
    /// How much of a rejected request's body is kept for inspection.
    pub max_rejected_body: ByteSize,
}

impl Default for History {
    fn default() -> Self {
        History {
            retention: Span(std::time::Duration::from_secs(30 * 86400)),
            max_body: ByteSize(64 * 1024),
            max_rejected_body: ByteSize(64 * 1024),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Worker {
    /// Deliveries run at once by this node.
    pub concurrency: usize,
    /// How long a claimed delivery stays with its worker before another may take it over.
    pub lease: Span,
    /// How often an idle worker looks for due retries (new events wake it at once).
    pub poll: Span,
    /// How long `serve` waits for in-flight deliveries on shutdown before releasing them.
    pub shutdown_grace: Span,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            concurrency: 128,
            lease: Span(std::time::Duration::from_secs(120)),
            poll: Span(std::time::Duration::from_secs(1)),
            shutdown_grace: Span(std::time::Duration::from_secs(10)),
        }
    }
}

/// A lookup table, given inline or as a CSV file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub key: String,
    #[serde(default)]
    pub rows: Option<Vec<IndexMap<String, serde_json::Value>>>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub csv: CsvInOptions,
}

/// A loaded table: rows by key (the key column's text).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Table {
    pub key: String,
    pub rows: IndexMap<String, serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// What renkei knows about a sender's body (`kintone`): see [`crate::presets`].
    #[serde(default)]
    pub preset: Option<crate::presets::Preset>,
    #[serde(default)]
    pub auth: Option<SourceAuth>,
    /// Requests per second this source accepts (all senders together).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The status a stored event is answered with: 202 (default), or 200 / 201 / 204 for senders that treat
    /// anything else as an error (Questetra's HTTP message event accepts only 200).
    #[serde(default = "default_ack_status")]
    pub ack_status: u16,
    #[serde(default)]
    pub format: BodyFormat,
    #[serde(default)]
    pub csv: CsvInOptions,
    #[serde(default)]
    pub json: JsonOptions,
    /// The event type; the source's name when not set.
    #[serde(default)]
    pub event_type: Option<Tmpl>,
    /// A repeat of this key within `dedupe_window` is acknowledged with the first event's id and not run.
    #[serde(default)]
    pub dedupe: Option<Tmpl>,
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window: Span,
    /// Callback verification (Shopらん): see [`Verify`].
    #[serde(default)]
    pub verify: Option<Verify>,
    /// Pull changes from a kintone app as well (those kintone sends no webhook for: CSV import, bulk API).
    #[serde(default)]
    pub poll: Option<KintonePoll>,
}

/// A polling trigger: records of a kintone destination's app changed since the last look become events.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KintonePoll {
    /// A kintone destination: its app and credentials are read.
    pub destination: Name,
    #[serde(default = "default_poll_every")]
    pub every: Span,
    /// The code of the app's "updated time" (更新日時) field.
    #[serde(default = "default_poll_field")]
    pub field: String,
}

fn default_poll_every() -> Span {
    Span(std::time::Duration::from_secs(300))
}

fn default_poll_field() -> String {
    "更新日時".into()
}

fn default_ack_status() -> u16 {
    202
}

fn default_dedupe_window() -> Span {
    Span(std::time::Duration::from_secs(7 * 86400))
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonOptions {
    /// `rows`: a JSON array becomes one event per element.
    pub split: Split,
}

impl Source {
    /// A parsed body (or row) as templates see it: reshaped by the preset, if any.
    pub fn reshape(&self, body: serde_json::Value) -> serde_json::Value {
        match self.preset {
            Some(p) => p.apply(body),
            None => body,
        }
    }

    /// The events a parsed body becomes: one per row (numbered from 1) when the source splits, else one;
    /// each reshaped by the preset.
    pub fn events_of(&self, parsed: crate::body::Parsed) -> Vec<(Option<u32>, serde_json::Value)> {
        match (self.splits(parsed.kind), parsed.value) {
            (true, serde_json::Value::Array(items)) => {
                items.into_iter().enumerate().map(|(i, v)| (Some(i as u32 + 1), self.reshape(v))).collect()
            }
            (_, value) => vec![(None, self.reshape(value))],
        }
    }

    /// Whether a body is split into one event per row.
    pub fn splits(&self, parsed: BodyFormat) -> bool {
        match parsed {
            BodyFormat::Csv => self.csv.split == Split::Rows,
            BodyFormat::Json => self.json.split == Split::Rows,
            _ => false,
        }
    }
}

/// How a source knows a request is from its sender. Every method given must pass.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceAuth {
    /// Shared token: header `X-Renkei-Token` or query `?token=`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// HTTP Basic.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[serde(default)]
    pub standard_webhooks: Option<StandardWebhooksAuth>,
    /// A generic HMAC signature header (GitHub-, Stripe-, Slack-style senders).
    #[serde(default)]
    pub hmac: Option<HmacAuth>,
    /// Only these addresses may send (the peer address, or `X-Forwarded-For` behind `server.trusted_proxies`).
    #[serde(default)]
    pub ip_allow: Vec<crate::net::Cidr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooksAuth {
    /// `whsec_...`; several during a rotation.
    pub secrets: Vec<Secret>,
    /// How far `webhook-timestamp` may be from now; older requests are refused as replays.
    #[serde(default = "default_tolerance")]
    pub tolerance: Span,
}

fn default_tolerance() -> Span {
    Span(std::time::Duration::from_secs(300))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The header carrying the signature, e.g. `X-Hub-Signature-256`.
    pub header: String,
    pub secret: Secret,
    #[serde(default = "default_algorithm")]
    pub algorithm: crate::signing::Algorithm,
    #[serde(default)]
    pub encoding: crate::signing::DigestEncoding,
    /// Text before the digest in the header, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A header with the Unix time of the request, signed with the body as `{timestamp}.{body}`
    /// (or as `payload` says); requests outside `tolerance` are refused as replays.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// What is signed: `{body}` (default) or e.g. `{timestamp}.{body}`, `v0:{timestamp}:{body}`.
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default = "default_tolerance")]
    pub tolerance: Span,
}

fn default_algorithm() -> crate::signing::Algorithm {
    crate::signing::Algorithm::Sha256
}

/// A callback check (Shopらん's `validateWebhookToken`): the event is trusted only when the sender confirms it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub url: String,
    #[serde(default = "default_verify_method")]
    pub method: String,
    /// Form fields sent (templates over the request: `body`, `headers`, `query`).
    #[serde(default)]
    pub form: IndexMap<String, Tmpl>,
    /// A JSON body sent instead of a form (a structure with templates in its leaves).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// When the answer means "yes": an expression over `response.status`, `response.body`, `response.headers`.
    #[serde(default = "default_valid_when")]
    pub valid_when: Expr,
    #[serde(default = "default_verify_timeout")]
    pub timeout: Span,
}

fn default_verify_method() -> String {
    "POST".into()
}

fn default_valid_when() -> Expr {
    Expr("response.status == 200".into())
}

fn default_verify_timeout() -> Span {
    Span(std::time::Duration::from_secs(10))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    Http(HttpDestination),
    Kintone(KintoneDestination),
}

impl Destination {
    /// Requests in flight at once: per destination for http; for kintone, per domain (see
    /// [`KintoneDestination::domain`]), shared by every kintone destination on it.
    pub fn concurrency(&self) -> usize {
        match self {
            Destination::Http(h) => h.concurrency,
            Destination::Kintone(k) => k.concurrency,
        }
    }
}

/// A kintone app (seed 001, 002, 004).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KintoneDestination {
    /// `https://example.cybozu.com` (also .kintone.com, .cybozu.cn, or any URL the customer uses).
    #[serde(default)]
    pub base_url: Option<String>,
    /// `example` for `https://example.cybozu.com`, instead of `base_url`.
    #[serde(default)]
    pub subdomain: Option<String>,
    pub app: u64,
    #[serde(default)]
    pub guest_space: Option<u64>,
    /// One API token, or several (`api_tokens`) when lookups touch other apps.
    #[serde(default)]
    pub api_token: Option<Secret>,
    #[serde(default)]
    pub api_tokens: Vec<Secret>,
    /// Password authentication (`X-Cybozu-Authorization`), instead of tokens.
    #[serde(default)]
    pub login: Option<BasicAuth>,
    /// HTTP Basic in front of the domain (kintone's "Basic認証" option), with either of the above.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// `Accept-Language` for kintone's messages: ja or en.
    #[serde(default = "default_lang")]
    pub lang: String,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// Requests in flight to this destination's domain at once, shared with every kintone destination on the
    /// same domain (kintone allows 100 per domain; the default leaves room for other clients).
    #[serde(default = "default_kintone_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub batch: KintoneBatch,
    /// Plain `http://` allowed for this destination (a test kintone, a gateway on the same host), besides
    /// `network.allow_http`.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_lang() -> String {
    "ja".into()
}

fn default_kintone_concurrency() -> usize {
    10
}

impl KintoneDestination {
    /// The base URL without a trailing slash.
    pub fn base(&self) -> String {
        match (&self.base_url, &self.subdomain) {
            (Some(b), _) => b.trim_end_matches('/').to_owned(),
            (None, Some(s)) => format!("https://{s}.cybozu.com"),
            (None, None) => String::new(),
        }
    }

    /// The host the concurrency limit counts against.
    pub fn domain(&self) -> String {
        let base = self.base();
        let rest = base.split_once("://").map(|(_, r)| r).unwrap_or(&base);
        rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
    }

    /// `/k/v1/` or `/k/guest/{space}/v1/`.
    pub fn api_path(&self, resource: &str) -> String {
        match self.guest_space {
            Some(space) => format!("{}/k/guest/{space}/v1/{resource}.json", self.base()),
            None => format!("{}/k/v1/{resource}.json", self.base()),
        }
    }
}

/// Writing several events' records in one request.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KintoneBatch {
    pub enabled: bool,
    /// Records per request: at most 100 (kintone's limit).
    pub max: usize,
    /// How long the worker lets new events gather before writing, when it was idle.
    pub window: Span,
}

impl Default for KintoneBatch {
    fn default() -> Self {
        KintoneBatch { enabled: true, max: 100, window: Span(std::time::Duration::from_millis(200)) }
    }
}

/// What a kintone step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KintoneAction {
    Add,
    Update,
    Upsert,
    Delete,
    Status,
    Comment,
}

impl std::fmt::Display for KintoneAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KintoneAction::Add => "add",
            KintoneAction::Update => "update",
            KintoneAction::Upsert => "upsert",
            KintoneAction::Delete => "delete",
            KintoneAction::Status => "status",
            KintoneAction::Comment => "comment",
        })
    }
}

impl KintoneAction {
    /// Whether records of several events can go in one `records.json` request.
    pub fn batches(self) -> bool {
        matches!(self, KintoneAction::Add | KintoneAction::Update | KintoneAction::Upsert)
    }
}

/// A record found by a unique field (`updateKey`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KintoneKey {
    pub field: String,
    pub value: Tmpl,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDestination {
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub query: IndexMap<String, String>,
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// Requests in flight to this destination at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Plain `http://` allowed for this destination, besides `network.allow_http`.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_timeout() -> Span {
    Span(std::time::Duration::from_secs(30))
}

fn default_concurrency() -> usize {
    8
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    Basic(BasicAuth),
    Bearer(Secret),
    Header { name: String, value: Secret },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub source: Name,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Deliveries are made only for events where this expression is true; others are recorded as skipped.
    #[serde(default)]
    pub when: Option<Expr>,
    /// Events with the same key are delivered one after another, in arrival order.
    #[serde(default)]
    pub order_key: Option<Tmpl>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Loop guard of a two-way sync: when this key, rendered for an incoming event, was remembered by a step's
    /// `echo_key` within `echo_window`, the change is renkei's own coming back: the delivery is skipped, and
    /// the history says so.
    #[serde(default)]
    pub skip_echo: Option<Tmpl>,
    #[serde(default = "default_echo_window")]
    pub echo_window: Span,
    pub steps: Vec<Step>,
}

fn default_echo_window() -> Span {
    Span(std::time::Duration::from_secs(3600))
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Tries of one step before the delivery is dead.
    pub max_attempts: u32,
    pub initial: Span,
    pub max: Span,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial: Span(std::time::Duration::from_secs(1)),
            max: Span(std::time::Duration::from_secs(3600)),
        }
    }
}

/// How a step's body is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutFormat {
    #[default]
    Json,
    Form,
    Csv,
    Text,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Lets later steps say `steps.NAME` as well as `steps[0]`.
    #[serde(default)]
    pub name: Option<String>,
    pub to: Name,
    #[serde(default)]
    pub method: Option<String>,
    /// Appended to the destination's `base_url`.
    #[serde(default)]
    pub path: Option<Tmpl>,
    /// A whole URL, instead of `path`.
    #[serde(default)]
    pub url: Option<Tmpl>,
    #[serde(default)]
    pub query: IndexMap<String, Tmpl>,
    #[serde(default)]
    pub headers: IndexMap<String, Tmpl>,
    /// A YAML structure with templates in its leaves, or one template string.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub format: OutFormat,
    #[serde(default)]
    pub csv: CsvOutOptions,
    /// Standard Webhooks signatures on this step's requests (http destinations).
    #[serde(default)]
    pub sign: Option<Signing>,
    /// Remembered after this step succeeds, so the change it made is recognised when the other system sends it
    /// back (see the flow's `skip_echo`).
    #[serde(default)]
    pub echo_key: Option<Tmpl>,
    /// When a 2xx answer really is a success, for APIs that report errors in the body with HTTP 200
    /// (楽楽販売's `"status": "success"`): an expression over `response.status`, `response.headers` and
    /// `response.body`. False fails the step permanently, with the answer kept.
    #[serde(default)]
    pub success_when: Option<Expr>,
    /// kintone: what to do with the record.
    #[serde(default)]
    pub action: Option<KintoneAction>,
    /// kintone: the record by id...
    #[serde(default)]
    pub id: Option<Tmpl>,
    /// ...or by a unique field.
    #[serde(default)]
    pub key: Option<KintoneKey>,
    /// kintone: field codes to templates (subtables as lists of rows).
    #[serde(default)]
    pub record: Option<serde_json::Value>,
    /// kintone `status`: the process-management action to run (e.g. `承認する`).
    #[serde(default)]
    pub status: Option<Tmpl>,
    /// kintone `status`: the next assignee's login name, when the action asks for one.
    #[serde(default)]
    pub assignee: Option<Tmpl>,
    /// kintone `comment`: the comment text.
    #[serde(default)]
    pub comment: Option<Tmpl>,
}

impl Step {
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("POST")
    }
}
