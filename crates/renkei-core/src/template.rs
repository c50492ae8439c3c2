//! Templates: MiniJinja, compiled once at config load, rendered per event.
//!
//! Three shapes appear in a config: a text template (`"/sheet/deal/{{ body.keyId }}"`), an expression
//! (`when: "body.priority >= 4"`), and a body given as a YAML structure whose leaves are templates. A leaf
//! that is exactly one `{{ expression }}` keeps the expression's type (a number stays a number, a list a
//! list); any other leaf renders to a string. Either way the JSON is built by serde, so a quote or newline
//! in a value can never break it. A body given as one raw template string is rendered with JSON-string
//! escaping (`{{ x }}` inside quotes is safe) and then parsed, so a template that still produces invalid
//! JSON fails that delivery with the position, rather than sending garbage (seed 004's warning).
//!
//! Undefined values are errors when printed (`SemiStrict`): a typo in a field name fails the delivery with
//! a message instead of silently sending an empty string. `{% if body.x is defined %}` and
//! `body.x | default('')` are the ways to say "optional".

use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use crate::config::{Expr, Table, Tmpl};
use crate::types::Name;

/// A template's name in the environment is its kind's prefix and its source, so a text template, a raw JSON body
/// and an expression of the same text never take one another's place.
const TEXT_PREFIX: &str = "text:";
const JSON_PREFIX: &str = "json:";
/// An expression is kept compiled as a template of this name and the expression, which sets [`EXPR_VALUE`].
const EXPR_PREFIX: &str = "expr:";
const EXPR_VALUE: &str = "__renkei_value";

