//! Tests of the store: WAL framing and repair, checkpoints, quarantine.

use super::wal::WalFile;
use super::*;
use crate::engine::error::ErrorKind;
use crate::engine::index::{IndexSpec, Metric};
use std::fs::File;
use std::fs::OpenOptions as FileOptions;
use std::io::Write;

#[test]
fn crc32_matches_zlib() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

/// A fresh temp folder, removed on drop.
struct Tmp(PathBuf);
impl Tmp {
    fn new(name: &str) -> Tmp {
        let dir = std::env::temp_dir().join(format!("faissx-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn op(s: &str) -> Vec<(Value, Value)> {
    vec![(Value::from("op"), Value::from(s)), (Value::from("x"), Value::Binary(vec![7u8; 40]))]
}

/// A WAL of `n` records; returns the byte offset where each starts.
fn wal_of(dir: &Path, n: usize) -> Vec<u64> {
    let mut s = IndexStore::new_in(dir, "L2").unwrap();
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(s.wal_bytes());
        s.log(op(&format!("r{i}"))).unwrap();
    }
    starts
}

#[test]
fn torn_wal_tail_is_cut() {
    let t = Tmp::new("torn");
    let starts = wal_of(&t.0, 2);
    let full = std::fs::metadata(t.0.join("wal.log")).unwrap().len();
    // A torn third record: a header declaring 50 bytes, then the front of a map.
    let mut f = FileOptions::new().append(true).open(t.0.join("wal.log")).unwrap();
    f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, 0x82, 0xa2]).unwrap();
    let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
    assert_eq!(scan.records.len(), 2);
    assert_eq!(scan.good_len, full);
    assert!(scan.torn.as_deref().unwrap().contains("2 of 50 payload bytes"), "{:?}", scan.torn);
    let scan = read_wal(&t.0.join("wal.log"), 1).unwrap();
    assert_eq!(scan.records.len(), 1, "records at or below the checkpoint are skipped");
    // Half a header, a zero-filled tail, and a bad checksum in a final record are torn too.
    for tail in [vec![9u8, 0, 0], vec![0u8; 300]] {
        std::fs::write(
            t.0.join("wal.log"),
            [std::fs::read(t.0.join("wal.log")).unwrap()[..full as usize].to_vec(), tail].concat(),
        )
        .unwrap();
        let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
        assert_eq!((scan.records.len(), scan.good_len), (2, full));
        assert!(scan.torn.is_some());
    }
    let mut bytes = std::fs::read(t.0.join("wal.log")).unwrap()[..full as usize].to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(t.0.join("wal.log"), &bytes).unwrap();
    let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
    assert_eq!((scan.records.len(), scan.good_len), (1, starts[1]));
    assert!(scan.torn.unwrap().contains("checksum mismatch in the final record"));
}

#[test]
fn flipped_byte_mid_log_is_corruption_and_the_file_is_kept() {
    let t = Tmp::new("flip");
    let starts = wal_of(&t.0, 100);
    let p = t.0.join("wal.log");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[starts[49] as usize + 20] ^= 0x01; // record 50
    std::fs::write(&p, &bytes).unwrap();
    let e = read_wal(&p, 0).unwrap_err();
    let msg = e.chain();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(msg.contains("wal.log"), "{msg}");
    assert!(msg.contains(&format!("record 50 at byte offset {}", starts[49])), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert_eq!(std::fs::read(&p).unwrap(), bytes, "the file must not change");
}

#[test]
fn bad_length_in_record_2_is_corruption() {
    let t = Tmp::new("len");
    let starts = wal_of(&t.0, 100);
    let p = t.0.join("wal.log");
    let good = std::fs::read(&p).unwrap();
    // Longer, past the end of the file; longer within the file; shorter.
    for len in [u32::MAX, 500, 20] {
        let mut bytes = good.clone();
        let at = starts[1] as usize;
        bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let msg = read_wal(&p, 0).unwrap_err().chain();
        assert!(msg.contains(&format!("record 2 at byte offset {}", starts[1])), "len {len}: {msg}");
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
    }
    // The same damage to the last record, past the end of the file, is not a torn write
    // either: a whole record follows the header.
    let mut bytes = good.clone();
    let at = starts[99] as usize;
    bytes[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let msg = read_wal(&p, 0).unwrap_err().chain();
    assert!(msg.contains("record 100") && msg.contains("a complete record"), "{msg}");
}

fn store_with_index(root: &Path) -> (Store, PathBuf) {
    let store = Store::open(root).unwrap();
    let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 }, false).unwrap();
    ix.add(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], None).unwrap();
    let md = Metadata::default();
    let mut st = store.create("t", "a", "L2", &mut ix, &md).unwrap();
    st.log(op("x")).unwrap();
    st.checkpoint(&mut ix, &md).unwrap();
    (store, root.join("tenants/t/a"))
}

