//! YAML config text → `serde_json::Value` tree that remembers the line of every node.
//!
//! `renkei check` must list every problem in a config file with its path and line, and serde_yaml stops at
//! the first error without lines for later ones. So this module reads yaml-rust2's parser events itself,
//! builds the tree with a line per path, interpolates `${ENV}` references, and maps serde errors from
//! [`YamlDoc::deserialize_at`] back to path and line.
//!
//! It never does I/O: it gets the file's text and an env lookup function. Messages it produces never
//! contain the value of an environment variable, because those values are secrets.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::message::Msg;

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub line: Option<usize>,
    pub message: Msg,
}

impl Problem {
    fn new(path: &Path, line: Option<usize>, en: String, ja: String) -> Problem {
        Problem { path: path.to_string(), line, message: Msg::new(en, ja) }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message.en)
    }
}

/// A location in the document: keys and indexes from the root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Path(Vec<Seg>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    pub fn key(&self, k: &str) -> Path {
        self.child(Seg::Key(k.to_owned()))
    }

    pub fn index(&self, i: usize) -> Path {
        self.child(Seg::Index(i))
    }

    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    fn child(&self, seg: Seg) -> Path {
        let mut segs = self.0.clone();
        segs.push(seg);
        Path(segs)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    // Quoted so that a key like `deals.deal.status` is not read as three levels.
                    if k.is_empty() || k.contains(['.', ' ', '[', '"']) {
                        write!(f, "\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))?;
                    } else {
                        f.write_str(k)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A parsed YAML document: the value tree and where each node came from.
pub struct YamlDoc {
    pub value: Value,
    lines: HashMap<Vec<Seg>, usize>,
    /// Scalars whose text came from an environment variable, so errors about them are redacted.
    secret: HashSet<Vec<Seg>>,
}

/// Parses `text`, interpolating `${NAME}` / `${NAME:-default}` in scalar values with `env`. `$${` is a
/// literal `${`. Returns every problem found (syntax error: just that one, with its line; missing env vars:
/// one problem each).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<YamlDoc, Vec<Problem>> {
    let mut b = Builder {
        env,
        stack: Vec::new(),
        root: None,
        lines: HashMap::new(),
        secret: HashSet::new(),
        anchors: HashMap::new(),
        problems: Vec::new(),
        documents: 0,
        aliased: 0,
    };
    if let Err(e) = Parser::new_from_str(text).load(&mut b, true) {
        let info = e.info();
        return Err(vec![Problem::new(
            &Path::root(),
            Some(e.marker().line()),
            format!("YAML syntax error: {info}"),
            format!("YAML の構文エラー: {info}"),
        )]);
    }
    if !b.problems.is_empty() {
        return Err(b.problems);
    }
    Ok(YamlDoc { value: b.root.unwrap_or(Value::Null), lines: b.lines, secret: b.secret })
}

impl YamlDoc {
    /// Line (1-based) of the node at `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &Path) -> Option<usize> {
        (0..=path.0.len()).rev().find_map(|n| self.lines.get(&path.0[..n]).copied())
    }

    /// The node at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&Value> {
        path.0.iter().try_fold(&self.value, |v, seg| match seg {
            Seg::Key(k) => v.as_object()?.get(k),
            Seg::Index(i) => v.as_array()?.get(*i),
        })
    }

    /// Deserializes the sub-tree at `path` into `T`, mapping a serde error to a Problem at the failing
    /// node's path and line. A missing sub-tree deserializes like `null`.
    pub fn deserialize_at<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T, Problem> {
        let null = Value::Null;
        let err = match serde_path_to_error::deserialize(self.get(path).unwrap_or(&null)) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let mut full = path.clone();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => full.0.push(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => full.0.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => full.0.push(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let mut msg = err.inner().to_string();
        // Point at the unknown key itself, not at the map holding it (serde_path_to_error 0.1.20 already
        // ends the path with the key; older versions stop at the map).
        if let Some(name) = unknown_field(&msg) {
            if full.0.last() != Some(&Seg::Key(name.clone())) {
                full = full.key(&name);
            }
        }
        if (0..=full.0.len()).any(|n| self.secret.contains(&full.0[..n])) {
            msg = redact(&msg, self.get(&full));
        }
        let ja = translate(&msg);
        Err(Problem::new(&full, self.line_of(&full), msg, ja))
    }
}

/// serde shows the offending value (`string "x"`, `` `x` ``); an env-derived value must not be shown.
fn redact(msg: &str, value: Option<&Value>) -> String {
    let text = match value {
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => return msg.to_owned(),
    };
    msg.replace(&format!("{text:?}"), "\"***\"").replace(&format!("`{text}`"), "`***`")
}

/// "`name`, expected one of `a`, `b`" → (name, "`a`, `b`"), as serde words unknown fields and variants.
fn listing(rest: &str) -> Option<(String, String)> {
    let (name, tail) = rest.strip_prefix('`')?.split_once("`, ")?;
    let allowed = tail.strip_prefix("expected one of ").or_else(|| tail.strip_prefix("expected ")).unwrap_or("(なし)");
    // serde joins the last two with " or ", which reads oddly inside a Japanese sentence.
    Some((name.to_owned(), allowed.replace("` or `", "`, `")))
}

fn unknown_field(msg: &str) -> Option<String> {
    msg.strip_prefix("unknown field ").and_then(listing).map(|(name, _)| name)
}

/// The Japanese for a serde message, covering the shapes users usually hit.
fn translate(msg: &str) -> String {
    if let Some((name, allowed)) = msg.strip_prefix("unknown field ").and_then(listing) {
        format!("不明なキー `{name}` です。使えるキー: {allowed}")
    } else if let Some((name, allowed)) = msg.strip_prefix("unknown variant ").and_then(listing) {
        format!("`{name}` は使えない値です。使える値: {allowed}")
    } else if let Some(field) = msg.strip_prefix("missing field ") {
        format!("必須のキー {field} がありません")
    } else if let Some(rest) = msg.strip_prefix("invalid type: ") {
        format!("型が正しくありません: {rest}")
    } else {
        format!("設定値が正しくありません: {msg}")
    }
}

enum Kind {
    Seq(Vec<Value>),
    /// The map so far and the key waiting for its value.
    Map(Map<String, Value>, Option<PendingKey>),
}

struct PendingKey {
    text: String,
    line: usize,
    /// False for duplicate or invalid keys: their value is parsed (to find its problems) but dropped.
    keep: bool,
}

struct Frame {
    path: Path,
    anchor: usize,
    /// Whether lines are recorded; false inside dropped nodes so they cannot overwrite real lines.
    record: bool,
    /// A mapping or sequence used as a key, which is reported and dropped.
    as_key: bool,
    kind: Kind,
}

/// Where the next node goes.
enum Target {
    Key,
    Node { path: Path, line: usize, record: bool },
}

struct Builder<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    stack: Vec<Frame>,
    root: Option<Value>,
    lines: HashMap<Vec<Seg>, usize>,
    secret: HashSet<Vec<Seg>>,
    /// Anchored values, and whether they contain an env-derived scalar.
    anchors: HashMap<usize, (Value, bool)>,
    problems: Vec<Problem>,
    documents: usize,
    /// Values copied through aliases so far: bounded, so nested aliases cannot blow a small text up into
    /// gigabytes (a "billion laughs"; found by `fuzz/`'s `config` target).
    aliased: usize,
}

/// The most values aliases may copy in one document; a real config stays far below.
const MAX_ALIASED: usize = 100_000;

fn size_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(size_of).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(size_of).sum::<usize>(),
        _ => 1,
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.documents > 1 {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.problem(
                        &Path::root(),
                        line,
                        "the file must contain a single YAML document (found another `---`)".into(),
                        "YAML ドキュメントは 1 つだけにしてください（2 つ目の `---` があります）".into(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => match self.target(line) {
                Target::Key => self.on_key(text, style, tag, line),
                Target::Node { path, line, record } => {
                    let forced_str = self.check_tag(tag.as_ref(), "str", &path, line);
                    let value = self.interpolate(&text, &path, line, style == TScalarStyle::Plain && !forced_str);
                    if record {
                        self.lines.insert(path.0.clone(), line);
                    }
                    self.finish(value, anchor, path);
                }
            },
            Event::SequenceStart(anchor, tag) => self.start(Kind::Seq(Vec::new()), anchor, tag, "seq", line),
            Event::MappingStart(anchor, tag) => self.start(Kind::Map(Map::new(), None), anchor, tag, "map", line),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let value = match frame.kind {
                    Kind::Seq(items) => Value::Array(items),
                    Kind::Map(map, _) => Value::Object(map),
                };
                if frame.as_key {
                    self.set_key(String::new(), line, false);
                } else {
                    self.finish(value, frame.anchor, frame.path);
                }
            }
            Event::Alias(id) => match self.target(line) {
                Target::Key => self.bad_key(line),
                Target::Node { path, line, record } => {
                    // The parser rejects unknown anchors before emitting an alias, so the default is unused.
                    let size = self.anchors.get(&id).map_or(1, |(v, _)| size_of(v));
                    self.aliased = self.aliased.saturating_add(size);
                    if self.aliased > MAX_ALIASED {
                        if self.aliased - size <= MAX_ALIASED {
                            self.problem(
                                &path,
                                line,
                                format!("aliases (*name) copy more than {MAX_ALIASED} values: write the config out"),
                                format!("エイリアス（*name）で {MAX_ALIASED} 個を超える値がコピーされます。展開して書いてください"),
                            );
                        }
                        self.finish(Value::Null, 0, path);
                        return;
                    }
                    let (value, secret) = self.anchors.get(&id).cloned().unwrap_or((Value::Null, false));
                    if secret {
                        self.secret.insert(path.0.clone());
                    }
                    // Only the alias itself gets a line; paths inside the copy fall back to it.
                    if record {
                        self.lines.insert(path.0.clone(), line);
                    }
                    self.finish(value, 0, path);
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

impl Builder<'_> {
    fn problem(&mut self, path: &Path, line: usize, en: String, ja: String) {
        self.problems.push(Problem::new(path, Some(line), en, ja));
    }

    fn target(&self, mark_line: usize) -> Target {
        let Some(top) = self.stack.last() else {
            return Target::Node { path: Path::root(), line: mark_line, record: true };
        };
        match &top.kind {
            Kind::Seq(items) => Target::Node { path: top.path.index(items.len()), line: mark_line, record: top.record },
            Kind::Map(_, None) => Target::Key,
            // A map value's line is its key's line, which is what a reader looks for.
            Kind::Map(_, Some(k)) => {
                Target::Node { path: top.path.key(&k.text), line: k.line, record: top.record && k.keep }
            }
        }
    }

    fn start(&mut self, kind: Kind, anchor: usize, tag: Option<Tag>, core: &str, line: usize) {
        let (path, record, as_key) = match self.target(line) {
            Target::Key => {
                self.bad_key(line);
                (self.stack.last().map(|f| f.path.clone()).unwrap_or_default(), false, true)
            }
            Target::Node { path, line, record } => {
                if record {
                    self.lines.insert(path.0.clone(), line);
                }
                (path, record, false)
            }
        };
        self.check_tag(tag.as_ref(), core, &path, line);
        self.stack.push(Frame { path, anchor, record, as_key, kind });
    }

    fn on_key(&mut self, text: String, style: TScalarStyle, tag: Option<Tag>, line: usize) {
        let Some(map_path) = self.stack.last().map(|f| f.path.clone()) else {
            return;
        };
        let path = map_path.key(&text);
        self.check_tag(tag.as_ref(), "str", &path, line);
        let before = self.problems.len();
        // Keys are always strings, so `1:` or `true:` is its text.
        let key = match self.interpolate(&text, &path, line, false) {
            Value::String(s) => s,
            _ => text.clone(),
        };
        let mut keep = self.problems.len() == before;
        if style == TScalarStyle::Plain && text == "<<" {
            self.problem(
                &path,
                line,
                "merge keys (`<<`) are not supported; write the keys out".into(),
                "マージキー（`<<`）には対応していません。キーを直接書いてください".into(),
            );
            keep = false;
        }
        let duplicate = match self.stack.last().map(|f| &f.kind) {
            Some(Kind::Map(map, _)) => map.contains_key(&key),
            _ => false,
        };
        if keep && duplicate {
            self.problem(
                &map_path.key(&key),
                line,
                format!("duplicate key `{key}`"),
                format!("キー `{key}` が重複しています"),
            );
            keep = false;
        }
        self.set_key(key, line, keep);
    }

    fn bad_key(&mut self, line: usize) {
        let path = self.stack.last().map(|f| f.path.clone()).unwrap_or_default();
        self.problem(
            &path,
            line,
            "a key must be plain text, not a mapping, list or alias".into(),
            "キーには文字列を書いてください（マップ・リスト・エイリアスは使えません）".into(),
        );
        self.set_key(String::new(), line, false);
    }

    fn set_key(&mut self, text: String, line: usize, keep: bool) {
        if let Some(Frame { kind: Kind::Map(_, pending), .. }) = self.stack.last_mut() {
            *pending = Some(PendingKey { text, line, keep });
        }
    }

    /// Returns true when `tag` is the core tag `core` (e.g. `!!str`); any other tag is a problem, because
    /// ignoring it would silently change what the user meant.
    fn check_tag(&mut self, tag: Option<&Tag>, core: &str, path: &Path, line: usize) -> bool {
        let Some(tag) = tag else { return false };
        if tag.handle == "tag:yaml.org,2002:" && tag.suffix == core {
            return true;
        }
        let shown = if tag.handle == "tag:yaml.org,2002:" { "!!" } else { &tag.handle };
        let t = format!("{shown}{}", tag.suffix);
        self.problem(
            path,
            line,
            format!("YAML tag `{t}` is not supported"),
            format!("YAML タグ `{t}` には対応していません"),
        );
        false
    }

    /// Adds a finished node to its parent and remembers it if anchored.
    fn finish(&mut self, value: Value, anchor: usize, path: Path) {
        if anchor > 0 {
            let secret = self.secret.iter().any(|s| s.starts_with(&path.0));
            self.anchors.insert(anchor, (value.clone(), secret));
        }
        match self.stack.last_mut().map(|f| &mut f.kind) {
            None => self.root = Some(value),
            Some(Kind::Seq(items)) => items.push(value),
            Some(Kind::Map(map, pending)) => {
                if let Some(k) = pending.take().filter(|k| k.keep) {
                    map.insert(k.text, value);
                }
            }
        }
    }

    /// Expands `${NAME}`, `${NAME:-default}` (default also when the variable is empty, like a shell) and
    /// `$${`. The result is not scanned again, so a value cannot inject references. A plain scalar is
    /// typed after expansion, so `port: ${PORT}` is a number.
    fn interpolate(&mut self, text: &str, path: &Path, line: usize, plain: bool) -> Value {
        let mut out = String::new();
        let mut from_env = false;
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(r) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = r;
                continue;
            }
            let Some(body) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let Some((reference, r)) = body.split_once('}') else {
                self.problem(
                    path,
                    line,
                    "`${` is not closed with `}` (write `$${` for a literal `${`)".into(),
                    "`${` が `}` で閉じられていません（`${` という文字そのものは `$${` と書きます）".into(),
                );
                rest = "";
                break;
            };
            rest = r;
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.problem(
                    path,
                    line,
                    format!("invalid environment variable name `{name}` in `${{...}}`"),
                    format!("`${{...}}` の環境変数名 `{name}` が正しくありません"),
                );
                continue;
            }
            match ((self.env)(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => {
                    out.push_str(&v);
                    from_env = true;
                }
                (None, Some(d)) => out.push_str(d),
                // Only the name is shown: values are secrets.
                (None, None) => self.problem(
                    path,
                    line,
                    format!("environment variable {name} is not set"),
                    format!("環境変数 {name} が設定されていません"),
                ),
            }
        }
        out.push_str(rest);
        if from_env {
            self.secret.insert(path.0.clone());
        }
        if plain {
            resolve_plain(&out)
        } else {
            Value::String(out)
        }
    }
}

/// Types a plain scalar like the YAML 1.2 core schema. `.inf`/`.nan` and integers too large for 64 bits
/// stay strings, since JSON cannot hold them exactly.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = |t: &str, radix: u32| !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    let radix = [("0x", 16), ("0o", 8)].into_iter().find_map(|(p, r)| Some((s.strip_prefix(p)?, r)));
    if let Some((body, radix)) = radix {
        if let Some(n) = digits(body, radix).then(|| u64::from_str_radix(body, radix).ok()).flatten() {
            return Value::Number(n.into());
        }
        return Value::String(s.to_owned());
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned, 10) {
        let n = s.parse::<i64>().map(Number::from).or_else(|_| s.parse::<u64>().map(Number::from));
        return n.map_or_else(|_| Value::String(s.to_owned()), Value::Number);
    }
    let (mantissa, exponent) = unsigned.split_once(['e', 'E']).unwrap_or((unsigned, "0"));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let is_float = (digits(int, 10) || (int.is_empty() && digits(frac, 10)))
        && (frac.is_empty() || digits(frac, 10))
        && digits(exponent.strip_prefix(['-', '+']).unwrap_or(exponent), 10);
    match is_float.then(|| s.parse::<f64>().ok().and_then(Number::from_f64)).flatten() {
        Some(n) => Value::Number(n),
        None => Value::String(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".into()),
            "TOKEN" => Some("s3cr3t-value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn p(segs: &[&str]) -> Path {
        segs.iter().fold(Path::root(), |p, s| match s.parse() {
            Ok(i) => p.index(i),
            Err(_) => p.key(s),
        })
    }

    #[test]
    fn nested_aliases_cannot_blow_the_text_up() {
        // Nine levels of ten aliases each would be 10^9 values.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let found = problems(&text);
        assert!(found.iter().any(|p| p.contains("aliases (*name) copy more than 100000 values")), "{found:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Ordinary aliases still work.
        assert!(parse("base: &b { retry: 3 }\nother: *b\n", &env).is_ok());
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text, &env).err().expect("problems").iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn lines_of_nested_keys_flow_maps_and_sequence_items() {
        let text = "server:\n  listen: \"0.0.0.0:8080\"\n  tls:\n    cert: a\n\
                    inline: { listen: \"a\", port: 80 }\nflows:\n  a:\n    steps:\n      - name: one\n\
                    \x20       method: GET\n      -\n        name: two\n";
        let doc = parse(text, &no_env).unwrap();
        let line = |segs: &[&str]| doc.line_of(&p(segs));
        assert_eq!(line(&["server"]), Some(1));
        assert_eq!(line(&["server", "listen"]), Some(2));
        assert_eq!(line(&["server", "tls"]), Some(3));
        assert_eq!(line(&["server", "tls", "cert"]), Some(4));
        assert_eq!(line(&["server", "tls", "cert", "nope"]), Some(4));
        assert_eq!(line(&["inline", "listen"]), Some(5));
        assert_eq!(line(&["inline", "port"]), Some(5));
        assert_eq!(line(&["flows", "a", "steps"]), Some(8));
        assert_eq!(line(&["flows", "a", "steps", "0"]), Some(9));
        assert_eq!(line(&["flows", "a", "steps", "0", "method"]), Some(10));
        assert_eq!(line(&["flows", "a", "steps", "1"]), Some(12));
        assert_eq!(doc.get(&p(&["inline", "port"])), Some(&json!(80)));
        assert_eq!(doc.get(&p(&["flows", "a", "steps", "1", "name"])), Some(&json!("two")));
    }

    #[test]
    fn block_scalar_is_at_its_keys_line() {
        let doc = parse("a: 1\nscript: |\n  line one\n  line two\nafter: x\n", &no_env).unwrap();
        assert_eq!(doc.line_of(&p(&["script"])), Some(2));
        assert_eq!(doc.line_of(&p(&["after"])), Some(5));
        assert_eq!(doc.value["script"], json!("line one\nline two\n"));
    }

    #[test]
    fn scalars_resolve_like_the_core_schema() {
        let text = "[~, null, '', True, FALSE, 12, -3, 0x1F, 0o17, 1.5, .5, 1e3, .inf, .nan, \
                    'true', \"12\", yes, 99999999999999999999, 1.2.3]";
        let doc = parse(text, &no_env).unwrap();
        let expected = json!([
            null,
            null,
            "",
            true,
            false,
            12,
            -3,
            31,
            15,
            1.5,
            0.5,
            1000.0,
            ".inf",
            ".nan",
            "true",
            "12",
            "yes",
            "99999999999999999999",
            "1.2.3"
        ]);
        assert_eq!(doc.value, expected);
        let doc = parse("1: a\ntrue: b\n", &no_env).unwrap();
        assert_eq!(doc.value, json!({"1": "a", "true": "b"}));
    }

    #[test]
    fn env_interpolation() {
        let text = "port: ${PORT}\nquoted: \"${PORT}\"\nurl: http://h:${PORT}/x\ndef: ${NOPE:-7}\n\
                    empty: ${EMPTY:-fallback}\nlit: $${PORT} costs $5\n${PORT}: key\n";
        let doc = parse(text, &env).unwrap();
        let expected = json!({"port": 8080, "quoted": "8080", "url": "http://h:8080/x", "def": 7,
            "empty": "fallback", "lit": "${PORT} costs $5", "8080": "key"});
        assert_eq!(doc.value, expected);
    }

    #[test]
    fn env_problems_name_the_variable_with_its_line() {
        let text = "a: ok\ntoken: ${RAKURAKU_TOKEN}\nboth: ${X1}${TOKEN}${X2}\nopen: ${PORT\nempty: ${}\n";
        let all = problems(text);
        assert_eq!(
            all,
            [
                "line 2: token: environment variable RAKURAKU_TOKEN is not set",
                "line 3: both: environment variable X1 is not set",
                "line 3: both: environment variable X2 is not set",
                "line 4: open: `${` is not closed with `}` (write `$${` for a literal `${`)",
                "line 5: empty: invalid environment variable name `` in `${...}`",
            ]
        );
        assert!(all.iter().all(|p| !p.contains("s3cr3t")));
        let ja = parse("token: ${RAKURAKU_TOKEN}", &env).err().unwrap();
        assert_eq!(ja[0].message.ja, "環境変数 RAKURAKU_TOKEN が設定されていません");
    }

    #[test]
    fn duplicate_keys_syntax_errors_merge_keys_and_documents() {
        assert_eq!(problems("a: 1\nb:\n  c: 2\n  c: 3\n"), ["line 4: b.c: duplicate key `c`"]);
        let syntax = parse("a: 1\nb: [1, 2\nc: 3\n", &no_env).err().unwrap();
        assert_eq!(syntax.len(), 1);
        assert_eq!(syntax[0].line, Some(3));
        assert!(syntax[0].message.ja.starts_with("YAML の構文エラー: "), "{syntax:?}");
        let merge = problems("a: &x {b: 1}\nc:\n  <<: *x\n");
        assert_eq!(merge, ["line 3: c.<<: merge keys (`<<`) are not supported; write the keys out"]);
        let docs = problems("a: 1\n---\nb: 2\n");
        assert_eq!(docs, ["line 2: the file must contain a single YAML document (found another `---`)"]);
        assert_eq!(parse("# only a comment\n", &no_env).unwrap().value, Value::Null);
    }

    #[test]
    fn aliases_copy_the_anchored_value_at_the_alias_line() {
        let text = "base: &b\n  method: POST\n  retry: 3\nflows:\n  a: *b\n  list: [&n 1, *n]\n";
        let doc = parse(text, &no_env).unwrap();
        assert_eq!(doc.value["flows"]["a"], json!({"method": "POST", "retry": 3}));
        assert_eq!(doc.value["flows"]["list"], json!([1, 1]));
        assert_eq!(doc.line_of(&p(&["flows", "a", "retry"])), Some(5));
        assert_eq!(doc.line_of(&p(&["base", "retry"])), Some(3));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Step {
        method: String,
        #[serde(default)]
        port: u16,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Flow {
        steps: Vec<Step>,
    }

    #[test]
    fn deserialize_at_maps_errors_to_path_and_line() {
        let text = "flows:\n  a:\n    steps:\n      - method: GET\n      - method: POST\n\
                    \x20       methd: x\n  b:\n    steps:\n      - port: 1\n  c:\n    steps:\n\
                    \x20     - method: GET\n        port: ${TOKEN}\n";
        let doc = parse(text, &env).unwrap();
        let flows = Path::root().key("flows");
        let err = doc.deserialize_at::<Flow>(&flows.key("a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 6: flows.a.steps[1].methd: unknown field `methd`, expected `method` or `port`"
        );
        assert_eq!(err.message.ja, "不明なキー `methd` です。使えるキー: `method`, `port`");
        let err = doc.deserialize_at::<Flow>(&flows.key("b")).unwrap_err();
        assert_eq!(err.to_string(), "line 9: flows.b.steps[0]: missing field `method`");
        assert_eq!(err.message.ja, "必須のキー `method` がありません");
        // A wrong type names the value only when it did not come from the environment.
        let err = doc.deserialize_at::<Flow>(&flows.key("c")).unwrap_err();
        assert_eq!(err.path, "flows.c.steps[0].port");
        assert_eq!(err.line, Some(13));
        assert_eq!(err.message.en, "invalid type: string \"***\", expected u16");
        assert_eq!(err.message.ja, "型が正しくありません: string \"***\", expected u16");
        let doc = parse("steps:\n  - method: [1]\n", &no_env).unwrap();
        let err = doc.deserialize_at::<Flow>(&Path::root()).unwrap_err();
        assert_eq!(err.to_string(), "line 2: steps[0].method: invalid type: sequence, expected a string");
        // A missing sub-tree is null, reported at its nearest ancestor's line.
        let err = doc.deserialize_at::<u16>(&Path::root().key("missing")).unwrap_err();
        assert_eq!(err.to_string(), "line 1: missing: invalid type: null, expected u16");
    }

    #[test]
    fn path_display_quotes_keys_that_need_it() {
        let path = Path::root().key("flows").key("approval-to-esm").key("steps").index(0).key("body");
        assert_eq!(
            path.key("deals.deal.status").to_string(),
            "flows.approval-to-esm.steps[0].body.\"deals.deal.status\""
        );
        assert_eq!(Path::root().index(2).key("").key("a b").key("q\"").to_string(), "[2].\"\".\"a b\".\"q\\\"\"");
        assert_eq!(Path::root().to_string(), "");
        let problem = Problem { path: String::new(), line: None, message: Msg::new("m", "m") };
        assert_eq!(problem.to_string(), "m");
    }

    #[test]
    fn japanese_keys_and_values() {
        let doc = parse("担当者:\n  山田太郎: 佐藤花子\n  件名: \"承認 ${NOPE:-済み}\"\n", &no_env).unwrap();
        assert_eq!(doc.value, json!({"担当者": {"山田太郎": "佐藤花子", "件名": "承認 済み"}}));
        assert_eq!(doc.line_of(&p(&["担当者", "件名"])), Some(3));
        assert_eq!(problems("山田太郎: 1\n山田太郎: 2\n"), ["line 2: 山田太郎: duplicate key `山田太郎`"]);
    }
}
