//! Opening files for direct I/O and finding the alignment direct I/O needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error;

/// Opens `path` with `O_DIRECT | O_CLOEXEC` (and `O_CREAT` with mode `0o644` when `create`,
/// `O_TRUNC` when `truncate`), for reading, writing or both.
///
/// Errors name the path and keep the OS error as their `source()` (see
/// [`open_direct_tracked`], which this calls). A filesystem that refuses `O_DIRECT` (the open
/// fails with `EINVAL`, as on tmpfs before Linux 6.6, ramfs, procfs and some network and FUSE
/// filesystems) gets an error of kind [`io::ErrorKind::Unsupported`] saying so, and a file
/// this call created for nothing is removed again. Asking for neither read nor write, or for
/// `create` or `truncate` without write, is refused like `std::fs::OpenOptions` does.
pub fn open_direct(
    path: &Path,
    read: bool,
    write: bool,
    create: bool,
    truncate: bool,
) -> io::Result<OwnedFd> {
    open_direct_tracked(path, read, write, create, false, truncate).map(|o| o.fd)
}

/// A descriptor opened by [`open_direct_tracked`], and whether that call created the file.
#[derive(Debug)]
pub struct Opened {
    /// The `O_DIRECT` descriptor.
    pub fd: OwnedFd,
    /// Whether this open created the file (it did not exist before). A caller that fails
    /// later, before the file is of any use, undoes the creation with [`remove_created`].
    pub created: bool,
}

/// How often [`open_direct_tracked`] retries when the file keeps appearing and vanishing
/// between its exclusive create and its plain open.
const OPEN_ATTEMPTS: usize = 4;

/// Most symbolic links followed by hand when creating through a dangling link (the kernel's
/// `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Opens `path` like [`open_direct`], and tells whether this call created the file.
///
/// * `create`: the file is created when missing. This first tries `O_CREAT | O_EXCL`
///   ([`Opened::created`] is then true); if the file exists (`EEXIST`) it is opened without
///   `O_CREAT` (`created` false, and `O_TRUNC` applied when `truncate`); if it vanished in
///   between (`ENOENT`), the exclusive create is tried again, a few times. A dangling symbolic
///   link is followed by hand, so the file is created where plain `O_CREAT` would create it.
/// * `create_new`: the file must not exist: `O_CREAT | O_EXCL` only, failing with
///   [`io::ErrorKind::AlreadyExists`] (`EEXIST`) otherwise, like
///   `std::fs::OpenOptions::create_new` (`create` and `truncate` are then ignored).
/// * Neither: the file must exist.
///
/// Because the create is exclusive, a refusal of `O_DIRECT` after the kernel created the file
/// (the open fails with `EINVAL` once the file exists) is known to concern a file this call
/// created: it is unlinked before the [`io::ErrorKind::Unsupported`] error is returned, so a
/// refused open leaves nothing behind. (It is unlinked only if it is still an empty regular
/// file, which narrows, but cannot close, the window in which another process could have put
/// its own file there.)
///
/// Errors keep the OS error as their `source()`, so the errno survives:
/// `e.raw_os_error().or_else(|| e.source()?.downcast_ref::<io::Error>()?.raw_os_error())`.
/// A missing file is [`io::ErrorKind::NotFound`] (`ENOENT`); a directory is
/// `ErrorKind::IsADirectory` (`EISDIR` when opened for writing, `EINVAL` when opened for
/// reading only, as the kernel refuses `O_DIRECT` on directories); a refused `O_DIRECT` is
/// [`io::ErrorKind::Unsupported`] (`EINVAL`). Asking for neither read nor write, or for
/// `create`, `create_new` or `truncate` without write, is [`io::ErrorKind::InvalidInput`].
pub fn open_direct_tracked(
    path: &Path,
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
) -> io::Result<Opened> {
    let access = match (read, write) {
        (true, false) => libc::O_RDONLY,
        (false, true) => libc::O_WRONLY,
        (true, true) => libc::O_RDWR,
        (false, false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: open needs read or write access", path.display()),
            ))
        }
    };
    if (create || create_new || truncate) && !write {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: creating or truncating a file needs write access",
                path.display()
            ),
        ));
    }
    let base = access | libc::O_DIRECT | libc::O_CLOEXEC;
    let trunc = if truncate { libc::O_TRUNC } else { 0 };
    let exclusive = base | libc::O_CREAT | libc::O_EXCL;
    let fail = |e: io::Error| open_error(path, e);

    if create_new {
        return match open_raw(path, exclusive) {
            Ok(fd) => Ok(Opened { fd, created: true }),
            Err(e) => Err(fail(undo_refused_create(path, e))),
        };
    }
    if !create {
        return match open_raw(path, base | trunc) {
            Ok(fd) => Ok(Opened { fd, created: false }),
            Err(e) => Err(fail(e)),
        };
    }
    // `target` is where the file would be created: `path`, or where a dangling symbolic link
    // at `path` points.
    let mut target = path.to_path_buf();
    let (mut attempts, mut links) = (0, 0);
    loop {
        match open_raw(&target, exclusive) {
            Ok(fd) => return Ok(Opened { fd, created: true }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail(undo_refused_create(&target, e))),
        }
        // It exists: open it as it is (this follows symbolic links).
        let e = match open_raw(&target, base | trunc) {
            Ok(fd) => return Ok(Opened { fd, created: false }),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => e,
            Err(e) => return Err(fail(e)),
        };
        // EEXIST, then ENOENT: either a dangling symbolic link (O_EXCL does not follow it,
        // the plain open finds nothing at its end), or the file was removed in between.
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail(io::Error::from_raw_os_error(libc::ELOOP)));
                }
                let to = std::fs::read_link(&target).map_err(fail)?;
                target = match target.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            _ => {
                attempts += 1;
                if attempts >= OPEN_ATTEMPTS {
                    return Err(error::os(
                        e,
                        format!(
                            "cannot open {}: it kept appearing and vanishing while being \
                             created",
                            path.display()
                        ),
                    ));
                }
            }
        }
    }
}

