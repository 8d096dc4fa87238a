//! `faissx serve`: the ZeroMQ daemon. Turns flags and `FAISSX_*` variables into a
//! [`ServerConfig`], sets up logging (`tracing-subscriber` on stderr, text or JSON Lines),
//! installs SIGINT/SIGTERM handling, prints the bound endpoint as the first stdout line and
//! runs the engine's server until a signal arrives.

use super::render::println_out;
use super::Ctx;
use crate::engine::protocol::MAX_K;
use crate::engine::server::{self, Quotas, ServerConfig};
use crate::engine::{Error, Result};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  # in memory, no auth, on the default port 45678
  faissx serve

  # persistent, two tenants with their own API keys
  faissx serve --port 45678 --data-dir /var/lib/faissx --enable-auth --auth-keys \"k1:acme,k2:globex\"

  # serve persisted indices memory-mapped (read-only, small anonymous memory)
  faissx serve --data-dir /var/lib/faissx --mmap

  # serve index files built by `faissx build` as they are on disk (read-only, mapped); a file
  # replaced on disk (a new build renamed into place) is served from then on
  faissx serve --index docs=/srv/indices/docs.index --index acme/faq=/srv/indices/faq.index --mmap

  # let clients import files from a server folder (query-remote import NAME --server-path PATH)
  faissx serve --data-dir /var/lib/faissx --import-dir /srv/indices

  # any free loopback port; the first stdout line is the endpoint (tcp://127.0.0.1:NNNNN)
  faissx serve --bind-address 127.0.0.1 --port 0

  # Prometheus metrics and Kubernetes probes on port 9100, JSON logs, a quota per tenant
  faissx serve --data-dir /var/lib/faissx --http-port 9100 --log-format json --max-vectors 50000000
  curl -s localhost:9100/metrics | grep faissx_requests_total

  # encrypted with CurveZMQ (clients: query-remote --server-public-key server.key.pub)
  faissx keygen -o server.key
  faissx serve --curve-secret-key-file server.key

  # replicas on a NATS JetStream log with snapshots in S3 (README: Cluster)
  faissx serve --data-dir /var/lib/fx-a --cluster nats://n1:4222,nats://n2:4222,nats://n3:4222 --cluster-replicas 3 --snapshots s3://faissx/snap

