//! The client side of docs/protocol.md: a DEALER socket with send and receive timeouts,
//! linger 0, and typed calls that send vectors and ids as binary payloads (our extension).
//!
//! Every request goes out as `[sequence number, "", payload]`. The server's ROUTER hands the
//! envelope back unchanged (standard ZeroMQ request/reply envelopes, no protocol field), so
//! a reply names the request it answers: [`Client::pipeline`] keeps several requests in
//! flight on one connection, and a late reply to an abandoned request is recognised and
//! dropped. After a timeout the socket is replaced as well.

use crate::engine::error::{Error, ErrorKind, Result};
use crate::engine::index::{Neighbors, RangeHits, Rows, SearchParams};
use crate::engine::protocol::{self, Encoding, Msg, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Vectors a request carries, sent in our binary encoding (one `bin`): float rows
/// (`n × d` f32, row-major) for float indices, [`Rows::Codes`] (`n × d/8` bytes) for binary
/// ones.
pub trait Payload {
    /// The `bin` for vectors of dimension `d`.
    fn bin(&self, d: usize) -> Value;
}

impl Payload for [f32] {
    fn bin(&self, d: usize) -> Value {
        protocol::vectors_value(self, d, Encoding::Binary)
    }
}

impl<const N: usize> Payload for [f32; N] {
    fn bin(&self, d: usize) -> Value {
        self.as_slice().bin(d)
    }
}

impl Payload for Vec<f32> {
    fn bin(&self, d: usize) -> Value {
        self.as_slice().bin(d)
    }
}

impl Payload for Rows {
    fn bin(&self, d: usize) -> Value {
        protocol::rows_value(self, d, Encoding::Binary)
    }
}

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
    /// The server's CurveZMQ public key (`serve --curve-secret-key-file`): `Some` encrypts
    /// the connection and authenticates the server, with a fresh client key pair per socket;
    /// a server with another key (or none) never answers, so calls end in
    /// [`ErrorKind::Timeout`]. `None`: plain TCP.
    pub server_public_key: Option<crate::engine::curve::CurveKey>,
}

impl ClientConfig {
    /// Encode a request: `action`, `fields`, and the configured API key and tenant.
    pub fn request(&self, action: &str, mut fields: Vec<(&str, Value)>) -> Vec<u8> {
        if let Some(k) = &self.api_key {
            fields.push(("api_key", Value::from(k.as_str())));
        }
        if let Some(t) = &self.tenant {
            fields.push(("tenant_id", Value::from(t.as_str())));
        }
        protocol::encode_request(action, fields)
    }

    /// The encoded `search` request of [`Client::search`] (`q` is `nq × d`, row-major), for
    /// [`Client::pipeline`]; decode its reply with [`search_reply`].
    pub fn search_request(
        &self,
        id: &str,
        q: &(impl Payload + ?Sized),
        d: usize,
        params: &SearchParams,
        include_metadata: bool,
    ) -> Vec<u8> {
        self.filtered_search_request(id, q, d, params, include_metadata, None)
    }

    /// [`ClientConfig::search_request`] restricted to the vectors whose metadata matches
    /// `filter` (a msgpack map in the filter dialect of docs/protocol.md §4), when given.
    pub fn filtered_search_request(
        &self,
        id: &str,
        q: &(impl Payload + ?Sized),
        d: usize,
        params: &SearchParams,
        include_metadata: bool,
        filter: Option<&Value>,
    ) -> Vec<u8> {
        let mut f = vec![("index_id", Value::from(id)), ("query_vectors", q.bin(d)), ("binary", Value::Boolean(true))];
        f.extend(protocol::params::search_fields(params));
        if include_metadata {
            f.push(("include_metadata", Value::Boolean(true)));
        }
        if let Some(filter) = filter {
            f.push(("filter", filter.clone()));
        }
        self.request("search", f)
    }
}

/// A connection to `faissx serve`.
pub struct Client {
    ctx: zmq::Context,
    sock: Option<zmq::Socket>,
    cfg: ClientConfig,
    /// Sequence number of the next request (the first envelope frame).
    seq: u64,
}

fn zerr(what: &str, e: zmq::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what}: {e}"))
}

