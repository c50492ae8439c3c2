//! Text a user reads, in English and Japanese.
//!
//! Every error that reaches a person (the API, the console, `renkei check`) is a [`Msg`], so no message can
//! be written in one language only. Which one is shown is decided at the edge ([`Lang`] from
//! `Accept-Language` or `LANG`).

use std::fmt;

/// The language a reader asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    En,
    Ja,
}

impl Lang {
    /// Picks the language from an `Accept-Language` header or a `LANG` value: Japanese when `ja` comes
    /// before `en` (or alone), English otherwise.
    pub fn from_header(value: Option<&str>) -> Lang {
        let Some(value) = value else { return Lang::En };
        for part in value.split(',') {
            let tag = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.starts_with("ja") {
                return Lang::Ja;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::En
    }
}

/// A message in both languages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Msg {
    pub en: String,
    pub ja: String,
}

impl Msg {
    pub fn new(en: impl Into<String>, ja: impl Into<String>) -> Msg {
        Msg { en: en.into(), ja: ja.into() }
    }

    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Ja => &self.ja,
        }
    }
}

/// English is what logs and `Display` show; people get [`Msg::get`].
impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.en)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_language_from_header() {
        assert_eq!(Lang::from_header(Some("ja,en-US;q=0.8")), Lang::Ja);
        assert_eq!(Lang::from_header(Some("en-US,ja;q=0.8")), Lang::En);
        assert_eq!(Lang::from_header(Some("ja_JP.UTF-8")), Lang::Ja);
        assert_eq!(Lang::from_header(Some("fr")), Lang::En);
        assert_eq!(Lang::from_header(None), Lang::En);
    }
}
