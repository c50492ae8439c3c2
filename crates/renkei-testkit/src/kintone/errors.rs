//! kintone's error answers: `{"code","id","message","errors"?}` with the HTTP status of the spec's error table, the
//! message in Japanese unless `Accept-Language` asks for English.
//!
//! Codes and statuses follow `shared/specs/kintone.md`. Message texts were taken from kintone's own answers where
//! they are known (official SDK tests, cli-kintone's end-to-end tests); the ones marked "text not confirmed" are
//! plausible wording, and a connector must key on `code`, never on the text.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

/// The language kintone answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    Ja,
    En,
}

impl Lang {
    /// kintone follows `Accept-Language`; the fake knows Japanese and English only and falls back to Japanese (the
    /// default of a Japanese domain) for anything that does not start with `en`.
    pub(crate) fn from_header(value: Option<&str>) -> Lang {
        match value {
            Some(v) if v.trim_start().to_ascii_lowercase().starts_with("en") => Lang::En,
            _ => Lang::Ja,
        }
    }
}

/// One message in both languages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Text {
    ja: String,
    en: String,
}

impl Text {
    pub(crate) fn new(ja: impl Into<String>, en: impl Into<String>) -> Text {
        Text { ja: ja.into(), en: en.into() }
    }

    pub(crate) fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Ja => &self.ja,
            Lang::En => &self.en,
        }
    }

    pub(crate) fn required() -> Text {
        Text::new("必須です。", "Required.")
    }

    pub(crate) fn duplicate() -> Text {
        Text::new("値がほかのレコードと重複しています。", "This value already exists in another record.")
    }

    pub(crate) fn not_a_number() -> Text {
        Text::new("数字でなければなりません。", "Only numbers are allowed.")
    }

    pub(crate) fn not_in_options(value: &str) -> Text {
        Text::new(format!("\"{value}\"は選択肢にありません。"), format!("The value, \"{value}\", is not in options."))
    }

    /// A value of the wrong JSON shape or format for its field (text not confirmed).
    pub(crate) fn invalid_value() -> Text {
        Text::new("不正な値です。", "Invalid value.")
    }

    pub(crate) fn at_least_one() -> Text {
        Text::new("最小でも1以上です。", "must be greater than or equal to 1")
    }

    /// Text not confirmed; the key (`records`, `ids`, `requests`) and CB_VA01 are what kintone documents.
    pub(crate) fn at_most(n: usize) -> Text {
        Text::new(format!("最大でも{n}以下です。"), format!("must be less than or equal to {n}"))
    }
}

/// Validation messages keyed as kintone keys them (`record.<code>.value`, `records[1].<code>.value`, `app`, ...),
/// in the order they were found.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldErrors(Vec<(String, Vec<Text>)>);

