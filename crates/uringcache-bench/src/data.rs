//! Scratch files, their contents and checks, the kernel-cache controls (`posix_fadvise`,
//! `mincore`), `O_DIRECT` helpers, and the seeded offsets and traces every contender replays.
//!
//! Every 4 KiB block of a scratch file starts with its own block number (little-endian `u64`);
//! the rest is a fixed pseudo-random pattern. Every contender checks the first block of every
//! read it makes, so a wrong offset or a stale page is a failure, not a fast number.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The block that carries one tag; also the size of the small reads.
pub const BLOCK: usize = 4096;
/// The write and `O_DIRECT` read chunk.
const CHUNK: usize = 1 << 20;
/// Marks a directory as the harness's own, so a stale one may be removed later.
const MARKER: &str = ".uringcache-bench";

/// Checks that `buf`, read at `offset`, starts with the block `offset` names.
#[inline]
pub fn check(buf: &[u8], offset: u64) -> io::Result<()> {
    let want = offset / BLOCK as u64;
    let got = u64::from_le_bytes(buf[..8].try_into().expect("a read of at least 8 bytes"));
    if got == want && offset & (BLOCK as u64 - 1) == 0 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("wrong data: the read at offset {offset} returned block {got}, not {want}"),
        ))
    }
}

/// What the live [`Scratch`] would remove (its directory if it made it, and its files), for
/// [`remove_scratch_now`].
static LIVE_SCRATCH: std::sync::Mutex<Option<(Option<PathBuf>, Vec<PathBuf>)>> =
    std::sync::Mutex::new(None);

/// Removes what the live [`Scratch`] made, now (the Ctrl-C path, where no destructor runs).
pub fn remove_scratch_now() {
    let live = LIVE_SCRATCH
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some((dir, files)) = live {
        for f in &files {
            let _ = fs::remove_file(f);
        }
        if let Some(d) = dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// The scratch directory and the files in it; removes what it created when dropped (and on
/// Ctrl-C, through [`remove_scratch_now`]).
pub struct Scratch {
    /// The directory.
    pub dir: PathBuf,
    remove_dir: bool,
    files: Vec<PathBuf>,
}

impl Scratch {
    /// Uses `dir`, or makes a fresh directory under `/tmp` (removed at exit). A stale
    /// directory of an earlier run that was killed (its process is gone) is removed first.
    pub fn new(dir: Option<&Path>) -> io::Result<Scratch> {
        match dir {
            Some(d) => {
                fs::create_dir_all(d)?;
                Ok(Scratch {
                    dir: d.to_path_buf(),
                    remove_dir: false,
                    files: Vec::new(),
                })
            }
            None => {
                remove_stale_dirs();
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let d = PathBuf::from(format!(
                    "/tmp/uringcache-bench-{}-{nanos:08x}",
                    std::process::id()
                ));
                fs::create_dir(&d)?;
                fs::write(d.join(MARKER), std::process::id().to_string())?;
                let s = Scratch {
                    dir: d,
                    remove_dir: true,
                    files: Vec::new(),
                };
                s.publish();
                Ok(s)
            }
        }
    }

    /// Writes `name` of `size` bytes (a multiple of 1 MiB) and syncs it; returns its path
    /// and the write rate in MB/s.
    pub fn create(&mut self, name: &str, size: u64) -> io::Result<(PathBuf, f64)> {
        let path = self.dir.join(name);
        self.files.push(path.clone());
        self.publish();
        let t = Instant::now();
        write_tagged(&path, size)?;
        Ok((path, size as f64 / t.elapsed().as_secs_f64() / 1e6))
    }
}

impl Scratch {
    /// The path of `name` in the directory, for a file a workload creates itself (removed at
    /// exit like the others); nothing is created here.
    pub fn reserve(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        self.files.push(path.clone());
        self.publish();
        path
    }
}

impl Scratch {
    /// Tells [`remove_scratch_now`] what to remove.
    fn publish(&self) {
        *LIVE_SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            self.remove_dir.then(|| self.dir.clone()),
            self.files.clone(),
        ));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        LIVE_SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        if self.remove_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes `/tmp/uringcache-bench-PID-*` directories (with our marker) whose process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("uringcache-bench-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let path = e.path();
        if pid != std::process::id()
            && path.join(MARKER).exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// The scratch files' pseudo-random filler, `len` bytes of it.
fn pattern(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    StdRng::seed_from_u64(0x5eed).fill(&mut p[..]);
    p
}

/// Writes a tagged file with plain writes, then `fsync`.
fn write_tagged(path: &Path, size: u64) -> io::Result<()> {
    let pattern = pattern(CHUNK);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut buf = pattern.clone();
    let mut pos = 0u64;
    while pos < size {
        for (i, block) in buf.chunks_mut(BLOCK).enumerate() {
            let tag = pos / BLOCK as u64 + i as u64;
            block[..8].copy_from_slice(&tag.to_le_bytes());
        }
        f.write_all(&buf)?;
        pos += CHUNK as u64;
    }
    f.sync_all()
}

/// A buffer for writes of `size` bytes (a multiple of [`BLOCK`]), filled with the scratch
/// files' pattern; [`stamp`] it before each write.
pub fn write_buffer(size: usize) -> Vec<u8> {
    pattern(size)
}

/// Stamps `buf`, about to be written at `offset`: every 4 KiB block gets its block number
/// (the tag [`check`] reads) and then `stamp` (a number unique to the turn), so that the
/// read-back after the turn ([`check_written`]) tells this turn's bytes from any earlier ones.
#[inline]
pub fn stamp(buf: &mut [u8], offset: u64, stamp: u64) {
    for (i, block) in buf.chunks_mut(BLOCK).enumerate() {
        let tag = offset / BLOCK as u64 + i as u64;
        block[..8].copy_from_slice(&tag.to_le_bytes());
        block[8..16].copy_from_slice(&stamp.to_le_bytes());
    }
}

/// Checks that every block of `buf`, read at `offset`, carries its tag and `stamp`.
pub fn check_stamped(buf: &[u8], offset: u64, stamp: u64) -> io::Result<()> {
    for (i, block) in buf.chunks(BLOCK).enumerate() {
        let off = offset + (i * BLOCK) as u64;
        check(block, off)?;
        let got = u64::from_le_bytes(block[8..16].try_into().expect("a block of 16 bytes"));
        if got != stamp {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the block at offset {off} does not hold this turn's write (stamp {got:#x}, not {stamp:#x})"
                ),
            ));
        }
    }
    Ok(())
}

