//! Keeps MiniJinja's work per render bounded, so that a slow input means a bug rather than a template
//! that legitimately asks for 10^12 iterations.
//!
//! renkei's `Engine` keeps its MiniJinja environments private and MiniJinja is built without `fuel`, so
//! there is no instruction budget to set. What bounds a render without fuel:
//! - recursion (macros, `loop()` in recursive loops, `self.block()`) is exponential up to depth 500, and
//!   `set` / `with` / `namespace` rebind values so that `a ~ a` can double a string per line: banned;
//! - a number can only come from a literal of at most 4 digits (no `0x`, `1e9`, `1_000`, no `int` or
//!   `float` of a string such as `"9999" ~ "9999"`), so a count or width is at most 9999;
//! - at most one multiplier in the whole input: a `for` loop, `range`, `*` (string and list repetition),
//!   or a filter whose output can be ~10^4 times its input (`indent`, `center`, `join`, `replace`, ...);
//!   the one exception is a `for` together with a `range` (at most 9999 iterations of a loop body that
//!   has no multiplier of its own);
//! - at most 3 filter applications, each of which grows its input by a small factor (`list|string`);
//! - at most 256 bytes.
//!
//! Identifiers are matched as whole words anywhere in the text (string literals included), which is
//! conservative: some harmless inputs are skipped, none of the expensive shapes above gets through.

pub const MAX_LEN: usize = 256;

const BANNED: &[&str] =
    &["macro", "call", "caller", "recursive", "self", "set", "with", "namespace", "int", "float"];

const MULTIPLIERS: &[&str] =
    &["for", "range", "indent", "center", "join", "replace", "batch", "slice", "wordwrap", "format"];

pub fn allowed(text: &str) -> bool {
    if text.len() > MAX_LEN {
        return false;
    }
    let bytes = text.as_bytes();
    let mut multipliers = bytes.iter().filter(|&&b| b == b'*').count();
    if multipliers > 1 {
        return false;
    }
    let (mut fors, mut ranges) = (0, 0);
    let mut filters = bytes.iter().filter(|&&b| b == b'|').count();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let word = &text[start..i];
        if word.as_bytes()[0].is_ascii_digit() {
            // A number literal: plain decimal digits only (a unit after them, as in `30s`, is fine).
            let digits = word.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 4 || word.bytes().any(|b| matches!(b, b'x' | b'X' | b'e' | b'E' | b'b' | b'B' | b'o' | b'O' | b'_')) {
                return false;
            }
            continue;
        }
        if BANNED.contains(&word) {
            return false;
        }
        if MULTIPLIERS.contains(&word) {
            multipliers += 1;
            fors += usize::from(word == "for");
            ranges += usize::from(word == "range");
        }
        if word == "filter" {
            filters += 1;
        }
    }
    let for_over_range = multipliers == 2 && fors == 1 && ranges == 1;
    (multipliers <= 1 || for_over_range) && filters <= 3
}
