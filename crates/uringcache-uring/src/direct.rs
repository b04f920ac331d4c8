//! Opening files for direct I/O and finding the alignment direct I/O needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `path` with `O_DIRECT | O_CLOEXEC` (and `O_CREAT` with mode `0o644` when `create`,
/// `O_TRUNC` when `truncate`), for reading, writing or both.
///
/// Errors name the path. A filesystem that refuses `O_DIRECT` (the open fails with `EINVAL`,
/// as on tmpfs before Linux 6.6 and on some network and FUSE filesystems) gets an error of kind
/// [`io::ErrorKind::Unsupported`] saying so. Asking for neither read nor write, or for `create`
/// or `truncate` without write, is refused like `std::fs::OpenOptions` does.
pub fn open_direct(
    path: &Path,
    read: bool,
    write: bool,
    create: bool,
    truncate: bool,
) -> io::Result<OwnedFd> {
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
    if (create || truncate) && !write {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: creating or truncating a file needs write access",
                path.display()
            ),
        ));
    }
    let mut flags = access | libc::O_DIRECT | libc::O_CLOEXEC;
    if create {
        flags |= libc::O_CREAT;
    }
    if truncate {
        flags |= libc::O_TRUNC;
    }
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: path contains a NUL byte", path.display()),
        )
    })?;
    // SAFETY: a NUL-terminated path and plain flags; the result is checked.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: the filesystem does not support O_DIRECT (open returned EINVAL); put \
                     the file on a filesystem that does (ext4, xfs, btrfs, tmpfs on Linux 6.6+)",
                    path.display()
                ),
            ));
        }
        return Err(io::Error::new(
            e.kind(),
            format!("cannot open {}: {e}", path.display()),
        ));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
            return Err(e);
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
        return Err(io::Error::last_os_error());
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

    #[test]
    fn o_direct_refusal_is_explained() {
        // procfs files cannot do direct I/O: the open fails with EINVAL.
        let e = open_direct(Path::new("/proc/self/status"), true, false, false, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/proc/self/status"), "{msg}");
        assert!(msg.contains("does not support O_DIRECT"), "{msg}");
    }
}
