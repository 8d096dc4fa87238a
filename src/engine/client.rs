//! The client side of ../shared/protocol.md: a DEALER socket with send and receive timeouts,
//! linger 0, and typed calls that send vectors and ids as binary payloads (our extension).
//! One request is outstanding at a time; after a timeout the socket is replaced, so a late
//! reply can never be mistaken for the answer to the next request.

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{Neighbors, RangeHits};
use crate::engine::protocol::{self, Encoding, Msg, Value};
use std::time::Duration;

/// Where and who to connect as.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server endpoint, e.g. `tcp://127.0.0.1:45678`.
    pub server: String,
    /// API key, sent with every request when set.
    pub api_key: Option<String>,
    /// Tenant id, sent with every request when set (ignored by servers with auth on).
    pub tenant: Option<String>,
    /// How long to wait for each reply.
    pub timeout: Duration,
}

/// A connection to `faissx serve`.
pub struct Client {
    ctx: zmq::Context,
    sock: Option<zmq::Socket>,
    cfg: ClientConfig,
}

fn zerr(what: &str, e: zmq::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what}: {e}"))
}

impl Client {
    /// Prepare a connection (ZeroMQ connects lazily; the first call reports an absent server
    /// as a timeout).
    pub fn connect(cfg: ClientConfig) -> Result<Client> {
        if !(cfg.server.starts_with("tcp://")
            || cfg.server.starts_with("ipc://")
            || cfg.server.starts_with("inproc://"))
        {
            return Err(Error::invalid(format!(
                "--server {:?}: expected an endpoint like tcp://127.0.0.1:45678",
                cfg.server
            )));
        }
        let mut c = Client { ctx: zmq::Context::new(), sock: None, cfg };
        c.socket()?;
        Ok(c)
    }

    fn socket(&mut self) -> Result<&zmq::Socket> {
        if self.sock.is_none() {
            let s = self.ctx.socket(zmq::DEALER).map_err(|e| zerr("creating socket", e))?;
            let ms = self.cfg.timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
            s.set_linger(0).map_err(|e| zerr("socket option", e))?;
            s.set_rcvtimeo(ms).map_err(|e| zerr("socket option", e))?;
            s.set_sndtimeo(ms).map_err(|e| zerr("socket option", e))?;
            s.connect(&self.cfg.server).map_err(|e| zerr(&format!("connecting to {}", self.cfg.server), e))?;
            self.sock = Some(s);
        }
        Ok(self.sock.as_ref().expect("invariant: socket just created"))
    }

    /// The configured endpoint.
    pub fn server(&self) -> &str {
        &self.cfg.server
    }

    /// Send one request and wait for its reply. Error replies become [`Error`]s of the kind
    /// their `error_code` names; no reply within the timeout is [`ErrorKind::Timeout`].
    pub fn call(&mut self, action: &str, mut fields: Vec<(&str, Value)>) -> Result<Msg> {
        if let Some(k) = &self.cfg.api_key {
            fields.push(("api_key", Value::from(k.as_str())));
        }
        if let Some(t) = &self.cfg.tenant {
            fields.push(("tenant_id", Value::from(t.as_str())));
        }
        let req = protocol::encode_request(action, fields);
        self.call_raw(&req)
    }

