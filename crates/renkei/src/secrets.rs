//! Secrets at rest: the master key, and sealing what renkei stores that may hold secrets.
//!
//! What is sealed: config revisions, the YAML as written, which may hold literal tokens and passwords. (Tokens
//! and passwords of renkei's own users are hashed, not sealed; attempts are stored with secrets masked.)
//! Sealing is AES-256-GCM with a random 96-bit nonce per text, and the text's purpose as associated data, so a
//! sealed value cannot be moved to another column and opened there. A sealed text reads
//! `sealed:v1:<key id>:<base64 of nonce and ciphertext>`; the key id (16 hex digits of a hash of the key) tells
//! which key sealed it, so a node started with another key is stopped with a clear message instead of
//! writing under a second key.
//!
//! The master key is `RENKEI_MASTER_KEY` (base64 of 32 bytes) or a key file: `server.key_file`, by default
//! `renkei.key` beside the SQLite file, created with mode 0600 on first start. PostgreSQL has no file of its
//! own, so it needs the variable or `server.key_file` (every node must use the same key).
//!
//! The key is never logged, printed or returned: [`MasterKey`]'s `Debug` shows only its id.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use renkei_core::config::Config;
use renkei_store::{NewAudit, Store};
use sha2::{Digest, Sha256};

pub const KEY_ENV: &str = "RENKEI_MASTER_KEY";
/// The new key for `renkei rotate-key` when the current one comes from [`KEY_ENV`].
pub const NEW_KEY_ENV: &str = "RENKEI_NEW_MASTER_KEY";

const PREFIX: &str = "sealed:v1:";
/// Associated data of a sealed config revision.
const CONFIG_PURPOSE: &[u8] = b"renkei:config_revision";

pub struct MasterKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        MasterKey::from_bytes(key)
    }

    fn from_bytes(key: [u8; 32]) -> MasterKey {
        let digest = Sha256::new().chain_update(b"renkei master key id\0").chain_update(key).finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey { key, id }
    }

    /// Reads base64 of 32 bytes (standard or URL-safe alphabet, padded or not). The error never repeats the
    /// text, which may be most of a key.
    pub fn from_base64(text: &str) -> Result<MasterKey, String> {
        let text = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| "a master key must be base64 (e.g. from `openssl rand -base64 32`)".to_owned())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a master key must be 32 bytes; this one is {} bytes", b.len()))?;
        Ok(MasterKey::from_bytes(key))
    }

    fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key)
    }

    /// 16 hex digits that name the key without giving anything of it away.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key))
    }

    /// Seals a config revision's text.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: CONFIG_PURPOSE })
            .expect("AES-GCM encrypts any text that fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens what [`MasterKey::seal`] made with this key.
    pub fn open(&self, sealed: &str) -> Result<String, String> {
        let Some(id) = sealed_by(sealed) else { return Err("not a sealed text".into()) };
        if id != self.id {
            return Err(format!("sealed with master key {id}, not with this one ({})", self.id));
        }
        let data = sealed.rsplit(':').next().unwrap_or("");
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|_| "damaged sealed text")?;
        if bytes.len() < 12 {
            return Err("damaged sealed text".into());
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: CONFIG_PURPOSE })
            .map_err(|_| "the sealed text does not open with this key (damaged or altered)".to_owned())?;
        String::from_utf8(plain).map_err(|_| "the sealed text is not UTF-8".into())
    }
}

/// The id of the key that sealed `text`; `None` when it is not sealed (a revision stored before sealing).
pub fn sealed_by(text: &str) -> Option<&str> {
    text.strip_prefix(PREFIX)?.split(':').next()
}

/// Where the master key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    /// `sqlite::memory:`: nothing outlives the process, so neither does the key.
    Ephemeral,
}

/// Where the key of a config is: the environment when `env` (the value of [`KEY_ENV`]) is set, else the key
/// file. Errors for PostgreSQL without either.
pub fn key_source(config: &Config, env: Option<&str>) -> anyhow::Result<KeySource> {
    if env.is_some_and(|v| !v.trim().is_empty()) {
        return Ok(KeySource::Env);
    }
    if let Some(f) = &config.server.key_file {
        return Ok(KeySource::File(PathBuf::from(f)));
    }
    let storage = &config.storage;
    let path = storage
        .starts_with("sqlite:")
        .then(|| renkei_core::config::storage::SqliteSettings::from_url(storage).map(|s| s.path).unwrap_or_default());
    match path.as_deref() {
        Some(":memory:") => Ok(KeySource::Ephemeral),
        Some(p) => {
            let dir = Path::new(p).parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Ok(KeySource::File(dir.join("renkei.key")))
        }
        None => bail!(
            "PostgreSQL storage needs a master key that every node shares: set {KEY_ENV} (base64 of 32 bytes, \
             e.g. `openssl rand -base64 32`) or server.key_file"
        ),
    }
}