impl Client {
    /// Prepare a connection (ZeroMQ connects lazily; the first call reports an absent server
    /// as a timeout).
    pub fn connect(cfg: ClientConfig) -> Result<Client> {
        Client::connect_in(&zmq::Context::new(), cfg)
    }

    /// [`Client::connect`] with a socket of `ctx`: connections sharing one context share
    /// its I/O thread (the router's connections to its shards: one thread to wake per
    /// request instead of one per shard).
    pub fn connect_in(ctx: &zmq::Context, cfg: ClientConfig) -> Result<Client> {
        if !(cfg.server.starts_with("tcp://")
            || cfg.server.starts_with("ipc://")
            || cfg.server.starts_with("inproc://"))
        {
            return Err(Error::invalid(format!(
                "--server {:?}: expected an endpoint like tcp://127.0.0.1:45678",
                cfg.server
            )));
        }
        let mut c = Client { ctx: ctx.clone(), sock: None, cfg, seq: 0 };
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
            if let Some(server_key) = &self.cfg.server_public_key {
                let (public, secret) = crate::engine::curve::generate()?;
                s.set_curve_serverkey(server_key).map_err(|e| zerr("CurveZMQ server key", e))?;
                s.set_curve_publickey(&public).map_err(|e| zerr("CurveZMQ public key", e))?;
                s.set_curve_secretkey(&secret).map_err(|e| zerr("CurveZMQ secret key", e))?;
            }
            s.connect(&self.cfg.server).map_err(|e| zerr(&format!("connecting to {}", self.cfg.server), e))?;
            self.sock = Some(s);
        }
        Ok(self.sock.as_ref().expect("invariant: socket just created"))
    }

    /// The configured endpoint.
    pub fn server(&self) -> &str {
        &self.cfg.server
    }

    /// The configuration (to encode requests for [`Client::pipeline`]).
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Send one request and wait for its reply. Error replies become [`Error`]s of the kind
    /// their `error_code` names; no reply within the timeout is [`ErrorKind::Timeout`].
    pub fn call(&mut self, action: &str, fields: Vec<(&str, Value)>) -> Result<Msg> {
        // An owned buffer is handed to ZeroMQ without a copy.
        let req = self.cfg.request(action, fields);
        self.call_raw(req)
    }

    /// Send one pre-encoded request (`Vec<u8>` without a copy, `&[u8]` with one) and decode
    /// the reply.
    pub fn call_raw(&mut self, req: impl Into<zmq::Message>) -> Result<Msg> {
        let mut out = None;
        self.pipeline(std::iter::once(req), 1, |_, r, _| {
            out = Some(r);
            Ok(())
        })?;
        out.unwrap_or_else(|| Err(Error::new(ErrorKind::Protocol, "no reply")))
    }

    /// Send every request of `requests` (pre-encoded, e.g. by [`ClientConfig::request`]; owned
    /// buffers go to ZeroMQ without a copy) over this one connection with up to `window` of
    /// them awaiting a reply, and call `on_reply(i, reply, latency)` for each, in the order
    /// replies arrive (the server may answer out of order); `i` is the request's position in
    /// `requests`, `latency` the time from its send to its reply.
    /// Error replies are passed to `on_reply` as errors; an error returned by `on_reply`
    /// stops the pipeline and is returned (replies still in flight are then dropped). No
    /// reply within the timeout is [`ErrorKind::Timeout`].
    pub fn pipeline<B: Into<zmq::Message>>(
        &mut self,
        requests: impl IntoIterator<Item = B>,
        window: usize,
        mut on_reply: impl FnMut(usize, Result<Msg>, Duration) -> Result<()>,
    ) -> Result<()> {
        let mut requests = requests.into_iter();
        let window = window.max(1);
        // Sequence number -> (position in `requests`, send time).
        let mut pending: HashMap<u64, (usize, Instant)> = HashMap::with_capacity(window);
        let mut next = 0usize;
        let mut exhausted = false;
        loop {
            while !exhausted && pending.len() < window {
                let Some(req) = requests.next() else {
                    exhausted = true;
                    break;
                };
                let seq = self.send_raw(req)?;
                pending.insert(seq, (next, Instant::now()));
                next += 1;
            }
            if pending.is_empty() {
                return Ok(());
            }
            let frames = match self.socket()?.recv_multipart(0) {
                Ok(f) => f,
                Err(e) => return Err(self.failed(e)),
            };
            // [sequence number, "", reply]; anything else is a stale or foreign reply.
            let Some(seq) = frames.first().and_then(|f| <[u8; 8]>::try_from(&f[..]).ok()).map(u64::from_le_bytes)
            else {
                continue;
            };
            let Some((i, sent)) = pending.remove(&seq) else { continue };
            let took = sent.elapsed();
            let payload = frames.last().map(Vec::as_slice).unwrap_or_default();
            on_reply(i, protocol::decode_reply(payload), took)?;
        }
    }

    /// Send one pre-encoded request without waiting for its reply: its sequence number, for
    /// [`Client::receive`]. With one connection per server, one thread can so have a request
    /// in flight to several servers at once (the router's scatter).
    ///
    /// Errors: `Io` when ZeroMQ refuses the message, `Timeout` when it cannot be queued
    /// within the timeout.
    pub fn send_raw(&mut self, req: impl Into<zmq::Message>) -> Result<u64> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let sock = self.socket()?;
        let sent = sock
            .send(&seq.to_le_bytes()[..], zmq::SNDMORE)
            .and_then(|_| sock.send(&[][..], zmq::SNDMORE))
            .and_then(|_| sock.send(req.into(), 0));
        match sent {
            Ok(()) => Ok(seq),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Wait until `deadline` for the reply to request `seq` (from [`Client::send_raw`]) and
    /// decode it; replies to other requests are dropped. Error replies become [`Error`]s.
    ///
    /// Errors: `Timeout` when no reply came by `deadline` (the connection is then dropped,
    /// so a late reply cannot be taken for another's), `Io` for a broken connection or when
    /// the connection was dropped since the send.
    pub fn receive(&mut self, seq: u64, deadline: Instant) -> Result<Msg> {
        loop {
            let Some(sock) = self.sock.as_ref() else {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the connection to {} was dropped before its reply", self.cfg.server),
                ));
            };
            let frames = match sock.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.failed(zmq::Error::EAGAIN));
                    }
                    let ms = left.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64;
                    if let Err(e) = zmq::poll(&mut [sock.as_poll_item(zmq::POLLIN)], ms) {
                        return Err(self.failed(e));
                    }
                    continue;
                }
                Err(e) => return Err(self.failed(e)),
            };
            let got = frames.first().and_then(|f| <[u8; 8]>::try_from(&f[..]).ok()).map(u64::from_le_bytes);
            if got == Some(seq) {
                return protocol::decode_reply(frames.last().map(Vec::as_slice).unwrap_or_default());
            }
        }
    }

    /// Turn a socket error into the caller's error, dropping the socket (so nothing sent on
    /// it can be answered later).
    fn failed(&mut self, e: zmq::Error) -> Error {
        self.sock = None;
        let server = &self.cfg.server;
        match e {
            zmq::Error::EAGAIN => Error::new(
                ErrorKind::Timeout,
                format!(
                    "no reply from {server} within {:.1} s (is `faissx serve` running there?)",
                    self.cfg.timeout.as_secs_f64()
                ),
            ),
            e => zerr(&format!("talking to {server}"), e),
        }
    }

    /// `ping`: the reply (`message`, `time`).
    pub fn ping(&mut self) -> Result<Msg> {
        self.call("ping", vec![])
    }

    /// `health`: the reply (status, uptime, indices and vectors of this tenant).
    pub fn health(&mut self) -> Result<Msg> {
        self.call("health", vec![])
    }

    /// `metrics`: the reply (request counters and latency percentiles per action).
    pub fn metrics(&mut self) -> Result<Msg> {
        self.call("metrics", vec![])
    }

    /// `list_indices`: the reply (this tenant's indices).
    pub fn list_indices(&mut self) -> Result<Msg> {
        self.call("list_indices", vec![])
    }

    /// `create_index` of dimension `d` (bits for binary types) from a FAISSx type name or
    /// factory string, with an optional metric (`l2`, `ip`, `cosine`): the reply.
    pub fn create_index(&mut self, id: &str, d: usize, index_type: &str, metric: Option<&str>) -> Result<Msg> {
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

    /// `add_vectors` with binary payloads: `x` is `n × d`, with one id and one metadata value
    /// per vector when given.
    pub fn add_vectors(
        &mut self,
        id: &str,
        x: &(impl Payload + ?Sized),
        d: usize,
        ids: Option<&[i64]>,
        md: Option<Vec<Value>>,
    ) -> Result<Added> {
        let mut f = vec![("index_id", Value::from(id)), ("vectors", x.bin(d))];
        if let Some(ids) = ids {
            f.push(("ids", Value::Binary(protocol::i64_bytes(ids))));
        }
        if let Some(md) = md {
            f.push(("metadata", Value::Array(md)));
        }
        let r = self.call("add_vectors", f)?;
        Ok(Added { count: r.uint("count")?.unwrap_or(0), ntotal: r.uint("ntotal")?.unwrap_or(0), seq: r.uint("seq")? })
    }

    /// `add_vectors` with string ids (`keys`, one per vector of `x`, `n × d`): the server
    /// maps each to an int64 FAISS id and shows the strings in its replies.
    pub fn add_vectors_keyed(
        &mut self,
        id: &str,
        x: &(impl Payload + ?Sized),
        d: usize,
        keys: &[String],
        md: Option<Vec<Value>>,
    ) -> Result<Added> {
        let mut f = vec![
            ("index_id", Value::from(id)),
            ("vectors", x.bin(d)),
            ("ids", Value::Array(keys.iter().map(|k| Value::from(k.as_str())).collect())),
        ];
        if let Some(md) = md {
            f.push(("metadata", Value::Array(md)));
        }
        let r = self.call("add_vectors", f)?;
        Ok(Added { count: r.uint("count")?.unwrap_or(0), ntotal: r.uint("ntotal")?.unwrap_or(0), seq: r.uint("seq")? })
    }

    /// `train_index` on `x` (`n × d`) with a binary payload: the reply (`is_trained`,
    /// `trained_with`).
    pub fn train(&mut self, id: &str, x: &(impl Payload + ?Sized), d: usize) -> Result<Msg> {
        self.call("train_index", vec![("index_id", Value::from(id)), ("training_vectors", x.bin(d))])
    }

    /// k-NN `search` of `q` (`nq × d`) with binary query and result payloads: `params.k`
    /// neighbours per query, `nprobe`/`efSearch` when set. With `include_metadata`, also
    /// returns each hit's metadata (`nq` arrays of `k` values).
    pub fn search(
        &mut self,
        id: &str,
        q: &(impl Payload + ?Sized),
        d: usize,
        params: &SearchParams,
        include_metadata: bool,
    ) -> Result<(Neighbors, Option<Vec<Value>>)> {
        let req = self.cfg.search_request(id, q, d, params, include_metadata);
        search_reply(self.call_raw(req)?, params.k)
    }

    /// [`Client::search`] restricted to the vectors whose metadata matches `filter` (a
    /// msgpack map; `None`: no filter), decoded with the reply's string ids and filter path.
    ///
    /// Errors: `InvalidInput` (from the server) for a bad filter, an index without metadata,
    /// an unknown field or a type mismatch.
    pub fn search_filtered(
        &mut self,
        id: &str,
        q: &(impl Payload + ?Sized),
        d: usize,
        params: &SearchParams,
        include_metadata: bool,
        filter: Option<&Value>,
    ) -> Result<SearchReply> {
        let req = self.cfg.filtered_search_request(id, q, d, params, include_metadata, filter);
        decode_search_reply(self.call_raw(req)?, params.k)
    }

    /// `range_search` of `q` (`nq × d`): every stored vector within `radius` of each query
    /// (squared L2; similarity above `radius` for ip/cosine).
    pub fn range_search(&mut self, id: &str, q: &(impl Payload + ?Sized), d: usize, radius: f32) -> Result<RangeHits> {
        let r = self.call(
            "range_search",
            vec![("index_id", Value::from(id)), ("query_vectors", q.bin(d)), ("radius", Value::F64(radius as f64))],
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

    /// `reconstruct`: the stored vector of id `vid` as the server sends it (an array of
    /// floats, or of one 0/1 per bit for a binary index; nil when the reply has none).
    pub fn reconstruct(&mut self, id: &str, vid: i64) -> Result<Value> {
        let mut r = self.call("reconstruct", vec![("index_id", Value::from(id)), ("id", Value::from(vid))])?;
        Ok(r.take("vector").unwrap_or(Value::Nil))
    }

    /// `remove_ids`: the reply (`removed`, `ntotal`).
    pub fn remove_ids(&mut self, id: &str, ids: &[i64]) -> Result<Msg> {
        self.call("remove_ids", vec![("index_id", Value::from(id)), ("ids", protocol::ints_value(ids))])
    }

    /// `get_metadata` by string ids: the reply (`metadata`, one value per id, nil where
    /// none is stored or the index does not hold the id).
    pub fn get_metadata_keyed(&mut self, id: &str, keys: &[String]) -> Result<Msg> {
        let ids = Value::Array(keys.iter().map(|k| Value::from(k.as_str())).collect());
        self.call("get_metadata", vec![("index_id", Value::from(id)), ("ids", ids)])
    }

    /// `get_metadata`: the reply (`metadata`, one value per id, nil where none is stored).
    pub fn get_metadata(&mut self, id: &str, ids: &[i64]) -> Result<Msg> {
        self.call("get_metadata", vec![("index_id", Value::from(id)), ("ids", protocol::ints_value(ids))])
    }

    /// `get_index_status` of index `id`, typed.
    pub fn get_index_status(&mut self, id: &str) -> Result<IndexStatus> {
        IndexStatus::from_reply(&self.call("get_index_status", vec![("index_id", Value::from(id))])?)
    }

    /// `get_index_info`: the reply (the status plus storage and index metadata).
    pub fn get_index_info(&mut self, id: &str) -> Result<Msg> {
        self.call("get_index_info", vec![("index_id", Value::from(id))])
    }

    /// `set_parameter` `name` (`nprobe`, `efSearch`, `efConstruction`) of index `id` to
    /// `value`: the reply.
    pub fn set_parameter(&mut self, id: &str, name: &str, value: u64) -> Result<Msg> {
        self.call(
            "set_parameter",
            vec![("index_id", Value::from(id)), ("parameter", Value::from(name)), ("value", Value::from(value))],
        )
    }

    /// `delete_index`: the reply.
    pub fn delete_index(&mut self, id: &str) -> Result<Msg> {
        self.call("delete_index", vec![("index_id", Value::from(id))])
    }

    /// `snapshot` of index `id`, or of all of this tenant's indices: the reply.
    pub fn snapshot(&mut self, id: Option<&str>) -> Result<Msg> {
        self.call("snapshot", id.map(|i| vec![("index_id", Value::from(i))]).unwrap_or_default())
    }
}

/// The reply of [`Client::add_vectors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Vectors added by this request.
    pub count: u64,
    /// Vectors in the index afterwards.
    pub ntotal: u64,
    /// `serve --cluster`: the log sequence of the write (pass it as `min_seq` to read it
    /// back from any replica); `None` from a single-node server.
    pub seq: Option<u64>,
}

/// The reply of [`Client::get_index_status`]: what a client needs to send vectors to an
/// index and to decide whether it must be trained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// Vector dimension (bits for a binary index).
    pub dimension: usize,
    /// Vectors stored.
    pub ntotal: u64,
    /// Whether the index is trained (ready for vectors).
    pub is_trained: bool,
    /// Metric (`l2`, `ip`, `cosine`, or `hamming` for binary indices), when reported.
    pub metric: Option<String>,
    /// Inverted lists of an IVF index.
    pub nlist: Option<usize>,
}

