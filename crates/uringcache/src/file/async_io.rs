//! Tokio I/O adapters: [`Reader`] (`AsyncRead + AsyncBufRead + AsyncSeek`) and [`Writer`]
//! (`AsyncWrite`) over a [`File`], for code written against `tokio::io` — `tokio::io::copy`,
//! `read_to_end`, `lines`, codecs, HTTP bodies.
//!
//! Both adapters hold a clone of the [`File`] (clones share the handle and its readahead state)
//! and an owned buffer, and drive the file's own async methods as boxed futures that own both.
//! So a `Reader` or `Writer` is `Send + 'static` and `Unpin`, and works under any executor, like
//! the rest of the cache.
//!
//! * A [`Reader`] reads whole chunks (64 KiB by default) into its buffer with
//!   [`File::read_at`], and serves them through `poll_fill_buf` / `consume`; the cache's
//!   readahead sees a sequential stream and reads ahead of it. Seeking within the buffer keeps
//!   it; seeking out of it discards it.
//! * A [`Writer`] collects bytes up to its capacity and writes them with
//!   [`File::write_all_at`] when the buffer is full, on `flush` and on `shutdown`. A written
//!   chunk lands in the cache, so it is visible to every reader of the file at once; it reaches
//!   the device later, by background writeback or by [`Writer::sync_all`] /
//!   [`Writer::sync_data`]. **Neither `flush` nor `shutdown` makes the bytes durable.**
//!
//! ```
//! use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
//!
//! # fn main() -> std::io::Result<()> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
//! let file = cache
//!     .open(
//!         dir.path().join("log.txt"),
//!         uringcache::OpenOptions::new().read(true).write(true).create(true),
//!     )
//!     .await?;
//!
//! // Write through a buffered writer; `shutdown` flushes into the cache, `sync_all` makes
//! // the bytes durable.
//! let mut writer = file.writer(0);
//! for i in 0..3 {
//!     writer.write_all(format!("line {i}\n").as_bytes()).await?;
//! }
//! writer.shutdown().await?;
//! writer.sync_all().await?;
//!
//! // Read it back line by line, then seek and read the rest.
//! let mut reader = file.reader(0);
//! let mut first = String::new();
//! reader.read_line(&mut first).await?;
//! assert_eq!(first, "line 0\n");
//! reader.seek(std::io::SeekFrom::End(-7)).await?;
//! let mut rest = String::new();
//! reader.read_to_string(&mut rest).await?;
//! assert_eq!(rest, "line 2\n");
//! # Ok::<(), std::io::Error>(())
//! # })
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::File;

/// Default buffer size of a [`Reader`] and a [`Writer`]: 64 KiB.
pub const DEFAULT_BUF_SIZE: usize = 64 << 10;

/// Reads are aligned on this many bytes, and a reader's buffer holds at least this many:
/// the smallest page size a cache is usually built with.
const READ_ALIGN: usize = 4096;

type ReadFuture = Pin<Box<dyn Future<Output = (Vec<u8>, io::Result<usize>)> + Send>>;
type WriteFuture = Pin<Box<dyn Future<Output = (Vec<u8>, io::Result<()>)> + Send>>;

/// A read in flight: the offset it reads at and the future that owns the buffer.
struct PendingRead {
    offset: u64,
    fut: ReadFuture,
}

/// A buffered, seekable reader over a [`File`]: `tokio::io::AsyncRead + AsyncBufRead +
/// AsyncSeek`, `Send + Unpin + 'static`. Made by [`File::reader`] or
/// [`Reader::with_capacity`].
///
/// Each fill of the buffer is one [`File::read_at`] of up to the buffer's capacity, ending on a
/// 4 KiB boundary, so the cache sees a sequential stream of large reads and reads ahead of it.
/// The reader's position is its own: it is not shared with other readers or with the `File`.
/// The end of the file is taken at each fill, so bytes written past the old end after the
/// reader reached it are read by the next poll.
///
/// `AsyncSeek` accepts [`SeekFrom::Start`], [`SeekFrom::End`] (from [`File::len`] at the time
/// of the seek) and [`SeekFrom::Current`] (from the reader's logical position, buffered bytes
/// accounted for). A seek to a negative position, or past `u64::MAX`, fails with
/// `InvalidInput` and leaves the position unchanged. A seek inside the buffered range keeps
/// the buffer; any other seek discards it (and abandons a fill in flight: the cache finishes
/// that read in the background). Seeking past the end is allowed; reads there return 0 bytes.
pub struct Reader {
    file: File,
    /// Logical position: the file offset of the next byte returned.
    pos: u64,
    /// The buffer; empty (no allocation) while a fill owns it or after a seek abandoned one.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Valid bytes in `buf`.
    filled: usize,
    capacity: usize,
    pending: Option<PendingRead>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.file.path())
            .field("position", &self.pos)
            .field("buffered", &self.buffer().len())
            .field("capacity", &self.capacity)
            .field("reading", &self.pending.is_some())
            .finish()
    }
}

