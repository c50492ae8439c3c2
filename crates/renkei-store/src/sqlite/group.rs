//! Group commit: the writes that arrive while the writer is busy (ingests, and the worker's attempt records)
//! are stored in one transaction and one fsync, then each is answered.
//!
//! SQLite has one writer and `synchronous=FULL` makes every commit wait for the disk, so one commit per
//! webhook caps ingest at the disk's commit rate (a few thousand a second). The writer task takes every job
//! queued at that moment (up to `MAX_JOBS`), stores each inside its own savepoint (so one job's failure is
//! that job's alone), commits once, and only then answers: no sender is told 202 before its event is on disk.
//! A lone request is written at once; nothing waits for company.

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::{db, queue};
use crate::*;

/// Jobs per transaction at most, so one commit stays short.
const MAX_JOBS: usize = 256;

pub(super) enum Job {
    Ingest {
        events: Vec<NewEvent>,
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
}

/// What a job produced, kept until the commit says whether it stands.
enum Done {
    Ingest(Result<Vec<Ingested>>),
    Attempt(Result<()>),
}

/// Starts the writer task; it ends when the last sender (the store) is dropped.
pub(super) fn start(pool: SqlitePool) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(run(pool, rx));
    tx
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (replies, results) = commit(&pool, jobs).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller may have gone (client disconnected); what it asked for is stored all the same.
            match (reply, result) {
                (Reply::Ingest(tx), Done::Ingest(r)) => {
                    let _ = tx.send(r);
                }
                (Reply::Attempt(tx), Done::Attempt(r)) => {
                    let _ = tx.send(r);
                }
                _ => unreachable!("results follow their jobs"),
            }
        }
    }
}

enum Reply {
    Ingest(oneshot::Sender<Result<Vec<Ingested>>>),
    Attempt(oneshot::Sender<Result<()>>),
}

fn copy_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound => StoreError::NotFound,
        other => StoreError::Other(other.to_string().into()),
    }
}

async fn commit(pool: &SqlitePool, jobs: Vec<Job>) -> (Vec<Reply>, Vec<Done>) {
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
        }
    }
    let fail_all = |e: &StoreError, replies: &[Reply]| -> Vec<Done> {
        replies
            .iter()
            .map(|r| match r {
                Reply::Ingest(_) => Done::Ingest(Err(copy_err(e))),
                Reply::Attempt(_) => Done::Attempt(Err(copy_err(e))),
            })
            .collect()
    };
    let mut conn = match pool.acquire().await.map_err(db) {
        Ok(c) => c,
        Err(e) => {
            let done = fail_all(&e, &replies);
            return (replies, done);
        }
    };
    match run_jobs(&mut conn, work).await {
        Ok(done) => (replies, done),
        Err(e) => {
            // The transaction did not commit. SQLite may have rolled it back by itself (SQLITE_FULL, IOERR, BUSY
            // and NOMEM can end a transaction on their own): the connection's idea of its transaction is then
            // not to be trusted, so the pool opens a fresh one for the next write instead of reusing it.
            conn.close_on_drop();
            let all = fail_all(&e, &replies);
            (replies, all)
        }
    }
}

/// Runs every job in its own savepoint of one transaction and commits. A job's own failure is its own (its
/// savepoint is rolled back); `Err` when the transaction as a whole failed, and nothing of it was kept. A job
/// that fails because the database cannot take writes (full disk, I/O error, locked) fails the transaction:
/// SQLite may already have rolled all of it back.
async fn run_jobs(conn: &mut sqlx::SqliteConnection, work: Vec<Work>) -> Result<Vec<Done>> {
    use sqlx::Connection;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let mut done = Vec::with_capacity(work.len());
    for w in work {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await.map_err(db)?;
        let (kept, result) = match w {
            Work::Ingest(events, now) => match queue::ingest_in(&mut tx, events, now).await {
                Ok(out) => (true, Done::Ingest(Ok(out))),
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => (false, Done::Ingest(Err(e))),
            },
            Work::Attempt(owner, attempt, transition, now) => {
                match queue::record_attempt_in(&mut tx, &owner, *attempt, transition, now).await {
                    Ok(queue::Recorded::Applied) => (true, Done::Attempt(Ok(()))),
                    // The attempt stays in the history; the caller learns its lease was lost.
                    Ok(queue::Recorded::TakenOver(m)) => (true, Done::Attempt(Err(StoreError::Conflict(m)))),
                    Err(e @ StoreError::Unavailable(_)) => return Err(e),
                    Err(e) => (false, Done::Attempt(Err(e))),
                }
            }
        };
        if kept {
            sqlx::query("RELEASE job").execute(&mut *tx).await.map_err(db)?;
        } else {
            sqlx::query("ROLLBACK TO job").execute(&mut *tx).await.map_err(db)?;
            sqlx::query("RELEASE job").execute(&mut *tx).await.map_err(db)?;
        }
        done.push(result);
    }
    tx.commit().await.map_err(db)?;
    Ok(done)
}

enum Work {
    Ingest(Vec<NewEvent>, DateTime<Utc>),
    Attempt(String, Box<NewAttempt>, Transition, DateTime<Utc>),
}
