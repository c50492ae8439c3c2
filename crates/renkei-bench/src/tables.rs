//! What SQLite itself allows with renkei's own tables: the rows a webhook of the bench leaves (its event, its
//! dedupe key, its delivery), then its claim and its attempt record, written straight with one multi-row
//! statement per table, as many events to a commit as the bench has connections, on a file made by renkei's
//! migrations (every index and trigger), with renkei's durability. No HTTP, no templates, no thread of
//! renkei's: the most any code could get from these tables on this disk with batches as large as the
//! connections allow (BENCHMARKS.md, "Thirteenth session").
//!
//! `ingest` and `e2e` measure it after their runs, not before: its writes would still be reaching the disk
//! during a run that followed it (the fixed rate's p99 read 19-391 ms right after it, against 5-8 ms).

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, SqliteConnection};
use tempfile::TempDir;

use crate::report::Row;
use crate::LoadArgs;

/// Seconds one measurement takes (half for the ingest, half for the cycle).
pub const SECS: u64 = 4;

/// Events per second, both ways.
pub struct Ceiling {
    /// Events, dedupe keys and deliveries inserted, one commit per batch.
    pub ingest: f64,
    /// The same, then each batch claimed (one commit) and its attempts recorded (one commit): the three commits
    /// an event's way through renkei takes when nothing shares them.
    pub cycle: f64,
}

/// The ceiling for `load`'s connections and body size.
pub async fn ceiling(load: &LoadArgs) -> anyhow::Result<(Vec<Row>, Ceiling)> {
    measure(load.connections.max(1), load.body_bytes, Duration::from_secs(SECS)).await
}

async fn measure(per: usize, body_bytes: usize, limit: Duration) -> anyhow::Result<(Vec<Row>, Ceiling)> {
    let dir = TempDir::new()?;
    let file = dir.path().join("tables.db");
    // renkei's migrations make the file; then it is written without renkei.
    drop(renkei_store::sqlite::SqliteStore::open(&format!("sqlite://{}", file.display()), chrono::Utc::now()).await?);
    let mut conn = SqliteConnection::connect_with(&crate::scenarios::durable(&file)).await?;
    let sql = Sql::new(per);
    let mut next = 0;
    let mut rates = Vec::new();
    for cycle in [false, true] {
        let start = Instant::now();
        let mut done = 0;
        while start.elapsed() < limit / 2 {
            let batch = Batch::new(next, per, body_bytes);
            next += per as u64;
            sql.ingest(&mut conn, &batch).await?;
            if cycle {
                let claimed = sql.claim(&mut conn, &batch).await?;
                sql.record(&mut conn, &batch, &claimed).await?;
            }
            done += per as u64;
        }
        rates.push((done as f64 / start.elapsed().as_secs_f64(), done));
    }
    conn.close().await?;
    let rows = vec![
        Row::new(format!("ceiling: SQLite with renkei's tables, {per} events per commit"), rates[0].0, "events/s")
            .note(format!(
                "event + dedupe key + delivery, every index and trigger, one statement per table; {} events",
                rates[0].1
            )),
        Row::new(
            format!("ceiling: the same, then claimed and recorded ({per} per commit, 3 commits)"),
            rates[1].0,
            "events/s",
        )
        .note(format!("what e2e can reach when no commit is shared; {} events", rates[1].1)),
    ];
    Ok((rows, Ceiling { ingest: rates[0].0, cycle: rates[1].0 }))
}

const HEADERS: &str = r#"{"content-type":"application/json","user-agent":"renkei-bench","x-request-id":"r"}"#;

/// One batch's rows: the bench's own bodies, ids that sort by arrival as renkei's UUIDv7 do.
struct Batch {
    now: i64,
    ids: Vec<String>,
    requests: Vec<String>,
    keys: Vec<String>,
    bodies: Vec<String>,
}

impl Batch {
    fn new(first: u64, per: usize, body_bytes: usize) -> Batch {
        let now = chrono::Utc::now().timestamp_millis();
        let range = first..first + per as u64;
        Batch {
            now,
            ids: range.clone().map(|i| format!("{now:013x}-{i:012}")).collect(),
            requests: range.clone().map(|i| format!("r{i}")).collect(),
            keys: range.clone().map(|i| format!("c:{i}")).collect(),
            bodies: range.map(|i| String::from_utf8(crate::load::body("c", i, body_bytes)).expect("UTF-8")).collect(),
        }
    }
}

/// The statements, written once for a batch's size.
struct Sql {
    per: usize,
    events: String,
    dedupe: String,
    deliveries: String,
    read: String,
    attempts: String,
    settle: String,
}

/// Claims as renkei does: through `deliveries_queue`, which the planner would not choose by itself (without it,
/// 8 ms a claim with 45,000 deliveries pending instead of 0.8 ms; sqlite/batch.rs says the same of renkei's).
const CLAIM: &str = "UPDATE deliveries SET status = 'in_flight', lease_owner = 'w', lease_until = ?1, updated_at = ?2 \
     WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_queue \
     WHERE status IN ('pending', 'retrying', 'in_flight') AND held = 0 AND next_at <= ?2 \
     ORDER BY next_at, id LIMIT ?3) RETURNING id";

