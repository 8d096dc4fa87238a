//! Per-(tenant, action) request counts and latencies, for the `metrics` action. Each tenant
//! sees only its own traffic.

use super::Action;
use crate::engine::protocol::{Msg, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Requests and latencies of one (tenant, action).
struct ActionStats {
    count: u64,
    errors: u64,
    /// Latencies in microseconds since the server started, to 2 significant digits (an HDR
    /// histogram: a few KiB whatever the number of requests).
    latency_us: hdrhistogram::Histogram<u64>,
}

impl Default for ActionStats {
    fn default() -> ActionStats {
        let latency_us = hdrhistogram::Histogram::new(2).expect("invariant: 2 significant digits is valid");
        ActionStats { count: 0, errors: 0, latency_us }
    }
}

/// The name a request is counted under: an [`Action`] name (aliases under their canonical
/// name), `invalid` or `busy` (net.rs's names for requests refused before they had an
/// action), and `other` for anything else, so a client cannot grow a table (or a metric's
/// labels) with made-up names.
pub fn action_label(action: &str) -> &'static str {
    match Action::parse(action) {
        Some(a) => a.name(),
        None if action == "invalid" => "invalid",
        None if action == "busy" => "busy",
        None => "other",
    }
}

/// Counts and latencies keyed by (tenant, action name).
#[derive(Default)]
pub struct Stats {
    by_key: Mutex<HashMap<(String, &'static str), ActionStats>>,
}

impl Stats {
    /// Record one finished request under [`action_label`]`(action)`.
    pub fn record(&self, tenant: &str, action: &str, took: Duration, ok: bool) {
        let name = action_label(action);
        let mut st = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let a = st.entry((tenant.to_string(), name)).or_default();
        a.count += 1;
        if !ok {
            a.errors += 1;
        }
        // Auto-resizing: a value past the range grows it; `record` cannot fail then.
        let _ = a.latency_us.record(took.as_micros().min(u64::MAX as u128) as u64);
    }

    /// The `metrics` reply for `tenant`: `requests`, `errors`, and per action `count`,
    /// `errors`, `p50_ms`, `p99_ms` (since the server started, to 2 significant digits).
    pub fn reply(&self, tenant: &str, uptime_s: f64) -> Msg {
        let st = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&(String, &'static str)> = st.keys().filter(|(t, _)| t == tenant).collect();
        names.sort();
        let (mut requests, mut errors) = (0u64, 0u64);
        let actions = names
            .into_iter()
            .map(|n| {
                let a = &st[n];
                requests += a.count;
                errors += a.errors;
                let pct = |p: f64| a.latency_us.value_at_quantile(p) as f64 / 1000.0;
                (
                    Value::from(n.1),
                    Msg::default()
                        .with("count", a.count)
                        .with("errors", a.errors)
                        .with("p50_ms", pct(0.5))
                        .with("p99_ms", pct(0.99))
                        .into_value(),
                )
            })
            .collect();
        Msg::default()
            .with("tenant", tenant)
            .with("requests", requests)
            .with("errors", errors)
            .with("uptime_s", uptime_s)
            .with("actions", Value::Map(actions))
    }
}
