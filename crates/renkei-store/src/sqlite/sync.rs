//! The disk half of a group commit: a batch is committed without waiting for the disk, and answered once the
//! WAL holding it is synced, while the writer goes on with the next batch.
//!
//! With `synchronous=FULL` a commit writes its WAL frames and then waits for `fsync`; SQLite's one writer sits
//! idle meanwhile, and so does every job queued behind it. So the group commit runs its text at
//! `synchronous=NORMAL` (the frames are written, not synced) and hands the batch's answers here. This thread
//! syncs the WAL file once for every batch committed since its last sync, then answers them: no sender hears 202,
//! no worker sends a claimed delivery, no attempt counts as recorded before its commit is on disk, exactly as
//! with `FULL`. What changes is that the next batch's statements run while the disk works.
//!
//! Why one `fdatasync` of the WAL is enough: a commit is durable once its frames, the commit frame last, are on
//! disk, and `fdatasync` flushes every page of the file written before the call (it is per file, not per
//! descriptor). A WAL that was deleted or started anew since (the last connection closed, or a checkpoint copied
//! everything) first had its frames copied into the database file, which SQLite syncs at `NORMAL` too before the
//! WAL is let go.
//!
//! A sync that fails is not tried again and believed: the kernel may have dropped the pages it could not write
//! and report success the next time. Every batch it was for is answered as unavailable (the senders try again),
//! and so is every batch after it, until renkei is restarted and SQLite reads back what is really on disk.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, OnceLock};

use crate::*;

/// A committed batch's answers: called with `Ok` once its commit is on disk, or with why that is not known.
pub(super) type Waiting = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// The handle the writer holds; the thread ends when it is dropped.
pub(super) struct Syncer {
    tx: mpsc::Sender<Waiting>,
    failed: Arc<OnceLock<String>>,
}

impl Syncer {
    /// Starts the thread that syncs `wal` (the database's `-wal` file); `None` when there is nothing to sync
    /// (an in-memory database): batches are answered at once, in order.
    pub(super) fn start(wal: Option<PathBuf>) -> Result<Syncer> {
        Syncer::with(move || match &wal {
            Some(path) => Wal::new(path.clone()),
            None => Wal::none(),
        })
    }

