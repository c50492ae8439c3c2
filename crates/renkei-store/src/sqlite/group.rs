//! Group commit for ingest: the requests that arrive while the writer is busy are stored in one
//! transaction and one fsync, then each is answered.
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

pub(super) struct Job {
    pub events: Vec<NewEvent>,
    pub now: DateTime<Utc>,
    pub reply: oneshot::Sender<Result<Vec<Ingested>>>,
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
        let results = commit(&pool, &mut jobs).await;
        for (job, result) in jobs.into_iter().zip(results) {
            // The caller may have gone (client disconnected); its events are stored all the same.
            let _ = job.reply.send(result);
        }
    }
}

async fn commit(pool: &SqlitePool, jobs: &mut [Job]) -> Vec<Result<Vec<Ingested>>> {
    let fail_all = |e: &StoreError, n: usize| -> Vec<Result<Vec<Ingested>>> {
        (0..n)
            .map(|_| {
                Err(match e {
                    StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                    other => StoreError::Other(other.to_string().into()),
                })
            })
            .collect()
    };
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await.map_err(db) {
        Ok(tx) => tx,
        Err(e) => return fail_all(&e, jobs.len()),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let events = std::mem::take(&mut job.events);
        if let Err(e) = sqlx::query("SAVEPOINT job").execute(&mut *tx).await.map_err(db) {
            return fail_all(&e, jobs.len());
        }
        match queue::ingest_in(&mut tx, events, job.now).await {
            Ok(out) => {
                if let Err(e) = sqlx::query("RELEASE job").execute(&mut *tx).await.map_err(db) {
                    return fail_all(&e, jobs.len());
                }
                results.push(Ok(out));
            }
            Err(e) => {
                let undo = sqlx::query("ROLLBACK TO job").execute(&mut *tx).await;
                let release = sqlx::query("RELEASE job").execute(&mut *tx).await;
                if let Err(e) = undo.and(release).map_err(db) {
                    return fail_all(&e, jobs.len());
                }
                results.push(Err(e));
            }
        }
    }
    match tx.commit().await.map_err(db) {
        Ok(()) => results,
        Err(e) => fail_all(&e, jobs.len()),
    }
}
