//! Request-queue workloads: batch add (T7), head (T8) and an 8-consumer lock+handle loop (T9)
//! that checks no request is handed to two consumers and none is lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::bench::{Ctx, Sample, Workload};
use crate::client::Client;
use crate::load::{self, new_hist, LoadSpec, Req};

/// One request of ~250 bytes (as JSON), unique by `n`.
fn request(n: u64) -> Value {
    json!({
        "url": format!("https://example.com/catalog/page-{n}?sort=price&view=grid&ref=bench"),
        "uniqueKey": format!("https://example.com/catalog/page-{n}?sort=price&view=grid&ref=bench"),
        "method": "GET",
        "userData": { "label": "LIST", "depth": n % 7, "seed": "troupe-bench" }
    })
}

fn batch_body(first: u64, n: u64) -> Bytes {
    let list: Vec<Value> = (first..first + n).map(request).collect();
    Bytes::from(serde_json::to_vec(&list).expect("json"))
}

/// Adds `count` requests to a queue in batches of 25 (c=5).
async fn seed(ctx: &Ctx, queue: &str, count: u64, offset: u64) -> anyhow::Result<()> {
    let path = format!("/v2/request-queues/{queue}/requests/batch");
    let batches = count.div_ceil(25);
    let result = load::run(LoadSpec {
        addr: ctx.troupe,
        conc: 5,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(600),
        max_requests: batches,
        make: Arc::new(move |seq, _| {
            let first = offset + seq * 25;
            let n = 25.min(offset + count - first);
            Req::new(Method::POST, path.clone(), batch_body(first, n))
                .header("content-type", "application/json")
        }),
        check: crate::bench::expect_status(201),
        keep_body: false,
        token: Some(ctx.token.clone()),
        server_pid: None,
    })
    .await;
    anyhow::ensure!(
        result.errors == 0 && result.ok == batches,
        "seeding queue: {} ok of {batches}, {} errors ({:?})",
        result.ok,
        result.errors,
        result.first_error
    );
    Ok(())
}

async fn queue_counts(ctx: &Ctx, queue: &str) -> anyhow::Result<(u64, u64, u64)> {
    let v = ctx
        .api_json(
            Method::GET,
            &format!("/v2/request-queues/{queue}"),
            Bytes::new(),
            StatusCode::OK,
        )
        .await?;
    let d = &v["data"];
    Ok((
        d["totalRequestCount"].as_u64().unwrap_or(u64::MAX),
        d["handledRequestCount"].as_u64().unwrap_or(u64::MAX),
        d["pendingRequestCount"].as_u64().unwrap_or(u64::MAX),
    ))
}

/// Requests seeded in the consume queue: enough that the queue never runs dry during the rounds
/// (at ~18k handled/s, 5 rounds of warm-up + 1.5 s take ~150k; with 60k the last rounds measured
/// an empty queue, 0 handled/s, and the median fell with them).
fn consume_total(ctx: &Ctx) -> u64 {
    if ctx.settings.quick {
        4_000
    } else {
        250_000
    }
}

/// Creates the queues; false when troupe has no request queues.
pub async fn setup(ctx: &Ctx) -> anyhow::Result<bool> {
    let (status, _) = ctx
        .api(
            Method::POST,
            "/v2/request-queues?name=bench-probe",
            Bytes::new(),
        )
        .await?;
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return Ok(false);
    }
    ctx.create_storage("request-queues", "rq_add").await?;
    let head = ctx.create_storage("request-queues", "rq_head").await?;
    let consume = ctx.create_storage("request-queues", "rq_consume").await?;
    seed(
        ctx,
        &head,
        if ctx.settings.quick { 1_000 } else { 10_000 },
        0,
    )
    .await?;
    seed(ctx, &consume, consume_total(ctx), 0).await?;
    Ok(true)
}

/// What the consumers saw, across rounds.
#[derive(Default)]
struct Ledger {
    /// Request id → consumer currently holding its lock.
    locked: HashMap<String, usize>,
    handled: HashSet<String>,
    violations: Vec<String>,
}

