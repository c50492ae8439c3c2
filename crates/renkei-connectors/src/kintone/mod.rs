//! The `kintone` connector (seeds 001, 002, 004): records written by add, update, upsert, delete, status and
//! comment, with values converted to each field's type, several events' records batched into one request,
//! and kintone's errors turned into reasons a person can act on.
//!
//! This module builds requests and reads answers; the worker sends them (through the same HTTP client as
//! any step), so each kintone call is in the delivery's history. What it keeps is the app's field
//! definitions, per app, read once and again when kintone says a value did not fit.

pub mod api;
pub mod convert;
pub mod fields;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use api::{KintoneError, Target};
pub use convert::{convert_record, ConvertError};
pub use fields::{Field, Fields};

/// Field definitions per app (`base URL` + app id + guest space).
#[derive(Debug, Default)]
pub struct FieldCache {
    apps: Mutex<HashMap<String, Arc<Fields>>>,
}

impl FieldCache {
    pub fn key(dest: &renkei_core::config::KintoneDestination) -> String {
        format!("{}#{}#{}", dest.base(), dest.guest_space.unwrap_or(0), dest.app)
    }

    pub fn get(&self, key: &str) -> Option<Arc<Fields>> {
        self.apps.lock().expect("field cache lock").get(key).cloned()
    }

    pub fn put(&self, key: String, fields: Fields) -> Arc<Fields> {
        let fields = Arc::new(fields);
        self.apps.lock().expect("field cache lock").insert(key, fields.clone());
        fields
    }

    pub fn forget(&self, key: &str) {
        self.apps.lock().expect("field cache lock").remove(key);
    }
}
