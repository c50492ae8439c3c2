//! The command line: `serve`, `check`, `test`, `migrate-store`; `token`, `user` and `rotate-key` are in `manage`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use renkei_connectors::kintone::api as kintone_api;
use renkei_connectors::kintone::Target;
use renkei_core::body::parse_body;
use renkei_core::config::{load, Loaded, Problem};
use renkei_core::config::{Destination, KintoneAction};
use renkei_core::event::EventView;
use renkei_core::flow::{classify, plan, render_step, Decision, Rendered, Request};
use renkei_core::template::Steps;
use renkei_core::types::Name;
use renkei_core::Lang;

use renkei_store::Store;

use crate::app::App;
use crate::clock::SystemClock;
use crate::worker::Worker;

#[derive(Debug, Parser)]
#[command(name = "renkei", version, about = "renkei (連携): a self-hosted integration hub for business SaaS")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub: webhook ingress, admin API and delivery worker.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "renkei.yaml", env = "RENKEI_CONFIG")]
        config: PathBuf,
        /// Listen here instead of `server.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Validate a config file: list every problem with its line, exit 1 if there is any.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Also test every destination: reachable, and for kintone the app, its fields and the token's rights.
        #[arg(long)]
        online: bool,
    },
    /// Dry run: print the requests a flow would send for an event file. Sends nothing.
    Test {
        #[arg(long, short)]
        config: PathBuf,
        /// The flow to run.
        #[arg(long)]
        flow: String,
        /// A body as the source would receive it (JSON, form, CSV or text).
        #[arg(long)]
        event: PathBuf,
        /// Content-Type of the event file; guessed from its extension when not given.
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Admin API tokens: create (printed once), list, revoke. May run while renkei runs.
    Token {
        #[command(subcommand)]
        command: crate::manage::TokenCommand,
    },
    /// Console users: add, list, remove. May run while renkei runs.
    User {
        #[command(subcommand)]
        command: crate::manage::UserCommand,
    },
    /// Re-encrypt what renkei stores under a new master key. Stop renkei first.
    RotateKey {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the config the hub runs (the newest revision), secrets masked: the file to keep edits made in the
    /// console or through the API.
    Export {
        #[arg(long, short)]
        config: PathBuf,
        /// An earlier revision instead of the newest.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Store FILE as the config every node runs (within seconds, without a restart). Masked secrets
    /// (`[REDACTED]`, as `export` prints them) keep their current values. Checked first; nothing is stored when
    /// it has a problem.
    Apply {
        #[arg(long, short)]
        config: PathBuf,
        file: PathBuf,
    },
    /// Copy a SQLite installation, history included, into an empty PostgreSQL database. Stop renkei first.
    MigrateStore {
        /// The SQLite database: sqlite://FILE.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: postgres://… (its `schema` parameter is honoured).
        #[arg(long)]
        to: String,
        /// Delete what the target's renkei tables hold before copying, instead of refusing.
        #[arg(long)]
        replace: bool,
        /// Rows per statement.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

mod migrate_store;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, listen } => serve(&config, listen).await,
        Command::Check { config, online } => Ok(check(&config, online).await),
        Command::Test { config, flow, event, content_type } => dry_run(&config, &flow, &event, content_type.as_deref()),
        Command::MigrateStore { from, to, replace, batch } => migrate_store::run(&from, &to, replace, batch).await,
        Command::Token { command } => crate::manage::token(command).await,
        Command::User { command } => crate::manage::user(command).await,
        Command::RotateKey { config } => crate::manage::rotate_key(&config).await,
        Command::Export { config, revision } => crate::manage::export(&config, revision).await,
        Command::Apply { config, file } => crate::manage::apply(&config, &file).await,
    }
}

fn lang() -> Lang {
    Lang::from_header(std::env::var("LANG").ok().as_deref())
}

/// Reads and loads a config file; `Err` carries every problem, ready to print.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| e.to_string());
    load(&text, &|k| std::env::var(k).ok(), &read)
        .map_err(|problems| problems.iter().map(|p| describe(path, p, lang())).collect())
}

