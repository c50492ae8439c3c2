//! Access on PostgreSQL: API tokens, users and the audit log; and config revisions as a whole (for
//! re-encryption). As the SQLite module; names and free text go through [`text`] (no U+0000).
//!
//! Each change to a token or a user is written with its audit entry in one transaction, so the log never
//! misses a change that happened. Tokens are found by their hash; this module never sees a token, a password
//! or a master key.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{db, from_ms, ms, text};
use crate::rows::{revision_from_row, session_from_row};
use crate::*;

const MAX_PAGE: u32 = 500;

async fn audit(tx: &mut Transaction<'_, Postgres>, a: &NewAudit) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(ms(a.at))
        .bind(text(&a.actor))
        .bind(text(&a.action))
        .bind(text(&a.target))
        .bind(a.detail.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// A unique key already taken (a token or user name, a token hash) is a conflict the caller can explain.
fn taken(e: sqlx::Error, what: &str, name: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("there is already a {what} named `{name}`"))
        }
        _ => db(e),
    }
}

pub(super) async fn append_audit(pool: &PgPool, a: &NewAudit) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    audit(&mut tx, a).await?;
    tx.commit().await.map_err(db)
}

pub(super) async fn create_token(pool: &PgPool, t: NewToken, a: NewAudit) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("INSERT INTO api_tokens (name, role, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(text(&t.name))
        .bind(&t.role)
        .bind(&t.hash)
        .bind(ms(t.created_at))
        .bind(t.expires_at.map(ms))
        .execute(&mut *tx)
        .await
        .map_err(|e| taken(e, "token", &t.name))?;
    audit(&mut tx, &a).await?;
    tx.commit().await.map_err(db)
}

fn token_from_row(r: &PgRow) -> TokenRecord {
    TokenRecord {
        name: r.get("name"),
        role: r.get("role"),
        created_at: from_ms(r.get("created_at")),
        expires_at: r.get::<Option<i64>, _>("expires_at").map(from_ms),
    }
}

pub(super) async fn find_token(pool: &PgPool, hash: &str) -> Result<Option<TokenRecord>> {
    let row = sqlx::query("SELECT name, role, created_at, expires_at FROM api_tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    Ok(row.as_ref().map(token_from_row))
}

pub(super) async fn list_tokens(pool: &PgPool) -> Result<Vec<TokenRecord>> {
    let rows = sqlx::query("SELECT name, role, created_at, expires_at FROM api_tokens ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok(rows.iter().map(token_from_row).collect())
}

/// Deletes the row `sql` names by `$1` and records `a`; `NotFound` (and nothing recorded) when there was none.
async fn delete_audited(pool: &PgPool, sql: &str, name: &str, a: NewAudit) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    let r = sqlx::query(sql).bind(text(name)).execute(&mut *tx).await.map_err(db)?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    audit(&mut tx, &a).await?;
    tx.commit().await.map_err(db)
}

pub(super) async fn revoke_token(pool: &PgPool, name: &str, a: NewAudit) -> Result<()> {
    delete_audited(pool, "DELETE FROM api_tokens WHERE name = $1", name, a).await
}

pub(super) async fn add_user(pool: &PgPool, u: NewUser, a: NewAudit) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(text(&u.name))
        .bind(&u.role)
        .bind(&u.password_hash)
        .bind(ms(u.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| taken(e, "user", &u.name))?;
    audit(&mut tx, &a).await?;
    tx.commit().await.map_err(db)
}

fn user_from_row(r: &PgRow) -> UserRecord {
    UserRecord {
        name: r.get("name"),
        role: r.get("role"),
        password_hash: r.get("password_hash"),
        created_at: from_ms(r.get("created_at")),
    }
}

pub(super) async fn get_user(pool: &PgPool, name: &str) -> Result<UserRecord> {
    let row = sqlx::query("SELECT name, role, password_hash, created_at FROM users WHERE name = $1")
        .bind(text(name))
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.as_ref().map(user_from_row).ok_or(StoreError::NotFound)
}

pub(super) async fn list_users(pool: &PgPool) -> Result<Vec<UserRecord>> {
    let rows = sqlx::query("SELECT name, role, password_hash, created_at FROM users ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    Ok(rows.iter().map(user_from_row).collect())
}

pub(super) async fn remove_user(pool: &PgPool, name: &str, a: NewAudit) -> Result<()> {
    delete_audited(pool, "DELETE FROM users WHERE name = $1", name, a).await
}

pub(super) async fn list_audit(pool: &PgPool, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let limit = i64::from(if f.limit == 0 { 50 } else { f.limit.min(MAX_PAGE) });
    // Absent filters bind NULL and match everything, so the statement is one fixed text.
    let rows = sqlx::query(
        "SELECT id, at, actor, action, target, detail FROM audit_log
         WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)
           AND ($3::bigint IS NULL OR at >= $3) AND ($4::bigint IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
    )
    .bind(f.actor.as_deref().map(text))
    .bind(f.action.as_deref().map(text))
    .bind(f.since.map(ms))
    .bind(f.before)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let detail: String = r.get("detail");
            Ok(AuditRecord {
                id: r.get("id"),
                at: from_ms(r.get("at")),
                actor: r.get("actor"),
                action: r.get("action"),
                target: r.get("target"),
                detail: serde_json::from_str(&detail).map_err(|e| StoreError::Other(Box::new(e)))?,
            })
        })
        .collect()
}

