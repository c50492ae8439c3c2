//! API errors: a stable `{"error": {"code", "message"}}` body in the reader's language.
//!
//! Unexpected errors are logged with their cause and answered as an opaque 500, so internal details (paths,
//! SQL, DSNs) never reach a client.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use renkei_core::{Lang, Msg};
use renkei_store::StoreError;

pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Msg,
    pub lang: Lang,
    /// Fields added to the error object (e.g. `problems` of a config that does not load), per language.
    pub extra: Option<Extra>,
}

/// Fields added to an error object, made in the reader's language.
pub type Extra = Box<dyn Fn(Lang) -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiError").field("status", &self.status).field("code", &self.code).finish_non_exhaustive()
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: Msg) -> ApiError {
        ApiError { status, code, message, lang: Lang::En, extra: None }
    }

    /// Answers in the language the request asked for.
    pub fn lang(mut self, headers: &HeaderMap) -> ApiError {
        self.lang = Lang::from_header(headers.get("accept-language").and_then(|v| v.to_str().ok()));
        self
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Msg::new(format!("{what} not found"), format!("{what} が見つかりません")),
        )
    }

    pub fn bad_request(en: impl Into<String>, ja: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", Msg::new(en, ja))
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            Msg::new("internal error; see the server log", "内部エラーです。サーバーのログを確認してください"),
        )
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            Msg::new(
                "storage is unavailable; nothing was stored, please send again later",
                "ストレージが利用できません。何も保存されていないので、後で再送してください",
            ),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found("record"),
            StoreError::Conflict(msg) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                Msg::new(msg.clone(), format!("現在の状態では実行できません: {msg}")),
            ),
            StoreError::Unavailable(cause) => {
                tracing::error!(%cause, "storage unavailable");
                ApiError::unavailable()
            }
            StoreError::Other(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "storage error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.get(self.lang).into());
        if let Some(extra) = &self.extra {
            error.extend(extra(self.lang));
        }
        let body = serde_json::json!({ "error": error });
        (self.status, Json(body)).into_response()
    }
}
