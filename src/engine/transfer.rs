//! The client side of import and export (docs/protocol.md §7, "Import and export"): an index
//! file sent to a server in checksummed chunks and made an index there, and a served index
//! downloaded as a point-in-time copy that `faissx search`/`info` and Python's
//! `faiss.read_index` open. Whole-tenant backups are a folder of such copies plus
//! `manifest.json`.
//!
//! Files travel as parts: `index` (the FAISS file), `sidecar` (`<index>.meta.json`) and
//! `metadata` (the server's per-vector metadata, kept beside the index as
//! `<index>.metadata.msgpack`). Downloads are written atomically (temp files renamed once every
//! part has arrived and matched its checksum); a failed transfer is ended on the server.

use crate::engine::client::Client;
use crate::engine::error::{Error, ErrorKind, IoContext, Result};
use crate::engine::index::IndexMeta;
use crate::engine::io::atomic::AtomicFile;
use crate::engine::protocol::{Msg, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The per-vector metadata file kept beside an index file: `<index>.metadata.msgpack`.
pub fn metadata_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".metadata.msgpack");
    PathBuf::from(s)
}

/// What [`local_parts`] gives: (wire name, path) of each part, and the temp file to keep.
type LocalParts = (Vec<(&'static str, PathBuf)>, Option<tempfile::TempPath>);

/// The parts of an index file on the client's disk, in transfer order: (wire name, path).
/// An index built with metadata (`<index>.meta.parquet`) and no server metadata file sends
/// its table converted to the server's form, in a temp file kept alive by the second value.
fn local_parts(index: &Path) -> Result<LocalParts> {
    let mut parts = vec![("index", index.to_path_buf())];
    let mut tmp = None;
    for (name, p) in [("sidecar", IndexMeta::path_for(index)), ("metadata", metadata_path(index))] {
        if p.is_file() {
            parts.push((name, p));
        } else if name == "metadata" {
            let table = match IndexMeta::load(index)? {
                Some(meta) => crate::engine::filter::MetaTable::open_for(index, &meta)?,
                None => None,
            };
            if let Some(t) = table {
                let file = tempfile::NamedTempFile::new().map_err(|e| Error::io(Path::new("<temp>"), e))?;
                let path = file.into_temp_path();
                crate::engine::server::store::Metadata::from_table(&t)?.write(&path)?;
                parts.push((name, path.to_path_buf()));
                tmp = Some(path);
            }
        }
    }
    Ok((parts, tmp))
}

/// Where an imported index comes from.
#[derive(Debug, Clone)]
pub enum ImportFrom<'a> {
    /// A file on this machine, uploaded in chunks (with its sidecar and metadata file if
    /// they are beside it).
    Upload(&'a Path),
    /// A file on the server's disk, under one of its `--import-dir` folders.
    ServerPath(&'a str),
    /// Nothing: re-read the file of an index the server serves with `serve --index`.
    Reread,
}

/// The reply of a successful import.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The index's generation now (1 for a new index).
    pub generation: u64,
    /// `crc32:xxxxxxxx` of the imported file.
    pub checksum: Option<String>,
    /// Vectors in the index.
    pub ntotal: u64,
    /// Dimension `d`.
    pub dimension: u64,
    /// FAISS's class name.
    pub index_type: String,
    /// Whether an index of that name was replaced.
    pub replaced: bool,
    /// Bytes sent.
    pub bytes_sent: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The index's generation the copy is of.
    pub generation: u64,
    /// FAISS's class name.
    pub index_type: String,
    /// Vectors in the copy.
    pub ntotal: u64,
    /// Dimension `d`.
    pub dimension: u64,
    /// Files written (index first).
    pub files: Vec<PathBuf>,
    /// Bytes received.
    pub bytes: u64,
}

impl Client {
    /// Import an index file as index `id` of the caller's tenant: new, or replacing the served
    /// one atomically. `if_generation`: refuse (`CONFLICT`) unless the index is at that
    /// generation now (0: unless the name is new). `progress(bytes_sent, bytes_total)` is
    /// called after each chunk. Errors: the file's (named), the server's (as their
    /// `error_code` says); a failed upload is ended on the server, which then holds nothing
    /// of it.
    pub fn import_index(
        &mut self,
        id: &str,
        from: &ImportFrom,
        if_generation: Option<u64>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Imported> {
        let mut fields = vec![("index_id", Value::from(id))];
        if let Some(g) = if_generation {
            fields.push(("if_generation", Value::from(g)));
        }
        let mut sent = 0;
        match from {
            ImportFrom::Upload(path) => {
                let id = self.upload(path, &mut sent, progress)?;
                fields.push(("upload_id", Value::from(id.as_str())));
            }
            ImportFrom::ServerPath(p) => fields.push(("server_path", Value::from(*p))),
            ImportFrom::Reread => {}
        }
        // The server ends the upload with the import, whatever the outcome.
        let r = self.call("import_index", fields)?;
        Ok(Imported {
            generation: r.uint("generation")?.unwrap_or(0),
            checksum: r.str("checksum")?.map(str::to_string),
            ntotal: r.uint("ntotal")?.unwrap_or(0),
            dimension: r.uint("dimension")?.unwrap_or(0),
            index_type: r.str("index_type")?.unwrap_or("").to_string(),
            replaced: r.flag("replaced")?,
            bytes_sent: sent,
        })
    }

    /// Upload `path` and its sidecar/metadata files; returns the `upload_id`. On error the
    /// upload is ended on the server.
    fn upload(&mut self, path: &Path, sent: &mut u64, progress: &mut dyn FnMut(u64, u64)) -> Result<String> {
        let (parts, _table_tmp) = local_parts(path)?;
        let mut total = 0;
        for (_, p) in &parts {
            total += std::fs::metadata(p).at(p)?.len();
        }
        let r = self.call("upload_begin", vec![])?;
        let id = r.req_str("upload_id")?.to_string();
        let chunk = r.uint("chunk_bytes")?.unwrap_or(4 << 20).clamp(1 << 16, 16 << 20) as usize;
        let sent_all = (|| -> Result<()> {
            let mut buf = vec![0u8; chunk];
            for (part, p) in &parts {
                let mut f = std::fs::File::open(p).at(p)?;
                let mut offset = 0u64;
                loop {
                    let n = read_full(&mut f, &mut buf).at(p)?;
                    if n == 0 && offset > 0 {
                        break;
                    }
                    let data = &buf[..n];
                    let req = vec![
                        ("upload_id", Value::from(id.as_str())),
                        ("part", Value::from(*part)),
                        ("offset", Value::from(offset)),
                        ("crc32", Value::from(u64::from(crc32fast::hash(data)))),
                        ("data", Value::Binary(data.to_vec())),
                    ];
                    self.call("upload_chunk", req)?;
                    offset += n as u64;
                    *sent += n as u64;
                    progress(*sent, total);
                    if n < buf.len() {
                        break;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = sent_all {
            let _ = self.call("transfer_end", vec![("transfer_id", Value::from(id.as_str()))]);
            return Err(e);
        }
        Ok(id)
    }

    /// Download a point-in-time copy of index `id` to `out` (plus `<out>.meta.json` and
    /// `<out>.metadata.msgpack` when the server sends them), each written atomically once
    /// every byte matched the server's checksums. `progress(bytes, total)` after each chunk.
    pub fn export_index(&mut self, id: &str, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Exported> {
        let r = self.call("export_begin", vec![("index_id", Value::from(id))])?;
        let eid = r.req_str("export_id")?.to_string();
        let got = self.download(&eid, &r, out, progress);
        let _ = self.call("transfer_end", vec![("transfer_id", Value::from(eid.as_str()))]);
        let (files, bytes) = got?;
        Ok(Exported {
            generation: r.uint("generation")?.unwrap_or(0),
            index_type: r.str("index_type")?.unwrap_or("").to_string(),
            ntotal: r.uint("ntotal")?.unwrap_or(0),
            dimension: r.uint("dimension")?.unwrap_or(0),
            files,
            bytes,
        })
    }

    fn download(
        &mut self,
        eid: &str,
        begin: &Msg,
        out: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Vec<PathBuf>, u64)> {
        let chunk = begin.uint("chunk_bytes")?.unwrap_or(4 << 20).clamp(1 << 16, 16 << 20);
        let parts: Vec<(String, u64, u32)> = match begin.get("parts") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| {
                    let m = Msg::from_value(p.clone())?;
                    Ok((
                        m.req_str("part")?.to_string(),
                        m.uint("bytes")?.unwrap_or(0),
                        m.uint("crc32")?.unwrap_or(0) as u32,
                    ))
                })
                .collect::<Result<_>>()?,
            _ => return Err(Error::new(ErrorKind::Protocol, "export_begin reply has no \"parts\"")),
        };
        let total: u64 = parts.iter().map(|p| p.1).sum();
        let mut done = 0;
        let mut files = Vec::new();
        for (part, bytes, crc) in &parts {
            let path = match part.as_str() {
                "index" => out.to_path_buf(),
                "sidecar" => IndexMeta::path_for(out),
                "metadata" => metadata_path(out),
                other => {
                    return Err(Error::new(ErrorKind::Protocol, format!("export sends an unknown part {other:?}")))
                }
            };
            let mut f = AtomicFile::create(&path)?;
            let mut h = crc32fast::Hasher::new();
            let mut offset = 0u64;
            while offset < *bytes {
                let r = self.call(
                    "export_chunk",
                    vec![
                        ("export_id", Value::from(eid)),
                        ("part", Value::from(part.as_str())),
                        ("offset", Value::from(offset)),
                        ("length", Value::from(chunk)),
                    ],
                )?;
                let data = match r.get("data") {
                    Some(Value::Binary(b)) => b,
                    _ => return Err(Error::new(ErrorKind::Protocol, "export_chunk reply has no binary \"data\"")),
                };
                if data.is_empty() || r.uint("crc32")? != Some(u64::from(crc32fast::hash(data))) {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("export of {part} at offset {offset}: chunk damaged in transit (crc32 mismatch)"),
                    ));
                }
                h.update(data);
                f.write_all(data).at(&path)?;
                offset += data.len() as u64;
                done += data.len() as u64;
                progress(done, total);
            }
            if h.finalize() != *crc {
                return Err(Error::new(ErrorKind::Protocol, format!("export of {part}: whole-part crc32 mismatch")));
            }
            files.push((path, f));
        }
        // Index first: a sidecar never describes a file that is not there.
        let mut written = Vec::new();
        for (path, f) in files {
            f.commit()?;
            written.push(path);
        }
        if let Some(table) = table_beside(out)? {
            written.push(table);
        }
        Ok((written, done))
    }
}

/// For an exported index with the server's metadata (`<out>.metadata.msgpack`) and a
/// sidecar: write that metadata as the index's metadata table (`<out>.meta.parquet`, one row
/// per stored vector, string ids included) and record it in the sidecar, so that
/// `faissx search --filter` works on the copy. Returns the table's path when written; binary
/// indices, whose tables the local tools do not filter, are left as they are.
fn table_beside(out: &Path) -> Result<Option<PathBuf>> {
    let md_path = metadata_path(out);
    let Some(mut meta) = IndexMeta::load(out)? else { return Ok(None) };
    if !md_path.is_file() {
        return Ok(None);
    }
    let md = crate::engine::server::store::Metadata::read(&md_path)?;
    if md.vectors.is_empty() && md.keys.is_empty() {
        return Ok(None);
    }
    let opts = crate::engine::index::OpenOptions { mmap: true, warm: false, ..Default::default() };
    let Ok(index) = crate::engine::index::Index::open_float(out, &opts) else { return Ok(None) };
    let ids = index.stored_ids(0, index.ntotal())?;
    drop(index);
    let table = md.to_table(&ids)?;
    meta.metadata = Some(table.save_for(out)?);
    meta.save(out)?;
    Ok(Some(crate::engine::filter::table::table_path(out)))
}

/// Fill `buf` from `r` as far as the file goes; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One index of a backup folder's `manifest.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// The index's name.
    pub index_id: String,
    /// The index file, relative to the folder.
    pub file: String,
    /// Its generation when exported.
    pub generation: u64,
    /// FAISS's class name.
    pub index_type: String,
    /// Dimension `d`.
    pub dimension: u64,
    /// Vectors.
    pub ntotal: u64,
}

/// `manifest.json` of a backup folder (`export --all`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// The server it came from.
    pub server: String,
    /// When (Unix seconds).
    pub created_unix: u64,
    /// The indices, by name.
    pub indexes: Vec<ManifestEntry>,
}

impl Manifest {
    /// The manifest file of a backup folder.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("manifest.json")
    }

    /// Read `dir/manifest.json`; errors name the file.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let p = Manifest::path_in(dir);
        let bytes = std::fs::read(&p).at(&p)?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::format(&p, e))?;
        for e in &m.indexes {
            let bad = e.file.contains('/') || e.file.starts_with('.') || e.file.is_empty();
            if bad {
                return Err(Error::format(
                    &p,
                    format!("index {:?}: file {:?} is not a plain file name", e.index_id, e.file),
                ));
            }
        }
        Ok(m)
    }
}

