//! From YAML text to a [`Config`] and its compiled templates, or to every problem in the file.
//!
//! Problems are collected, not returned at the first one: each section and each named entry is read on its
//! own, so one bad flow does not hide the next. The caller does the I/O: it passes the text, a way to read
//! environment variables, and a way to read files named by the config (CSV tables).

use std::collections::BTreeSet;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;

use super::yaml::{self, Path, Problem, YamlDoc};
use super::*;
use crate::body::{parse_body, BodyFormat};
use crate::message::Msg;
use crate::redact::Redactor;
use crate::template::Engine;

/// A config ready to run: the model, its compiled templates, and what must never be shown.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub engine: Engine,
    pub redactor: Redactor,
    /// The file as written (with `${VAR}` references, not their values).
    pub text: String,
}

const SECTIONS: &[&str] = &[
    "server",
    "storage",
    "network",
    "history",
    "worker",
    "tables",
    "sources",
    "destinations",
    "flows",
    "subscriptions",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

pub fn load(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Loaded, Vec<Problem>> {
    let doc = yaml::parse(text, env)?;
    let mut cx = Cx { doc: &doc, problems: Vec::new() };
    let root = Path::root();

    match &doc.value {
        serde_json::Value::Object(map) => {
            for key in map.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    cx.problem(
                        &root.key(key),
                        Msg::new(
                            format!("unknown section `{key}`, expected one of: {}", SECTIONS.join(", ")),
                            format!("不明なセクション `{key}` です。使えるセクション: {}", SECTIONS.join(", ")),
                        ),
                    );
                }
            }
        }
        serde_json::Value::Null => {}
        _ => {
            cx.problem(
                &root,
                Msg::new(
                    "the config must be a mapping of sections",
                    "設定ファイルはセクションのマッピングでなければなりません",
                ),
            );
            return Err(cx.problems);
        }
    }

    let server: Server = cx.section(&root.key("server"));
    let storage: String = cx.section_or(&root.key("storage"), || "sqlite://renkei.db".to_owned());
    let network: Network = cx.section(&root.key("network"));
    let history: History = cx.section(&root.key("history"));
    let worker: Worker = cx.section(&root.key("worker"));
    let table_specs: IndexMap<Name, TableSpec> = cx.entries(&root.key("tables"));
    let mut sources: IndexMap<Name, Source> = cx.entries(&root.key("sources"));
    for src in sources.values_mut() {
        if let Some(preset) = src.preset {
            src.event_type.get_or_insert_with(|| Tmpl(preset.event_type().to_owned()));
            src.dedupe.get_or_insert_with(|| Tmpl(preset.dedupe().to_owned()));
        }
        // A signed request sent again is a replay: its message id (or its signature) is the dedupe key
        // unless the source names one, so a captured request cannot be run twice within the window.
        if let Some(auth) = &src.auth {
            if auth.standard_webhooks.is_some() {
                src.dedupe.get_or_insert_with(|| Tmpl("{{ headers['webhook-id'] | default('') }}".into()));
            } else if let Some(h) = &auth.hmac {
                let name = h.header.to_ascii_lowercase().replace('\'', "");
                src.dedupe.get_or_insert_with(|| Tmpl(format!("{{{{ headers['{name}'] | default('') }}}}")));
            }
        }
    }
    let mut destinations: IndexMap<Name, Destination> = cx.entries(&root.key("destinations"));
    let mut flows: IndexMap<Name, Flow> = cx.entries(&root.key("flows"));
    let subscriptions: IndexMap<Name, Subscription> = cx.entries(&root.key("subscriptions"));
    let mut url_secrets = Vec::new();
    for (name, sub) in &subscriptions {
        let p = root.key("subscriptions").key(name.as_str());
        match super::subscriptions::expand(name, sub) {
            Ok(x) => {
                if flows.contains_key(x.flow_name.as_str()) || destinations.contains_key(x.destination_name.as_str()) {
                    cx.problem(
                        &p,
                        Msg::new(
                            format!("a flow or destination is already named `{}`", x.flow_name),
                            format!("`{}` という名前のフローか連携先がすでにあります", x.flow_name),
                        ),
                    );
                    continue;
                }
                url_secrets.extend(x.secrets);
                flows.insert(x.flow_name, x.flow);
                destinations.insert(x.destination_name, x.destination);
            }
            Err(m) => cx.problem(&p.key("url"), m),
        }
    }
    if !(storage.starts_with("sqlite:") || storage.starts_with("postgres://") || storage.starts_with("postgresql://")) {
        cx.problem(
            &root.key("storage"),
            Msg::new(
                "storage must be a sqlite://FILE or postgres://… URL",
                "storage には sqlite://ファイル または postgres://… の URL を指定してください",
            ),
        );
    }
    // Pool settings ride on the URL; the store reads them with the same function, so what passes here connects.
    if storage.starts_with("postgres://") || storage.starts_with("postgresql://") {
        if let Err(m) = super::storage::PgSettings::from_url(&storage) {
            cx.problem(&root.key("storage"), m);
        }
    } else if storage.starts_with("sqlite:") {
        if let Err(m) = super::storage::SqliteSettings::from_url(&storage) {
            cx.problem(&root.key("storage"), m);
        }
    }

    let mut tables = IndexMap::new();
    for (name, spec) in &table_specs {
        if let Some(t) = cx.table(&root.key("tables").key(name.as_str()), spec, read_file) {
            tables.insert(name.clone(), t);
        }
    }
    let mut engine = Engine::new(Arc::new(tables.clone()));

    for (name, src) in &sources {
        let p = root.key("sources").key(name.as_str());
        if let Some(t) = &src.event_type {
            cx.compile(&p.key("event_type"), engine.add(t));
        }
        if let Some(t) = &src.dedupe {
            cx.compile(&p.key("dedupe"), engine.add(t));
        }
        if let Err(m) = src.csv.validate() {
            cx.problem(&p.key("csv"), m);
        }
        if ![200, 201, 202, 204].contains(&src.ack_status) {
            cx.problem(
                &p.key("ack_status"),
                Msg::new(
                    "ack_status must be 200, 201, 202 or 204",
                    "ack_status は 200・201・202・204 のいずれかにしてください",
                ),
            );
        }
        if let Some(auth) = &src.auth {
            let any = auth.token.is_some()
                || auth.basic.is_some()
                || auth.standard_webhooks.is_some()
                || auth.hmac.is_some()
                || !auth.ip_allow.is_empty();
            if !any {
                cx.problem(
                    &p.key("auth"),
                    Msg::new(
                        "auth needs at least one of token, basic, standard_webhooks, hmac or ip_allow",
                        "auth には token・basic・standard_webhooks・hmac・ip_allow のいずれかが必要です",
                    ),
                );
            }
            if let Some(w) = &auth.standard_webhooks {
                for (i, secret) in w.secrets.iter().enumerate() {
                    if crate::signing::standard_sign(secret.expose(), "x", 0, b"").is_err() {
                        cx.problem(
                            &p.key("auth").key("standard_webhooks").key("secrets").index(i),
                            Msg::new(
                                "not a `whsec_` secret (base64 after the prefix)",
                                "whsec_ で始まる base64 の秘密鍵ではありません",
                            ),
                        );
                    }
                }
            }
        }
        if let Some(v) = &src.verify {
            let vp = p.key("verify");
            if !(v.url.starts_with("https://") || v.url.starts_with("http://")) {
                cx.problem(
                    &vp.key("url"),
                    Msg::new("url must start with https://", "url は https:// で始めてください"),
                );
            }
            for (k, t) in &v.form {
                cx.compile(&vp.key("form").key(k), engine.add(t));
            }
            if let Some(json) = &v.json {
                cx.compile(&vp.key("json"), engine.add_tree(json));
            }
            cx.compile(&vp.key("valid_when"), engine.check_expr(&v.valid_when.0));
        }
    }

    for (name, dest) in &destinations {
        let p = root.key("destinations").key(name.as_str());
        match dest {
            Destination::Http(h) => {
                if let Some(url) = &h.base_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        cx.problem(
                            &p.key("base_url"),
                            Msg::new(
                                "base_url must start with http:// or https://",
                                "base_url は http:// か https:// で始めてください",
                            ),
                        );
                    }
                }
                if h.concurrency == 0 {
                    cx.problem(
                        &p.key("concurrency"),
                        Msg::new("concurrency must be at least 1", "concurrency は 1 以上にしてください"),
                    );
                }
            }
            Destination::Kintone(k) => cx.kintone_destination(&p, k),
        }
    }

    for (name, flow) in &flows {
        let p = root.key("flows").key(name.as_str());
        if !sources.contains_key(flow.source.as_str()) {
            cx.problem(
                &p.key("source"),
                Msg::new(
                    format!("there is no source `{}`", flow.source),
                    format!("ソース `{}` がありません", flow.source),
                ),
            );
        }
        if let Some(e) = &flow.when {
            cx.compile(&p.key("when"), engine.check_expr(&e.0));
        }
        if let Some(t) = &flow.order_key {
            cx.compile(&p.key("order_key"), engine.add(t));
        }
        if let Some(t) = &flow.skip_echo {
            cx.compile(&p.key("skip_echo"), engine.add(t));
        }
        if flow.retry.max_attempts == 0 {
            cx.problem(
                &p.key("retry").key("max_attempts"),
                Msg::new("max_attempts must be at least 1", "max_attempts は 1 以上にしてください"),
            );
        }
        if flow.retry.initial > flow.retry.max {
            cx.problem(
                &p.key("retry"),
                Msg::new("retry.initial is longer than retry.max", "retry.initial が retry.max より長くなっています"),
            );
        }
        if flow.steps.is_empty() {
            cx.problem(
                &p.key("steps"),
                Msg::new("a flow needs at least one step", "フローには 1 つ以上のステップが必要です"),
            );
        }
        for (i, step) in flow.steps.iter().enumerate() {
            cx.step(&mut engine, &p.key("steps").index(i), step, &destinations);
        }
    }

    if !cx.problems.is_empty() {
        cx.problems.sort_by_key(|p| p.line.unwrap_or(0));
        return Err(cx.problems);
    }

    // Values of variables named like credentials are masked wherever they appear; values put in credential
    // fields (tokens, passwords, secrets) are masked whatever the variable is called (below). A base URL from
    // `${ESM_BASE_URL}` stays readable in the history.
    let mut secrets: Vec<String> =
        env_references(text).into_iter().filter(|v| secret_name(v)).filter_map(|v| env(&v)).collect();
    secrets.extend(url_secrets);
    secrets.extend(server.admin_token.iter().map(|s| s.expose().to_owned()));
    for src in sources.values() {
        if let Some(auth) = &src.auth {
            secrets.extend(auth.token.iter().map(|s| s.expose().to_owned()));
            secrets.extend(auth.basic.iter().map(|b| b.password.expose().to_owned()));
            secrets.extend(auth.standard_webhooks.iter().flat_map(|w| w.secrets.iter().map(|s| s.expose().to_owned())));
            secrets.extend(auth.hmac.iter().map(|h| h.secret.expose().to_owned()));
        }
    }
    for dest in destinations.values() {
        match dest {
            Destination::Http(HttpDestination { auth: Some(auth), .. }) => secrets.push(match auth {
                HttpAuth::Basic(b) => b.password.expose().to_owned(),
                HttpAuth::Bearer(t) => t.expose().to_owned(),
                HttpAuth::Header { value, .. } => value.expose().to_owned(),
            }),
            Destination::Http(_) => {}
            Destination::Kintone(k) => {
                secrets.extend(k.api_token.iter().chain(&k.api_tokens).map(|t| t.expose().to_owned()));
                secrets.extend(k.login.iter().chain(&k.basic).map(|b| b.password.expose().to_owned()));
            }
        }
    }

    // A literal value of a header that carries credentials by name (`X-Api-Key: ...`) is one too.
    fn credential_headers<'a>(headers: impl Iterator<Item = (&'a String, &'a str)>) -> Vec<String> {
        headers
            .filter(|(k, v)| Redactor::is_secret_header(k) && !v.contains("{{"))
            .map(|(_, v)| v.trim_start_matches("Bearer ").trim_start_matches("Basic ").to_owned())
            .collect()
    }
    for dest in destinations.values() {
        if let Destination::Http(h) = dest {
            secrets.extend(credential_headers(h.headers.iter().map(|(k, v)| (k, v.as_str()))));
        }
    }
    for flow in flows.values() {
        for step in &flow.steps {
            secrets.extend(credential_headers(step.headers.iter().map(|(k, v)| (k, v.0.as_str()))));
            secrets.extend(step.sign.iter().flat_map(|s| s.all().map(|x| x.expose().to_owned())));
        }
    }

    Ok(Loaded {
        config: Config {
            server,
            storage,
            network,
            history,
            worker,
            tables,
            sources,
            destinations,
            flows,
            subscriptions,
        },
        engine,
        redactor: Redactor::new(secrets),
        text: text.to_owned(),
    })
}

