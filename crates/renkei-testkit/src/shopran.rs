//! A fake Shopらん (DreamArts) for tests: the session API that confirms a notice webhook's `token`, and a builder
//! for notice webhook bodies with the fields of seed 003, so a receiver's `verify:` callback and the fan-out of
//! notices can be tested end to end.
//!
//! Modelled (from the vendor's notice webhook page): `https://{domain}/h2/STRSessionManipurator.do` with the
//! parameters `func=validateWebhookToken`, `key=<WebAPI key>` and `token=<the webhook's token>`, as a form body
//! (POST) or a query string (GET). The test registers the tokens Shopらん "issued" ([`FakeShopran::issue_token`]);
//! the fake confirms exactly those. [`Notice`] builds the JSON body Shopらん posts (`noticeId`, `dispId`, `event`,
//! `title`, `priority` 3/4/7, `keywords`, `category`, `calendarArea`, the UTC dates, `recvStores`, `colors`,
//! `targetStaff`, `userConcerned`, `replyType`, `replyDueDate`, `pubUser`, `pubGroup`, `pdf`, `tasks`,
//! `approvedDate`, `regAccount`, `updAccount`, `sessionOwner`, `templateId`, `templateName`, `text`, `data`,
//! `token`).
//!
//! A guess, because the vendor does not publish it: the session API's answer. The fake answers 200 with
//! `{"result":"OK"}` for a token it issued and 200 with `{"result":"NG"}` for any other (so a receiver that only
//! looks at the status would trust a forged notice: it must look at the body too), 403 `{"result":"ERROR"}` for a
//! wrong WebAPI key, 400 `{"result":"ERROR"}` for another `func` or a missing parameter. A receiver's check of the
//! answer must therefore be configurable (renkei: `verify.valid_when`). Also a guess: the text forms of the dates
//! (the fake writes ISO 8601 in UTC, `2026-11-22T00:00:00Z`).
//!
//! Not modelled: the other session API functions, the notice API itself, the webhook history screen, Basic
//! credentials in the payload URL (a test sends those itself), token expiry.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::kintone::RecordedRequest;
use crate::shared::ServerTask;

/// The session API's path.
pub const SESSION_API_PATH: &str = "/h2/STRSessionManipurator.do";

struct State {
    api_key: String,
    tokens: HashSet<String>,
    requests: Vec<RecordedRequest>,
}

type Inner = crate::shared::Inner<State>;

/// The fake Shopらん domain. Clones share one server and one state.
#[derive(Clone)]
pub struct FakeShopran {
    inner: Arc<Inner>,
    _server: Arc<ServerTask>,
}

impl FakeShopran {
    /// Serves the session API on 127.0.0.1 (a free port), accepting WebAPI key `api_key`.
    pub async fn start(api_key: &str) -> FakeShopran {
        let state = State { api_key: api_key.to_string(), tokens: HashSet::new(), requests: Vec::new() };
        let (inner, server) = crate::shared::serve(state, handle).await;
        FakeShopran { inner, _server: server }
    }

    /// `http://127.0.0.1:PORT`: the service domain.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `http://127.0.0.1:PORT/h2/STRSessionManipurator.do`.
    pub fn session_api_url(&self) -> String {
        format!("{}{SESSION_API_PATH}", self.base_url())
    }

    /// A token Shopらん put in a webhook it sent: the session API confirms it from now on.
    pub fn issue_token(&self, token: &str) {
        self.inner.lock().tokens.insert(token.to_string());
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// The `token` parameters the session API was asked about, in order.
    pub fn validated_tokens(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| params(r).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v))
            .collect()
    }
}

/// The parameters of a recorded request: the query string, then a form body.
fn params(r: &RecordedRequest) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        r.query.as_deref().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let form = r.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        out.extend(form_urlencoded::parse(&r.body).into_owned());
    }
    out
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap_or_default();
    let recorded = RecordedRequest::new(&parts, &body);
    let given = params(&recorded);
    let mut st = inner.lock();
    st.requests.push(recorded);
    if parts.uri.path() != SESSION_API_PATH {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    if !matches!(parts.method.as_str(), "GET" | "POST") {
        return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response();
    }
    let get = |name: &str| given.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let error = |status: StatusCode, message: &str| {
        (status, Json(json!({ "result": "ERROR", "message": message }))).into_response()
    };
    match get("func") {
        Some("validateWebhookToken") => {}
        Some(other) => return error(StatusCode::BAD_REQUEST, &format!("func `{other}` is not supported")),
        None => return error(StatusCode::BAD_REQUEST, "func is required"),
    }
    if get("key") != Some(st.api_key.as_str()) {
        return error(StatusCode::FORBIDDEN, "the WebAPI key is not valid for the session API");
    }
    let Some(token) = get("token").filter(|t| !t.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "token is required");
    };
    let result = if st.tokens.contains(token) { "OK" } else { "NG" };
    (StatusCode::OK, Json(json!({ "result": result }))).into_response()
}

