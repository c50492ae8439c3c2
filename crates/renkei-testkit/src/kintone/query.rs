//! The `query` parameter of GET records.json: conditions joined by `and`/`or` with parentheses, `order by`,
//! `limit` (at most 500, default 100) and `offset` (at most 10,000), with kintone's answers to mistakes: CB_VA01
//! keyed `query` for bad syntax, GAIA_IQ11 for an unknown field, GAIA_IQ03 for an operator the field type does not
//! take (`=` on a DROP_DOWN, `>` on a text, ...), GAIA_QU01/QU02 for limit/offset over.
//!
//! Not modelled: query functions (`TODAY()`, `LOGINUSER()`, `THIS_MONTH()`, ...) and `is empty`, which fail as
//! syntax errors here; conditions on fields inside tables (GAIA_IQ11 here); time zones of date-only values
//! compared with DATETIME fields. With no `order by` records come newest first (`$id desc`), as in kintone.

use std::cmp::Ordering;

use serde_json::Value;

use super::apps::{App, FieldType};
use super::errors::ApiError;
use super::values::to_utc;

/// kintone's default `limit`.
const DEFAULT_LIMIT: usize = 100;

#[derive(Debug)]
pub(crate) struct Query {
    filter: Option<Expr>,
    order: Vec<(String, bool)>,
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond { field: String, op: Op, values: Vec<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Like,
    NotLike,
    In,
    NotIn,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Like => "like",
            Op::NotLike => "not like",
            Op::In => "in",
            Op::NotIn => "not in",
        }
    }
}

/// How values of a field type compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Num,
    Time,
    Text,
    /// A list of values (CHECK_BOX, USER_SELECT, ...): `in` matches when any of them is listed.
    Multi,
}

fn kind(t: FieldType) -> Kind {
    use FieldType::*;
    match t {
        Number | Calc | RecordNumber => Kind::Num,
        Date | Time | DateTime | CreatedTime | UpdatedTime => Kind::Time,
        CheckBox | MultiSelect | UserSelect | OrganizationSelect | GroupSelect | StatusAssignee | File | Category
        | Subtable => Kind::Multi,
        _ => Kind::Text,
    }
}

/// The operators kintone takes for each field type.
fn allowed(t: FieldType, op: Op) -> bool {
    use FieldType::*;
    use Op::*;
    match t {
        SingleLineText | Link => matches!(op, Eq | Ne | In | NotIn | Like | NotLike),
        MultiLineText | RichText | File => matches!(op, Like | NotLike),
        Number | Calc | RecordNumber => !matches!(op, Like | NotLike),
        Date | Time | DateTime | CreatedTime | UpdatedTime => matches!(op, Eq | Ne | Lt | Gt | Le | Ge),
        Status => matches!(op, Eq | Ne | In | NotIn),
        CheckBox | MultiSelect | DropDown | RadioButton | UserSelect | OrganizationSelect | GroupSelect
        | StatusAssignee | Category | Creator | Modifier => matches!(op, In | NotIn),
        Subtable => false,
    }
}

