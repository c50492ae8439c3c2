//! Group commit: the writes that arrive while the writer is busy (ingests, the worker's claims and attempt
//! records) are stored in one transaction and one fsync, then each is answered.
//!
//! SQLite has one writer and `synchronous=FULL` makes every commit wait for the disk, so one commit per
//! webhook caps ingest at the disk's commit rate (a few thousand a second). The writer thread takes every job
//! queued at that moment (up to `MAX_JOBS`, and one claim), stores them with one SQL text that begins, writes
//! every row and commits (`batch.rs`: one round trip to SQLite's thread), and only then answers: no sender is told 202 before its event is on disk, and no worker sends a
//! delivery before its claim is on disk. A lone request is written at once; nothing waits for company.
//!
//! If the batch as a whole fails for a reason that is not the database's (a constraint, say), it is rolled back
//! and the jobs run again one by one, each in its own savepoint, so one job's failure is that job's alone.

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{batch, db, queue};
use crate::*;

/// Jobs per transaction at most, so one commit stays short.
const MAX_JOBS: usize = 256;

pub(super) enum Job {
    Ingest {
        events: Vec<queue::EventRow>,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<Vec<Ingested>>>,
    },
    Attempt {
        owner: String,
        attempt: Box<NewAttempt>,
        transition: Transition,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<()>>,
    },
    Claim {
        owner: String,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        /// The steps left out, as a JSON array of `[flow, step]` pairs.
        skip: String,
        reply: oneshot::Sender<Result<queue::ClaimedRows>>,
    },
}

/// What a job produced, kept until the commit says whether it stands.
enum Done {
    Ingest(Result<Vec<Ingested>>),
    Attempt(Result<()>),
    Claim(Result<queue::ClaimedRows>),
}

/// Starts the writer on a thread of its own; it ends when the last sender (the store) is dropped.
///
/// Not a task on the server's runtime: every statement is a round trip to sqlx's SQLite thread, and a task woken
/// from another thread waits in the runtime's shared queue behind whatever HTTP handlers are ready to run; on its
/// own thread the writer goes on the moment its statement is done, and the checkpoints have a place beside it.
/// (Measured alone, the move made no difference within this machine's noise: BENCHMARKS.md, "Third session".)
///
/// `checkpoint_on`: the pool the WAL is checkpointed through, beside the writes ([`checkpoints`]); `None` for
/// an in-memory database, which has no WAL.
pub(super) fn start(pool: SqlitePool, checkpoint_on: Option<SqlitePool>) -> Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel(4096);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
    std::thread::Builder::new()
        .name("renkei-writer".into())
        .spawn(move || {
            runtime.block_on(async move {
                // Ends with the writer: the runtime drops its tasks when `run` returns.
                let checkpointing = checkpoint_on.is_some();
                if let Some(reader) = checkpoint_on {
                    tokio::spawn(checkpoints(reader));
                }
                run(pool, rx, checkpointing).await
            })
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
    Ok(tx)
}

/// How often the WAL is copied into the database file, beside the writes.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// How often the writer finishes a checkpoint itself, between two batches.
const WRITER_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed WAL frames into the database file every [`CHECKPOINT_EVERY`], on a reader connection, so a
/// commit never waits for the bulk of a checkpoint. PASSIVE: it takes no lock a writer or reader waits for. A
/// page written many times in between is copied once.
///
/// This alone never lets the WAL start over while writes go on: SQLite restarts the WAL only when a write
/// finds every frame copied, and under steady load new frames always arrive while the copy runs (a million-event
/// fill grew the WAL to 8.8 GB). So the writer itself, between two batches, finishes the copy every
/// [`WRITER_CHECKPOINT_EVERY`] ([`finish_checkpoint`]): what is left then is at most a quarter second of frames,
/// nothing is written meanwhile, and the next write starts the WAL over.
async fn checkpoints(reader: SqlitePool) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&reader).await {
            // Busy or locked by another process: the next round copies it.
            tracing::debug!(error = %e, "WAL checkpoint did not run");
        }
    }
}

