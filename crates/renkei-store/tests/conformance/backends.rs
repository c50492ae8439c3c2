//! One fresh store per test, for each backend.

use renkei_store::sqlite::SqliteStore;

pub async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (SqliteStore::open(&url, crate::t0()).await.unwrap(), dir)
}

/// Generates `sqlite::NAME` (and, once that backend exists, `postgres::NAME`) for every case.
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
    };
}

pub(crate) use for_each_backend;
