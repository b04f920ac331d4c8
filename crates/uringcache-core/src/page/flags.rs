//! [`PageFlags`]: a snapshot of a page's state word, read through named queries.
//!
//! The bits themselves (the kernel's `PG_*`) are private to the `page` module: outside it a
//! page changes state only through the transitions on [`PageDesc`](super::PageDesc) and is
//! inspected only through the queries below, so that a new rule (a bit set together with
//! another, an errno recorded before a bit is published) is written once.

/// The state bits, packed in one `AtomicU32` of the descriptor. Bits 0..=15 are flags; bits
/// 16..=17 hold the S3-FIFO access frequency (a saturating 2-bit counter).
pub(super) mod bits {
    /// The frame holds the page's current bytes (`PG_uptodate`).
    pub(crate) const UPTODATE: u32 = 1 << 0;
    /// One owner: the read that fills the page, or a writer (`PG_locked`).
    pub(crate) const LOCKED: u32 = 1 << 1;
    /// The bytes differ from the device (`PG_dirty`).
    pub(crate) const DIRTY: u32 = 1 << 2;
    /// A device write of the page is in flight (`PG_writeback`).
    pub(crate) const WRITEBACK: u32 = 1 << 3;
    /// The last I/O on the page failed (`PG_error`); the errno is in the descriptor.
    pub(crate) const ERROR: u32 = 1 << 4;
    /// Reaching this page starts the next readahead window (`PG_readahead`).
    pub(crate) const READAHEAD: u32 = 1 << 5;
    /// A task may wait on the page in the wait table (`PG_waiters`).
    pub(crate) const WAITERS: u32 = 1 << 6;
    /// The page left its mapping while pinned (the kernel's `folio->mapping == NULL`).
    pub(crate) const ORPHAN: u32 = 1 << 9;
    /// Read ahead and not used yet (for the readahead hit count; no kernel counterpart).
    pub(crate) const PREFETCHED: u32 = 1 << 10;

    /// Shift of the 2-bit access frequency.
    pub(crate) const FREQ_SHIFT: u32 = 16;
    /// Mask of the 2-bit access frequency.
    pub(crate) const FREQ_MASK: u32 = 0b11 << FREQ_SHIFT;
}

use bits::*;

/// A snapshot of a page's state (`folio->flags`), from [`PageDesc::flags`](super::PageDesc::flags).
///
/// Every query reads the snapshot, not the page: a bit another party may change (`LOCKED`,
/// `WRITEBACK`, `WAITERS`, the frequency) can differ by the time the answer is used, which is
/// why the decisions that must be atomic are transitions on the descriptor instead.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PageFlags(pub(super) u32);

impl PageFlags {
    /// The largest access frequency ([`freq`](Self::freq)).
    pub const FREQ_MAX: u32 = 3;

    #[inline]
    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// The frame holds the page's bytes (`folio_test_uptodate`).
    #[inline]
    pub fn is_uptodate(self) -> bool {
        self.has(UPTODATE)
    }

    /// Somebody owns the page: the read filling it, or a writer (`folio_test_locked`).
    #[inline]
    pub fn is_locked(self) -> bool {
        self.has(LOCKED)
    }

    /// The bytes differ from the device (`folio_test_dirty`).
    #[inline]
    pub fn is_dirty(self) -> bool {
        self.has(DIRTY)
    }

    /// A device write of the page is in flight (`folio_test_writeback`).
    #[inline]
    pub fn is_writeback(self) -> bool {
        self.has(WRITEBACK)
    }

    /// The last I/O on the page failed; its errno is [`PageDesc::errno`](super::PageDesc::errno)
    /// (`PageError`).
    #[inline]
    pub fn is_error(self) -> bool {
        self.has(ERROR)
    }

    /// A read of the page failed and nothing has filled it since: not up to date, with an
    /// error (what a reader that waited for the read reports).
    #[inline]
    pub fn is_read_failed(self) -> bool {
        self.0 & (UPTODATE | ERROR) == ERROR
    }

