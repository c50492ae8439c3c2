//! Editing a config's text one item at a time, keeping everything else as written (comments included), and
//! showing it without its secrets.
//!
//! The console and the API edit a source, destination, flow, table or subscription as a YAML fragment: the
//! item's value, as written under its name. [`item`] cuts it out, [`set_item`] and [`remove_item`] splice it
//! back into the whole text, line by line. The result is always loaded as a whole before it is kept, so a
//! splice can never produce a config that runs with a problem; what this module refuses (a section written
//! in flow style, say) is refused with a message that says to edit the whole text instead.
//!
//! Secrets: [`redact`] masks every secret value in a text ([`crate::redact::MASK`]). A text coming back with
//! masks is given its secrets again by [`restore`]: a line that still holds a mask takes the earlier text's
//! line at the same place (same key path), provided that line, masked, reads the same. So an admin can
//! download a config, change a flow, and put it back without ever seeing or retyping a token.

use std::fmt;

use crate::redact::{Redactor, MASK};
use crate::types::Name;

/// Sections whose entries are named items.
pub const ITEM_SECTIONS: &[&str] = &["sources", "destinations", "flows", "tables", "subscriptions"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditError {
    UnknownSection(String),
    BadName(String),
    /// The item is not there.
    NotFound {
        section: String,
        name: String,
    },
    /// The section or the item is written in a form this module does not splice (flow style).
    NotBlock {
        section: String,
    },
    /// A masked line could not be given its secret back.
    Mask {
        line: usize,
    },
}

impl EditError {
    pub fn message(&self) -> crate::message::Msg {
        use crate::message::Msg;
        match self {
            EditError::UnknownSection(s) => Msg::new(
                format!("`{s}` is not a section of named items ({})", ITEM_SECTIONS.join(", ")),
                format!("`{s}` は名前付き項目のセクションではありません ({})", ITEM_SECTIONS.join(", ")),
            ),
            EditError::BadName(e) => Msg::new(e.clone(), format!("名前が正しくありません: {e}")),
            EditError::NotFound { section, name } => Msg::new(
                format!("there is no `{name}` in `{section}`"),
                format!("`{section}` に `{name}` はありません"),
            ),
            EditError::NotBlock { section } => Msg::new(
                format!("`{section}` is written in flow style ({{ ... }}); edit the whole config text instead"),
                format!("`{section}` はフロースタイル ({{ ... }}) で書かれています。設定全体を編集してください"),
            ),
            EditError::Mask { line } => Msg::new(
                format!(
                    "line {line}: {MASK} stands for a secret, but this line changed or has no secret in the current \
                     config; write the secret itself"
                ),
                format!("{line} 行目: {MASK} は秘密の値の代わりですが、この行は変更されたか、現在の設定に秘密の値がありません。値そのものを書いてください"),
            ),
        }
    }
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message().en)
    }
}

/// The text with every secret value masked.
pub fn redact(text: &str, redactor: &Redactor) -> String {
    redactor.text(text).into_owned()
}