fn only_quarantined(rep: &LoadReport) -> String {
    assert!(rep.loaded.is_empty(), "expected no loaded index");
    assert_eq!(rep.quarantined.len(), 1);
    let q = &rep.quarantined[0];
    assert_eq!((q.tenant.as_str(), q.id.as_str()), ("t", "a"));
    q.reason.clone()
}

#[test]
fn checkpoint_checksums_are_verified_before_faiss_reads() {
    let t = Tmp::new("cksum");
    let (store, dir) = store_with_index(&t.0);
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("CHECKPOINT")).unwrap()).unwrap();
    assert_eq!(cp["index"], "index-1.faiss");
    assert!(cp["index_crc32"].is_u64() && cp["metadata_crc32"].is_u64() && cp["index_bytes"].is_u64());
    assert_eq!(store.load_all(false).unwrap().loaded.len(), 1);
    let ipath = dir.join("index-1.faiss");
    let mut bytes = std::fs::read(&ipath).unwrap();
    let mid = bytes.len() - 5;
    bytes[mid] ^= 0x10;
    std::fs::write(&ipath, &bytes).unwrap();
    let reason = only_quarantined(&store.load_all(false).unwrap());
    assert!(reason.contains("index-1.faiss") && reason.contains("checksum"), "{reason}");
    assert_eq!(std::fs::read(&ipath).unwrap(), bytes, "quarantined files are kept as they are");
    // Old CHECKPOINT files without checksums load unverified.
    bytes[mid] ^= 0x10;
    std::fs::write(&ipath, &bytes).unwrap();
    let old = r#"{"seq":1,"index":"index-1.faiss","metadata":"metadata-1.msgpack","kind":"L2"}"#;
    std::fs::write(dir.join("CHECKPOINT"), old).unwrap();
    assert_eq!(store.load_all(false).unwrap().loaded[0].index.ntotal(), 2);
}

#[test]
fn checkpoint_paths_stay_in_their_folder() {
    let t = Tmp::new("paths");
    let (store, dir) = store_with_index(&t.0);
    for bad in ["../../other/a/index-1.faiss", "/etc/passwd", "index-1.faiss/..", "index-.faiss", "x.faiss"] {
        let cp = format!(r#"{{"seq":1,"index":{bad:?},"metadata":"metadata-1.msgpack","kind":"L2"}}"#);
        std::fs::write(dir.join("CHECKPOINT"), cp).unwrap();
        let reason = only_quarantined(&store.load_all(false).unwrap());
        assert!(reason.contains("CHECKPOINT") && reason.contains("not a file name"), "{bad}: {reason}");
    }
    std::fs::write(dir.join("CHECKPOINT"), "{not json").unwrap();
    assert!(only_quarantined(&store.load_all(false).unwrap()).contains("invalid checkpoint"));
}

#[test]
fn one_bad_index_does_not_stop_the_others_and_strays_are_ignored() {
    let t = Tmp::new("strays");
    let (store, dir) = store_with_index(&t.0);
    std::fs::write(dir.join("wal.log"), b"garbage that is not a WAL at all").unwrap();
    std::fs::write(t.0.join("tenants/t/notes.txt"), b"stray").unwrap();
    std::fs::write(t.0.join("tenants/stray.txt"), b"stray").unwrap();
    std::fs::create_dir_all(t.0.join("tenants/t/bad name")).unwrap();
    std::fs::write(dir.join("index-7.faiss.tmp"), b"half").unwrap();
    let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 }, false).unwrap();
    store.create("t", "b", "L2", &mut ix, &Metadata::default()).unwrap();
    let rep = store.load_all(false).unwrap();
    assert_eq!(rep.loaded.len(), 1);
    assert_eq!(rep.loaded[0].id, "b");
    assert_eq!(rep.quarantined.len(), 1);
    assert!(rep.quarantined[0].reason.contains("wal.log"), "{}", rep.quarantined[0].reason);
    let w = rep.warnings.join("\n");
    for needle in ["notes.txt", "stray.txt", "bad name", "index-7.faiss.tmp"] {
        assert!(w.contains(needle), "no warning about {needle}:\n{w}");
    }
    assert!(!dir.join("index-7.faiss.tmp").exists());
    assert!(t.0.join("tenants/t/notes.txt").exists(), "stray files are left alone");
}

