//! Workloads, samples and the round runner.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;

use crate::load::{self, Check, LoadResult, LoadSpec, MakeReq};
use crate::raw::{RawEngine, RawResult};
use crate::sys::Placement;

/// Run-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    /// Measured time per point.
    pub point: Duration,
    pub warmup: Duration,
    /// Items in the read/export dataset.
    pub read_items: u64,
    /// Rows the raw scan reads (the same order of size as a page-by-page read).
    pub scan_rows: u64,
    pub spawn_bin: PathBuf,
}

/// What every workload can reach.
#[derive(Clone)]
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub troupe: SocketAddr,
    pub troupe_pid: u32,
    pub yard: SocketAddr,
    pub yard_pid: u32,
    pub token: String,
    /// troupe's data dir (runs are seeded into it directly) and the bench's scratch dir.
    pub data_dir: PathBuf,
    pub work_dir: PathBuf,
    pub placement: Placement,
    pub raw: Arc<Mutex<RawEngine>>,
    pub items: Arc<Vec<String>>,
    /// Named ids created during setup (datasets, stores, queues).
    pub ids: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Ctx {
    pub fn id(&self, name: &str) -> String {
        self.ids
            .lock()
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no id named {name}"))
    }

    pub fn set_id(&self, name: &str, id: String) {
        self.ids.lock().insert(name.to_string(), id);
    }

    /// One request to troupe outside any measurement (setup, verification).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let response = self.api_response(method, path, body).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// [`Ctx::api`] whose answer's body the caller reads (frame by frame, as it comes).
    pub async fn api_response(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::TcpStream::connect(self.troupe).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.troupe.to_string())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))?;
        Ok(sender.send_request(request).await?)
    }

    /// `api` that must answer `expect`; returns the parsed JSON body.
    pub async fn api_json(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        expect: StatusCode,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, bytes) = self.api(method.clone(), path, body).await?;
        anyhow::ensure!(
            status == expect,
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Creates a storage (`datasets`, `key-value-stores`, `request-queues`) and records its id.
    pub async fn create_storage(&self, collection: &str, name: &str) -> anyhow::Result<String> {
        let value = self
            .api_json(
                Method::POST,
                &format!("/v2/{collection}?name=bench-{}", name.replace('_', "-")),
                Bytes::new(),
                StatusCode::CREATED,
            )
            .await?;
        let id = value["data"]["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no id in {value}"))?
            .to_string();
        self.set_id(name, id.clone());
        Ok(id)
    }
}

/// One measurement of one workload in one round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Units per second (items/s, req/s, MiB/s — see the workload's unit).
    pub rate: f64,
    pub ops: u64,
    pub secs: f64,
    /// Server CPU time per operation (µs), when a server was involved.
    pub cpu_us_per_op: Option<f64>,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Other figures (RSS, ...), by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

impl Sample {
    pub fn from_load(r: &LoadResult, units_per_op: f64) -> Self {
        let mut extra = BTreeMap::new();
        // The load generator's own CPU: near one CPU-second per second means the client, not
        // the server, bounded this point.
        if let Some(ns) = r.client_cpu_ns.filter(|_| r.ok > 0) {
            extra.insert(
                "client_cpu_us_per_op".into(),
                ns as f64 / 1000.0 / r.ok as f64,
            );
            extra.insert(
                "client_cpu_util".into(),
                ns as f64 / 1e9 / r.elapsed.as_secs_f64().max(1e-9),
            );
        }
        if let Some(ns) = r.server_cpu_ns {
            extra.insert(
                "server_cpu_util".into(),
                ns as f64 / 1e9 / r.elapsed.as_secs_f64().max(1e-9),
            );
        }
        Self {
            rate: r.ok as f64 * units_per_op / r.elapsed.as_secs_f64().max(1e-9),
            ops: r.ok,
            secs: r.elapsed.as_secs_f64(),
            cpu_us_per_op: r
                .server_cpu_ns
                .filter(|_| r.ok > 0)
                .map(|ns| ns as f64 / 1000.0 / r.ok as f64),
            p50_us: r.hist.value_at_quantile(0.5) as f64,
            p99_us: r.hist.value_at_quantile(0.99) as f64,
            errors: r.errors,
            first_error: r.first_error.clone(),
            extra,
        }
    }

    pub fn from_raw(r: &RawResult) -> Self {
        Self {
            rate: r.units as f64 / r.elapsed.as_secs_f64().max(1e-9),
            ops: r.ops,
            secs: r.elapsed.as_secs_f64(),
            cpu_us_per_op: None,
            p50_us: r.hist.value_at_quantile(0.5) as f64,
            p99_us: r.hist.value_at_quantile(0.99) as f64,
            ..Self::default()
        }
    }

    pub fn failed(err: impl std::fmt::Display) -> Self {
        Self {
            errors: 1,
            first_error: Some(err.to_string()),
            ..Self::default()
        }
    }
}

/// Which server a load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Troupe,
    Yard,
}

pub type CustomFn = Arc<dyn Fn(Ctx) -> BoxFuture<'static, anyhow::Result<Sample>> + Send + Sync>;
pub type VerifyFn = Arc<dyn Fn(Ctx) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

