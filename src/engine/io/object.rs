//! Object storage: inputs and outputs named by URL instead of path.
//!
//! `s3://bucket/key` (also `s3a://`), `gs://bucket/key` and `az://container/key` (also
//! `abfs://`, `abfss://`, `azure://`, `adl://`) go through the [`object_store`] crate (Apache
//! Arrow's), which owns the protocols, signing, retries and credentials. Credentials and
//! endpoints come from the environment variables each cloud's own tools read, via the builders'
//! `from_env`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible server: MinIO, moto, Ceph; with
//! `AWS_ALLOW_HTTP=true` for plain http), `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, … and, without keys, the platform's instance credentials.
//! `file:///abs/path` URLs name local files and are read and written as paths (memory-mapped,
//! renamed into place), which is what a local file system does best.
//!
//! How each kind of file travels:
//! - **Vector inputs** (`.npy`, `.fvecs`, …) are read in place with ranged GETs: the header
//!   first, then the batches of rows through 64 MiB windows (larger ones in concurrent 64 MiB
//!   pieces), the next window fetched in the background while the current one is added
//!   ([`RangeReader`]). A task reads only its slice; a training sample reads only its rows
//!   (coalesced across gaps below 64 KiB, [`RangeReader::read_many`]).
//! - **Index inputs** (the trained index of `add --task`, the parts of `merge`) are downloaded,
//!   with their sidecar and metadata table, to a temporary directory
//!   ([`LocalCopy`](crate::engine::output::LocalCopy)): FAISS reads indices from files.
//! - **Outputs** are written to a temporary directory and then uploaded
//!   ([`StagedOutput`](crate::engine::output::StagedOutput)): each object with a multipart
//!   upload that becomes visible only when complete, the sidecar (which records the index's
//!   CRC-32) last, so no reader ever sees a partial object under the final name.
//!
//! Temporary files go to `$TMPDIR` (default `/tmp`), which must have room for them.
//! Globs (`*`, `?`, `[…]`) in the key of an input URL are expanded by listing the prefix before
//! the first wildcard ([`expand`]); local globs that the shell did not expand (quoted, or in a
//! Kubernetes `args:` list) are expanded the same way.

