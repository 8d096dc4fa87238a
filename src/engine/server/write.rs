//! Actions that change state: create, delete, merge and snapshot here; the mutations of one
//! index (add, remove, train, …) in `mutation.rs`. Every write runs on the queue of the
//! index it names and holds that index's write lock; with `--data-dir` nothing is
//! acknowledged before it is on disk (logged to the WAL, or checkpointed).

use super::store::Metadata;
use super::types::{metric_of, parse_index_type, TypeSpec};
use super::{dir_of, valid_id, writable, Action, Call, Entry, Service, Slot};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{factory, Index, IndexSpec, Storage};
use crate::engine::protocol::{Msg, MAX_DIMENSION};
use std::sync::Arc;

impl Service {
    /// Mutations. Runs on the index's lane; takes the index's write lock.
    pub fn write(&self, call: &Call) -> Result<Msg> {
        let m = &call.msg;
        let t = &call.tenant;
        match call.action {
            Action::CreateIndex => self.create(t, m),
            Action::DeleteIndex => {
                let id = m.req_str("index_id")?;
                let e = self.entry(t, id)?;
                if let Some(src) = &e.source {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "index {id:?} is served from {} (serve --index): drop it from the server's command line",
                            src.path.display()
                        ),
                    ));
                }
                let mut map = self.indices.write().unwrap_or_else(|p| p.into_inner());
                if let Some(st) = &self.store {
                    st.delete(t, id)?;
                }
                map.remove(&(t.clone(), id.to_string()));
                drop(map);
                // Stop further WAL writes through in-flight holders.
                e.write().store = None;
                tracing::info!(tenant = %t, index = %id, "index deleted");
                Ok(Msg::default().with("message", format!("index {id} deleted")).with("index_id", id))
            }
            Action::MergeIndices => self.merge(t, m),
            Action::ImportIndex => self.import(t, m),
            Action::ExportBegin => self.export(t, m),
            Action::Snapshot => {
                let targets: Vec<(String, Arc<Entry>)> = match m.str("index_id")? {
                    Some(id) => vec![(id.to_string(), self.entry(t, id)?)],
                    None => {
                        let map = self.indices.read().unwrap_or_else(|p| p.into_inner());
                        map.iter().filter(|((tt, _), _)| tt == t).map(|((_, id), e)| (id.clone(), e.clone())).collect()
                    }
                };
                let mut done = 0u64;
                for (_, e) in &targets {
                    let mut g = e.write();
                    let s = &mut *g;
                    // A mapped index never changes, so its checkpoint is current already.
                    if s.index.storage() != Storage::Loaded {
                        continue;
                    }
                    if let Some(st) = s.store.as_mut() {
                        st.checkpoint(&mut s.index, &s.md)?;
                        done += 1;
                    }
                }
                let msg = if self.store.is_some() {
                    format!("checkpointed {done} index(es)")
                } else {
                    "server is in-memory (no --data-dir): nothing to checkpoint".to_string()
                };
                Ok(Msg::default().with("message", msg).with("checkpointed", done))
            }
            _ => {
                let id = m.req_str("index_id")?;
                let e = self.entry(t, id)?;
                let mut g = e.write();
                writable(id, &e, &g.index)?;
                let out = self.mutate(call, &mut g);
                e.refresh(&g);
                out
            }
        }
    }

    fn create(&self, t: &str, m: &Msg) -> Result<Msg> {
        let id = m.req_str("index_id")?;
        valid_id("index_id", id)?;
        let key = (t.to_string(), id.to_string());
        if self.indices.read().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("index {id:?} already exists")));
        }
        if let Some(reason) = self.quarantined.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            // Its files are still there: never write over them.
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("index {id:?} already exists and is quarantined ({reason}); choose another name"),
            ));
        }
        self.check_index_quota(t)?;
        let dim = m.int("dimension")?.ok_or_else(|| Error::invalid("missing field \"dimension\""))?;
        if !(1..=MAX_DIMENSION as i64).contains(&dim) {
            return Err(Error::invalid(format!("dimension={dim} is out of range 1..={MAX_DIMENSION}")));
        }
        let dim = dim as usize;
        let kind = m.str("index_type")?.unwrap_or("L2").to_string();
        let metric = metric_of(m)?;
        // Within the server's per-index memory limits (factory::check_cost) before FAISS
        // allocates anything.
        let make = |spec: TypeSpec| -> Result<Index> {
            match spec {
                TypeSpec::Factory { factory, metric } => {
                    factory::check_cost(&factory, dim)?;
                    Index::create(&IndexSpec { factory, metric, dim }, false)
                }
                TypeSpec::Binary { factory } => {
                    factory::check_cost(&factory, dim)?;
                    Index::create_binary(dim, &factory)
                }
                TypeSpec::Wrap { .. } => Err(Error::invalid(format!("index type {kind:?}: nested IDMap"))),
            }
        };
        let mut index = match parse_index_type(&kind, metric)? {
            TypeSpec::Wrap { v2, base } => {
                let existing = valid_id("index_id", &base).ok().and_then(|_| self.entry(t, &base).ok());
                let inner = match existing {
                    Some(e) => {
                        let g = e.read();
                        if g.index.d() != dim {
                            return Err(Error::new(
                                ErrorKind::DimensionMismatch,
                                format!("base index {base:?} has d={}, expected d={dim}", g.index.d()),
                            ));
                        }
                        if g.index.ntotal() > 0 {
                            return Err(Error::invalid(format!(
                                "base index {base:?} holds vectors; only an empty index can be wrapped in an IDMap"
                            )));
                        }
                        g.index.try_clone()?
                    }
                    None => make(parse_index_type(if base.is_empty() { "L2" } else { &base }, metric)?)?,
                };
                if inner.describe()?.idmap > 0 {
                    return Err(Error::invalid(format!("index type {kind:?}: the base already has an IDMap")));
                }
                inner.wrap_idmap(v2)?
            }
            spec => make(spec)?,
        };
        let md = Metadata { index: m.get("metadata").cloned(), ..Metadata::default() };
        let store = match &self.store {
            Some(st) => Some(st.create(t, id, &kind, &mut index, &md)?),
            None => None,
        };
        let trained = index.is_trained();
        let entry = Entry::new(kind.clone(), Slot::new(index, md, store));
        self.indices.write().unwrap_or_else(|p| p.into_inner()).insert(key, entry);
        tracing::info!(tenant = %t, index = %id, dimension = dim, index_type = %kind, "index created");
        Ok(Msg::default()
            .with("index_id", id)
            .with("dimension", dim as u64)
            .with("type", kind.as_str())
            .with("is_trained", trained)
            .with("message", format!("index {id} created")))
    }

    fn merge(&self, t: &str, m: &Msg) -> Result<Msg> {
        let target = m.req_str("target_index_id")?;
        let sources =
            m.strings("source_index_ids")?.ok_or_else(|| Error::invalid("missing field \"source_index_ids\""))?;
        let te = self.entry(t, target)?;
        writable(target, &te, &te.read().index)?;
        // Copy the sources first (read locks only), so no lock is held while waiting for another.
        let target_binary = te.read().index.is_binary();
        let mut copies = Vec::new();
        for sid in &sources {
            if sid == target {
                return Err(Error::invalid("an index cannot be merged into itself"));
            }
            let e = self.entry(t, sid)?;
            let g = e.read();
            if g.index.d() != te.d {
                return Err(Error::new(
                    ErrorKind::DimensionMismatch,
                    format!("source {sid:?} has d={}, target has d={}", g.index.d(), te.d),
                ));
            }
            if g.index.is_binary() != target_binary {
                return Err(Error::invalid(format!(
                    "source {sid:?} and target {target:?} hold different kinds of vectors (binary codes and floats)"
                )));
            }
            if !g.md.keys.is_empty() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("source {sid:?} has string ids: merging indices with string ids is not supported"),
                ));
            }
            if g.index.storage() != Storage::Loaded {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("source {sid:?} is memory-mapped (serve --mmap): merging copies it, which needs it loaded"),
                ));
            }
            // Binary indices have no IVF merge: read their vectors now, so that a source that
            // cannot give them back fails before the target changes.
            let rows = match (g.index.is_binary(), g.index.ntotal()) {
                (true, n) if n > 0 => Some(g.index.reconstruct_n(0, n)?),
                _ => None,
            };
            copies.push((sid.clone(), g.index.try_clone()?, g.md.vectors.clone(), rows));
        }
        let adding: u64 = copies.iter().map(|c| c.1.ntotal() as u64).sum();
        self.check_vector_quota(t, adding, None)?;
        let mut g = te.write();
        let s = &mut *g;
        writable(target, &te, &s.index)?;
        if !s.md.keys.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("target {target:?} has string ids: merging indices with string ids is not supported"),
            ));
        }
        if !s.index.is_trained() {
            return Err(Error::new(ErrorKind::NotTrained, "target index is not trained"));
        }
        // Merged into a copy, checkpointed, and only then swapped in (in memory: in place).
        change_durably(s, |ix, md_all| {
            for (sid, mut src, md, rows) in copies {
                let base = ix.ntotal() as i64;
                let renumbered = !src.takes_ids()?;
                if ix.ivf_merge_from(&mut src, 0)? {
                    // IVF merge keeps ids.
                    md_all.vectors.extend(md);
                    continue;
                }
                if ix.requires_ids()? || src.requires_ids()? {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "merging {sid:?}: only IVF indices with the same quantizer, or id-less indices, can be merged"
                        ),
                    ));
                }
                let n = src.ntotal();
                if n > 0 {
                    let x = match rows {
                        Some(x) => x,
                        None => src.reconstruct_n(0, n)?,
                    };
                    ix.add(&x, None)?;
                }
                for (k, v) in md {
                    md_all.vectors.insert(if renumbered { base + k } else { k }, v);
                }
            }
            Ok(())
        })?;
        te.refresh(s);
        tracing::info!(tenant = %t, index = %target, sources = ?sources, ntotal = s.index.ntotal(), "indices merged");
        Ok(Msg::default().with("ntotal", s.index.ntotal() as u64).with("message", format!("merged into {target}")))
    }

    /// Checkpoint every index (clean shutdown).
    pub fn checkpoint_all(&self) {
        let entries: Vec<Arc<Entry>> =
            self.indices.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for e in entries {
            let mut g = e.write();
            if g.index.storage() == Storage::Loaded && g.store.as_ref().is_some_and(|st| st.wal_bytes() > 0) {
                if let Err(e) = checkpoint(&mut g) {
                    // The WAL still holds everything: the next start replays it.
                    tracing::error!(
                        "checkpoint of {} failed (the next start replays its log): {}",
                        dir_of(&g),
                        e.chain()
                    );
                }
            }
        }
    }
}

