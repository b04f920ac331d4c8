//! Pinned pages: [`File::page`](crate::File::page), [`File::page_mut`](crate::File::page_mut), [`PageRef`], [`PageMut`] and the zero-copy
//! [`File::read_bytes`](crate::File::read_bytes) (the kernel's `read_cache_page`, `filemap_fault` and `page_mkwrite`).
//!
//! A database's buffer pool does not copy pages out: it pins a page, reads or changes it in
//! place, and unpins it. A [`PageRef`] is such a pin on an up-to-date page; a [`PageMut`] is a
//! pin plus the page lock, for changing it.
//!
//! # Invariants
//!
//! * A handle holds one pin of its frame (`PageDesc::pins`) for its whole life, so the frame is
//!   never evicted and never reused while the handle lives: eviction takes only pages whose one
//!   pin is the mapping's. Truncation and invalidation may take the page out of its mapping
//!   (`ORPHAN`); the frame then goes back to the pool when the last handle drops its pin.
//! * A handle owns an `Arc` of its inode, which owns an `Arc` of the cache, so the frame arena
//!   outlives every handle: handles are `'static`, `Send` and `Sync`, and may outlive the
//!   [`File`] and the [`Cache`](crate::Cache) they came from.
//! * A handle's pin is marked as a handle's in the page's own pin word
//!   (`PageDesc::mark_user_pin`, dropped with the pin by `unpin_user`): one line, the page's,
//!   written per handle, and no counter of the cache's. When every frame is held by handles, an
//!   allocation finds it by looking at the descriptors (`PageTable::all_user_pinned`) and fails
//!   with `OutOfMemory` instead of waiting for an unpin that only the waiting program could do.
//! * A [`PageMut`] holds the page's `LOCKED` bit from creation to drop, and was handed out only
//!   after the page's writeback (if any) finished: its bytes change only while the device is not
//!   reading them (stable pages), and no other writer, filler or writeback touches the page
//!   meanwhile.
//! * The pin (and for a `PageMut` the lock) is taken over from the guard the lookup made: a
//!   `Pinned` for `PageRef::new`, a `LockedPage` for `PageMut::new` (`hand_over`). From then on
//!   only the handle's drop releases them: `PageRef` unpins; `PageMut` marks the page dirty
//!   (`Inode::mark_page_dirty`, unless discarded), unlocks (`WaitTable::unlock`) and unpins.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use uringcache_core::page::{FrameId, PageDesc};

use crate::cache::CacheInner;
use crate::inode::{Inode, LockedPage, Pinned};

/// Marks the pin a new handle took over on `frame` as a handle's (see the module invariants).
fn user_pin(cache: &CacheInner, frame: FrameId) {
    cache.pool().pages().get(frame).mark_user_pin();
}

/// A pinned, up-to-date page of a file ([`File::page`](crate::File::page)): `Deref<Target = [u8]>` of exactly
/// one page (the cache's page size), read in place with no copy.
///
/// While it lives the page stays in memory: it is never evicted, and if the file is truncated
/// or the page invalidated meanwhile, the page leaves the file's cache but its frame keeps the
/// bytes it had until this handle (and every other pin) is dropped. The handle sees later
/// changes to the page made through [`File::write_at`](crate::File::write_at) or a [`PageMut`] (it is a view of the
/// cached page, like a shared memory mapping, not a snapshot); copy the bytes out if a stable
/// snapshot is needed while writers run.
///
/// Holding many pages at once holds that much of the cache's budget: when every frame is
/// pinned, reads that need a new frame fail with [`io::ErrorKind::OutOfMemory`](std::io::ErrorKind::OutOfMemory).
/// `'static + Send + Sync`; [`into_bytes`](Self::into_bytes) turns it into a [`Bytes`].
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("f");
/// # std::fs::write(&path, vec![7u8; 10_000])?;
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
/// # let file = cache
/// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
/// #     .await?;
/// let page = file.page(2).await?; // bytes 8192..10_000, then zeros to the page's end
/// assert_eq!((page.index(), page.len()), (2, 4096));
/// assert_eq!((page[0], page[4095]), (7, 0));
/// file.write_all_at(b"new", 8192).await?;
/// assert_eq!(&page[..3], b"new"); // a view of the cached page, not a snapshot
/// let bytes = page.into_bytes().slice(..3); // still pinned, no copy
/// assert_eq!(&bytes[..], b"new");
/// # Ok::<(), std::io::Error>(())
/// # })
/// # }
/// ```
pub struct PageRef {
    inode: Arc<Inode>,
    frame: FrameId,
    index: u64,
}

impl PageRef {
    /// Takes over the pin of `page`, the up-to-date page `index` of `inode` (released in this
    /// handle's drop).
    pub(crate) fn new(inode: Arc<Inode>, page: Pinned<'_>, index: u64) -> PageRef {
        let frame = page.hand_over();
        user_pin(inode.cache(), frame);
        PageRef {
            inode,
            frame,
            index,
        }
    }

    /// The page's index in the file (its byte offset divided by the page size).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The page as [`Bytes`], without copying: the `Bytes` (and every clone or slice of it)
    /// keeps the page pinned until the last of them is dropped.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Deref for PageRef {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: this handle's pin keeps the frame from being reused, and it was handed out
        // for an up-to-date page, whose bytes only a writer holding LOCKED changes (the
        // documented shared-view semantics, as for concurrent read_at and write_at).
        unsafe { self.inode.cache().arena().frame(self.frame) }
    }
}

