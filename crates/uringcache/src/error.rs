//! Errors with context that keep the OS error as their `source()`: the helpers of
//! [`uringcache_uring::error`], which the I/O layer uses too, so that both build them alike.

pub(crate) use uringcache_uring::error::{errno, os, raw_os_error_of};
