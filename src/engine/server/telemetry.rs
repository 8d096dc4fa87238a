//! The server's Prometheus metrics, served at `/metrics` by `serve --http-port` (`http.rs`)
//! in the Prometheus text format (0.0.4), or in OpenMetrics text to clients that ask for it
//! (`Accept: application/openmetrics-text`, as Prometheus itself does).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client, rather than
//! `metrics-exporter-prometheus`: it keeps an explicit registry per server (no process-wide
//! recorder, so library users and tests can run several servers), needs no async runtime and
//! brings four small crates.
//!
//! Request counters and latency histograms are fed where the `metrics` action's per-tenant
//! stats are ([`Service::record`]); the gauges (indices, vectors, bytes, WAL, checkpoint
//! age, RSS) are read at scrape time from the registry's atomics, so a scrape never waits
//! for an index's lock and never slows a request.
//!
//! Label values are bounded whatever clients send: `action` is a
//! `stats::action_label` name, `code` an `error_code`, and `tenant`
//! one of the first [`MAX_TENANT_LABELS`] tenants seen (later ones count under `_other`;
//! requests refused before their tenant was known, under `_none`).

use super::stats::action_label;
use super::Service;
use crate::engine::protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

/// Distinct tenants that get a label of their own; later tenants count under `_other`.
pub const MAX_TENANT_LABELS: usize = 1000;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The content type of [`Telemetry::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`Telemetry::render_prometheus`]'s text.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionTenant {
    action: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionTenantCode {
    action: String,
    tenant: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionOnly {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantOnly {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberOnly {
    member: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// `serve --cluster` gauges (empty on a single node).
#[derive(Default)]
struct ClusterGauges {
    applied: Family<MemberOnly, Gauge>,
    lag: Family<MemberOnly, Gauge>,
    log_last: Family<MemberOnly, Gauge>,
    reachable: Family<MemberOnly, Gauge>,
    failed: Family<MemberOnly, Gauge>,
    snapshot_age: Family<MemberOnly, GaugeF>,
}

impl ClusterGauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "faissx_cluster_applied_seq",
            "serve --cluster: last log sequence applied, by member (from heartbeats; this replica as of now)",
            self.applied.clone(),
        );
        r.register("faissx_cluster_lag", "serve --cluster: log records not yet applied, by member", self.lag.clone());
        r.register(
            "faissx_cluster_log_last_seq",
            "serve --cluster: the log's last sequence as this replica last saw it (member: this replica)",
            self.log_last.clone(),
        );
        r.register(
            "faissx_cluster_log_reachable",
            "serve --cluster: 1 while the log (NATS JetStream) answers, 0 while writes get UNAVAILABLE",
            self.reachable.clone(),
        );
        r.register(
            "faissx_cluster_failed_records",
            "serve --cluster: log records that failed to apply (alike on every replica) since start",
            self.failed.clone(),
        );
        r.register(
            "faissx_cluster_snapshot_age_seconds",
            "serve --cluster: age of the newest snapshot",
            self.snapshot_age.clone(),
        );
    }

    fn fill(&self, v: &super::cluster::ClusterView) {
        for (name, applied) in &v.members {
            let l = MemberOnly { member: name.clone() };
            self.applied.get_or_create(&l).set(*applied as i64);
            self.lag.get_or_create(&l).set(v.log_last.saturating_sub(*applied) as i64);
        }
        let me = MemberOnly { member: v.replica.clone() };
        self.log_last.get_or_create(&me).set(v.log_last as i64);
        self.reachable.get_or_create(&me).set(i64::from(v.reachable));
        self.failed.get_or_create(&me).set(v.failed as i64);
        if let Some(a) = v.snapshot_age_s {
            self.snapshot_age.get_or_create(&me).set(a);
        }
    }
}

/// The metrics registry of one server, with its readiness.
pub struct Telemetry {
    registry: Registry,
    requests: Family<ActionTenant, Counter>,
    errors: Family<ActionTenantCode, Counter>,
    latency: Family<ActionOnly, Histogram, fn() -> Histogram>,
    auth_failures: Counter,
    ready_gauge: Gauge,
    indices: Family<TenantOnly, Gauge>,
    quarantined: Family<TenantOnly, Gauge>,
    vectors: Family<TenantOnly, Gauge>,
    vector_bytes: Family<TenantOnly, Gauge>,
    wal_bytes: Family<TenantOnly, Gauge>,
    checkpoint_age: Family<TenantOnly, GaugeF>,
    cluster: ClusterGauges,
    rss: Gauge,
    uptime: GaugeF,
    ready: AtomicBool,
    started: Instant,
    /// Whether requests are counted (a server without `--http-port` skips the work).
    recording: bool,
    /// Tenants with a label of their own.
    tenants: RwLock<HashSet<String>>,
    /// The service whose indices the gauges describe (set once it is restored).
    service: OnceLock<Weak<Service>>,
    /// One scrape at a time (gauges are cleared and refilled).
    scrape: Mutex<()>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry::new()
    }
}

impl Telemetry {
    /// A registry with every metric registered (not ready, no service yet).
    pub fn new() -> Telemetry {
        Telemetry::with_recording(true)
    }

    /// [`Telemetry::new`]; with `recording` false, [`Telemetry::record`] does nothing (for
    /// a server whose metrics nobody can read: no `--http-port`).
    pub fn with_recording(recording: bool) -> Telemetry {
        let mut registry = Registry::default();
        let requests = Family::<ActionTenant, Counter>::default();
        let errors = Family::<ActionTenantCode, Counter>::default();
        let latency = Family::<ActionOnly, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let auth_failures = Counter::default();
        let ready_gauge = Gauge::default();
        let (indices, quarantined, vectors, vector_bytes, wal_bytes) =
            (Family::default(), Family::default(), Family::default(), Family::default(), Family::default());
        let checkpoint_age = Family::<TenantOnly, GaugeF>::default();
        let (rss, uptime) = (Gauge::default(), GaugeF::default());
        registry.register(
            "faissx_requests",
            "Requests answered, by action and tenant (tenant _none: refused before authentication)",
            requests.clone(),
        );
        registry.register(
            "faissx_request_errors",
            "Requests answered with an error, by action, tenant and error_code",
            errors.clone(),
        );
        registry.register(
            "faissx_request_duration_seconds",
            "Time from a request's arrival to its reply, by action",
            latency.clone(),
        );
        registry.register(
            "faissx_auth_failures",
            "Requests refused for a missing or unknown API key",
            auth_failures.clone(),
        );
        registry.register(
            "faissx_ready",
            "1 once every persisted index is restored, 0 before and while stopping",
            ready_gauge.clone(),
        );
        registry.register("faissx_indices", "Indices served, by tenant", indices.clone());
        registry.register(
            "faissx_quarantined_indices",
            "Indices found damaged at start-up (files kept, requests refused), by tenant",
            quarantined.clone(),
        );
        registry.register("faissx_vectors", "Vectors stored (sum of ntotal), by tenant", vectors.clone());
        registry.register(
            "faissx_vector_bytes",
            "Estimated bytes of stored vectors (4*d per float vector, d/8 per binary one; compressed indices use less), by tenant",
            vector_bytes.clone(),
        );
        registry.register(
            "faissx_wal_bytes",
            "Bytes in write-ahead logs not yet checkpointed (with --data-dir), by tenant",
            wal_bytes.clone(),
        );
        registry.register(
            "faissx_checkpoint_age_seconds",
            "Age of the oldest checkpoint whose write-ahead log holds newer records (0: all checkpoints current), by tenant",
            checkpoint_age.clone(),
        );
        let cluster = ClusterGauges::default();
        cluster.register(&mut registry);
        registry.register("faissx_uptime_seconds", "Seconds since the server started", uptime.clone());
        registry.register("process_resident_memory_bytes", "Resident memory of the server process", rss.clone());
        Telemetry {
            registry,
            requests,
            errors,
            latency,
            auth_failures,
            ready_gauge,
            indices,
            quarantined,
            vectors,
            vector_bytes,
            wal_bytes,
            checkpoint_age,
            cluster,
            rss,
            uptime,
            ready: AtomicBool::new(false),
            started: Instant::now(),
            recording,
            tenants: RwLock::new(HashSet::new()),
            service: OnceLock::new(),
            scrape: Mutex::new(()),
        }
    }

    /// Describe `svc`'s indices from now on (held weakly: the service owns this registry).
    pub fn attach(&self, svc: &std::sync::Arc<Service>) {
        let _ = self.service.set(std::sync::Arc::downgrade(svc));
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Set readiness: true once every persisted index is restored and the socket bound,
    /// false again when the server starts stopping.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.ready_gauge.set(i64::from(ready));
    }

    /// The label of `tenant`: itself while fewer than [`MAX_TENANT_LABELS`] have one,
    /// `_none` for the empty tenant (not yet authenticated), else `_other`.
    fn tenant_label(&self, tenant: &str) -> String {
        if tenant.is_empty() {
            return "_none".into();
        }
        if self.tenants.read().unwrap_or_else(|p| p.into_inner()).contains(tenant) {
            return tenant.to_string();
        }
        let mut known = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        if known.contains(tenant) {
            return tenant.to_string();
        }
        if known.len() < MAX_TENANT_LABELS {
            known.insert(tenant.to_string());
            return tenant.to_string();
        }
        "_other".into()
    }

    /// Count one finished request (`error`: its error code, if it failed).
    pub fn record(&self, tenant: &str, action: &str, took: Duration, error: Option<ErrorCode>) {
        if !self.recording {
            return;
        }
        let action = action_label(action).to_string();
        let tenant = self.tenant_label(tenant);
        self.latency.get_or_create(&ActionOnly { action: action.clone() }).observe(took.as_secs_f64());
        if let Some(code) = error {
            if code == ErrorCode::Auth {
                self.auth_failures.inc();
            }
            let key = ActionTenantCode { action: action.clone(), tenant: tenant.clone(), code: code.as_str().into() };
            self.errors.get_or_create(&key).inc();
        }
        self.requests.get_or_create(&ActionTenant { action, tenant }).inc();
    }

    /// The metrics as OpenMetrics text (ending in `# EOF`), gauges read now.
    pub fn render(&self) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.rss.set(resident_bytes().unwrap_or(0) as i64);
        for f in [&self.indices, &self.quarantined, &self.vectors, &self.vector_bytes, &self.wal_bytes] {
            f.clear();
        }
        self.checkpoint_age.clear();
        // Members come and go: their gauges are refilled from the newest heartbeats.
        let c = &self.cluster;
        for f in [&c.applied, &c.lag, &c.log_last, &c.reachable, &c.failed] {
            f.clear();
        }
        c.snapshot_age.clear();
        if let Some(svc) = self.service.get().and_then(Weak::upgrade) {
            self.fill_gauges(&svc);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics in the Prometheus text format 0.0.4 (what `curl` and older scrapers
    /// read): [`Telemetry::render`]'s text with counter families named by their `_total`
    /// samples and without `# EOF`; everything else is the same in both formats.
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render())
    }

    fn fill_gauges(&self, svc: &Service) {
        #[derive(Default)]
        struct Sums {
            indices: i64,
            vectors: i64,
            bytes: i64,
            wal: i64,
            age: f64,
        }
        let mut by: HashMap<String, Sums> = HashMap::new();
        let entries: Vec<(String, std::sync::Arc<super::Entry>)> = svc
            .indices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((t, _), e)| (t.clone(), e.clone()))
            .collect();
        for (t, e) in entries {
            let s = by.entry(self.tenant_label(&t)).or_default();
            let n = e.ntotal.load(Ordering::Relaxed) as i64;
            s.indices += 1;
            s.vectors += n;
            s.bytes += n.saturating_mul(e.bytes_per_vector as i64);
            if let Some(d) = &e.disk {
                let wal = d.wal_bytes();
                s.wal += wal as i64;
                if wal > 0 {
                    s.age = s.age.max(d.checkpoint_age_s());
                }
            }
        }
        for (t, s) in by {
            let l = TenantOnly { tenant: t };
            self.indices.get_or_create(&l).set(s.indices);
            self.vectors.get_or_create(&l).set(s.vectors);
            self.vector_bytes.get_or_create(&l).set(s.bytes);
            self.wal_bytes.get_or_create(&l).set(s.wal);
            self.checkpoint_age.get_or_create(&l).set(s.age);
        }
        let quarantined: Vec<String> =
            svc.quarantined.read().unwrap_or_else(|p| p.into_inner()).keys().map(|(t, _)| t.clone()).collect();
        for t in quarantined {
            self.quarantined.get_or_create(&TenantOnly { tenant: self.tenant_label(&t) }).inc();
        }
        if let Some(c) = svc.cluster.get() {
            self.cluster.fill(&c.view());
        }
    }
}