/// A WAL file that fails as told: the append writes `partial` bytes and then fails;
/// the truncate fails when `truncate_fails`.
struct Failing {
    inner: File,
    partial: Option<usize>,
    truncate_fails: bool,
}

impl WalFile for Failing {
    fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
        match self.partial {
            Some(k) => {
                self.inner.write_all(&rec[..k.min(rec.len())])?;
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            }
            None => self.inner.write_all(rec),
        }
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if self.truncate_fails {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        WalFile::truncate(&mut self.inner, len)
    }
}

fn failing(dir: &Path, partial: Option<usize>, truncate_fails: bool) -> Box<dyn WalFile> {
    let inner = FileOptions::new().append(true).open(dir.join("wal.log")).unwrap();
    Box::new(Failing { inner, partial, truncate_fails })
}

#[test]
fn failed_append_leaves_no_partial_record() {
    let t = Tmp::new("append");
    let mut s = IndexStore::new_in(&t.0, "L2").unwrap();
    s.log(op("a")).unwrap();
    let good = std::fs::read(t.0.join("wal.log")).unwrap();
    s.wal = failing(&t.0, Some(13), false);
    let e = s.log(op("b")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.chain().contains("nothing was logged"), "{}", e.chain());
    assert_eq!(std::fs::read(t.0.join("wal.log")).unwrap(), good, "the partial record is cut off");
    // Later appends land right after the last good record and replay finds them all.
    s.wal = failing(&t.0, None, false);
    s.log(op("c")).unwrap();
    let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
    assert_eq!(scan.records.len(), 2);
    assert!(scan.torn.is_none());
    assert_eq!(scan.records.iter().map(|r| record_seq(r).unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    // Taking back the last record.
    s.retract_last().unwrap();
    assert_eq!(std::fs::read(t.0.join("wal.log")).unwrap(), good);
}

#[test]
fn append_that_cannot_be_undone_refuses_later_writes() {
    let t = Tmp::new("failed");
    let mut s = IndexStore::new_in(&t.0, "L2").unwrap();
    s.log(op("a")).unwrap();
    s.wal = failing(&t.0, Some(13), true);
    let e = s.log(op("b")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    for e in [e, s.log(op("c")).unwrap_err()] {
        let msg = e.chain();
        assert!(msg.contains("refuses writes until restart") && msg.contains(&t.0.display().to_string()), "{msg}");
        assert!(msg.contains("os error 28"), "the original cause is named: {msg}");
    }
    let mut ix = Index::create(&IndexSpec { factory: "Flat".into(), metric: Metric::L2, dim: 4 }, false).unwrap();
    assert!(s.checkpoint(&mut ix, &Metadata::default()).unwrap_err().chain().contains("refuses writes"));
    // At the next start the partial record is a torn tail.
    let scan = read_wal(&t.0.join("wal.log"), 0).unwrap();
    assert_eq!(scan.records.len(), 1);
    assert!(scan.torn.is_some());
}

#[test]
fn a_checkpoint_never_overwrites_the_files_in_force() {
    let t = Tmp::new("names");
    let (store, dir) = store_with_index(&t.0);
    let mut rep = store.load_all(false).unwrap();
    let l = &mut rep.loaded[0];
    // No record since the checkpoint at seq 1: the next one must use new names.
    l.store.checkpoint(&mut l.index, &l.metadata).unwrap();
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("CHECKPOINT")).unwrap()).unwrap();
    assert_eq!((cp["seq"].as_u64(), cp["index"].as_str()), (Some(1), Some("index-2.faiss")));
    assert!(!dir.join("index-1.faiss").exists(), "old files are removed after the switch");
    assert_eq!(store.load_all(false).unwrap().loaded[0].index.ntotal(), 2);
}