pub fn workloads(ctx: &Ctx) -> Vec<Workload> {
    let mut list = Vec::new();
    {
        let queue = ctx.id("rq_add");
        let next = Arc::new(AtomicU64::new(10_000_000));
        let added = Arc::new(AtomicU64::new(0));
        let path = format!("/v2/request-queues/{queue}/requests/batch");
        let counter = added.clone();
        list.push(
            Workload::http(
                "rq_batch_add",
                "T7 POST requests/batch 25 x ~250 B, unique URLs, c=5",
                "requests/s",
                25.0,
                5,
                Arc::new(move |_, _| {
                    let first = next.fetch_add(25, Ordering::Relaxed);
                    Req::new(Method::POST, path.clone(), batch_body(first, 25))
                        .header("content-type", "application/json")
                }),
                Arc::new(move |resp| {
                    if resp.status != StatusCode::CREATED {
                        return Err(format!("status {}", resp.status));
                    }
                    counter.fetch_add(25, Ordering::Relaxed);
                    Ok(())
                }),
            )
            .vs("raw_insert")
            .verify(Arc::new(move |ctx: Ctx| {
                let added = added.clone();
                let queue = queue.clone();
                Box::pin(async move {
                    let (total, _, _) = queue_counts(&ctx, &queue).await?;
                    let want = added.load(Ordering::Relaxed);
                    anyhow::ensure!(
                        total == want,
                        "queue rq_add: totalRequestCount {total}, but {want} requests were acknowledged"
                    );
                    Ok(())
                })
            })),
        );
    }
    {
        let queue = ctx.id("rq_head");
        list.push(
            Workload::http(
                "rq_head",
                "T8 GET head?limit=100, c=8",
                "req/s",
                1.0,
                8,
                Arc::new(move |_, _| {
                    Req::get(format!("/v2/request-queues/{queue}/head?limit=100"))
                }),
                crate::bench::expect_status(200),
            )
            .vs("hello"),
        );
    }
    {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let queue = ctx.id("rq_consume");
        let l = ledger.clone();
        let q = queue.clone();
        list.push(
            Workload::custom(
                "rq_consume",
                "T9 8 consumers: POST head/lock?limit=25, PUT each handled (5% DELETE lock)",
                "handled/s",
                Arc::new(move |ctx| {
                    let (ledger, queue) = (l.clone(), q.clone());
                    Box::pin(async move {
                        let d = ctx.settings.point;
                        // Warm-up is part of the work (the queue is finite): not measured apart.
                        consume(&ctx, &queue, &ledger, d, false).await
                    })
                }),
            )
            .vs("raw_commit")
            .verify(Arc::new(move |ctx: Ctx| {
                let (ledger, queue) = (ledger.clone(), queue.clone());
                Box::pin(async move {
                    // Drain what is left, then everything seeded must be handled exactly once.
                    let drained =
                        consume(&ctx, &queue, &ledger, Duration::from_secs(300), true).await?;
                    anyhow::ensure!(drained.errors == 0, "drain: {:?}", drained.first_error);
                    let total = consume_total(&ctx);
                    let (count, handled, pending) = queue_counts(&ctx, &queue).await?;
                    let l = ledger.lock();
                    anyhow::ensure!(
                        l.violations.is_empty(),
                        "request queue consumers: {}",
                        l.violations[..l.violations.len().min(5)].join("; ")
                    );
                    anyhow::ensure!(
                        l.handled.len() as u64 == total && handled == total && pending == 0 && count == total,
                        "request queue: {} handled by consumers, queue says total {count}, handled {handled}, pending {pending}; seeded {total}",
                        l.handled.len()
                    );
                    Ok(())
                })
            })),
        );
    }
    list
}