/// Gives masked lines of `new` their secrets back from `old` (the text they were masked from).
pub fn restore(new: &str, old: &str, redactor: &Redactor) -> Result<String, EditError> {
    if !new.contains(MASK) {
        return Ok(new.to_owned());
    }
    let old_lines: Vec<&str> = old.lines().collect();
    let old_paths = line_paths(&old_lines);
    let new_lines: Vec<&str> = new.lines().collect();
    let new_paths = line_paths(&new_lines);
    let mut out = String::with_capacity(new.len() + 64);
    for (i, line) in new_lines.iter().enumerate() {
        if line.contains(MASK) {
            let found = new_paths[i].as_ref().and_then(|p| {
                old_paths
                    .iter()
                    .zip(&old_lines)
                    .find(|(op, ol)| op.as_ref() == Some(p) && redactor.text(ol) == *line)
                    .map(|(_, ol)| *ol)
            });
            match found {
                Some(ol) => out.push_str(ol),
                None => return Err(EditError::Mask { line: i + 1 }),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// The names of a section's items, in order.
pub fn names(text: &str, section: &str) -> Result<Vec<String>, EditError> {
    check_section(section)?;
    let lines: Vec<&str> = text.lines().collect();
    Ok(match find_section(&lines, section)? {
        Some(s) => s.items.into_iter().map(|i| i.name).collect(),
        None => Vec::new(),
    })
}

/// An item's value as written (dedented), or `None` when there is no such item.
pub fn item(text: &str, section: &str, name: &str) -> Result<Option<String>, EditError> {
    check_section(section)?;
    let lines: Vec<&str> = text.lines().collect();
    let Some(s) = find_section(&lines, section)? else { return Ok(None) };
    let Some(it) = s.items.iter().find(|i| i.name == name) else { return Ok(None) };
    let head = lines[it.start];
    let after_key = value_after_key(head);
    let mut out = String::new();
    if !after_key.is_empty() {
        out.push_str(after_key);
        out.push('\n');
    }
    let body = &lines[it.start + 1..it.end];
    let cut = body.iter().filter(|l| !l.trim().is_empty()).map(|l| indent_of(l)).min().unwrap_or(0);
    for l in body {
        out.push_str(l.get(cut..).unwrap_or("").trim_end());
        out.push('\n');
    }
    Ok(Some(out))
}

/// The text with `section.name` set to `value` (YAML, the item's value as [`item`] gives it): replaced where
/// it is, else added at the end of the section (the section is added when missing).
pub fn set_item(text: &str, section: &str, name: &str, value: &str) -> Result<String, EditError> {
    check_section(section)?;
    Name::parse(name).map_err(EditError::BadName)?;
    let lines: Vec<&str> = text.lines().collect();
    let found = find_section(&lines, section)?;
    let indent = found.as_ref().map_or(2, |s| s.indent);
    let mut block = format!("{}{name}:\n", " ".repeat(indent));
    for l in value.trim_end().lines() {
        if l.trim().is_empty() {
            block.push('\n');
        } else {
            block.push_str(&" ".repeat(indent + 2));
            block.push_str(l.trim_end());
            block.push('\n');
        }
    }
    let (at, end) = match &found {
        Some(s) => match s.items.iter().find(|i| i.name == name) {
            Some(it) => (it.start, it.end),
            None => (s.end, s.end),
        },
        None => {
            let mut out = lines.join("\n");
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&format!("{section}:\n"));
            out.push_str(&block);
            return Ok(out);
        }
    };
    // An empty section written as `name: {}` or `name:` becomes a block.
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 8);
    for (i, l) in lines.iter().enumerate() {
        if i == at {
            out.extend(block.lines().map(str::to_owned));
        }
        if i >= at && i < end {
            continue;
        }
        if found.as_ref().is_some_and(|s| s.empty_flow && i == s.start) {
            out.push(format!("{section}:"));
            continue;
        }
        out.push((*l).to_owned());
    }
    if at >= lines.len() {
        out.extend(block.lines().map(str::to_owned));
    }
    Ok(out.join("\n") + "\n")
}

/// The text without `section.name`; `NotFound` when it is not there.
pub fn remove_item(text: &str, section: &str, name: &str) -> Result<String, EditError> {
    check_section(section)?;
    let lines: Vec<&str> = text.lines().collect();
    let not_found = || EditError::NotFound { section: section.into(), name: name.into() };
    let s = find_section(&lines, section)?.ok_or_else(not_found)?;
    let it = s.items.iter().find(|i| i.name == name).ok_or_else(not_found)?;
    let mut out: Vec<&str> = lines[..it.start].to_vec();
    if s.items.len() == 1 {
        // The section is left empty, still a mapping.
        if let Some(head) = out.get_mut(s.start) {
            *head = match section {
                "sources" => "sources: {}",
                "destinations" => "destinations: {}",
                "flows" => "flows: {}",
                "tables" => "tables: {}",
                _ => "subscriptions: {}",
            };
        }
    }
    out.extend_from_slice(&lines[it.end..]);
    Ok(out.join("\n") + "\n")
}

/// Sets `key` of the block mapping at `parent` (a dotted path into `text`, e.g. `steps.0` for a flow's first
/// step, or `""` for the text's own top level) to `value` (YAML), keeping every other line. Used by the console's mapping editor on one item's text.
/// `NotBlock` when `parent` is not written as a block mapping of its own lines.
pub fn set_in(text: &str, parent: &str, key: &str, value: &str) -> Result<String, EditError> {
    let not_block = || EditError::NotBlock { section: parent.to_owned() };
    let lines: Vec<&str> = text.lines().collect();
    let paths = line_paths(&lines);
    let under = |p: &Option<String>, of: &str| {
        p.as_deref().is_some_and(|p| {
            of.is_empty() || p == of || p.starts_with(&format!("{of}.")) || p.starts_with(&format!("{of}#"))
        })
    };
    let parent_lines: Vec<usize> = (0..lines.len()).filter(|&i| under(&paths[i], parent)).collect();
    let Some(&last) = parent_lines.last() else { return Err(not_block()) };
    let target = if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") };
    let key_lines: Vec<usize> = (0..lines.len()).filter(|&i| under(&paths[i], &target)).collect();
    // The column keys of `parent` start at: from a line whose path is one level under it.
    let depth = if parent.is_empty() { 1 } else { parent.split('.').count() + 1 };
    let sibling = parent_lines.iter().find_map(|&i| {
        let p = paths[i].as_deref()?;
        let k = p.split('.').nth(depth - 1)?;
        (p.split('.').count() == depth && !k.contains('#')).then(|| column_of_key(lines[i], k)).flatten()
    });
    let col = sibling.ok_or_else(not_block)?;
    let mut block = Vec::new();
    let value = value.trim_end();
    let inline = !value.contains('\n') && !value.is_empty();
    let head = |prefix: &str| if inline { format!("{prefix}{key}: {value}") } else { format!("{prefix}{key}:") };
    let (at, end, prefix) = match (key_lines.first(), key_lines.last()) {
        (Some(&a), Some(&b)) => {
            // Keep what is before the key on its line (`- ` when the key opens a list item).
            let c = column_of_key(lines[a], key).ok_or_else(not_block)?;
            (a, b + 1, lines[a][..c].to_owned())
        }
        _ => (last + 1, last + 1, " ".repeat(col)),
    };
    block.push(head(&prefix));
    if !inline {
        for l in value.lines() {
            block.push(if l.trim().is_empty() { String::new() } else { format!("{}{l}", " ".repeat(col + 2)) });
        }
    }
    let mut out: Vec<String> = lines[..at].iter().map(|l| (*l).to_owned()).collect();
    out.extend(block);
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Ok(out.join("\n") + "\n")
}

/// Where `key:` starts on `line`, if it is written there.
fn column_of_key(line: &str, key: &str) -> Option<usize> {
    let plain = format!("{key}:");
    let quoted = [format!("\"{key}\":"), format!("'{key}':")];
    let indent = indent_of(line);
    let rest = &line[indent..];
    let rest_trim = rest.trim_start_matches("- ");
    let skipped = rest.len() - rest_trim.len();
    let c = indent + skipped;
    (rest_trim.starts_with(&plain) || quoted.iter().any(|q| rest_trim.starts_with(q.as_str()))).then_some(c)
}

fn check_section(section: &str) -> Result<(), EditError> {
    if ITEM_SECTIONS.contains(&section) {
        Ok(())
    } else {
        Err(EditError::UnknownSection(section.into()))
    }
}

struct Section {
    start: usize,
    /// One past its last line (trailing blank and comment lines excluded).
    end: usize,
    indent: usize,
    items: Vec<Item>,
    /// Written `section: {}`.
    empty_flow: bool,
}

struct Item {
    name: String,
    start: usize,
    end: usize,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Blank, a comment, or a document marker: not content.
fn is_filler(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The key of a `key: value` or `key:` line (content from its indent), unquoted.
fn key_of(content: &str) -> Option<String> {
    let content = content.trim_start();
    if content.starts_with('-') || content.starts_with('#') {
        return None;
    }
    let (key, rest) = if let Some(q @ ('"' | '\'')) = content.chars().next() {
        let close = content[1..].find(q)? + 1;
        (content[1..close].to_owned(), &content[close + 1..])
    } else {
        let colon = content.find(':')?;
        (content[..colon].trim_end().to_owned(), &content[colon..])
    };
    let rest = rest.trim_start();
    let after = rest.strip_prefix(':')?;
    (after.is_empty() || after.starts_with(' ')).then_some(key)
}

/// What follows `key:` on a line, without a trailing comment.
fn value_after_key(line: &str) -> &str {
    let t = line.trim_start();
    let key_end = match t.chars().next() {
        Some(q @ ('"' | '\'')) => t[1..].find(q).map_or(t.len(), |c| c + 2),
        _ => 0,
    };
    let Some(colon) = t[key_end..].find(':').map(|c| key_end + c) else { return "" };
    let v = t[colon + 1..].trim();
    if v.starts_with('#') {
        return "";
    }
    match v.find(" #") {
        Some(c) => v[..c].trim_end(),
        None => v,
    }
}

fn find_section(lines: &[&str], section: &str) -> Result<Option<Section>, EditError> {
    let Some(start) = lines.iter().position(|l| indent_of(l) == 0 && key_of(l).as_deref() == Some(section)) else {
        return Ok(None);
    };
    let mut end = lines[start + 1..]
        .iter()
        .position(|l| !is_filler(l) && indent_of(l) == 0)
        .map_or(lines.len(), |p| start + 1 + p);
    while end > start + 1 && is_filler(lines[end - 1]) {
        end -= 1;
    }
    let inline = value_after_key(lines[start]);
    let empty_flow = inline == "{}";
    if !inline.is_empty() && !empty_flow {
        return Err(EditError::NotBlock { section: section.into() });
    }
    let body = &lines[start + 1..end];
    let indent = body.iter().find(|l| !is_filler(l)).map_or(2, |l| indent_of(l));
    let mut items = Vec::new();
    for (i, l) in body.iter().enumerate() {
        if is_filler(l) || indent_of(l) != indent {
            continue;
        }
        let Some(name) = key_of(l) else { return Err(EditError::NotBlock { section: section.into() }) };
        if let Some(last) = items.last_mut() {
            let last: &mut Item = last;
            last.end = start + 1 + i;
        }
        items.push(Item { name, start: start + 1 + i, end });
    }
    // An item ends before the blank and comment lines that precede the next one.
    for it in &mut items {
        while it.end > it.start + 1 && is_filler(lines[it.end - 1]) {
            it.end -= 1;
        }
    }
    Ok(Some(Section { start, end, indent, items, empty_flow }))
}

/// A key path per line (`sources.a.auth.token`, `flows.f.steps.0.body`), `None` for blank and comment
/// lines. Good enough to match a line of one version of a text with the same line of another: lines inside a
/// block scalar get their parent's path and their position.
fn line_paths(lines: &[&str]) -> Vec<Option<String>> {
    // (indent, segment, list items seen under this segment)
    let mut stack: Vec<(usize, String, usize)> = Vec::new();
    let mut block_scalar: Option<(usize, String, usize)> = None; // parent indent, path, lines so far
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let indent = indent_of(l);
        if let Some((parent, path, n)) = &mut block_scalar {
            if l.trim().is_empty() || indent > *parent {
                *n += 1;
                out.push(Some(format!("{path}#{n}")));
                continue;
            }
            block_scalar = None;
        }
        if is_filler(l) {
            out.push(None);
            continue;
        }
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        let mut content = l.trim_start();
        let mut at = indent;
        // `- ` items, possibly several on one line (`- - a`), each an index under the parent.
        while let Some(rest) = content.strip_prefix("- ").or_else(|| (content == "-").then_some("")) {
            let n = match stack.last_mut() {
                Some((_, _, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => 0,
            };
            stack.push((at, n.to_string(), 0));
            at += 2;
            content = rest.trim_start();
        }
        if let Some(key) = key_of(content) {
            stack.push((at, key, 0));
            let v = value_after_key(content);
            if v.starts_with('|') || v.starts_with('>') {
                block_scalar = Some((at, path_of(&stack), 0));
            }
        }
        out.push(Some(path_of(&stack)));
    }
    out
}

fn path_of(stack: &[(usize, String, usize)]) -> String {
    stack.iter().map(|(_, s, _)| s.as_str()).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# The hub's config.
storage: sqlite://renkei.db

sources:
  shop:
    format: json
    auth: { token: shop-token-123 }   # the sender's token

  # Orders from kintone.
  crm:
    format: json
destinations:
  kintone:
    type: kintone
    subdomain: example
    app: 12
    tokens:
      - kintone-token-abc
      - kintone-token-def
flows:
  f:
    source: shop
    steps:
      - to: kintone
        body: |
          {\"a\": 1}
";

    fn redactor() -> Redactor {
        Redactor::new(["shop-token-123", "kintone-token-abc", "kintone-token-def"].map(String::from))
    }

    #[test]
    fn cuts_out_an_item_as_written() {
        assert_eq!(
            item(TEXT, "sources", "shop").unwrap().unwrap(),
            "format: json\nauth: { token: shop-token-123 }   # the sender's token\n"
        );
        assert_eq!(item(TEXT, "sources", "crm").unwrap().unwrap(), "format: json\n");
        assert_eq!(item(TEXT, "sources", "nope").unwrap(), None);
        assert_eq!(item(TEXT, "tables", "t").unwrap(), None);
        assert_eq!(names(TEXT, "sources").unwrap(), ["shop", "crm"]);
        assert_eq!(names(TEXT, "flows").unwrap(), ["f"]);
        assert!(matches!(item(TEXT, "server", "x"), Err(EditError::UnknownSection(_))));
    }

    #[test]
    fn replaces_adds_and_removes_keeping_the_rest() {
        let t = set_item(TEXT, "sources", "crm", "format: csv\ncsv: { encoding: shift_jis }\n").unwrap();
        assert!(
            t.contains(
                "  # Orders from kintone.\n  crm:\n    format: csv\n    csv: { encoding: shift_jis }\ndestinations:"
            ),
            "{t}"
        );
        assert!(t.starts_with("# The hub's config.\n"));
        let t = set_item(&t, "sources", "web", "format: form").unwrap();
        assert_eq!(names(&t, "sources").unwrap(), ["shop", "crm", "web"]);
        assert_eq!(item(&t, "sources", "web").unwrap().unwrap(), "format: form\n");
        let t = set_item(&t, "tables", "codes", "rows:\n  - { a: 1 }").unwrap();
        assert!(t.ends_with("tables:\n  codes:\n    rows:\n      - { a: 1 }\n"), "{t}");
        let t = remove_item(&t, "sources", "crm").unwrap();
        assert_eq!(names(&t, "sources").unwrap(), ["shop", "web"]);
        assert!(!t.contains("crm"));
        let t = remove_item(&t, "tables", "codes").unwrap();
        assert!(t.contains("tables: {}"));
        let t = set_item(&t, "tables", "again", "rows: []").unwrap();
        assert!(t.contains("tables:\n  again:\n    rows: []\n"), "{t}");
        assert!(matches!(remove_item(&t, "flows", "nope"), Err(EditError::NotFound { .. })));
        assert!(matches!(set_item(&t, "flows", "a b", "x: 1"), Err(EditError::BadName(_))));
    }

    #[test]
    fn flow_style_sections_are_refused() {
        let t = "sources: { a: { format: json } }\n";
        assert!(matches!(item(t, "sources", "a"), Err(EditError::NotBlock { .. })));
    }

    #[test]
    fn masked_lines_get_their_secrets_back() {
        let r = redactor();
        let shown = redact(TEXT, &r);
        assert!(!shown.contains("token-"), "{shown}");
        assert!(shown.contains("auth: { token: [REDACTED] }"));
        // An edit elsewhere; the masks come back as the secrets.
        let edited = shown.replace("app: 12", "app: 13");
        let back = restore(&edited, TEXT, &r).unwrap();
        assert_eq!(back, TEXT.replace("app: 12", "app: 13"));
        // A masked line that was changed cannot be restored: say which.
        let bad = shown.replace("auth: { token: [REDACTED] }", "auth: { token: [REDACTED], basic: x }");
        assert_eq!(restore(&bad, TEXT, &r), Err(EditError::Mask { line: 7 }));
        // A mask moved to another key is not given that key's secret.
        let moved = shown.replace("subdomain: example", "subdomain: [REDACTED]");
        assert!(matches!(restore(&moved, TEXT, &r), Err(EditError::Mask { .. })));
    }

    #[test]
    fn sets_a_key_inside_a_list_item() {
        let flow = "source: shop\nsteps:\n  - to: kintone\n    action: upsert\n    record:\n      a: \"{{ body.a }}\"\n      b: x\n    # after\n  - to: other\n";
        let t = set_in(flow, "steps.0", "record", "code: \"{{ body.code }}\"\nname: \"{{ body.name }}\"").unwrap();
        assert_eq!(
            t,
            "source: shop\nsteps:\n  - to: kintone\n    action: upsert\n    record:\n      code: \"{{ body.code }}\"\n      name: \"{{ body.name }}\"\n    # after\n  - to: other\n"
        );
        // A key the item lacks is added at its end; an inline value stays on the key's line.
        let t = set_in(flow, "steps.1", "path", "/x").unwrap();
        assert!(t.ends_with("  - to: other\n    path: /x\n"), "{t}");
        let t = set_in("url: https://x\nenabled: true # on\nsource: a\n", "", "enabled", "false").unwrap();
        assert_eq!(t, "url: https://x\nenabled: false\nsource: a\n");
        let t = set_in("url: https://x\nsource: a\n", "", "enabled", "false").unwrap();
        assert_eq!(t, "url: https://x\nsource: a\nenabled: false\n");
        let t = set_in("steps: [ { to: a } ]\n", "steps.0", "record", "a: 1");
        assert!(matches!(t, Err(EditError::NotBlock { .. })));
    }

    #[test]
    fn line_paths_follow_keys_and_list_items() {
        let lines: Vec<&str> = TEXT.lines().collect();
        let paths = line_paths(&lines);
        let at = |s: &str| paths[lines.iter().position(|l| l.contains(s)).unwrap()].clone().unwrap();
        assert_eq!(at("shop-token"), "sources.shop.auth");
        assert_eq!(at("kintone-token-abc"), "destinations.kintone.tokens.0");
        assert_eq!(at("kintone-token-def"), "destinations.kintone.tokens.1");
        assert_eq!(at("to: kintone"), "flows.f.steps.0.to");
        assert_eq!(at("\"a\": 1"), "flows.f.steps.0.body#1");
        assert_eq!(paths[0], None);
    }
}
