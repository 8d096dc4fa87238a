//! Server-wide actions that take no index lock (`ping`, `health`, `metrics`,
//! `list_indices`): answered on the I/O thread from the registry's atomics.

use super::{Action, Call, Entry, Service};
use crate::engine::error::Result;
use crate::engine::protocol::{self, Msg, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Service {
    /// Answer an [`ActionClass::Admin`](super::ActionClass::Admin) action (never waits for
    /// an index lock). Only the caller's tenant is reported.
    pub fn admin(&self, call: &Call) -> Result<Msg> {
        match call.action {
            Action::Ping => Ok(Msg::default().with("message", "pong").with("time", protocol::now_f64())),
            Action::Health => {
                let (mut n, mut v) = (0u64, 0u64);
                for ((t, _), e) in self.indices.read().unwrap_or_else(|p| p.into_inner()).iter() {
                    if *t == call.tenant {
                        n += 1;
                        v += e.ntotal.load(Ordering::Relaxed) as u64;
                    }
                }
                let quarantined: Vec<Value> = self
                    .quarantined_of(&call.tenant)
                    .into_iter()
                    .map(|(id, reason)| Msg::default().with("index_id", id).with("reason", reason).into_value())
                    .collect();
                let mut out = Msg::default();
                if let Some(c) = self.cluster.get() {
                    out = out.with("cluster", c.health(&call.tenant).into_value());
                }
                Ok(out
                    .with("status", if quarantined.is_empty() { "ok" } else { "degraded" })
                    .with("uptime_s", self.started.elapsed().as_secs_f64())
                    .with("indexes", n)
                    .with("vectors", v)
                    .with("protocol_version", protocol::PROTOCOL_VERSION)
                    .with("persistent", self.store.is_some() || self.cluster.get().is_some())
                    .with("transfers", self.transfers.open_sessions(&call.tenant) as u64)
                    .with("quarantined", Value::Array(quarantined)))
            }
            Action::Metrics => Ok(self.stats.reply(&call.tenant, self.started.elapsed().as_secs_f64())),
            Action::ListIndices => {
                let map = self.indices.read().unwrap_or_else(|p| p.into_inner());
                let rows: Vec<(&String, &Arc<Entry>)> =
                    map.iter().filter(|((t, _), _)| *t == call.tenant).map(|((_, id), e)| (id, e)).collect();
                let mut list: Vec<(String, Value)> = rows
                    .into_iter()
                    .map(|(id, e)| {
                        let row = Msg::default()
                            .with("index_id", id.as_str())
                            .with("dimension", e.d as u64)
                            .with("vector_count", e.ntotal.load(Ordering::Relaxed) as u64)
                            .with("type", e.kind.as_str())
                            .with("is_trained", e.trained.load(Ordering::Relaxed))
                            .with("status", "ok");
                        (id.clone(), row.into_value())
                    })
                    .collect();
                drop(map);
                // Quarantined indices are listed too, with why they are not served.
                for (id, reason) in self.quarantined_of(&call.tenant) {
                    let row = Msg::default()
                        .with("index_id", id.as_str())
                        .with("status", "quarantined")
                        .with("reason", reason);
                    list.push((id, row.into_value()));
                }
                list.sort_by(|a, b| a.0.cmp(&b.0));
                let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
                Ok(Msg::default().with("indexes", Value::Array(list)))
            }
            other => Err(super::misrouted(other)),
        }
    }
}
