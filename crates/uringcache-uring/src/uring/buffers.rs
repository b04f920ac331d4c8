//! The fixed-buffer table's bookkeeping: which regions of the frame arena are registered.
//!
//! The arena is cut into [`Regions`] of [`REGION_BYTES`] (more for arenas too large for the
//! kernel's table at that size), region `r` being fixed buffer `r` of a sparse table made at
//! setup. A region is registered by the first submitter whose request touches one of its
//! frames ([`Regions::wanted`], then [`Regions::ensure`]), and stays registered for the ring's
//! life. Each region's state
//! is one atomic: `UNREGISTERED` → `REGISTERING` (won by one compare-and-swap: concurrent first
//! uses register once) → `REGISTERED`, or `FAILED`. Nobody waits for a registration in
//! progress: a request that finds its region not registered yet goes unregistered. After a
//! failed registration (typically `RLIMIT_MEMLOCK`) no further region is tried.
//!
//! No lock: the states are atomics, and the registration itself (a system call) is made by the
//! caller's closure with none of the backend's locks held. See `setup.rs` for what is
//! registered when and why.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use uringcache_core::page::FrameId;

/// Bytes of one region, before any growth for very large arenas: a multiple of the 2 MiB huge
/// page, small enough that registering one on first use is a short stall, large enough that a
/// 128 KiB request rarely straddles two (and so goes unregistered, about 3 % of them).
pub(super) const REGION_BYTES: usize = 4 << 20;

/// Most entries of a fixed-buffer table (the kernel's `IORING_MAX_REG_BUFFERS`).
pub(super) const MAX_TABLE: usize = 1 << 14;

/// Largest fixed buffer the kernel accepts.
const MAX_BUFFER: usize = 1 << 30;

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;
const FAILED: u8 = 3;

/// The arena's regions and which of them are registered.
#[derive(Debug)]
pub(super) struct Regions {
    frames: usize,
    page_size: usize,
    /// log2 of the frames in one region.
    shift: u32,
    /// One state per slot of the table; regions past the table (arenas above 16 TiB) are never
    /// registered.
    states: Box<[AtomicU8]>,
    /// Regions registered.
    done: AtomicUsize,
    bytes: AtomicU64,
    /// A registration failed: try no more.
    given_up: AtomicBool,
}

impl Regions {
    /// The regions of an arena of `frames` frames of `page_size` bytes (a power of two), each
    /// `region_bytes` (a power of two) or more: doubled until the table has at most
    /// [`MAX_TABLE`] entries or a region reaches 1 GiB, and never less than a page.
    pub(super) fn new(frames: usize, page_size: usize, region_bytes: usize) -> Regions {
        debug_assert!(page_size.is_power_of_two() && region_bytes.is_power_of_two());
        let mut per_region = (region_bytes / page_size).max(1);
        while frames.div_ceil(per_region) > MAX_TABLE && per_region * page_size < MAX_BUFFER {
            per_region *= 2;
        }
        let slots = frames.div_ceil(per_region).min(MAX_TABLE);
        Regions {
            frames,
            page_size,
            shift: per_region.trailing_zeros(),
            states: (0..slots).map(|_| AtomicU8::new(UNREGISTERED)).collect(),
            done: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            given_up: AtomicBool::new(false),
        }
    }

    /// Entries of the sparse table.
    pub(super) fn slots(&self) -> u32 {
        self.states.len() as u32
    }

    /// Bytes of a full region.
    pub(super) fn region_bytes(&self) -> usize {
        self.page_size << self.shift
    }

    /// The region (= table slot) holding `frame`.
    #[inline]
    fn region_of(&self, frame: FrameId) -> usize {
        frame as usize >> self.shift
    }

    /// The first frame of region `r` and its number of frames (the last may be short).
    pub(super) fn span(&self, r: usize) -> (FrameId, usize) {
        let first = r << self.shift;
        let n = (1usize << self.shift).min(self.frames - first);
        (first as FrameId, n)
    }

    /// Whether region `r` is registered.
    pub(super) fn is_registered(&self, r: usize) -> bool {
        self.states
            .get(r)
            .is_some_and(|s| s.load(Ordering::Acquire) == REGISTERED)
    }

    /// Bytes registered so far.
    pub(super) fn registered_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether nothing is left to register: every region is, or registration gave up.
    #[inline]
    pub(super) fn settled(&self) -> bool {
        self.given_up.load(Ordering::Relaxed)
            || self.done.load(Ordering::Relaxed) == self.states.len()
    }