    /// Send pre-encoded request bytes (benchmarks, tests) and decode the reply.
    pub fn call_raw(&mut self, req: &[u8]) -> Result<Msg> {
        let timeout = self.cfg.timeout;
        let server = self.cfg.server.clone();
        let sock = self.socket()?;
        let sent = sock.send_multipart([&[][..], req], 0);
        let frames = sent.and_then(|_| sock.recv_multipart(0));
        match frames {
            Ok(mut f) => {
                let payload = f.pop().unwrap_or_default();
                protocol::decode_reply(&payload)
            }
            Err(zmq::Error::EAGAIN) => {
                self.sock = None;
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "no reply from {server} within {:.1} s (is `faissx serve` running there?)",
                        timeout.as_secs_f64()
                    ),
                ))
            }
            Err(e) => {
                self.sock = None;
                Err(zerr(&format!("talking to {server}"), e))
            }
        }
    }

    /// `ping`.
    pub fn ping(&mut self) -> Result<Msg> {
        self.call("ping", vec![])
    }

    /// `create_index`.
    pub fn create(&mut self, id: &str, d: usize, index_type: &str, metric: Option<&str>) -> Result<Msg> {
        let mut f = vec![
            ("index_id", Value::from(id)),
            ("dimension", Value::from(d as u64)),
            ("index_type", Value::from(index_type)),
        ];
        if let Some(m) = metric {
            f.push(("metric", Value::from(m)));
        }
        self.call("create_index", f)
    }

    /// `add_vectors` with binary payloads: `x` is `n × d`.
    pub fn add(&mut self, id: &str, x: &[f32], d: usize, ids: Option<&[i64]>, md: Option<Vec<Value>>) -> Result<Msg> {
        let mut f = vec![("index_id", Value::from(id)), ("vectors", protocol::vectors_value(x, d, Encoding::Binary))];
        if let Some(ids) = ids {
            f.push(("ids", Value::Binary(protocol::i64_bytes(ids))));
        }
        if let Some(md) = md {
            f.push(("metadata", Value::Array(md)));
        }
        self.call("add_vectors", f)
    }

    /// `train_index` with a binary payload.
    pub fn train(&mut self, id: &str, x: &[f32], d: usize) -> Result<Msg> {
        self.call(
            "train_index",
            vec![("index_id", Value::from(id)), ("training_vectors", protocol::vectors_value(x, d, Encoding::Binary))],
        )
    }

    /// k-NN `search` with binary query and result payloads. `params` may hold `nprobe`,
    /// `efSearch`. With `include_metadata`, also returns each hit's metadata.
    pub fn search(
        &mut self,
        id: &str,
        q: &[f32],
        d: usize,
        k: usize,
        params: Vec<(&str, Value)>,
        include_metadata: bool,
    ) -> Result<(Neighbors, Option<Vec<Value>>)> {
        let mut f = vec![
            ("index_id", Value::from(id)),
            ("query_vectors", protocol::vectors_value(q, d, Encoding::Binary)),
            ("k", Value::from(k as u64)),
            ("binary", Value::Boolean(true)),
        ];
        if !params.is_empty() {
            f.push(("params", Msg::from_pairs(params).into_value()));
        }
        if include_metadata {
            f.push(("include_metadata", Value::Boolean(true)));
        }
        let r = self.call("search", f)?;
        let nq = r.uint("num_queries")?.unwrap_or(0) as usize;
        let kk = r.uint("k")?.unwrap_or(k as u64) as usize;
        let (dists, ids) = match (r.get("distances"), r.get("labels")) {
            (Some(Value::Binary(d)), Some(Value::Binary(l))) => {
                (protocol::f32_from_bytes(d)?, protocol::i64_from_bytes(l)?)
            }
            _ => return Err(Error::new(ErrorKind::Protocol, "search reply lacks binary distances/labels")),
        };
        if ids.len() != nq * kk || dists.len() != nq * kk {
            return Err(Error::new(ErrorKind::Protocol, "search reply has the wrong number of results"));
        }
        let md = match r.get("metadata") {
            Some(Value::Array(a)) => Some(a.clone()),
            _ => None,
        };
        Ok((Neighbors { nq, k: kk, ids, dists }, md))
    }

    /// `range_search`.
    pub fn range_search(&mut self, id: &str, q: &[f32], d: usize, radius: f32) -> Result<RangeHits> {
        let r = self.call(
            "range_search",
            vec![
                ("index_id", Value::from(id)),
                ("query_vectors", protocol::vectors_value(q, d, Encoding::Binary)),
                ("radius", Value::F64(radius as f64)),
            ],
        )?;
        let lims: Vec<usize> = r.ids("lims")?.unwrap_or_default().into_iter().map(|v| v.max(0) as usize).collect();
        let ids = r.ids("indices")?.unwrap_or_default();
        let dists = match r.get("distances") {
            Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN) as f32).collect(),
            _ => Vec::new(),
        };
        if lims.last().copied().unwrap_or(0) != ids.len() || ids.len() != dists.len() {
            return Err(Error::new(ErrorKind::Protocol, "range search reply is inconsistent"));
        }
        Ok(RangeHits { lims, ids, dists })
    }

    /// The dimension of index `id` (from `get_index_status`).
    pub fn dimension(&mut self, id: &str) -> Result<usize> {
        let r = self.call("get_index_status", vec![("index_id", Value::from(id))])?;
        Ok(r.uint("dimension")?.unwrap_or(0) as usize)
    }
}