fn describe(path: &Path, p: &Problem, lang: Lang) -> String {
    let loc = match p.line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    };
    let at = if p.path.is_empty() { String::new() } else { format!(" {}:", p.path) };
    format!("{loc}:{at} {}", p.message.get(lang))
}

async fn check(path: &Path, online: bool) -> ExitCode {
    match load_file(path) {
        Ok(l) if online => {
            let client = renkei_connectors::http::HttpClient::new(renkei_connectors::http::Policy::from_network(
                &l.config.network,
            ));
            let mut ok = true;
            for name in l.config.destinations.keys() {
                let Some(report) = crate::connection::test_destination(&l, &client, name.as_str()).await else {
                    continue;
                };
                ok &= report.ok;
                println!("{name}: {}", if report.ok { "ok" } else { "FAILED" });
                for c in &report.checks {
                    println!("  [{}] {}: {}", if c.ok { "ok" } else { "NG" }, c.what, c.detail);
                }
                for f in &report.fields {
                    println!("    {} ({}) {}", f.code, f.kind, f.label);
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok(l) => {
            let c = &l.config;
            println!(
                "{}: ok ({} sources, {} destinations, {} flows, {} tables)",
                path.display(),
                c.sources.len(),
                c.destinations.len(),
                c.flows.len(),
                c.tables.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            let n = problems.len();
            eprintln!(
                "{}",
                if lang() == Lang::Ja {
                    format!("{n} 件の問題があります")
                } else {
                    format!("{n} problem(s) found")
                }
            );
            ExitCode::from(1)
        }
    }
}

fn guess_content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("form") | Some("urlencoded") => "application/x-www-form-urlencoded",
        _ => "text/plain",
    }
}

fn dry_run(config: &Path, flow_name: &str, event: &Path, content_type: Option<&str>) -> anyhow::Result<ExitCode> {
    let loaded = match load_file(config) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let Some(flow) = loaded.config.flows.get(flow_name) else {
        let known: Vec<&str> = loaded.config.flows.keys().map(Name::as_str).collect();
        bail!("there is no flow `{flow_name}` (flows: {})", known.join(", "));
    };
    let src = &loaded.config.sources[flow.source.as_str()];
    let bytes = std::fs::read(event).with_context(|| format!("reading {}", event.display()))?;
    let ct = content_type.unwrap_or_else(|| guess_content_type(event));
    let parsed = parse_body(Some(ct), &bytes, src.format, &src.csv)
        .map_err(|e| anyhow::anyhow!("{}: {}", event.display(), e.msg().get(lang())))?;
    let rows = src.events_of(parsed);
    let mut failed = false;
    for (row, body) in rows {
        let view = EventView {
            id: "dry-run".into(),
            event_type: String::new(),
            source: flow.source.to_string(),
            received_at: chrono::Utc::now(),
            body,
            row,
            headers: Default::default(),
            query: Default::default(),
        };
        if let Some(r) = row {
            println!("# row {r}");
        }
        let run = dry_run_event(&loaded, flow_name, &view).map_err(|e| anyhow::anyhow!(e))?;
        println!(
            "# event type: {}{}",
            run.event_type,
            run.dedupe.map(|d| format!(", dedupe key: {d}")).unwrap_or_default()
        );
        if let Some(k) = &run.order_key {
            println!("# order key: {k}");
        }
        match run.outcome {
            DryOutcome::NotRun => println!("# not run: the flow is disabled\n"),
            DryOutcome::Skipped => println!("# skipped: `when` is false for this event\n"),
            DryOutcome::Fails(e) => {
                println!("# fails: {e}\n");
                failed = true;
            }
            DryOutcome::Steps(steps) => {
                for step in steps {
                    match step.result {
                        Ok((req, note)) => {
                            println!("# step {} → {}", step.index, req.destination);
                            if let Some(note) = note {
                                println!("# {note}");
                            }
                            print_request(&loaded, &req);
                        }
                        Err(e) => {
                            println!("# step {} fails: {e}\n", step.index);
                            failed = true;
                        }
                    }
                }
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// What one flow would send for one event; renders only, sends nothing. Shared by `renkei test` and the
/// console's preview, so both show exactly what the worker would send.
#[derive(Debug)]
pub struct DryRun {
    pub event_type: String,
    pub dedupe: Option<String>,
    pub order_key: Option<String>,
    pub outcome: DryOutcome,
}

#[derive(Debug)]
pub enum DryOutcome {
    /// The flow is disabled, or not a flow of the event's source.
    NotRun,
    /// `when` is false for this event.
    Skipped,
    /// A template of the flow (when, order_key, skip_echo) failed on this event.
    Fails(String),
    /// The steps in order, up to and including the first that fails to render.
    Steps(Vec<DryStep>),
}

#[derive(Debug)]
pub struct DryStep {
    pub index: usize,
    /// The request (with a note for kintone steps), or why the step cannot be rendered.
    pub result: Result<(Request, Option<String>), String>,
}

/// Classifies `view` as its source would, plans `flow_name` for it and renders each step. `Err` when the
/// flow does not exist or the source's own templates (event type, dedupe) fail.
pub fn dry_run_event(loaded: &Loaded, flow_name: &str, view: &EventView) -> Result<DryRun, String> {
    let flow = loaded.config.flows.get(flow_name).ok_or_else(|| format!("there is no flow `{flow_name}`"))?;
    let (event_type, dedupe) = classify(loaded, &flow.source, view)?;
    let view = EventView { event_type: event_type.clone(), ..view.clone() };
    let Some(p) = plan(loaded, &view).into_iter().find(|p| p.flow.as_str() == flow_name) else {
        return Ok(DryRun { event_type, dedupe, order_key: None, outcome: DryOutcome::NotRun });
    };
    let outcome = match p.decision {
        Decision::Skip => DryOutcome::Skipped,
        Decision::Fail(e) => DryOutcome::Fails(e),
        Decision::Deliver => {
            let mut steps = Vec::new();
            let mut outputs = Vec::new();
            for index in 0..flow.steps.len() {
                let earlier = Arc::new(Steps { outputs: outputs.clone() });
                let result = render_step(loaded, flow, index, &view, earlier).map(|r| dry_request(loaded, r));
                let failed = result.is_err();
                steps.push(DryStep { index, result });
                if failed {
                    break;
                }
                // Later steps see a placeholder for the response a dry run never gets.
                let name = flow.steps[index].name.clone();
                outputs.push((
                    name,
                    minijinja::Value::from_serialize(serde_json::json!({ "status": 200, "headers": {}, "body": {} })),
                ));
            }
            DryOutcome::Steps(steps)
        }
    };
    Ok(DryRun { event_type, dedupe, order_key: p.order_key, outcome })
}

/// The request a step would send. A kintone step shows its values as rendered: when sent, they are converted
/// to the app's field types, which a dry run does not read.
fn dry_request(loaded: &Loaded, rendered: Rendered) -> (Request, Option<String>) {
    match rendered {
        Rendered::Http(req) => (req, None),
        Rendered::Kintone(op) => {
            let Some(Destination::Kintone(dest)) = loaded.config.destinations.get(op.destination.as_str()) else {
                unreachable!("a kintone op comes from a kintone destination")
            };
            let record = (!op.record.is_empty())
                .then(|| op.record.iter().map(|(k, v)| (k.clone(), serde_json::json!({ "value": v }))).collect());
            let (target, note) = match (&op.id, &op.key, op.action) {
                (Some(id), _, _) => (Target::Id(id.clone()), None),
                (None, Some((f, v)), KintoneAction::Delete | KintoneAction::Status | KintoneAction::Comment) => (
                    Target::Id("<id>".into()),
                    Some(format!("the record's id is looked up first: records.json query {f} = \"{v}\"")),
                ),
                (None, Some((f, v)), _) => (Target::Key(f.clone(), v.clone()), None),
                (None, None, _) => (Target::None, None),
            };
            let req = kintone_api::single_request(
                dest,
                op.destination.as_str(),
                op.action,
                &target,
                record,
                op.status.as_deref(),
                op.assignee.as_deref(),
                op.comment.as_deref(),
            );
            let convert = "values as rendered; converted to the app's field types when sent";
            (req, Some(note.map_or(convert.to_owned(), |n| format!("{n}; {convert}"))))
        }
    }
}

fn print_request(loaded: &Loaded, req: &Request) {
    println!("{} {}", req.method, loaded.redactor.text(&req.url));
    for (k, v) in &req.headers {
        println!("{k}: {}", loaded.redactor.header(k, v));
    }
    println!();
    if !req.body.is_empty() {
        match std::str::from_utf8(&req.body) {
            Ok(s) => println!("{}", loaded.redactor.text(s)),
            Err(_) => {
                let (text, _, _) = encoding_rs::SHIFT_JIS.decode(&req.body);
                println!("{}", loaded.redactor.text(&text));
            }
        }
    }
    println!();
}

async fn serve(config: &Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let loaded = match load_file(config) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    crate::telemetry::init(loaded.config.server.log_json);
    let storage = loaded.config.storage.clone();
    let clock = Arc::new(SystemClock);
    let store = open_store(&storage, chrono::Utc::now())
        .await
        .with_context(|| format!("opening {}", storage_label(&storage)))?;
    // The config as written may hold literal secrets: it is kept sealed under the master key.
    let env_key = std::env::var(crate::secrets::KEY_ENV).ok();
    let key_source = crate::secrets::key_source(&loaded.config, env_key.as_deref())?;
    let key = crate::secrets::master_key(&*store, &key_source, env_key.as_deref()).await?;
    let loader = crate::live::Loader::for_file(config);
    let addr = listen.unwrap_or(loaded.config.server.listen);
    let (loaded, revision) = crate::live::adopt(&*store, &key, &loader, loaded, chrono::Utc::now()).await?;
    let home = crate::app::Home { revision, key: Some(Arc::new(key)), loader };
    let app = App::with_revisions(loaded, home, store, clock, std::env::var("RENKEI_ADMIN_TOKEN").ok());
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, storage = %storage_label(&storage), "renkei is listening");
    match crate::sched::outcome() {
        Some(crate::sched::Outcome::Batch) => tracing::debug!("threads run under SCHED_BATCH"),
        Some(crate::sched::Outcome::Failed(why)) => {
            tracing::warn!(%why, "could not put the threads under SCHED_BATCH; they keep the default policy")
        }
        _ => {}
    }
    if app.admin_token.is_none() {
        tracing::warn!("no server.admin_token or RENKEI_ADMIN_TOKEN: only `renkei token` tokens open the admin API");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = Arc::new(Worker::new(app.clone()));
    let worker_task = tokio::spawn(worker.run(wait_for(stop_rx.clone())));
    let purge_task = tokio::spawn(purge_loop(app.clone(), wait_for(stop_rx.clone())));
    let poll_task = tokio::spawn(crate::poll::run(app.clone(), wait_for(stop_rx.clone())));
    let reload_task = tokio::spawn(crate::live::watch(app.clone(), wait_for(stop_rx.clone())));
    let health_task = tokio::spawn(crate::health::watch(app.clone(), wait_for(stop_rx.clone())));
    let server = crate::server::serve(listener, app.clone(), wait_for(stop_rx));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    server.await?;
    worker_task.await?;
    purge_task.await?;
    poll_task.await?;
    reload_task.await?;
    health_task.await?;
    Ok(ExitCode::SUCCESS)
}

/// The storage URL without its password, for logs and messages.
fn storage_label(url: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    match (base.split_once("://"), base.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (cred, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => base.to_owned(),
    }
}

/// Opens the store a `storage` URL names: `sqlite://FILE` or `postgres://...`.
pub async fn open_store(
    url: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Arc<dyn Store>, renkei_store::StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(renkei_store::postgres::PgStore::open(url, now).await?))
    } else {
        Ok(Arc::new(renkei_store::sqlite::SqliteStore::open(url, now).await?))
    }
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Deletes finished history older than `history.retention`, hourly.
async fn purge_loop(app: Arc<App>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let retention =
        chrono::Duration::from_std(app.loaded().config.history.retention.0).unwrap_or(chrono::Duration::days(30));
    loop {
        let now = app.clock.now();
        match app.store.purge(now - retention, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "purged old history"),
            Err(e) => tracing::warn!(error = %e, "purging history failed"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