    /// The fixed buffer index for an I/O into `used`, consecutive frames in one run of
    /// memory: the region's slot when all of them lie in one registered region.
    #[inline]
    pub(super) fn index_for(&self, used: &[FrameId]) -> Option<u16> {
        let (&first, &last) = (used.first()?, used.last()?);
        let r = self.region_of(first);
        (r == self.region_of(last) && self.is_registered(r)).then_some(r as u16)
    }

    /// Adds to `out` each region that a frame of `used` lies in and that is not registered
    /// (nor being registered) yet, once. Frames outside the arena are skipped (the request
    /// fails later, in its validation).
    pub(super) fn wanted(&self, used: &[FrameId], out: &mut Vec<usize>) {
        let mut last = usize::MAX;
        for &f in used {
            let r = self.region_of(f);
            if r == last || f as usize >= self.frames {
                continue;
            }
            last = r;
            if self
                .states
                .get(r)
                .is_some_and(|s| s.load(Ordering::Relaxed) == UNREGISTERED)
                && !out.contains(&r)
            {
                out.push(r);
            }
        }
    }

    /// Registers region `r` unless it is registered, being registered, or registration gave
    /// up; returns whether it is registered now.
    pub(super) fn ensure(
        &self,
        r: usize,
        register: &mut impl FnMut(u32, FrameId, usize) -> io::Result<()>,
    ) -> bool {
        let state = &self.states[r];
        match state.load(Ordering::Acquire) {
            REGISTERED => return true,
            UNREGISTERED if !self.given_up.load(Ordering::Relaxed) => {}
            _ => return false,
        }
        if state
            .compare_exchange(
                UNREGISTERED,
                REGISTERING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return state.load(Ordering::Acquire) == REGISTERED;
        }
        let (first, n) = self.span(r);
        match register(r as u32, first, n) {
            Ok(()) => {
                self.bytes
                    .fetch_add((n * self.page_size) as u64, Ordering::Relaxed);
                self.done.fetch_add(1, Ordering::Relaxed);
                // Release: a submitter that sees REGISTERED names the slot in an SQE only
                // after the kernel has filled it.
                state.store(REGISTERED, Ordering::Release);
                true
            }
            Err(e) => {
                state.store(FAILED, Ordering::Release);
                if !self.given_up.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "uringcache: cannot register {} KiB of the frame arena as an io_uring \
                         fixed buffer ({e}); {} KiB stay registered and the rest of the arena \
                         is used unregistered from now on (raise RLIMIT_MEMLOCK, `ulimit -l`, \
                         to register more)",
                        (n * self.page_size) >> 10,
                        self.registered_bytes() >> 10
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    const PAGE: usize = 4096;
    /// Frames per default region.
    const PER: usize = REGION_BYTES / PAGE;

    /// What `submit` does: the regions `used` wants, each registered.
    fn touch(
        r: &Regions,
        used: &[FrameId],
        mut reg: impl FnMut(u32, FrameId, usize) -> io::Result<()>,
    ) {
        let mut want = Vec::new();
        r.wanted(used, &mut want);
        for w in want {
            r.ensure(w, &mut reg);
        }
    }

    fn registered(r: &Regions) -> Vec<usize> {
        (0..r.slots() as usize)
            .filter(|&i| r.is_registered(i))
            .collect()
    }

    #[test]
    fn geometry_covers_the_arena() {
        // 2.5 regions: three slots, the last half a region.
        let r = Regions::new(PER * 5 / 2, PAGE, REGION_BYTES);
        assert_eq!(r.slots(), 3);
        assert_eq!(r.region_bytes(), REGION_BYTES);
        assert_eq!(r.span(0), (0, PER));
        assert_eq!(r.span(2), ((2 * PER) as FrameId, PER / 2));
        // A tiny arena: one short region.
        let r = Regions::new(64, PAGE, REGION_BYTES);
        assert_eq!((r.slots(), r.span(0)), (1, (0, 64)));
        // Pages larger than a region: a region per page.
        let r = Regions::new(8, 8 << 20, REGION_BYTES);
        assert_eq!((r.slots(), r.region_bytes()), (8, 8 << 20));
        // 128 GiB of 4 KiB frames: regions grow so that the table fits.
        let r = Regions::new((128usize << 30) / PAGE, PAGE, REGION_BYTES);
        assert_eq!(r.slots() as usize, MAX_TABLE);
        assert_eq!(r.region_bytes(), 8 << 20);
        // Beyond what 1 GiB regions can cover (32 TiB of 64 KiB frames): the table is full,
        // the rest is never registered.
        let r = Regions::new((32usize << 40) / (64 << 10), 64 << 10, REGION_BYTES);
        assert_eq!((r.slots() as usize, r.region_bytes()), (MAX_TABLE, 1 << 30));
        let past = (MAX_TABLE << 14) as FrameId;
        touch(&r, &[past], |_, _, _| {
            panic!("registered a region past the table")
        });
        assert_eq!(r.index_for(&[past]), None);
    }

    #[test]
    fn regions_are_registered_on_first_touch_only() {
        let r = Regions::new(PER * 3, PAGE, REGION_BYTES);
        let calls = Mutex::new(Vec::new());
        let reg = |slot: u32, first: FrameId, n: usize| {
            calls.lock().unwrap().push((slot, first, n));
            Ok(())
        };
        assert!(registered(&r).is_empty() && !r.settled());
        assert_eq!(r.index_for(&[5, 6]), None);
        touch(&r, &[5, 6, 7], reg);
        assert_eq!(registered(&r), [0]);
        assert_eq!(r.index_for(&[5, 6, 7]), Some(0));
        assert_eq!(r.registered_bytes(), REGION_BYTES as u64);
        // Again: nothing new.
        touch(&r, &[0, 1], reg);
        // Scattered frames touch every region they lie in; out-of-arena frames are skipped.
        let last = (PER * 3 - 1) as FrameId;
        touch(&r, &[last, 9, (PER * 3) as FrameId, u32::MAX], reg);
        assert_eq!(registered(&r), [0, 2]);
        assert_eq!(
            *calls.lock().unwrap(),
            [(0, 0, PER), (2, (2 * PER) as FrameId, PER)]
        );
        // A run across a region boundary has no single buffer, even with both registered.
        let across = [(PER - 1) as FrameId, PER as FrameId];
        assert_eq!(r.index_for(&across), None);
        touch(&r, &across, reg);
        assert_eq!(registered(&r), [0, 1, 2]);
        assert_eq!(r.index_for(&across), None);
        assert_eq!(r.index_for(&[PER as FrameId]), Some(1));
        assert!(r.settled());
        assert_eq!(calls.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_failed_registration_stops_further_ones() {
        let r = Regions::new(PER * 4, PAGE, REGION_BYTES);
        let mut calls = 0;
        touch(&r, &[0], |_, _, _| Ok(()));
        touch(&r, &[PER as FrameId], |_, _, _| {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        });
        touch(
            &r,
            &[(2 * PER) as FrameId, (3 * PER) as FrameId],
            |_, _, _| {
                calls += 1;
                Ok(())
            },
        );
        assert_eq!(calls, 1);
        assert_eq!(registered(&r), [0]);
        assert!(r.settled());
        // What was registered stays usable.
        assert_eq!(r.index_for(&[3]), Some(0));
        assert_eq!(r.index_for(&[PER as FrameId]), None);
        assert_eq!(r.registered_bytes(), REGION_BYTES as u64);
    }

    #[test]
    fn concurrent_first_uses_register_once_and_never_wait() {
        const THREADS: usize = 8;
        let r = Arc::new(Regions::new(PER * 2, PAGE, REGION_BYTES));
        let calls = Arc::new(AtomicUsize::new(0));
        // The registration holds until every other thread has come and gone.
        let others_done = Arc::new(Barrier::new(THREADS));
        let start = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (r, calls, start, others_done) = (
                    Arc::clone(&r),
                    Arc::clone(&calls),
                    Arc::clone(&start),
                    Arc::clone(&others_done),
                );
                std::thread::spawn(move || {
                    start.wait();
                    let mut registered_it = false;
                    let ok = r.ensure(0, &mut |_, _, _| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        registered_it = true;
                        // Everyone else finds the region being registered and goes on
                        // without it (they reach the barrier without waiting for us).
                        others_done.wait();
                        Ok(())
                    });
                    if !registered_it {
                        assert!(!ok, "thread {i} saw a registration that had not finished");
                        others_done.wait();
                    }
                    registered_it
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!((winners, calls.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(registered(&r), [0]);
        assert_eq!(r.index_for(&[1, 2]), Some(0));
    }
}
