//! The backend on its own and under redb: round trips, the trait's error contract, locking
//! against itself and against redb's file backend, `close`, several databases on one cache,
//! a database moved between the two backends. Each test on both cache backends.

use std::io;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend, TableDefinition,
};
use uringcache::{Backend, Cache};
use uringcache_redb::UringcacheBackend;
use uringcache_uring::error::raw_os_error_of;

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn cache(backend: Backend, budget: usize) -> Option<Cache> {
    match Cache::builder()
        .backend(backend)
        .memory_limit(budget)
        .build()
    {
        Ok(c) => Some(c),
        Err(e)
            if backend == Backend::IoUring
                && std::env::var_os("URINGCACHE_TEST_REQUIRE_URING").is_none() =>
        {
            eprintln!("*** SKIPPED on io_uring: {e}");
            None
        }
        Err(e) => panic!("cache on {backend:?}: {e}"),
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("uringcache-redb-")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
}

macro_rules! both {
    ($($name:ident),+) => {$(
        mod $name {
            #[test]
            fn io_uring() { super::$name(uringcache::Backend::IoUring) }
            #[test]
            fn threads() { super::$name(uringcache::Backend::Threads) }
        }
    )+};
}

both!(
    trait_methods_are_the_files,
    a_locked_file_is_refused_with_a_clear_error,
    redb_file_backend_and_ours_exclude_each_other,
    several_databases_share_one_cache,
    a_database_moves_between_backends,
    a_read_only_open_reads_what_was_committed,
    concurrent_databases_on_a_four_page_budget
);

fn trait_methods_are_the_files(backend: Backend) {
    let Some(cache) = cache(backend, 1 << 20) else {
        return;
    };
    let dir = scratch();
    let b = UringcacheBackend::with_cache(&cache, dir.path().join("f")).unwrap();
    assert_eq!(StorageBackend::len(&b).unwrap(), 0);
    b.set_len(10_000).unwrap();
    let mut buf = vec![1u8; 100];
    b.read(9_900, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0), "grown bytes read as zeros");
    b.write(5_000, b"hello").unwrap();
    let mut h = [0u8; 5];
    b.read(5_000, &mut h).unwrap();
    assert_eq!(&h, b"hello");
    // Reading past the end is an error, as the trait asks.
    let e = b.read(9_990, &mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    b.sync_data().unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("f")).unwrap().len(),
        10_000
    );
    b.set_len(6_000).unwrap();
    b.close().unwrap();
    b.close().unwrap(); // a second close is Ok
    let disk = std::fs::read(dir.path().join("f")).unwrap();
    assert_eq!(disk.len(), 6_000, "close syncs the length");
    assert_eq!(&disk[5_000..5_005], b"hello");
}

fn open_db(cache: &Cache, path: &Path) -> Result<Database, Box<dyn std::error::Error>> {
    let b = UringcacheBackend::with_cache(cache, path)?;
    Ok(Database::builder()
        .set_cache_size(0)
        .create_with_backend(b)?)
}

fn a_locked_file_is_refused_with_a_clear_error(backend: Backend) {
    let Some(cache) = cache(backend, 1 << 20) else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("db");
    let db = open_db(&cache, &path).unwrap();
    // The same cache, another cache: both refused, before redb sees anything.
    let other = Cache::builder()
        .backend(Backend::Threads)
        .memory_limit(1 << 20)
        .build()
        .unwrap();
    for c in [&cache, &other] {
        let e = UringcacheBackend::with_cache(c, &path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(raw_os_error_of(&e), Some(libc::EWOULDBLOCK));
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("locked"),
            "{text}"
        );
    }
    drop(db); // closes: the lock goes
    let db = open_db(&other, &path).unwrap();
    drop(db);
    // A missing directory keeps its errno too.
    let e = UringcacheBackend::with_cache(&cache, dir.path().join("no/such/db")).unwrap_err();
    assert_eq!(raw_os_error_of(&e), Some(libc::ENOENT), "{e}");
}

