//! What every fake's server shares: its state behind one lock (never held across an await), and the server
//! task that stops when the last clone of the fake is dropped.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

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
