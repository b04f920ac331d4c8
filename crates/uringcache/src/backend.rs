//! Choosing and starting the I/O layer: `io_uring`, or the thread pool when `io_uring` is
//! missing or refused.

use std::io;
use std::sync::Arc;

use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::frames::FrameArena;
use uringcache_uring::{ThreadsBackend, UringBackend, UringConfig};

use crate::error::invalid;

/// Which I/O layer moves the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `io_uring` when the kernel allows it, else the thread pool (logged through `tracing`,
    /// and the reason kept in [`Stats::backend_fallback`](crate::Stats::backend_fallback)).
    /// The environment variable [`URINGCACHE_BACKEND`](crate::BACKEND_ENV)`=uring|threads`
    /// picks one instead; it steers only `Auto`, never an explicit choice below.
    #[default]
    Auto,
    /// `io_uring` only: building the cache fails with the reason if it is unavailable.
    IoUring,
    /// A small pool of threads doing `pread` / `pwrite` on `O_DIRECT` files.
    Threads,
}

/// What a [`CacheBuilder`](crate::CacheBuilder) asks of the backend: which one, and the
/// settings of each.
#[derive(Clone, Debug)]
pub(crate) struct BackendRequest {
    /// The choice made in code (the environment may steer `Auto`).
    pub(crate) choice: Backend,
    /// The `io_uring` backend's settings.
    pub(crate) uring: UringConfig,
    /// Threads of the thread-pool backend.
    pub(crate) threads: usize,
}

/// The environment variable that picks the backend of a cache built with [`Backend::Auto`]
/// (`uring`, `threads` or `auto`): for operators, and to run a test suite on each backend.
///
/// It steers only `Auto`: a [`Backend::IoUring`] or [`Backend::Threads`] chosen in code wins,
/// and a variable asking for another backend is then ignored (said once per build through
/// `tracing::info!`). A value that is none of the three fails the build of an `Auto` cache
/// with `InvalidInput`.
pub const BACKEND_ENV: &str = "URINGCACHE_BACKEND";

/// The backend to start for `asked` (the builder's choice) given the value of [`BACKEND_ENV`]
/// (`None` when unset), and whether the variable was overruled by an explicit choice.
fn resolve(asked: Backend, env: Option<&str>) -> io::Result<(Backend, bool)> {
    let Some(v) = env else {
        return Ok((asked, false));
    };
    let from_env = match v.trim().to_ascii_lowercase().as_str() {
        "uring" | "io_uring" | "iouring" => Some(Backend::IoUring),
        "threads" | "thread" => Some(Backend::Threads),
        "auto" | "" => None,
        other => {
            if asked != Backend::Auto {
                return Ok((asked, true));
            }
            return Err(invalid(format!(
                "{BACKEND_ENV}={other} is not one of: uring, threads, auto"
            )));
        }
    };
    Ok(match (asked, from_env) {
        (Backend::Auto, Some(b)) => (b, false),
        (asked, Some(b)) => (asked, b != asked),
        (asked, None) => (asked, false),
    })
}

fn choice(asked: Backend) -> io::Result<Backend> {
    let env = std::env::var(BACKEND_ENV).ok();
    let (chosen, overruled) = resolve(asked, env.as_deref())?;
    if overruled {
        tracing::info!(
            "{BACKEND_ENV}={} is ignored: the code chose Backend::{asked:?}, which wins over the \
             variable (it steers only Backend::Auto)",
            env.as_deref().unwrap_or_default()
        );
    }
    Ok(chosen)
}

/// Facts about the backend that was started, fixed for the cache's life and shown in
/// [`Stats`](crate::Stats). Read off the concrete backend here, before any
/// [`wrap_backend`](crate::CacheBuilder::wrap_backend) layer hides it.
#[derive(Clone, Debug, Default)]
pub(crate) struct BackendInfo {
    /// The `io_uring` backend has a fixed-buffer table for the frame arena (its regions are
    /// registered as I/O first touches them).
    fixed_buffers: bool,
    /// Why `Auto` fell back to the thread pool (the `io_uring` error), `None` if it did not.
    fallback: Option<String>,
}

impl BackendInfo {
    /// Whether the `io_uring` backend has a fixed-buffer table for the frame arena.
    pub(crate) fn fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    /// Why `Auto` fell back to the thread pool, `None` if it did not.
    pub(crate) fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
}

/// Starts the backend the builder (or the environment) asks for.
pub(crate) fn start(
    request: &BackendRequest,
    arena: Arc<FrameArena>,
) -> io::Result<(Arc<dyn IoBackend>, BackendInfo)> {
    let uring = |arena| -> io::Result<(Arc<dyn IoBackend>, BackendInfo)> {
        let backend = UringBackend::new(arena, request.uring.clone())?;
        let info = BackendInfo {
            fixed_buffers: backend.uses_fixed_buffers(),
            fallback: None,
        };
        Ok((Arc::new(backend), info))
    };
    let threads = |arena| -> io::Result<Arc<dyn IoBackend>> {
        Ok(Arc::new(ThreadsBackend::new(arena, request.threads)?))
    };
    let chosen = choice(request.choice)?;
    let (backend, info) = match chosen {
        Backend::IoUring => uring(arena)?,
        Backend::Threads => (threads(arena)?, BackendInfo::default()),
        Backend::Auto => match UringBackend::probe().and_then(|()| uring(arena.clone())) {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "io_uring is unavailable; uringcache falls back to its thread-pool backend"
                );
                let info = BackendInfo {
                    fixed_buffers: false,
                    fallback: Some(e.to_string()),
                };
                (threads(arena)?, info)
            }
        },
    };
    tracing::info!(
        backend = backend.name(),
        asked = ?chosen,
        fixed_buffers = info.fixed_buffers,
        "uringcache backend started"
    );
    Ok((backend, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_steers_only_auto() {
        use Backend::*;
        let ok = |asked, env| resolve(asked, env).unwrap();
        // Unset or `auto`: the builder's choice.
        for asked in [Auto, IoUring, Threads] {
            assert_eq!(ok(asked, None), (asked, false));
            assert_eq!(ok(asked, Some("auto")), (asked, false));
            assert_eq!(ok(asked, Some("")), (asked, false));
        }
        // Auto follows the variable.
        assert_eq!(ok(Auto, Some("threads")), (Threads, false));
        assert_eq!(ok(Auto, Some(" URING ")), (IoUring, false));
        assert_eq!(ok(Auto, Some("io_uring")), (IoUring, false));
        // An explicit choice wins; a conflicting variable is reported as overruled.
        assert_eq!(ok(IoUring, Some("threads")), (IoUring, true));
        assert_eq!(ok(Threads, Some("uring")), (Threads, true));
        assert_eq!(ok(Threads, Some("threads")), (Threads, false));
        assert_eq!(ok(IoUring, Some("bogus")), (IoUring, true));
        // A bad value matters only where it would steer.
        let e = resolve(Auto, Some("bogus")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("URINGCACHE_BACKEND=bogus"), "{e}");
    }
}