/// Runs 8 consumers for `duration` (or, with `drain`, until the queue is empty).
async fn consume(
    ctx: &Ctx,
    queue: &str,
    ledger: &Arc<Mutex<Ledger>>,
    duration: Duration,
    drain: bool,
) -> anyhow::Result<Sample> {
    let cpu_before = crate::sys::cpu_sample(ctx.troupe_pid);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for consumer in 0..8usize {
        let (ctx, queue, ledger) = (ctx.clone(), queue.to_string(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(ctx.troupe, &ctx.token);
            let key = format!("bench-consumer-{consumer}");
            let mut hist = new_hist();
            let (mut handled, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            let mut rng = crate::load::Rng::new(consumer as u64 + 17);
            let mut empty_heads = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let lock = client
                    .send(Req::new(
                        Method::POST,
                        format!("/v2/request-queues/{queue}/head/lock?limit=25&lockSecs=60&clientKey={key}"),
                        Bytes::new(),
                    ))
                    .await;
                let _ = hist.record(t.elapsed().as_micros() as u64 + 1);
                let items = match lock {
                    Ok((StatusCode::CREATED, body)) => {
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        v["data"]["items"].as_array().cloned().unwrap_or_default()
                    }
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert(format!("head/lock: {status} {}", String::from_utf8_lossy(&body)));
                        continue;
                    }
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert(format!("head/lock: {err}"));
                        continue;
                    }
                };
                if items.is_empty() {
                    empty_heads += 1;
                    // Drained (or everything left is locked by others for a moment).
                    if drain && empty_heads > 20 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                empty_heads = 0;
                {
                    let mut l = ledger.lock();
                    for item in &items {
                        let id = item["id"].as_str().unwrap_or_default().to_string();
                        if l.handled.contains(&id) {
                            l.violations.push(format!("{id} handed out again after it was handled"));
                        }
                        if let Some(other) = l.locked.insert(id.clone(), consumer) {
                            if other != consumer {
                                l.violations.push(format!("{id} locked by consumers {other} and {consumer}"));
                            }
                        }
                    }
                }
                for item in items {
                    let id = item["id"].as_str().unwrap_or_default().to_string();
                    let t = Instant::now();
                    // 5%: give the request back (it must come back later, to someone).
                    let release = !drain && rng.below(20) == 0;
                    let result = if release {
                        ledger.lock().locked.remove(&id);
                        client
                            .send(Req::new(
                                Method::DELETE,
                                format!("/v2/request-queues/{queue}/requests/{id}/lock?clientKey={key}"),
                                Bytes::new(),
                            ))
                            .await
                    } else {
                        let mut body = item.clone();
                        if let Some(obj) = body.as_object_mut() {
                            obj.remove("lockExpiresAt");
                            obj.insert("handledAt".into(), json!(troupe_model::format_ts(troupe_model::now_ms())));
                        }
                        client
                            .send(
                                Req::new(
                                    Method::PUT,
                                    format!("/v2/request-queues/{queue}/requests/{id}?clientKey={key}"),
                                    serde_json::to_vec(&body).expect("json"),
                                )
                                .header("content-type", "application/json"),
                            )
                            .await
                    };
                    let _ = hist.record(t.elapsed().as_micros() as u64 + 1);
                    match result {
                        Ok((status, _)) if status.is_success() => {
                            if !release {
                                handled += 1;
                                let mut l = ledger.lock();
                                l.locked.remove(&id);
                                if !l.handled.insert(id.clone()) {
                                    l.violations.push(format!("{id} handled twice"));
                                }
                            }
                        }
                        Ok((status, body)) => {
                            errors += 1;
                            first_error.get_or_insert(format!("{}: {status} {}", if release { "unlock" } else { "handle" }, String::from_utf8_lossy(&body)));
                        }
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert(format!("handle: {err}"));
                        }
                    }
                }
            }
            (handled, errors, first_error, hist)
        }));
    }
    let mut sample = Sample::default();
    let mut hist = new_hist();
    let mut handled = 0;
    for task in tasks {
        let (h, e, f, hh) = task.await?;
        handled += h;
        sample.errors += e;
        if sample.first_error.is_none() {
            sample.first_error = f;
        }
        hist.add(&hh).ok();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = crate::sys::cpu_sample(ctx.troupe_pid);
    sample.ops = handled;
    sample.secs = secs;
    sample.rate = handled as f64 / secs.max(1e-9);
    sample.p50_us = hist.value_at_quantile(0.5) as f64;
    sample.p99_us = hist.value_at_quantile(0.99) as f64;
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        if handled > 0 {
            sample.cpu_us_per_op =
                Some(crate::sys::cpu_delta_ns(&a, &b) as f64 / 1000.0 / handled as f64);
        }
    }
    Ok(sample)
}