/// The file a rotation writes the new key to before anything is re-encrypted; renamed over the key file
/// once the store holds the new seals.
fn pending_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".new");
    path.with_file_name(name)
}

fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the master key {}", path.display()))?;
    warn_if_open_to_others(path);
    MasterKey::from_base64(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn warn_if_open_to_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the master key file can be read by other users: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_open_to_others(_: &Path) {}

/// Writes a key to a new file, readable by its owner only, and flushed to disk before this returns.
fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    // create_new: two processes starting at once cannot both write a key; the second fails and reads it.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).with_context(|| format!("creating the master key {}", path.display()))?;
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
    file.sync_all()?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename or a new file in `path`'s directory survive power loss (best effort).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The master key for a store: from the environment, or the key file (created if missing). Finishes a
/// rotation that stopped between re-encrypting and replacing the key file, and stops with a clear message
/// when the store's sealed texts were sealed with another key.
pub async fn master_key(store: &dyn Store, source: &KeySource, env: Option<&str>) -> anyhow::Result<MasterKey> {
    let ids = sealing_keys(store).await?;
    let key = match source {
        KeySource::Env => MasterKey::from_base64(env.unwrap_or("")).map_err(|e| anyhow!("{KEY_ENV}: {e}"))?,
        KeySource::Ephemeral => MasterKey::generate(),
        KeySource::File(path) => {
            let pending = pending_path(path);
            if pending.exists() {
                let new = read_key_file(&pending)?;
                if ids.iter().any(|id| id == new.id()) {
                    std::fs::rename(&pending, path).with_context(|| format!("replacing {}", path.display()))?;
                    sync_dir(path);
                    tracing::info!(key = new.id(), "finished an interrupted master key rotation");
                } else {
                    // The rotation stopped before the store took the new key: it never was the key.
                    std::fs::remove_file(&pending).with_context(|| format!("removing {}", pending.display()))?;
                }
            }
            if path.exists() {
                read_key_file(path)?
            } else if !ids.is_empty() {
                bail!(
                    "the store holds texts sealed with master key {}, and there is no key file at {}: restore \
                     the key file, or set {KEY_ENV}",
                    ids.join(", "),
                    path.display()
                );
            } else {
                let key = MasterKey::generate();
                match write_key_file(path, &key) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), key = key.id(), "created a master key");
                        key
                    }
                    // Another process created it first: use theirs.
                    Err(_) if path.exists() => read_key_file(path)?,
                    Err(e) => return Err(e),
                }
            }
        }
    };
    if let Some(other) = ids.iter().find(|id| *id != key.id()) {
        bail!(
            "the store's config revisions are sealed with master key {other}, but this key is {}: start with the \
             key they were sealed with ({KEY_ENV} or the key file; every node must share one)",
            key.id()
        );
    }
    Ok(key)
}