/// Export every index of the caller's tenant into `dir` (created if missing): one
/// `<index_id>.index` (+ sidecar, metadata) each, then `manifest.json` written last (a folder
/// without it is not a finished backup).
pub fn export_all(c: &mut Client, dir: &Path, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Manifest> {
    std::fs::create_dir_all(dir).at(dir)?;
    let r = c.call("list_indices", vec![])?;
    let mut ids = Vec::new();
    if let Some(Value::Array(rows)) = r.get("indexes") {
        for row in rows {
            let m = Msg::from_value(row.clone())?;
            if m.str("status")?.unwrap_or("ok") == "ok" {
                ids.push(m.req_str("index_id")?.to_string());
            }
        }
    }
    let mut entries = Vec::new();
    for id in ids {
        let id: String = id;
        let file = format!("{id}.index");
        let e = c.export_index(&id, &dir.join(&file), &mut |a, b| progress(&id, a, b))?;
        entries.push(ManifestEntry {
            index_id: id,
            file,
            generation: e.generation,
            index_type: e.index_type,
            dimension: e.dimension,
            ntotal: e.ntotal,
        });
    }
    let m = Manifest {
        version: 1,
        server: c.server().to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        indexes: entries,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::invalid(format!("manifest: {e}")))?;
    crate::engine::io::atomic::write_all(&Manifest::path_in(dir), &json)?;
    Ok(m)
}

/// Import every index of a backup folder's manifest into the caller's tenant (each new or
/// replacing the one of its name). Stops at the first failure, naming the index.
pub fn import_all(
    c: &mut Client,
    dir: &Path,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Vec<(String, Imported)>> {
    let m = Manifest::read(dir)?;
    let mut out = Vec::new();
    for e in &m.indexes {
        let file = dir.join(&e.file);
        let r = c
            .import_index(&e.index_id, &ImportFrom::Upload(&file), None, &mut |a, b| progress(&e.index_id, a, b))
            .map_err(|err| err.context(format!("importing {:?} from {}", e.index_id, file.display())))?;
        out.push((e.index_id.clone(), r));
    }
    Ok(out)
}
