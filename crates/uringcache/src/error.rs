//! Errors with context that keep the OS error as their `source()`: the helpers of
//! [`uringcache_uring::error`], which the I/O layer uses too, so that both build them alike.

use std::io;

pub(crate) use uringcache_uring::error::{errno, os, raw_os_error_of};

/// The errno a failed I/O is recorded with (on its pages, in the mapping's error sequence, as
/// a poisoned flush): the one its error carries, else `EIO`.
pub(crate) fn errno_of(e: &io::Error) -> i32 {
    raw_os_error_of(e)
        .filter(|&errno| errno != 0)
        .unwrap_or(libc::EIO)
}

/// Bad input from the caller: `InvalidInput` with a message that names the cause.
pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
