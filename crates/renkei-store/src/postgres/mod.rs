//! The PostgreSQL backend: several renkei nodes share one database, and so one queue.
//!
//! It behaves as the SQLite backend does (the conformance suite is the contract); what differs is that
//! writers run at the same time, on different nodes, under READ COMMITTED. Why the queue rules still hold:
//!
//! - **A delivery is claimed by one worker at a time.** The claim picks its rows with `FOR UPDATE OF d SKIP
//!   LOCKED` in the same statement that marks them: a row another node is claiming right now is locked and
//!   skipped; a row another node claimed and committed since our snapshot is re-checked on its new version
//!   (in flight, lease not run out: not due) and dropped.
//! - **A late worker cannot overwrite a takeover.** `record_attempt` reads `lease_owner` with `FOR UPDATE`,
//!   which waits for a claim in progress and then reads the row as committed, not as the snapshot had it.
//! - **Deliveries of one ordering key get ids in commit order.** Sequence values are handed out at insert, not
//!   at commit, so without care a later ingest could take a higher id, commit first, and be claimed before
//!   the earlier one is even visible. `ingest` and `add_deliveries` therefore take
//!   `pg_advisory_xact_lock(<schema>, hashtext(flow || chr(31) || order_key))` for every key they insert,
//!   before inserting, all in one sorted statement (no lock-order deadlock between two batches). The lock is
//!   held to commit, and PostgreSQL makes a transaction visible before it lets go of its locks, so the next
//!   ingest of the key takes its id after the previous one is committed and visible: any snapshot that sees a
//!   delivery of a key sees every earlier one. (Different keys may hash alike; they then wait for each other,
//!   which costs time, never order.)
//! - **The claim's "no earlier open delivery of the key" check is safe without locking those rows.** An
//!   earlier delivery that is open looks open in every snapshot that sees it: claimed by another node it is
//!   `in_flight`, which still blocks; being claimed right now it still shows as `pending`. A snapshot can
//!   only be out of date in the other direction (a delivery finished since), which makes a claim wait one
//!   round, never overtake. The one exception is a dead delivery an admin retries while the claim runs: the
//!   claim may take a later delivery of its key, exactly as in SQLite when the claim comes just before the
//!   retry (a retry reopens a delivery out of order on either backend).
//! - **Purge does not delete what a retry or replay is reopening.** Those lock the event row (`FOR SHARE`);
//!   purge locks its candidates `FOR UPDATE SKIP LOCKED`, then deletes them in a new statement that checks
//!   again for open deliveries: it sees every reopening committed before its lock, and a later one waits for
//!   the purge and then finds the event gone (as SQLite's single writer would order them).
//!
//! Unlike SQLite, opening never releases claims: other nodes may be working on them. A dead node's claims
//! are taken over when their leases run out. Migrations run under an advisory lock, so nodes may start at once.
//!
//! Space: deleted rows are reclaimed by autovacuum; the store never runs VACUUM (a VACUUM FULL would lock
//! every node out), so unlike SQLite the file does not shrink after a purge; the space is reused.
//!
//! Text: compared as SQLite compares it. Event ids sort in byte order (`COLLATE "C"`), whatever the database
//! locale; search matches SQLite's LIKE, which ignores case for ASCII letters only (see `rows::like`).
//! PostgreSQL text cannot hold U+0000, so free text (event types, keys, errors, URLs) is stored with U+0000
//! replaced by U+FFFD rather than failing the write; JSON values are unaffected (serialized JSON escapes it).
//!
//! Needs PostgreSQL 12 or later (`WITH ... AS MATERIALIZED`); tested on 15.
//!
//! This module never reads the clock, and never prints the database password (not in `Debug`, not in errors).

mod auth;
mod history;
mod queue;
mod rows;