use crate::engine::error::{stopped, Error, ErrorKind, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// URL schemes served by an object store.
const SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl"];

/// Bytes per part of a multipart upload (S3 allows 5 MiB … 5 GiB per part, 10,000 parts).
const PART_BYTES: usize = 16 << 20;

/// Uploads of parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Longer reads are split into concurrent GETs of this many bytes: one connection to S3 (or an
/// S3-compatible server) carries far less than several, which is why AWS's own clients
/// download in parallel ranged parts.
const SPLIT_BYTES: u64 = 64 << 20;

/// One version of an object: every read asks for its ETag (`If-Match`), so an object replaced
/// while a task reads it fails the read instead of mixing two versions' bytes.
#[derive(Clone)]
struct Version {
    store: Arc<dyn ObjectStore>,
    key: Key,
    etag: Option<String>,
}

/// `range` of `v`, in one GET.
async fn get_one(v: &Version, range: Range<u64>) -> object_store::Result<Bytes> {
    let opts = object_store::GetOptions {
        range: Some(object_store::GetRange::Bounded(range)),
        if_match: v.etag.clone(),
        ..Default::default()
    };
    v.store.get_opts(&v.key, opts).await?.bytes().await
}

/// `range` of `v`, in concurrent GETs of [`SPLIT_BYTES`] when it is longer.
async fn fetch(v: Version, range: Range<u64>) -> object_store::Result<Bytes> {
    if range.end - range.start <= SPLIT_BYTES {
        return get_one(&v, range).await;
    }
    let pieces = (range.start..range.end).step_by(SPLIT_BYTES as usize).map(|a| a..(a + SPLIT_BYTES).min(range.end));
    let parts: Vec<Bytes> =
        futures::stream::iter(pieces.map(|r| get_one(&v, r))).buffered(PARTS_IN_FLIGHT).try_collect().await?;
    let mut out = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
    for p in parts {
        out.extend_from_slice(&p);
    }
    Ok(out.freeze())
}

/// The runtime that drives the object store's async client from our synchronous code: two
/// worker threads, so a prefetch makes progress while the calling thread is in FAISS.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faissx-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the object-storage client: {e}")))
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// Whether `p` is an object-store URL (`s3://…`, `gs://…`, `az://…`, …), not a local path.
pub fn is_url(p: &Path) -> bool {
    p.to_str().and_then(|s| s.split_once("://")).is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// `p` as a local path: a `file://` URL becomes its path; anything else is returned as is.
///
/// Errors: `InvalidInput` for a `file://` URL that is not an absolute local path.
pub fn local_path(p: &Path) -> Result<PathBuf> {
    match p.to_str() {
        Some(s) if s.starts_with("file://") => url::Url::parse(s)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| Error::invalid(format!("{s}: not a local file URL (expected file:///absolute/path)"))),
        _ => Ok(p.to_path_buf()),
    }
}

/// One object: a store (shared by every object of one bucket) and a key in it.
#[derive(Clone)]
pub struct Object {
    store: Arc<dyn ObjectStore>,
    key: Key,
    url: String,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Object {
    /// The object named by `url` (see [`is_url`]). Stores are built once per bucket and reused.
    ///
    /// Errors: `InvalidInput` for a malformed URL or an unsupported scheme; `Auth`/`Io` when
    /// the store's client cannot be configured from the environment.
    pub fn open(url: &Path) -> Result<Object> {
        let s = url.to_str().ok_or_else(|| Error::invalid(format!("{}: URL is not UTF-8", url.display())))?;
        let (base, raw_key) = split_url(s)?;
        // The key is the URL's text after the bucket, as written: not URL-decoded, and `?` or
        // `#` in it are part of the key (a glob's wildcard, a file name), not a query.
        let key = Key::parse(raw_key).map_err(|e| Error::invalid(format!("{s}: not a valid object key ({e})")))?;
        let bucket = base.trim_end_matches('/');
        let parsed = url::Url::parse(bucket).map_err(|e| Error::invalid(format!("{s}: not a valid URL ({e})")))?;
        let (scheme, _) = ObjectStoreScheme::parse(&parsed).map_err(|e| Error::invalid(format!("{s}: {e}")))?;
        static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
        let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        let store = match stores.get(bucket) {
            Some(s) => s.clone(),
            None => {
                let store = build_store(scheme, bucket).map_err(|e| failure(s, e))?;
                stores.insert(bucket.to_string(), store.clone());
                store
            }
        };
        Ok(Object { store, url: format!("{base}{key}"), key })
    }

    /// The URL (`scheme://bucket/key`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object at `key` in the same store.
    fn sibling(&self, key: Key) -> Object {
        let base = self.url.strip_suffix(self.key.as_ref()).unwrap_or(&self.url);
        Object { store: self.store.clone(), url: format!("{base}{key}"), key }
    }

    /// The object whose key is this one's plus `suffix` (a sidecar: `.meta.json`).
    pub fn with_suffix(&self, suffix: &str) -> Object {
        let key = format!("{}{suffix}", self.key);
        self.sibling(Key::parse(&key).unwrap_or_else(|_| Key::from(key)))
    }

    /// Whether the object exists.
    pub fn exists(&self) -> Result<bool> {
        match block_on(self.store.head(&self.key))? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failure(&self.url, e)),
        }
    }

    /// The whole object.
    pub fn get(&self) -> Result<Bytes> {
        let store = self.store.clone();
        let key = self.key.clone();
        block_on(async move { store.get(&key).await?.bytes().await })?.map_err(|e| failure(&self.url, e))
    }

    /// Stream the object into the new local file `dest`, checking `stop` (Ctrl-C, SIGTERM)
    /// between chunks.
    ///
    /// Errors: `NotFound` naming the URL; `Auth`; `Io` naming the URL or `dest`; `Interrupted`
    /// once `stop` is set.
    pub fn download(&self, dest: &Path, stop: &AtomicBool) -> Result<u64> {
        let store = self.store.clone();
        let key = self.key.clone();
        let mut file = std::fs::File::create(dest).map_err(|e| Error::io(dest, e))?;
        let mut written = 0u64;
        let r: Result<()> = block_on(async {
            let mut stream = store.get(&key).await.map_err(|e| failure(&self.url, e))?.into_stream();
            while let Some(chunk) = stream.try_next().await.map_err(|e| failure(&self.url, e))? {
                stopped(stop)?;
                file.write_all(&chunk).map_err(|e| Error::io(dest, e))?;
                written += chunk.len() as u64;
            }
            Ok(())
        })?;
        r?;
        file.sync_all().map_err(|e| Error::io(dest, e))?;
        Ok(written)
    }

    /// Upload the local file `src` as this object: one PUT for a small file, a multipart
    /// upload of 16 MiB parts otherwise. Either way the object appears (or is replaced)
    /// only when the whole file has arrived; a failed or interrupted (`stop`, checked between
    /// parts) multipart upload is aborted.
    ///
    /// Errors: `Io` naming `src` or the URL; `Auth`; `Interrupted`.
    pub fn upload(&self, src: &Path, stop: &AtomicBool) -> Result<u64> {
        let mut file = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
        let len = file.metadata().map_err(|e| Error::io(src, e))?.len();
        if len as usize <= PART_BYTES {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).map_err(|e| Error::io(src, e))?;
            block_on(self.store.put(&self.key, buf.into()))?.map_err(|e| failure(&self.url, e))?;
            return Ok(len);
        }
        let r: Result<()> = block_on(async {
            let upload = self.store.put_multipart(&self.key).await.map_err(|e| failure(&self.url, e))?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                if let Err(e) = stopped(stop) {
                    let _ = w.abort().await;
                    return Err(e);
                }
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(Error::io(src, e));
                    }
                };
                w.write(&buf[..n]);
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = w.abort().await;
                    return Err(failure(&self.url, e));
                }
            }
            w.finish().await.map(|_| ()).map_err(|e| failure(&self.url, e))
        })?;
        r.map(|()| len)
    }

    /// Delete the object (a missing one is not an error).
    pub fn delete(&self) -> Result<()> {
        match block_on(self.store.delete(&self.key))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failure(&self.url, e)),
        }
    }

    /// Keys under `prefix` (a key prefix, not a glob), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<Key>> {
        let store = self.store.clone();
        let prefix = (!prefix.is_empty()).then(|| Key::parse(prefix).unwrap_or_else(|_| Key::from(prefix)));
        let mut keys: Vec<Key> =
            block_on(async move { store.list(prefix.as_ref()).map_ok(|m| m.location).try_collect::<Vec<_>>().await })?
                .map_err(|e| failure(&self.url, e))?;
        keys.sort();
        Ok(keys)
    }
}

