//! The running hub's shared state: config, store, clock, metrics, and the bell that wakes the worker.

use std::sync::Arc;

use renkei_core::config::Loaded;
use renkei_core::types::Secret;
use renkei_store::Store;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::metrics::Metrics;

pub struct App {
    pub loaded: Arc<Loaded>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// Rung after ingest and retry so an idle worker starts at once instead of at its next poll.
    pub wake: Notify,
    /// `server.admin_token`, else `RENKEI_ADMIN_TOKEN`; `None` disables the admin API.
    pub admin_token: Option<Secret>,
    /// For connection tests the API runs on request (deliveries use the worker's own client).
    pub http: renkei_connectors::http::HttpClient,
    /// Rate limits of `/hooks/*`.
    pub limiter: crate::server::limits::Limiter,
    /// kintone apps' field definitions, read by the worker and forgotten by a connection test (so an app changed
    /// in kintone is read again on demand).
    pub kintone_fields: renkei_connectors::kintone::FieldCache,
    /// Held while an app's fields are read, so deliveries that find the cache empty together read them once.
    pub kintone_fields_read: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Drops the cached fields of a kintone destination; the next write reads them again.
    pub fn forget_kintone_fields(&self, destination: &str) {
        if let Some(renkei_core::config::Destination::Kintone(k)) = self.loaded.config.destinations.get(destination) {
            self.kintone_fields.forget(&renkei_connectors::kintone::FieldCache::key(k));
        }
    }

    pub fn new(
        loaded: Arc<Loaded>,
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
        let policy = renkei_connectors::http::Policy::from_network(&loaded.config.network);
        Arc::new(App {
            loaded,
            store,
            clock,
            metrics: Metrics::new(),
            wake: Notify::new(),
            admin_token,
            limiter: Default::default(),
            kintone_fields: Default::default(),
            kintone_fields_read: Default::default(),
            http: renkei_connectors::http::HttpClient::new(policy),
        })
    }
}
