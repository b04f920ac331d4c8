//! The key-value store of `examples/kv` (built on pinned pages and the verify hook) against a
//! `HashMap` model, across restarts, with small cache budgets; and the same operations on the
//! `std::fs` version of the store, which must produce the same file byte for byte.

#[path = "../examples/kv/store.rs"]
mod store;

mod common;

use std::collections::HashMap;
use std::io;
use std::path::Path;

use common::scratch_dir;
use rand::{Rng, SeedableRng};
use store::{Pager, StdPager, Store, UringPager};
use uringcache::Backend;

fn new_cache(backend: Backend, frames: usize) -> uringcache::Cache {
    common::builder(backend)
        .memory_limit(frames * 4096)
        .build()
        .expect("cache")
}

fn key_of(k: u32) -> Vec<u8> {
    // Keys of different lengths, so records of one page differ in size.
    format!("k{k}{}", "x".repeat((k % 7) as usize)).into_bytes()
}

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Get(Vec<u8>),
    Commit,
}

fn ops(seed: u64, n: usize, keys: u32) -> Vec<Op> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let key = key_of(rng.gen_range(0..keys));
            match rng.gen_range(0..100) {
                0..=59 => {
                    let len = if rng.gen_bool(0.05) {
                        rng.gen_range(1000..2500)
                    } else {
                        rng.gen_range(0..200)
                    };
                    let mut v = vec![0u8; len];
                    rng.fill(&mut v[..]);
                    Op::Put(key, v)
                }
                60..=79 => Op::Delete(key),
                80..=98 => Op::Get(key),
                _ => Op::Commit,
            }
        })
        .collect()
}

/// Applies `ops` to `store` and `model`, checking every answer.
async fn apply<P: Pager>(
    store: &mut Store<P>,
    model: &mut HashMap<Vec<u8>, Vec<u8>>,
    ops: &[Op],
) -> io::Result<()> {
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, v) => {
                store.put(k, v).await?;
                model.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                let had = store.delete(k).await?;
                assert_eq!(had, model.remove(k).is_some(), "delete {i}");
            }
            Op::Get(k) => {
                assert_eq!(store.get(k).await?.as_ref(), model.get(k), "get {i}");
            }
            Op::Commit => store.commit().await?,
        }
        assert_eq!(store.len(), model.len() as u64, "count after op {i}");
    }
    Ok(())
}

/// Checks that the store holds exactly the model.
async fn check<P: Pager>(
    store: &Store<P>,
    model: &HashMap<Vec<u8>, Vec<u8>>,
    keys: u32,
) -> io::Result<()> {
    assert_eq!(store.len(), model.len() as u64);
    for k in 0..keys + 20 {
        let key = key_of(k);
        assert_eq!(store.get(&key).await?.as_ref(), model.get(&key), "key {k}");
    }
    Ok(())
}

common::backend_test!(random_operations_match_a_model_across_restarts);
fn random_operations_match_a_model_across_restarts(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = scratch_dir();
        let upath = dir.path().join("u.db");
        let spath = dir.path().join("s.db");
        let keys = 500;
        let mut umodel = HashMap::new();
        let mut smodel = HashMap::new();
        // Budgets from the smallest cache on: pages are evicted and read back (and verified)
        // all the time, and page_mut waits for writeback at the dirty limit.
        for (epoch, frames) in [4usize, 8, 16, 5, 64, 12].into_iter().enumerate() {
            let batch = ops(epoch as u64, 1500, keys);
            // uringcache
            let cache = new_cache(backend, frames);
            let mut store = Store::open(UringPager::open(&cache, &upath).await?, 4).await?;
            check(&store, &umodel, keys).await?;
            apply(&mut store, &mut umodel, &batch).await?;
            check(&store, &umodel, keys).await?;
            store.commit().await?;
            let s = cache.stats();
            assert!(
                epoch == 4 || s.evictions > 0,
                "epoch {epoch}: small budget evicts: {s}"
            );
            drop(store);
            cache.shutdown().await?;
            drop(cache);
            // std::fs: the same operations give the same file.
            let mut store = Store::open(StdPager::open(&spath)?, 4).await?;
            check(&store, &smodel, keys).await?;
            apply(&mut store, &mut smodel, &batch).await?;
            store.commit().await?;
            drop(store);
            assert_eq!(umodel, smodel);
            let (u, s) = (common::read_disk(&upath)?, common::read_disk(&spath)?);
            assert_eq!(u.len(), s.len(), "epoch {epoch}: file lengths");
            assert!(
                u == s,
                "epoch {epoch}: the two stores wrote different bytes"
            );
        }
        // A last reopen checks everything once more, with a large cache.
        let cache = new_cache(backend, 256);
        let store = Store::open(UringPager::open(&cache, &upath).await?, 4).await?;
        check(&store, &umodel, keys).await?;
        assert!(store.pages() > 5, "overflow chains were used");
        io::Result::Ok(())
    })
    .unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

common::backend_test!(a_corrupted_page_is_caught_by_the_verify_hook);
fn a_corrupted_page_is_caught_by_the_verify_hook(backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = scratch_dir();
        let path = dir.path().join("c.db");
        let cache = new_cache(backend, 32);
        let mut store = Store::open(UringPager::open(&cache, &path).await?, 2).await?;
        for k in 0..200 {
            store.put(&key_of(k), &[k as u8; 40]).await?;
        }
        store.commit().await?;
        drop(store);
        cache.shutdown().await?;
        drop(cache);
        // One bit of a record in bucket page 1 goes bad on disk.
        flip_byte(&path, 4096 + 100);
        let cache = new_cache(backend, 32);
        let store = Store::open(UringPager::open(&cache, &path).await?, 2).await?;
        let mut bad = 0;
        for k in 0..200 {
            match store.get(&key_of(k)).await {
                Ok(v) => assert_eq!(v, Some(vec![k as u8; 40])),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                    let msg = e.to_string();
                    assert!(msg.contains("page 1") && msg.contains("checksum"), "{msg}");
                    bad += 1;
                }
            }
        }
        assert!(bad > 0, "keys of the corrupted bucket fail");
        assert!(bad < 200, "the other bucket is fine");
        // The std::fs store sees the same.
        let store = Store::open(StdPager::open(&path)?, 2).await?;
        let mut std_bad = 0;
        for k in 0..200 {
            if store.get(&key_of(k)).await.is_err() {
                std_bad += 1;
            }
        }
        assert_eq!(std_bad, bad);
        io::Result::Ok(())
    })
    .unwrap();
}

common::backend_test!(a_record_must_fit_in_a_page);
fn a_record_must_fit_in_a_page(backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = scratch_dir();
        let cache = new_cache(backend, 16);
        let mut store =
            Store::open(UringPager::open(&cache, &dir.path().join("b.db")).await?, 1).await?;
        let err = store
            .put(b"k", &vec![1u8; store::MAX_RECORD])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let biggest = vec![2u8; store::MAX_RECORD - 5];
        store.put(b"k", &biggest).await?;
        store.put(b"j", &biggest).await?; // needs an overflow page
        assert_eq!(store.get(b"k").await?, Some(biggest.clone()));
        assert_eq!(store.get(b"j").await?, Some(biggest));
        assert_eq!(store.pages(), 3);
        io::Result::Ok(())
    })
    .unwrap();
}
