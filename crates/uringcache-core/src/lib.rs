//! # uringcache-core: the page cache's state machines, with no I/O and no runtime
//!
//! This crate is the part of uringcache that would live in `mm/` in the kernel: the data
//! structures of a page cache and the rules that govern them, kept free of system calls (other
//! than mapping the frame arena) and of any async runtime, so that every state machine is tested
//! deterministically.
//!
//! | module | kernel counterpart | owns |
//! | --- | --- | --- |
//! | [`frames`] | the pages themselves | one aligned arena of page frames, registrable as `io_uring` fixed buffers |
//! | [`page`] | `struct page`, `PG_*` flags, `folio_*` | the page protocol: state flags and their named transitions, pin counts, identity |
//! | [`mapping`] | `struct address_space`, `i_pages` | per-file index page → frame, `i_size`, dirty tag |
//! | [`wait`] | the page wait table | hashed waiter lists for page bits; a broadcast event |
//! | [`evict`] | active / inactive lists, `isolate_lru_pages` / `putback_lru_page`, shadow entries | the S3-FIFO eviction policy ([`evict::S3Fifo`]): its queues and ghost set; candidates handed out and taken back |
//! | [`pool`] | `add_to_page_cache_lru`, reclaim | frame allocation: free list, then eviction |
//! | [`readahead`] | `mm/readahead.c`, `file_ra_state` | the on-demand readahead state machine |
//! | [`errseq`] | `errseq_t` (`lib/errseq.c`) | writeback error sequences and per-handle cursors |
//! | [`group_commit`] | jbd2's commit sequence, a WAL's group commit | concurrent syncs of a file sharing flushes |
//! | [`run`] | bio building (`mpage_readahead`, `mpage_writepages`) | gathering consecutive pages into device requests |
//! | [`writeback`] | `mm/page-writeback.c` | dirty thresholds, the tail block |
//! | [`backend`] | `address_space_operations` | the trait the I/O layer implements |
//! | [`disk_gate`] | `i_rwsem` around `setattr` against direct writes | keeping device writes and `ftruncate`s of a file apart in time |
//!
//! The async API that puts these together is the `uringcache` crate; the I/O layer is
//! `uringcache-uring`.

#![deny(missing_docs)]

pub mod backend;
pub mod disk_gate;
pub mod errseq;
pub mod evict;
pub mod frames;
pub mod group_commit;
pub mod mapping;
pub mod page;
pub mod pool;
pub mod readahead;
pub mod ring_wake;
pub mod run;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;
pub mod wait;
pub mod writeback;
