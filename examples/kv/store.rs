//! A small persistent key-value store on fixed-size pages: a hash table of 4 KiB bucket pages
//! with overflow chains and a checksum in every page.
//!
//! The store is written once, over a [`Pager`]: [`UringPager`] pins pages of the uringcache
//! (`File::page` to read in place, `File::page_mut` to change in place, the checksum checked
//! once per fill by the file's verify hook), and [`StdPager`] does the same with `pread` /
//! `pwrite` on a `std::fs::File` through the kernel's page cache (copying every page in and
//! out, and checking its checksum on every read), for comparison.
//!
//! # File layout
//!
//! Page 0 is the header; pages `1..=buckets` are the buckets; overflow pages follow. Every page
//! starts with the checksum of the rest of the page (an all-zero page is a page never written,
//! and valid):
//!
//! ```text
//! header:  [checksum u64][magic 8 bytes][buckets u64][pages u64][keys u64]
//! bucket:  [checksum u64][next overflow page u64, 0 = none][count u16][used u16][records..]
//! record:  [key len u16][value len u16][key][value]
//! ```
//!
//! # Commit and crashes
//!
//! [`Store::commit`] writes the header and makes the file durable (`sync_data`): after it
//! returns, a restart sees exactly the committed state. There is no write-ahead log: a crash
//! between commits can leave some of the pages changed since the last commit on disk and not
//! others. A page torn by such a crash fails its checksum, and reading it fails with
//! `InvalidData` instead of returning wrong data.

#![allow(dead_code)]

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes in a page of the store.
pub const PAGE: usize = 4096;
const MAGIC: &[u8; 8] = b"UCKVST01";
/// Where records start in a bucket page.
const RECORDS: usize = 20;
/// The largest record: 4 bytes of lengths plus key and value.
pub const MAX_RECORD: usize = PAGE - RECORDS;

/// A 64-bit checksum of `bytes`: FNV-like multiply-rotate over 8-byte words in four
/// independent lanes (so that it runs at several bytes per cycle), folded together.
pub fn checksum(bytes: &[u8]) -> u64 {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: [u64; 4] = [
        0xcbf2_9ce4_8422_2325,
        0x8422_2325_cbf2_9ce4,
        0x2545_F491_4F6C_DD1D,
        0xC2B2_AE3D_27D4_EB4F,
    ];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (lane, h) in h.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[lane * 8..lane * 8 + 8].try_into().unwrap());
            *h = (*h ^ w).wrapping_mul(M).rotate_left(29);
        }
    }
    let mut x = bytes.len() as u64;
    for &b in chunks.remainder() {
        x = (x ^ b as u64).wrapping_mul(M).rotate_left(29);
    }
    for (lane, &v) in h.iter().enumerate() {
        x = (x ^ v.rotate_left(lane as u32 * 16))
            .wrapping_mul(M)
            .rotate_left(31);
    }
    x ^ (x >> 32)
}

