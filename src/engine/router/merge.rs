//! What the router computes itself: which shard owns an id, the global ids of indices that
//! number vectors by position, and the merge of per-shard search results into one top-k
//! (the scatter-gather of FAISS's `IndexShards`, over the wire).

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::protocol::{self, Msg, Value};

/// Which shard of `n` owns the user id `id`: a stable hash (SplitMix64's finalizer), so
/// consecutive ids spread evenly and every router agrees.
pub fn shard_of_int(id: i64, n: usize) -> usize {
    let mut z = (id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

/// Which shard of `n` owns the string id `key` (64-bit FNV-1a of its UTF-8 bytes).
pub fn shard_of_key(key: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    (h % n.max(1) as u64) as usize
}

/// The global id of position `local` of shard `s` of `n`, for indices that number vectors
/// by position (no IDMap): `local · n + s`, so ids are unique across shards and each names
/// its shard. `-1` (no result) stays `-1`.
pub fn global_id(local: i64, s: usize, n: usize) -> i64 {
    if local < 0 {
        return local;
    }
    local.saturating_mul(n as i64).saturating_add(s as i64)
}

/// The shard and position of a global id (see [`global_id`]).
///
/// Errors: `InvalidInput` for a negative id.
pub fn local_id(global: i64, n: usize) -> Result<(usize, i64)> {
    if global < 0 {
        return Err(Error::invalid(format!("id {global} is negative")));
    }
    let n = n.max(1) as i64;
    Ok(((global % n) as usize, global / n))
}

/// How the merge orders distances: descending for metrics FAISS runs as inner product
/// (`ip`, and `cosine` on normalized vectors), ascending otherwise (L2, Hamming).
pub fn descending(metric: &str) -> bool {
    crate::engine::index::Metric::parse(metric).is_ok_and(|m| m.faiss_inner_product())
}

/// One hit of one query from one shard, with what rides along.
#[derive(Debug, Clone)]
struct Hit {
    dist: f32,
    id: i64,
    /// The user's id (string-id indices), as the shard sent it.
    label: Option<Value>,
    metadata: Option<Value>,
    vector: Option<Value>,
}

fn worse(a: &Hit, b: &Hit, desc: bool) -> std::cmp::Ordering {
    // Missing results (-1) go last, then by distance in the metric's order, then by id as
    // FAISS's heaps break ties (`CMax::cmp2`: the smaller id first for L2; `CMin::cmp2`: the
    // larger first for inner product), so that equal distances on different shards come
    // out, and are cut at k, as one index holding every vector would.
    (a.id < 0).cmp(&(b.id < 0)).then_with(|| {
        let o = a.dist.total_cmp(&b.dist).then(a.id.cmp(&b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    })
}

fn array(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_f64().map_or(f32::NAN, |f| f as f32)).collect(),
        Value::Binary(b) => protocol::f32_from_bytes(b).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A search reply of one shard as hits per query, ids made global by `map_id`.
fn hits_of(r: &Msg, map_id: &dyn Fn(i64) -> i64) -> Result<Vec<Vec<Hit>>> {
    let bad = |what: &str| Error::new(ErrorKind::Protocol, format!("shard's search reply: {what}"));
    if let Some(Value::Binary(labels)) = r.get("labels") {
        let ids = protocol::i64_from_bytes(labels)?;
        let dists = match r.get("distances") {
            Some(Value::Binary(b)) => protocol::f32_from_bytes(b)?,
            _ => return Err(bad("binary labels without binary distances")),
        };
        let nq = r.uint("num_queries")?.unwrap_or(0) as usize;
        let k = ids.len().checked_div(nq).unwrap_or(0);
        if ids.len() != dists.len() || nq * k != ids.len() {
            return Err(bad("sizes disagree"));
        }
        let labels = array(r.get("string_labels"));
        let md = array(r.get("metadata"));
        return Ok((0..nq)
            .map(|q| {
                let row_md = md.get(q).map(|v| array(Some(v)));
                (0..k)
                    .map(|j| Hit {
                        dist: dists[q * k + j],
                        id: map_id(ids[q * k + j]),
                        label: labels.get(q * k + j).cloned(),
                        metadata: row_md.as_ref().and_then(|m| m.get(j).cloned()),
                        vector: None,
                    })
                    .collect()
            })
            .collect());
    }
    let results = array(r.get("results"));
    let mut out = Vec::with_capacity(results.len());
    for res in results {
        let m = Msg::from_value(res)?;
        let dists = m.get("distances").map(f32s).unwrap_or_default();
        let ids = array(m.get("indices"));
        let md = array(m.get("metadata"));
        let vecs = array(m.get("vectors"));
        if ids.len() != dists.len() {
            return Err(bad("a result's indices and distances differ in length"));
        }
        out.push(
            ids.iter()
                .enumerate()
                .map(|(j, v)| {
                    // String ids come as strings (the user's), integer ids as integers.
                    let (id, label) = match v.as_i64() {
                        Some(i) => (map_id(i), None),
                        None if v.is_nil() => (-1, None),
                        None => (0, Some(v.clone())),
                    };
                    Hit { dist: dists[j], id, label, metadata: md.get(j).cloned(), vector: vecs.get(j).cloned() }
                })
                .collect(),
        );
    }
    Ok(out)
}

/// Merge the search replies of every shard (`replies[s]` from shard `s`, each in the format
/// the request asked for: binary `distances`/`labels` or FAISSx's `results`) into one reply of
/// the same format with the best `k` per query in the metric's order. `map_id(s, id)` turns
/// a shard's id into the global one.
///
/// Errors: `Protocol` when a reply is malformed or the shards disagree on `nq`.
pub fn merge_search(replies: &[(usize, Msg)], k: usize, desc: bool, map_id: &dyn Fn(usize, i64) -> i64) -> Result<Msg> {
    let Some((_, first)) = replies.first() else {
        return Err(Error::new(ErrorKind::Protocol, "no shard answered"));
    };
    let binary = matches!(first.get("labels"), Some(Value::Binary(_)));
    let mut per_query: Vec<Vec<Hit>> = Vec::new();
    for (s, r) in replies {
        let hits = hits_of(r, &|i| map_id(*s, i))?;
        if per_query.is_empty() {
            per_query = hits;
        } else if hits.len() != per_query.len() {
            return Err(Error::new(ErrorKind::Protocol, "shards answered different numbers of queries"));
        } else {
            for (q, h) in hits.into_iter().enumerate() {
                per_query[q].extend(h);
            }
        }
    }
    for hits in &mut per_query {
        hits.sort_by(|a, b| worse(a, b, desc));
        hits.truncate(k);
        while hits.len() < k {
            let dist = if desc { f32::NEG_INFINITY } else { f32::INFINITY };
            hits.push(Hit { dist, id: -1, label: None, metadata: None, vector: None });
        }
    }
    let nq = per_query.len();
    let has_labels = per_query.iter().flatten().any(|h| h.label.is_some());
    let has_md = per_query.iter().flatten().any(|h| h.metadata.is_some()) || first.has("metadata");
    let mut out = Msg::default().with("num_queries", nq as u64).with("k", k as u64);
    let label_of = |h: &Hit| h.label.clone().unwrap_or(if h.id < 0 { Value::Nil } else { Value::from(h.id) });
    if binary {
        let ids: Vec<i64> = per_query.iter().flatten().map(|h| h.id).collect();
        let dists: Vec<f32> = per_query.iter().flatten().map(|h| h.dist).collect();
        out.set("distances", Value::Binary(protocol::f32_bytes(&dists)));
        out.set("labels", Value::Binary(protocol::i64_bytes(&ids)));
        if has_labels {
            out.set("string_labels", Value::Array(per_query.iter().flatten().map(label_of).collect()));
        }
        if has_md {
            let rows = per_query
                .iter()
                .map(|hits| Value::Array(hits.iter().map(|h| h.metadata.clone().unwrap_or(Value::Nil)).collect()));
            out.set("metadata", Value::Array(rows.collect()));
        }
        return Ok(out);
    }
    let indices = |hits: &[Hit]| -> Value {
        if has_labels {
            Value::Array(hits.iter().map(label_of).collect())
        } else {
            protocol::ints_value(&hits.iter().map(|h| h.id).collect::<Vec<_>>())
        }
    };
    let dists = |hits: &[Hit]| protocol::floats_value(&hits.iter().map(|h| h.dist).collect::<Vec<_>>());
    let mut results = Vec::with_capacity(nq);
    for hits in &per_query {
        let mut r = Msg::default().with("distances", dists(hits)).with("indices", indices(hits));
        if has_md {
            r.set("metadata", Value::Array(hits.iter().map(|h| h.metadata.clone().unwrap_or(Value::Nil)).collect()));
        }
        if hits.iter().any(|h| h.vector.is_some()) {
            r.set("vectors", Value::Array(hits.iter().map(|h| h.vector.clone().unwrap_or(Value::Nil)).collect()));
        }
        results.push(r.into_value());
    }
    out.set("results", Value::Array(results));
    if first.has("indices") {
        // The FAISSx client's IndexIVFPQ reads nq × k arrays at the top level.
        out.set("distances", Value::Array(per_query.iter().map(|h| dists(h)).collect()));
        out.set("indices", Value::Array(per_query.iter().map(|h| indices(h)).collect()));
    }
    Ok(out)
}

/// Merge range-search replies: each query's hits from every shard, closest first in the
/// metric's order (`desc`: inner product), with `lims` recomputed.
///
/// Errors: `Protocol` when a reply is malformed.
pub fn merge_range(replies: &[(usize, Msg)], desc: bool, map_id: &dyn Fn(usize, i64) -> i64) -> Result<Msg> {
    let mut per_query: Vec<(Vec<Value>, Vec<f32>)> = Vec::new();
    let mut radius = None;
    for (s, r) in replies {
        radius = radius.or(r.get("radius").cloned());
        let results = array(r.get("results"));
        if per_query.is_empty() {
            per_query = vec![(Vec::new(), Vec::new()); results.len()];
        } else if per_query.len() != results.len() {
            return Err(Error::new(ErrorKind::Protocol, "shards answered different numbers of queries"));
        }
        for (q, res) in results.into_iter().enumerate() {
            let m = Msg::from_value(res)?;
            let ids = array(m.get("indices"));
            let d = m.get("distances").map(f32s).unwrap_or_default();
            for (v, dist) in ids.into_iter().zip(d) {
                let v = match v.as_i64() {
                    Some(i) => Value::from(map_id(*s, i)),
                    None => v,
                };
                per_query[q].0.push(v);
                per_query[q].1.push(dist);
            }
        }
    }
    for (ids, d) in per_query.iter_mut() {
        let mut both: Vec<(Value, f32)> = ids.drain(..).zip(d.drain(..)).collect();
        both.sort_by(|a, b| if desc { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
        for (v, x) in both {
            ids.push(v);
            d.push(x);
        }
    }
    let mut lims = vec![Value::from(0u64)];
    let (mut all_ids, mut all_d) = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for (q, (ids, d)) in per_query.iter().enumerate() {
        results.push(
            Msg::default()
                .with("query_index", q as u64)
                .with("num_results", ids.len() as u64)
                .with("indices", Value::Array(ids.clone()))
                .with("distances", protocol::floats_value(d))
                .into_value(),
        );
        all_ids.extend(ids.iter().cloned());
        all_d.extend(d.iter().copied());
        lims.push(Value::from(all_ids.len() as u64));
    }
    let mut out = Msg::default()
        .with("results", Value::Array(results))
        .with("num_queries", per_query.len() as u64)
        .with("lims", Value::Array(lims))
        .with("indices", Value::Array(all_ids))
        .with("distances", protocol::floats_value(&all_d));
    if let Some(r) = radius {
        out.set("radius", r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_shards_stably_and_evenly() {
        let n = 3;
        let mut counts = [0usize; 3];
        for id in 0..3000 {
            counts[shard_of_int(id, n)] += 1;
            assert_eq!(shard_of_int(id, n), shard_of_int(id, n));
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of_key("doc-1", 2), shard_of_key("doc-1", 2));
        assert_ne!((0..20).map(|i| shard_of_key(&format!("k{i}"), 2)).sum::<usize>(), 0);
        for g in [0i64, 1, 2, 5, 1001] {
            let (s, l) = local_id(g, n).unwrap();
            assert_eq!(global_id(l, s, n), g);
        }
        assert_eq!(global_id(-1, 1, 2), -1);
        assert!(descending("cosine") && descending("ip") && !descending("l2") && !descending("hamming"));
        assert!(local_id(-3, 2).is_err());
    }

    fn binary_reply(ids: &[i64], d: &[f32], nq: usize) -> Msg {
        Msg::default()
            .with("num_queries", nq as u64)
            .with("labels", Value::Binary(protocol::i64_bytes(ids)))
            .with("distances", Value::Binary(protocol::f32_bytes(d)))
    }

    #[test]
    fn binary_replies_merge_into_the_best_k_in_metric_order() {
        // Two queries, k = 2, two shards.
        let a = binary_reply(&[0, 1, 2, -1], &[0.5, 2.0, 1.0, f32::INFINITY], 2);
        let b = binary_reply(&[0, 1, 0, 1], &[1.0, 3.0, 0.1, 0.2], 2);
        let m = merge_search(&[(0, a.clone()), (1, b.clone())], 2, false, &|s, i| global_id(i, s, 2)).unwrap();
        let ids = protocol::i64_from_bytes(match m.get("labels") {
            Some(Value::Binary(b)) => b,
            _ => panic!(),
        })
        .unwrap();
        assert_eq!(ids, vec![0, 1, 1, 3]);
        // Inner product: the largest first.
        let m = merge_search(&[(0, a), (1, b)], 2, true, &|s, i| global_id(i, s, 2)).unwrap();
        let ids = protocol::i64_from_bytes(match m.get("labels") {
            Some(Value::Binary(b)) => b,
            _ => panic!(),
        })
        .unwrap();
        assert_eq!(ids, vec![3, 2, 4, 3]);
    }

    #[test]
    fn equal_distances_on_different_shards_are_ordered_and_cut_by_id() {
        // One query, k = 2: global ids 4 (shard 0) and 1, 3 (shard 1) all at distance 1.
        let a = binary_reply(&[2], &[1.0], 1);
        let b = binary_reply(&[0, 1], &[1.0, 1.0], 1);
        let ids = |m: Msg| {
            protocol::i64_from_bytes(match m.get("labels") {
                Some(Value::Binary(b)) => b,
                _ => panic!(),
            })
            .unwrap()
        };
        let l2 = merge_search(&[(0, a.clone()), (1, b.clone())], 2, false, &|s, i| global_id(i, s, 2)).unwrap();
        assert_eq!(ids(l2), vec![1, 3]);
        let ip = merge_search(&[(0, a), (1, b)], 2, true, &|s, i| global_id(i, s, 2)).unwrap();
        assert_eq!(ids(ip), vec![4, 3]);
    }

    #[test]
    fn nested_replies_merge_with_string_ids_and_metadata() {
        let res = |ids: Vec<Value>, d: Vec<f32>, md: Vec<Value>| {
            Msg::default()
                .with(
                    "results",
                    Value::Array(vec![Msg::default()
                        .with("indices", Value::Array(ids))
                        .with("distances", protocol::floats_value(&d))
                        .with("metadata", Value::Array(md))
                        .into_value()]),
                )
                .with("num_queries", 1u64)
        };
        let a = res(vec![Value::from("x"), Value::from("y")], vec![1.0, 4.0], vec![Value::from(1), Value::from(2)]);
        let b = res(vec![Value::from("z"), Value::Nil], vec![2.0, f32::INFINITY], vec![Value::from(3), Value::Nil]);
        let m = merge_search(&[(0, a), (1, b)], 3, false, &|_, i| i).unwrap();
        let r = Msg::from_value(array(m.get("results"))[0].clone()).unwrap();
        let ids: Vec<String> = array(r.get("indices")).iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(ids, vec!["x", "z", "y"]);
        assert_eq!(array(r.get("metadata")), vec![Value::from(1), Value::from(3), Value::from(2)]);
    }
}
