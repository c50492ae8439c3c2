//! The SQLite backend: one file, WAL mode, full durability, the queue in the same file.
//!
//! All writes go through one connection (`writer`), and every write transaction starts with `BEGIN
//! IMMEDIATE`: a deferred transaction that reads and then writes can fail with `SQLITE_BUSY` at once, whatever
//! the busy timeout, when another connection (a reader opening, a checkpoint) touched the lock in between;
//! an immediate one waits its turn. Reads use a small separate pool and see the last committed state (WAL).
//!
//! One renkei process per file: [`SqliteStore::open`] takes an exclusive lock on `<file>.lock`, and, because
//! no other process can hold claims then, releases the claims a crashed predecessor left behind.

mod auth;
mod batch;
mod group;
mod history;
mod queue;
mod rows;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::*;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_state.sql")),
    (3, include_str!("../../migrations/sqlite/0003_access.sql")),
    (4, include_str!("../../migrations/sqlite/0004_config_origin.sql")),
    (5, include_str!("../../migrations/sqlite/0005_console_sessions.sql")),
    (6, include_str!("../../migrations/sqlite/0006_held.sql")),
];

/// How many prepared texts the writer's connection keeps (least recently used out first).
const WRITER_STATEMENTS: usize = 200;

pub struct SqliteStore {
    writer: SqlitePool,
    /// Ingests, claims and attempt records go through the group-commit task, which owns its own handle on the
    /// writer.
    ingest_jobs: tokio::sync::mpsc::Sender<group::Job>,
    reader: SqlitePool,
    _lock: Option<std::fs::File>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database named by a `sqlite://FILE` URL, or `sqlite::memory:`.
    pub async fn open(url: &str, now: DateTime<Utc>) -> Result<SqliteStore> {
        let store = SqliteStore::connect(url, true).await?;
        let released = store.release_all(now).await?;
        if released > 0 {
            tracing::warn!(released, "released deliveries left in flight by a previous run");
        }
        Ok(store)
    }

    /// Opens a file that a running renkei may hold, for the command line's small changes (tokens, users)
    /// while the hub runs: takes no lock and releases no claims (they are the running process's). SQLite
    /// itself keeps two processes' writes apart. Never use it to run a worker.
    pub async fn open_beside(url: &str) -> Result<SqliteStore> {
        SqliteStore::connect(url, false).await
    }

    async fn connect(url: &str, exclusive: bool) -> Result<SqliteStore> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Unavailable(format!("not a sqlite URL: {url}")));
        }
        let settings =
            renkei_core::config::storage::SqliteSettings::from_url(url).map_err(|m| StoreError::Unavailable(m.en))?;
        let path = settings.path.as_str();
        let memory = path == ":memory:";
        let base = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(other)?
        } else {
            SqliteConnectOptions::new().filename(path)
        };
        let opts = base
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            // FULL: an acknowledged event survives power loss, not only a crash of renkei.
            .synchronous(SqliteSynchronous::Full)
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .foreign_keys(true)
            .busy_timeout(settings.busy_timeout)
            // Statement journals (a multi-row statement inside a transaction keeps one, to undo itself alone) in
            // memory, not in a temporary file created and deleted per statement: that file was most of the
            // cost of the group commit's multi-row inserts.
            .pragma("temp_store", "memory");
        // A cap on the file: past it, writes fail with SQLITE_FULL, which the hub answers as 503.
        let opts = match settings.max_size {
            Some(bytes) => opts.pragma("max_page_count", (bytes / 4096).to_string()),
            None => opts,
        };

        let lock = if memory || !exclusive { None } else { Some(take_lock(path)?) };
        // The writer does not checkpoint the WAL itself (SQLite's default, every 1000 pages, would copy them into
        // the file inside a commit, and the ingests of that commit would wait for it): the group-commit thread
        // checkpoints on a reader connection beside the writes (`group::checkpoints`).
        let writer_opts = if memory { opts.clone() } else { opts.clone().pragma("wal_autocheckpoint", "0") };
        // A batch's text is written for its rows (`batch.rs`), padded so that texts come in few shapes; a load
        // that changes sends about 100 of them (`renkei-bench e2e`), as many as sqlx keeps by default, and a text
        // pushed out is prepared again at ~0.3 M instructions a statement.
        let writer_opts = writer_opts.statement_cache_capacity(WRITER_STATEMENTS);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // The one connection is always in use: a ping before each transaction only costs a round trip.
            .test_before_acquire(false)
            .connect_with(writer_opts)
            .await
            .map_err(unavailable)?;
        migrate(&writer, MIGRATIONS).await?;
        // An in-memory database exists per connection: readers must share the writer.
        let reader = if memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(unavailable)?
        };
        let ingest_jobs = group::start(writer.clone(), (!memory).then(|| reader.clone()))?;
        Ok(SqliteStore { writer, ingest_jobs, reader, _lock: lock, path: (!memory).then(|| PathBuf::from(path)) })
    }

    /// The read pool, for the SQLite → PostgreSQL copy (`crate::migrate`), which holds this store's lock.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    async fn release_all(&self, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE deliveries SET status = CASE WHEN tries > 0 THEN 'retrying' ELSE 'pending' END,
                 lease_owner = NULL, lease_until = NULL, next_at = MIN(next_at, ?1), updated_at = ?1
             WHERE status = 'in_flight'",
        )
        .bind(ms(now))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(r.rows_affected())
    }
}