impl Sql {
    fn new(per: usize) -> Sql {
        let list = vec!["?"; per].join(",");
        let values = |cols: usize| vec![format!("({})", vec!["?"; cols].join(",")); per].join(",");
        Sql {
            per,
            events: format!(
                "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, \
                 content_type, headers, query, body, dedupe_key) VALUES {}",
                values(12)
            ),
            dedupe: format!("INSERT OR IGNORE INTO dedupe (source, key, event_id, expires_at) VALUES {}", values(4)),
            deliveries: format!(
                "INSERT INTO deliveries (event_id, flow, status, next_at, created_at, updated_at) VALUES {}",
                values(6)
            ),
            // What the worker needs to render each claimed delivery: its event.
            read: format!(
                "SELECT e.body, e.headers, e.query FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.id IN ({list})"
            ),
            attempts: format!(
                "INSERT INTO attempts (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url, \
                 request_headers, request_body, response_status, response_headers, response_body) VALUES {}",
                values(13)
            ),
            settle: format!(
                "UPDATE deliveries SET status = 'succeeded', step = 1, attempts = 1, \
                 outputs = '[{{\"status\":200}}]', lease_owner = NULL, lease_until = NULL, updated_at = ? \
                 WHERE id IN ({list})"
            ),
        }
    }

    /// The batch's events, dedupe keys and deliveries, in one commit.
    async fn ingest(&self, conn: &mut SqliteConnection, b: &Batch) -> anyhow::Result<()> {
        let now = b.now;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let rows = b.ids.iter().zip(&b.requests).zip(&b.keys).zip(&b.bodies);
        let events = rows.fold(sqlx::query(&self.events), |q, (((id, request), key), body)| {
            q.bind(id)
                .bind("orders")
                .bind("order.created")
                .bind("accepted")
                .bind(202)
                .bind(now)
                .bind(request)
                .bind("application/json")
                .bind(HEADERS)
                .bind("{}")
                .bind(body)
                .bind(key)
        });
        tx.execute(events).await?;
        let dedupe =
            b.ids.iter().zip(&b.keys).fold(sqlx::query(&self.dedupe), |q, (id, key)| {
                q.bind("orders").bind(key).bind(id).bind(now + 86_400_000)
            });
        tx.execute(dedupe).await?;
        let deliveries = b.ids.iter().fold(sqlx::query(&self.deliveries), |q, id| {
            q.bind(id).bind("orders-to-sink").bind("pending").bind(now).bind(now).bind(now)
        });
        tx.execute(deliveries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A claim of as many deliveries as a batch holds, their events read back, in one commit.
    async fn claim(&self, conn: &mut SqliteConnection, b: &Batch) -> anyhow::Result<Vec<i64>> {
        let per = self.per;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let claimed: Vec<i64> =
            sqlx::query_scalar(CLAIM).bind(b.now + 30_000).bind(b.now).bind(per as i64).fetch_all(&mut *tx).await?;
        anyhow::ensure!(claimed.len() == per, "claimed {} of {per}", claimed.len());
        let read = claimed.iter().fold(sqlx::query_as::<_, (String, String, String)>(&self.read), |q, d| q.bind(d));
        let events = read.fetch_all(&mut *tx).await?;
        anyhow::ensure!(events.len() == per, "read {} of {per}", events.len());
        tx.commit().await?;
        Ok(claimed)
    }

    /// An attempt (request and response) for each claimed delivery, and the deliveries settled, in one commit.
    async fn record(&self, conn: &mut SqliteConnection, b: &Batch, claimed: &[i64]) -> anyhow::Result<()> {
        let now = b.now;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let attempts = claimed.iter().zip(&b.bodies).fold(sqlx::query(&self.attempts), |q, (d, body)| {
            q.bind(d)
                .bind(0)
                .bind(1)
                .bind(now)
                .bind(1)
                .bind("success")
                .bind("POST")
                .bind("http://127.0.0.1:1/orders")
                .bind(HEADERS)
                .bind(body.as_bytes())
                .bind(200)
                .bind("{}")
                .bind(&b"{\"ok\":true}"[..])
        });
        tx.execute(attempts).await?;
        tx.execute(claimed.iter().fold(sqlx::query(&self.settle).bind(now), |q, d| q.bind(d))).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The ceiling writes renkei's own tables by hand: when a migration renames or requires a column, this
    /// fails here rather than in someone's bench run. Each batch must also be claimed and read back whole
    /// (`claim` refuses a short one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ceiling_writes_renkeis_current_tables() {
        let (rows, c) = super::measure(8, 256, Duration::from_secs(1)).await.expect("runs on renkei's tables");
        assert_eq!(rows.len(), 2);
        assert!(c.ingest > 0.0 && c.cycle > 0.0, "{} {}", c.ingest, c.cycle);
        assert!(rows[0].what.contains("8 events per commit"), "{}", rows[0].what);
    }
}
