//! The load generator: N keep-alive HTTP/1.1 connections (hyper client), closed loop, bounded
//! by duration and by request count; a warm-up phase on the same connections is discarded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request to send.
#[derive(Clone)]
pub struct Req {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: Bytes::new(),
            headers: Vec::new(),
        }
    }

    pub fn new(method: Method, path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method,
            path: path.into(),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("header value"),
        ));
        self
    }
}

/// What came back.
pub struct Resp<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    /// The body, when the workload asked to keep it (else empty).
    pub body: &'a [u8],
    pub len: u64,
}

/// Builds request number `seq` (a per-connection random state is passed too).
pub type MakeReq = Arc<dyn Fn(u64, &mut Rng) -> Req + Send + Sync>;
/// Checks a response; an `Err` counts as an error of the workload.
pub type Check = Arc<dyn Fn(&Resp<'_>) -> Result<(), String> + Send + Sync>;

/// A small xorshift generator (no need for cryptographic randomness in a load generator).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub conc: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: u64,
    pub make: MakeReq,
    pub check: Check,
    /// Keep response bodies for `check` (else only their length is counted).
    pub keep_body: bool,
    /// `Authorization: Bearer` token added to every request.
    pub token: Option<String>,
    /// Process whose CPU time is measured over the measured phase.
    pub server_pid: Option<u32>,
}

#[derive(Debug)]
pub struct LoadResult {
    /// Successful requests in the measured phase.
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub server_cpu_ns: Option<u64>,
    /// CPU time of this (load generator) process over the measured phase.
    pub client_cpu_ns: Option<u64>,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

struct Shared {
    spec: LoadSpec,
    issued: AtomicU64,
    limit: u64,
    deadline: Instant,
}

struct ConnResult {
    sender: Option<SendRequest<Full<Bytes>>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    bytes_in: u64,
    bytes_out: u64,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn one(
    sender: &mut SendRequest<Full<Bytes>>,
    spec: &LoadSpec,
    req: Req,
) -> Result<(u64, u64), String> {
    let out = req.body.len() as u64;
    let mut builder = Request::builder()
        .method(req.method)
        .uri(req.path)
        .header("host", spec.addr.to_string());
    if let Some(token) = &spec.token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in req.headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(req.body))
        .map_err(|e| format!("building request: {e}"))?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, mut body) = response.into_parts();
    let mut kept = Vec::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
            if spec.keep_body || !parts.status.is_success() {
                kept.extend_from_slice(data);
            }
        }
    }
    let resp = Resp {
        status: parts.status,
        headers: &parts.headers,
        body: &kept,
        len,
    };
    (spec.check)(&resp).map_err(|e| {
        if parts.status.is_success() {
            e
        } else {
            format!(
                "{e}: {}",
                String::from_utf8_lossy(&kept[..kept.len().min(300)])
            )
        }
    })?;
    Ok((len, out))
}