From Python (PyPI faissx): from faissx import client as faiss; faiss.configure(server=\"tcp://127.0.0.1:45678\")";

/// Serve indices over ZeroMQ to many clients at once.
///
/// Speaks the FAISSx protocol (MessagePack over a ZeroMQ ROUTER socket), so the official
/// FAISSx Python client works unchanged, plus faissx's extensions (binary vector payloads,
/// health, metrics, per-vector metadata, snapshot) used by `faissx query-remote`. Each
/// tenant's indices are isolated from every other tenant's. With --data-dir every
/// acknowledged change is on disk (write-ahead log, fsync) and a restart restores every
/// index. The first line on stdout is the bound endpoint. SIGINT/SIGTERM stop the server
/// after in-flight requests.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct ServeArgs {
    /// TCP port to listen on (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 45678, env = "FAISSX_PORT")]
    pub port: u16,

    /// Address to bind to.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0", env = "FAISSX_BIND_ADDRESS")]
    pub bind_address: String,

    /// Bind this ZeroMQ endpoint instead of --bind-address/--port (e.g. ipc:///tmp/faissx.sock).
    #[arg(long, value_name = "URL", env = "FAISSX_ENDPOINT")]
    pub endpoint: Option<String>,

    /// Persist indices, metadata and parameters here (default: in memory only).
    #[arg(long, value_name = "DIR", env = "FAISSX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Require an API key on every request but ping (keys from --auth-keys or --auth-file).
    #[arg(long, env = "FAISSX_ENABLE_AUTH")]
    pub enable_auth: bool,

    /// API keys and their tenants: "key1:tenant1,key2:tenant2".
    #[arg(long, value_name = "LIST", env = "FAISSX_AUTH_KEYS")]
    pub auth_keys: Option<String>,

    /// JSON file of API keys: {"key1": "tenant1", ...}.
    #[arg(long, value_name = "PATH", env = "FAISSX_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Encrypt with CurveZMQ using this secret key file (from `faissx keygen`); off by default.
    ///
    /// Clients must then give the matching public key (`query-remote --server-public-key
    /// PATH.pub`); clients without it, or with another key, get no answer. The official
    /// Python client speaks plain TCP only (README: Encryption).
    #[arg(long, value_name = "PATH", env = "FAISSX_CURVE_SECRET_KEY_FILE")]
    pub curve_secret_key_file: Option<PathBuf>,

    /// What to log on stderr [default: INFO; DEBUG with -v, WARNING with -q].
    ///
    /// INFO: start (endpoint, data directory, indices restored), stop, index creation,
    /// deletion, import and merge, checkpoints. WARNING: refused requests (failed
    /// authentication, never with the key; quarantined indices, quotas, BUSY, size) and
    /// requests slower than 1 s. ERROR: failures the operator must look at (checkpoints that
    /// failed, damaged indices, requests that failed on the server). CRITICAL: only an index
    /// that stops taking writes until restart. DEBUG: also one line per request. Each level
    /// includes the ones after it.
    #[arg(long, value_name = "LEVEL", env = "FAISSX_LOG_LEVEL",
          value_parser = clap::builder::PossibleValuesParser::new(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
          ignore_case = true)]
    pub log_level: Option<String>,

    /// Log lines as text (timestamp, level, message, fields) or JSON Lines (one object per event).
    #[arg(long, value_name = "FORMAT", default_value = "text", env = "FAISSX_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Serve /metrics (Prometheus), /livez and /readyz over HTTP on this port of
    /// --bind-address (0: any free port, logged at INFO). Off by default.
    ///
    /// /livez answers 200 while the process serves; /readyz 503 until every persisted index
    /// is restored, then 200 (503 again while stopping); /metrics the Prometheus text (OpenMetrics if asked) of
    /// requests and errors by action and tenant, latency histograms by action, indices,
    /// vectors, estimated bytes, WAL bytes, checkpoint age, resident memory and
    /// authentication failures.
    #[arg(long, value_name = "PORT", env = "FAISSX_HTTP_PORT")]
    pub http_port: Option<u16>,

    /// Indices (served and quarantined) a tenant may have; create_index and import_index of
    /// a new name past it get QUOTA_EXCEEDED.
    #[arg(long, value_name = "NUM", default_value_t = server::DEFAULT_MAX_INDICES, env = "FAISSX_MAX_INDICES",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_indices: usize,

    /// Vectors a tenant may hold over all its indices (0: no limit); adds, merges and
    /// imports past it get QUOTA_EXCEEDED.
    #[arg(long, value_name = "NUM", default_value_t = 0, env = "FAISSX_MAX_VECTORS")]
    pub max_vectors: u64,

    /// Largest k of a search (at most 10,000); larger ones get QUOTA_EXCEEDED.
    #[arg(long, value_name = "NUM", default_value_t = MAX_K, env = "FAISSX_MAX_K",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_K as u64))]
    pub max_k: usize,

    /// Most queries in one search request (default: 2^20, which nq × k ≤ 2^20 allows
    /// anyway); more get QUOTA_EXCEEDED.
    #[arg(long, value_name = "NUM", default_value_t = server::DEFAULT_MAX_NQ, env = "FAISSX_MAX_NQ",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_nq: usize,

    /// Largest accepted request in bytes; larger ones get a TOO_LARGE error.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20, env = "FAISSX_MAX_REQUEST_BYTES")]
    pub max_request_bytes: usize,

    /// Memory-map persisted indices at start-up instead of loading them (with --data-dir).
    ///
    /// Mapped indices answer searches from the page cache, so indices larger than RAM can be
    /// served and anonymous memory stays small; they are read-only: adds, training, removals,
    /// resets, set_parameter and merges into them get an UNSUPPORTED error (per-request
    /// nprobe/efSearch keep working). An index whose write-ahead log holds changes newer
    /// than its checkpoint is loaded, replayed and checkpointed once, then mapped. Empty
    /// indices, and indices created while running, stay loaded and writable until the next
    /// restart.
    #[arg(long, env = "FAISSX_MMAP")]
    pub mmap: bool,

    /// Serve an index file as it is on disk, as index NAME (of TENANT; default tenant
    /// "default"). Repeatable.
    ///
    /// The file is served read-only (mapped with --mmap) and re-read, as a new generation,
    /// when it is replaced on disk (checked every 2 s) or on `import NAME` without a file.
    /// It is not copied into --data-dir.
    #[arg(long = "index", value_name = "[TENANT/]NAME=PATH", env = "FAISSX_INDEXES", value_delimiter = ',')]
    pub indexes: Vec<String>,

    /// A folder whose files clients may import with `import --server-path` (symlinks are
    /// resolved first; any path outside every such folder is refused). Repeatable.
    #[arg(long = "import-dir", value_name = "DIR", env = "FAISSX_IMPORT_DIRS", value_delimiter = ',')]
    pub import_dirs: Vec<PathBuf>,

    /// Seconds an upload or export may stay idle before it is dropped with its files.
    #[arg(long, value_name = "SECS", default_value_t = 60, env = "FAISSX_TRANSFER_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub transfer_timeout: u64,

    /// Run as a replica of a cluster whose write-ahead log is NATS JetStream at these URLs
    /// (comma-separated; any one reachable is enough, losing one of a NATS cluster is fine).
    ///
    /// Every write (create, add, remove, train, delete, parameters, …) received by any
    /// replica is stored in the log before it is acknowledged and applied by every replica
    /// in log order; reads answer from local state. Needs --snapshots. --data-dir then only
    /// holds scratch files: a replica's state comes from the newest snapshot plus the log.
    #[arg(long, value_name = "URLS", env = "FAISSX_CLUSTER",
          conflicts_with_all = ["mmap", "indexes"])]
    pub cluster: Option<String>,

    /// Where the cluster's snapshots live: s3://BUCKET/PREFIX (also gs://, az://; credentials
    /// from AWS_* / GOOGLE_* / AZURE_* variables), or file:///shared/dir for a directory every
    /// replica sees.
    #[arg(long, value_name = "URL", env = "FAISSX_SNAPSHOTS", requires = "cluster")]
    pub snapshots: Option<String>,

    /// NATS credentials file (JWT and NKey seed, as `nsc` writes it) for --cluster.
    #[arg(long, value_name = "PATH", env = "FAISSX_CLUSTER_CREDS", requires = "cluster")]
    pub cluster_creds: Option<PathBuf>,

    /// CA certificate (PEM) that signed the NATS servers' TLS certificates; TLS is then required.
    #[arg(long, value_name = "PATH", env = "FAISSX_CLUSTER_CA", requires = "cluster")]
    pub cluster_ca: Option<PathBuf>,

    /// How many NATS servers store the log and the cluster's KV buckets (JetStream
    /// replication): 1 on a single NATS server, 3 on a 3-node NATS cluster.
    #[arg(long, value_name = "NUM", default_value_t = 1, env = "FAISSX_CLUSTER_REPLICAS",
          value_parser = clap::value_parser!(u64).range(1..=5))]
    pub cluster_replicas: u64,

    /// This replica's name among the cluster's members (default: HOSTNAME-PORT); unique.
    #[arg(long, value_name = "NAME", env = "FAISSX_REPLICA_NAME")]
    pub replica_name: Option<String>,

    /// Log records between snapshots (one replica takes each; the log is trimmed below the
    /// older of the two snapshots kept).
    #[arg(long, value_name = "NUM", default_value_t = 10_000, env = "FAISSX_SNAPSHOT_EVERY",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,

    /// Replica (with --cluster): the endpoint routers and other members reach this replica
    /// at, e.g. tcp://$(POD_NAME).s0:45678 in a StatefulSet (default: the bound endpoint,
    /// with 0.0.0.0 replaced by the host name).
    #[arg(long, value_name = "URL", env = "FAISSX_ADVERTISE", requires = "cluster")]
    pub advertise: Option<String>,

    /// Replica (with --cluster): serve shard NAME, with a log and snapshots of its own.
    /// Router (with --router): a shard NAME and its replicas' endpoints, NAME=URL,URL;
    /// repeatable (without it, a router learns the shards from --cluster).
    #[arg(long = "shard", value_name = "NAME[=URL,URL]", env = "FAISSX_SHARDS", value_delimiter = ' ')]
    pub shards: Vec<String>,

    /// Run a router, not a server: spread every index over the shards (--shard NAME=URL,URL
    /// lists, or the cluster's members with --cluster), send writes to the owning shard and
    /// searches to every shard, and merge their results. Stateless: run as many as needed.
    #[arg(long, env = "FAISSX_ROUTER", conflicts_with_all = ["mmap", "indexes", "snapshots"])]
    pub router: bool,

    /// Router: the number of shards; the router routes nothing (and /readyz is 503) until
    /// it knows that many (ids go to hash mod N: routing over fewer would misplace them).
    /// Default: as many as it knows.
    #[arg(long, value_name = "N", env = "FAISSX_SHARD_COUNT", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub shard_count: Option<u64>,

    /// Router: seconds one replica may take to answer before the router marks it down (for
    /// 10 s) and asks another replica of its shard.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, env = "FAISSX_SHARD_TIMEOUT")]
    pub shard_timeout: f64,

    /// Threads that decode requests and run searches (default: max(4, 2 × cores)).
    #[arg(long, value_name = "NUM", env = "FAISSX_WORKERS", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: Option<u64>,
}

