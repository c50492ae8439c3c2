//! One fresh store per test, for each backend.
//!
//! PostgreSQL runs when `RENKEI_TEST_POSTGRES_URL` names a database (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); CI (`.ci/run`) always sets it, starting the server if needed.
//! Unset, each PostgreSQL test prints one line saying it was skipped and passes. Each test gets its own schema
//! (`t_<uuid>`), dropped when the case passes; one left by a failed case is harmless and shows what it wrote.

use renkei_store::postgres::PgStore;
use renkei_store::sqlite::SqliteStore;

pub async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (SqliteStore::open(&url, crate::t0()).await.unwrap(), dir)
}

pub const POSTGRES_URL_VAR: &str = "RENKEI_TEST_POSTGRES_URL";

/// A store in a fresh schema of the test database.
pub struct Postgres {
    pub store: PgStore,
    url: String,
    schema: String,
}

/// `None` (after printing that `test` was skipped) when no test database is configured.
pub async fn postgres(test: &str) -> Option<Postgres> {
    let Ok(url) = std::env::var(POSTGRES_URL_VAR) else {
        println!("skipped postgres::{test}: {POSTGRES_URL_VAR} is not set");
        return None;
    };
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let store = PgStore::open_in_schema(&url, &schema, crate::t0()).await.unwrap();
    Some(Postgres { store, url, schema })
}

impl Postgres {
    pub async fn drop_schema(self) {
        drop(self.store);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema)).execute(&mut conn).await.unwrap();
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` for every case.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = crate::backends::sqlite().await;
                    crate::$name(&store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = crate::backends::postgres(stringify!($name)).await else { return };
                    crate::$name(&db.store).await;
                    db.drop_schema().await;
                }
            )*
        }
    };
}

pub(crate) use for_each_backend;