/// The client for `scheme` at `bucket` (`s3://name`), configured from the environment.
fn build_store(scheme: ObjectStoreScheme, bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    // A few quick retries: an unreachable endpoint should fail in seconds, not the crate's
    // default three minutes.
    let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..Default::default() };
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            Arc::new(object_store::aws::AmazonS3Builder::from_env().with_url(bucket).with_retry(retry).build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(bucket).with_retry(retry).build()?,
        ),
        ObjectStoreScheme::MicrosoftAzure => {
            Arc::new(object_store::azure::MicrosoftAzureBuilder::from_env().with_url(bucket).with_retry(retry).build()?)
        }
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("{other:?} URLs are not object storage here").into(),
            })
        }
    })
}

/// Our error for a failed object-store call on `url`: one line, naming the URL, with the
/// credentials' environment variables when access was refused.
fn failure(url: &str, e: object_store::Error) -> Error {
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let more = s.to_string();
        if !detail.contains(&more) {
            detail = format!("{detail}: {more}");
        }
        src = s.source();
    }
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    let creds = "credentials come from AWS_*, GOOGLE_* or AZURE_* environment variables";
    match e {
        object_store::Error::NotFound { .. } => Error::new(ErrorKind::NotFound, format!("{url}: no such object")),
        object_store::Error::Precondition { .. } => Error::new(
            ErrorKind::Conflict,
            format!("{url}: the object changed while it was being read (its ETag no longer matches); run again"),
        ),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            Error::new(ErrorKind::Auth, format!("{url}: access refused ({detail}); {creds}"))
        }
        _ if detail.to_ascii_lowercase().contains("credential")
            || METADATA_PATHS.iter().any(|p| detail.contains(p)) =>
        {
            Error::new(ErrorKind::Auth, format!("{url}: no usable credentials ({detail}); {creds}"))
        }
        _ => Error::new(ErrorKind::Io, format!("{url}: {detail}")),
    }
}

