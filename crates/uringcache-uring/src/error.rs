//! Errors that carry context without losing the OS error under them.
//!
//! `io::Error::new(e.kind(), format!("... {e}"))` keeps the *text* of an OS error
//! ("No such file or directory (os error 2)") but drops the error itself: `raw_os_error()` is
//! `None` and `source()` is `None`, so a caller can no longer match on the errno. The
//! constructors here wrap the OS error in a `Context` instead: the new error has the same
//! kind, prints `"<message>: <OS error>"`, and returns the OS error from `source()`
//! (`io::Error::source()` delegates to its payload's `source()`).
//!
//! # How a user finds the errno
//!
//! The public API stays `io::Result`; an error from the OS either *is* the OS error or has it
//! as its `source()`:
//!
//! ```
//! use std::error::Error as _;
//! # let e = std::io::Error::from_raw_os_error(2);
//! let errno = e
//!     .raw_os_error()
//!     .or_else(|| e.source()?.downcast_ref::<std::io::Error>()?.raw_os_error());
//! # assert_eq!(errno, Some(2));
//! ```
//!
//! [`raw_os_error_of`] walks the whole `source()` chain (errors wrapped more than once), and is
//! what code deciding on an errno should use rather than `e.raw_os_error()`. The `uringcache`
//! crate builds its errors with these helpers too.

use std::error::Error;
use std::fmt;
use std::io;

/// A message on top of the `io::Error` that caused it: the payload of the errors [`os`] and
/// [`with_kind`] make.
struct Context {
    msg: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.msg, self.source)
    }
}

impl fmt::Debug for Context {
    /// The `Display` text, quoted: an `io::Error` built from a `Context` debug-prints like one
    /// built from a `String` (`Custom { kind: .., error: ".." }`), which is what `main`
    /// returning an error shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// `source` with `msg` in front (`"<msg>: <source>"`), keeping `source`'s kind, and `source`
/// itself (errno included) as the new error's `source()`.
pub fn os(source: io::Error, msg: impl Into<String>) -> io::Error {
    with_kind(source.kind(), source, msg)
}

/// Like [`os`], with `kind` instead of `source`'s kind: for an OS error that means something
/// more specific here (`EINVAL` from an `O_DIRECT` open is `Unsupported`).
pub fn with_kind(kind: io::ErrorKind, source: io::Error, msg: impl Into<String>) -> io::Error {
    io::Error::new(
        kind,
        Context {
            msg: msg.into(),
            source,
        },
    )
}

/// `errno` as an error with `msg` in front: [`os`] of `io::Error::from_raw_os_error(errno)`.
/// An errno of 0 (a page marked failed without one) is reported as `EIO`.
pub fn errno(errno: i32, msg: impl Into<String>) -> io::Error {
    os(
        io::Error::from_raw_os_error(if errno == 0 { libc::EIO } else { errno }),
        msg,
    )
}

/// The errno of `e`: its own `raw_os_error()`, else the first one down its `source()` chain
/// (through every `io::Error` in it, however often it was wrapped).
pub fn raw_os_error_of(e: &io::Error) -> Option<i32> {
    if let Some(errno) = e.raw_os_error() {
        return Some(errno);
    }
    let mut next = e.source();
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(errno) = io.raw_os_error() {
                return Some(errno);
            }
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_keeps_kind_text_and_errno() {
        let inner = io::Error::from_raw_os_error(libc::ENOENT);
        let text = inner.to_string();
        let e = os(inner, "cannot open /x");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), format!("cannot open /x: {text}"));
        assert!(e.to_string().ends_with("(os error 2)"), "{e}");
        // Not the error itself any more, but its source is.
        assert_eq!(e.raw_os_error(), None);
        let src = e.source().expect("the OS error as the source");
        let src = src.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(src.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(raw_os_error_of(&e), Some(libc::ENOENT));
        // The one-liner of the module docs.
        let found = e
            .raw_os_error()
            .or_else(|| e.source()?.downcast_ref::<io::Error>()?.raw_os_error());
        assert_eq!(found, Some(libc::ENOENT));
        // The payload is reachable, and debug-prints like a string payload.
        let ctx = e.get_ref().unwrap().downcast_ref::<Context>().unwrap();
        assert_eq!(ctx.msg, "cannot open /x");
        assert_eq!(ctx.source.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            format!("{e:?}"),
            format!("Custom {{ kind: NotFound, error: {:?} }}", e.to_string())
        );
    }

    #[test]
    fn with_kind_and_nesting() {
        let e = with_kind(
            io::ErrorKind::Unsupported,
            io::Error::from_raw_os_error(libc::EINVAL),
            "/d/f: the filesystem does not support O_DIRECT",
        );
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(raw_os_error_of(&e), Some(libc::EINVAL));
        // Wrapped twice: the kind stays, the chain still reaches the errno.
        let outer = os(e, "opening the cache's file");
        assert_eq!(outer.kind(), io::ErrorKind::Unsupported);
        assert_eq!(raw_os_error_of(&outer), Some(libc::EINVAL));
        assert!(outer
            .to_string()
            .starts_with("opening the cache's file: /d/f: the filesystem does not support"));
        let e = errno(libc::EFBIG, "page 7 of /d/f");
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(raw_os_error_of(&e), Some(libc::EFBIG));
    }

    #[test]
    fn errors_without_an_errno() {
        assert_eq!(
            raw_os_error_of(&io::Error::from_raw_os_error(libc::EIO)),
            Some(libc::EIO)
        );
        assert_eq!(raw_os_error_of(&io::Error::other("no errno")), None);
        let e = os(io::Error::other("inner"), "outer");
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert_eq!(raw_os_error_of(&e), None);
        assert_eq!(e.to_string(), "outer: inner");
    }
}
