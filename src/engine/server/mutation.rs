//! The mutations of one index: parsed from a request, checked, written to the WAL as a
//! record, and applied (the same code applies a record on replay at start-up, so a replayed
//! index equals the one that was served).

use super::limits::knob;
use super::write::{change_durably, checkpoint, unlog_failed};
use super::{dir_of, filtering, Action, Call, Service, Slot};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::Rows;
use crate::engine::protocol::{self, Msg, Value};

impl Service {
    /// Run a mutation of one index (add, train, remove, replace, set_parameter, reset) on
    /// its slot, under its write lock: checked, logged, applied; a failure leaves the index,
    /// its metadata and its log as they were.
    pub(super) fn mutate(&self, call: &Call, s: &mut Slot) -> Result<Msg> {
        let m = &call.msg;
        let mutation = match call.action {
            Action::AddVectors | Action::AddWithIds | Action::BatchAddWithIds => {
                if call.action == Action::BatchAddWithIds {
                    // FAISSx adds batch by batch; one add does the same, all or nothing.
                    if let Some(b) = m.int("batch_size")? {
                        if b < 1 {
                            return Err(Error::invalid(format!("batch_size={b} must be a positive integer")));
                        }
                    }
                }
                let x = m.rows("vectors", &s.index)?;
                let n = s.index.rows_in(&x)?;
                self.check_vector_quota(&call.tenant, n as u64, None)?;
                let index_id = m.req_str("index_id")?;
                let (ids, keys) = filtering::ids_to_add(s, filtering::given_ids(m, "ids")?, index_id)?;
                if call.action != Action::AddVectors && ids.is_none() && keys.is_none() {
                    return Err(Error::invalid(format!("{} needs \"ids\"", call.action.name())));
                }
                if let Some(k) = &keys {
                    crate::engine::index::check_id_count(k.len(), n)?;
                }
                if let Some(ids) = &ids {
                    crate::engine::index::check_id_count(ids.len(), n)?;
                }
                let md = match m.get("metadata") {
                    None => None,
                    Some(Value::Array(a)) if a.len() == n => Some(a.clone()),
                    Some(Value::Array(a)) => {
                        return Err(Error::invalid(format!(
                            "{} metadata values for {n} vectors: give one per vector",
                            a.len()
                        )))
                    }
                    Some(v) => {
                        return Err(Error::invalid(format!(
                            "field \"metadata\" must be an array (one value per vector), got {}",
                            protocol::type_name(v)
                        )))
                    }
                };
                // Check everything the engine would refuse before anything changes or is
                // logged.
                match &ids {
                    // String ids get the FAISS ids the index can store (filtering::ids_to_add).
                    _ if keys.is_some() => {}
                    Some(_) if !s.index.takes_ids()? => {
                        return Err(Error::invalid(
                            "this index does not store ids: create it as IDMap:<type> or IDMap2:<type>",
                        ))
                    }
                    Some(ids) => crate::engine::index::check_ids(ids)?,
                    None if s.index.requires_ids()? => {
                        return Err(Error::invalid("this index stores explicit ids (IDMap): use add_with_ids"))
                    }
                    None => {}
                }
                // The Python client's IndexScalarQuantizer has no train(): it relies on
                // implicit training, which for a scalar quantizer (value ranges) is cheap and
                // deterministic, so the first add trains on its own vectors.
                if !s.index.is_trained() && s.index.describe()?.inner_name == "IndexScalarQuantizer" && !x.is_empty() {
                    change_durably(s, |ix, _| ix.train(&x))?;
                }
                if !s.index.is_trained() {
                    return Err(Error::new(ErrorKind::NotTrained, "index is not trained: call train_index first"));
                }
                Mutation::Add { x, ids, md, keys }
            }
            Action::TrainIndex => {
                let x = m.rows("training_vectors", &s.index)?;
                if x.is_empty() {
                    return Err(Error::invalid("training needs at least one vector"));
                }
                let n = s.index.rows_in(&x)?;
                change_durably(s, |ix, _| ix.train(&x))?;
                return Ok(Msg::default().with("is_trained", s.index.is_trained()).with("trained_with", n as u64));
            }
            Action::RemoveIds => {
                let index_id = m.req_str("index_id")?;
                let ids = filtering::existing_ids(&s.md, s.index.ntotal(), m, "ids", index_id)?
                    .ok_or_else(|| Error::invalid("missing field \"ids\""))?;
                // String ids the index does not hold remove nothing, as unknown integers.
                Mutation::Remove { ids: ids.into_iter().flatten().collect() }
            }
            Action::ReplaceVector => {
                let id = filtering::one_id(&s.md, m, "id", m.req_str("index_id")?)?
                    .ok_or_else(|| Error::invalid("missing field \"id\""))?;
                let x = m.rows("vector", &s.index)?;
                if s.index.rows_in(&x)? != 1 {
                    return Err(Error::invalid("replace_vector takes exactly one vector"));
                }
                if s.index.describe()?.idmap != 2 {
                    return Err(Error::new(ErrorKind::Unsupported, "replace_vector needs an IDMap2 index"));
                }
                Mutation::Replace { id, x }
            }
            Action::SetParameter => {
                let name = m.req_str("parameter")?.to_string();
                let value = m.uint("value")?.ok_or_else(|| Error::invalid("missing field \"value\" (an integer)"))?;
                Mutation::SetParam { name, value }
            }
            Action::OptimizeIndex => return optimize(m, s),
            Action::ReclusterIndex => return super::clustering::recluster(m.req_str("index_id")?, m, s),
            Action::Reset => {
                // The emptied copy is checkpointed before the vectors go (a copy costs the
                // index's memory once more, for a moment; resets are rare).
                change_durably(s, |ix, md| {
                    ix.reset()?;
                    md.vectors.clear();
                    md.keys.clear();
                    Ok(())
                })?;
                return Ok(Msg::default()
                    .with("message", "index reset")
                    .with("ntotal", 0u64)
                    .with("is_trained", s.index.is_trained()));
            }
            other => return Err(super::misrouted(other)),
        };
        let mut out = logged(s, mutation)?;
        if call.action == Action::BatchAddWithIds {
            let count = out.uint("count")?.unwrap_or(0);
            out.set("message", format!("added {count} vectors with ids to index {}", m.req_str("index_id")?));
        }
        Ok(out)
    }
}

