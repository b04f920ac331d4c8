//! The raw-bit interface the `uringcache` crate still uses while it moves to the named
//! transitions (issue 12). Hidden from the docs; removed once no caller is left.

use super::{bits, PageDesc};
use crate::sync::atomic::Ordering;

/// The state bits as bare `u32`s (superseded by `PageFlags` and the transitions).
#[doc(hidden)]
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct PageState(pub u32);

#[doc(hidden)]
impl PageState {
    pub const UPTODATE: u32 = bits::UPTODATE;
    pub const LOCKED: u32 = bits::LOCKED;
    pub const DIRTY: u32 = bits::DIRTY;
    pub const WRITEBACK: u32 = bits::WRITEBACK;
    pub const ERROR: u32 = bits::ERROR;
    pub const READAHEAD: u32 = bits::READAHEAD;
    pub const ORPHAN: u32 = bits::ORPHAN;
    pub const PREFETCHED: u32 = bits::PREFETCHED;

    #[inline]
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    #[inline]
    pub fn any(self, bits: u32) -> bool {
        self.0 & bits != 0
    }
}

#[doc(hidden)]
impl PageDesc {
    #[inline]
    pub fn state(&self) -> PageState {
        PageState(self.flags().0)
    }

    #[inline]
    pub fn set(&self, bits: u32) -> PageState {
        PageState(self.state.fetch_or(bits, Ordering::AcqRel))
    }

    #[inline]
    pub fn clear(&self, bits: u32) -> PageState {
        PageState(self.state.fetch_and(!bits, Ordering::AcqRel))
    }

    #[inline]
    pub fn clear_and_test_waiters(&self, bit: u32) -> bool {
        self.state.fetch_and(!bit, Ordering::AcqRel) & bits::WAITERS != 0
    }

    pub fn set_errno(&self, errno: i32) {
        self.errno.store(errno, Ordering::Release);
    }
}
