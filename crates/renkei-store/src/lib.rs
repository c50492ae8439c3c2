//! renkei-store: where events, deliveries, attempts and config live.
//!
//! One [`Store`] trait, one module per backend. The queue is not a separate system: it is the set of open
//! rows in the `deliveries` table, so the queue is also the history and the replay source, and acknowledging
//! an event and enqueueing its deliveries is one transaction. Workers claim deliveries with a lease
//! (`lease_owner`, `lease_until`); a claim whose lease ran out may be taken by another worker, which is how
//! a crashed worker's work is finished.
//!
//! The store never reads the clock: every method that needs "now" takes it, so tests move time by hand.
//! It never renders templates or talks HTTP; callers hand it finished values.

#[cfg(test)]
mod fixtures;
pub mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;
mod types;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The row is not in a state that allows this (e.g. retrying a delivery that succeeded, or finishing a
    /// delivery whose lease was taken over).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or is full: ingress answers 503 and nothing is acknowledged.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores the events of one request and their deliveries in one transaction; returns one outcome per
    /// event, in order. A duplicate (same source and dedupe key, not expired) is not stored: its outcome names
    /// the first event. Only after this returns Ok may the sender be answered 2xx.
    async fn ingest(&self, events: Vec<NewEvent>, now: DateTime<Utc>) -> Result<Vec<Ingested>>;

    /// Records a request that was refused (bad auth, malformed body...), so an admin can see what was sent.
    async fn record_rejected(&self, rejected: Rejected) -> Result<()>;

    /// Claims up to `limit` due deliveries for `owner` until `lease_until`: pending or retrying ones whose time
    /// has come, and in-flight ones whose lease ran out; for an ordering key, only the oldest open delivery.
    /// Deliveries whose next step is in `skip` are left where they are, and the claim goes on past them to
    /// others (the worker leaves out the steps of a destination that has all the work it can take).
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        skip: &[FlowStep],
    ) -> Result<Vec<Claimed>>;

    /// Records one try of one step and moves the delivery as `transition` says, if `owner` still holds it.
    async fn record_attempt(
        &self,
        owner: &str,
        attempt: NewAttempt,
        transition: Transition,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Gives back every delivery `owner` holds (graceful shutdown), to be claimed again at once, and on a
    /// shared store every concurrency slot it holds ([`Store::take_slot`]), to be taken again at once.
    async fn release(&self, owner: &str, now: DateTime<Utc>) -> Result<u64>;

    /// Gives back these deliveries, claimed by `owner` and not tried, to be claimed again at once, as
    /// [`Store::release`] does for all of them; returns how many `owner` still held.
    async fn give_back(&self, owner: &str, ids: &[i64], now: DateTime<Utc>) -> Result<u64>;

    /// Extends to `until` the leases `owner` still holds on these deliveries (a delivery running longer than a
    /// lease is not taken over while its worker lives); returns how many it still held.
    async fn renew_leases(&self, owner: &str, ids: &[i64], until: DateTime<Utc>) -> Result<u64>;

    /// The earliest `next_at` or lease expiry among open deliveries: when an idle worker should look again.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;

    // ----- history and operations -----

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>>;
    async fn get_event(&self, id: &str) -> Result<EventRecord>;
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRecord>>;
    async fn get_delivery(&self, id: i64) -> Result<DeliveryRecord>;
    async fn list_attempts(&self, filter: &AttemptFilter) -> Result<Vec<AttemptRecord>>;

    /// Makes a dead or retrying delivery due now, from the step it stopped at.
    async fn retry_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<DeliveryRecord>;
    /// [`Store::retry_delivery`] for every dead delivery matching `filter` (its `status` is ignored).
    async fn retry_dead(&self, filter: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64>;
    /// Adds deliveries to a stored event (replay through the current flows); returns their ids.
    async fn add_deliveries(
        &self,
        event_id: &str,
        deliveries: Vec<NewDelivery>,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>>;

    async fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats>;
    /// Deletes events received before `before` whose deliveries are all finished, with their deliveries and
    /// attempts, and expired dedupe keys; gives the freed pages back to the file system where it can.
    async fn purge(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64>;
    /// Keeps the config text as given, when it differs from the last one kept. renkei gives it sealed (encrypted
    /// under the master key, a new nonce each time), so it decides itself whether the config changed.
    async fn save_config(&self, text: &str, now: DateTime<Utc>) -> Result<()>;
    /// Answers when the database does.
    async fn ping(&self) -> Result<()>;

    /// A small named value kept across restarts (a polling cursor).
    async fn get_state(&self, key: &str) -> Result<Option<String>>;
    async fn put_state(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()>;
    /// Adds `by` to a named counter (created at 0) and returns its new value. Atomic across nodes.
    async fn add_count(&self, key: &str, by: i64) -> Result<i64>;
    /// The counters whose names start with `prefix`, by name.
    async fn counts(&self, prefix: &str) -> Result<Vec<(String, i64)>>;

    // ----- access: who may use the admin API, and what was done -----
    //
    // Every change to a token or a user is stored with its audit entry in one transaction: the log has every
    // change that happened. The store keeps roles as text and never decides what they allow; it never sees a
    // token (only its hash) or a password (only its argon2 hash).

    /// Adds an API token, by its hash, with the audit entry saying so. `Conflict` when the name (or the hash)
    /// is taken.
    async fn create_token(&self, token: NewToken, audit: NewAudit) -> Result<()>;
    /// The token with this hash, expired or not (the caller holds the clock, and compares `expires_at`).
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Every token, by name.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Deletes a token, with the audit entry. `NotFound` (and nothing recorded) when there is none.
    async fn revoke_token(&self, name: &str, audit: NewAudit) -> Result<()>;
    /// Adds a console user, with the audit entry. `Conflict` when the name is taken.
    async fn add_user(&self, user: NewUser, audit: NewAudit) -> Result<()>;
    async fn get_user(&self, name: &str) -> Result<UserRecord>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Deletes a user, with the audit entry. `NotFound` (and nothing recorded) when there is none.
    async fn remove_user(&self, name: &str, audit: NewAudit) -> Result<()>;
    /// Records something done that is not a token or user change (a retry, a replay, a new config).
    async fn append_audit(&self, entry: NewAudit) -> Result<()>;
    /// The audit log, newest first, filtered and paged like the history listings.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    // ----- concurrency limits across nodes -----

    /// Whether several processes may share this store (PostgreSQL). Limits that must hold across nodes are then
    /// kept in it; SQLite has one process, whose own semaphores are the limit.
    fn shared(&self) -> bool {
        false
    }
    /// Takes one of `cap` slots named `key` for `owner` until `until` (a slot held past its `until` is free);
    /// the slot taken, or `None` when all are held. Only called when [`Store::shared`].
    async fn take_slot(
        &self,
        _key: &str,
        _cap: u32,
        _owner: &str,
        _now: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> Result<Option<u32>> {
        Ok(Some(0))
    }
    /// Gives a slot back (nothing when `owner` no longer holds it).
    async fn free_slot(&self, _key: &str, _slot: u32, _owner: &str) -> Result<()> {
        Ok(())
    }

    // ----- console sessions, shared by every node -----

    /// Keeps a new session, and forgets those not used since `forget_before`.
    async fn put_session(&self, session: &SessionRecord, forget_before: DateTime<Utc>) -> Result<()>;
    /// The session with this id hash when it was used at or after `idle_since` and made at or after
    /// `made_since`, marked as used at `now`; `None` otherwise.
    async fn touch_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
        made_since: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>>;
    /// Ends a session (nothing when there is none).
    async fn end_session(&self, id_hash: &str) -> Result<()>;

    // ----- config revisions, whole (renkei seals their text; see `save_config`) -----

    /// The id of the newest config revision: what every node should be running.
    async fn config_head(&self) -> Result<Option<i64>>;
    async fn config_revision(&self, id: i64) -> Result<ConfigRevision>;
    /// Stores an edited config (as `origin`: console, api, apply) with its audit entry (the new revision's id is
    /// added to the entry's detail); returns its id. With `base`, `Conflict` unless `base` is still the newest
    /// revision (`Some(0)`: unless there is none yet), so two admins editing at once cannot silently undo each
    /// other, and two nodes starting at once store their config file once.
    async fn add_config_revision(
        &self,
        text: &str,
        origin: &str,
        now: DateTime<Utc>,
        base: Option<i64>,
        audit: NewAudit,
    ) -> Result<i64>;
    /// Every kept config revision, oldest first.
    async fn config_revisions(&self) -> Result<Vec<ConfigRevision>>;
    /// Replaces the text of these revisions (by id), all or none, with the audit entry: re-encryption under a
    /// new master key. `NotFound` when an id is not there.
    async fn rewrite_config_revisions(&self, texts: Vec<(i64, String)>, audit: NewAudit) -> Result<()>;
}