/// The ids of the keys that sealed the store's texts.
async fn sealing_keys(store: &dyn Store) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = store
        .config_revisions()
        .await
        .context("reading config revisions")?
        .iter()
        .filter_map(|r| sealed_by(&r.text).map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn audit(actor: &str, action: &str, detail: serde_json::Value, now: DateTime<Utc>) -> NewAudit {
    NewAudit { at: now, actor: actor.into(), action: action.into(), target: String::new(), detail }
}

/// Seals the revisions a version before sealing stored in plaintext. Returns how many.
pub async fn seal_plaintext_revisions(store: &dyn Store, key: &MasterKey, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let revisions = store.config_revisions().await.context("reading config revisions")?;
    let plain: Vec<(i64, String)> =
        revisions.iter().filter(|r| sealed_by(&r.text).is_none()).map(|r| (r.id, key.seal(&r.text))).collect();
    let n = plain.len();
    if n > 0 {
        let entry = audit("serve", "config.sealed", serde_json::json!({ "revisions": n, "key": key.id() }), now);
        store.rewrite_config_revisions(plain, entry).await.context("sealing stored config revisions")?;
        tracing::info!(revisions = n, "sealed config revisions stored in plaintext by an earlier version");
    }
    Ok(n)
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    pub revisions: usize,
    pub old: String,
    pub new: String,
}

/// Re-encrypts every sealed text from `old` to `new` in one transaction (plaintext revisions left by an earlier
/// version are sealed too), recorded in the audit log as done by `actor`. With a key file, the new key is
/// written beside it first and renamed over it after the store committed, so a stop at any point leaves a key
/// that opens the store ([`master_key`] finishes the rename).
pub async fn rotate(
    store: &dyn Store,
    source: &KeySource,
    old: &MasterKey,
    new: MasterKey,
    actor: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Rotated> {
    if old.id() == new.id() {
        bail!("the new master key is the current one");
    }
    let revisions = store.config_revisions().await.context("reading config revisions")?;
    let mut texts = Vec::with_capacity(revisions.len());
    for r in &revisions {
        let plain = match sealed_by(&r.text) {
            Some(_) => old.open(&r.text).map_err(|e| anyhow!("config revision {}: {e}", r.id))?,
            None => r.text.clone(),
        };
        texts.push((r.id, new.seal(&plain)));
    }
    if let KeySource::File(path) = source {
        write_key_file(&pending_path(path), &new)?;
    }
    let detail = serde_json::json!({ "revisions": texts.len(), "old_key": old.id(), "new_key": new.id() });
    let n = texts.len();
    let entry = audit(actor, "master_key.rotated", detail, now);
    if let Err(e) = store.rewrite_config_revisions(texts, entry).await {
        if let KeySource::File(path) = source {
            let _ = std::fs::remove_file(pending_path(path));
        }
        return Err(anyhow!(e).context("re-encrypting config revisions"));
    }
    if let KeySource::File(path) = source {
        std::fs::rename(pending_path(path), path).with_context(|| format!("replacing {}", path.display()))?;
        sync_dir(path);
    }
    Ok(Rotated { revisions: n, old: old.id().to_owned(), new: new.id().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let key = MasterKey::generate();
        let text = "server:\n  admin_token: s3cr3t-literal\n";
        let a = key.seal(text);
        let b = key.seal(text);
        assert_ne!(a, b, "a new nonce each time");
        assert!(!a.contains("s3cr3t"));
        assert_eq!(sealed_by(&a), Some(key.id()));
        assert_eq!(key.open(&a).unwrap(), text);
        let other = MasterKey::generate();
        assert!(other.open(&a).unwrap_err().contains("sealed with master key"));
        // One bit changed anywhere in the ciphertext: refused.
        let mut bytes = a.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(key.open(&String::from_utf8(bytes).unwrap()).is_err());
        assert_eq!(sealed_by("server: {}"), None);
    }

    #[test]
    fn keys_from_text_never_echo_it() {
        let k = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(k.to_base64(), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        assert_eq!(MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap().id(), k.id());
        let short = MasterKey::from_base64("c2hvcnQta2V5").unwrap_err();
        assert!(short.contains("32 bytes") && !short.contains("c2hvcnQ"), "{short}");
        assert!(!format!("{k:?}").contains("AAEC"), "Debug shows the id only");
    }

    #[test]
    fn where_the_key_is() {
        let cfg = |yaml: &str| renkei_core::config::load(yaml, &|_| None, &|_| Err("no files".into())).unwrap().config;
        assert_eq!(
            key_source(&cfg("storage: \"sqlite:///var/lib/renkei/renkei.db\"\n"), None).unwrap(),
            KeySource::File("/var/lib/renkei/renkei.key".into())
        );
        assert_eq!(
            key_source(&cfg("storage: \"sqlite://renkei.db\"\n"), None).unwrap(),
            KeySource::File("./renkei.key".into())
        );
        assert_eq!(key_source(&cfg("storage: \"sqlite://renkei.db\"\n"), Some("k")).unwrap(), KeySource::Env);
        let pg = cfg("storage: \"postgres://u@h/db\"\n");
        assert!(key_source(&pg, None).unwrap_err().to_string().contains(KEY_ENV));
        let pg_file = cfg("storage: \"postgres://u@h/db\"\nserver: { key_file: /etc/renkei/key }\n");
        assert_eq!(key_source(&pg_file, None).unwrap(), KeySource::File("/etc/renkei/key".into()));
    }
}
