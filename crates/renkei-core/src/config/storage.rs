//! The settings a `postgres://` storage URL carries for renkei itself, next to the driver's own parameters.
//!
//! ```yaml
//! storage: "postgres://renkei@db.internal/renkei?sslmode=require&pool_size=20&statement_timeout=30s&acquire_timeout=5s&schema=hub"
//! ```
//!
//! [`PgSettings::from_url`] splits renkei's parameters off the URL and checks every other one is a parameter
//! the driver knows (a misspelt parameter would otherwise be silently ignored), so `renkei check` reports a
//! bad value with the rest of the config and the store connects with exactly what was checked.
//!
//! Parsing only: nothing here connects. Messages never repeat the URL, which may carry a password.

use std::time::Duration;

use crate::message::Msg;
use crate::types::Span;

/// renkei's own parameters of a `postgres://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections this node keeps open at most (`pool_size`).
    pub pool_size: u32,
    /// How long a request waits for a connection before it fails as unavailable (503) (`acquire_timeout`).
    pub acquire_timeout: Duration,
    /// The longest one statement may run; zero means no limit (`statement_timeout`).
    pub statement_timeout: Duration,
    /// The schema holding renkei's tables, created if missing; `None`: the connection's default (`schema`).
    pub schema: Option<String>,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            pool_size: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            schema: None,
        }
    }
}

/// renkei's parameters, as written in the URL.
pub const RENKEI_PARAMS: &[&str] = &["pool_size", "acquire_timeout", "statement_timeout", "schema"];

/// The parameters the PostgreSQL driver reads from the URL (sqlx 0.8), besides `options[NAME]`.
pub const DRIVER_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

const MAX_POOL_SIZE: u32 = 1000;
/// PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1).
const MAX_SCHEMA_BYTES: usize = 63;

impl PgSettings {
    /// Splits a `postgres://` URL into the URL the driver connects with (its own parameters only) and renkei's
    /// settings (defaults for what is not given).
    pub fn from_url(url: &str) -> Result<(String, PgSettings), Msg> {
        let mut settings = PgSettings::default();
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), settings));
        };
        let mut seen: Vec<String> = Vec::new();
        let mut driver = form_urlencoded::Serializer::new(String::new());
        let mut driver_params = 0;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if RENKEI_PARAMS.contains(&&*key) {
                if seen.iter().any(|k| *k == key) {
                    return Err(Msg::new(
                        format!("storage URL: `{key}` is given twice"),
                        format!("storage の URL で `{key}` が 2 回指定されています"),
                    ));
                }
                seen.push(key.to_string());
                settings.set(&key, &value)?;
            } else if DRIVER_PARAMS.contains(&&*key) || (key.starts_with("options[") && key.ends_with(']')) {
                driver.append_pair(&key, &value);
                driver_params += 1;
            } else {
                return Err(Msg::new(
                    format!(
                        "storage URL: unknown parameter `{key}` (renkei's: {}; the driver's: {}, options[NAME])",
                        RENKEI_PARAMS.join(", "),
                        DRIVER_PARAMS.join(", ")
                    ),
                    format!(
                        "storage の URL のパラメーター `{key}` は使えません（renkei のもの: {}、ドライバーのもの: {}、options[NAME]）",
                        RENKEI_PARAMS.join(", "),
                        DRIVER_PARAMS.join(", ")
                    ),
                ));
            }
        }
        let url = if driver_params == 0 { base.to_owned() } else { format!("{base}?{}", driver.finish()) };
        Ok((url, settings))
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), Msg> {
        let bad = |en: String, ja: String| Err(Msg::new(format!("storage URL: {en}"), format!("storage の URL: {ja}")));
        match key {
            "pool_size" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_POOL_SIZE).contains(&n) => self.pool_size = n,
                _ => {
                    return bad(
                        format!("pool_size must be a whole number from 1 to {MAX_POOL_SIZE}, not `{value}`"),
                        format!("pool_size は 1 から {MAX_POOL_SIZE} までの整数にしてください（`{value}`）"),
                    )
                }
            },
            "acquire_timeout" => match Span::parse(value) {
                Ok(Span(d)) if d >= Duration::from_millis(100) && d <= Duration::from_secs(600) => {
                    self.acquire_timeout = d
                }
                _ => {
                    return bad(
                        format!("acquire_timeout must be a duration from 100ms to 10m (e.g. 5s), not `{value}`"),
                        format!("acquire_timeout は 100ms から 10m までの時間にしてください（例: 5s、`{value}`）"),
                    )
                }
            },
            "statement_timeout" => match Span::parse(value) {
                Ok(Span(d)) if d.is_zero() || (d >= Duration::from_millis(100) && d <= Duration::from_secs(86400)) => {
                    self.statement_timeout = d
                }
                _ => {
                    return bad(
                        format!(
                            "statement_timeout must be 0 (no limit) or a duration from 100ms to 1d (e.g. 30s), not `{value}`"
                        ),
                        format!(
                            "statement_timeout は 0（制限なし）か 100ms から 1d までの時間にしてください（例: 30s、`{value}`）"
                        ),
                    )
                }
            },
            "schema" => {
                if value.is_empty() || value.len() > MAX_SCHEMA_BYTES || value.contains('\0') {
                    return bad(
                        format!("schema must be a name of 1 to {MAX_SCHEMA_BYTES} bytes"),
                        format!("schema は 1 から {MAX_SCHEMA_BYTES} バイトの名前にしてください"),
                    );
                }
                self.schema = Some(value.to_owned());
            }
            _ => unreachable!("only renkei's parameters are set"),
        }
        Ok(())
    }
}