/// `scheme://bucket/key` as (`scheme://bucket/`, `key`), both as written.
///
/// Errors: `InvalidInput` for a URL without a bucket.
fn split_url(s: &str) -> Result<(&str, &str)> {
    let after = s.find("://").map(|i| i + 3).unwrap_or(0);
    let slash = s[after..].find('/').map_or(s.len(), |i| after + i + 1);
    if slash <= after + 1 {
        return Err(Error::invalid(format!("{s}: no bucket in the URL (expected scheme://bucket/key)")));
    }
    Ok((&s[..slash.min(s.len())], s.get(slash..).unwrap_or("")))
}

/// Paths of the cloud instance-metadata services that hand out credentials when no keys are in
/// the environment (AWS IMDS, GCP metadata server, Azure IMDS): a failure there means no
/// credentials, whatever the transport error says.
const METADATA_PATHS: [&str; 4] =
    ["/latest/api/token", "/latest/meta-data/", "computeMetadata/", "/metadata/identity/"];

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand the input arguments `args` in order: a URL whose key holds `*`, `?` or `[…]` becomes
/// the matching objects (listed under the prefix before the first wildcard, sorted by key); a
/// local path with a wildcard that names no file becomes the matching files (sorted); `file://`
/// URLs become paths; anything else is kept.
///
/// Errors: `NotFound` naming a pattern that matches nothing; `InvalidInput` for a bad pattern;
/// those of listing.
pub fn expand(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        let Some(s) = a.to_str() else {
            out.push(a.clone());
            continue;
        };
        let bad = |e: glob::PatternError| Error::invalid(format!("{s}: bad pattern ({e})"));
        let none = || Error::new(ErrorKind::NotFound, format!("{s}: no file matches"));
        if is_url(a) {
            let (base, written) = split_url(s)?;
            if !has_glob(written) {
                out.push(a.clone());
                continue;
            }
            let obj = Object::open(Path::new(base))?;
            let pattern = glob::Pattern::new(written).map_err(bad)?;
            let first = written.find(['*', '?', '[']).unwrap_or(written.len());
            let prefix = &written[..written[..first].rfind('/').map_or(0, |i| i + 1)];
            let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
            let found: Vec<PathBuf> = obj
                .list(prefix.trim_end_matches('/'))?
                .into_iter()
                .filter(|k| pattern.matches_with(k.as_ref(), opts))
                .map(|k| PathBuf::from(obj.sibling(k).url))
                .collect();
            if found.is_empty() {
                return Err(none());
            }
            out.extend(found);
        } else {
            let p = local_path(a)?;
            let ps = p.to_string_lossy().into_owned();
            if has_glob(&ps) && !p.exists() {
                let mut found = glob::glob(&ps)
                    .map_err(bad)?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::io(e.path(), std::io::Error::new(e.error().kind(), e.error().to_string())))?;
                found.sort();
                if found.is_empty() {
                    return Err(none());
                }
                out.extend(found);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// `name` inside the directory `dir`, a local path or a URL prefix (`s3://idx/parts/`).
pub fn join(dir: &Path, name: &str) -> PathBuf {
    match dir.to_str() {
        Some(s) if is_url(dir) => PathBuf::from(format!("{}/{name}", s.trim_end_matches('/'))),
        _ => dir.join(name),
    }
}

/// A new temporary directory in `$TMPDIR` for staged downloads and uploads (removed on drop).
///
/// Errors: `Io` naming the temp directory.
pub fn temp_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(".faissx-object-").tempdir().map_err(|e| Error::io(&std::env::temp_dir(), e))
}

impl Object {
    /// The last segment of the object's key (its file name).
    pub fn file_name(&self) -> &str {
        self.key.filename().unwrap_or("object")
    }
}

/// Ranged reads of one object for a [`VectorFile`](super::VectorFile).
///
/// Small reads (a header) are fetched as asked; scattered ones (a sample's rows) are coalesced
/// only across small gaps ([`RangeReader::read_many`]). Reads of at least 2 MiB (batches of
/// rows, read front to back) go through windows of `max(64 MiB, the first such read rounded up
/// to a power of two)` laid from the first such read (or from the start of the span given to
/// [`RangeReader::advise`]) and never past the span's end: a read is served from the window(s)
/// it overlaps, and using a window starts fetching the next one in the background, so the
/// network overlaps the caller's work and each GET is large (servers charge per request: moto,
/// for one, copies the whole object for each). At most two windows and one read's bytes are
/// held at once; a read of the whole object bypasses the windows.
pub struct RangeReader {
    obj: Object,
    version: Version,
    len: u64,
    state: Mutex<Windows>,
    fetched: std::sync::atomic::AtomicU64,
}

/// Reads below this many bytes bypass the windows.
const WINDOW_MIN: usize = 2 << 20;

/// The smallest window.
const WINDOW_BYTES: u64 = 64 << 20;

/// Scattered ranges closer than this are fetched in one request (the bytes between them are
/// read and dropped).
const COALESCE_GAP: u64 = 64 << 10;

/// The longest request that coalescing builds.
const COALESCE_MAX: u64 = 16 << 20;

/// The window in use and the next one, being fetched.
#[derive(Default)]
struct Windows {
    /// Window size, fixed by the first windowed read.
    size: u64,
    /// Where window 0 starts and where the last one ends (the span the caller will read).
    span: Option<Range<u64>>,
    /// Window number and bytes.
    current: Option<(u64, Bytes)>,
    /// Window number and its fetch.
    ahead: Option<(u64, tokio::task::JoinHandle<object_store::Result<Bytes>>)>,
}

impl RangeReader {
    /// A reader of the object at `url`.
    ///
    /// Errors: `NotFound` naming the URL; `Auth` for refused or missing credentials; `Io`.
    pub fn open(url: &Path) -> Result<RangeReader> {
        RangeReader::of(Object::open(url)?)
    }

    fn of(obj: Object) -> Result<RangeReader> {
        let meta = block_on(obj.store.head(&obj.key))?.map_err(|e| failure(&obj.url, e))?;
        let version = Version { store: obj.store.clone(), key: obj.key.clone(), etag: meta.e_tag };
        let fetched = std::sync::atomic::AtomicU64::new(0);
        Ok(RangeReader { obj, version, len: meta.size, state: Mutex::new(Windows::default()), fetched })
    }

    /// Object size in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes requested from the store so far, read-ahead included (for tests and benchmarks:
    /// what a task downloads).
    pub fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bytes `span` are what the caller reads next, front to back (a task's slice of the
    /// file): windows start at its start and stop at its end, so no byte outside it is fetched.
    pub fn advise(&self, span: Range<usize>) {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, h)) = w.ahead.take() {
            h.abort();
        }
        w.current = None;
        w.span = Some(span.start as u64..(span.end as u64).min(self.len));
    }

    /// Fetch `range` now, counting the bytes.
    fn get(&self, range: Range<u64>) -> Result<Bytes> {
        let b = block_on(fetch(self.version.clone(), range))?.map_err(|e| failure(&self.obj.url, e))?;
        self.fetched.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(b)
    }

    /// Bytes `range` (within `len`).
    ///
    /// Errors: those of a ranged GET (`Io`, `Auth`), naming the URL.
    pub fn read(&self, range: Range<usize>) -> Result<Bytes> {
        let r = range.start as u64..range.end as u64;
        if r.is_empty() {
            return Ok(Bytes::new());
        }
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let span = w.span.clone().unwrap_or(r.start..self.len);
        // Window `k` of `size` bytes within the span.
        let span_of = |k: u64, size: u64| span.start + k * size..(span.start + (k + 1) * size).min(span.end);
        // Once windows are in use, a short read (the end of a slice) goes through them too.
        let in_use = w.current.as_ref().is_some_and(|(k, _)| span_of(*k, w.size).start <= r.start);
        let whole = r.start == 0 && r.end == self.len;
        if (range.len() < WINDOW_MIN && !in_use) || whole || r.start < span.start || r.end > span.end {
            drop(w);
            return self.get(r);
        }
        if w.size == 0 {
            w.size = WINDOW_BYTES.max((range.len() as u64).next_power_of_two());
        }
        w.span = Some(span.clone());
        let size = w.size;
        let window = |k: u64| span_of(k, size);
        let (first, last) = ((r.start - span.start) / size, (r.end - 1 - span.start) / size);
        let mut out = (first != last).then(|| bytes::BytesMut::with_capacity(range.len()));
        let mut single = None;
        for k in first..=last {
            let bytes = match w.current.take() {
                Some((c, b)) if c == k => b,
                _ => match w.ahead.take() {
                    Some((a, h)) if a == k => match block_on(h)? {
                        Ok(fetched) => fetched,
                        Err(e) => Err(object_store::Error::JoinError { source: e }),
                    }
                    .map_err(|e| failure(&self.obj.url, e))?,
                    other => {
                        if let Some((_, h)) = other {
                            h.abort();
                        }
                        self.get(window(k))?
                    }
                },
            };
            let span_k = window(k);
            let from = (r.start.max(span_k.start) - span_k.start) as usize;
            let to = (r.end.min(span_k.end) - span_k.start) as usize;
            match &mut out {
                Some(buf) => buf.extend_from_slice(&bytes[from..to]),
                None => single = Some(bytes.slice(from..to)),
            }
            w.current = Some((k, bytes));
        }
        // Read ahead: the window after the last one used, if the span goes on.
        let next = last + 1;
        if window(next).start < span.end && w.ahead.as_ref().is_none_or(|(a, _)| *a != next) {
            if let Some((_, h)) = w.ahead.take() {
                h.abort();
            }
            let ahead = window(next);
            self.fetched.fetch_add(ahead.end - ahead.start, std::sync::atomic::Ordering::Relaxed);
            let handle = runtime()?.spawn(fetch(self.version.clone(), ahead));
            w.ahead = Some((next, handle));
        }
        Ok(match out {
            Some(buf) => buf.freeze(),
            None => single.unwrap_or_default(),
        })
    }

    /// Several ranges (sorted, not overlapping), e.g. a sample's rows: ranges less than
    /// 64 KiB apart are fetched together, in requests of at most 16 MiB, several at once.
    ///
    /// Errors: those of a ranged GET, naming the URL.
    pub fn read_many(&self, ranges: &[Range<usize>]) -> Result<Vec<Bytes>> {
        let mut groups: Vec<(Range<u64>, Vec<Range<u64>>)> = Vec::new();
        for r in ranges.iter().map(|r| r.start as u64..r.end as u64) {
            match groups.last_mut() {
                Some((g, members)) if r.start <= g.end + COALESCE_GAP && r.end - g.start <= COALESCE_MAX => {
                    g.end = g.end.max(r.end);
                    members.push(r);
                }
                _ => groups.push((r.clone(), vec![r])),
            }
        }
        let v = self.version.clone();
        let spans: Vec<Range<u64>> = groups.iter().map(|(g, _)| g.clone()).collect();
        let fetched: Vec<Bytes> = block_on(async move {
            futures::stream::iter(spans.into_iter().map(|g| {
                let v = v.clone();
                async move { get_one(&v, g).await }
            }))
            .buffered(PARTS_IN_FLIGHT * 2)
            .try_collect::<Vec<_>>()
            .await
        })?
        .map_err(|e| failure(&self.obj.url, e))?;
        let mut out = Vec::with_capacity(ranges.len());
        for ((g, members), bytes) in groups.iter().zip(fetched) {
            self.fetched.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            out.extend(members.iter().map(|m| bytes.slice((m.start - g.start) as usize..(m.end - g.start) as usize)));
        }
        Ok(out)
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        if let Some((_, h)) = self.state.get_mut().ok().and_then(|w| w.ahead.take()) {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert!(is_url(Path::new("s3://b/k.npy")));
        assert!(is_url(Path::new("gs://b/k")));
        assert!(is_url(Path::new("az://c/k")));
        assert!(!is_url(Path::new("file:///tmp/x")));
        assert!(!is_url(Path::new("data/s3://x")));
        assert!(!is_url(Path::new("x.npy")));
        assert_eq!(local_path(Path::new("file:///tmp/a%20b.npy")).unwrap(), Path::new("/tmp/a b.npy"));
        assert!(local_path(Path::new("file://host/x")).is_err());
        assert_eq!(join(Path::new("s3://idx/parts/"), "p.index"), Path::new("s3://idx/parts/p.index"));
        assert_eq!(join(Path::new("s3://idx/parts"), "p.index"), Path::new("s3://idx/parts/p.index"));
        assert_eq!(join(Path::new("parts"), "p.index"), Path::new("parts/p.index"));
    }

    #[test]
    fn windowed_reads_return_the_bytes_asked_for() {
        // An in-memory store and small windows, so reads straddle windows and skip around.
        let data: Vec<u8> = (0..10_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let key = Key::from("x.npy");
        block_on(store.put(&key, data.clone().into())).unwrap().unwrap();
        let obj = Object { store, key, url: "memory:///x.npy".into() };
        let reader = RangeReader::of(obj).unwrap();
        reader.state.lock().unwrap().size = 4 << 20;
        let mut reads: Vec<Range<usize>> = (0..4).map(|i| 100 + i * 3_000_000..100 + (i + 1) * 3_000_000).collect();
        reads.retain(|r| r.end <= data.len());
        reads.extend([9_000_000..10_000_000, 0..3_000_000, 5..6, 4_194_300..4_194_310, 2_500_000..9_999_999]);
        for r in reads {
            assert_eq!(&reader.read(r.clone()).unwrap()[..], &data[r.clone()], "{r:?}");
        }
        let rs = [10..20, 30..40, 5_000_000..5_000_100, 9_999_990..10_000_000];
        let many = reader.read_many(&rs).unwrap();
        for (r, got) in rs.iter().zip(&many) {
            assert_eq!(&got[..], &data[r.clone()], "{r:?}");
        }
        // A task's slice: nothing outside it is fetched, read-ahead included.
        let before = reader.fetched();
        reader.advise(3_000_000..7_000_000);
        for start in (3_000_000..7_000_000).step_by(2_500_000) {
            let r = start..(start + 2_500_000).min(7_000_000);
            assert_eq!(&reader.read(r.clone()).unwrap()[..], &data[r.clone()], "{r:?}");
        }
        assert_eq!(reader.fetched() - before, 4_000_000, "only the advised span is fetched");
        // A span of several windows: read-ahead stops at its end, every byte fetched once.
        let before = reader.fetched();
        reader.advise(1_000_000..data.len());
        for start in (1_000_000..data.len()).step_by(2_500_000) {
            let r = start..(start + 2_500_000).min(data.len());
            assert_eq!(&reader.read(r.clone()).unwrap()[..], &data[r.clone()], "{r:?}");
        }
        assert_eq!(reader.fetched() - before, 9_000_000, "each byte of the span fetched once");
        // Scattered reads fetch little more than their bytes.
        let before = reader.fetched();
        let rows: Vec<Range<usize>> = (0..100).map(|i| i * 100_000..i * 100_000 + 64).collect();
        let got = reader.read_many(&rows).unwrap();
        assert_eq!(&got[57][..], &data[5_700_000..5_700_064]);
        assert_eq!(reader.fetched() - before, 6400, "a sample reads its rows, not the file");
        // The object replaced under the reader: reads fail, naming it, instead of mixing versions.
        block_on(reader.obj.store.put(&reader.obj.key, vec![0u8; 10_000_000].into())).unwrap().unwrap();
        let e = reader.read(0..100).unwrap_err();
        assert!(e.to_string().contains("memory:///x.npy: the object changed while it was being read"), "{e}");
    }

    #[test]
    fn local_globs_expand_sorted_and_fail_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.npy", "a.npy", "c.txt"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let pat = dir.path().join("*.npy");
        let got = expand(&[pat, dir.path().join("c.txt")]).unwrap();
        assert_eq!(got, [dir.path().join("a.npy"), dir.path().join("b.npy"), dir.path().join("c.txt")]);
        let e = expand(&[dir.path().join("*.fvecs")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("*.fvecs: no file matches"), "{e}");
    }
}