impl AsRef<[u8]> for PageRef {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for PageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageRef")
            .field("path", &self.inode.path())
            .field("index", &self.index)
            .field("len", &self.inode.cache().page_size())
            .finish()
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        self.inode.cache().put_user(self.frame);
    }
}

/// A pinned page of a file locked for writing ([`File::page_mut`](crate::File::page_mut)): `DerefMut<Target = [u8]>`
/// of exactly one page, changed in place.
///
/// * While it lives, no other writer changes the page: other `page_mut` calls, `write_at` on
///   the page, truncation of it and its writeback wait until it is dropped. Readers
///   ([`File::read_at`](crate::File::read_at), [`PageRef`]) are not locked out and may see a change half made.
/// * Dropping it marks the page dirty (it is written back later, or by the next `sync_*`) and
///   extends [`File::len`](crate::File::len) to cover the whole page, `(index + 1) * page_size` bytes, even if no
///   byte was changed.
/// * [`discard`](Self::discard) drops it without dirtying and puts back the bytes the page had
///   when this handle was made: the first mutable access takes a copy of the page for that
///   (one page copy per handle that is written through).
///
/// Do not hold a `PageMut` across a call that waits for the same page: `page_mut` of the same
/// page, `sync_*`, `set_len`, `read_direct_at` / `write_direct_at` over it, from the same task,
/// wait for this handle to be dropped and so never finish.
pub struct PageMut {
    inode: Arc<Inode>,
    frame: FrameId,
    index: u64,
    /// The bytes before the first mutable access, for `discard`.
    undo: Option<Box<[u8]>>,
    /// Set by `discard`: release without dirtying.
    discarded: bool,
}

impl PageMut {
    /// Takes over the lock and the pin of `page`, the up-to-date page `index` of `inode`, out
    /// of writeback (both released in this handle's drop).
    pub(crate) fn new(inode: Arc<Inode>, page: LockedPage<'_>, index: u64) -> PageMut {
        let frame = page.hand_over();
        user_pin(inode.cache(), frame);
        PageMut {
            inode,
            frame,
            index,
            undo: None,
            discarded: false,
        }
    }

    /// The page's index in the file (its byte offset divided by the page size).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Drops the handle without marking the page dirty or extending the file, after putting
    /// back the bytes the page had when the handle was made. Nothing of the change stays.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// # std::fs::write(&path, vec![7u8; 100])?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// # let file = cache
    /// #     .open(&path, uringcache::OpenOptions::new().read(true).write(true))
    /// #     .await?;
    /// let mut page = file.page_mut(0).await?;
    /// page[..4].copy_from_slice(b"oops");
    /// page.discard(); // the old bytes back, the page not dirtied
    /// let mut buf = [0u8; 4];
    /// file.read_exact_at(&mut buf, 0).await?;
    /// assert_eq!(buf, [7; 4]);
    /// assert_eq!(file.len(), 100); // not grown to the whole page, as a drop would
    /// assert_eq!(cache.stats().dirty_pages, 0);
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn discard(mut self) {
        if let Some(undo) = self.undo.take() {
            // SAFETY: this handle holds the page's LOCKED bit (see `DerefMut`).
            unsafe { self.inode.cache().arena().frame_mut(self.frame) }.copy_from_slice(&undo);
        }
        self.discarded = true;
    }

    fn desc(&self) -> &PageDesc {
        self.inode.cache().pool().pages().get(self.frame)
    }

    /// Dirties the page (`folio_mark_dirty`, extending the size) if asked, unlocks it
    /// (`folio_unlock`: waiters woken) and drops the pin: the lock and pin this handle took
    /// over from the `LockedPage` it was made from.
    fn release(&mut self, dirty: bool) {
        let cache = &self.inode.cache();
        let desc = self.desc();
        if dirty {
            self.inode.mark_page_dirty(desc, self.index);
            self.inode
                .mapping()
                .extend_size((self.index + 1) << cache.page_shift());
        }
        cache.waits().unlock(desc, self.frame);
        cache.put_user(self.frame);
    }
}

impl Deref for PageMut {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the pin keeps the frame, and the LOCKED bit this handle holds keeps every
        // other writer and filler away; the page is up to date.
        unsafe { self.inode.cache().arena().frame(self.frame) }
    }
}

impl DerefMut for PageMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        let arena = &self.inode.cache().arena();
        if self.undo.is_none() {
            // SAFETY: as in `deref`.
            self.undo = Some(unsafe { arena.frame(self.frame) }.into());
        }
        // SAFETY: this handle holds the page's LOCKED bit and waited out its writeback, so no
        // other writer, filler or device write uses the bytes; `&mut self` makes the slice
        // the only one handed out by this handle. Readers may copy concurrently (the kernel's
        // semantics for racing reads and writes, documented on the type).
        unsafe { arena.frame_mut(self.frame) }
    }
}

impl AsRef<[u8]> for PageMut {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PageMut {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl std::fmt::Debug for PageMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageMut")
            .field("path", &self.inode.path())
            .field("index", &self.index)
            .field("len", &self.inode.cache().page_size())
            .field("changed", &self.undo.is_some())
            .finish()
    }
}

impl Drop for PageMut {
    fn drop(&mut self) {
        self.release(!self.discarded);
    }
}