/// renkei's parameters of a `sqlite://FILE?...` URL: `max_size` caps the database file (past it, ingress
/// answers 503 and stores nothing: a disk that fills up with events stops the hub cleanly, before the file
/// system is full for everything else on the machine), `busy_timeout` is how long a write waits for a lock
/// another process holds before it fails as unavailable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteSettings {
    /// The file, as the URL names it.
    pub path: String,
    pub max_size: Option<u64>,
    pub busy_timeout: Duration,
}

fn unknown_sqlite_parameter(name: &str) -> Msg {
    Msg::new(
        format!("storage: `{name}` is not a parameter of a sqlite URL (max_size, busy_timeout)"),
        format!("storage: `{name}` は sqlite の URL のパラメーターではありません（max_size, busy_timeout）"),
    )
}

impl SqliteSettings {
    pub fn from_url(url: &str) -> Result<SqliteSettings, Msg> {
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut s = SqliteSettings { path: path.to_owned(), max_size: None, busy_timeout: Duration::from_secs(10) };
        for (k, v) in query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))) {
            match k {
                "max_size" => {
                    let size = crate::types::ByteSize::parse(v)
                        .map_err(|e| Msg::new(format!("storage max_size: {e}"), format!("storage の max_size: {e}")))?;
                    if size.0 < 1024 * 1024 {
                        return Err(Msg::new(
                            "storage max_size must be at least 1MiB",
                            "storage の max_size は 1MiB 以上にしてください",
                        ));
                    }
                    s.max_size = Some(size.0);
                }
                "busy_timeout" => {
                    s.busy_timeout = Span::parse(v)
                        .map_err(|e| {
                            Msg::new(format!("storage busy_timeout: {e}"), format!("storage の busy_timeout: {e}"))
                        })?
                        .0;
                }
                other => return Err(unknown_sqlite_parameter(other)),
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_parameters_keeps_the_defaults() {
        let (url, s) = PgSettings::from_url("postgres://u:p@h:5432/db").unwrap();
        assert_eq!(url, "postgres://u:p@h:5432/db");
        assert_eq!(s, PgSettings::default());
    }

    #[test]
    fn renkei_parameters_are_taken_off_and_the_driver_keeps_its_own() {
        let (url, s) = PgSettings::from_url(
            "postgres://u:p%3Fx@h/db?sslmode=require&pool_size=20&statement_timeout=0&acquire_timeout=500ms&schema=hub%201&options%5Bdefault_transaction_isolation%5D=serializable",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p%3Fx@h/db?sslmode=require&options%5Bdefault_transaction_isolation%5D=serializable"
        );
        assert_eq!(
            s,
            PgSettings {
                pool_size: 20,
                acquire_timeout: Duration::from_millis(500),
                statement_timeout: Duration::ZERO,
                schema: Some("hub 1".into()),
            }
        );
        let (url, _) = PgSettings::from_url("postgres://h/db?pool_size=3").unwrap();
        assert_eq!(url, "postgres://h/db");
    }

    #[test]
    fn bad_values_and_unknown_parameters_are_named_without_the_url() {
        for (query, says) in [
            ("pool_size=0", "pool_size must be"),
            ("pool_size=ten", "not `ten`"),
            ("acquire_timeout=10ms", "acquire_timeout must be"),
            ("statement_timeout=forever", "statement_timeout must be"),
            ("schema=", "schema must be"),
            ("connect_timeout=5", "unknown parameter `connect_timeout`"),
            ("pool_size=2&pool_size=3", "`pool_size` is given twice"),
        ] {
            let e = PgSettings::from_url(&format!("postgres://u:secret@h/db?{query}")).unwrap_err();
            assert!(e.en.contains(says), "{query}: {}", e.en);
            assert!(!e.en.contains("secret") && !e.ja.contains("secret"), "{}", e.en);
        }
    }
}
