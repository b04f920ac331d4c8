//! How to open a file ([`OpenOptions`], mirroring `std::fs::OpenOptions`) and the verify
//! hook a file may carry ([`VerifyFn`]). The open itself is [`File`](crate::File)'s.

use std::sync::Arc;

/// A page check run on every page filled from the device: `Ok` accepts the page, `Err` rejects
/// it with a message. Arguments: the page index and the page's bytes (exactly one page; the part
/// past end of file is zeros). See [`OpenOptions::verify`].
pub type VerifyFn = Arc<dyn Fn(u64, &[u8]) -> Result<(), String> + Send + Sync>;

/// How to open a file; mirrors `std::fs::OpenOptions`.
#[derive(Clone, Default)]
pub struct OpenOptions {
    mode: OpenMode,
    verify: Option<VerifyFn>,
}

/// The access and creation flags of an [`OpenOptions`], as a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpenMode {
    pub(crate) read: bool,
    pub(crate) write: bool,
    pub(crate) append: bool,
    pub(crate) create: bool,
    pub(crate) create_new: bool,
    pub(crate) truncate: bool,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("read", &self.mode.read)
            .field("write", &self.mode.write)
            .field("append", &self.mode.append)
            .field("create", &self.mode.create)
            .field("create_new", &self.mode.create_new)
            .field("truncate", &self.mode.truncate)
            .field("verify", &self.verify.as_ref().map(|_| "Fn(u64, &[u8])"))
            .finish()
    }
}

impl OpenOptions {
    /// No access; set at least one of [`read`](Self::read) and [`write`](Self::write).
    pub fn new() -> Self {
        Self::default()
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.mode.read = read;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.mode.write = write;
        self
    }

    /// Open for appending, as `std::fs::OpenOptions::append`: implies [`write`](Self::write)
    /// access (a handle opened with only `append(true)` may write), and cannot be combined
    /// with [`truncate`](Self::truncate) (`InvalidInput`, as in std).
    ///
    /// The cache's writes are positional, so the flag does not move them:
    /// [`File::write_all_at`](crate::File::write_all_at) writes where it is told, with or without it. To append, write at
    /// the end, `file.write_all_at(buf, file.len())`; or use [`File::writer`](crate::File::writer), which on a
    /// handle opened with `append(true)` starts at the end of the file (`len()` when the writer
    /// is made, whatever offset is passed) and goes on from there. Unlike `O_APPEND` this is not
    /// atomic: two handles appending at once can pick the same end and overwrite each other.
    ///
    /// ```
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("log");
    /// # std::fs::write(&path, b"first\n")?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let log = cache.open(&path, uringcache::OpenOptions::new().append(true)).await?;
    /// let mut w = log.writer(0); // on an append handle: from the end
    /// w.write_all(b"second\n").await?;
    /// w.sync_all().await?;
    /// log.write_all_at(b"third\n", log.len()).await?;
    /// log.sync_all().await?;
    /// assert_eq!(std::fs::read(&path)?, b"first\nsecond\nthird\n");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.mode.append = append;
        self
    }

    /// Create the file if it does not exist (needs `write`).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.mode.create = create;
        self
    }

    /// Create the file, failing with [`io::ErrorKind::AlreadyExists`](std::io::ErrorKind::AlreadyExists) if it exists (`O_EXCL`;
    /// needs `write`). Implies [`create`](Self::create), whatever that is set to.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("new.db");
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let mut opts = uringcache::OpenOptions::new();
    /// opts.read(true).write(true).create_new(true);
    /// let file = cache.open(&path, &opts).await?;
    /// let again = cache.open(&path, &opts).await.unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    /// # drop(file);
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.mode.create_new = create_new;
        self
    }

    /// Cut the file to length 0 on open (needs `write`).
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.mode.truncate = truncate;
        self
    }

    /// Checks every page read from the device before any reader sees it (the kernel's
    /// `ext2_check_page`): `hook(index, bytes)` runs once per fill, in the read's completion,
    /// with the whole page (zeros past end of file). `Err(message)` rejects the page: it is
    /// not left in the cache as valid, and the read that needed it fails with
    /// [`io::ErrorKind::InvalidData`](std::io::ErrorKind::InvalidData) naming the file, the page and `message`. A later read
    /// reads the page from the device again and runs the hook again. Pages that are never read
    /// from the device are not checked: pages written whole, pages past end of file, pages
    /// made by [`File::page_mut`](crate::File::page_mut) past the end. A panic in the hook counts as a rejection.
    ///
    /// The hook belongs to the file, not to the handle: every handle of the file (in this
    /// cache) shares it. Opening with a hook installs it, replacing the hook of an earlier
    /// open (the newest hook wins); opening without one keeps whatever hook the file has. Pages
    /// already cached when a hook is installed are not checked again, so install it on the
    /// first open. The hook runs on the I/O completion thread: keep it short (a checksum), and
    /// never block in it.
    ///
    /// A page format whose last 4 bytes hold the sum of the others, checked on every fill:
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("f");
    /// let sum = |page: &[u8]| page[..4092].iter().map(|&b| u32::from(b)).sum::<u32>();
    /// # // Page 0 carries its right sum, page 1 a wrong one.
    /// # let mut data = vec![7u8; 8192];
    /// # let good = sum(&data[..4096]).to_le_bytes();
    /// # data[4092..4096].copy_from_slice(&good);
    /// # data[8188..].copy_from_slice(&[0; 4]);
    /// # std::fs::write(&path, &data)?;
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// # let cache = uringcache::Cache::builder().memory_limit(1 << 20).build()?;
    /// let mut opts = uringcache::OpenOptions::new();
    /// opts.read(true).verify(move |index, page| {
    ///     let stored = u32::from_le_bytes(page[4092..].try_into().unwrap());
    ///     if stored != sum(page) {
    ///         return Err(format!("page {index}: bad checksum {stored:#x}"));
    ///     }
    ///     Ok(())
    /// });
    /// let file = cache.open(&path, &opts).await?;
    /// let mut buf = [0u8; 16];
    /// file.read_exact_at(&mut buf, 0).await?; // page 0 checks out
    /// let err = file.read_exact_at(&mut buf, 4096).await.unwrap_err(); // page 1 does not
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    /// assert!(err.to_string().contains("bad checksum"), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// # })
    /// # }
    /// ```
    pub fn verify(
        &mut self,
        hook: impl Fn(u64, &[u8]) -> Result<(), String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.verify = Some(Arc::new(hook));
        self
    }

    /// The flags, for the open.
    pub(crate) fn mode(&self) -> OpenMode {
        self.mode
    }

    /// The verify hook, if one was given.
    pub(crate) fn verify_hook(&self) -> Option<&VerifyFn> {
        self.verify.as_ref()
    }
}