impl Reader {
    /// A reader of `file` from `offset` with a [`DEFAULT_BUF_SIZE`] buffer (the same as
    /// [`File::reader`]).
    pub fn new(file: File, offset: u64) -> Reader {
        Reader::with_capacity(file, offset, DEFAULT_BUF_SIZE)
    }

    /// A reader of `file` from `offset` whose buffer holds `capacity` bytes, rounded up to a
    /// multiple of 4 KiB (at least 4 KiB). Larger buffers mean fewer, larger reads; a multiple
    /// of the cache's page size avoids splitting pages between fills.
    pub fn with_capacity(file: File, offset: u64, capacity: usize) -> Reader {
        let capacity = capacity
            .max(1)
            .checked_next_multiple_of(READ_ALIGN)
            .unwrap_or(usize::MAX / READ_ALIGN * READ_ALIGN);
        Reader {
            file,
            pos: offset,
            buf: Vec::new(),
            buf_off: 0,
            filled: 0,
            capacity,
            pending: None,
        }
    }

    /// The file offset of the next byte this reader returns.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes buffered at the current position (possibly none); does not read.
    pub fn buffer(&self) -> &[u8] {
        match self.buffered_start() {
            Some(start) => &self.buf[start..self.filled],
            None => &[],
        }
    }

    /// The file this reader reads.
    pub fn get_ref(&self) -> &File {
        &self.file
    }

    /// The file this reader reads, dropping the reader and its buffer.
    pub fn into_inner(self) -> File {
        self.file
    }

    /// The index in `buf` of the byte at `pos`, if `pos` is inside the buffered range.
    fn buffered_start(&self) -> Option<usize> {
        if self.pending.is_some() || self.pos < self.buf_off {
            return None;
        }
        let start = self.pos - self.buf_off;
        (start < self.filled as u64).then_some(start as usize)
    }

    /// Starts a fill of the buffer at `pos`.
    fn start_fill(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < self.capacity {
            buf = vec![0u8; self.capacity];
        }
        self.filled = 0;
        let offset = self.pos;
        // End on a 4 KiB boundary, so that later fills read whole pages; never past u64::MAX.
        let len = (self.capacity - (offset % READ_ALIGN as u64) as usize)
            .min(usize::try_from(u64::MAX - offset).unwrap_or(usize::MAX));
        let file = self.file.clone();
        let fut: ReadFuture = Box::pin(async move {
            let res = file.read_at(&mut buf[..len], offset).await;
            (buf, res)
        });
        self.pending = Some(PendingRead { offset, fut });
    }
}

impl AsyncBufRead for Reader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        loop {
            if let Some(pending) = &mut this.pending {
                let (buf, res) = ready!(pending.fut.as_mut().poll(cx));
                let offset = pending.offset;
                this.pending = None;
                this.buf = buf;
                this.buf_off = offset;
                this.filled = 0;
                let n = res?;
                this.filled = n;
                if n == 0 && offset == this.pos {
                    return Poll::Ready(Ok(&[]));
                }
                continue;
            }
            if let Some(start) = this.buffered_start() {
                return Poll::Ready(Ok(&this.buf[start..this.filled]));
            }
            if this.pos >= this.file.len() {
                // End of file: no read needed (read_at would return 0 as well).
                return Poll::Ready(Ok(&[]));
            }
            this.start_fill();
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let available = this.buffer().len();
        this.pos += amt.min(available) as u64;
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let chunk = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = chunk.len().min(out.remaining());
        out.put_slice(&chunk[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for Reader {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target: i128 = match position {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(delta) => this.file.len() as i128 + delta as i128,
            SeekFrom::Current(delta) => this.pos as i128 + delta as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot seek a reader of {} to a negative position ({target}) with {position:?}",
                    this.file.path().display()
                ),
            ));
        }
        let target = u64::try_from(target).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot seek a reader of {} to {target} with {position:?}: past the largest \
                     file offset",
                    this.file.path().display()
                ),
            )
        })?;
        if target != this.pos {
            // A fill in flight reads at the old position: abandon it (dropping the future is
            // safe; the cache completes the device read on its own).
            this.pending = None;
        }
        this.pos = target;
        if this.buffered_start().is_none() {
            this.filled = 0;
        }
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