/// `open(path, flags, 0o644)`, as an owned descriptor or the bare OS error.
fn open_raw(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: path contains a NUL byte", path.display()),
        )
    })?;
    // SAFETY: a NUL-terminated path and plain flags; the result is checked.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// After an `O_CREAT | O_EXCL | O_DIRECT` open of `path` failed with `e`: when that is the
/// `EINVAL` of a refused `O_DIRECT`, the kernel had already created the file (exclusively, so
/// for this call): remove it. Returns `e` unchanged.
fn undo_refused_create(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() != Some(libc::EINVAL) {
        return e;
    }
    match std::fs::symlink_metadata(path) {
        // What the refused open created: an empty regular file.
        Ok(m) if m.file_type().is_file() && m.len() == 0 => {
            if let Err(u) = std::fs::remove_file(path) {
                tracing::warn!(
                    "uringcache: cannot remove {}, created by an open that then refused \
                     O_DIRECT: {u}",
                    path.display()
                );
            }
        }
        // Nothing was created (the EINVAL came before), or it is not ours.
        _ => {}
    }
    e
}

/// The error for a failed open of `path`: the OS error `e` as the source, the path and, for
/// `EINVAL`, what it means (a refused `O_DIRECT`, or a directory) in the message.
fn open_error(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() != Some(libc::EINVAL) {
        if e.raw_os_error().is_none() {
            return e; // ours (a NUL in the path): already names the path
        }
        return error::os(e, format!("cannot open {}", path.display()));
    }
    let file_type = std::fs::metadata(path).ok().map(|m| m.file_type());
    match file_type {
        Some(t) if t.is_dir() => error::with_kind(
            // `ErrorKind::IsADirectory`, named through its errno (the variant is newer than
            // this crate's minimum Rust).
            io::Error::from_raw_os_error(libc::EISDIR).kind(),
            e,
            format!(
                "cannot open {}: it is a directory, and direct I/O needs a regular file; open \
                 with O_DIRECT failed",
                path.display()
            ),
        ),
        Some(t) if !t.is_file() && !t.is_block_device() => error::with_kind(
            io::ErrorKind::InvalidInput,
            e,
            format!(
                "cannot open {}: not a regular file or block device, which direct I/O needs; \
                 open with O_DIRECT failed",
                path.display()
            ),
        ),
        _ => error::with_kind(
            io::ErrorKind::Unsupported,
            e,
            format!(
                "{}: the filesystem does not support O_DIRECT; put the file on a filesystem \
                 that does (ext4, xfs, btrfs, tmpfs on Linux 6.6+); open with O_DIRECT failed",
                path.display()
            ),
        ),
    }
}

