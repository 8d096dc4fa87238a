//! Index files in and out of a running server, in chunks (docs/protocol.md §5, "Import and
//! export"): an *upload* session spools the parts of an index file to disk as they arrive
//! (`upload_begin`, `upload_chunk`), for `import_index` to check and swap in; an *export*
//! session holds a point-in-time copy of a served index's files for `export_chunk` to read.
//!
//! The server never holds more than the chunk in flight: parts are appended to files as they
//! come, each chunk checked against its CRC-32, and read back by offset. Spool folders live in
//! the data directory's `.tmp` (emptied at start-up, on the same file system, so an import is
//! a rename), or in the system temp folder without `--data-dir`. A session idle for longer
//! than the server's transfer timeout is dropped with its files, so an interrupted upload
//! or download leaves nothing behind.

use crate::engine::error::{Error, ErrorKind, IoContext, Result};
use crate::engine::index::meta::Checksum;
use crate::engine::index::IndexMeta;
use crate::engine::protocol::{Msg, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest chunk of an upload or download, in bytes.
pub const MAX_CHUNK_BYTES: u64 = 16 << 20;

/// Chunk size the server suggests (bytes).
pub const CHUNK_BYTES: u64 = 4 << 20;

/// Open sessions per tenant.
pub const MAX_SESSIONS_PER_TENANT: usize = 8;

/// The parts of an index in transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The FAISS index file.
    Index,
    /// faissx's sidecar (`<index>.meta.json`), optional.
    Sidecar,
    /// Per-vector metadata (the server's msgpack format), optional.
    Metadata,
}

impl Part {
    /// Every part, in transfer order.
    pub const ALL: [Part; 3] = [Part::Index, Part::Sidecar, Part::Metadata];

    /// The part's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Part::Index => "index",
            Part::Sidecar => "sidecar",
            Part::Metadata => "metadata",
        }
    }

    /// The part named `s`, or an `INVALID_ARGUMENT` error.
    pub fn parse(s: &str) -> Result<Part> {
        Part::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::invalid(format!("part {s:?} is not one of \"index\", \"sidecar\", \"metadata\"")))
    }

    /// The file of this part in a spool folder (the sidecar beside the index file, where
    /// [`IndexMeta::path_for`] looks for it).
    pub fn path_in(self, dir: &Path) -> PathBuf {
        let index = dir.join("index.faiss");
        match self {
            Part::Index => index,
            Part::Sidecar => IndexMeta::path_for(&index),
            Part::Metadata => dir.join("metadata.msgpack"),
        }
    }
}

/// One part received so far.
struct Received {
    file: File,
    bytes: u64,
    crc: crc32fast::Hasher,
}

/// What a session is for.
enum Kind {
    Upload { parts: HashMap<Part, Received> },
    Export { parts: HashMap<Part, (File, Checksum)> },
}