/// Writes sampled by [`check_written`].
const READ_BACK_SAMPLES: usize = 256;

/// The read-back after a write turn, through `std::fs` (what any other program would see):
/// the file's length is `len`; a sample of the writes (`size` bytes at each of `offsets`,
/// evenly spread, the last one included) holds this turn's `stamp` in every block; and a
/// sample of blocks spread over the whole file carries the right tags (no write landed at a
/// wrong offset).
pub fn check_written(
    path: &Path,
    len: u64,
    size: usize,
    offsets: &[u64],
    stamp: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let on_disk = f.metadata()?.len();
    if on_disk != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file has {on_disk} bytes, not {len}"),
        ));
    }
    let mut buf = vec![0u8; size];
    let n = offsets.len();
    let picks = (0..READ_BACK_SAMPLES.min(n)).map(|k| k * n / READ_BACK_SAMPLES.min(n));
    for i in picks.chain((n > 0).then(|| n - 1)) {
        let off = offsets[i];
        f.read_exact_at(&mut buf, off)?;
        check_stamped(&buf, off, stamp)?;
    }
    let blocks = len / BLOCK as u64;
    let mut block = vec![0u8; BLOCK];
    for k in 0..(READ_BACK_SAMPLES as u64).min(blocks) {
        let off = k * blocks / (READ_BACK_SAMPLES as u64).min(blocks) * BLOCK as u64;
        f.read_exact_at(&mut block, off)?;
        check(&block, off)?;
    }
    Ok(())
}

/// `syncfs` of the filesystem holding `dir`.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    // SAFETY: a plain system call on an open descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `posix_fadvise` on a whole file.
pub fn fadvise(f: &impl AsRawFd, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: a plain system call on an open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, advice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Drops the kernel's cached copy of `path` (`POSIX_FADV_DONTNEED`; the files are clean).
pub fn drop_kernel_cache(path: &Path) -> io::Result<()> {
    fadvise(&File::open(path)?, libc::POSIX_FADV_DONTNEED)
}

/// Reads `path` whole through the kernel cache, so that it is cached.
pub fn warm_kernel_cache(path: &Path) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// The fraction of `path`'s pages in the kernel's page cache (`mincore` over a mapping).
pub fn resident_fraction(path: &Path) -> io::Result<f64> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0.0);
    }
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped below; mincore
    // writes one byte per page into a vector of exactly that many bytes.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let pages = len.div_ceil(page_size());
        let mut vec = vec![0u8; pages];
        let r = libc::mincore(p, len, vec.as_mut_ptr());
        let err = io::Error::last_os_error();
        libc::munmap(p, len);
        if r != 0 {
            return Err(err);
        }
        Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / pages as f64)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Opens `path` read-only with `O_DIRECT`.