impl IndexStatus {
    /// Decode a `get_index_status` reply.
    ///
    /// Errors: `InvalidInput` when `dimension`, `ntotal`, `is_trained` or `status` has the
    /// wrong type.
    pub fn from_reply(r: &Msg) -> Result<IndexStatus> {
        let st = r.map("status")?.unwrap_or_default();
        Ok(IndexStatus {
            dimension: r.uint("dimension")?.unwrap_or(0) as usize,
            ntotal: r.uint("ntotal")?.unwrap_or(0),
            is_trained: r.flag("is_trained")?,
            // Optional facts: a value of another type counts as absent.
            metric: st.str("metric").ok().flatten().map(str::to_string),
            nlist: st.uint("nlist").ok().flatten().map(|n| n as usize),
        })
    }

    /// Whether this is a binary (Hamming) index, whose vectors are codes of `dimension` bits.
    pub fn is_binary(&self) -> bool {
        self.metric.as_deref() == Some("hamming")
    }
}

/// Decode a binary `search` reply (requested with `k`): `nq × k` neighbours and, when the
/// request asked for it, each hit's metadata (`nq` arrays of `k` values).
pub fn search_reply(r: Msg, k: usize) -> Result<(Neighbors, Option<Vec<Value>>)> {
    decode_search_reply(r, k).map(|s| (s.neighbors, s.metadata))
}

