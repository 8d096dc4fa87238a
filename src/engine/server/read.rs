//! Actions that read one index under its read lock: searches, reconstruction, status,
//! parameters and per-vector metadata. Concurrent reads share an index; a read never changes
//! it (search parameters are per request).

use super::limits::{check_results, k_of, search_params, MAX_RANGE_CANDIDATES, MAX_RESULTS};
use super::{estimate_bytes, filtering, storage_name, Action, ActionClass, Call, Entry, Service, Slot};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::Rows;
use crate::engine::protocol::{self, Encoding, Msg, Value};

impl Service {
    /// Chunks of uploads and exports (no index lock).
    fn transfer(&self, call: &Call) -> Result<Msg> {
        let (t, m) = (&call.tenant, &call.msg);
        match call.action {
            Action::UploadBegin => self.transfers.begin_upload(t),
            Action::UploadChunk => self.transfers.chunk(t, m),
            Action::ExportChunk => self.transfers.read_chunk(t, m),
            Action::TransferEnd => self.transfers.end(t, m.req_str("transfer_id")?),
            other => Err(super::misrouted(other)),
        }
    }

    /// Read actions. With `blocking == false`, returns `Ok(None)` instead of waiting for an
    /// index that a mutation holds.
    pub fn read(&self, call: &Call, blocking: bool) -> Result<Option<Msg>> {
        let Some(status) = self.cluster.get() else { return self.read_local(call, blocking) };
        // `serve --cluster`: `min_seq` waits (bounded) for this replica to apply a write.
        if let Some(seq) = call.msg.uint("min_seq")? {
            if status.applied() < seq {
                if !blocking {
                    return Ok(None);
                }
                let secs = call.msg.float("min_seq_timeout")?.unwrap_or(5.0);
                if !(0.0..=60.0).contains(&secs) {
                    return Err(Error::invalid(format!("min_seq_timeout={secs} must be within 0..=60 seconds")));
                }
                if !status.wait_applied(seq, std::time::Duration::from_secs_f64(secs)) {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "this replica has applied the log up to seq {}, not min_seq={seq}, after {secs} s",
                            status.applied()
                        ),
                    ));
                }
            }
        }
        Ok(self.read_local(call, blocking)?.map(|m| status.stamp(m)))
    }

    fn read_local(&self, call: &Call, blocking: bool) -> Result<Option<Msg>> {
        let m = &call.msg;
        match call.action.class() {
            ActionClass::Read => {}
            ActionClass::Transfer => return self.transfer(call).map(Some),
            _ => return Err(super::misrouted(call.action)),
        }
        if call.action == Action::ComputeClustering {
            // Reads no index.
            return self.compute_clustering(m).map(Some);
        }
        if call.action == Action::HybridSearch {
            hybrid_fields(m)?;
        }
        // Parsed before the index is touched: a bad filter changes nothing and costs nothing.
        let filter = match call.action {
            Action::Search | Action::SearchAndReconstruct | Action::RangeSearch | Action::HybridSearch => {
                filtering::filter_of(m, call.action == Action::HybridSearch)?
            }
            _ => None,
        };
        let id = m.req_str("index_id")?;
        let e = self.entry(&call.tenant, id)?;
        let guard = if blocking {
            e.read()
        } else {
            match e.slot.try_read() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            }
        };
        let s = &*guard;
        let ix = &s.index;
        let binary = m.flag("binary")?;
        let out = match call.action {
            Action::Search | Action::SearchAndReconstruct | Action::HybridSearch => {
                // A hybrid search is a search, restricted by its metadata filter (hybrid_fields).
                let plain = call.action != Action::SearchAndReconstruct;
                let k = k_of(m)?;
                self.quotas.check_k(k)?;
                let q = m.rows("query_vectors", ix)?;
                let params = search_params(m, k)?;
                let nq = ix.rows_in(&q)?;
                self.quotas.check_nq(nq)?;
                check_results(nq, k)?;
                // Small searches are cheaper on one thread than through OpenMP's pool.
                crate::engine::index::set_threads(if nq >= 16 { self.cores } else { 1 });
                let (n, path) = match &filter {
                    None => (ix.search(&q, &params)?, None),
                    Some(f) => {
                        let sel = filtering::restriction(s, f, id)?;
                        let (n, path) = ix.search_in(&q, &params, &sel)?;
                        (n, Some((path, sel.len())))
                    }
                };
                let keys = &s.md.keys;
                let with_md = m.flag("include_metadata")?;
                let md_row = |ids: &[i64]| {
                    Value::Array(ids.iter().map(|i| s.md.vectors.get(i).cloned().unwrap_or(Value::Nil)).collect())
                };
                let mut out = Msg::default().with("num_queries", n.nq as u64).with("k", k as u64);
                if let Some((path, matches)) = &path {
                    out.set("filter_path", path.kind());
                    out.set("filter_matches", *matches as u64);
                }
                if binary && plain {
                    out.set("distances", Value::Binary(protocol::f32_bytes(&n.dists)));
                    out.set("labels", Value::Binary(protocol::i64_bytes(&n.ids)));
                    if !keys.is_empty() {
                        // The int64 labels are the FAISS ids; the user's ids ride beside them.
                        out.set("string_labels", filtering::ids_value(keys, &n.ids));
                    }
                    if with_md {
                        out.set("metadata", Value::Array((0..n.nq).map(|q| md_row(n.row(q).0)).collect()));
                    }
                } else {
                    let mut results = Vec::with_capacity(n.nq);
                    for qi in 0..n.nq {
                        let (ids, d) = n.row(qi);
                        let mut r = Msg::default()
                            .with("distances", protocol::floats_value(d))
                            .with("indices", filtering::ids_value(keys, ids));
                        if with_md {
                            r.set("metadata", md_row(ids));
                        }
                        if call.action == Action::SearchAndReconstruct {
                            let vecs = ids
                                .iter()
                                .map(|&i| {
                                    if i < 0 {
                                        Ok(Value::Nil)
                                    } else {
                                        ix.reconstruct(i).map(|v| protocol::row_value(&v))
                                    }
                                })
                                .collect::<Result<Vec<_>>>()?;
                            r.set("vectors", Value::Array(vecs));
                        }
                        results.push(r.into_value());
                    }
                    out.set("results", Value::Array(results));
                    if plain {
                        // The Python client's IndexIVFPQ reads nq × k `distances`/`indices`
                        // at the top level.
                        let k1 = n.k.max(1);
                        out.set("distances", Value::Array(n.dists.chunks(k1).map(protocol::floats_value).collect()));
                        out.set(
                            "indices",
                            Value::Array(n.ids.chunks(k1).map(|c| filtering::ids_value(keys, c)).collect()),
                        );
                    }
                }
                out
            }
            Action::RangeSearch => {
                let radius = m.float("radius")?.ok_or_else(|| Error::invalid("missing field \"radius\""))?;
                let q = m.rows("query_vectors", ix)?;
                let nq = ix.rows_in(&q)?;
                self.quotas.check_nq(nq)?;
                let sel = filter.as_ref().map(|f| filtering::restriction(s, f, id)).transpose()?;
                // A filtered range search can only return the matching vectors.
                let candidates = sel.as_ref().map_or(ix.ntotal(), |sel| sel.len());
                if nq.saturating_mul(candidates) > MAX_RANGE_CANDIDATES {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!(
                            "range search of nq={nq} over {candidates} vectors may return more than the server's limit of {MAX_RANGE_CANDIDATES} hits: split the queries",
                        ),
                    ));
                }
                let h = match &sel {
                    None => ix.range_search(&q, radius as f32)?,
                    Some(sel) => ix.range_search_in(&q, radius as f32, sel)?,
                };
                if h.ids.len() > MAX_RESULTS {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("range search found {} hits, more than the server's limit of {MAX_RESULTS} per reply: use a smaller radius or fewer queries", h.ids.len()),
                    ));
                }
                let mut results = Vec::with_capacity(h.nq());
                for qi in 0..h.nq() {
                    let (ids, d) = h.row(qi);
                    results.push(
                        Msg::default()
                            .with("query_index", qi as u64)
                            .with("num_results", ids.len() as u64)
                            .with("indices", filtering::ids_value(&s.md.keys, ids))
                            .with("distances", protocol::floats_value(d))
                            .into_value(),
                    );
                }
                let mut out = Msg::default();
                if let Some(sel) = &sel {
                    out.set("filter_matches", sel.len() as u64);
                }
                out.with("results", Value::Array(results))
                    .with("num_queries", h.nq() as u64)
                    .with("radius", radius)
                    .with("lims", Value::Array(h.lims.iter().map(|&l| Value::from(l as u64)).collect()))
                    .with("indices", filtering::ids_value(&s.md.keys, &h.ids))
                    .with("distances", protocol::floats_value(&h.dists))
            }
            Action::Reconstruct => {
                let key = match filtering::one_id(&s.md, m, "id", id)? {
                    Some(k) => k,
                    None => m.int("idx")?.ok_or_else(|| Error::invalid("missing field \"id\" (or \"idx\")"))?,
                };
                let v = ix.reconstruct(key)?;
                Msg::default().with(
                    "vector",
                    if binary { protocol::rows_value(&v, ix.d(), Encoding::Binary) } else { protocol::row_value(&v) },
                )
            }
            Action::ReconstructN | Action::GetVectors => {
                let start = m.uint("start_idx")?.unwrap_or(0) as usize;
                let nt = ix.ntotal();
                if start > nt {
                    return Err(Error::invalid(format!("start_idx={start} is past ntotal={nt}")));
                }
                let n = if call.action == Action::ReconstructN {
                    let n =
                        m.uint("num_vectors")?.ok_or_else(|| Error::invalid("missing field \"num_vectors\""))? as usize;
                    if start.checked_add(n).is_none_or(|end| end > nt) {
                        return Err(Error::invalid(format!("start_idx={start} + num_vectors={n} is past ntotal={nt}")));
                    }
                    n
                } else {
                    (m.uint("limit")?.map_or(nt, |l| l as usize)).min(nt - start)
                };
                if n.saturating_mul(ix.d()) > MAX_RESULTS.saturating_mul(64) {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("{n} vectors of d={} exceed the server's limit per reply: read them in ranges (start_idx, num_vectors)", ix.d()),
                    ));
                }
                let v = match (n, ix.is_binary()) {
                    (0, false) => Rows::Float(Vec::new()),
                    (0, true) => Rows::Codes(Vec::new()),
                    _ => ix.reconstruct_n(start, n)?,
                };
                let enc = if binary { Encoding::Binary } else { Encoding::Nested };
                Msg::default()
                    .with("vectors", protocol::rows_value(&v, ix.d(), enc))
                    .with("start_idx", start as u64)
                    .with("num_vectors", n as u64)
                    .with("ntotal", nt as u64)
            }
            Action::GetIndexStatus | Action::GetIndexStats | Action::GetIndexInfo => {
                let status = self.status(id, &e, s)?;
                let mut out = Msg::default()
                    .with("index_id", id)
                    .with("dimension", ix.d() as u64)
                    .with("ntotal", ix.ntotal() as u64)
                    .with("is_trained", ix.is_trained())
                    .with("status", status.into_value());
                if call.action == Action::GetIndexInfo {
                    let mut storage = Msg::default()
                        .with("mode", storage_name(ix.storage()))
                        .with("estimated_memory_bytes", estimate_bytes(ix))
                        .with("persistent", s.store.is_some());
                    if let Some(st) = &s.store {
                        storage.set("wal_bytes", st.wal_bytes());
                    }
                    out.set("storage", storage.into_value());
                    if let Some(md) = &s.md.index {
                        out.set("metadata", md.clone());
                    }
                }
                out
            }
            Action::GetParameter => {
                let p = m.req_str("parameter")?;
                let info = ix.describe()?;
                let v: Value = match p {
                    "nprobe" => info.nprobe.map(|v| Value::from(v as u64)),
                    "efSearch" | "ef_search" => info.ef_search.map(|v| Value::from(v as u64)),
                    "efConstruction" | "ef_construction" => info.ef_construction.map(|v| Value::from(v as u64)),
                    "nlist" => info.nlist.map(|v| Value::from(v as u64)),
                    "M" => info.hnsw_m.map(|v| Value::from(v as u64)),
                    "dimension" | "d" => Some(Value::from(ix.d() as u64)),
                    "ntotal" => Some(Value::from(ix.ntotal() as u64)),
                    "is_trained" => Some(Value::Boolean(ix.is_trained())),
                    "metric" | "metric_type" => Some(Value::from(ix.metric().to_string())),
                    _ => return Err(Error::invalid(format!("unknown parameter {p:?}"))),
                }
                .ok_or_else(|| {
                    Error::new(ErrorKind::Unsupported, format!("parameter {p:?} does not apply to {}", info.type_name))
                })?;
                Msg::default().with("param_name", p).with("param_value", v)
            }
            Action::GetMetadata => {
                let ids = filtering::existing_ids(&s.md, ix.ntotal(), m, "ids", id)?
                    .ok_or_else(|| Error::invalid("missing field \"ids\""))?;
                let value = |i: &Option<i64>| i.and_then(|i| s.md.vectors.get(&i).cloned()).unwrap_or(Value::Nil);
                Msg::default().with("index_id", id).with("metadata", Value::Array(ids.iter().map(value).collect()))
            }
            other => return Err(super::misrouted(other)),
        };
        Ok(Some(out))
    }

    fn status(&self, id: &str, e: &Entry, s: &Slot) -> Result<Msg> {
        let info = s.index.info(None)?;
        let mut st = Msg::default()
            .with("index_id", id)
            .with("dimension", info.d as u64)
            .with("ntotal", info.ntotal as u64)
            .with("index_type", e.kind.as_str())
            .with("faiss_type", info.index_type.as_str())
            .with("is_trained", info.is_trained)
            .with("metric", info.metric.to_string());
        for (k, v) in [
            ("nlist", info.nlist),
            ("nprobe", info.nprobe),
            ("M", info.hnsw_m),
            ("efSearch", info.ef_search),
            ("efConstruction", info.ef_construction),
        ] {
            if let Some(v) = v {
                st.set(k, v as u64);
            }
        }
        st.set("explicit_ids", info.explicit_ids);
        st.set("storage", storage_name(info.storage));
        st.set("vectors_with_metadata", s.md.vectors.len() as u64);
        st.set("generation", e.origin.generation);
        if let Some(c) = &e.origin.imported {
            st.set("checksum", format!("crc32:{:08x}", c.crc32));
        }
        if let Some(src) = &e.source {
            st.set("source", src.path.display().to_string());
        }
        Ok(st)
    }
}

/// Check `hybrid_search`'s own fields: `vector_weight` a number in 0–1 (FAISSx's
/// server ignores it as well: the answer is a vector search). `metadata_filter`, like
/// `filter`, restricts the search ([`filtering::filter_of`]).
fn hybrid_fields(m: &Msg) -> Result<()> {
    if let Some(w) = m.float("vector_weight")? {
        if !(0.0..=1.0).contains(&w) {
            return Err(Error::invalid(format!("vector_weight={w} is out of range 0..=1")));
        }
    }
    Ok(())
}