/// A buffered writer over a [`File`]: `tokio::io::AsyncWrite`, `Send + Unpin + 'static`. Made
/// by [`File::writer`] or [`Writer::with_capacity`].
///
/// Bytes are collected in a buffer and written at consecutive offsets from the starting one
/// with [`File::write_all_at`] when the buffer is full, on `poll_flush` and on
/// `poll_shutdown`.
///
/// # Durability
///
/// `flush` (and `shutdown`, which only flushes) puts the buffered bytes **into the cache**:
/// from then on every handle's reads see them, but they reach the device only through
/// background writeback or a sync. Neither calls `fsync`. Call [`Writer::sync_data`] or
/// [`Writer::sync_all`] (or [`File::sync_all`] after a flush) to make them durable.
///
/// # Errors and drop
///
/// When a write into the cache fails, the buffered bytes stay in the buffer and the error is
/// returned; the next write, flush or shutdown tries them again at the same offset. Dropping a
/// `Writer` with buffered bytes discards them (a warning is logged through `tracing`): flush or
/// shut down first.
pub struct Writer {
    file: File,
    /// File offset of `buf[0]`.
    pos: u64,
    /// Bytes not yet written into the cache; empty (no allocation) while a write owns it.
    buf: Vec<u8>,
    /// Bytes owned by the write in flight, if any.
    in_flight: usize,
    capacity: usize,
    pending: Option<WriteFuture>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.file.path())
            .field("position", &self.position())
            .field("buffered", &(self.buf.len() + self.in_flight))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Writer {
    /// A writer to `file` from `offset` with a [`DEFAULT_BUF_SIZE`] buffer (the same as
    /// [`File::writer`]).
    pub fn new(file: File, offset: u64) -> Writer {
        Writer::with_capacity(file, offset, DEFAULT_BUF_SIZE)
    }

    /// A writer to `file` from `offset` whose buffer holds `capacity` bytes (at least 1). A
    /// multiple of the cache's page size, with a page-aligned `offset`, writes whole pages,
    /// which need no read-modify-write. If `file` was opened with
    /// [`OpenOptions::append`](crate::OpenOptions::append), the writer starts at `file.len()`
    /// instead of `offset`.
    pub fn with_capacity(file: File, offset: u64, capacity: usize) -> Writer {
        let pos = if file.appends() { file.len() } else { offset };
        Writer {
            file,
            pos,
            buf: Vec::new(),
            in_flight: 0,
            capacity: capacity.max(1),
            pending: None,
        }
    }

    /// The file offset the next byte written goes to (buffered bytes accounted for).
    pub fn position(&self) -> u64 {
        self.pos
            .saturating_add((self.buf.len() + self.in_flight) as u64)
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes buffered and not yet written into the cache.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The file this writer writes.
    pub fn get_ref(&self) -> &File {
        &self.file
    }

    /// Flushes the buffer into the cache, then makes the file's data durable with
    /// [`File::sync_data`] (`fdatasync`).
    pub async fn sync_data(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.file.sync_data().await
    }

    /// Flushes the buffer into the cache, then makes the file's data and metadata durable
    /// with [`File::sync_all`] (`fsync`): after `Ok`, the file on disk holds every byte written
    /// through this writer.
    pub async fn sync_all(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.file.sync_all().await
    }

    /// Drives the write in flight to completion, then writes the buffer (if any) and waits for
    /// it: on `Ready(Ok)`, the buffer is empty and every byte is in the cache.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(fut) = &mut self.pending {
                let (mut buf, res) = ready!(fut.as_mut().poll(cx));
                self.pending = None;
                self.in_flight = 0;
                if let Err(e) = res {
                    // Keep the bytes: the next flush writes them again at the same offset.
                    self.buf = buf;
                    return Poll::Ready(Err(e));
                }
                self.pos += buf.len() as u64;
                buf.clear();
                self.buf = buf;
            }
            if self.buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let buf = std::mem::take(&mut self.buf);
            let offset = self.pos;
            let file = self.file.clone();
            self.in_flight = buf.len();
            self.pending = Some(Box::pin(async move {
                let res = file.write_all_at(&buf, offset).await;
                (buf, res)
            }));
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.pending.is_some() || this.buf.len() >= this.capacity {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.capacity() < this.capacity {
            this.buf.reserve_exact(this.capacity - this.buf.len());
        }
        let n = data.len().min(this.capacity - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    /// Writes the buffered bytes into the cache, where every reader sees them. Does not make
    /// them durable (no `fsync`): see [`Writer::sync_all`].
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    /// Flushes (see [`poll_flush`](Self::poll_flush)); does not `fsync` and does not close
    /// the file. The writer stays usable.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let lost = self.buf.len() + self.in_flight;
        if lost > 0 {
            tracing::warn!(
                path = %self.file.path().display(),
                offset = self.pos,
                bytes = lost,
                "uringcache::Writer dropped before its buffered bytes were flushed; they are lost \
                 (call flush or shutdown first)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_static<T: Send + Unpin + 'static>() {}

    #[test]
    fn adapters_are_send_unpin_static() {
        assert_send_static::<Reader>();
        assert_send_static::<Writer>();
    }
}