/// A decoded binary `search` reply.
#[derive(Debug, Clone)]
pub struct SearchReply {
    /// `nq × k` neighbours (FAISS ids; -1 where fewer than k were found).
    pub neighbors: Neighbors,
    /// Each hit's metadata (`nq` arrays of `k` values), when asked for.
    pub metadata: Option<Vec<Value>>,
    /// For an index with string ids: each hit's string id (`nq × k`, `None` for -1).
    pub string_labels: Option<Vec<Option<String>>>,
    /// For a filtered search: how it ran (`selector`, `exact` or `empty`) and how many
    /// vectors matched the filter.
    pub filter: Option<(String, u64)>,
}

/// Decode a binary `search` reply (requested with `k`), with everything it carries.
///
/// Errors: `Protocol` for a reply without binary distances/labels or with counts that do not
/// agree.
pub fn decode_search_reply(r: Msg, k: usize) -> Result<SearchReply> {
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
    let string_labels = match r.get("string_labels") {
        Some(Value::Array(a)) if a.len() == ids.len() => {
            Some(a.iter().map(|v| v.as_str().map(str::to_string)).collect())
        }
        Some(_) => return Err(Error::new(ErrorKind::Protocol, "search reply has the wrong number of string labels")),
        None => None,
    };
    let filter = match (r.str("filter_path").ok().flatten(), r.uint("filter_matches").ok().flatten()) {
        (Some(p), Some(n)) => Some((p.to_string(), n)),
        _ => None,
    };
    Ok(SearchReply { neighbors: Neighbors { nq, k: kk, ids, dists }, metadata: md, string_labels, filter })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(server: &str) -> ClientConfig {
        ClientConfig {
            server: server.to_string(),
            api_key: None,
            tenant: None,
            timeout: Duration::from_secs(5),
            server_public_key: None,
        }
    }

    /// One request as a ROUTER socket sees it: (peer, sequence frame).
    fn take(server: &zmq::Socket) -> (Vec<u8>, Vec<u8>) {
        let f = server.recv_multipart(0).unwrap();
        (f[0].clone(), f[1].clone())
    }

    fn answer(server: &zmq::Socket, (peer, seq): &(Vec<u8>, Vec<u8>), n: u64) {
        let reply = protocol::ok_reply(Msg::default().with("n", n));
        server.send_multipart([peer.clone(), seq.clone(), Vec::new(), reply], 0).unwrap();
    }

    #[test]
    fn receive_takes_its_own_reply_and_a_missed_deadline_drops_the_connection() {
        let ctx = zmq::Context::new();
        let server = ctx.socket(zmq::ROUTER).unwrap();
        server.bind("inproc://client-receive").unwrap();
        let mut c = Client::connect_in(&ctx, cfg("inproc://client-receive")).unwrap();
        let soon = || Instant::now() + Duration::from_secs(5);

        // A reply to an older request (abandoned by its caller) is skipped.
        let old = c.send_raw(protocol::encode_request("ping", vec![])).unwrap();
        let new = c.send_raw(protocol::encode_request("ping", vec![])).unwrap();
        assert_ne!(old, new);
        let (a, b) = (take(&server), take(&server));
        answer(&server, &a, 1);
        answer(&server, &b, 2);
        assert_eq!(c.receive(new, soon()).unwrap().uint("n").unwrap(), Some(2));

        // No reply by the deadline: a timeout, and the connection is gone, so the late reply
        // cannot be taken for the next request's.
        let lost = c.send_raw(protocol::encode_request("ping", vec![])).unwrap();
        let late = take(&server);
        let e = c.receive(lost, Instant::now() + Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert_eq!(c.receive(lost, soon()).unwrap_err().kind(), ErrorKind::Io);
        answer(&server, &late, 3);
        let next = c.send_raw(protocol::encode_request("ping", vec![])).unwrap();
        let req = take(&server);
        answer(&server, &req, 4);
        assert_eq!(c.receive(next, soon()).unwrap().uint("n").unwrap(), Some(4));
    }
}