fn take_lock(path: &str) -> Result<std::fs::File> {
    let lock_path = format!("{path}.lock");
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {lock_path}: {e}")))?;
    file.try_lock().map_err(|_| {
        StoreError::Unavailable(format!(
            "{path} is in use by another renkei process (lock {lock_path}); one process per SQLite file"
        ))
    })?;
    Ok(file)
}

/// Applies those of `migrations` not applied yet (all of [`MIGRATIONS`], but for tests of an older schema).
async fn migrate(pool: &SqlitePool, migrations: &[(i64, &str)]) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS renkei_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(db)?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM renkei_migrations").fetch_all(pool).await.map_err(db)?;
    for (version, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db)?;
        sqlx::query("INSERT INTO renkei_migrations (version, applied_at) VALUES (?1, ?2)")
            .bind(version)
            .bind(Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok(())
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d) if is_unavailable_code(d.code().as_deref()) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(Box::new(e)),
    }
}

/// SQLITE_BUSY (5), SQLITE_FULL (13), SQLITE_IOERR (10), SQLITE_CANTOPEN (14) and their extended codes:
/// the database cannot take writes now, which ingress reports as 503.
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code.and_then(|c| c.parse::<i64>().ok()) else { return false };
    matches!(code & 0xff, 5 | 10 | 13 | 14)
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(Box::new(e))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, events: Vec<NewEvent>, now: DateTime<Utc>) -> Result<Vec<Ingested>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.ingest_jobs
            .send(group::Job::Ingest { events: events.into_iter().map(queue::EventRow::new).collect(), now, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn record_rejected(&self, r: Rejected) -> Result<()> {
        queue::record_rejected(&self.writer, r).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        skip: &[FlowStep],
    ) -> Result<Vec<Claimed>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let skip = serde_json::Value::Array(skip.iter().map(|s| serde_json::json!([s.flow, s.step])).collect());
        let job = group::Job::Claim { owner: owner.to_owned(), now, lease_until, limit, skip: skip.to_string(), reply };
        self.ingest_jobs.send(job).await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))??.decode()
    }

    async fn record_attempt(
        &self,
        owner: &str,
        attempt: NewAttempt,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = group::Job::Attempt { owner: owner.to_owned(), attempt: Box::new(attempt), transition, now, reply };
        self.ingest_jobs.send(job).await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    async fn release(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        queue::release(&self.writer, owner, None, now).await
    }

    async fn give_back(&self, owner: &str, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        queue::release(&self.writer, owner, Some(ids), now).await
    }

    async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> Result<u64> {
        queue::renew_leases(&self.writer, owner, ids, until).await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        queue::next_due(&self.reader).await
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRecord>> {
        history::list_events(&self.reader, f).await
    }

    async fn get_event(&self, id: &str) -> Result<EventRecord> {
        history::get_event(&self.reader, id).await
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
        history::list_deliveries(&self.reader, f).await
    }

    async fn get_delivery(&self, id: i64) -> Result<DeliveryRecord> {
        history::get_delivery(&self.reader, id).await
    }

    async fn list_attempts(&self, f: &AttemptFilter) -> Result<Vec<AttemptRecord>> {
        history::list_attempts(&self.reader, f).await
    }

    async fn retry_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<DeliveryRecord> {
        queue::retry_delivery(&self.writer, id, now).await?;
        history::get_delivery(&self.writer, id).await
    }

    async fn retry_dead(&self, f: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64> {
        queue::retry_dead(&self.writer, f, now).await
    }

    async fn add_deliveries(
        &self,
        event_id: &str,
        deliveries: Vec<NewDelivery>,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        queue::add_deliveries(&self.writer, event_id, &deliveries, now).await
    }

    async fn queue_stats(&self, _now: DateTime<Utc>) -> Result<QueueStats> {
        history::queue_stats(&self.reader).await
    }

    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        queue::purge(&self.writer, before, now).await
    }

    async fn save_config(&self, text: &str, now: DateTime<Utc>) -> Result<()> {
        let last: Option<String> = sqlx::query_scalar("SELECT text FROM config_revisions ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?;
        if last.as_deref() != Some(text) {
            sqlx::query("INSERT INTO config_revisions (loaded_at, text) VALUES (?1, ?2)")
                .bind(ms(now))
                .bind(text)
                .execute(&self.writer)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(db)?;
        Ok(())
    }

    async fn get_state(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM kv_state WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)
    }

    async fn put_state(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO kv_state (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(ms(now))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn add_count(&self, key: &str, by: i64) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO counters (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = counters.value + excluded.value RETURNING value",
        )
        .bind(key)
        .bind(by)
        .fetch_one(&self.writer)
        .await
        .map_err(db)
    }

    async fn counts(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT key, value FROM counters WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
            .bind(prefix)
            .fetch_all(&self.reader)
            .await
            .map_err(db)
    }
    async fn create_token(&self, token: NewToken, audit: NewAudit) -> Result<()> {
        auth::create_token(&self.writer, token, audit).await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        auth::find_token(&self.reader, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        auth::list_tokens(&self.reader).await
    }

    async fn revoke_token(&self, name: &str, audit: NewAudit) -> Result<()> {
        auth::revoke_token(&self.writer, name, audit).await
    }

    async fn add_user(&self, user: NewUser, audit: NewAudit) -> Result<()> {
        auth::add_user(&self.writer, user, audit).await
    }

    async fn get_user(&self, name: &str) -> Result<UserRecord> {
        auth::get_user(&self.reader, name).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        auth::list_users(&self.reader).await
    }

    async fn remove_user(&self, name: &str, audit: NewAudit) -> Result<()> {
        auth::remove_user(&self.writer, name, audit).await
    }

    async fn append_audit(&self, entry: NewAudit) -> Result<()> {
        auth::append_audit(&self.writer, &entry).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        auth::list_audit(&self.reader, filter).await
    }

    async fn put_session(&self, session: &SessionRecord, forget_before: DateTime<Utc>) -> Result<()> {
        auth::put_session(&self.writer, session, forget_before).await
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
        made_since: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        auth::touch_session(&self.writer, id_hash, now, idle_since, made_since).await
    }

    async fn end_session(&self, id_hash: &str) -> Result<()> {
        auth::end_session(&self.writer, id_hash).await
    }

    async fn config_head(&self) -> Result<Option<i64>> {
        auth::config_head(&self.reader).await
    }

    async fn config_revision(&self, id: i64) -> Result<ConfigRevision> {
        auth::config_revision(&self.reader, id).await
    }

    async fn add_config_revision(
        &self,
        text: &str,
        origin: &str,
        now: DateTime<Utc>,
        base: Option<i64>,
        audit: NewAudit,
    ) -> Result<i64> {
        auth::add_config_revision(&self.writer, text, origin, now, base, audit).await
    }

    async fn config_revisions(&self) -> Result<Vec<ConfigRevision>> {
        auth::config_revisions(&self.reader).await
    }

    async fn rewrite_config_revisions(&self, texts: Vec<(i64, String)>, audit: NewAudit) -> Result<()> {
        auth::rewrite_config_revisions(&self.writer, texts, audit).await
    }
}

#[cfg(test)]
mod tests;