/// The writer's part of a checkpoint (see [`checkpoints`]); on the writer connection, between batches.
async fn finish_checkpoint(conn: &mut sqlx::SqliteConnection) {
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(conn).await {
        tracing::debug!(error = %e, "WAL checkpoint did not run");
    }
}

/// How long the writer keeps the connection from one batch to the next while jobs keep coming, before it lets a
/// write of another kind (a token, a lease renewal) have its turn.
///
/// sqlx tests a connection given back to its pool with a ping, a round trip to SQLite's thread that the next
/// batch's `acquire` waits for; on these machines a round trip is two thread wake-ups of ~35 µs each (a futex
/// ping-pong between two threads: 62-78 µs), paid once per batch. Kept, the connection goes back, and is
/// pinged, once per [`HOLD`] at most, or when no job is waiting. The pool hands it out first come first served,
/// so another write waits at most this long plus one batch.
const HOLD: std::time::Duration = std::time::Duration::from_millis(10);

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Job>, checkpointing: bool) {
    let mut checkpointed = std::time::Instant::now();
    let mut held: Option<(PoolConnection<Sqlite>, std::time::Instant)> = None;
    // A claim that arrived while the batch already had one: it starts the next batch (a batch's text has room
    // for one claim, and a second would claim nothing the first left anyway).
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let mut claims = usize::from(matches!(first, Job::Claim { .. }));
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job @ Job::Claim { .. }) if claims > 0 => {
                    carried = Some(job);
                    break;
                }
                Ok(job) => {
                    claims += usize::from(matches!(job, Job::Claim { .. }));
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let conn = match held.take() {
            Some(h) => Ok(h),
            None => pool.acquire().await.map(|c| (c, std::time::Instant::now())).map_err(db),
        };
        let (replies, results) = match conn {
            Ok((mut conn, since)) => {
                let (replies, results, sound) = commit(&mut conn, jobs).await;
                if sound {
                    held = Some((conn, since));
                } else {
                    // See `commit`: the pool opens a fresh connection for the next write instead.
                    conn.close_on_drop();
                }
                (replies, results)
            }
            Err(e) => {
                let replies = split(jobs).0;
                let results = fail_all(&e, &replies);
                (replies, results)
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller may have gone (client disconnected); what it asked for is stored all the same.
            match (reply, result) {
                (Reply::Ingest(tx), Done::Ingest(r)) => {
                    let _ = tx.send(r);
                }
                (Reply::Attempt(tx), Done::Attempt(r)) => {
                    let _ = tx.send(r);
                }
                (Reply::Claim(tx), Done::Claim(r)) => {
                    // A claim nobody takes any more stays in flight until its lease runs out.
                    let _ = tx.send(r);
                }
                _ => unreachable!("results follow their jobs"),
            }
        }
        match held.as_mut() {
            Some((conn, _)) if checkpointing && checkpointed.elapsed() >= WRITER_CHECKPOINT_EVERY => {
                finish_checkpoint(conn).await;
                checkpointed = std::time::Instant::now();
            }
            _ => {}
        }
        if held.as_ref().is_some_and(|(_, since)| rx.is_empty() || since.elapsed() >= HOLD) {
            held = None;
        }
    }
}

enum Reply {
    Ingest(oneshot::Sender<Result<Vec<Ingested>>>),
    Attempt(oneshot::Sender<Result<()>>),
    Claim(oneshot::Sender<Result<queue::ClaimedRows>>),
}

fn copy_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound => StoreError::NotFound,
        other => StoreError::Other(other.to_string().into()),
    }
}