fn redb_file_backend_and_ours_exclude_each_other(backend: Backend) {
    let Some(cache) = cache(backend, 1 << 20) else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("db");
    let ours = open_db(&cache, &path).unwrap();
    match Database::create(&path) {
        Err(DatabaseError::DatabaseAlreadyOpen) => {}
        other => panic!("redb's file backend opened a database we hold: {other:?}"),
    }
    drop(ours);
    let theirs = Database::create(&path).unwrap();
    let e = UringcacheBackend::with_cache(&cache, &path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    drop(theirs);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let theirs = Database::builder()
        .create_with_backend(FileBackend::new(f).unwrap())
        .unwrap();
    assert!(UringcacheBackend::with_cache(&cache, &path).is_err());
    drop(theirs);
}

fn several_databases_share_one_cache(backend: Backend) {
    let Some(cache) = cache(backend, 256 << 10) else {
        return;
    };
    let dir = scratch();
    let dbs: Vec<Database> = (0..3)
        .map(|i| open_db(&cache, &dir.path().join(format!("db{i}"))).unwrap())
        .collect();
    for round in 0..5u64 {
        for (i, db) in dbs.iter().enumerate() {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                for k in 0..200u64 {
                    t.insert(round * 1000 + k, vec![i as u8; 300].as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
    for (i, db) in dbs.iter().enumerate() {
        let rx = db.begin_read().unwrap();
        let t = rx.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 1000);
        for kv in t.iter().unwrap() {
            let (_, v) = kv.unwrap();
            assert_eq!(v.value(), vec![i as u8; 300].as_slice());
        }
    }
    drop(dbs);
    assert!(cache.stats().hits > 0);
}

fn count(db: &Database) -> u64 {
    match db.begin_read().unwrap().open_table(T) {
        Ok(t) => t.len().unwrap(),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => panic!("{e}"),
    }
}

fn a_database_moves_between_backends(backend: Backend) {
    // Written here, read and changed by redb's file backend, reopened here in the same cache
    // (whose pages of the file, kept across the close, must not be served stale).
    let Some(cache) = cache(backend, 4 << 20) else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("db");
    for round in 0..4u64 {
        let db = open_db(&cache, &path).unwrap();
        assert_eq!(count(&db), round * 2 * 100);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for k in 0..100 {
                t.insert(round * 1000 + k, b"ours".as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
        drop(db);
        let mut db = Database::create(&path).unwrap();
        assert_eq!(count(&db), (round * 2 + 1) * 100);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for k in 0..100 {
                t.insert(round * 1000 + 500 + k, b"theirs".as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        assert!(db.check_integrity().unwrap());
        drop(db);
    }
    let mut db = open_db(&cache, &path).unwrap();
    assert_eq!(count(&db), 800);
    assert!(db.check_integrity().unwrap());
}

fn a_read_only_open_reads_what_was_committed(backend: Backend) {
    let Some(cache) = cache(backend, 1 << 20) else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("db");
    let db = open_db(&cache, &path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(T)
        .unwrap()
        .insert(7, b"seven".as_slice())
        .unwrap();
    tx.commit().unwrap();
    drop(db);
    let b = UringcacheBackend::with_cache(&cache, &path).unwrap();
    let ro = Database::builder().open_read_only_with_backend(b).unwrap();
    let rx = ro.begin_read().unwrap();
    assert_eq!(
        rx.open_table(T).unwrap().get(7).unwrap().unwrap().value(),
        b"seven"
    );
    // It holds the lock too: no writer meanwhile.
    assert!(UringcacheBackend::with_cache(&cache, &path).is_err());
    drop(rx);
    drop(ro);
    assert!(UringcacheBackend::with_cache(&cache, &path).is_ok());
}

/// Three databases on a cache of four pages, each with a writer and a reader thread at once:
/// every commit lands, every read sees whole values.
fn concurrent_databases_on_a_four_page_budget(backend: Backend) {
    let budget = 16 << 10;
    let Some(cache) = cache(backend, budget) else {
        return;
    };
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let dbs: Vec<Database> = (0..3)
        .map(|i| {
            let b = UringcacheBackend::with_cache(&cache, dir.path().join(format!("{i}"))).unwrap();
            Database::builder()
                .set_cache_size(0)
                .create_with_backend(b)
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for (i, db) in dbs.iter().enumerate() {
            s.spawn(move || {
                for c in 0..12u64 {
                    let tx = db.begin_write().unwrap();
                    {
                        let mut t = tx.open_table(T).unwrap();
                        for k in 0..20u64 {
                            t.insert(
                                c * 100 + k,
                                vec![(i as u8) ^ (k as u8); 3000 + (k as usize * 97)].as_slice(),
                            )
                            .unwrap();
                        }
                    }
                    tx.commit().unwrap();
                }
            });
            s.spawn(move || {
                for _ in 0..10 {
                    let rx = db.begin_read().unwrap();
                    if let Ok(t) = rx.open_table(T) {
                        for kv in t.iter().unwrap() {
                            let (k, v) = kv.unwrap();
                            let k = k.value() % 100;
                            assert!(v.value().iter().all(|&b| b == (i as u8) ^ (k as u8)));
                        }
                    }
                }
            });
        }
    });
    for db in &dbs {
        assert_eq!(
            db.begin_read()
                .unwrap()
                .open_table(T)
                .unwrap()
                .len()
                .unwrap(),
            240
        );
    }
    assert!(cache.stats().evictions > 0);
}

both!(a_commit_is_plain_writes_and_one_flush);

/// `sync_data` writes the commit's scattered pages as plain writes and makes one flush (not
/// one `RWF_DSYNC` write, and so one device flush, per page), and they are on the file.
fn a_commit_is_plain_writes_and_one_flush(backend: Backend) {
    let Some(cache) = cache(backend, 1 << 20) else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("f");
    let b = UringcacheBackend::with_cache(&cache, &path).unwrap();
    b.set_len(64 << 12).unwrap();
    b.sync_data().unwrap();
    let before = cache.stats();
    // Eight scattered pages, as one of redb's small commits writes.
    for i in 0..8u64 {
        b.write((i * 7) << 12, &[i as u8 + 1; 4096]).unwrap();
    }
    b.sync_data().unwrap();
    let after = cache.stats();
    assert_eq!(after.pages_written - before.pages_written, 8);
    assert_eq!(
        after.flushes - before.flushes,
        1,
        "one flush for the commit"
    );
    assert_eq!(after.dirty_pages, 0);
    let on_disk = std::fs::read(&path).unwrap();
    for i in 0..8usize {
        let at = (i * 7) << 12;
        assert!(
            on_disk[at..at + 4096].iter().all(|&x| x == i as u8 + 1),
            "page {i}"
        );
    }
    // Nothing dirty: a sync is the flush alone (or nothing at all).
    b.sync_data().unwrap();
    assert_eq!(cache.stats().pages_written, after.pages_written);
    b.close().unwrap();
}
