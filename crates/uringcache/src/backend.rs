//! Choosing and starting the I/O layer: `io_uring`, or the thread pool when `io_uring` is
//! missing or refused.

use std::io;
use std::sync::Arc;

use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::frames::FrameArena;
use uringcache_uring::{ThreadsBackend, UringBackend, UringConfig};

use crate::builder::{Backend, CacheBuilder};
use crate::error::invalid;

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

fn choice(builder: &CacheBuilder) -> io::Result<Backend> {
    let asked = builder.backend_choice();
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
    /// The `io_uring` backend registered the frame arena as fixed buffers.
    pub(crate) fixed_buffers: bool,
    /// Why `Auto` fell back to the thread pool (the `io_uring` error), `None` if it did not.
    pub(crate) fallback: Option<String>,
}

/// Starts the backend the builder (or the environment) asks for.
pub(crate) fn start(
    builder: &CacheBuilder,
    arena: Arc<FrameArena>,
) -> io::Result<(Arc<dyn IoBackend>, BackendInfo)> {
    let (entries, sqpoll) = builder.uring_settings();
    let uring = |arena| -> io::Result<(Arc<dyn IoBackend>, BackendInfo)> {
        let config = UringConfig {
            entries,
            sqpoll,
            max_transfer: builder.transfer_cap(),
            ..UringConfig::default()
        };
        let backend = UringBackend::new(arena, config)?;
        let info = BackendInfo {
            fixed_buffers: backend.uses_fixed_buffers(),
            fallback: None,
        };
        Ok((Arc::new(backend), info))
    };
    let threads = |arena| -> io::Result<Arc<dyn IoBackend>> {
        Ok(Arc::new(ThreadsBackend::new(
            arena,
            builder.thread_count(),
        )?))
    };
    let chosen = choice(builder)?;
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