struct Session {
    tenant: String,
    dir: PathBuf,
    kind: Kind,
    last_used: Instant,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A finished upload, taken out of the session table by `import_index`: its folder (removed
/// on drop) holds `index.faiss` and, if sent, its sidecar and metadata.
pub struct Spooled {
    session: Session,
    /// CRC-32 and size of each part received.
    pub sums: HashMap<Part, Checksum>,
}

impl Spooled {
    /// The spooled file of `part`, if it was sent.
    pub fn path(&self, part: Part) -> Option<PathBuf> {
        self.sums.contains_key(&part).then(|| part.path_in(&self.session.dir))
    }
}

/// The open transfer sessions of a server.
pub struct Transfers {
    root: PathBuf,
    /// Removed on drop when it is the server's own temp folder (no `--data-dir`).
    owned: bool,
    idle: Duration,
    sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// In-memory servers spool under `<temp>/faissx-transfers-<pid>-<unique>`.
const ORPHAN_PREFIX: &str = "faissx-transfers-";

/// Remove the spool folders of in-memory servers that are gone (killed before they could
/// clean up): those whose process id is no longer running.
fn remove_orphans(temp: &Path) {
    let Ok(rd) = std::fs::read_dir(temp) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(ORPHAN_PREFIX)) else { continue };
        let pid = rest.split('-').next().unwrap_or("");
        let alive = pid.parse::<u32>().is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A number unique within this process (the in-memory spool folder's name: the process id
/// before it tells orphans from live servers' folders).
fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Transfers {
    /// Sessions spooled under `spool` (a folder of the data directory), or, with `None`, a
    /// folder of the system's temp directory removed when the server stops. Sessions idle
    /// longer than `idle` are dropped.
    pub fn new(spool: Option<PathBuf>, idle: Duration) -> Result<Transfers> {
        let (root, owned) = match spool {
            Some(dir) => (dir.join("transfers"), false),
            None => {
                remove_orphans(&std::env::temp_dir());
                (std::env::temp_dir().join(format!("{ORPHAN_PREFIX}{}-{}", std::process::id(), next_serial())), true)
            }
        };
        // Created on first use: a server that never transfers leaves nothing behind.
        Ok(Transfers { root, owned, idle, sessions: Mutex::new(HashMap::new()) })
    }

    /// A new folder for spool files (for copies the server makes itself, and sessions).
    pub fn new_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).at(&self.root)?;
        // A random name (`tempfile`): upload and export ids are these names, not guessable.
        let d = tempfile::Builder::new().prefix("t").tempdir_in(&self.root).at(&self.root)?;
        Ok(d.keep())
    }

    /// Drop every session idle for longer than the timeout (with its files).
    pub fn sweep(&self) {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let idle = self.idle;
        map.retain(|_, s| match s.try_lock() {
            Ok(s) => s.last_used.elapsed() <= idle,
            // In use right now: not idle.
            Err(_) => true,
        });
    }

    /// Open sessions of `tenant` (for `health`).
    pub fn open_sessions(&self, tenant: &str) -> usize {
        let map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|s| s.lock().unwrap_or_else(|p| p.into_inner()).tenant == tenant).count()
    }

    fn insert(&self, tenant: &str, kind: Kind, dir: PathBuf) -> Result<String> {
        self.sweep();
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.values().filter(|s| s.try_lock().map(|s| s.tenant == tenant).unwrap_or(true)).count();
        let session = Session { tenant: tenant.to_string(), dir, kind, last_used: Instant::now() };
        if open >= MAX_SESSIONS_PER_TENANT {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{open} transfers of this tenant are open (limit {MAX_SESSIONS_PER_TENANT}): finish or end one first"),
            ));
        }
        // The session's id is its folder's random name.
        let id = session.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        map.insert(id.clone(), Arc::new(Mutex::new(session)));
        Ok(id)
    }

    /// The session `id` of `tenant` (another tenant's session is "not found", like its
    /// indices).
    fn get(&self, tenant: &str, id: &str) -> Result<Arc<Mutex<Session>>> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        let not_found = || {
            Error::new(ErrorKind::NotFound, format!("transfer {id:?} not found (finished, timed out, or never begun)"))
        };
        let s = s.ok_or_else(not_found)?;
        if s.lock().unwrap_or_else(|p| p.into_inner()).tenant != tenant {
            return Err(not_found());
        }
        Ok(s)
    }

    /// `upload_begin`: a new upload session. Reply: `upload_id`, `chunk_bytes`,
    /// `max_chunk_bytes`.
    pub fn begin_upload(&self, tenant: &str) -> Result<Msg> {
        let dir = self.new_dir()?;
        let id = self.insert(tenant, Kind::Upload { parts: HashMap::new() }, dir)?;
        Ok(Msg::default()
            .with("upload_id", id)
            .with("chunk_bytes", CHUNK_BYTES)
            .with("max_chunk_bytes", MAX_CHUNK_BYTES))
    }

    /// `upload_chunk`: append `data` (binary, ≤ [`MAX_CHUNK_BYTES`]) to `part` at `offset`
    /// (which must be the bytes received so far: chunks come in order), after checking it
    /// against `crc32`. A failed write (full disk) ends the session and removes its files.
    /// Reply: `part`, `bytes` (received so far).
    pub fn chunk(&self, tenant: &str, m: &Msg) -> Result<Msg> {
        let id = m.req_str("upload_id")?;
        let part = Part::parse(m.req_str("part")?)?;
        let offset = m.uint("offset")?.ok_or_else(|| Error::invalid("missing field \"offset\""))?;
        let want = m.uint("crc32")?.ok_or_else(|| Error::invalid("missing field \"crc32\" (of the chunk's bytes)"))?;
        let data = match m.get("data") {
            Some(Value::Binary(b)) => b.as_slice(),
            Some(_) => return Err(Error::invalid("field \"data\" must be binary")),
            None => return Err(Error::invalid("missing field \"data\"")),
        };
        if data.len() as u64 > MAX_CHUNK_BYTES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("chunk of {} bytes: at most {MAX_CHUNK_BYTES} per upload_chunk", data.len()),
            ));
        }
        let got = crc32fast::hash(data);
        if u64::from(got) != want {
            return Err(Error::invalid(format!(
                "chunk of {} at offset {offset}: crc32 {got:08x}, the request says {want:08x} (corrupted in transit): send it again",
                part.name()
            )));
        }
        let session = self.get(tenant, id)?;
        let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
        s.last_used = Instant::now();
        let dir = s.dir.clone();
        let Kind::Upload { parts } = &mut s.kind else {
            return Err(Error::invalid(format!("transfer {id:?} is an export: it takes export_chunk")));
        };
        let path = part.path_in(&dir);
        let r = match parts.entry(part) {
            std::collections::hash_map::Entry::Vacant(v) => File::create(&path)
                .at(&path)
                .map(|file| v.insert(Received { file, bytes: 0, crc: crc32fast::Hasher::new() })),
            std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
        };
        let written = r.and_then(|rx| {
            if offset != rx.bytes {
                return Err(Error::invalid(format!(
                    "chunk of {} at offset {offset}, but {} bytes were received: send chunks in order",
                    part.name(),
                    rx.bytes
                )));
            }
            rx.file.write_all(data).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "the server could not store the {} chunk at offset {offset}: {e}; the upload is dropped",
                        part.name()
                    ),
                )
            })?;
            rx.crc.update(data);
            rx.bytes += data.len() as u64;
            Ok(rx.bytes)
        });
        match written {
            Ok(bytes) => Ok(Msg::default().with("part", part.name()).with("bytes", bytes)),
            Err(e) => {
                if e.kind() != ErrorKind::InvalidInput {
                    // The disk refused the bytes: nothing of this upload is kept.
                    drop(s);
                    self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                }
                Err(e)
            }
        }
    }

    /// Take a finished upload of `tenant` out of the table (for `import_index`): its parts are
    /// fsynced and checksummed; the index part must be there.
    pub fn take_upload(&self, tenant: &str, id: &str) -> Result<Spooled> {
        let session = self.get(tenant, id)?;
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let mut session = match Arc::try_unwrap(session) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => return Err(Error::new(ErrorKind::Busy, format!("transfer {id:?} is still receiving a chunk"))),
        };
        let Kind::Upload { parts } = std::mem::replace(&mut session.kind, Kind::Upload { parts: HashMap::new() })
        else {
            return Err(Error::invalid(format!("transfer {id:?} is an export, not an upload")));
        };
        if !parts.contains_key(&Part::Index) {
            return Err(Error::invalid(format!("upload {id:?} has no \"index\" part")));
        }
        let mut sums = HashMap::new();
        for (part, rx) in parts {
            let path = part.path_in(&session.dir);
            rx.file.sync_all().at(&path)?;
            sums.insert(part, Checksum { bytes: rx.bytes, crc32: rx.crc.finalize() });
        }
        Ok(Spooled { session, sums })
    }

    /// Register an export of files already in `dir` (made by the caller with
    /// [`Transfers::new_dir`]): each part's file is opened and checksummed. Reply fields:
    /// `export_id`, `chunk_bytes`, `parts` (`part`, `bytes`, `crc32` each).
    pub fn begin_export(&self, tenant: &str, dir: PathBuf) -> Result<Msg> {
        let mut parts = HashMap::new();
        let mut rows = Vec::new();
        for part in Part::ALL {
            let path = part.path_in(&dir);
            if !path.exists() {
                continue;
            }
            let sum = Checksum::of_file(&path)?;
            let file = File::open(&path).at(&path)?;
            rows.push(
                Msg::default()
                    .with("part", part.name())
                    .with("bytes", sum.bytes)
                    .with("crc32", u64::from(sum.crc32))
                    .into_value(),
            );
            parts.insert(part, (file, sum));
        }
        let id = self.insert(tenant, Kind::Export { parts }, dir)?;
        Ok(Msg::default().with("export_id", id).with("chunk_bytes", CHUNK_BYTES).with("parts", Value::Array(rows)))
    }

    /// `export_chunk`: `length` (≤ [`MAX_CHUNK_BYTES`]) bytes of `part` from `offset`. Reply:
    /// `data` (binary; shorter at the end of the part), `offset`, `crc32` of `data`.
    pub fn read_chunk(&self, tenant: &str, m: &Msg) -> Result<Msg> {
        let id = m.req_str("export_id")?;
        let part = Part::parse(m.req_str("part")?)?;
        let offset = m.uint("offset")?.ok_or_else(|| Error::invalid("missing field \"offset\""))?;
        let length = m.uint("length")?.unwrap_or(CHUNK_BYTES);
        if length > MAX_CHUNK_BYTES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("length={length}: at most {MAX_CHUNK_BYTES} per chunk"),
            ));
        }
        let session = self.get(tenant, id)?;
        let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
        s.last_used = Instant::now();
        let Kind::Export { parts } = &s.kind else {
            return Err(Error::invalid(format!("transfer {id:?} is an upload: it takes upload_chunk")));
        };
        let (file, sum) = parts
            .get(&part)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("export {id:?} has no {:?} part", part.name())))?;
        if offset > sum.bytes {
            return Err(Error::invalid(format!(
                "offset={offset} is past the {} bytes of {:?}",
                sum.bytes,
                part.name()
            )));
        }
        let n = length.min(sum.bytes - offset) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, offset).at(&part.path_in(&s.dir))?;
        let crc = crc32fast::hash(&buf);
        Ok(Msg::default().with("offset", offset).with("crc32", u64::from(crc)).with("data", Value::Binary(buf)))
    }

    /// `transfer_end`: drop the session `id` of `tenant` (upload or export) and its files.
    pub fn end(&self, tenant: &str, id: &str) -> Result<Msg> {
        self.get(tenant, id)?;
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(Msg::default().with("ended", id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, part: &str, offset: u64, data: &[u8]) -> Msg {
        Msg::default()
            .with("upload_id", id)
            .with("part", part)
            .with("offset", offset)
            .with("crc32", u64::from(crc32fast::hash(data)))
            .with("data", Value::Binary(data.to_vec()))
    }

    #[test]
    fn upload_checks_order_crc_and_tenant_and_cleans_up() {
        let t = Transfers::new(None, Duration::from_secs(60)).unwrap();
        let root = t.root.clone();
        let id = t.begin_upload("a").unwrap().str("upload_id").unwrap().unwrap().to_string();
        assert_eq!(t.chunk("a", &chunk(&id, "index", 0, b"hello ")).unwrap().uint("bytes").unwrap(), Some(6));
        // Out of order, wrong tenant, corrupted.
        assert!(t.chunk("a", &chunk(&id, "index", 0, b"x")).unwrap_err().to_string().contains("in order"));
        assert_eq!(t.chunk("b", &chunk(&id, "index", 6, b"x")).unwrap_err().kind(), ErrorKind::NotFound);
        let mut bad = chunk(&id, "index", 6, b"world");
        bad.set("crc32", 1u64);
        assert!(t.chunk("a", &bad).unwrap_err().to_string().contains("corrupted"));
        t.chunk("a", &chunk(&id, "index", 6, b"world")).unwrap();
        let up = t.take_upload("a", &id).unwrap();
        assert_eq!(up.sums[&Part::Index], Checksum { bytes: 11, crc32: crc32fast::hash(b"hello world") });
        let p = up.path(Part::Index).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world");
        assert!(up.path(Part::Sidecar).is_none());
        drop(up);
        assert!(!p.exists(), "the spool goes with the upload");
        assert_eq!(t.open_sessions("a"), 0);
        drop(t);
        assert!(!root.exists());
    }

    #[test]
    fn idle_sessions_are_swept_with_their_files() {
        let t = Transfers::new(None, Duration::ZERO).unwrap();
        let id = t.begin_upload("a").unwrap().str("upload_id").unwrap().unwrap().to_string();
        t.chunk("a", &chunk(&id, "index", 0, b"abc")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        t.sweep();
        assert_eq!(t.open_sessions("a"), 0);
        assert_eq!(std::fs::read_dir(&t.root).unwrap().count(), 0);
    }

    #[test]
    fn export_reads_parts_by_offset() {
        let t = Transfers::new(None, Duration::from_secs(60)).unwrap();
        let dir = t.new_dir().unwrap();
        std::fs::write(Part::Index.path_in(&dir), b"0123456789").unwrap();
        let r = t.begin_export("a", dir).unwrap();
        let id = r.str("export_id").unwrap().unwrap().to_string();
        let m = Msg::default().with("export_id", id.as_str()).with("part", "index").with("offset", 8u64);
        let c = t.read_chunk("a", &m).unwrap();
        assert_eq!(c.get("data"), Some(&Value::Binary(b"89".to_vec())));
        assert_eq!(t.read_chunk("b", &m).unwrap_err().kind(), ErrorKind::NotFound);
        let past = Msg::default().with("export_id", id.as_str()).with("part", "index").with("offset", 11u64);
        assert!(t.read_chunk("a", &past).is_err());
        t.end("a", &id).unwrap();
        assert_eq!(t.open_sessions("a"), 0);
    }
}
