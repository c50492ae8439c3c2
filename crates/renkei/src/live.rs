//! The live config: which revision a node runs, how an edit becomes a new revision, and how every node
//! picks it up without a restart.
//!
//! Revisions live in the store, sealed under the master key. At start the config file is compared with the
//! last revision the file gave: if the file changed, it is stored and runs (the file wins); if not, the newest
//! revision runs, which may be an edit made in the console, through the API or with `renkei apply`. An edit
//! is loaded as a whole (every problem with its line, as `renkei check`), stored only when it loads, against
//! the revision it was made from (two admins cannot silently undo each other), and runs on this node at once;
//! the other nodes see the new head within [`RELOAD_EVERY`].
//!
//! What a reload changes: sources, destinations, flows, tables, subscriptions, `network`, `history` and the
//! worker's per-run settings. `server` and `storage` are read once at start: a revision that changes them runs
//! everything else and says, in the log, that those wait for a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use renkei_core::config::edit::EditError;
use renkei_core::config::{load, Loaded, Problem};
use renkei_store::{NewAudit, Store, StoreError};

use crate::app::App;
use crate::secrets::{sealed_by, MasterKey};

/// How often a node looks for a revision newer than the one it runs.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Turns config text into a loaded config the way this node does: `${VAR}` from its environment, table files
/// relative to the config file's folder.
#[derive(Clone)]
pub struct Loader {
    dir: PathBuf,
    env: Arc<EnvLookup>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Default for Loader {
    fn default() -> Loader {
        Loader::new(PathBuf::new(), Arc::new(|k: &str| std::env::var(k).ok()))
    }
}

impl Loader {
    pub fn new(dir: PathBuf, env: Arc<EnvLookup>) -> Loader {
        Loader { dir, env }
    }

    /// For the config file at `path`, with the process environment.
    pub fn for_file(path: &Path) -> Loader {
        Loader::new(path.parent().map(Path::to_path_buf).unwrap_or_default(), Arc::new(|k: &str| std::env::var(k).ok()))
    }

    /// Loads on a blocking thread: a config's table files are read from disk.
    pub async fn load_off_runtime(&self, text: String) -> Result<Loaded, Vec<Problem>> {
        let loader = self.clone();
        match tokio::task::spawn_blocking(move || loader.load(&text)).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub fn load(&self, text: &str) -> Result<Loaded, Vec<Problem>> {
        let read = |name: &str| std::fs::read(self.dir.join(name)).map_err(|e| e.to_string());
        load(text, &|k| (self.env)(k), &read)
    }
}

fn audit(actor: &str, action: &str, target: &str, detail: serde_json::Value, now: DateTime<Utc>) -> NewAudit {
    NewAudit { at: now, actor: actor.into(), action: action.into(), target: target.into(), detail }
}

/// A stored revision's text, opened with the master key (a revision stored before sealing is plain text).
pub(crate) fn open(key: &MasterKey, text: &str) -> anyhow::Result<String> {
    match sealed_by(text) {
        Some(_) => key.open(text).map_err(|e| anyhow!(e)),
        None => Ok(text.to_owned()),
    }
}

/// Decides which config runs at start (see the module's doc) and returns it with its revision.
pub async fn adopt(
    store: &dyn Store,
    key: &MasterKey,
    loader: &Loader,
    file: Loaded,
    now: DateTime<Utc>,
) -> anyhow::Result<(Loaded, i64)> {
    crate::secrets::seal_plaintext_revisions(store, key, now).await?;
    // Nodes starting together with one file: the first stores it, the others find it stored (a store of
    // theirs made from a revision list that is no longer the newest is refused, and they look again).
    let mut tries = 0;
    let revisions = loop {
        tries += 1;
        let revisions = store.config_revisions().await.context("reading config revisions")?;
        let last_file = revisions.iter().rev().find(|r| r.origin == "file");
        let file_unchanged = match last_file {
            Some(r) => open(key, &r.text)? == file.text,
            None => false,
        };
        if file_unchanged {
            break revisions;
        }
        let detail = serde_json::json!({ "origin": "file" });
        let seen = revisions.last().map_or(0, |r| r.id);
        let entry = audit("serve", "config.changed", "", detail, now);
        match store.add_config_revision(&key.seal(&file.text), "file", now, Some(seen), entry).await {
            Ok(id) => {
                if revisions.iter().any(|r| r.origin != "file" && Some(r.id) > last_file.map(|f| f.id)) {
                    tracing::warn!(
                        revision = id,
                        "the config file changed since the last start: it replaces the edits made since (they \
                         stay in the revision history; `renkei export` before a file change keeps them)"
                    );
                }
                return Ok((file, id));
            }
            Err(StoreError::Conflict(_)) if tries < 5 => continue,
            Err(e) => return Err(anyhow!(e).context("saving the config revision")),
        }
    };
    let last_file = revisions.iter().rev().find(|r| r.origin == "file");
    let head = revisions.last().expect("the file's revision is there");
    if Some(head.id) == last_file.map(|r| r.id) {
        return Ok((file, head.id));
    }
    let text = open(key, &head.text)?;
    match loader.load(&text) {
        Ok(loaded) => {
            tracing::info!(revision = head.id, origin = %head.origin, "running the newest config revision (edited)");
            Ok((loaded, head.id))
        }
        Err(problems) => Err(anyhow!(
            "config revision {} ({}) does not load on this node: {}; set what it needs (e.g. the environment \
             variables it names) or apply a fixed config with `renkei apply`",
            head.id,
            head.origin,
            problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )),
    }
}

/// Runs the store's newest revision if it is newer than this node's; returns it when it switched.
pub async fn reload(app: &App) -> anyhow::Result<Option<i64>> {
    let Some(key) = app.key.as_deref() else { return Ok(None) };
    let Some(head) = app.store.config_head().await? else { return Ok(None) };
    if head <= app.revision() || app.refused_revision() == Some(head) {
        return Ok(None);
    }
    let rev = app.store.config_revision(head).await?;
    let text = open(key, &rev.text)?;
    match app.loader.load_off_runtime(text).await {
        Ok(loaded) => {
            warn_restart_only(&app.loaded(), &loaded);
            app.set_config(loaded, head);
            tracing::info!(revision = head, origin = %rev.origin, "config reloaded");
            Ok(Some(head))
        }
        Err(problems) => {
            app.refuse_revision(head);
            Err(anyhow!(
                "config revision {head} does not load on this node, which keeps running revision {}: {}",
                app.revision(),
                problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ))
        }
    }
}

fn warn_restart_only(old: &Loaded, new: &Loaded) {
    if old.config.storage != new.config.storage || old.config.server.listen != new.config.server.listen {
        tracing::warn!("the new config changes `server` or `storage`: those take effect at the next restart");
    }
}

/// Looks for new revisions every [`RELOAD_EVERY`] until `shutdown`.
pub async fn watch(app: Arc<App>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
        }
        match reload(&app).await {
            Ok(Some(_)) => app.wake.notify_one(),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "config reload failed"),
        }
    }
}