    /// As [`Syncer::start`], with what syncs made by `make` on the thread (the tests' way to make a sync fail).
    fn with<S: Disk + 'static>(make: impl FnOnce() -> S + Send + 'static) -> Result<Syncer> {
        let (tx, rx) = mpsc::channel::<Waiting>();
        let failed = Arc::new(OnceLock::<String>::new());
        let failed_here = failed.clone();
        std::thread::Builder::new()
            .name("renkei-sync".into())
            .spawn(move || {
                let mut disk = make();
                while let Ok(first) = rx.recv() {
                    // Every batch committed while the last sync ran: one sync answers them all.
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let outcome = match failed_here.get() {
                        Some(why) => Err(why.clone()),
                        None => disk.sync().map_err(|e| {
                            let why = format!(
                                "the disk failed to sync the database's WAL ({e}); renkei takes no more writes \
                                 until it is restarted"
                            );
                            tracing::error!("{why}");
                            failed_here.get_or_init(|| why).clone()
                        }),
                    };
                    for w in waiting {
                        w(outcome.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite sync thread: {e}")))?;
        Ok(Syncer { tx, failed })
    }

    /// Answers a committed batch once it is on disk (in the order batches are handed in).
    pub(super) fn after_sync(&self, waiting: Waiting) {
        if let Err(mpsc::SendError(waiting)) = self.tx.send(waiting) {
            // The thread is gone (it panicked): whether the commit is on disk is not known.
            waiting(Err("the SQLite sync thread has stopped".into()));
        }
    }

    /// Why no write can be acknowledged any more, once a sync has failed.
    pub(super) fn failed(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }
}

/// Whatever makes the commits so far durable.
trait Disk: Send {
    fn sync(&mut self) -> std::io::Result<()>;
}

/// The WAL file, opened by path and opened again when SQLite has replaced it.
struct Wal {
    path: Option<PathBuf>,
    open: Option<(std::fs::File, u64)>,
}

impl Wal {
    fn new(path: PathBuf) -> Wal {
        Wal { path: Some(path), open: None }
    }

    fn none() -> Wal {
        Wal { path: None, open: None }
    }
}

impl Disk for Wal {
    fn sync(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let id = match std::fs::metadata(path) {
            Ok(m) => file_id(&m),
            // No WAL: its last connection closed and copied every frame into the database file, synced.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.open.as_ref().map(|(_, open)| *open) != Some(id) {
            self.open = Some((std::fs::File::open(path)?, id));
        }
        let (file, _) = self.open.as_ref().expect("opened just now");
        file.sync_data()
    }
}

/// Which file a path names now, so a WAL deleted and created again is opened again.
#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Syncs that block until the test lets them go, count themselves, and fail when told.
    struct Gate {
        go: mpsc::Receiver<std::io::Result<()>>,
        count: Arc<AtomicUsize>,
    }

    impl Disk for Gate {
        fn sync(&mut self) -> std::io::Result<()> {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.go.recv().expect("the test lets each sync go")
        }
    }

    fn gated() -> (Syncer, mpsc::Sender<std::io::Result<()>>, Arc<AtomicUsize>) {
        let (go_tx, go) = mpsc::channel();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        (Syncer::with(move || Gate { go, count: c }).unwrap(), go_tx, count)
    }

    fn answer(syncer: &Syncer, label: u32) -> mpsc::Receiver<(u32, std::result::Result<(), String>)> {
        let (tx, rx) = mpsc::channel();
        syncer.after_sync(Box::new(move |r| tx.send((label, r)).unwrap()));
        rx
    }

    const BOUND: Duration = Duration::from_secs(10);

    /// Waits (bounded) until the `n`th sync has begun.
    fn started(count: &AtomicUsize, n: usize) {
        let deadline = std::time::Instant::now() + BOUND;
        while count.load(Ordering::SeqCst) < n {
            assert!(std::time::Instant::now() < deadline, "sync {n} never began");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_batch_is_answered_only_after_its_sync_and_one_sync_answers_all_that_waited() {
        let (syncer, go, count) = gated();
        let first = answer(&syncer, 1);
        // The first sync has begun (it blocks on the gate): nothing is answered while it runs.
        started(&count, 1);
        let second = answer(&syncer, 2);
        let third = answer(&syncer, 3);
        assert!(first.try_recv().is_err(), "answered before its sync finished");
        go.send(Ok(())).unwrap();
        assert_eq!(first.recv_timeout(BOUND).unwrap(), (1, Ok(())));
        // The two that came during the first sync wait for a sync of their own, and share it.
        started(&count, 2);
        assert!(second.try_recv().is_err() && third.try_recv().is_err(), "answered before their sync finished");
        go.send(Ok(())).unwrap();
        assert_eq!(second.recv_timeout(BOUND).unwrap(), (2, Ok(())));
        assert_eq!(third.recv_timeout(BOUND).unwrap(), (3, Ok(())));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(syncer.failed(), None);
    }

    #[test]
    fn a_failed_sync_fails_its_batches_and_every_one_after_without_trying_again() {
        let (syncer, go, count) = gated();
        let first = answer(&syncer, 1);
        go.send(Err(std::io::Error::other("EIO"))).unwrap();
        let (_, r) = first.recv_timeout(BOUND).unwrap();
        let why = r.unwrap_err();
        assert!(why.contains("EIO") && why.contains("restarted"), "{why}");
        assert_eq!(syncer.failed(), Some(why.as_str()));
        // A later batch is failed without a sync: the kernel's next "success" is not to be believed.
        let later = answer(&syncer, 2);
        assert_eq!(later.recv_timeout(BOUND).unwrap(), (2, Err(why)));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_wal_is_synced_by_path_and_opened_again_when_replaced_or_let_alone_when_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-wal");
        let mut wal = Wal::new(path.clone());
        wal.sync().unwrap();
        assert!(wal.open.is_none(), "no WAL yet: nothing to open");
        std::fs::write(&path, b"frames").unwrap();
        wal.sync().unwrap();
        let first = wal.open.as_ref().unwrap().1;
        // Another file under the same name (SQLite deleted the WAL and began a new one).
        let moved = dir.path().join("old");
        std::fs::rename(&path, &moved).unwrap();
        std::fs::write(&path, b"new frames").unwrap();
        wal.sync().unwrap();
        assert_ne!(wal.open.as_ref().unwrap().1, first);
    }
}
