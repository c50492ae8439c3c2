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
    let sources: IndexMap<Name, Source> = cx.entries(&root.key("sources"));
    let destinations: IndexMap<Name, Destination> = cx.entries(&root.key("destinations"));
    let flows: IndexMap<Name, Flow> = cx.entries(&root.key("flows"));
    if doc.get(&root.key("subscriptions")).is_some() {
        cx.problem(
            &root.key("subscriptions"),
            Msg::new(
                "subscriptions (signed outbound webhooks) are not available in this version yet",
                "サブスクリプション（署名付き送信 Webhook）はこのバージョンではまだ使えません",
            ),
        );
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
        if let Some(auth) = &src.auth {
            if auth.token.is_none() && auth.basic.is_none() {
                cx.problem(
                    &p.key("auth"),
                    Msg::new("auth needs `token` or `basic`", "auth には token か basic を指定してください"),
                );
            }
        }
        if src.verify.is_some() {
            cx.problem(
                &p.key("verify"),
                Msg::new(
                    "callback verification is not available in this version yet",
                    "コールバックによる検証はこのバージョンではまだ使えません",
                ),
            );
        }
    }

    for (name, dest) in &destinations {
        let p = root.key("destinations").key(name.as_str());
        match dest {
            Destination::Http(h) => {
                if let Some(url) = &h.base_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        cx.problem(&p.key("base_url"), Msg::new("base_url must start with http:// or https://", "base_url は http:// か https:// で始めてください"));
                    }
                }
                if h.concurrency == 0 {
                    cx.problem(&p.key("concurrency"), Msg::new("concurrency must be at least 1", "concurrency は 1 以上にしてください"));
                }
            }
            Destination::Kintone(_) => cx.problem(
                &p.key("type"),
                Msg::new(
                    "kintone destinations are not available in this version yet; use type: http with kintone's REST API meanwhile",
                    "kintone 連携先はこのバージョンではまだ使えません。当面は type: http で kintone の REST API を呼んでください",
                ),
            ),
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

    let mut secrets: Vec<String> = env_references(text).into_iter().filter_map(|v| env(&v)).collect();
    secrets.extend(server.admin_token.iter().map(|s| s.expose().to_owned()));
    for src in sources.values() {
        if let Some(auth) = &src.auth {
            secrets.extend(auth.token.iter().map(|s| s.expose().to_owned()));
            secrets.extend(auth.basic.iter().map(|b| b.password.expose().to_owned()));
        }
    }
    for dest in destinations.values() {
        if let Destination::Http(HttpDestination { auth: Some(auth), .. }) = dest {
            secrets.push(match auth {
                HttpAuth::Basic(b) => b.password.expose().to_owned(),
                HttpAuth::Bearer(t) => t.expose().to_owned(),
                HttpAuth::Header { value, .. } => value.expose().to_owned(),
            });
        }
    }

    Ok(Loaded {
        config: Config { server, storage, network, history, worker, tables, sources, destinations, flows },
        engine,
        redactor: Redactor::new(secrets),
        text: text.to_owned(),
    })
}

/// Names of the environment variables a config text refers to: their values are secrets by assumption.
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
        if let Destination::Http(h) = dest {
            for field in ["action", "key", "record"] {
                let set = match field {
                    "action" => step.action.is_some(),
                    "key" => step.key.is_some(),
                    _ => step.record.is_some(),
                };
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

fn body_error_ja(e: &crate::body::BodyError) -> String {
    match e {
        crate::body::BodyError::Malformed(m) | crate::body::BodyError::UnsupportedType(m) => m.ja.clone(),
    }
}

#[cfg(test)]
mod tests;
