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
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
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
            http: renkei_connectors::http::HttpClient::new(policy),
        })
    }
}