/// Why an edit was not kept.
#[derive(Debug)]
pub enum EditFailure {
    Edit(EditError),
    /// The edited config does not load: every problem, with its line in the whole text.
    Problems(Vec<Problem>),
    /// Someone else's edit came first (or this node has not caught up): nothing was stored.
    Conflict(String),
    /// This hub runs without a master key (a bench), so it cannot keep edits.
    NoKey,
    Store(StoreError),
}

impl From<EditError> for EditFailure {
    fn from(e: EditError) -> EditFailure {
        EditFailure::Edit(e)
    }
}

/// Who made an edit, and through what.
#[derive(Clone, Debug)]
pub struct Editor<'a> {
    pub actor: &'a str,
    /// `console`, `api` or `health` (renkei itself, disabling a failing subscription).
    pub origin: &'a str,
    /// The audit log's action: `config.edit`, or what renkei did (`subscription.disabled`).
    pub action: &'a str,
    /// Why, for the audit entry's detail (renkei's own edits say).
    pub why: Option<serde_json::Value>,
}

/// Applies `change` to the running config's text, loads the result, keeps it as a new revision made from the
/// running one, and runs it. `what` names the change in the audit log (e.g. `flows/orders`).
pub async fn edit(
    app: &App,
    by: Editor<'_>,
    what: &str,
    base: Option<i64>,
    change: impl FnOnce(&Loaded) -> Result<String, EditFailure>,
) -> Result<i64, EditFailure> {
    let key = app.key.as_deref().ok_or(EditFailure::NoKey)?;
    let _one_at_a_time = app.edit_lock.lock().await;
    if base.is_none() {
        // Without a base the caller means "the config as it is now": catch up with another node's edit first.
        if let Err(e) = reload(app).await {
            tracing::warn!(error = %e, "catching up with the newest config revision before an edit failed");
        }
    }
    let current = app.loaded();
    let running = app.revision();
    if base.is_some_and(|b| b != running) {
        return Err(EditFailure::Conflict(format!(
            "the config was changed meanwhile: revision {running} is running, not {}",
            base.unwrap_or(0)
        )));
    }
    let text = change(&current)?;
    let loaded = app.loader.load_off_runtime(text.clone()).await.map_err(EditFailure::Problems)?;
    let now = app.clock.now();
    let mut detail = serde_json::json!({ "origin": by.origin, "base": running });
    if let Some(why) = by.why.clone() {
        detail["why"] = why;
    }
    let id = app
        .store
        .add_config_revision(
            &key.seal(&text),
            by.origin,
            now,
            Some(running),
            audit(by.actor, by.action, what, detail, now),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => EditFailure::Conflict(m),
            e => EditFailure::Store(e),
        })?;
    warn_restart_only(&current, &loaded);
    app.set_config(loaded, id);
    app.wake.notify_one();
    tracing::info!(revision = id, actor = by.actor, what, "config edited");
    Ok(id)
}

/// The running config's text with its secrets masked: what `renkei export`, the API and the console show.
pub fn shown_text(loaded: &Loaded) -> String {
    renkei_core::config::edit::redact(&loaded.text, &loaded.redactor)
}