async fn conn_loop(
    shared: Arc<Shared>,
    mut sender: Option<SendRequest<Full<Bytes>>>,
    index: usize,
) -> ConnResult {
    let spec = &shared.spec;
    let mut rng = Rng::new(index as u64 + 1 + shared.issued.load(Ordering::Relaxed) * 7919);
    let mut result = ConnResult {
        sender: None,
        ok: 0,
        errors: 0,
        first_error: None,
        hist: new_hist(),
        bytes_in: 0,
        bytes_out: 0,
    };
    loop {
        if Instant::now() >= shared.deadline {
            break;
        }
        let seq = shared.issued.fetch_add(1, Ordering::Relaxed);
        if seq >= shared.limit {
            break;
        }
        if sender.is_none() {
            match connect(spec.addr).await {
                Ok(s) => sender = Some(s),
                Err(err) => {
                    result.errors += 1;
                    result.first_error.get_or_insert(format!("connect: {err}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let req = (spec.make)(seq, &mut rng);
        let start = Instant::now();
        let outcome = one(sender.as_mut().expect("connected"), spec, req).await;
        let micros = start.elapsed().as_micros() as u64;
        match outcome {
            Ok((bytes_in, bytes_out)) => {
                result.ok += 1;
                result.bytes_in += bytes_in;
                result.bytes_out += bytes_out;
                let _ = result.hist.record(micros.max(1));
            }
            Err(err) => {
                result.errors += 1;
                result.first_error.get_or_insert(err);
                // The connection may be unusable after a failed exchange.
                if sender.as_ref().is_some_and(|s| s.is_closed()) {
                    sender = None;
                }
            }
        }
    }
    result.sender = sender;
    result
}

async fn phase(
    spec: &LoadSpec,
    senders: &mut [Option<SendRequest<Full<Bytes>>>],
    duration: Duration,
    limit: u64,
) -> (LoadResult, Vec<ConnResult>) {
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        issued: AtomicU64::new(0),
        limit,
        deadline: Instant::now() + duration,
    });
    let cpu_before = spec.server_pid.and_then(crate::sys::cpu_sample);
    let self_before = crate::sys::cpu_sample(std::process::id());
    let start = Instant::now();
    let mut handles = Vec::new();
    for (index, sender) in senders.iter_mut().enumerate() {
        handles.push(tokio::spawn(conn_loop(
            shared.clone(),
            sender.take(),
            index,
        )));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("connection task"));
    }
    let elapsed = start.elapsed();
    let cpu_after = spec.server_pid.and_then(crate::sys::cpu_sample);
    let self_after = crate::sys::cpu_sample(std::process::id());
    for (slot, result) in senders.iter_mut().zip(results.iter_mut()) {
        *slot = result.sender.take();
    }
    let mut total = LoadResult {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed,
        hist: new_hist(),
        bytes_in: 0,
        bytes_out: 0,
        server_cpu_ns: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => Some(crate::sys::cpu_delta_ns(&a, &b)),
            _ => None,
        },
        client_cpu_ns: match (self_before, self_after) {
            (Some(a), Some(b)) => Some(crate::sys::cpu_delta_ns(&a, &b)),
            _ => None,
        },
    };
    for r in &results {
        total.ok += r.ok;
        total.errors += r.errors;
        total.bytes_in += r.bytes_in;
        total.bytes_out += r.bytes_out;
        if total.first_error.is_none() {
            total.first_error.clone_from(&r.first_error);
        }
        total.hist.add(&r.hist).expect("same histogram bounds");
    }
    (total, results)
}

/// Runs a load: connect, warm up, measure. Warm-up errors count as errors too.
pub async fn run(spec: LoadSpec) -> LoadResult {
    let mut senders: Vec<Option<SendRequest<Full<Bytes>>>> = Vec::new();
    let mut connect_errors = 0;
    let mut first_error = None;
    for _ in 0..spec.conc {
        match connect(spec.addr).await {
            Ok(s) => senders.push(Some(s)),
            Err(err) => {
                connect_errors += 1;
                first_error.get_or_insert(format!("connect: {err}"));
                senders.push(None);
            }
        }
    }
    let mut warm_errors = 0;
    let mut limit = spec.max_requests;
    if !spec.warmup.is_zero() {
        // Warm-up takes at most a tenth of the request budget.
        let warm_limit = (spec.max_requests / 10).max(spec.conc as u64);
        let (warm, _) = phase(&spec, &mut senders, spec.warmup, warm_limit).await;
        warm_errors = warm.errors;
        if first_error.is_none() {
            first_error = warm.first_error;
        }
        limit = limit
            .saturating_sub(warm.ok + warm.errors)
            .max(spec.conc as u64);
    }
    let (mut result, _) = phase(&spec, &mut senders, spec.duration, limit).await;
    result.errors += connect_errors + warm_errors;
    if first_error.is_some() {
        result.first_error = first_error.or(result.first_error);
    }
    result
}