/// How `faissx serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO message key=value …`
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
}

/// Parse `--auth-keys "k1:t1,k2:t2"`.
pub fn parse_auth_keys(s: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, t) =
            part.split_once(':').ok_or_else(|| Error::invalid(format!("--auth-keys: {part:?} is not KEY:TENANT")))?;
        let (k, t) = (k.trim(), t.trim());
        if k.is_empty() {
            return Err(Error::invalid(format!("--auth-keys: empty key in {part:?}")));
        }
        server::valid_id("tenant", t).map_err(|e| e.context("--auth-keys"))?;
        out.insert(k.to_string(), t.to_string());
    }
    Ok(out)
}

/// Parse `--index [TENANT/]NAME=PATH`.
pub fn parse_served_file(s: &str) -> Result<server::ServedFile> {
    let (name, path) =
        s.split_once('=').ok_or_else(|| Error::invalid(format!("--index {s:?}: expected [TENANT/]NAME=PATH")))?;
    let (tenant, id) = match name.split_once('/') {
        Some((t, n)) => (t, n),
        None => ("default", name),
    };
    server::valid_id("tenant", tenant).map_err(|e| e.context("--index"))?;
    server::valid_id("index_id", id).map_err(|e| e.context("--index"))?;
    if path.is_empty() {
        return Err(Error::invalid(format!("--index {s:?}: empty path")));
    }
    Ok(server::ServedFile { tenant: tenant.to_string(), id: id.to_string(), path: PathBuf::from(path) })
}