use std::borrow::Cow;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use renkei_core::config::storage::PgSettings;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::*;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_state.sql")),
    (3, include_str!("../../migrations/postgres/0003_access.sql")),
    (4, include_str!("../../migrations/postgres/0004_config_origin.sql")),
    (5, include_str!("../../migrations/postgres/0005_console_sessions.sql")),
    (6, include_str!("../../migrations/postgres/0006_limit_slots.sql")),
    (7, include_str!("../../migrations/postgres/0007_held.sql")),
];

pub struct PgStore {
    pool: PgPool,
    /// `user@host:port/database`, for `Debug`: never the password.
    target: String,
    schema: Option<String>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("target", &self.target).field("schema", &self.schema).finish()
    }
}

impl PgStore {
    /// Connects to the database named by a `postgres://` URL and brings its tables up to date, in the URL's
    /// `schema` (created if missing) or else the connection's default schema (`search_path`). The URL's
    /// `pool_size`, `acquire_timeout` and `statement_timeout` size the pool ([`PgSettings`]). `now` only dates
    /// the migrations applied: unlike SQLite, nothing is released on open (other nodes may hold the claims).
    pub async fn open(url: &str, now: DateTime<Utc>) -> Result<PgStore> {
        let (url, settings) = settings(url)?;
        PgStore::connect(&url, settings, now, MIGRATIONS).await
    }

    /// [`PgStore::open`] in `schema` (whatever the URL says), created if missing: several hubs (or tests) in
    /// one database.
    pub async fn open_in_schema(url: &str, schema: &str, now: DateTime<Utc>) -> Result<PgStore> {
        let (url, mut settings) = settings(url)?;
        settings.schema = Some(schema.to_owned());
        PgStore::connect(&url, settings, now, MIGRATIONS).await
    }

    /// [`PgStore::open_in_schema`] with the schema migrated up to `version` only: tests of an older schema.
    #[cfg(test)]
    async fn open_in_schema_at(url: &str, schema: &str, now: DateTime<Utc>, version: i64) -> Result<PgStore> {
        let (url, mut settings) = settings(url)?;
        settings.schema = Some(schema.to_owned());
        let migrations = &MIGRATIONS[..MIGRATIONS.partition_point(|(v, _)| *v <= version)];
        PgStore::connect(&url, settings, now, migrations).await
    }