/// Check `mutation`, append it to the slot's WAL (with a store), apply it; if it fails to
/// apply, take it back out of the log. Checkpoints when the log has grown enough.
fn logged(s: &mut Slot, mutation: Mutation) -> Result<Msg> {
    mutation.check(s)?;
    if let Some(st) = s.store.as_mut() {
        st.log(mutation.record())?;
    }
    let before = s.index.ntotal();
    let out = match mutation.apply(s) {
        Ok(out) => out,
        Err(e) => {
            unlog_failed(s, before);
            return Err(e);
        }
    };
    // The mutation is logged and applied: a checkpoint that fails now only leaves the
    // WAL longer, so it must not turn the reply into an error.
    if s.store.as_ref().is_some_and(|st| st.wants_checkpoint()) {
        if let Err(e) = checkpoint(s) {
            tracing::error!("checkpoint of {} failed (the write-ahead log keeps the change): {}", dir_of(s), e.chain());
        }
    }
    Ok(out)
}

/// `optimize_index`: FAISSx's rules (docs/protocol.md §7). IVF: `nprobe` from `nlist` and
/// the level; HNSW: `efSearch` 40/80/120 (what FAISSx's server means to do; its check for the
/// attribute never matches); Flat: nothing to do; anything else: nothing. A change is one
/// logged `set` mutation, as `set_parameter`.
fn optimize(m: &Msg, s: &mut Slot) -> Result<Msg> {
    let id = m.req_str("index_id")?;
    let level = m.int("optimization_level")?.unwrap_or(1);
    if level < 1 {
        return Err(Error::invalid(format!("optimization_level={level} must be an integer >= 1")));
    }
    let info = s.index.describe()?;
    let change = match (info.nlist, info.ef_search) {
        (Some(nlist), _) => {
            if !s.index.is_trained() {
                return Err(Error::new(
                    ErrorKind::NotTrained,
                    "the index requires training data before optimization: call train_index first",
                ));
            }
            let (cap, div) = match level {
                1 => (10, 10),
                2 => (50, 5),
                _ => (100, 2),
            };
            Some(("nprobe", (nlist / div).clamp(1, cap)))
        }
        (None, Some(_)) => Some(("efSearch", [40, 80, 120][level.min(3) as usize - 1])),
        (None, None) => None,
    };
    let mut optimizations = Vec::new();
    if let Some((name, value)) = change {
        logged(s, Mutation::SetParam { name: name.to_string(), value: value as u64 })?;
        optimizations.push(format!("set_{name}_{value}"));
    } else if info.inner_name.starts_with("IndexFlat") {
        optimizations.push("flat_index_no_optimization".to_string());
    }
    Ok(Msg::default()
        .with("message", format!("Applied {} optimizations to index {id}", optimizations.len()))
        .with("index_type", info.type_name.as_str())
        .with("optimizations", Value::Array(optimizations.into_iter().map(Value::from).collect()))
        .with("optimization_level", level))
}