/// Whether an environment variable's name says it holds a credential.
fn secret_name(name: &str) -> bool {
    const WORDS: &[&str] =
        &["TOKEN", "SECRET", "PASS", "PWD", "KEY", "AUTH", "CRED", "PRIVATE", "COOKIE", "SESSION", "DSN", "SIG"];
    let upper = name.to_ascii_uppercase();
    WORDS.iter().any(|w| upper.contains(w))
}

/// Names of the environment variables a config text refers to.
fn env_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        let end = rest.find(['}', ':']).unwrap_or(rest.len());
        let name = &rest[..end];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(name.to_owned());
        }
    }
    names
}

struct Cx<'a> {
    doc: &'a YamlDoc,
    problems: Vec<Problem>,
}

impl Cx<'_> {
    fn problem(&mut self, path: &Path, message: Msg) {
        self.problems.push(Problem { path: path.to_string(), line: self.doc.line_of(path), message });
    }

    fn compile(&mut self, path: &Path, result: Result<(), String>) {
        if let Err(e) = result {
            self.problem(path, Msg::new(format!("template error: {e}"), format!("テンプレートのエラー: {e}")));
        }
    }

    fn section<T: DeserializeOwned + Default>(&mut self, path: &Path) -> T {
        self.section_or(path, T::default)
    }

    fn section_or<T: DeserializeOwned>(&mut self, path: &Path, default: impl FnOnce() -> T) -> T {
        match self.doc.get(path) {
            None | Some(serde_json::Value::Null) => default(),
            Some(_) => match self.doc.deserialize_at(path) {
                Ok(v) => v,
                Err(p) => {
                    self.problems.push(p);
                    default()
                }
            },
        }
    }

    /// A named map section, each entry read on its own.
    fn entries<T: DeserializeOwned>(&mut self, path: &Path) -> IndexMap<Name, T> {
        let mut out = IndexMap::new();
        let keys: Vec<String> = match self.doc.get(path) {
            None | Some(serde_json::Value::Null) => return out,
            Some(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            Some(_) => {
                self.problem(
                    path,
                    Msg::new("expected a mapping of names to entries", "名前と設定のマッピングを指定してください"),
                );
                return out;
            }
        };
        for key in keys {
            let p = path.key(&key);
            let name = match Name::parse(&key) {
                Ok(n) => n,
                Err(e) => {
                    self.problem(
                        &p,
                        Msg::new(
                            e,
                            format!("`{key}` は名前に使えません。英数字・`-`・`_` の 1〜64 文字にしてください"),
                        ),
                    );
                    continue;
                }
            };
            match self.doc.deserialize_at(&p) {
                Ok(v) => {
                    out.insert(name, v);
                }
                Err(problem) => self.problems.push(problem),
            }
        }
        out
    }

    fn table(
        &mut self,
        p: &Path,
        spec: &TableSpec,
        read_file: &dyn Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Option<Table> {
        let rows: Vec<serde_json::Value> = match (&spec.rows, &spec.file) {
            (Some(rows), None) => {
                rows.iter().map(|r| serde_json::Value::Object(r.clone().into_iter().collect())).collect()
            }
            (None, Some(file)) => {
                let bytes = match read_file(file) {
                    Ok(b) => b,
                    Err(e) => {
                        self.problem(
                            &p.key("file"),
                            Msg::new(format!("cannot read `{file}`: {e}"), format!("`{file}` を読めません: {e}")),
                        );
                        return None;
                    }
                };
                match parse_body(None, &bytes, BodyFormat::Csv, &spec.csv) {
                    Ok(parsed) => match parsed.value {
                        serde_json::Value::Array(rows) => rows,
                        _ => Vec::new(),
                    },
                    Err(e) => {
                        self.problem(
                            &p.key("file"),
                            Msg::new(format!("{file}: {e}"), format!("{file}: {}", body_error_ja(&e))),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.problem(
                    p,
                    Msg::new(
                        "a table needs exactly one of `rows` or `file`",
                        "テーブルには rows か file のどちらか一方を指定してください",
                    ),
                );
                return None;
            }
        };
        let mut table = Table { key: spec.key.clone(), rows: IndexMap::new() };
        for (i, row) in rows.into_iter().enumerate() {
            let serde_json::Value::Object(row) = row else { continue };
            let key = match row.get(&spec.key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) if !v.is_null() => v.to_string(),
                _ => {
                    self.problem(
                        &p.key("rows").index(i),
                        Msg::new(
                            format!("row {} has no `{}` column", i + 1, spec.key),
                            format!("{} 行目にキー列 `{}` がありません", i + 1, spec.key),
                        ),
                    );
                    continue;
                }
            };
            table.rows.insert(key, row);
        }
        Some(table)
    }

    fn step(&mut self, engine: &mut Engine, p: &Path, step: &Step, destinations: &IndexMap<Name, Destination>) {
        let Some(dest) = destinations.get(step.to.as_str()) else {
            self.problem(
                &p.key("to"),
                Msg::new(
                    format!("there is no destination `{}`", step.to),
                    format!("連携先 `{}` がありません", step.to),
                ),
            );
            return;
        };
        if let Err(m) = step.csv.validate() {
            self.problem(&p.key("csv"), m);
        }
        if let Some(sign) = &step.sign {
            if sign.all().next().is_none() {
                self.problem(
                    &p.key("sign"),
                    Msg::new("sign needs `secret` or `secrets`", "sign には secret か secrets が必要です"),
                );
            }
            for secret in sign.all() {
                if crate::signing::standard_sign(secret.expose(), "x", 0, b"").is_err() {
                    self.problem(
                        &p.key("sign"),
                        Msg::new(
                            "not a `whsec_` secret (base64 after the prefix)",
                            "whsec_ で始まる base64 の秘密鍵ではありません",
                        ),
                    );
                }
            }
        }
        let method = step.method().to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            self.problem(
                &p.key("method"),
                Msg::new(
                    format!("`{method}` is not an HTTP method ({})", METHODS.join(", ")),
                    format!("`{method}` は HTTP メソッドではありません（{}）", METHODS.join(", ")),
                ),
            );
        }
        match dest {
            Destination::Http(h) => {
                let kintone_only = [
                    ("action", step.action.is_some()),
                    ("id", step.id.is_some()),
                    ("key", step.key.is_some()),
                    ("record", step.record.is_some()),
                    ("status", step.status.is_some()),
                    ("assignee", step.assignee.is_some()),
                    ("comment", step.comment.is_some()),
                ];
                for (field, set) in kintone_only {
                    if set {
                        self.problem(
                            &p.key(field),
                            Msg::new(
                                format!("`{field}` is for kintone destinations; `{}` is an http destination", step.to),
                                format!("`{field}` は kintone 連携先用です。`{}` は http 連携先です", step.to),
                            ),
                        );
                    }
                }
                match (&step.url, &step.path, &h.base_url) {
                    (Some(_), Some(_), _) => self.problem(
                        p,
                        Msg::new(
                            "give either `url` or `path`, not both",
                            "url と path はどちらか一方だけを指定してください",
                        ),
                    ),
                    (None, _, None) => self.problem(
                        p,
                        Msg::new(
                            format!("destination `{}` has no base_url, so this step needs a `url`", step.to),
                            format!("連携先 `{}` に base_url がないため、このステップには url が必要です", step.to),
                        ),
                    ),
                    _ => {}
                }
            }
            Destination::Kintone(_) => self.kintone_step(engine, p, step),
        }
        if let Some(t) = &step.echo_key {
            self.compile(&p.key("echo_key"), engine.add(t));
        }
        if let Some(e) = &step.success_when {
            self.compile(&p.key("success_when"), engine.check_expr(&e.0));
        }
        if let Some(t) = &step.url {
            self.compile(&p.key("url"), engine.add(t));
        }
        if let Some(t) = &step.path {
            self.compile(&p.key("path"), engine.add(t));
        }
        for (k, t) in &step.query {
            self.compile(&p.key("query").key(k), engine.add(t));
        }
        for (k, t) in &step.headers {
            self.compile(&p.key("headers").key(k), engine.add(t));
        }
        if let Some(body) = &step.body {
            let result = match body {
                serde_json::Value::String(s)
                    if step.format == OutFormat::Json && crate::template::single_expression(s).is_none() =>
                {
                    engine.add_json(&Tmpl(s.clone()))
                }
                serde_json::Value::String(s) if crate::template::single_expression(s).is_none() => {
                    engine.add(&Tmpl(s.clone()))
                }
                tree => engine.add_tree(tree),
            };
            self.compile(&p.key("body"), result);
        }
    }
}

impl Cx<'_> {
    fn kintone_destination(&mut self, p: &Path, k: &KintoneDestination) {
        match (&k.base_url, &k.subdomain) {
            (Some(_), Some(_)) | (None, None) => self.problem(
                p,
                Msg::new(
                    "give exactly one of `base_url` or `subdomain`",
                    "base_url と subdomain のどちらか一方を指定してください",
                ),
            ),
            (Some(url), None) if !(url.starts_with("https://") || url.starts_with("http://")) => self.problem(
                &p.key("base_url"),
                Msg::new("base_url must start with https://", "base_url は https:// で始めてください"),
            ),
            _ => {}
        }
        let tokens = k.api_token.is_some() || !k.api_tokens.is_empty();
        if tokens == k.login.is_some() {
            self.problem(
                p,
                Msg::new(
                    "give API tokens (`api_token` / `api_tokens`) or a `login`, one of the two",
                    "API トークン（api_token / api_tokens）か login のどちらか一方を指定してください",
                ),
            );
        }
        if k.api_tokens.len() + usize::from(k.api_token.is_some()) > 9 {
            self.problem(
                &p.key("api_tokens"),
                Msg::new("kintone accepts at most 9 API tokens", "API トークンは 9 個までです"),
            );
        }
        if !(1..=100).contains(&k.concurrency) {
            self.problem(
                &p.key("concurrency"),
                Msg::new(
                    "concurrency must be 1 to 100 (kintone's limit per domain)",
                    "concurrency は 1〜100 にしてください（kintone のドメインあたりの上限）",
                ),
            );
        }
        if !(1..=100).contains(&k.batch.max) {
            self.problem(
                &p.key("batch").key("max"),
                Msg::new(
                    "batch.max must be 1 to 100 (kintone's limit per request)",
                    "batch.max は 1〜100 にしてください（kintone の 1 リクエストあたりの上限）",
                ),
            );
        }
        if k.lang != "ja" && k.lang != "en" {
            self.problem(&p.key("lang"), Msg::new("lang must be ja or en", "lang は ja か en にしてください"));
        }
    }

    fn kintone_step(&mut self, engine: &mut Engine, p: &Path, step: &Step) {
        let http_only = [
            ("method", step.method.is_some()),
            ("path", step.path.is_some()),
            ("url", step.url.is_some()),
            ("query", !step.query.is_empty()),
            ("body", step.body.is_some()),
        ];
        for (field, set) in http_only {
            if set {
                self.problem(
                    &p.key(field),
                    Msg::new(
                        format!(
                            "`{field}` is for http destinations; a kintone step says `action`, `record`, `id` or `key`"
                        ),
                        format!(
                            "`{field}` は http 連携先用です。kintone のステップでは action・record・id・key を使います"
                        ),
                    ),
                );
            }
        }
        let Some(action) = step.action else {
            self.problem(
                p,
                Msg::new(
                    "a kintone step needs `action`: add, update, upsert, delete, status or comment",
                    "kintone のステップには action（add・update・upsert・delete・status・comment）が必要です",
                ),
            );
            return;
        };
        let (needs_record, target) = match action {
            KintoneAction::Add => (true, Target::None),
            KintoneAction::Upsert => (true, Target::Key),
            KintoneAction::Update => (true, Target::IdOrKey),
            KintoneAction::Delete | KintoneAction::Status | KintoneAction::Comment => (false, Target::IdOrKey),
        };
        let mut need = |cond: bool, en: String, ja: String| {
            if cond {
                self.problem(p, Msg::new(en, ja));
            }
        };
        need(
            needs_record && step.record.is_none(),
            format!("action `{action}` needs `record`"),
            format!("action {action} には record が必要です"),
        );
        need(
            !needs_record && step.record.is_some(),
            format!("action `{action}` takes no `record`"),
            format!("action {action} には record を指定できません"),
        );
        match target {
            Target::None => need(
                step.id.is_some() || step.key.is_some(),
                "action `add` takes neither `id` nor `key`".into(),
                "action add には id も key も指定できません".into(),
            ),
            Target::Key => need(
                step.key.is_none() || step.id.is_some(),
                "action `upsert` needs `key` (a unique field) and no `id`".into(),
                "action upsert には key（重複禁止のフィールド）が必要で、id は指定できません".into(),
            ),
            Target::IdOrKey => need(
                step.id.is_some() == step.key.is_some(),
                format!("action `{action}` needs exactly one of `id` or `key`"),
                format!("action {action} には id か key のどちらか一方が必要です"),
            ),
        }
        need(
            (action == KintoneAction::Status) != step.status.is_some(),
            "`status` (the process action to run) goes with action `status`, and only there".into(),
            "status（実行するプロセスのアクション）は action status と組み合わせて指定してください".into(),
        );
        need(
            (action == KintoneAction::Comment) != step.comment.is_some(),
            "`comment` goes with action `comment`, and only there".into(),
            "comment は action comment と組み合わせて指定してください".into(),
        );
        for (field, t) in
            [("id", &step.id), ("status", &step.status), ("assignee", &step.assignee), ("comment", &step.comment)]
        {
            if let Some(t) = t {
                self.compile(&p.key(field), engine.add(t));
            }
        }
        if let Some(k) = &step.key {
            self.compile(&p.key("key").key("value"), engine.add(&k.value));
        }
        if let Some(record) = &step.record {
            if !record.is_object() {
                self.problem(
                    &p.key("record"),
                    Msg::new(
                        "`record` maps field codes to values",
                        "record にはフィールドコードと値の対応を書いてください",
                    ),
                );
            }
            self.compile(&p.key("record"), engine.add_tree(record));
        }
    }
}

enum Target {
    None,
    Key,
    IdOrKey,
}

fn body_error_ja(e: &crate::body::BodyError) -> String {
    match e {
        crate::body::BodyError::Malformed(m) | crate::body::BodyError::UnsupportedType(m) => m.ja.clone(),
    }
}

#[cfg(test)]
mod tests;