pub(super) async fn config_revisions(pool: &PgPool) -> Result<Vec<ConfigRevision>> {
    let rows = sqlx::query("SELECT id, loaded_at, text, origin FROM config_revisions ORDER BY id")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(revision_from_row).collect()
}

pub(super) async fn rewrite_config_revisions(pool: &PgPool, texts: Vec<(i64, String)>, a: NewAudit) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    for (id, text) in &texts {
        let r = sqlx::query("UPDATE config_revisions SET text = $1 WHERE id = $2")
            .bind(super::text(text))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
    }
    audit(&mut tx, &a).await?;
    tx.commit().await.map_err(db)
}

pub(super) async fn config_head(pool: &PgPool) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT MAX(id) FROM config_revisions").fetch_one(pool).await.map_err(db)
}

pub(super) async fn config_revision(pool: &PgPool, id: i64) -> Result<ConfigRevision> {
    let row = sqlx::query("SELECT id, loaded_at, text, origin FROM config_revisions WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.as_ref().map(revision_from_row).ok_or(StoreError::NotFound)?
}

pub(super) async fn add_config_revision(
    pool: &PgPool,
    text: &str,
    origin: &str,
    now: DateTime<Utc>,
    base: Option<i64>,
    a: NewAudit,
) -> Result<i64> {
    let mut tx = pool.begin().await.map_err(db)?;
    // Edits on several nodes at once: the lock makes each see the revision the other wrote.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('renkei:config'), hashtext(COALESCE(current_schema(), '')))")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let head: Option<i64> =
        sqlx::query_scalar("SELECT MAX(id) FROM config_revisions").fetch_one(&mut *tx).await.map_err(db)?;
    if let Some(base) = base {
        if head.unwrap_or(0) != base {
            return Err(StoreError::Conflict(format!(
                "the config was changed meanwhile: revision {} is the newest, not {base}",
                head.unwrap_or(0)
            )));
        }
    }
    let id: i64 =
        sqlx::query_scalar("INSERT INTO config_revisions (loaded_at, text, origin) VALUES ($1, $2, $3) RETURNING id")
            .bind(ms(now))
            .bind(super::text(text))
            .bind(super::text(origin))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    let mut a = a;
    if let serde_json::Value::Object(m) = &mut a.detail {
        m.insert("revision".into(), id.into());
    }
    audit(&mut tx, &a).await?;
    tx.commit().await.map_err(db)?;
    Ok(id)
}

pub(super) async fn put_session(pool: &PgPool, s: &SessionRecord, forget_before: DateTime<Utc>) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE last_seen < $1")
        .bind(ms(forget_before))
        .execute(pool)
        .await
        .map_err(db)?;
    sqlx::query("INSERT INTO console_sessions (id_hash, data, created_at, last_seen) VALUES ($1, $2, $3, $4)")
        .bind(&s.id_hash)
        .bind(&s.data)
        .bind(ms(s.created_at))
        .bind(ms(s.last_seen))
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub(super) async fn touch_session(
    pool: &PgPool,
    id_hash: &str,
    now: DateTime<Utc>,
    idle_since: DateTime<Utc>,
    made_since: DateTime<Utc>,
) -> Result<Option<SessionRecord>> {
    let row = sqlx::query(
        "UPDATE console_sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen >= $3 AND created_at >= $4 \
         RETURNING id_hash, data, created_at, last_seen",
    )
    .bind(ms(now))
    .bind(id_hash)
    .bind(ms(idle_since))
    .bind(ms(made_since))
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(session_from_row).transpose()
}

pub(super) async fn end_session(pool: &PgPool, id_hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(id_hash).execute(pool).await.map_err(db)?;
    Ok(())
}