pub enum Kind {
    /// A closed-loop HTTP load.
    Http {
        target: Target,
        conc: usize,
        make: MakeReq,
        check: Check,
        keep_body: bool,
        /// Request budget per point (besides the time bound).
        max_requests: u64,
    },
    /// Anything else (in-process loops, exports watched for RSS, multi-step protocols).
    Custom(CustomFn),
}

/// A workload or a yardstick: one row of the result table.
pub struct Workload {
    pub id: String,
    pub desc: String,
    /// Unit of `rate`, e.g. `items/s`.
    pub unit: &'static str,
    /// Units per HTTP request (items per push, MiB per request, ...).
    pub units_per_op: f64,
    /// Yardstick the ratio is taken against (id of another row, same round).
    pub yardstick: Option<String>,
    /// Run once (after the rounds) instead of in every round.
    pub once: bool,
    pub kind: Kind,
    /// Correctness check after all rounds (counts, no duplicates, ...).
    pub verify: Option<VerifyFn>,
    /// A yardstick (always runs, whatever `--only` says).
    pub yardstick_row: bool,
}

impl Workload {
    /// A closed-loop HTTP workload against troupe, `units_per_op` units per request.
    pub fn http(
        id: &str,
        desc: &str,
        unit: &'static str,
        units_per_op: f64,
        conc: usize,
        make: MakeReq,
        check: Check,
    ) -> Self {
        Self {
            id: id.into(),
            desc: desc.into(),
            unit,
            units_per_op,
            yardstick: None,
            once: false,
            kind: Kind::Http {
                target: Target::Troupe,
                conc,
                make,
                check,
                keep_body: false,
                max_requests: u64::MAX,
            },
            verify: None,
            yardstick_row: false,
        }
    }

    pub fn custom(id: &str, desc: &str, unit: &'static str, f: CustomFn) -> Self {
        Self {
            id: id.into(),
            desc: desc.into(),
            unit,
            units_per_op: 1.0,
            yardstick: None,
            once: false,
            kind: Kind::Custom(f),
            verify: None,
            yardstick_row: false,
        }
    }

    pub fn yardstick(mut self) -> Self {
        self.yardstick_row = true;
        self
    }

    pub fn vs(mut self, yardstick: &str) -> Self {
        self.yardstick = Some(yardstick.into());
        self
    }

    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    pub fn on_yard(mut self) -> Self {
        if let Kind::Http { target, .. } = &mut self.kind {
            *target = Target::Yard;
        }
        self
    }

    pub fn keep_body(mut self) -> Self {
        if let Kind::Http { keep_body, .. } = &mut self.kind {
            *keep_body = true;
        }
        self
    }

    pub fn max_requests(mut self, n: u64) -> Self {
        if let Kind::Http { max_requests, .. } = &mut self.kind {
            *max_requests = n;
        }
        self
    }

    pub fn verify(mut self, f: VerifyFn) -> Self {
        self.verify = Some(f);
        self
    }

    /// Runs one point.
    pub async fn run(&self, ctx: &Ctx) -> Sample {
        match &self.kind {
            Kind::Http {
                target,
                conc,
                make,
                check,
                keep_body,
                max_requests,
            } => {
                let (addr, pid, token) = match target {
                    Target::Troupe => (ctx.troupe, ctx.troupe_pid, Some(ctx.token.clone())),
                    Target::Yard => (ctx.yard, ctx.yard_pid, None),
                };
                let result = load::run(LoadSpec {
                    addr,
                    conc: *conc,
                    warmup: ctx.settings.warmup,
                    duration: ctx.settings.point,
                    max_requests: *max_requests,
                    make: make.clone(),
                    check: check.clone(),
                    keep_body: *keep_body,
                    token,
                    server_pid: Some(pid),
                })
                .await;
                Sample::from_load(&result, self.units_per_op)
            }
            Kind::Custom(f) => match f(ctx.clone()).await {
                Ok(sample) => sample,
                Err(err) => Sample::failed(format!("{err:#}")),
            },
        }
    }
}

/// Checks for the status only.
pub fn expect_status(status: u16) -> Check {
    Arc::new(move |resp| {
        if resp.status.as_u16() == status {
            Ok(())
        } else {
            Err(format!("status {} (expected {status})", resp.status))
        }
    })
}

/// Status 200 and `X-Apify-Pagination-Count: count`.
pub fn expect_page(count: u64) -> Check {
    Arc::new(move |resp| {
        if resp.status != StatusCode::OK {
            return Err(format!("status {}", resp.status));
        }
        let got = resp
            .headers
            .get("x-apify-pagination-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if got != Some(count) {
            return Err(format!("pagination count {got:?}, expected {count}"));
        }
        if resp.len == 0 {
            return Err("empty body".into());
        }
        Ok(())
    })
}

/// Runs `f` on a thread pinned to the server CPU (in-process yardsticks) and awaits it.
pub async fn on_server_cpu<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let cpu = ctx.placement.server;
    let handle = std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            let _ = crate::sys::pin_current_thread(cpu);
        }
        f()
    });
    tokio::task::spawn_blocking(move || handle.join().expect("yardstick thread"))
        .await
        .expect("join")
}