/// Removes a file that [`open_direct_tracked`] created ([`Opened::created`]) when the caller
/// fails afterwards and the new file is of no use: best effort, a failure is logged through
/// `tracing`, not returned.
///
/// `fd` is the descriptor of the created file: the file is removed only while `path` (with
/// its symbolic links resolved) still names that same file (`st_dev`, `st_ino`), so a file
/// another process put there in the meantime is left alone. (Linux has no unlink by
/// descriptor, so a rename in the instant between that check and the unlink cannot be
/// excluded.)
pub fn remove_created(path: &Path, fd: BorrowedFd<'_>) {
    let ours = match std::fs::File::from(match fd.try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(
                "uringcache: not removing {}: cannot duplicate its descriptor: {e}",
                path.display()
            );
            return;
        }
    })
    .metadata()
    {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) => {
            tracing::warn!(
                "uringcache: not removing {}: cannot stat its descriptor: {e}",
                path.display()
            );
            return;
        }
    };
    // Where the file is: `path` with every symbolic link resolved (a file created through a
    // dangling link is the link's target, not the link).
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return, // already gone
        Err(e) => {
            tracing::warn!("uringcache: cannot remove {}: {e}", path.display());
            return;
        }
    };
    match std::fs::symlink_metadata(&real) {
        Ok(m) if (m.dev(), m.ino()) == ours => {}
        Ok(_) => {
            tracing::warn!(
                "uringcache: not removing {}: it is no longer the file this open created",
                path.display()
            );
            return;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!("uringcache: cannot remove {}: {e}", path.display());
            return;
        }
    }
    match std::fs::remove_file(&real) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("uringcache: cannot remove {}: {e}", real.display()),
    }
}

/// The alignment, in bytes, that direct I/O on this file needs for file offsets, lengths and
/// memory addresses: a power of two, at least 512.
///
/// It is the larger of `statx`'s `stx_dio_offset_align` and `stx_dio_mem_align`
/// (`STATX_DIOALIGN`, Linux 6.1+). When the kernel or filesystem does not report them (older
/// kernel, or 0), it falls back to the logical block size of the block device (from
/// `BLKSSZGET` for a device node, from sysfs for a file on a device), then to the file's
/// `st_blksize` clamped to 512..=4096, then to 512. A page size of 4096 or more satisfies the
/// fallbacks on every common device.
pub fn dio_alignment(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let raw = fd.as_raw_fd();
    // SAFETY: `statx` is a plain C struct for which all-zero bytes are valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH stats `raw` itself; `stx` is a
    // valid out buffer.
    let rc = unsafe {
        libc::statx(
            raw,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 {
        if stx.stx_mask & libc::STATX_DIOALIGN != 0 {
            let align = stx.stx_dio_offset_align.max(stx.stx_dio_mem_align);
            if align.is_power_of_two() {
                return Ok(align.max(512));
            }
        }
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBADF) {
            return Err(error::os(
                e,
                "statx of the file for its direct-I/O alignment failed",
            ));
        }
        // ENOSYS (no statx) and friends: use the fallbacks.
    }
    fallback_alignment(raw)
}

fn fallback_alignment(raw: libc::c_int) -> io::Result<u32> {
    // SAFETY: `stat` is a plain C struct; zeroed bytes are valid and fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor (borrowed) and out buffer.
    if unsafe { libc::fstat(raw, &mut st) } != 0 {
        return Err(error::os(
            io::Error::last_os_error(),
            "fstat of the file for its direct-I/O alignment failed",
        ));
    }
    let logical = if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int.
        match unsafe { libc::ioctl(raw, libc::BLKSSZGET, &mut size) } {
            0 => u32::try_from(size).ok(),
            _ => None,
        }
    } else {
        sysfs_logical_block_size(st.st_dev)
    };
    if let Some(n) = logical.filter(|n| n.is_power_of_two() && *n >= 512) {
        return Ok(n);
    }
    let blksize = st.st_blksize as u64;
    if blksize.is_power_of_two() && blksize >= 512 {
        return Ok(blksize.min(4096) as u32);
    }
    Ok(512)
}

