//! Rows the backends' own tests write with SQL, below the `Store` API.

/// Deliveries of one event as a database before the `held` column (SQLite version 5, PostgreSQL version 6)
/// had them: `(id, flow, status, order_key, due)`, `due` false for one due a day later. Migrating holds
/// [`HELD_AFTER_MIGRATION`]; a claim then takes [`CLAIMED_AFTER_MIGRATION`].
pub const QUEUED_BEFORE_HELD: [(i64, &str, &str, Option<&str>, bool); 9] = [
    (1, "f", "retrying", Some("k"), false),  // head of (f, k), not due
    (2, "f", "pending", Some("k"), true),    // behind it
    (3, "f", "pending", Some("k"), true),    // behind it
    (4, "f", "succeeded", Some("k2"), true), // closed: not a head
    (5, "f", "pending", Some("k2"), true),   // head of (f, k2)
    (6, "f", "dead", Some("k2"), true),      // closed
    (7, "f", "pending", Some("k2"), true),   // behind 5
    (8, "g", "pending", Some("k"), true),    // another flow's key: its own head
    (9, "f", "pending", None, true),         // unkeyed
];
pub const HELD_AFTER_MIGRATION: [i64; 3] = [2, 3, 7];
pub const CLAIMED_AFTER_MIGRATION: [i64; 3] = [5, 8, 9];