fn field_type(app: &App, code: &str) -> Option<FieldType> {
    match code {
        "$id" => Some(FieldType::RecordNumber),
        "$revision" => Some(FieldType::Number),
        _ => app.field(code).map(|f| f.field_type),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Sym(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ApiError> {
    const SYMBOLS: [&str; 9] = ["!=", "<=", ">=", "=", "<", ">", "(", ")", ","];
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if c == '"' {
            let mut text = String::new();
            let mut chars = rest[1..].char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(ApiError::query_syntax()),
                    Some((i, '"')) => break i + 2,
                    Some((_, '\\')) => text.push(chars.next().ok_or_else(ApiError::query_syntax)?.1),
                    Some((_, ch)) => text.push(ch),
                }
            };
            out.push(Tok::Str(text));
            rest = &rest[end..];
        } else if let Some(sym) = SYMBOLS.iter().find(|sym| rest.starts_with(**sym)) {
            out.push(Tok::Sym(sym));
            rest = &rest[sym.len()..];
        } else {
            let end = rest.find(|ch: char| ch.is_whitespace() || "\"=!<>(),".contains(ch)).unwrap_or(rest.len());
            if end == 0 {
                return Err(ApiError::query_syntax());
            }
            out.push(Tok::Word(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.is_kw(kw);
        self.pos += usize::from(hit);
        hit
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym);
        self.pos += usize::from(hit);
        hit
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), ApiError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(ApiError::query_syntax())
        }
    }

    fn expr(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.term()?;
        while self.eat_kw("or") {
            left = Expr::Or(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, ApiError> {
        let mut left = self.factor()?;
        while self.eat_kw("and") {
            left = Expr::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, ApiError> {
        if self.eat_sym("(") {
            let inner = self.expr()?;
            self.expect_sym(")")?;
            return Ok(inner);
        }
        let field = self.word()?;
        let op = if self.eat_kw("not") {
            if self.eat_kw("in") {
                Op::NotIn
            } else if self.eat_kw("like") {
                Op::NotLike
            } else {
                return Err(ApiError::query_syntax());
            }
        } else if self.eat_kw("in") {
            Op::In
        } else if self.eat_kw("like") {
            Op::Like
        } else {
            match self.next() {
                Some(Tok::Sym("=")) => Op::Eq,
                Some(Tok::Sym("!=")) => Op::Ne,
                Some(Tok::Sym("<")) => Op::Lt,
                Some(Tok::Sym(">")) => Op::Gt,
                Some(Tok::Sym("<=")) => Op::Le,
                Some(Tok::Sym(">=")) => Op::Ge,
                _ => return Err(ApiError::query_syntax()),
            }
        };
        let values = if matches!(op, Op::In | Op::NotIn) {
            self.expect_sym("(")?;
            let mut values = vec![self.literal()?];
            while self.eat_sym(",") {
                values.push(self.literal()?);
            }
            self.expect_sym(")")?;
            values
        } else {
            vec![self.literal()?]
        };
        Ok(Expr::Cond { field, op, values })
    }

    fn word(&mut self) -> Result<String, ApiError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => Err(ApiError::query_syntax()),
        }
    }

    /// A quoted string, or a bare number (kintone takes `amount > 10`). A bare word followed by `(` would be a
    /// query function, which the fake does not model.
    fn literal(&mut self) -> Result<String, ApiError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            Some(Tok::Word(w)) if w.parse::<f64>().is_ok() => Ok(w),
            _ => Err(ApiError::query_syntax()),
        }
    }

    fn count(&mut self) -> Result<usize, ApiError> {
        self.word()?.parse::<usize>().map_err(|_| ApiError::query_syntax())
    }
}

/// Parses a query and checks its limit and offset.
pub(crate) fn parse(s: &str) -> Result<Query, ApiError> {
    let mut p = Parser { toks: tokenize(s)?, pos: 0 };
    let clause = |p: &Parser| p.peek().is_none() || p.is_kw("order") || p.is_kw("limit") || p.is_kw("offset");
    let filter = if clause(&p) { None } else { Some(p.expr()?) };
    let (mut order, mut limit, mut offset) = (Vec::new(), None, None);
    loop {
        if p.eat_kw("order") {
            if !p.eat_kw("by") {
                return Err(ApiError::query_syntax());
            }
            loop {
                let field = p.word()?;
                let desc = p.eat_kw("desc");
                if !desc {
                    p.eat_kw("asc");
                }
                order.push((field, desc));
                if !p.eat_sym(",") {
                    break;
                }
            }
        } else if p.eat_kw("limit") {
            limit = Some(p.count()?);
        } else if p.eat_kw("offset") {
            offset = Some(p.count()?);
        } else {
            break;
        }
    }
    if p.peek().is_some() {
        return Err(ApiError::query_syntax());
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit > 500 {
        return Err(ApiError::limit_over());
    }
    let offset = offset.unwrap_or(0);
    if offset > 10_000 {
        return Err(ApiError::offset_over());
    }
    Ok(Query { filter, order, limit, offset })
}

/// The records matching `q`, in its order, each in read format (all fields).
pub(crate) fn run(app: &App, q: &Query) -> Result<Vec<Value>, ApiError> {
    if let Some(filter) = &q.filter {
        check(app, filter)?;
    }
    let mut keys = Vec::new();
    for (code, desc) in &q.order {
        let t = field_type(app, code).ok_or_else(|| ApiError::query_field_not_found(code))?;
        keys.push((code, kind(t), *desc));
    }
    let mut rows: Vec<Value> = app
        .records
        .values()
        .rev()
        .map(|r| app.record_json(r, None))
        .filter(|json| q.filter.as_ref().is_none_or(|f| matches(app, f, json)))
        .collect();
    if !keys.is_empty() {
        rows.sort_by(|a, b| {
            for (code, kind, desc) in &keys {
                let o = sort_cmp(*kind, &first(a, code), &first(b, code));
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }
    Ok(rows)
}

fn check(app: &App, e: &Expr) -> Result<(), ApiError> {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => check(app, a).and_then(|()| check(app, b)),
        Expr::Cond { field, op, .. } => {
            let t = field_type(app, field).ok_or_else(|| ApiError::query_field_not_found(field))?;
            if allowed(t, *op) {
                Ok(())
            } else {
                Err(ApiError::query_operator(t.as_str(), op.as_str()))
            }
        }
    }
}

fn matches(app: &App, e: &Expr, json: &Value) -> bool {
    let Expr::Cond { field, op, values } = e else {
        return match e {
            Expr::And(a, b) => matches(app, a, json) && matches(app, b, json),
            Expr::Or(a, b) => matches(app, a, json) || matches(app, b, json),
            Expr::Cond { .. } => false,
        };
    };
    let kind = field_type(app, field).map_or(Kind::Text, kind);
    let actual = all_values(json, field);
    let one = actual.first().cloned().unwrap_or_default();
    match op {
        Op::In | Op::NotIn => {
            let hit = if kind == Kind::Multi && actual.is_empty() {
                values.iter().any(String::is_empty)
            } else if kind == Kind::Multi {
                actual.iter().any(|a| values.contains(a))
            } else {
                values.iter().any(|v| equal(kind, &one, v))
            };
            hit == (*op == Op::In)
        }
        Op::Like | Op::NotLike => {
            let needle = values[0].to_lowercase();
            let hit = actual.iter().any(|a| a.to_lowercase().contains(&needle));
            hit == (*op == Op::Like)
        }
        Op::Eq => equal(kind, &one, &values[0]),
        Op::Ne => !equal(kind, &one, &values[0]),
        Op::Lt => compare(kind, &one, &values[0]) == Some(Ordering::Less),
        Op::Gt => compare(kind, &one, &values[0]) == Some(Ordering::Greater),
        Op::Le => matches!(compare(kind, &one, &values[0]), Some(Ordering::Less | Ordering::Equal)),
        Op::Ge => matches!(compare(kind, &one, &values[0]), Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// A field's values as text: a string, the `code` of a user, the items of a list (codes, or names of files).
fn all_values(json: &Value, code: &str) -> Vec<String> {
    let text = |v: &Value| {
        v.as_str()
            .or_else(|| v.get("code").and_then(Value::as_str))
            .or_else(|| v.get("name").and_then(Value::as_str))
            .map(str::to_string)
    };
    match &json[code]["value"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().filter_map(text).collect(),
        v => text(v).into_iter().collect(),
    }
}

fn first(json: &Value, code: &str) -> String {
    all_values(json, code).into_iter().next().unwrap_or_default()
}

/// A query value of a date-time field in stored form (UTC), so `更新日時 > "2026-11-22T09:00:00+09:00"` works.
fn normalized(kind: Kind, v: &str) -> String {
    match kind {
        Kind::Time => to_utc(v).unwrap_or_else(|| v.to_string()),
        _ => v.to_string(),
    }
}

fn equal(kind: Kind, actual: &str, wanted: &str) -> bool {
    match (kind, actual.parse::<f64>(), wanted.parse::<f64>()) {
        (Kind::Num, Ok(a), Ok(b)) => a == b,
        _ => actual == normalized(kind, wanted),
    }
}

/// Ordering for `<`, `>`, ...: an empty field matches none of them.
fn compare(kind: Kind, actual: &str, wanted: &str) -> Option<Ordering> {
    if actual.is_empty() {
        return None;
    }
    match kind {
        Kind::Num => actual.parse::<f64>().ok()?.partial_cmp(&wanted.parse::<f64>().ok()?),
        _ => Some(actual.cmp(&normalized(kind, wanted))),
    }
}

/// Ordering for `order by`: empty values first, numbers numerically.
fn sort_cmp(kind: Kind, a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => match (kind, a.parse::<f64>(), b.parse::<f64>()) {
            (Kind::Num, Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => a.cmp(b),
        },
    }
}