/// All of a config's templates, compiled, with the lookup tables they may read.
pub struct Engine {
    env: Environment<'static>,
    /// The same environment with chainable undefined values: rendering a template here against an empty
    /// context finds names MiniJinja only resolves at render time (filters, tests, functions), so a
    /// misspelt filter is a load error, not a failed delivery.
    probe: Environment<'static>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    pub fn new(tables: Arc<IndexMap<Name, Table>>) -> Engine {
        let mut probe = Self::environment(tables.clone());
        probe.set_undefined_behavior(UndefinedBehavior::Chainable);
        let mut env = Self::environment(tables);
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        Engine { env, probe }
    }

    fn environment(tables: Arc<IndexMap<Name, Table>>) -> Environment<'static> {
        let mut env = Environment::new();
        // A render may take this many engine steps: far more than any mapping needs, far less than a loop that
        // would hold a worker (or a config edit, whose templates are test-rendered) for minutes.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|name| {
            if name.starts_with(JSON_PREFIX) {
                AutoEscape::Custom("json-string")
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(json_string_formatter);
        env.add_function("lookup", move |table: String, key: Value| lookup(&tables, &table, &key));
        env.add_filter("date", date_filter);
        env.add_filter("datetime", datetime_filter);
        env.add_filter("wareki", wareki_filter);
        env
    }

    /// Renders a newly added template in the probe environment; only "unknown name" errors count.
    fn probe(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.probe.add_template_owned(name.to_owned(), source.to_owned()).map_err(describe)?;
        let tmpl = self.probe.get_template(name).map_err(describe)?;
        match tmpl.render(minijinja::context! {}) {
            Err(e) if is_unknown_name(&e) || e.kind() == ErrorKind::OutOfFuel => Err(describe(e)),
            _ => Ok(()),
        }
    }

    /// Compiles `source` as the template `prefix` + `source` (with `body` as its text) unless it is there;
    /// its name when it was added now.
    fn keep(&mut self, prefix: &str, source: &str, body: impl FnOnce() -> String) -> Result<Option<String>, String> {
        let name = format!("{prefix}{source}");
        if self.env.get_template(&name).is_ok() {
            return Ok(None);
        }
        self.env.add_template_owned(name.clone(), body()).map_err(describe)?;
        Ok(Some(name))
    }

    /// Compiles a text template; the error says what and where.
    pub fn add(&mut self, t: &Tmpl) -> Result<(), String> {
        match self.keep(TEXT_PREFIX, &t.0, || t.0.clone())? {
            Some(name) => self.probe(&name, &t.0),
            None => Ok(()),
        }
    }

    /// Compiles a raw JSON body template (values are JSON-string escaped when printed).
    pub fn add_json(&mut self, t: &Tmpl) -> Result<(), String> {
        match self.keep(JSON_PREFIX, &t.0, || t.0.clone())? {
            Some(name) => self.probe(&name, &t.0),
            None => Ok(()),
        }
    }

    /// Checks that an expression compiles, and keeps it compiled for [`Engine::eval`] and
    /// [`Engine::eval_bool`].
    ///
    /// MiniJinja's compiled `Expression` borrows its environment, so the engine cannot hold one; it keeps the
    /// expression as a template (`{% set v = (expr) %}`) in the environment instead, and reads the value back
    /// from the template's state. Compiling every expression again for each event was 4% of the hub's work end
    /// to end (BENCHMARKS.md, "Ninth session"). What an expression may be is still decided by compiling it as
    /// one, here, so the template is only its compiled form.
    pub fn check_expr(&mut self, e: &str) -> Result<(), String> {
        compile_expression(&self.env, e)?;
        let expr = compile_expression(&self.probe, e)?;
        if let Err(err) = expr.eval(minijinja::context! {}) {
            if is_unknown_name(&err) {
                return Err(describe(err));
            }
        }
        self.keep(EXPR_PREFIX, e, || format!("{{% set {EXPR_VALUE} = ({e}) %}}"))?;
        Ok(())
    }

    /// An expression's value: from its template when [`Engine::check_expr`] kept one, else compiled now.
    fn value_of(&self, e: &str, ctx: &Value) -> Result<Value, String> {
        match self.env.get_template(&format!("{EXPR_PREFIX}{e}")) {
            Ok(t) => {
                let rendered = t.render_captured(ctx).map_err(describe)?;
                Ok(rendered.state().lookup(EXPR_VALUE).unwrap_or(Value::UNDEFINED))
            }
            Err(_) => compile_expression(&self.env, e)?.eval(ctx).map_err(describe),
        }
    }

    /// Renders a text template added with [`Engine::add`].
    pub fn render(&self, t: &Tmpl, ctx: &Value) -> Result<String, String> {
        self.render_text(&t.0, ctx)
    }

    fn render_text(&self, source: &str, ctx: &Value) -> Result<String, String> {
        let tmpl = self.env.get_template(&format!("{TEXT_PREFIX}{source}")).map_err(describe)?;
        tmpl.render(ctx).map_err(describe)
    }

    /// Renders a raw JSON body template added with [`Engine::add_json`] and parses the result.
    pub fn render_json(&self, t: &Tmpl, ctx: &Value) -> Result<serde_json::Value, String> {
        let tmpl = self.env.get_template(&format!("{JSON_PREFIX}{}", t.0)).map_err(describe)?;
        let text = tmpl.render(ctx).map_err(describe)?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "the rendered body is not valid JSON (line {}, column {}): {e}; rendered text: {}",
                e.line(),
                e.column(),
                clip(&text, 500)
            )
        })
    }

    /// Evaluates an expression to a JSON value.
    pub fn eval(&self, e: &str, ctx: &Value) -> Result<serde_json::Value, String> {
        let value = self.value_of(e, ctx)?;
        if value.is_undefined() {
            return Err(format!("`{e}` is undefined"));
        }
        serde_json::to_value(&value).map_err(|err| format!("`{e}`: {err}"))
    }

    /// Evaluates a `when` expression.
    pub fn eval_bool(&self, e: &Expr, ctx: &Value) -> Result<bool, String> {
        Ok(self.value_of(&e.0, ctx)?.is_true())
    }

    /// Renders a body given as a YAML structure: leaves are templates, keys are literal.
    pub fn render_tree(&self, tree: &serde_json::Value, ctx: &Value) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        Ok(match tree {
            J::String(s) => match single_expression(s) {
                Some(expr) => self.eval(expr, ctx)?,
                None if s.contains("{{") || s.contains("{%") => J::String(self.render_text(s, ctx)?),
                None => J::String(s.clone()),
            },
            J::Array(items) => J::Array(items.iter().map(|v| self.render_tree(v, ctx)).collect::<Result<_, _>>()?),
            J::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    let rendered = self.render_tree(v, ctx).map_err(|e| format!("{k}: {e}"))?;
                    out.insert(k.clone(), rendered);
                }
                J::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Compiles every template in a body tree; returns the first problem with the key where it is.
    pub fn add_tree(&mut self, tree: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value as J;
        match tree {
            J::String(s) => match single_expression(s) {
                Some(expr) => self.check_expr(expr),
                None if s.contains("{{") || s.contains("{%") => self.add(&Tmpl(s.clone())),
                None => Ok(()),
            },
            J::Array(items) => items.iter().try_for_each(|v| self.add_tree(v)),
            J::Object(map) => map.iter().try_for_each(|(k, v)| self.add_tree(v).map_err(|e| format!("{k}: {e}"))),
            _ => Ok(()),
        }
    }
}

/// `{{ body.d | date }}` → `2026-11-22`; `{{ body.d | date('%Y/%m/%d') }}` → `2026/11/22`. Reads every
/// common Japanese form (`2026年11月22日`, `R8.11.22`, `令和8年11月22日`, `2026/11/22`, ISO).
fn date_filter(value: String, fmt: Option<String>) -> Result<String, Error> {
    let d = crate::dates::parse_date(&value)
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("date: `{value}` is not a date")))?;
    Ok(crate::dates::format_date(d, fmt.as_deref().unwrap_or("%Y-%m-%d")))
}