/// Each job's way to answer, and what it asks for.
fn split(jobs: Vec<Job>) -> (Vec<Reply>, Vec<Work>) {
    let mut replies = Vec::with_capacity(jobs.len());
    let mut work = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job {
            Job::Ingest { events, now, reply } => {
                replies.push(Reply::Ingest(reply));
                work.push(Work::Ingest(events, now));
            }
            Job::Attempt { owner, attempt, transition, now, reply } => {
                replies.push(Reply::Attempt(reply));
                work.push(Work::Attempt(owner, attempt, transition, now));
            }
            Job::Claim { owner, now, lease_until, limit, skip, reply } => {
                replies.push(Reply::Claim(reply));
                work.push(Work::Claim { owner, now, lease_until, limit, skip });
            }
        }
    }
    (replies, work)
}

/// Every job failed with `e`.
fn fail_all(e: &StoreError, replies: &[Reply]) -> Vec<Done> {
    replies
        .iter()
        .map(|r| match r {
            Reply::Ingest(_) => Done::Ingest(Err(copy_err(e))),
            Reply::Attempt(_) => Done::Attempt(Err(copy_err(e))),
            Reply::Claim(_) => Done::Claim(Err(copy_err(e))),
        })
        .collect()
}

/// Runs the jobs in one transaction on `conn` (see [`run_jobs`]): each job's way to answer, its result, and
/// whether the connection can be used again.
async fn commit(conn: &mut sqlx::SqliteConnection, jobs: Vec<Job>) -> (Vec<Reply>, Vec<Done>, bool) {
    let (replies, work) = split(jobs);
    match run_jobs(conn, work).await {
        Ok(done) => (replies, done, true),
        Err(e) => {
            // The transaction did not commit. SQLite may have rolled it back by itself (SQLITE_FULL, IOERR, BUSY
            // and NOMEM can end a transaction on their own): the connection's idea of its transaction is then
            // not to be trusted.
            let all = fail_all(&e, &replies);
            (replies, all, false)
        }
    }
}

/// Runs every job in one transaction and commits: the whole batch at once, its `BEGIN` and `COMMIT` included,
/// in one round trip (`batch.rs`), or, when that fails for a reason of one of its jobs, each job in its own
/// savepoint (its failure then is its own). `Err` when the transaction as a whole failed, and nothing of it was
/// kept. A job that fails because the database cannot take writes (full disk, I/O error, locked) fails the
/// transaction: SQLite may already have rolled all of it back.
async fn run_jobs(conn: &mut sqlx::SqliteConnection, work: Vec<Work>) -> Result<Vec<Done>> {
    use sqlx::Connection;
    match all_at_once(conn, &work).await {
        Ok(Some(done)) => return Ok(done),
        Ok(None) => {}
        Err(e) => {
            // The text stopped at the failing statement with its transaction open (or SQLite ended it): end it.
            // An error here says only that there was none left to end.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            match e {
                StoreError::Unavailable(_) => return Err(e),
                // A lone job's failure is its own: nothing to run again.
                e if work.len() == 1 => return Ok(vec![failed(&work[0], e)]),
                // Run again job by job, so the failure is the failing job's alone.
                _ => {}
            }
        }
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let done = one_by_one(&mut tx, work).await?;
    tx.commit().await.map_err(db)?;
    Ok(done)
}

/// What a job that failed on its own answers.
fn failed(work: &Work, e: StoreError) -> Done {
    match work {
        Work::Ingest(..) => Done::Ingest(Err(e)),
        Work::Attempt(..) => Done::Attempt(Err(e)),
        Work::Claim { .. } => Done::Claim(Err(e)),
    }
}