    async fn connect(
        url: &str,
        settings: PgSettings,
        now: DateTime<Utc>,
        migrations: &[(i64, &str)],
    ) -> Result<PgStore> {
        let schema = settings.schema.as_deref();
        // The parse error names the problem, not the URL, which may hold a password.
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("not a valid postgres:// URL: {e}")))?;
        if opts.get_application_name().is_none() {
            opts = opts.application_name("renkei");
        }
        let target = describe(&opts);
        let search_path = schema.map(quote_ident);
        // Milliseconds, PostgreSQL's unit for it; 0 turns the limit off.
        let statement_timeout = settings.statement_timeout.as_millis().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let search_path = search_path.clone();
                let statement_timeout = statement_timeout.clone();
                Box::pin(async move {
                    sqlx::query("SELECT set_config('statement_timeout', $1, false)")
                        .bind(statement_timeout)
                        .execute(&mut *conn)
                        .await?;
                    if let Some(path) = search_path {
                        sqlx::query("SELECT set_config('search_path', $1, false)")
                            .bind(path)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(unavailable)?;
        migrate(&pool, schema, now, migrations).await?;
        Ok(PgStore { pool, target, schema: settings.schema })
    }

    /// The pool, for the SQLite → PostgreSQL copy (`crate::migrate`).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// renkei's settings off the URL, and the URL the driver is given. A bad setting is a mistake in the config
/// (`renkei check` reports it too), not an outage.
fn settings(url: &str) -> Result<(String, PgSettings)> {
    PgSettings::from_url(url).map_err(|m| StoreError::Other(m.en.into()))
}

/// Where the store points, without the password.
fn describe(opts: &PgConnectOptions) -> String {
    let host = match opts.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    };
    format!("{}@{host}/{}", opts.get_username(), opts.get_database().unwrap_or(""))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies those of `migrations` (all of [`MIGRATIONS`], but for tests of an older schema) that are missing, in
/// one transaction under an advisory lock named after the schema: a second node starting at the same time waits,
/// then finds everything applied. `CREATE SCHEMA IF NOT EXISTS` is inside the lock too, since two of them at once
/// can fail on a duplicate key.
async fn migrate(pool: &PgPool, schema: Option<&str>, now: DateTime<Utc>, migrations: &[(i64, &str)]) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('renkei:migrate'), hashtext(COALESCE($1, current_schema(), '')))",
    )
    .bind(schema)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if let Some(schema) = schema {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS renkei_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM renkei_migrations").fetch_all(&mut *tx).await.map_err(db)?;
    for (version, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        // A `&str` without binds goes by the simple query protocol, which runs several statements. (Not
        // `raw_sql`: its future is not `Send` for every lifetime, so `open` could not be spawned.)
        sqlx::Executor::execute(&mut *tx, *sql).await.map_err(db)?;
        sqlx::query("INSERT INTO renkei_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// Free text as PostgreSQL can store it: U+0000 becomes U+FFFD (text columns reject NUL).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        // A connection cut in the middle of the protocol (during TLS negotiation, say) reads as garbage.
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(d) if is_unavailable_code(d.code().as_deref()) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Other(Box::new(e)),
    }
}

/// SQLSTATEs that mean the database cannot take the write now, which ingress reports as 503: class 08
/// (connection), class 53 (insufficient resources: disk full, out of memory, too many connections), 57P01-03
/// (shutting down, crashed, starting up), 58030 (I/O error), and 25006 (read-only: after a failover, connected
/// to a standby).
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03" | "58030" | "25006")
}