fn auth_from_file(p: &std::path::Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    let map: HashMap<String, String> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(p, format!("expected a JSON object {{\"key\": \"tenant\"}} ({e})")))?;
    for t in map.values() {
        server::valid_id("tenant", t).map_err(|e| e.context(p.display()))?;
    }
    Ok(map)
}

impl ServeArgs {
    /// The log level in force: `--log-level` (or `FAISSX_LOG_LEVEL`) if given, else DEBUG
    /// with `-v`, WARNING with `-q`, INFO otherwise. Upper case.
    pub fn log_level(&self, verbose: bool, quiet: bool) -> String {
        match &self.log_level {
            Some(l) => l.to_ascii_uppercase(),
            None if verbose => "DEBUG".into(),
            None if quiet => "WARNING".into(),
            None => "INFO".into(),
        }
    }

    /// The engine's configuration for these flags.
    pub fn config(&self) -> Result<ServerConfig> {
        let mut keys = HashMap::new();
        if let Some(s) = &self.auth_keys {
            keys.extend(parse_auth_keys(s)?);
        }
        if let Some(p) = &self.auth_file {
            keys.extend(auth_from_file(p)?);
        }
        if !self.enable_auth && !keys.is_empty() {
            return Err(Error::invalid(
                "--auth-keys/--auth-file without --enable-auth would serve every client without authentication: add --enable-auth",
            ));
        }
        if self.enable_auth && keys.is_empty() {
            return Err(Error::invalid("--enable-auth needs API keys: give --auth-keys or --auth-file"));
        }
        let endpoint = match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("tcp://{}:{}", self.bind_address, self.port),
        };
        if self.max_request_bytes < 64 {
            return Err(Error::invalid("--max-request-bytes must be at least 64"));
        }
        if self.mmap && self.data_dir.is_none() && self.indexes.is_empty() {
            return Err(Error::invalid("--mmap maps persisted or --index files: give --data-dir or --index"));
        }
        let indexes = self.indexes.iter().map(|s| parse_served_file(s)).collect::<Result<Vec<_>>>()?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(ServerConfig {
            endpoint,
            data_dir: self.data_dir.clone(),
            auth_keys: self.enable_auth.then_some(keys),
            max_request_bytes: self.max_request_bytes,
            workers: self.workers.map_or((2 * cores).max(4), |w| w as usize),
            http: self.http_port.map(|p| http_addr(&self.bind_address, p)),
            quotas: Quotas {
                max_indices: self.max_indices,
                max_vectors: (self.max_vectors > 0).then_some(self.max_vectors),
                max_k: self.max_k,
                max_nq: self.max_nq,
            },
            mmap: self.mmap,
            indexes,
            import_dirs: self.import_dirs.clone(),
            transfer_timeout: std::time::Duration::from_secs(self.transfer_timeout),
            curve_secret_key: self
                .curve_secret_key_file
                .as_deref()
                .map(|p| crate::engine::curve::read_key(p, "--curve-secret-key-file"))
                .transpose()?,
            cluster: self.cluster_config()?,
        })
    }

    /// The router's configuration (`--router`), from the server's.
    ///
    /// Errors: `InvalidInput` for a bad `--shard` list or `--shard-timeout`, or no shards
    /// at all.
    pub fn router_config(&self, cfg: &ServerConfig) -> Result<crate::engine::router::RouterConfig> {
        if !(self.shard_timeout > 0.0 && self.shard_timeout <= 600.0) {
            return Err(Error::invalid("--shard-timeout must be within (0, 600] seconds"));
        }
        let shards =
            self.shards.iter().map(|s| crate::engine::router::shards::parse_static(s)).collect::<Result<Vec<_>>>()?;
        if cfg.auth_keys.is_some() {
            return Err(Error::invalid(
                "--router forwards API keys to the shards, which check them: give --enable-auth to the replicas, not the router",
            ));
        }
        if cfg.curve_secret_key.is_some() {
            return Err(Error::invalid(
                "--router does not speak CurveZMQ yet: bind it to a private network, or encrypt with a tunnel",
            ));
        }
        if shards.is_empty() && cfg.cluster.is_none() {
            return Err(Error::invalid(
                "--router needs its shards: --shard NAME=URL,URL (repeat), or --cluster NATS_URLS",
            ));
        }
        Ok(crate::engine::router::RouterConfig {
            endpoint: cfg.endpoint.clone(),
            shards,
            cluster: cfg.cluster.clone(),
            shard_timeout: std::time::Duration::from_secs_f64(self.shard_timeout),
            shard_count: self.shard_count.map(|n| n as usize),
            workers: cfg.workers.max(8),
            max_request_bytes: cfg.max_request_bytes,
            http: cfg.http.clone(),
        })
    }

    /// The `--cluster` part of the configuration (`None` without `--cluster`).
    fn cluster_config(&self) -> Result<Option<server::cluster::ClusterConfig>> {
        let Some(urls) = &self.cluster else { return Ok(None) };
        if self.snapshots.is_none() && !self.router {
            return Err(Error::invalid(
                "--cluster needs --snapshots (s3://BUCKET/PREFIX or file:///shared/dir): replicas restore from them",
            ));
        }
        let shard = match (self.router, self.shards.as_slice()) {
            (true, _) | (false, []) => None,
            (false, [one]) if !one.contains('=') => {
                let ok = !one.is_empty()
                    && one.len() <= 64
                    && one.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(Error::invalid(format!("--shard {one:?}: use 1-64 characters from [A-Za-z0-9_-]")));
                }
                Some(one.clone())
            }
            (false, _) => {
                return Err(Error::invalid(
                    "a replica serves one shard: --shard NAME (NAME=URL lists are for --router)",
                ))
            }
        };
        let urls: Vec<String> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
        if urls.is_empty() {
            return Err(Error::invalid("--cluster: give at least one NATS URL (nats://HOST:4222)"));
        }
        let name = match &self.replica_name {
            Some(n) => n.clone(),
            None => {
                let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
                format!("{}-{}", if host.is_empty() { "faissx" } else { &host }, self.port)
            }
        };
        server::valid_id("--replica-name", &name)?;
        Ok(Some(server::cluster::ClusterConfig {
            urls,
            creds: self.cluster_creds.clone(),
            ca: self.cluster_ca.clone(),
            snapshots: self.snapshots.clone().unwrap_or_default(),
            name,
            log_replicas: self.cluster_replicas as usize,
            snapshot_every: self.snapshot_every,
            scratch: self.data_dir.clone(),
            advertise: self.advertise.clone(),
            shard,
        }))
    }
}

