//! Errors that say what failed without losing the OS error under it.
//!
//! `io::Error::new(e.kind(), format!("... {e}"))` keeps the text of `e` ("(os error 2)") but
//! drops the error itself: `raw_os_error()` is `None` and `source()` is `None`, so a caller can
//! no longer match on the errno. [`os`] instead wraps the OS error in a [`Context`] that prints
//! `"<message>: <OS error>"` and returns the OS error from `source()`. Since
//! `io::Error::source()` delegates to its payload's `source()`, a caller finds the errno with
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
//! ([`raw_os_error_of`] walks the whole chain). This is a private copy of the helper in the
//! `uringcache` crate, which this crate cannot depend on.

use std::error::Error;
use std::fmt;
use std::io;

/// A message on top of the `io::Error` that caused it: the payload of the errors [`os`] makes.
pub(crate) struct Context {
    msg: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.msg, self.source)
    }
}

impl fmt::Debug for Context {
    /// The same text as `Display`, quoted: an `io::Error` built from it debug-prints like one
    /// built from a `String` (`Custom { kind: .., error: ".." }`), as `main` shows errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Error for Context {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// `source` with `msg` in front, keeping `source`'s kind and `source` itself (errno included)
/// as the new error's `source()`.
pub(crate) fn os(source: io::Error, msg: impl Into<String>) -> io::Error {
    with_kind(source.kind(), source, msg)
}

/// Like [`os`], but with `kind` instead of `source`'s kind (for an OS error that means
/// something more specific here, such as `EINVAL` from an `O_DIRECT` open).
pub(crate) fn with_kind(
    kind: io::ErrorKind,
    source: io::Error,
    msg: impl Into<String>,
) -> io::Error {
    io::Error::new(
        kind,
        Context {
            msg: msg.into(),
            source,
        },
    )
}

/// The errno of `e`: its own `raw_os_error()`, else the first one found down its `source()`
/// chain (through the `io::Error`s in it).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn raw_os_error_of(e: &io::Error) -> Option<i32> {
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
    fn context_keeps_kind_text_and_errno() {
        let inner = io::Error::from_raw_os_error(libc::ENOENT);
        let inner_text = inner.to_string();
        let e = os(inner, "cannot open /x");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.raw_os_error(), None);
        assert_eq!(e.to_string(), format!("cannot open /x: {inner_text}"));
        assert!(e.to_string().contains("(os error 2)"), "{e}");
        let src = e.source().expect("a source");
        assert_eq!(
            src.downcast_ref::<io::Error>()
                .and_then(|s| s.raw_os_error()),
            Some(libc::ENOENT)
        );
        assert_eq!(raw_os_error_of(&e), Some(libc::ENOENT));
        // The documented one-liner finds it too.
        let found = e
            .raw_os_error()
            .or_else(|| e.source()?.downcast_ref::<io::Error>()?.raw_os_error());
        assert_eq!(found, Some(libc::ENOENT));
        // Debug looks like a string payload.
        assert!(format!("{e:?}").contains("\"cannot open /x: "), "{e:?}");
    }

    #[test]
    fn kind_can_be_replaced_and_chains_nest() {
        let e = with_kind(
            io::ErrorKind::Unsupported,
            io::Error::from_raw_os_error(libc::EINVAL),
            "no O_DIRECT",
        );
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(raw_os_error_of(&e), Some(libc::EINVAL));
        let outer = os(e, "opening the cache file");
        assert_eq!(outer.kind(), io::ErrorKind::Unsupported);
        assert_eq!(raw_os_error_of(&outer), Some(libc::EINVAL));
        assert!(outer
            .to_string()
            .starts_with("opening the cache file: no O_DIRECT: "));
    }

    #[test]
    fn plain_errors() {
        assert_eq!(
            raw_os_error_of(&io::Error::from_raw_os_error(libc::EIO)),
            Some(libc::EIO)
        );
        assert_eq!(raw_os_error_of(&io::Error::other("no errno")), None);
    }
}
