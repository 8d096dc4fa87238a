//! `serve --http-port`: a deliberately tiny HTTP/1.x listener for Prometheus and Kubernetes.
//! It answers `GET` (and `HEAD`) of three paths and nothing else:
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | 200, the [`Telemetry`] in Prometheus text (OpenMetrics text if `Accept` asks for it) |
//! | `/livez` | 200 while the process serves (this thread answers) |
//! | `/readyz` | 503 until every persisted index is restored and the socket bound, 200 then, 503 again while stopping |
//!
//! Anything else gets 404 (unknown path), 405 (other methods) or 400. Its own threads only
//! (one accepting, at most [`MAX_CONNECTIONS`] answering), never a ZeroMQ socket or an index
//! lock, so nothing here can hold up the ZeroMQ server. Every read is bounded: at most
//! [`MAX_REQUEST_HEAD`] bytes of request head, within [`READ_TIMEOUT`]; every connection is
//! closed after one answer; connections past [`MAX_CONNECTIONS`] are closed unanswered.

use super::telemetry::{Telemetry, CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::engine::error::{Error, ErrorKind, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections answered at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 8;

/// Largest request head (request line and headers) read; larger requests get 431.
pub const MAX_REQUEST_HEAD: usize = 8192;

/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the accepting thread checks whether to stop.
const POLL: Duration = Duration::from_millis(20);

/// The running listener; stopped (and its thread joined) when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Bind `addr` (`HOST:PORT`; port 0: any free port) and answer probes and scrapes from
    /// `telemetry` on a thread of its own. Errors: the address does not parse or cannot be
    /// bound (`Io`).
    pub fn start(addr: &str, telemetry: Arc<Telemetry>) -> Result<HttpServer> {
        let io = |what: &str, e: std::io::Error| Error::new(ErrorKind::Io, format!("{what} {addr} (--http-port): {e}"));
        let listener = TcpListener::bind(addr).map_err(|e| io("binding", e))?;
        listener.set_nonblocking(true).map_err(|e| io("configuring", e))?;
        let bound = listener.local_addr().map_err(|e| io("reading the address of", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("faissx-http".into())
            .spawn(move || accept_loop(listener, telemetry, st))
            .map_err(|e| Error::new(ErrorKind::Io, format!("spawning the HTTP thread: {e}")))?;
        Ok(HttpServer { addr: bound, stop, thread: Some(thread) })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, telemetry: Arc<Telemetry>, stop: Arc<AtomicBool>) {
    let live = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                tracing::debug!(error = %e, "http accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue; // dropped: closed unanswered
        }
        live.fetch_add(1, Ordering::Relaxed);
        let (t, l) = (telemetry.clone(), live.clone());
        let spawned = std::thread::Builder::new().name("faissx-http-conn".into()).spawn(move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(stream, &t)));
            l.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Read one request head (bounded in size and time) and answer it.
fn answer(mut s: TcpStream, telemetry: &Telemetry) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(READ_TIMEOUT));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut n = 0;
    let complete = loop {
        if head_complete(&buf[..n]) {
            break true;
        }
        if n == buf.len() || Instant::now() > deadline {
            break false;
        }
        match s.read(&mut buf[n..]) {
            Ok(0) => break head_complete(&buf[..n]) || buf[..n].contains(&b'\n'),
            Ok(r) => n += r,
            Err(_) => return,
        }
    };
    let (status, body, ctype, head_only) = if !complete && n == buf.len() {
        (431, "request head too large\n".to_string(), "text/plain", false)
    } else if !complete {
        return;
    } else {
        route(&buf[..n], telemetry)
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    let _ = s.write_all(out.as_bytes());
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Both);
}

fn head_complete(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n")
}

/// (status, body, content type, HEAD) for a request head.
fn route(head: &[u8], telemetry: &Telemetry) -> (u16, String, &'static str, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return (400, "bad request line\n".into(), TEXT, false);
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "HTTP/1.x only\n".into(), TEXT, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (405, "only GET and HEAD\n".into(), TEXT, false);
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/livez" => (200, "ok\n".into(), TEXT, head_only),
        "/readyz" if telemetry.is_ready() => (200, "ready\n".into(), TEXT, head_only),
        "/readyz" => (503, "not ready: restoring indices, or stopping\n".into(), TEXT, head_only),
        "/metrics" if accepts_openmetrics(head) => (200, telemetry.render(), CONTENT_TYPE, head_only),
        "/metrics" => (200, telemetry.render_prometheus(), PROMETHEUS_CONTENT_TYPE, head_only),
        _ => (404, "not found: /metrics, /livez, /readyz\n".into(), TEXT, head_only),
    }
}

/// Whether the request's `Accept` header names `application/openmetrics-text`.
fn accepts_openmetrics(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.to_ascii_lowercase().contains("application/openmetrics-text")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, raw: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_the_three_paths_and_refuses_the_rest() {
        let t = Arc::new(Telemetry::new());
        let srv = HttpServer::start("127.0.0.1:0", t.clone()).unwrap();
        let a = srv.local_addr();
        assert!(get(a, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(get(a, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503 "));
        t.set_ready(true);
        assert!(get(a, "GET /readyz?verbose HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 "));
        let m = get(a, "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,*/*\r\n\r\n");
        assert!(m.contains("application/openmetrics-text") && m.contains("faissx_ready 1") && m.ends_with("# EOF\n"));
        let m = get(a, "GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n");
        assert!(m.contains("text/plain; version=0.0.4") && m.contains("faissx_ready 1") && !m.contains("# EOF"));
        let h = get(a, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(h.starts_with("HTTP/1.1 200 ") && h.ends_with("\r\n\r\n"), "{h}");
        assert!(get(a, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get(a, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(get(a, "nonsense\r\n\r\n").starts_with("HTTP/1.1 400 "));
        // Exactly MAX_REQUEST_HEAD bytes without the blank line that ends a head.
        let prefix = "GET /livez HTTP/1.1\r\nX: ";
        let huge = format!("{prefix}{}", "a".repeat(MAX_REQUEST_HEAD - prefix.len()));
        let mut s = TcpStream::connect(a).unwrap();
        let _ = s.write_all(huge.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        drop(srv);
        assert!(TcpStream::connect(a).is_err(), "the listener closes when dropped");
    }
}