/// A conflict between two transactions that running the transaction again resolves: deadlock detected (two
/// ingests claiming the same dedupe keys in different orders) or a serialization failure.
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40P01" | "40001")))
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(&self, events: Vec<NewEvent>, now: DateTime<Utc>) -> Result<Vec<Ingested>> {
        queue::ingest(&self.pool, events, now).await
    }

    async fn record_rejected(&self, r: Rejected) -> Result<()> {
        queue::record_rejected(&self.pool, r).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        skip: &[FlowStep],
    ) -> Result<Vec<Claimed>> {
        queue::claim(&self.pool, owner, now, lease_until, limit, skip).await
    }

    async fn record_attempt(
        &self,
        owner: &str,
        attempt: NewAttempt,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> Result<()> {
        queue::record_attempt(&self.pool, owner, attempt, transition, now).await
    }

    async fn release(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let released = queue::release(&self.pool, owner, None, now).await?;
        // The deliveries are given back whatever happens here: a slot not freed runs out at its `until`.
        if let Err(e) = queue::free_slots_of(&self.pool, owner).await {
            tracing::warn!(error = %e, "giving back the shared concurrency slots failed; they free themselves later");
        }
        Ok(released)
    }

    async fn give_back(&self, owner: &str, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        queue::release(&self.pool, owner, Some(ids), now).await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn take_slot(
        &self,
        key: &str,
        cap: u32,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u32>> {
        queue::take_slot(&self.pool, key, cap, owner, now, until).await
    }

    async fn free_slot(&self, key: &str, slot: u32, owner: &str) -> Result<()> {
        queue::free_slot(&self.pool, key, slot, owner).await
    }

    async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> Result<u64> {
        queue::renew_leases(&self.pool, owner, ids, until).await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        queue::next_due(&self.pool).await
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRecord>> {
        history::list_events(&self.pool, f).await
    }

    async fn get_event(&self, id: &str) -> Result<EventRecord> {
        history::get_event(&self.pool, id).await
    }

    async fn list_deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
        history::list_deliveries(&self.pool, f).await
    }

    async fn get_delivery(&self, id: i64) -> Result<DeliveryRecord> {
        history::get_delivery(&self.pool, id).await
    }

    async fn list_attempts(&self, f: &AttemptFilter) -> Result<Vec<AttemptRecord>> {
        history::list_attempts(&self.pool, f).await
    }

    async fn retry_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<DeliveryRecord> {
        queue::retry_delivery(&self.pool, id, now).await?;
        history::get_delivery(&self.pool, id).await
    }

    async fn retry_dead(&self, f: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64> {
        queue::retry_dead(&self.pool, f, now).await
    }

    async fn add_deliveries(
        &self,
        event_id: &str,
        deliveries: Vec<NewDelivery>,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        queue::add_deliveries(&self.pool, event_id, deliveries, now).await
    }

    async fn queue_stats(&self, _now: DateTime<Utc>) -> Result<QueueStats> {
        history::queue_stats(&self.pool).await
    }

    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        queue::purge(&self.pool, before, now).await
    }

    async fn save_config(&self, text: &str, now: DateTime<Utc>) -> Result<()> {
        queue::save_config(&self.pool, text, now).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn get_state(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM kv_state WHERE key = $1")
            .bind(text(key))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn put_state(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO kv_state (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(text(key))
        .bind(text(value))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn add_count(&self, key: &str, by: i64) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO counters (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = counters.value + excluded.value RETURNING value",
        )
        .bind(text(key))
        .bind(by)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn counts(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT key, value FROM counters WHERE starts_with(key, $1) ORDER BY key")
            .bind(text(prefix))
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }
    async fn create_token(&self, token: NewToken, audit: NewAudit) -> Result<()> {
        auth::create_token(&self.pool, token, audit).await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        auth::find_token(&self.pool, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        auth::list_tokens(&self.pool).await
    }

    async fn revoke_token(&self, name: &str, audit: NewAudit) -> Result<()> {
        auth::revoke_token(&self.pool, name, audit).await
    }

    async fn add_user(&self, user: NewUser, audit: NewAudit) -> Result<()> {
        auth::add_user(&self.pool, user, audit).await
    }

    async fn get_user(&self, name: &str) -> Result<UserRecord> {
        auth::get_user(&self.pool, name).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        auth::list_users(&self.pool).await
    }

    async fn remove_user(&self, name: &str, audit: NewAudit) -> Result<()> {
        auth::remove_user(&self.pool, name, audit).await
    }

    async fn append_audit(&self, entry: NewAudit) -> Result<()> {
        auth::append_audit(&self.pool, &entry).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        auth::list_audit(&self.pool, filter).await
    }

    async fn put_session(&self, session: &SessionRecord, forget_before: DateTime<Utc>) -> Result<()> {
        auth::put_session(&self.pool, session, forget_before).await
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
        made_since: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        auth::touch_session(&self.pool, id_hash, now, idle_since, made_since).await
    }

    async fn end_session(&self, id_hash: &str) -> Result<()> {
        auth::end_session(&self.pool, id_hash).await
    }

    async fn config_head(&self) -> Result<Option<i64>> {
        auth::config_head(&self.pool).await
    }

    async fn config_revision(&self, id: i64) -> Result<ConfigRevision> {
        auth::config_revision(&self.pool, id).await
    }

    async fn add_config_revision(
        &self,
        text: &str,
        origin: &str,
        now: DateTime<Utc>,
        base: Option<i64>,
        audit: NewAudit,
    ) -> Result<i64> {
        auth::add_config_revision(&self.pool, text, origin, now, base, audit).await
    }

    async fn config_revisions(&self) -> Result<Vec<ConfigRevision>> {
        auth::config_revisions(&self.pool).await
    }

    async fn rewrite_config_revisions(&self, texts: Vec<(i64, String)>, audit: NewAudit) -> Result<()> {
        auth::rewrite_config_revisions(&self.pool, texts, audit).await
    }
}

#[cfg(test)]
mod tests;
