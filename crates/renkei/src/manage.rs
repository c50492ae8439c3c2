//! The command line's access, key and config commands: `renkei token ...`, `renkei user ...`, `renkei rotate-key`,
//! `renkei export`, `renkei apply`.
//!
//! Token and user commands may run while the hub runs (on SQLite they open the file beside the running
//! process, without its lock); every change they make is in the audit log, as done by `cli`. A new token is
//! printed once, on stdout, and nothing else is; a password is read from stdin or an environment variable and
//! never printed. `rotate-key` needs the hub stopped (on SQLite it takes the file's lock).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use clap::Subcommand;
use renkei_core::config::Loaded;
use renkei_core::types::Span;
use renkei_store::{NewAudit, NewToken, NewUser, Store, StoreError};

use crate::access::{self, Role, CLI_ACTOR};
use crate::secrets::{self, MasterKey};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an admin API token and print it; it is shown only this once (renkei keeps a hash).
    Create {
        #[arg(long, short)]
        config: PathBuf,
        /// A name for the token, as the audit log will show it (`token:NAME`).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// How long the token is valid, e.g. 30d or 12h; it never expires when not given.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens: name, role, created, expires (never the tokens).
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke a token: it opens nothing from now on.
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a console user. The password is read from stdin, or from the variable `--password-env` names.
    Add {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from this environment variable instead of stdin.
        #[arg(long)]
        password_env: Option<String>,
    },
    /// List users: name, role, created.
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Remove a console user.
    Remove {
        #[arg(long, short)]
        config: PathBuf,
        name: String,
    },
}

fn load(config: &Path) -> anyhow::Result<Loaded> {
    crate::cli::load_file(config).map_err(|problems| anyhow!("{}", problems.join("\n")))
}

/// The store a config names, opened beside a hub that may be running.
async fn open_beside(loaded: &Loaded) -> anyhow::Result<Arc<dyn Store>> {
    let url = &loaded.config.storage;
    let store: Arc<dyn Store> = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(renkei_store::postgres::PgStore::open(url, Utc::now()).await?)
    } else {
        Arc::new(renkei_store::sqlite::SqliteStore::open_beside(url).await?)
    };
    Ok(store)
}

fn audit(action: &str, target: &str, detail: serde_json::Value) -> NewAudit {
    NewAudit { at: Utc::now(), actor: CLI_ACTOR.into(), action: action.into(), target: target.into(), detail }
}

fn when(t: Option<chrono::DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_else(|| "never".into())
}