/// The batch as one SQL text that begins and commits its transaction; `None` when it cannot be done that way
/// (see `batch::Batch::run`): nothing was run then.
async fn all_at_once(conn: &mut sqlx::SqliteConnection, work: &[Work]) -> Result<Option<Vec<Done>>> {
    let ingests: Vec<batch::IngestJob> = work
        .iter()
        .filter_map(|w| match w {
            Work::Ingest(events, now) => Some(batch::IngestJob { events, now: *now }),
            _ => None,
        })
        .collect();
    let attempts: Vec<batch::AttemptJob> = work
        .iter()
        .filter_map(|w| match w {
            Work::Attempt(owner, attempt, transition, now) => {
                Some(batch::AttemptJob { owner, attempt, transition, now: *now })
            }
            _ => None,
        })
        .collect();
    // At most one claim per batch (`run` carries a second one over to the next).
    let claim = work.iter().find_map(|w| match w {
        Work::Claim { owner, now, lease_until, limit, skip } => {
            Some(batch::ClaimJob { owner, now: *now, lease_until: *lease_until, limit: *limit, skip })
        }
        _ => None,
    });
    let batch = batch::Batch { ingests: &ingests, attempts: &attempts, claim };
    let Some(answers) = batch.run(&mut *conn, true).await? else {
        return Ok(None);
    };
    let mut ingested = answers.ingested.into_iter();
    let mut recorded = answers.recorded.into_iter();
    let mut claimed = Some(answers.claimed);
    let mut done = Vec::with_capacity(work.len());
    for w in work {
        done.push(match w {
            Work::Ingest(..) => Done::Ingest(Ok(ingested.next().expect("one answer per ingest"))),
            Work::Attempt(..) => Done::Attempt(attempt_answer(recorded.next().expect("one answer per attempt"))),
            // Ran last, after every other job of the batch: it sees the deliveries this batch stored and freed.
            Work::Claim { .. } => Done::Claim(Ok(claimed.take().unwrap_or_default())),
        });
    }
    Ok(Some(done))
}

fn attempt_answer(r: queue::Recorded) -> Result<()> {
    match r {
        queue::Recorded::Applied => Ok(()),
        // The attempt stays in the history; the caller learns its lease was lost.
        queue::Recorded::TakenOver(m) => Err(StoreError::Conflict(m)),
    }
}

/// Each job in its own savepoint of the transaction.
async fn one_by_one(tx: &mut Transaction<'_, Sqlite>, work: Vec<Work>) -> Result<Vec<Done>> {
    let mut done = Vec::with_capacity(work.len());
    for w in work {
        sqlx::query("SAVEPOINT job").execute(&mut **tx).await.map_err(db)?;
        let result = match w {
            Work::Ingest(events, now) => Done::Ingest(queue::ingest_in(tx, &events, now).await),
            Work::Attempt(owner, attempt, transition, now) => Done::Attempt(
                queue::record_attempt_in(tx, &owner, &attempt, &transition, now).await.and_then(attempt_answer),
            ),
            Work::Claim { owner, now, lease_until, limit, skip } => Done::Claim(
                batch::claim(tx, batch::ClaimJob { owner: &owner, now, lease_until, limit, skip: &skip }).await,
            ),
        };
        // Rolled back: a job that failed. An attempt whose lease was lost is kept (the attempt is history).
        let failed = match &result {
            Done::Ingest(r) => r.as_ref().err(),
            Done::Attempt(r) => r.as_ref().err().filter(|e| !matches!(e, StoreError::Conflict(_))),
            Done::Claim(r) => r.as_ref().err(),
        };
        match failed {
            None => {
                sqlx::query("RELEASE job").execute(&mut **tx).await.map_err(db)?;
            }
            Some(StoreError::Unavailable(m)) => return Err(StoreError::Unavailable(m.clone())),
            Some(_) => {
                sqlx::query("ROLLBACK TO job").execute(&mut **tx).await.map_err(db)?;
                sqlx::query("RELEASE job").execute(&mut **tx).await.map_err(db)?;
            }
        }
        done.push(result);
    }
    Ok(done)
}

enum Work {
    Ingest(Vec<queue::EventRow>, DateTime<Utc>),
    Attempt(String, Box<NewAttempt>, Transition, DateTime<Utc>),
    Claim { owner: String, now: DateTime<Utc>, lease_until: DateTime<Utc>, limit: usize, skip: String },
}