/// The key's hash (FNV-1a, 64 bits).
fn key_hash(key: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in key {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Checks a page as it arrives from the device: a page never written (all zeros) or one whose
/// stored checksum matches its bytes. This is the store's verify hook.
pub fn verify_page(index: u64, page: &[u8]) -> Result<(), String> {
    let stored = u64::from_le_bytes(page[..8].try_into().unwrap());
    let computed = checksum(&page[8..]);
    if stored == computed || (stored == 0 && page.iter().all(|&b| b == 0)) {
        Ok(())
    } else {
        Err(format!(
            "kv page {index}: stored checksum {stored:#018x}, computed {computed:#018x}"
        ))
    }
}

/// Writes the page's checksum (after changing it).
fn seal(page: &mut [u8]) {
    let sum = checksum(&page[8..]);
    page[..8].copy_from_slice(&sum.to_le_bytes());
}

fn get_u16(p: &[u8], at: usize) -> usize {
    u16::from_le_bytes([p[at], p[at + 1]]) as usize
}

fn put_u16(p: &mut [u8], at: usize, v: usize) {
    p[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
}

fn get_u64(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
}

fn put_u64(p: &mut [u8], at: usize, v: u64) {
    p[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The pieces of a bucket page.
fn next_of(p: &[u8]) -> u64 {
    get_u64(p, 8)
}

fn count_of(p: &[u8]) -> usize {
    get_u16(p, 16)
}

fn used_of(p: &[u8]) -> usize {
    get_u16(p, 18)
}

fn fits(p: &[u8], rec: usize) -> bool {
    RECORDS + used_of(p) + rec <= PAGE
}

/// Finds `key` in a bucket page: the record's offset and the value's range.
fn find(p: &[u8], key: &[u8]) -> Option<(usize, std::ops::Range<usize>)> {
    let mut at = RECORDS;
    let end = RECORDS + used_of(p);
    while at < end {
        let klen = get_u16(p, at);
        let vlen = get_u16(p, at + 2);
        let k = at + 4;
        if klen == key.len() && &p[k..k + klen] == key {
            return Some((at, k + klen..k + klen + vlen));
        }
        at = k + klen + vlen;
    }
    None
}

fn insert(p: &mut [u8], key: &[u8], value: &[u8]) {
    let used = used_of(p);
    let at = RECORDS + used;
    put_u16(p, at, key.len());
    put_u16(p, at + 2, value.len());
    p[at + 4..at + 4 + key.len()].copy_from_slice(key);
    p[at + 4 + key.len()..at + 4 + key.len() + value.len()].copy_from_slice(value);
    let n = count_of(p);
    put_u16(p, 16, n + 1);
    put_u16(p, 18, used + 4 + key.len() + value.len());
}

/// Removes the record at `at` (compacting the page; the freed tail is zeroed).
fn remove(p: &mut [u8], at: usize) {
    let rec = 4 + get_u16(p, at) + get_u16(p, at + 2);
    let end = RECORDS + used_of(p);
    p.copy_within(at + rec..end, at);
    p[end - rec..end].fill(0);
    let n = count_of(p);
    put_u16(p, 16, n - 1);
    put_u16(p, 18, end - rec - RECORDS);
}

/// Pages of a file, read and changed in place or through copies.
#[allow(async_fn_in_trait)]
pub trait Pager {
    /// A page to read.
    type Page: Deref<Target = [u8]>;
    /// A page to change.
    type PageMut: DerefMut<Target = [u8]>;
    /// Page `index` (zeros past end of file), checked.
    async fn page(&self, index: u64) -> io::Result<Self::Page>;
    /// Page `index` for changing, checked; hand it back with `write` or `unchanged`.
    async fn page_mut(&self, index: u64) -> io::Result<Self::PageMut>;
    /// Stores a changed page.
    async fn write(&self, page: Self::PageMut) -> io::Result<()>;
    /// Gives back a page that was not changed.
    fn unchanged(&self, page: Self::PageMut);
    /// Makes every stored page durable.
    async fn sync(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> u64;
}

/// Pages pinned in a uringcache file: reads are in place, changes are in place and written
/// back by the cache; checksums are checked once per fill by the verify hook.
pub struct UringPager {
    file: uringcache::File,
}

impl UringPager {
    /// Opens (creating) the store file at `path` in `cache`, with the store's verify hook.
    pub async fn open(cache: &uringcache::Cache, path: &Path) -> io::Result<Self> {
        let mut opts = uringcache::OpenOptions::new();
        opts.read(true).write(true).create(true).verify(verify_page);
        Ok(UringPager {
            file: cache.open(path, &opts).await?,
        })
    }

    /// The file handle.
    pub fn file(&self) -> &uringcache::File {
        &self.file
    }
}

impl Pager for UringPager {
    type Page = uringcache::PageRef;
    type PageMut = uringcache::PageMut;

    async fn page(&self, index: u64) -> io::Result<Self::Page> {
        self.file.page(index).await
    }

    async fn page_mut(&self, index: u64) -> io::Result<Self::PageMut> {
        self.file.page_mut(index).await
    }

    async fn write(&self, page: Self::PageMut) -> io::Result<()> {
        drop(page); // dirty; written back by the cache
        Ok(())
    }

    fn unchanged(&self, page: Self::PageMut) {
        page.discard();
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.sync_data().await
    }

    fn len(&self) -> u64 {
        self.file.len()
    }
}

/// Pages copied in and out of a `std::fs::File` with `pread` / `pwrite` (through the kernel's
/// page cache); every page read is checked.
pub struct StdPager {
    file: std::fs::File,
    len: AtomicU64,
}

/// A page copied out of a [`StdPager`] file.
pub struct StdPage {
    index: u64,
    bytes: Box<[u8]>,
}

impl Deref for StdPage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for StdPage {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl StdPager {
    /// Opens (creating) the store file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(StdPager {
            file,
            len: AtomicU64::new(len),
        })
    }

    fn read(&self, index: u64) -> io::Result<StdPage> {
        let mut bytes = vec![0u8; PAGE].into_boxed_slice();
        let mut done = 0;
        let off = index * PAGE as u64;
        while done < PAGE {
            let n = self.file.read_at(&mut bytes[done..], off + done as u64)?;
            if n == 0 {
                break; // past end of file: zeros
            }
            done += n;
        }
        verify_page(index, &bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(StdPage { index, bytes })
    }
}

impl Pager for StdPager {
    type Page = StdPage;
    type PageMut = StdPage;

    async fn page(&self, index: u64) -> io::Result<StdPage> {
        self.read(index)
    }

    async fn page_mut(&self, index: u64) -> io::Result<StdPage> {
        self.read(index)
    }

    async fn write(&self, page: StdPage) -> io::Result<()> {
        let off = page.index * PAGE as u64;
        self.file.write_all_at(&page.bytes, off)?;
        self.len.fetch_max(off + PAGE as u64, Ordering::Relaxed);
        Ok(())
    }

    fn unchanged(&self, _page: StdPage) {}

    async fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }
}

/// The key-value store over a [`Pager`]. One writer (`&mut self`), any number of readers.
pub struct Store<P: Pager> {
    pager: P,
    buckets: u64,
    /// Pages in use: the header, the buckets and the overflow pages.
    pages: u64,
    keys: u64,
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<P: Pager> Store<P> {
    /// Opens the store in `pager`'s file, or creates it with `buckets` bucket pages if the
    /// file is empty (choose about `keys * (record size + 4) / 2800` for a table 70 % full).
    pub async fn open(pager: P, buckets: u64) -> io::Result<Self> {
        if pager.len() == 0 {
            let buckets = buckets.max(1);
            let mut store = Store {
                pager,
                buckets,
                pages: 1 + buckets,
                keys: 0,
            };
            store.write_header().await?;
            return Ok(store);
        }
        let h = pager.page(0).await?;
        if &h[8..16] != MAGIC {
            return Err(corrupt(format!(
                "not a kv store file (magic {:?})",
                &h[8..16]
            )));
        }
        let buckets = get_u64(&h, 16);
        // Pages written past the header's count (by writeback before a crash) stay used.
        let pages = get_u64(&h, 24).max(pager.len().div_ceil(PAGE as u64));
        let keys = get_u64(&h, 32);
        drop(h);
        Ok(Store {
            pager,
            buckets,
            pages,
            keys,
        })
    }

    /// The pager (to reach its file).
    pub fn pager(&self) -> &P {
        &self.pager
    }

    /// Keys stored.
    pub fn len(&self) -> u64 {
        self.keys
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Pages in use (header, buckets, overflow pages).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    fn bucket(&self, key: &[u8]) -> u64 {
        1 + key_hash(key) % self.buckets
    }

    async fn write_header(&mut self) -> io::Result<()> {
        let mut h = self.pager.page_mut(0).await?;
        h[8..16].copy_from_slice(MAGIC);
        put_u64(&mut h, 16, self.buckets);
        put_u64(&mut h, 24, self.pages);
        put_u64(&mut h, 32, self.keys);
        seal(&mut h);
        self.pager.write(h).await
    }

    /// Calls `f` with the value of `key` read in place (no copy with [`UringPager`]).
    pub async fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<Option<R>> {
        let mut index = self.bucket(key);
        loop {
            let page = self.pager.page(index).await?;
            if let Some((_, value)) = find(&page, key) {
                return Ok(Some(f(&page[value])));
            }
            index = next_of(&page);
            if index == 0 {
                return Ok(None);
            }
            self.check_link(index)?;
        }
    }

    /// The value of `key`, if any.
    pub async fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.get_with(key, |v| v.to_vec()).await
    }

    fn check_link(&self, index: u64) -> io::Result<()> {
        if index <= self.buckets || index >= self.pages {
            return Err(corrupt(format!(
                "overflow link to page {index} outside {}..{}",
                self.buckets + 1,
                self.pages
            )));
        }
        Ok(())
    }

    /// Stores `value` under `key`, replacing any value it had. A record (key, value and 4
    /// bytes) must fit in a page: at most [`MAX_RECORD`] bytes.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let rec = 4 + key.len() + value.len();
        if rec > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record of {} key and {} value bytes does not fit in a page (at most {} in all)",
                    key.len(),
                    value.len(),
                    MAX_RECORD - 4
                ),
            ));
        }
        let first = self.bucket(key);
        let mut index = first;
        // The first page of the chain with room, if the key is not found on the way.
        let mut room: Option<u64> = None;
        loop {
            let mut page = self.pager.page_mut(index).await?;
            if let Some((at, range)) = find(&page, key) {
                if range.len() == value.len() {
                    page[range].copy_from_slice(value);
                } else {
                    remove(&mut page, at);
                    if !fits(&page, rec) {
                        // It moves to another page of the chain.
                        seal(&mut page);
                        self.pager.write(page).await?;
                        self.keys -= 1;
                        return self.insert_new(first, key, value).await;
                    }
                    insert(&mut page, key, value);
                }
                seal(&mut page);
                return self.pager.write(page).await;
            }
            if room.is_none() && fits(&page, rec) {
                room = Some(index);
            }
            let next = next_of(&page);
            self.pager.unchanged(page);
            if next == 0 {
                break;
            }
            self.check_link(next)?;
            index = next;
        }
        match room {
            Some(index) => {
                let mut page = self.pager.page_mut(index).await?;
                insert(&mut page, key, value);
                seal(&mut page);
                self.pager.write(page).await?;
                self.keys += 1;
                Ok(())
            }
            None => self.append_overflow(index, key, value).await,
        }
    }

    /// Inserts a key known to be absent: the first page of the chain with room, else a new
    /// overflow page.
    async fn insert_new(&mut self, first: u64, key: &[u8], value: &[u8]) -> io::Result<()> {
        let rec = 4 + key.len() + value.len();
        let mut index = first;
        loop {
            let mut page = self.pager.page_mut(index).await?;
            if fits(&page, rec) {
                insert(&mut page, key, value);
                seal(&mut page);
                self.pager.write(page).await?;
                self.keys += 1;
                return Ok(());
            }
            let next = next_of(&page);
            self.pager.unchanged(page);
            if next == 0 {
                return self.append_overflow(index, key, value).await;
            }
            self.check_link(next)?;
            index = next;
        }
    }

    /// Makes a new overflow page holding the record, linked from `last` (the end of a chain).
    /// One page is held at a time, the new page first, so a crash leaves at worst an unused
    /// page, never a link to a page that is not there.
    async fn append_overflow(&mut self, last: u64, key: &[u8], value: &[u8]) -> io::Result<()> {
        let new = self.pages;
        self.pages += 1;
        let mut page = self.pager.page_mut(new).await?;
        page.fill(0);
        insert(&mut page, key, value);
        seal(&mut page);
        self.pager.write(page).await?;
        self.write_header().await?;
        let mut tail = self.pager.page_mut(last).await?;
        put_u64(&mut tail, 8, new);
        seal(&mut tail);
        self.pager.write(tail).await?;
        self.keys += 1;
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    pub async fn delete(&mut self, key: &[u8]) -> io::Result<bool> {
        let mut index = self.bucket(key);
        loop {
            let mut page = self.pager.page_mut(index).await?;
            if let Some((at, _)) = find(&page, key) {
                remove(&mut page, at);
                seal(&mut page);
                self.pager.write(page).await?;
                self.keys -= 1;
                return Ok(true);
            }
            let next = next_of(&page);
            self.pager.unchanged(page);
            if next == 0 {
                return Ok(false);
            }
            self.check_link(next)?;
            index = next;
        }
    }

    /// Commits: writes the header and makes every change durable.
    pub async fn commit(&mut self) -> io::Result<()> {
        self.write_header().await?;
        self.pager.sync().await
    }
}