/// A notice webhook body as Shopらん sends it (seed 003). Build with [`Notice::new`], adjust the public fields,
/// then [`Notice::to_json`].
#[derive(Clone, Debug)]
pub struct Notice {
    pub notice_id: i64,
    pub disp_id: i64,
    /// `PUBLISH`, `UPDATE`, `DELETE` or `VERIFY`.
    pub event: String,
    pub title: String,
    /// 3 (NORMAL), 4 (IMPORTANT) or 7 (CRITICAL).
    pub priority: i64,
    pub keywords: Vec<String>,
    /// Stores the notice goes to.
    pub recv_stores: Vec<String>,
    pub open_date: String,
    pub close_date: String,
    pub begin_date: String,
    pub end_date: String,
    /// 0 all staff, 1 store managers, 3 managers and deputies, 4 assigned users, 8 store advisers.
    pub target_staff: i64,
    /// 0 none, 1 one per store, 2 several per store, 3 one per staff member.
    pub reply_type: i64,
    pub reply_due_date: String,
    /// The body text (at most 480 bytes in Shopらん).
    pub text: String,
    pub template_id: i64,
    pub template_name: String,
    pub token: String,
}

impl Notice {
    /// A NORMAL-priority notice with plausible values for every field.
    pub fn new(event: &str, notice_id: i64, token: &str) -> Notice {
        Notice {
            notice_id,
            disp_id: 1000 + notice_id,
            event: event.to_string(),
            title: "お知らせ".to_string(),
            priority: 3,
            keywords: vec!["店舗運営".to_string()],
            recv_stores: vec!["S001".to_string(), "S002".to_string()],
            open_date: "2026-11-22T00:00:00Z".to_string(),
            close_date: "2026-12-22T00:00:00Z".to_string(),
            begin_date: "2026-11-23T00:00:00Z".to_string(),
            end_date: "2026-11-30T09:00:00Z".to_string(),
            target_staff: 1,
            reply_type: 1,
            reply_due_date: "2026-11-29T09:00:00Z".to_string(),
            text: "本文".to_string(),
            template_id: 9,
            template_name: "通常のお知らせ".to_string(),
            token: token.to_string(),
        }
    }

    /// The JSON body, with every field of seed 003.
    pub fn to_json(&self) -> Value {
        let user = |code: &str, name: &str| json!({ "code": code, "name": name });
        json!({
            "noticeId": self.notice_id,
            "dispId": self.disp_id,
            "event": self.event,
            "title": self.title,
            "priority": self.priority,
            "keywords": self.keywords,
            "category": [{
                "id": 1,
                "label": "業務区分",
                "selected": [{ "key": "ops", "label": "店舗運営" }]
            }],
            "calendarArea": ["カレンダー表示", "週間スケジュール表示"],
            "openDate": self.open_date,
            "closeDate": self.close_date,
            "beginDate": self.begin_date,
            "endDate": self.end_date,
            "recvStores": self.recv_stores,
            "colors": [{ "colorsId": "C1", "label": "販促" }],
            "targetStaff": self.target_staff,
            "userConcerned": [user("hq001", "本部 太郎")],
            "replyType": self.reply_type,
            "replyDueDate": self.reply_due_date,
            "pubUser": user("hq001", "本部 太郎"),
            "pubGroup": { "code": "G10", "name": "営業企画部" },
            "pdf": [],
            "tasks": [{ "dueDate": "2026-11-30T09:00:00Z", "beginDate": "2026-11-23T00:00:00Z", "name": "売場変更" }],
            "approvedDate": "2026-11-21T23:50:00Z",
            "regAccount": user("hq001", "本部 太郎"),
            "updAccount": user("hq002", "本部 花子"),
            "sessionOwner": user("hq002", "本部 花子"),
            "templateId": self.template_id,
            "templateName": self.template_name,
            "text": self.text,
            "data": { "10001": "売場変更", "10002": "2026/11/23" },
            "token": self.token
        })
    }
}
