//! Choosing and starting the I/O layer: `io_uring`, or the thread pool when `io_uring` is
//! missing or refused.

use std::io;
use std::sync::Arc;

use uringcache_core::backend::Backend as IoBackend;
use uringcache_core::frames::FrameArena;
use uringcache_uring::{ThreadsBackend, UringBackend, UringConfig};

use crate::cache::{invalid, Backend, CacheBuilder};

/// The environment variable that overrides [`Backend`] (`uring`, `threads` or `auto`).
pub const BACKEND_ENV: &str = "URINGCACHE_BACKEND";

fn choice(builder: &CacheBuilder) -> io::Result<Backend> {
    match std::env::var(BACKEND_ENV) {
        Err(_) => Ok(builder.backend_choice()),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" | "iouring" => Ok(Backend::IoUring),
            "threads" | "thread" => Ok(Backend::Threads),
            "auto" | "" => Ok(builder.backend_choice()),
            other => Err(invalid(format!(
                "{BACKEND_ENV}={other} is not one of: uring, threads, auto"
            ))),
        },
    }
}

/// Starts the backend the builder (or the environment) asks for.
pub(crate) fn start(
    builder: &CacheBuilder,
    arena: Arc<FrameArena>,
) -> io::Result<Arc<dyn IoBackend>> {
    let (entries, sqpoll) = builder.uring_settings();
    let uring = |arena| -> io::Result<Arc<dyn IoBackend>> {
        let config = UringConfig {
            entries,
            sqpoll,
            max_transfer: builder.transfer_cap(),
            ..UringConfig::default()
        };
        Ok(Arc::new(UringBackend::new(arena, config)?))
    };
    let threads = |arena| -> io::Result<Arc<dyn IoBackend>> {
        Ok(Arc::new(ThreadsBackend::new(
            arena,
            builder.thread_count(),
        )?))
    };
    let chosen = choice(builder)?;
    let backend = match chosen {
        Backend::IoUring => uring(arena),
        Backend::Threads => threads(arena),
        Backend::Auto => match UringBackend::probe().and_then(|()| uring(arena.clone())) {
            Ok(b) => Ok(b),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "io_uring is unavailable; uringcache falls back to its thread-pool backend"
                );
                threads(arena)
            }
        },
    }?;
    tracing::info!(backend = backend.name(), asked = ?chosen, "uringcache backend started");
    Ok(backend)
}