pub fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Reads `path` once with `O_DIRECT` (so the host's cache under the virtual disk is equally
/// warm for every contender); returns the rate in MB/s.
pub fn read_direct(path: &Path) -> io::Result<f64> {
    let f = open_direct(path)?;
    let mut buf = AlignedBuf::new(CHUNK);
    let t = Instant::now();
    let mut pos = 0u64;
    loop {
        let n = std::os::unix::fs::FileExt::read_at(&f, &mut buf, pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
    Ok(pos as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// A zeroed, 4 KiB-aligned heap buffer for `O_DIRECT` reads.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read it.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(1), BLOCK).expect("a valid layout")
    }

    /// A zeroed buffer of `len` bytes aligned to 4 KiB.
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: the pointer is stable for the buffer's life (it never reallocates), and all `len`
// bytes are initialised.
unsafe impl tokio_uring::buf::IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; every byte is always initialised, so `set_init` has nothing to record.
unsafe impl tokio_uring::buf::IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// `count` offsets of `size`-byte reads, uniformly random over a file of `file_len` bytes,
/// aligned to `size`.
pub fn uniform_offsets(seed: u64, file_len: u64, size: usize, count: usize) -> Vec<u64> {
    let slots = file_len / size as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| rng.gen_range(0..slots) * size as u64)
        .collect()
}

/// Offsets of `size`-byte reads covering a file from start to end.
pub fn sequential_offsets(file_len: u64, size: usize) -> Vec<u64> {
    (0..file_len / size as u64)
        .map(|i| i * size as u64)
        .collect()
}

/// A Zipf sampler over `n` items: item of rank `k` (1-based) has weight `1 / k^s`. Ranks are
/// scattered over the file by a seeded permutation, so hot pages are not neighbours and no
/// readahead can guess them.
pub struct Zipf {
    cdf: Vec<f64>,
    perm: Vec<u64>,
}

impl Zipf {
    /// A sampler over `n` items with exponent `s`.
    pub fn new(n: usize, s: f64, seed: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        let mut perm: Vec<u64> = (0..n as u64).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15));
        Zipf { cdf, perm }
    }

    /// One item.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.perm[rank]
    }
}

/// `count` 4 KiB offsets drawn from Zipf(`s`) over the blocks of a `file_len`-byte file.
pub fn zipf_offsets(seed: u64, file_len: u64, s: f64, count: usize) -> Vec<u64> {
    let z = Zipf::new((file_len / BLOCK as u64) as usize, s, seed);
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| z.sample(&mut rng) * BLOCK as u64)
        .collect()
}

/// `count` fair coin flips from `seed` (the mixed workload's read / update choice).
pub fn coin_flips(seed: u64, count: usize) -> Vec<bool> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| rng.gen_bool(0.5)).collect()
}

/// The phase of a scan trace an access belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Fills the hot set; not counted.
    Warm,
    /// Hot-set reads before the scan.
    Before,
    /// Hot-set reads interleaved with the scan.
    During,
    /// Hot-set reads after the scan.
    After,
}

/// One step of a scan trace.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub enum Step {
    /// A 4 KiB read of hot-set block `block`.
    Hot {
        /// Block number in the hot file.
        block: u64,
        /// The phase it counts in.
        phase: Phase,
    },
    /// A sequential read of the scan file at `offset` (of the trace's scan read size).
    Scan {
        /// Byte offset in the scan file.
        offset: u64,
    },
}

/// Scanned bytes per hot-set read during the scan: a trickle of hot reads in a big scan, the
/// pattern that flushes an LRU.
pub const SCAN_BYTES_PER_HOT_READ: u64 = 256 << 10;

