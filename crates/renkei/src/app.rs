//! The running hub's shared state: config, store, clock, metrics, and the bell that wakes the worker.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use renkei_core::config::Loaded;
use renkei_core::types::Secret;
use renkei_store::Store;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::metrics::Metrics;

pub struct App {
    /// The config this node runs, and its revision (0 when it runs without revisions: benches).
    live: RwLock<Live>,
    /// A revision that did not load here: not tried again every few seconds.
    refused: AtomicI64,
    /// Seals and opens config revisions; `None` in benches, which cannot keep edits.
    pub key: Option<Arc<crate::secrets::MasterKey>>,
    /// How this node turns config text into a config (environment, table files' folder).
    pub loader: crate::live::Loader,
    /// One edit at a time on this node (the store refuses edits made from a stale revision across nodes).
    pub edit_lock: tokio::sync::Mutex<()>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// Rung after ingest and retry so an idle worker starts at once instead of at its next poll.
    pub wake: Notify,
    /// `server.admin_token`, else `RENKEI_ADMIN_TOKEN`; `None` disables the admin API.
    pub admin_token: Option<Secret>,
    /// Rate limits of `/hooks/*`.
    pub limiter: crate::server::limits::Limiter,
    /// kintone apps' field definitions, read by the worker and forgotten by a connection test (so an app changed
    /// in kintone is read again on demand).
    pub kintone_fields: renkei_connectors::kintone::FieldCache,
    /// Held while an app's fields are read, so deliveries that find the cache empty together read them once.
    pub kintone_fields_read: tokio::sync::Mutex<()>,
}

struct Live {
    loaded: Arc<Loaded>,
    revision: i64,
    http: renkei_connectors::http::HttpClient,
}

impl Live {
    fn new(loaded: Loaded, revision: i64) -> Live {
        let http = renkei_connectors::http::HttpClient::new(renkei_connectors::http::Policy::from_network(
            &loaded.config.network,
        ));
        Live { loaded: Arc::new(loaded), revision, http }
    }
}

/// Where a hub's config revisions come from and go to.
#[derive(Debug, Default)]
pub struct Home {
    pub revision: i64,
    pub key: Option<Arc<crate::secrets::MasterKey>>,
    pub loader: crate::live::Loader,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// The config this node runs now. Take it once per request or run: a reload swaps it whole.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.live.read().expect("config lock").loaded.clone()
    }

    /// The revision of [`App::loaded`].
    pub fn revision(&self) -> i64 {
        self.live.read().expect("config lock").revision
    }

    /// For connection tests and sender callbacks (deliveries use the worker's own client); follows the
    /// running config's `network` settings.
    pub fn http(&self) -> renkei_connectors::http::HttpClient {
        self.live.read().expect("config lock").http.clone()
    }

    pub fn set_config(&self, loaded: Loaded, revision: i64) {
        *self.live.write().expect("config lock") = Live::new(loaded, revision);
    }

    pub(crate) fn refused_revision(&self) -> Option<i64> {
        Some(self.refused.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    pub(crate) fn refuse_revision(&self, revision: i64) {
        self.refused.store(revision, Ordering::Relaxed);
    }

    /// Drops the cached fields of a kintone destination; the next write reads them again.
    pub fn forget_kintone_fields(&self, destination: &str) {
        if let Some(renkei_core::config::Destination::Kintone(k)) = self.loaded().config.destinations.get(destination) {
            self.kintone_fields.forget(&renkei_connectors::kintone::FieldCache::key(k));
        }
    }

    /// A hub without config revisions (benches): edits are refused.
    pub fn new(
        loaded: Loaded,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        env_admin_token: Option<String>,
    ) -> Arc<App> {
        App::with_revisions(loaded, Home::default(), store, clock, env_admin_token)
    }

    /// A hub that runs `revision` of the config and keeps edits as new revisions sealed with `home.key`.
    pub fn with_revisions(
        loaded: Loaded,
        home: Home,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        env_admin_token: Option<String>,
    ) -> Arc<App> {
        let admin_token = loaded
            .config
            .server
            .admin_token
            .clone()
            .or_else(|| env_admin_token.filter(|t| !t.is_empty()).map(Secret::new));
        Arc::new(App {
            live: RwLock::new(Live::new(loaded, home.revision)),
            refused: AtomicI64::new(0),
            key: home.key,
            loader: home.loader,
            edit_lock: Default::default(),
            store,
            clock,
            metrics: Metrics::new(),
            wake: Notify::new(),
            admin_token,
            limiter: Default::default(),
            kintone_fields: Default::default(),
            kintone_fields_read: Default::default(),
        })
    }
}