/// Checkpoint the slot's index and metadata as they are (with a store; else nothing).
pub(super) fn checkpoint(s: &mut Slot) -> Result<()> {
    if let Some(st) = s.store.as_mut() {
        st.checkpoint(&mut s.index, &s.md)?;
    }
    Ok(())
}

/// Make a change that the WAL does not record (train, reset, merge) durable before it is
/// visible: with a store, `change` runs on copies of the index and metadata, the copies are
/// checkpointed, and only then replace the slot's, so a failure anywhere leaves memory and
/// disk as they were. Without a store `change` runs in place, as before.
pub(super) fn change_durably(s: &mut Slot, change: impl FnOnce(&mut Index, &mut Metadata) -> Result<()>) -> Result<()> {
    let Some(st) = s.store.as_mut() else {
        return change(&mut s.index, &mut s.md);
    };
    let mut index = s.index.try_clone()?;
    let mut md = s.md.clone();
    change(&mut index, &mut md)?;
    st.checkpoint(&mut index, &md)?;
    s.index = index;
    s.md = md;
    Ok(())
}

/// A logged mutation failed to apply: keep the WAL in step with memory. If nothing changed
/// (`ntotal` as `before`), the record is taken back; if the failure left part of the change
/// behind, the current state is checkpointed (which puts the record behind the checkpoint).
/// If that fails too, the store refuses writes until restart, where replaying the record
/// fails again and quarantines the index rather than serve a state nobody saw.
pub(super) fn unlog_failed(s: &mut Slot, before: usize) {
    let changed = s.index.ntotal() != before;
    let Some(st) = s.store.as_mut() else { return };
    let dir = st.dir().display().to_string();
    let undone = if changed { st.checkpoint(&mut s.index, &s.md) } else { st.retract_last() };
    if let Err(e) = undone {
        st.refuse_writes(format!("a failed mutation could not be taken out of the log ({})", e.chain()));
        tracing::error!(
            target: "faissx::critical",
            "{dir}: a failed mutation could not be taken out of the log; the index refuses writes until restart: {}",
            e.chain()
        );
    }
}