/// The scan-resistance trace: warm the hot set (each block once, then 4 reads per block,
/// uniform), measure it
/// (`Before`, 2 reads per block), scan the scan file once in `scan_read`-byte reads with one
/// hot read every [`SCAN_BYTES_PER_HOT_READ`] (`During`), then measure again (`After`, 1 read
/// per block: how much of the hot set survived).
pub fn scan_trace(seed: u64, hot_blocks: u64, scan_len: u64, scan_read: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hot = |phase| Step::Hot {
        block: rng.gen_range(0..hot_blocks),
        phase,
    };
    // Every hot block once, then uniform reads: the hot set is wholly cached and has been
    // used more than once before it is measured.
    let mut t: Vec<Step> = (0..hot_blocks)
        .map(|block| Step::Hot {
            block,
            phase: Phase::Warm,
        })
        .collect();
    for _ in 0..hot_blocks * 4 {
        t.push(hot(Phase::Warm));
    }
    for _ in 0..hot_blocks * 2 {
        t.push(hot(Phase::Before));
    }
    let every = (SCAN_BYTES_PER_HOT_READ / scan_read as u64).max(1);
    let mut since_hot = 0;
    for off in sequential_offsets(scan_len, scan_read) {
        t.push(Step::Scan { offset: off });
        since_hot += 1;
        if since_hot == every {
            since_hot = 0;
            t.push(hot(Phase::During));
        }
    }
    for _ in 0..hot_blocks {
        t.push(hot(Phase::After));
    }
    t
}

/// Counts hits per measured phase: `[before, during, after]` as (hits, reads).
#[derive(Default, Clone, Copy)]
pub struct PhaseCounts([(u64, u64); 3]);

impl PhaseCounts {
    /// Records one hot read.
    pub fn record(&mut self, phase: Phase, hit: bool) {
        let i = match phase {
            Phase::Warm => return,
            Phase::Before => 0,
            Phase::During => 1,
            Phase::After => 2,
        };
        self.0[i].0 += hit as u64;
        self.0[i].1 += 1;
    }

    /// Hit ratios per phase.
    pub fn ratios(&self) -> [f64; 3] {
        self.0
            .map(|(h, n)| if n == 0 { 0.0 } else { h as f64 / n as f64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_files_check() {
        let mut s = Scratch::new(None).unwrap();
        let (p, _) = s.create("t.dat", 2 << 20).unwrap();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len(), 2 << 20);
        check(&data[8192..], 8192).unwrap();
        assert!(check(&data[8192..], 4096).is_err());
        let dir = s.dir.clone();
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn stamped_writes_read_back() {
        let mut s = Scratch::new(None).unwrap();
        let (p, _) = s.create("w.dat", 1 << 20).unwrap();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        let offsets = [8192u64, 65536, 4096];
        let mut buf = write_buffer(2 * BLOCK);
        for &off in &offsets[..2] {
            stamp(&mut buf, off, 7);
            std::os::unix::fs::FileExt::write_all_at(&f, &buf, off).unwrap();
        }
        check_written(&p, 1 << 20, 2 * BLOCK, &offsets[..2], 7).unwrap();
        // Another turn's stamp, a write never made, a wrong length: all caught.
        assert!(check_written(&p, 1 << 20, 2 * BLOCK, &offsets[..2], 8).is_err());
        assert!(check_written(&p, 1 << 20, BLOCK, &offsets, 7).is_err());
        assert!(check_written(&p, 2 << 20, 2 * BLOCK, &offsets[..2], 7).is_err());
        // A write at the wrong offset breaks the tags of the blocks it lands on.
        stamp(&mut buf, 0, 7);
        std::os::unix::fs::FileExt::write_all_at(&f, &buf, 100 * BLOCK as u64).unwrap();
        assert!(check_written(&p, 1 << 20, 2 * BLOCK, &offsets[..2], 7).is_err());
    }

    #[test]
    fn zipf_is_skewed_and_seeded() {
        let a = zipf_offsets(7, 64 << 20, 0.99, 10_000);
        let b = zipf_offsets(7, 64 << 20, 0.99, 10_000);
        assert_eq!(a, b);
        let mut counts = std::collections::HashMap::new();
        for o in &a {
            *counts.entry(*o).or_insert(0) += 1;
        }
        let top = counts.values().max().copied().unwrap();
        assert!(top > 500, "the hottest block has {top} of 10000 reads");
        assert!(a.iter().all(|o| o % 4096 == 0 && *o < 64 << 20));
    }

    #[test]
    fn scan_trace_has_phases() {
        let t = scan_trace(1, 100, 8 << 20, 128 << 10);
        let scans = t.iter().filter(|s| matches!(s, Step::Scan { .. })).count();
        assert_eq!(scans, 64);
        let during = t
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Hot {
                        phase: Phase::During,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(during, 32);
    }
}
