//! What every fake's server shares: its state behind one lock (never held across an await), and the server
//! task that stops when the last clone of the fake is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;

/// A fake's address and state.
pub(crate) struct Inner<S> {
    pub(crate) addr: SocketAddr,
    state: Mutex<S>,
}

impl<S> Inner<S> {
    pub(crate) fn new(addr: SocketAddr, state: S) -> Inner<S> {
        Inner { addr, state: Mutex::new(state) }
    }

    /// The state; a panic in another test thread does not poison it for the rest.
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The server's task, aborted when dropped.
pub(crate) struct ServerTask(pub(crate) JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds 127.0.0.1 on a free port and serves `handler` (every path) over `state` in a background task.
pub(crate) async fn serve<S, H, T>(state: S, handler: H) -> (Arc<Inner<S>>, Arc<ServerTask>)
where
    S: Send + 'static,
    H: axum::handler::Handler<T, Arc<Inner<S>>>,
    T: 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address of a fake");
    let inner = Arc::new(Inner::new(addr, state));
    let router = axum::Router::new().fallback(handler).with_state(inner.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (inner, Arc::new(ServerTask(task)))
}
