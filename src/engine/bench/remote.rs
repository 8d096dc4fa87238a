//! Benchmarking a running `faissx serve` (`faissx bench --server URL --index NAME`): recall and
//! batch QPS through one connection, then single-query latency and throughput with N
//! concurrent clients, each on its own connection with up to `pipeline` requests in flight,
//! taking queries from a shared counter.

use super::{record, BenchOptions, BuildCost, GroundTruth, Measured, Record, Setting};
use crate::engine::client::{search_reply, Client, ClientConfig};
use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::Neighbors;
use crate::engine::Progress;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Queries per request in batch mode (keeps requests well under server size limits).
const REMOTE_BATCH: usize = 1024;

/// The dimension of the remote index `index` (to check the queries before benchmarking).
pub fn remote_dimension(cfg: &ClientConfig, index: &str) -> Result<usize> {
    Client::connect(cfg.clone())?
        .get_index_status(index)
        .map(|s| s.dimension)
        .map_err(|e| e.context(format!("{}: index {index}", cfg.server)))
}

/// Sweep the settings (every combination of the given nprobe and efSearch values, or the
/// server's defaults) against index `index` on the server, with `clients` concurrent clients
/// in single-query mode, each keeping up to `pipeline` requests in flight.
#[allow(clippy::too_many_arguments)]
pub fn sweep_remote(
    cfg: &ClientConfig,
    index: &str,
    clients: usize,
    pipeline: usize,
    d: usize,
    queries: &[f32],
    gt: &GroundTruth,
    opts: &BenchOptions,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Vec<Record>> {
    let np: Vec<Option<usize>> =
        if opts.nprobe.is_empty() { vec![None] } else { opts.nprobe.iter().map(|&n| Some(n)).collect() };
    let ef: Vec<Option<usize>> =
        if opts.ef_search.is_empty() { vec![None] } else { opts.ef_search.iter().map(|&n| Some(n)).collect() };
    let target = format!("{}/{index}", cfg.server);
    let mut out = Vec::new();
    let mut main = Client::connect(cfg.clone())?;
    let clients = clients.max(1);
    for &n in &np {
        for &e in &ef {
            let s = Setting { nprobe: n, ef_search: e };
            let params = s.params(opts.k);
            progress.note(&format!(
                "{target}: {} with {clients} client(s), {pipeline} request(s) in flight each",
                s.label()
            ));
            // Batch mode: recall and batch QPS through one connection.
            let mut best = f64::INFINITY;
            let mut found = Neighbors::default();
            for _ in 0..opts.runs.max(1) {
                let t = Instant::now();
                let mut all = Neighbors { nq: 0, k: opts.k, ids: Vec::new(), dists: Vec::new() };
                for chunk in queries.chunks(REMOTE_BATCH.min(opts.batch.max(1)) * d) {
                    if stop.load(Ordering::Relaxed) {
                        return Err(Error::new(ErrorKind::Interrupted, "interrupted"));
                    }
                    let (r, _) = main.search(index, chunk, d, &params, false)?;
                    all.nq += r.nq;
                    all.ids.extend_from_slice(&r.ids);
                    all.dists.extend_from_slice(&r.dists);
                }
                best = best.min(t.elapsed().as_secs_f64());
                found = all;
            }
            // Single-query mode with `clients` concurrent connections.
            let nsingle = opts.single_queries.min(found.nq);
            let next = AtomicUsize::new(0);
            let lat = Mutex::new(Vec::with_capacity(nsingle));
            let failure: Mutex<Option<Error>> = Mutex::new(None);
            let wall = Instant::now();
            std::thread::scope(|sc| {
                for _ in 0..clients.min(nsingle.max(1)) {
                    sc.spawn(|| {
                        let mut c = match Client::connect(cfg.clone()) {
                            Ok(c) => c,
                            Err(e) => {
                                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                return;
                            }
                        };
                        let mut mine = Vec::new();
                        // Requests are encoded as the pipeline has room for them.
                        let requests = std::iter::from_fn(|| {
                            let q = next.fetch_add(1, Ordering::Relaxed);
                            if q >= nsingle || stop.load(Ordering::Relaxed) {
                                return None;
                            }
                            Some(cfg.search_request(index, &queries[q * d..(q + 1) * d], d, &params, false))
                        });
                        let run = c.pipeline(requests, pipeline, |_, r, took| {
                            search_reply(r?, opts.k)?;
                            mine.push(took.as_secs_f64() * 1e3);
                            Ok(())
                        });
                        if let Err(e) = run {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        }
                        lat.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
                    });
                }
            });
            let wall_s = wall.elapsed().as_secs_f64();
            if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
            let latencies_ms = lat.into_inner().unwrap_or_else(|p| p.into_inner());
            let m = Measured { found, qps_batch: queries.len() as f64 / d as f64 / best.max(1e-9), latencies_ms };
            let mut rec = record(&target, "remote", 1, clients, s, &m, gt, opts.k, &BuildCost::default());
            rec.pipeline = pipeline.max(1);
            // With concurrent clients, single-query QPS is the throughput of all of them.
            if rec.nq_single > 0 {
                rec.qps_single = Some(rec.nq_single as f64 / wall_s.max(1e-9));
            }
            out.push(rec);
        }
    }
    Ok(out)
}