/// OpenMetrics text (as `prometheus-client` writes it: no `_created` samples, no exemplars,
/// no units) as Prometheus text 0.0.4.
fn openmetrics_to_prometheus(om: &str) -> String {
    let counters: HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{p}{name}{total} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Resident memory of this process in bytes (Linux `/proc/self/status`; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_with_bounded_labels() {
        let t = Telemetry::new();
        t.record("acme", "search", Duration::from_millis(2), None);
        t.record("acme", "list_indexes", Duration::from_millis(1), Some(ErrorCode::NotFound));
        t.record("", "made-up", Duration::from_millis(1), Some(ErrorCode::Auth));
        let text = t.render();
        assert!(text.contains(r#"faissx_requests_total{action="search",tenant="acme"} 1"#), "{text}");
        assert!(text.contains(r#"faissx_request_errors_total{action="list_indices",tenant="acme",code="NOT_FOUND"} 1"#));
        assert!(text.contains(r#"faissx_requests_total{action="other",tenant="_none"} 1"#));
        assert!(text.contains("faissx_auth_failures_total 1"));
        assert!(text.contains(r#"faissx_request_duration_seconds_bucket{le="0.0025",action="search"} 1"#), "{text}");
        assert!(text.contains("faissx_ready 0"));
        assert!(text.ends_with("# EOF\n"));
        t.set_ready(true);
        assert!(t.render().contains("faissx_ready 1"));
        let p = t.render_prometheus();
        assert!(p.contains("# TYPE faissx_requests_total counter\n"), "{p}");
        assert!(p.contains("# HELP faissx_auth_failures_total Requests refused"));
        assert!(p.contains("# TYPE faissx_request_duration_seconds histogram\n"));
        assert!(!p.contains("# EOF"));
        assert!(resident_bytes().unwrap() > 0);
    }

    #[test]
    fn tenants_past_the_cap_share_one_label() {
        let t = Telemetry::new();
        for i in 0..MAX_TENANT_LABELS + 5 {
            t.record(&format!("t{i}"), "ping", Duration::ZERO, None);
        }
        let text = t.render();
        assert!(text.contains(r#"faissx_requests_total{action="ping",tenant="_other"} 5"#));
        assert!(text.contains(r#"tenant="t0""#));
    }
}