impl FieldErrors {
    pub(crate) fn add(&mut self, key: impl Into<String>, text: Text) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, texts)) => texts.push(text),
            None => self.0.push((key, vec![text])),
        }
    }

    pub(crate) fn append(&mut self, other: FieldErrors) {
        for (key, texts) in other.0 {
            for text in texts {
                self.add(key.clone(), text);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn to_json(&self, lang: Lang) -> Value {
        let mut map = Map::new();
        for (key, texts) in &self.0 {
            let messages: Vec<&str> = texts.iter().map(|t| t.get(lang)).collect();
            map.insert(key.clone(), json!({ "messages": messages }));
        }
        Value::Object(map)
    }
}

/// An error answer. The message is boxed to keep `Result<_, ApiError>` small.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    message: Box<Text>,
    errors: Option<FieldErrors>,
    /// Set when the error ends a bulkRequest: (index of the failing request, number of requests).
    bulk: Option<(usize, usize)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: Text) -> ApiError {
        ApiError { status, code: code.to_string(), message: Box::new(message), errors: None, bulk: None }
    }

    /// CB_VA01 with per-key messages: kintone's answer to any invalid input.
    pub(crate) fn invalid(errors: FieldErrors) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "CB_VA01",
            Text::new("入力内容が正しくありません。", "Missing or invalid input."),
        );
        e.errors = Some(errors);
        e
    }

    pub(crate) fn invalid_at(key: impl Into<String>, text: Text) -> ApiError {
        let mut errors = FieldErrors::default();
        errors.add(key, text);
        ApiError::invalid(errors)
    }

    pub(crate) fn query_syntax() -> ApiError {
        ApiError::invalid_at("query", Text::new("クエリ記法が間違っています。", "The query is invalid."))
    }

    pub(crate) fn record_not_found(id: impl std::fmt::Display) -> ApiError {
        let text = Text::new(
            format!("指定したレコード（id: {id}）が見つかりません。"),
            format!("The specified record (ID: {id}) is not found."),
        );
        ApiError::new(StatusCode::NOT_FOUND, "GAIA_RE01", text)
    }

    pub(crate) fn app_not_found(app: u64) -> ApiError {
        let text = Text::new(
            format!("指定したアプリ（id: {app}）が見つかりません。削除されている可能性があります。"),
            format!("The app (ID: {app}) not found. The app may have been deleted."),
        );
        ApiError::new(StatusCode::NOT_FOUND, "GAIA_AP01", text)
    }

    pub(crate) fn revision_conflict() -> ApiError {
        let text = Text::new(
            "指定したrevisionは最新ではありません。ほかのユーザーがレコードを更新した可能性があります。",
            "The revision is not the latest. Someone may update a record.",
        );
        ApiError::new(StatusCode::CONFLICT, "GAIA_CO02", text)
    }

    pub(crate) fn guest_path_required() -> ApiError {
        let text = Text::new(
            "ゲストスペース内のアプリを操作する場合は、リクエストの送信先を「/k/guest/（ゲストスペースのID）/v1/...」にします。",
            "You need to send a request to the URL: \"/k/guest/<Space ID>/v1/...\" to execute apps in Guest Spaces.",
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_IL23", text)
    }

    pub(crate) fn no_privilege() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "CB_NO02", Text::new("権限がありません。", "No privilege to proceed."))
    }

    pub(crate) fn token_not_allowed() -> ApiError {
        let text = Text::new(
            "このAPIトークンでは、指定したAPIを実行できません。",
            "Using this API token, you cannot run the specified API.",
        );
        ApiError::new(StatusCode::FORBIDDEN, "GAIA_NO01", text)
    }

    pub(crate) fn token_mismatch() -> ApiError {
        let text = Text::new(
            "指定したAPIトークンは、アプリで生成されたトークンと異なります。",
            "The specified API token does not match the API token generated via an app.",
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_IA02", text)
    }

    /// Japanese text not confirmed.
    pub(crate) fn duplicate_token() -> ApiError {
        let text = Text::new(
            "同じアプリのAPIトークンを重複して指定することはできません。",
            "You cannot specify a duplicate API token for the same app.",
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_DA03", text)
    }

    pub(crate) fn login_required() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "CB_AU01", Text::new("ログインしてください。", "Please login."))
    }

    pub(crate) fn password_failed() -> ApiError {
        let text = Text::new(
            "ユーザーのパスワード認証に失敗しました。「X-Cybozu-Authorization」ヘッダーの値が正しくありません。",
            "Password authentication failed. The value of the \"X-Cybozu-Authorization\" header is not valid.",
        );
        ApiError::new(StatusCode::UNAUTHORIZED, "CB_WA01", text)
    }

    pub(crate) fn limit_over() -> ApiError {
        let text = Text::new("limit には 500 以下の値を指定してください。", "limit must be 500 or less.");
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_QU01", text)
    }

    pub(crate) fn offset_over() -> ApiError {
        let text = Text::new("offset には 10,000 以下の値を指定してください。", "offset must be 10,000 or less.");
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_QU02", text)
    }

    pub(crate) fn query_field_not_found(code: &str) -> ApiError {
        let text = Text::new(
            format!("指定されたフィールド({code})が見つかりません。"),
            format!("Specified field ({code}) not found."),
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_IQ11", text)
    }

    pub(crate) fn query_operator(field_type: &str, op: &str) -> ApiError {
        let text = Text::new(
            format!("{field_type}フィールドのフィールドタイプには演算子{op}を使用できません。"),
            format!("The operator {op} cannot be used for the field type {field_type}."),
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_IQ03", text)
    }

    pub(crate) fn status_action_failed() -> ApiError {
        let text = Text::new(
            "ステータスの変更に失敗しました。ほかのユーザーがステータス、またはステータスの設定を変更した可能性があります。",
            "Failed to update the status. The settings or the status itself may have been changed by someone.",
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_IL03", text)
    }

    /// Text not confirmed.
    pub(crate) fn process_disabled() -> ApiError {
        let text = Text::new(
            "ステータスの変更に失敗しました。プロセス管理機能が無効になっています。",
            "Failed to update the status. The process management feature is disabled.",
        );
        ApiError::new(StatusCode::BAD_REQUEST, "GAIA_ST02", text)
    }

    pub(crate) fn bad_json() -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "CB_IJ01", Text::new("不正なJSON文字列です。", "Invalid JSON string."))
    }

    pub(crate) fn illegal_request() -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "CB_IL02", Text::new("不正なリクエストです。", "Illegal request."))
    }

    /// Japanese text not confirmed.
    pub(crate) fn too_many_requests() -> ApiError {
        let text = Text::new(
            "同時に処理できるリクエスト数の上限を超えています。",
            "The number of concurrent requests exceeds the limit.",
        );
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "GAIA_TO04", text)
    }

    /// An API (or method) kintone has but the fake does not model: said plainly rather than guessed.
    pub(crate) fn unsupported(method: &str, path: &str) -> ApiError {
        let text = Text::new(
            format!("renkei の kintone フェイクは {method} {path} を扱いません。"),
            format!("The renkei kintone fake does not model {method} {path}."),
        );
        ApiError::new(StatusCode::NOT_FOUND, "FAKE_UNSUPPORTED", text)
    }

    /// A failure queued by `FakeKintone::fail_next`, with kintone's text for the codes the spec names.
    pub(crate) fn injected(status: u16, code: &str) -> ApiError {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match code {
            "GAIA_TO04" => ApiError { status, ..ApiError::too_many_requests() },
            "GAIA_DA02" => ApiError::new(
                status,
                code,
                Text::new(
                    "データベースがロックされているため、操作に失敗しました。時間をおいて再度お試しください。",
                    "Failed to operate because the database is locked. Please try again later.",
                ),
            ),
            _ => ApiError::new(
                status,
                code,
                Text::new("予期しないエラーが発生しました。", "An unexpected error has occurred."),
            ),
        }
    }

    pub(crate) fn in_bulk(mut self, index: usize, len: usize) -> ApiError {
        self.bulk = Some((index, len));
        self
    }

    pub(crate) fn body(&self, lang: Lang) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("id".into(), json!(error_id()));
        body.insert("message".into(), json!(self.message.get(lang)));
        if let Some(errors) = &self.errors {
            body.insert("errors".into(), errors.to_json(lang));
        }
        match self.bulk {
            // bulkRequest answers all-or-nothing: the failing index holds the error, every other one `{}`.
            Some((index, len)) => {
                let results: Vec<Value> =
                    (0..len).map(|i| if i == index { Value::Object(body.clone()) } else { json!({}) }).collect();
                json!({ "results": results })
            }
            None => Value::Object(body),
        }
    }
}

/// kintone gives every error a random id (20 characters, for support requests). The fake's need not be
/// unpredictable, only distinct, so a counter mixed by splitmix64 does.
fn error_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0x5eed);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut out = String::with_capacity(20);
    for _ in 0..20 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.push(ALPHABET[(z % ALPHABET.len() as u64) as usize] as char);
    }
    out
}