    /// Reaching the page starts the next readahead window (`folio_test_readahead`).
    #[inline]
    pub fn is_readahead(self) -> bool {
        self.has(READAHEAD)
    }

    /// Read ahead and not used yet.
    #[inline]
    pub fn is_prefetched(self) -> bool {
        self.has(PREFETCHED)
    }

    /// A task may be waiting on the page (`folio_test_waiters`).
    #[inline]
    pub fn has_waiters(self) -> bool {
        self.has(WAITERS)
    }

    /// The page has left its mapping and lives on only through pins
    /// ([`PageDesc::mark_orphan`](super::PageDesc::mark_orphan)).
    #[inline]
    pub fn is_orphan(self) -> bool {
        self.has(ORPHAN)
    }

    /// Locked, dirty or under writeback: something other than the mapping's pin that keeps the
    /// page from being reclaimed (see [`PageDesc::freeze_if_reclaimable`](super::PageDesc::freeze_if_reclaimable)).
    #[inline]
    pub fn is_busy(self) -> bool {
        self.has(LOCKED | DIRTY | WRITEBACK)
    }

    /// The access frequency, 0..=[`FREQ_MAX`](Self::FREQ_MAX).
    #[inline]
    pub fn freq(self) -> u32 {
        (self.0 & FREQ_MASK) >> FREQ_SHIFT
    }

    /// Whether no flag is set and the frequency is zero (a free frame's state).
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(u32, &str); 9] = [
            (UPTODATE, "Uptodate"),
            (LOCKED, "Locked"),
            (DIRTY, "Dirty"),
            (WRITEBACK, "Writeback"),
            (ERROR, "Error"),
            (READAHEAD, "Readahead"),
            (WAITERS, "Waiters"),
            (ORPHAN, "Orphan"),
            (PREFETCHED, "Prefetched"),
        ];
        let mut list = f.debug_list();
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                list.entry(&format_args!("{name}"));
            }
        }
        list.entry(&format_args!("freq={}", self.freq()));
        list.finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    type Query = fn(PageFlags) -> bool;

    #[test]
    fn queries_read_their_bit() {
        let cases: [(u32, Query); 9] = [
            (UPTODATE, PageFlags::is_uptodate),
            (LOCKED, PageFlags::is_locked),
            (DIRTY, PageFlags::is_dirty),
            (WRITEBACK, PageFlags::is_writeback),
            (ERROR, PageFlags::is_error),
            (READAHEAD, PageFlags::is_readahead),
            (PREFETCHED, PageFlags::is_prefetched),
            (WAITERS, PageFlags::has_waiters),
            (ORPHAN, PageFlags::is_orphan),
        ];
        for (bit, query) in cases {
            assert!(query(PageFlags(bit)), "{:?}", PageFlags(bit));
            assert!(
                !query(PageFlags(!bit & 0xffff)),
                "{bit:#x} read another bit"
            );
        }
    }

    #[test]
    fn combined_queries() {
        assert!(PageFlags(ERROR).is_read_failed());
        assert!(!PageFlags(ERROR | UPTODATE).is_read_failed());
        assert!(!PageFlags(0).is_read_failed());
        for bit in [LOCKED, DIRTY, WRITEBACK] {
            assert!(PageFlags(bit).is_busy());
        }
        for bit in [
            UPTODATE, ERROR, READAHEAD, PREFETCHED, WAITERS, ORPHAN, FREQ_MASK,
        ] {
            assert!(!PageFlags(bit).is_busy());
        }
        assert!(PageFlags::default().is_empty());
        assert_eq!(PageFlags(FREQ_MASK).freq(), PageFlags::FREQ_MAX);
    }

    #[test]
    fn debug_names_the_bits() {
        let s = format!("{:?}", PageFlags(UPTODATE | DIRTY | (2 << FREQ_SHIFT)));
        assert_eq!(s, "[Uptodate, Dirty, freq=2]");
    }
}