/// `HOST:PORT` for the HTTP listener (IPv6 hosts in brackets).
fn http_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Install the `tracing` subscriber of `faissx serve`: events at `level` (a `--log-level`
/// name) and above, on stderr, as text or JSON Lines, with UTC timestamps. CRITICAL shows
/// only the events of target `faissx::critical`. A failing stderr (a full disk) loses log
/// lines, never the server. Does nothing if a subscriber is installed already.
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let max = match level {
        "DEBUG" => LevelFilter::DEBUG,
        "INFO" => LevelFilter::INFO,
        "WARNING" => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    };
    let critical_only = level == "CRITICAL";
    let filter = tracing_subscriber::filter::filter_fn(move |m| {
        // The NATS client's connection events are DEBUG here: the cluster logs when its log
        // becomes unreachable and reachable again.
        let level = match *m.level() {
            tracing::Level::INFO if m.target().starts_with("async_nats") => tracing::Level::DEBUG,
            l => l,
        };
        max >= level && (!critical_only || m.target() == "faissx::critical")
    });
    let layer =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).log_internal_errors(false);
    let layer: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = match format {
        LogFormat::Text => layer.with_target(false).with_filter(filter).boxed(),
        LogFormat::Json => layer.json().with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Run `faissx serve`.
pub fn run(ctx: &Ctx, a: ServeArgs) -> Result<()> {
    let cfg = a.config()?;
    init_logging(&a.log_level(ctx.verbose > 0, ctx.quiet), a.log_format);
    // SIGINT/SIGTERM set `ctx.stop` (installed by `dispatch`, see `signals`); the server's
    // poll loop checks it every 100 ms.
    // The start itself is logged at INFO by the engine (endpoint, data directory, indices).
    let mut ready = |ep: &str| -> Result<()> { println_out(ep) };
    if a.router {
        return crate::engine::router::serve(&a.router_config(&cfg)?, &mut ready, &ctx.stop);
    }
    if !a.shards.is_empty() && cfg.cluster.is_none() {
        return Err(Error::invalid(
            "--shard NAME needs --cluster (a shard's replicas share its log); NAME=URL lists need --router",
        ));
    }
    server::serve(&cfg, &mut ready, &ctx.stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keys_parse() {
        let m = parse_auth_keys("k1:acme, k2:globex").unwrap();
        assert_eq!(m["k1"], "acme");
        assert_eq!(m["k2"], "globex");
        assert!(parse_auth_keys("k1").is_err());
        assert!(parse_auth_keys("k1:../x").is_err());
    }

    #[test]
    fn log_level_follows_the_flag_then_v_and_q() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ServeArgs,
        }
        let parse = |args: &[&str]| T::try_parse_from([&["serve"], args].concat()).unwrap().a;
        assert_eq!(parse(&[]).log_level(false, false), "INFO");
        assert_eq!(parse(&[]).log_level(true, false), "DEBUG");
        assert_eq!(parse(&[]).log_level(false, true), "WARNING");
        assert_eq!(parse(&["--log-level", "error"]).log_level(true, false), "ERROR");
        let a = parse(&["--http-port", "0", "--bind-address", "::1", "--max-vectors", "5", "--max-k", "7"]);
        let cfg = a.config().unwrap();
        assert_eq!(cfg.http.as_deref(), Some("[::1]:0"));
        assert_eq!((cfg.quotas.max_vectors, cfg.quotas.max_k), (Some(5), 7));
        assert_eq!(parse(&[]).config().unwrap().quotas, Quotas::default());
        assert!(T::try_parse_from(["serve", "--max-k", "10001"]).is_err());
        assert!(T::try_parse_from(["serve", "--max-indices", "0"]).is_err());
        assert!(T::try_parse_from(["serve", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn served_files_parse() {
        let f = parse_served_file("acme/docs=/srv/docs.index").unwrap();
        assert_eq!((f.tenant.as_str(), f.id.as_str()), ("acme", "docs"));
        assert_eq!(f.path, PathBuf::from("/srv/docs.index"));
        assert_eq!(parse_served_file("docs=x.index").unwrap().tenant, "default");
        for bad in ["docs", "../x=y", "a/../b=y", "docs="] {
            assert!(parse_served_file(bad).is_err(), "{bad}");
        }
    }
}