/// `queue/logical_block_size` of the device `dev` (or of the disk holding that partition).
fn sysfs_logical_block_size(dev: libc::dev_t) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let base = format!("/sys/dev/block/{major}:{minor}");
    [
        format!("{base}/queue/logical_block_size"),
        format!("{base}/../queue/logical_block_size"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn alignment_of_a_tmp_file() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("f");
        let fd = match open_direct(&path, true, true, true, false) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let a = dio_alignment(fd.as_fd()).unwrap();
        assert!(a.is_power_of_two() && a >= 512, "{a}");
        let b = fallback_alignment(fd.as_raw_fd()).unwrap();
        assert!(b.is_power_of_two() && b >= 512, "{b}");
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("missing");
        let e = open_direct(&path, true, false, false, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing"), "{e}");
        let e = open_direct(&path, false, false, false, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = open_direct(&path, true, false, true, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// The errno of `e` (kept as its `source()`).
    fn errno(e: &io::Error) -> Option<i32> {
        error::raw_os_error_of(e)
    }

    #[test]
    fn o_direct_refusal_is_explained() {
        // procfs files cannot do direct I/O: the open fails with EINVAL.
        let e = open_direct(Path::new("/proc/self/status"), true, false, false, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        assert_eq!(errno(&e), Some(libc::EINVAL), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/proc/self/status"), "{msg}");
        assert!(msg.contains("does not support O_DIRECT"), "{msg}");
    }

    /// A ramfs mounted on a temporary directory (ramfs refuses `O_DIRECT`), unmounted when
    /// dropped; `None`, with the reason printed, where mounting is not allowed.
    struct Ramfs {
        dir: Option<tempfile::TempDir>,
    }

    impl Ramfs {
        fn mount() -> Option<Ramfs> {
            let dir = tempfile::tempdir_in("/tmp").unwrap();
            let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
            // SAFETY: NUL-terminated strings and no data; the result is checked.
            let rc = unsafe {
                libc::mount(
                    c"ramfs".as_ptr(),
                    target.as_ptr(),
                    c"ramfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                eprintln!(
                    "skipping: cannot mount a ramfs (which refuses O_DIRECT) on {}: {} \
                     (needs root / CAP_SYS_ADMIN)",
                    dir.path().display(),
                    io::Error::last_os_error()
                );
                return None;
            }
            Some(Ramfs { dir: Some(dir) })
        }

        fn path(&self) -> &Path {
            self.dir.as_ref().unwrap().path()
        }
    }

    impl Drop for Ramfs {
        fn drop(&mut self) {
            let dir = self.dir.take().unwrap();
            let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated path; a failure only leaves the mount behind.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "cannot unmount the test ramfs at {}: {}",
                    dir.path().display(),
                    io::Error::last_os_error()
                );
                std::mem::forget(dir); // do not remove files from under a live mount
            }
        }
    }

    #[test]
    fn a_refused_open_leaves_no_file() {
        let Some(fs) = Ramfs::mount() else { return };
        let path = fs.path().join("new");

        let e = open_direct(&path, true, true, true, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        assert_eq!(errno(&e), Some(libc::EINVAL), "{e}");
        assert!(e.to_string().contains("does not support O_DIRECT"), "{e}");
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "the refused open left {} behind",
            path.display()
        );

        for (create, create_new, truncate) in [(true, false, true), (false, true, false)] {
            let e =
                open_direct_tracked(&path, false, true, create, create_new, truncate).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
            assert_eq!(errno(&e), Some(libc::EINVAL), "{e}");
            assert!(std::fs::symlink_metadata(&path).is_err(), "left behind");
        }
        assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);

        // A file that was there before is neither removed nor truncated.
        let old = fs.path().join("old");
        std::fs::write(&old, b"keep me").unwrap();
        let e = open_direct(&old, true, true, true, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        assert_eq!(errno(&e), Some(libc::EINVAL), "{e}");
        assert_eq!(std::fs::read(&old).unwrap(), b"keep me");
        // Not even an empty one.
        let empty = fs.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        open_direct(&empty, true, true, true, false).unwrap_err();
        assert!(empty.is_file(), "an existing empty file was removed");
    }

    #[test]
    fn errors_keep_kind_and_errno() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let missing = dir.path().join("missing");
        let e = open_direct(&missing, true, false, false, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(errno(&e), Some(libc::ENOENT), "{e}");
        // Nor is it made by a create in a missing directory.
        let e = open_direct(&missing.join("f"), true, true, true, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(errno(&e), Some(libc::ENOENT), "{e}");

        // A directory: the kernel refuses O_DIRECT on it (EINVAL) when read-only, and any
        // write access (EISDIR).
        let is_a_directory = io::Error::from_raw_os_error(libc::EISDIR).kind();
        let e = open_direct(dir.path(), true, false, false, false).unwrap_err();
        assert_eq!(e.kind(), is_a_directory, "{e}");
        assert_eq!(errno(&e), Some(libc::EINVAL), "{e}");
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = open_direct(dir.path(), true, true, false, false).unwrap_err();
        assert_eq!(e.kind(), is_a_directory, "{e}");
        assert_eq!(errno(&e), Some(libc::EISDIR), "{e}");
        let e = open_direct(dir.path(), true, true, true, false).unwrap_err();
        assert_eq!(errno(&e), Some(libc::EISDIR), "{e}");

        // Refused before any system call: no errno.
        let e = open_direct(&missing, false, false, false, false).unwrap_err();
        assert_eq!((e.kind(), errno(&e)), (io::ErrorKind::InvalidInput, None));
    }

    #[test]
    fn tracked_open_tells_who_created_the_file() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("f");
        let first = match open_direct_tracked(&path, true, true, true, false, false) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        assert!(first.created);
        let again = open_direct_tracked(&path, true, true, true, false, false).unwrap();
        assert!(!again.created);
        let e = open_direct_tracked(&path, true, true, false, true, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(errno(&e), Some(libc::EEXIST), "{e}");
        let plain = open_direct_tracked(&path, true, false, false, false, false).unwrap();
        assert!(!plain.created);

        // Truncation applies to an existing file, as with O_TRUNC.
        std::fs::write(&path, b"data").unwrap();
        let t = open_direct_tracked(&path, true, true, true, false, true).unwrap();
        assert!(!t.created);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);

        // create_new on a missing file.
        let fresh = dir.path().join("fresh");
        let o = open_direct_tracked(&fresh, false, true, false, true, false).unwrap();
        assert!(o.created);
        remove_created(&fresh, o.fd.as_fd());
        assert!(!fresh.exists(), "remove_created left the file");
        remove_created(&fresh, o.fd.as_fd()); // already gone: nothing happens

        // A dangling symbolic link: the file is created at its target, as O_CREAT does.
        let link = dir.path().join("link");
        let target = dir.path().join("target");
        std::os::unix::fs::symlink("target", &link).unwrap();
        let o = open_direct_tracked(&link, true, true, true, false, false).unwrap();
        assert!(o.created);
        assert!(target.is_file());
        let o2 = open_direct_tracked(&link, true, true, true, false, false).unwrap();
        assert!(!o2.created);
        remove_created(&link, o.fd.as_fd());
        assert!(!target.exists(), "the created target stays");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

        // A loop of links fails instead of spinning.
        std::os::unix::fs::symlink("loop-b", dir.path().join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", dir.path().join("loop-b")).unwrap();
        let e = open_direct_tracked(&dir.path().join("loop-a"), true, true, true, false, false)
            .unwrap_err();
        assert_eq!(errno(&e), Some(libc::ELOOP), "{e}");
    }

    #[test]
    fn remove_created_leaves_a_replacement_alone() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("f");
        let o = match open_direct_tracked(&path, true, true, true, false, false) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        assert!(o.created);
        // Someone else's file takes its place.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"theirs").unwrap();
        remove_created(&path, o.fd.as_fd());
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    }
}