/// A WAL field for vectors: `x` (f32 LE) for float rows, `codes` for binary codes.
fn rows_record(x: &Rows) -> (Value, Value) {
    match x {
        Rows::Float(v) => (Value::from("x"), Value::Binary(protocol::f32_bytes(v))),
        Rows::Codes(c) => (Value::from("codes"), Value::Binary(c.clone())),
    }
}

/// A logged mutation: validated, written to the WAL, then applied (also on replay).
pub(super) enum Mutation {
    /// `keys`: string ids, one per vector, mapped to `ids` (or, without, to the positions
    /// the vectors take).
    Add {
        x: Rows,
        ids: Option<Vec<i64>>,
        md: Option<Vec<Value>>,
        keys: Option<Vec<String>>,
    },
    Remove {
        ids: Vec<i64>,
    },
    Replace {
        id: i64,
        x: Rows,
    },
    SetParam {
        name: String,
        value: u64,
    },
}

impl Mutation {
    fn check(&self, s: &Slot) -> Result<()> {
        if let Mutation::Remove { .. } = self {
            s.index.check_removable()?;
        }
        if let Mutation::SetParam { name, value } = self {
            knob(name, *value)?;
            let info = s.index.describe()?;
            let ok = match name.as_str() {
                "nprobe" => info.nprobe.is_some(),
                "efSearch" | "ef_search" | "efConstruction" | "ef_construction" => info.ef_search.is_some(),
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown parameter {name:?} (nprobe, efSearch, efConstruction)"
                    )))
                }
            };
            if !ok {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("parameter {name:?} does not apply to {}", info.type_name),
                ));
            }
        }
        Ok(())
    }

    fn record(&self) -> Vec<(Value, Value)> {
        let kv = |k: &str, v: Value| (Value::from(k), v);
        match self {
            Mutation::Add { x, ids, md, keys } => {
                let mut r = vec![
                    kv("op", Value::from("add")),
                    rows_record(x),
                    kv("ids", ids.as_ref().map_or(Value::Nil, |i| Value::Binary(protocol::i64_bytes(i)))),
                    kv("md", md.as_ref().map_or(Value::Nil, |m| Value::Array(m.clone()))),
                ];
                if let Some(k) = keys {
                    r.push(kv("keys", Value::Array(k.iter().map(|s| Value::from(s.as_str())).collect())));
                }
                r
            }
            Mutation::Remove { ids } => {
                vec![kv("op", Value::from("remove")), kv("ids", Value::Binary(protocol::i64_bytes(ids)))]
            }
            Mutation::Replace { id, x } => {
                vec![kv("op", Value::from("replace")), kv("id", Value::from(*id)), rows_record(x)]
            }
            Mutation::SetParam { name, value } => {
                vec![
                    kv("op", Value::from("set")),
                    kv("name", Value::from(name.as_str())),
                    kv("value", Value::from(*value)),
                ]
            }
        }
    }

    pub(super) fn from_record(v: &Value) -> Result<Mutation> {
        let m = match v {
            Value::Map(m) => {
                Msg::from_pairs(m.iter().filter_map(|(k, v)| k.as_str().map(|k| (k, v.clone()))).collect())
            }
            _ => return Err(Error::new(ErrorKind::Format, "WAL record is not a map")),
        };
        let bin = |k: &str| match m.get(k) {
            Some(Value::Binary(b)) => Some(b.clone()),
            _ => None,
        };
        // Float vectors are logged as "x" (f32 LE), binary codes as "codes".
        let rows_of_record = || -> Result<Rows> {
            match bin("codes") {
                Some(c) => Ok(Rows::Codes(c)),
                None => Ok(Rows::Float(protocol::f32_from_bytes(&bin("x").unwrap_or_default())?)),
            }
        };
        Ok(match m.req_str("op")? {
            "add" => Mutation::Add {
                x: rows_of_record()?,
                ids: bin("ids").map(|b| protocol::i64_from_bytes(&b)).transpose()?,
                md: match m.get("md") {
                    Some(Value::Array(a)) => Some(a.clone()),
                    _ => None,
                },
                keys: m.strings("keys")?,
            },
            "remove" => Mutation::Remove { ids: protocol::i64_from_bytes(&bin("ids").unwrap_or_default())? },
            "replace" => Mutation::Replace { id: m.req_int("id")?, x: rows_of_record()? },
            "set" => Mutation::SetParam { name: m.req_str("name")?.to_string(), value: m.uint("value")?.unwrap_or(1) },
            other => return Err(Error::new(ErrorKind::Format, format!("unknown WAL op {other:?}"))),
        })
    }

    pub(super) fn apply(&self, s: &mut Slot) -> Result<Msg> {
        match self {
            Mutation::Add { x, ids, md, keys } => {
                let before = s.index.ntotal() as i64;
                let n = s.index.rows_in(x)?;
                s.index.add(x, ids.as_deref())?;
                if let Some(keys) = keys {
                    for (i, k) in keys.iter().enumerate() {
                        s.md.keys.insert(ids.as_ref().map_or(before + i as i64, |ids| ids[i]), k.clone());
                    }
                }
                if let Some(md) = md {
                    for (i, v) in md.iter().enumerate() {
                        let key = ids.as_ref().map_or(before + i as i64, |ids| ids[i]);
                        s.md.vectors.insert(key, v.clone());
                    }
                }
                let nt = s.index.ntotal() as u64;
                Ok(Msg::default().with("count", n as u64).with("ntotal", nt).with("total", nt))
            }
            Mutation::Remove { ids } => {
                let renumbers = !s.index.takes_ids()?;
                let removed = s.index.remove_ids(ids)?;
                if renumbers && removed > 0 {
                    // Positions shift down past every removed id.
                    let mut gone: Vec<i64> = ids.clone();
                    gone.sort_unstable();
                    gone.dedup();
                    s.md.keys.renumber_after_removal(&gone);
                    let old = std::mem::take(&mut s.md.vectors);
                    for (k, v) in old {
                        if gone.binary_search(&k).is_err() {
                            let shift = gone.partition_point(|&g| g < k) as i64;
                            s.md.vectors.insert(k - shift, v);
                        }
                    }
                } else {
                    for i in ids {
                        s.md.vectors.remove(i);
                        s.md.keys.remove_id(*i);
                    }
                }
                let nt = s.index.ntotal() as u64;
                let mut reply = Msg::default().with("removed", removed as u64).with("count", removed as u64);
                // Say so when FAISS renumbered the vectors after a removed one (docs/protocol.md).
                let renumbered = renumbers && removed > 0;
                if renumbered {
                    reply =
                        reply.with("message", "vectors after a removed one moved down: their ids (positions) changed");
                }
                Ok(reply.with("ntotal", nt).with("renumbered", renumbered))
            }
            Mutation::Replace { id, x } => {
                s.index.remove_ids(&[*id])?;
                s.index.add(x, Some(&[*id]))?;
                Ok(Msg::default().with("ntotal", s.index.ntotal() as u64).with("id", *id))
            }
            Mutation::SetParam { name, value } => {
                let v = *value as usize;
                match name.as_str() {
                    "nprobe" => s.index.set_nprobe(v)?,
                    "efSearch" | "ef_search" => s.index.set_ef_search(v)?,
                    _ => s.index.set_ef_construction(v)?,
                }
                Ok(Msg::default().with("param_name", name.as_str()).with("param_value", *value))
            }
        }
    }
}
