//! `renkei migrate-store --from sqlite://FILE --to postgres://...`: moves an installation to PostgreSQL.
//!
//! A thin command: it opens both stores (the SQLite one takes its lock, so it refuses while renkei runs on the
//! file) and prints progress; the copy itself, in one PostgreSQL transaction, is `renkei_store::migrate`.
//! It never changes the source's data and never touches a target that holds rows unless `--replace` says so.

use std::process::ExitCode;

use anyhow::{bail, Context};
use renkei_store::migrate::{self, Options, Progress};
use renkei_store::postgres::PgStore;
use renkei_store::sqlite::SqliteStore;
use renkei_store::StoreError;

use super::storage_label;

pub async fn run(from: &str, to: &str, replace: bool, batch: usize) -> anyhow::Result<ExitCode> {
    if !from.starts_with("sqlite:") {
        bail!("--from must be a sqlite://FILE URL");
    }
    let file = &renkei_core::config::storage::SqliteSettings::from_url(from).map_err(|m| anyhow::anyhow!(m.en))?.path;
    // Opening creates a missing file: a mistyped path would copy an empty database and say it worked.
    if !std::path::Path::new(file).is_file() {
        bail!("{file}: no such SQLite file");
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to must be a postgres://… URL");
    }
    let now = chrono::Utc::now();
    let source = SqliteStore::open(from, now).await.with_context(|| format!("opening {from}"))?;
    let target = PgStore::open(to, now).await.with_context(|| format!("opening {}", storage_label(to)))?;
    println!("copying {from} into {}", storage_label(to));

    let mut last_tenth = None;
    let mut show = |p: Progress| {
        // A line per tenth of each table, so a large history shows it is moving without flooding the terminal.
        let tenth = (p.copied * 10).checked_div(p.total).unwrap_or(10);
        if last_tenth != Some((p.table, tenth)) {
            last_tenth = Some((p.table, tenth));
            println!("  {}: {}/{}", p.table, p.copied, p.total);
        }
    };
    match migrate::sqlite_to_postgres(&source, &target, &Options { batch, replace }, &mut show).await {
        Ok(report) => {
            println!("done; rows copied:");
            for (table, n) in &report.tables {
                println!("  {table:<17} {n}");
            }
            println!("point `storage:` at the PostgreSQL URL and start renkei; keep {file} as a backup.");
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Conflict(what)) => {
            eprintln!("refused: {what}; nothing was copied.");
            eprintln!("pass --replace to delete what the target holds and copy anyway (stop every node on it first)");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(anyhow::Error::new(e).context("copying; nothing was committed to the target")),
    }
}