pub async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { config, name, role, expires } => {
            access::check_name(&name).map_err(|e| anyhow!(e))?;
            let now = Utc::now();
            let expires_at = match expires {
                Some(e) => {
                    let span = Span::parse(&e).map_err(|e| anyhow!("--expires: {e}"))?;
                    Some(now + chrono::Duration::from_std(span.0).context("--expires is too long")?)
                }
                None => None,
            };
            let store = open_beside(&load(&config)?).await?;
            let token = access::new_token();
            let record = NewToken {
                name: name.clone(),
                role: role.as_str().into(),
                hash: access::token_hash(&token),
                created_at: now,
                expires_at,
            };
            let detail = serde_json::json!({ "role": role, "expires_at": expires_at });
            match store.create_token(record, audit("token.created", &name, detail)).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => bail!("there is already a token named `{name}`"),
                Err(e) => return Err(e).context("storing the token"),
            }
            println!("{token}");
            eprintln!(
                "token `{name}` ({role}, expires {}) created; it is shown only now: keep it in a secret store",
                when(expires_at)
            );
        }
        TokenCommand::List { config } => {
            let store = open_beside(&load(&config)?).await?;
            let now = Utc::now();
            println!("{:<24} {:<7} {:<21} expires", "name", "role", "created");
            for t in store.list_tokens().await? {
                let expired = if t.expires_at.is_some_and(|at| at <= now) { " (expired)" } else { "" };
                println!(
                    "{:<24} {:<7} {:<21} {}{expired}",
                    t.name,
                    t.role,
                    when(Some(t.created_at)),
                    when(t.expires_at)
                );
            }
        }
        TokenCommand::Revoke { config, name } => {
            let store = open_beside(&load(&config)?).await?;
            match store.revoke_token(&name, audit("token.revoked", &name, serde_json::json!({}))).await {
                Ok(()) => eprintln!("token `{name}` revoked"),
                Err(StoreError::NotFound) => bail!("there is no token named `{name}`"),
                Err(e) => return Err(e).context("revoking the token"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The password: from the named variable, else stdin (one line; a trailing newline is not part of it).
fn read_password(env: Option<&str>) -> anyhow::Result<String> {
    let password = match env {
        Some(var) => std::env::var(var).with_context(|| format!("--password-env: {var} is not set"))?,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("password (the input is shown; --password-env VAR avoids that):");
            }
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the password from stdin")?;
            let line = text.lines().next().unwrap_or("");
            line.to_owned()
        }
    };
    if password.chars().count() < access::MIN_PASSWORD_CHARS {
        bail!("the password must be at least {} characters", access::MIN_PASSWORD_CHARS);
    }
    Ok(password)
}

pub async fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add { config, name, role, password_env } => {
            access::check_name(&name).map_err(|e| anyhow!(e))?;
            let loaded = load(&config)?;
            let password = read_password(password_env.as_deref())?;
            let password_hash = access::hash_password(&password).map_err(|e| anyhow!("hashing the password: {e}"))?;
            drop(password);
            let store = open_beside(&loaded).await?;
            let user =
                NewUser { name: name.clone(), role: role.as_str().into(), password_hash, created_at: Utc::now() };
            match store.add_user(user, audit("user.added", &name, serde_json::json!({ "role": role }))).await {
                Ok(()) => eprintln!("user `{name}` ({role}) added"),
                Err(StoreError::Conflict(_)) => bail!("there is already a user named `{name}`"),
                Err(e) => return Err(e).context("storing the user"),
            }
        }
        UserCommand::List { config } => {
            let store = open_beside(&load(&config)?).await?;
            println!("{:<24} {:<7} created", "name", "role");
            for u in store.list_users().await? {
                println!("{:<24} {:<7} {}", u.name, u.role, when(Some(u.created_at)));
            }
        }
        UserCommand::Remove { config, name } => {
            let store = open_beside(&load(&config)?).await?;
            match store.remove_user(&name, audit("user.removed", &name, serde_json::json!({}))).await {
                Ok(()) => eprintln!("user `{name}` removed"),
                Err(StoreError::NotFound) => bail!("there is no user named `{name}`"),
                Err(e) => return Err(e).context("removing the user"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `renkei rotate-key`: a new master key, and everything sealed re-encrypted under it. With a key file the new
/// key is made here and replaces the file; with `RENKEI_MASTER_KEY` it comes from `RENKEI_NEW_MASTER_KEY`,
/// and the operator puts it in place of the old one.
pub async fn rotate_key(config: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load(config)?;
    let env = std::env::var(secrets::KEY_ENV).ok();
    let source = secrets::key_source(&loaded.config, env.as_deref())?;
    let store = crate::cli::open_store(&loaded.config.storage, Utc::now()).await?;
    let new_env = std::env::var(secrets::NEW_KEY_ENV).ok().filter(|v| !v.trim().is_empty());
    let new = match (&source, new_env) {
        (_, Some(v)) => MasterKey::from_base64(&v).map_err(|e| anyhow!("{}: {e}", secrets::NEW_KEY_ENV))?,
        (secrets::KeySource::File(_), None) => MasterKey::generate(),
        (secrets::KeySource::Env, None) => bail!(
            "the master key comes from {}: set {} to the new key (e.g. `openssl rand -base64 32`), run rotate-key, \
             then start renkei with {} set to it",
            secrets::KEY_ENV,
            secrets::NEW_KEY_ENV,
            secrets::KEY_ENV
        ),
        (secrets::KeySource::Ephemeral, None) => bail!("an in-memory store keeps nothing to re-encrypt"),
    };
    if let secrets::KeySource::File(path) = &source {
        if !path.exists() {
            bail!(
                "there is no master key file at {}: nothing is sealed yet, so there is nothing to rotate",
                path.display()
            );
        }
    }
    let old = secrets::master_key(&*store, &source, env.as_deref()).await?;
    let done = secrets::rotate(&*store, &source, &old, new, CLI_ACTOR, Utc::now()).await?;
    eprintln!("re-encrypted {} config revision(s): master key {} replaced by {}", done.revisions, done.old, done.new);
    match source {
        secrets::KeySource::File(path) => eprintln!("the key file {} now holds the new key", path.display()),
        _ => eprintln!("start renkei with {} set to the new key from now on", secrets::KEY_ENV),
    }
    Ok(ExitCode::SUCCESS)
}

/// The master key of a store that already holds sealed revisions (never creates a key file).
async fn existing_key(loaded: &Loaded, store: &dyn Store) -> anyhow::Result<MasterKey> {
    if store.config_head().await?.is_none() {
        bail!("this store holds no config yet: start renkei once with the config file");
    }
    let env = std::env::var(secrets::KEY_ENV).ok();
    let source = secrets::key_source(&loaded.config, env.as_deref())?;
    secrets::master_key(store, &source, env.as_deref()).await
}

pub async fn export(config: &Path, revision: Option<i64>) -> anyhow::Result<ExitCode> {
    let loaded = load(config)?;
    let store = open_beside(&loaded).await?;
    let key = existing_key(&loaded, &*store).await?;
    let id = match revision {
        Some(id) => id,
        None => store.config_head().await?.context("no config revision")?,
    };
    let rev = match store.config_revision(id).await {
        Err(StoreError::NotFound) => bail!("there is no config revision {id}"),
        r => r?,
    };
    let text = crate::live::open(&key, &rev.text)?;
    // Masking needs the secrets the text resolves to: a revision that does not load here cannot be masked.
    let of_it = crate::live::Loader::for_file(config).load(&text).map_err(|problems| {
        anyhow!(
            "revision {id} does not load here, so its secrets cannot be told apart: {}",
            problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    print!("{}", crate::live::shown_text(&of_it));
    eprintln!("revision {id} ({}, {}); secrets masked as [REDACTED]", rev.origin, rev.loaded_at.to_rfc3339());
    Ok(ExitCode::SUCCESS)
}

pub async fn apply(config: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load(config)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let store = open_beside(&loaded).await?;
    let key = existing_key(&loaded, &*store).await?;
    let head = store.config_head().await?.context("no config revision")?;
    let current = crate::live::open(&key, &store.config_revision(head).await?.text)?;
    let loader = crate::live::Loader::for_file(config);
    let current = loader.load(&current).map_err(|_| anyhow!("the running revision {head} does not load here"))?;
    let text = renkei_core::config::edit::restore(&text, &current.text, &current.redactor)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    if let Err(problems) = loader.load(&text) {
        for p in &problems {
            eprintln!("{}: {p}", file.display());
        }
        eprintln!("{} problem(s): nothing stored", problems.len());
        return Ok(ExitCode::from(1));
    }
    if text == current.text {
        eprintln!("{} is the running config (revision {head}): nothing stored", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let detail = serde_json::json!({ "origin": "apply", "base": head, "file": file.display().to_string() });
    let id = match store
        .add_config_revision(&key.seal(&text), "apply", Utc::now(), Some(head), audit("config.apply", "config", detail))
        .await
    {
        Err(StoreError::Conflict(m)) => bail!("{m}: run apply again"),
        r => r.context("storing the revision")?,
    };
    eprintln!("stored as revision {id}; running nodes switch to it within {} s", crate::live::RELOAD_EVERY.as_secs());
    Ok(ExitCode::SUCCESS)
}