/// `{{ body.t | datetime }}` → RFC 3339 in UTC (`2026-11-22T01:30:00Z`, what kintone wants);
/// `{{ body.t | datetime('%Y-%m-%d %H:%M') }}` formats in JST. A time without an offset is JST.
fn datetime_filter(value: String, fmt: Option<String>) -> Result<String, Error> {
    let t = crate::dates::parse_datetime(&value)
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("datetime: `{value}` is not a date-time")))?;
    Ok(match fmt {
        None => t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(f) => {
            let local = t.with_timezone(&crate::dates::jst());
            let mut out = String::new();
            use std::fmt::Write as _;
            write!(out, "{}", local.format(&f))
                .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("datetime: bad format `{f}`")))?;
            out
        }
    })
}

/// `{{ body.d | wareki }}` → `令和8年11月22日`.
fn wareki_filter(value: String) -> Result<String, Error> {
    crate::dates::parse_date(&value).and_then(crate::dates::wareki).ok_or_else(|| {
        Error::new(ErrorKind::InvalidOperation, format!("wareki: `{value}` is not a date in the era range"))
    })
}

/// Engine steps one render may take (see [`Engine::new`]).
pub const TEMPLATE_FUEL: u64 = 10_000_000;

fn is_unknown_name(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction)
}

/// `{{ expr }}` alone (surrounding spaces allowed) gives `expr`.
pub fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

fn lookup(tables: &IndexMap<Name, Table>, table: &str, key: &Value) -> Result<Value, Error> {
    let t = tables
        .get(table)
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("lookup: there is no table `{table}`")))?;
    let key = match key.as_str() {
        Some(s) => s.to_owned(),
        None => key.to_string(),
    };
    Ok(t.rows.get(&key).map(Value::from_serialize).unwrap_or(Value::from(())))
}

/// Prints values inside a raw JSON body as the content of a JSON string: quotes, backslashes and control
/// characters escaped. Lists and maps print as JSON. Elsewhere, MiniJinja's default.
fn json_string_formatter(out: &mut minijinja::Output, state: &minijinja::State, value: &Value) -> Result<(), Error> {
    if !matches!(state.auto_escape(), AutoEscape::Custom("json-string")) || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    if value.is_undefined()
        && matches!(state.undefined_behavior(), UndefinedBehavior::SemiStrict | UndefinedBehavior::Strict)
    {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    let text = if let Some(s) = value.as_str() {
        let quoted = serde_json::to_string(s).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
        quoted[1..quoted.len() - 1].to_owned()
    } else if value.is_none() || value.is_undefined() {
        String::new()
    } else if matches!(value.kind(), minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Map) {
        serde_json::to_string(value).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?
    } else {
        value.to_string()
    };
    out.write_str(&text).map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
}

/// A MiniJinja error as one line: what went wrong, and where in which template.
fn describe(e: Error) -> String {
    let mut msg = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        let name = e.name().unwrap_or("");
        let name = [TEXT_PREFIX, JSON_PREFIX, EXPR_PREFIX].iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
        msg.push_str(&format!(" (line {line} of `{}`)", clip(name, 120)));
    }
    msg
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Earlier steps' responses, reachable as `steps[0]` and, for a named step, `steps.NAME`.
#[derive(Debug, Default)]
pub struct Steps {
    pub outputs: Vec<(Option<String>, Value)>,
}

impl Steps {
    /// The outputs of `flow`'s finished steps, each reachable by index and by its step's `name`.
    pub fn of(flow: &crate::config::Flow, outputs: &[serde_json::Value]) -> Arc<Steps> {
        Arc::new(Steps {
            outputs: outputs
                .iter()
                .enumerate()
                .map(|(i, o)| (flow.steps.get(i).and_then(|s| s.name.clone()), Value::from_serialize(o)))
                .collect(),
        })
    }
}

impl Object for Steps {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = key.as_usize() {
            return self.outputs.get(i).map(|(_, v)| v.clone());
        }
        let name = key.as_str()?;
        self.outputs.iter().find(|(n, _)| n.as_deref() == Some(name)).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Seq(self.outputs.len())
    }
}

/// Compiles an expression (`when:`, `success_when:`...). Template delimiters have no place in one, and a stray
/// `}}` panics inside MiniJinja 2.24's lexer (found by `fuzz/`'s `template` target), so they are refused with
/// a message first; a panic of the compiler on some other input is turned into an error too, never a crash.
fn compile_expression<'env, 'source>(
    env: &'env minijinja::Environment<'env>,
    e: &'source str,
) -> Result<minijinja::Expression<'env, 'source>, String>
where
    'env: 'source,
{
    if ["{{", "}}", "{%", "%}", "{#", "#}"].iter().any(|d| e.contains(d)) {
        return Err(format!(
            "`{e}` is an expression: write it without {{{{ }}}} or {{% %}} (e.g. `body.priority >= 4`)"
        ));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.compile_expression(e)))
        .map_err(|_| format!("`{e}` could not be compiled (the template engine failed on it)"))?
        .map_err(describe)
}

#[cfg(test)]
mod tests;
