//! The workload list. Adding one is a few lines: a `Workload::http(...)` (or `custom`) with its
//! yardstick, pushed onto the list; gates refer to it by id in bench/targets.toml.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::bench::{expect_page, expect_status, on_server_cpu, Ctx, Sample, Workload};
use crate::data;
use crate::load::{self, LoadSpec, Req};
use crate::raw;

const MIB: usize = 1 << 20;

/// Yardsticks: same machine, same run, no troupe.
pub fn yardsticks() -> Vec<Workload> {
    let sink_body = Bytes::from(vec![b'a'; MIB]);
    vec![
        Workload::http(
            "hello",
            "bare hyper GET /hello, c=64",
            "req/s",
            1.0,
            64,
            Arc::new(|_, _| Req::get("/hello")),
            expect_status(200),
        )
        .on_yard(),
        Workload::http(
            "sink_1mib",
            "bare hyper POST 1 MiB to /sink, c=8",
            "MiB/s",
            1.0,
            8,
            Arc::new(move |_, _| Req::new(Method::POST, "/sink", sink_body.clone())),
            expect_status(200),
        )
        .on_yard(),
        Workload::custom(
            "raw_insert",
            "SQLite insert, troupe schema+pragmas, 1000 rows/txn",
            "rows/s",
            Arc::new(|ctx| {
                Box::pin(async move {
                    let raw = ctx.raw.clone();
                    let d = ctx.settings.point;
                    let r = on_server_cpu(&ctx, move || raw.lock().insert(d, 2_000_000)).await?;
                    Ok(Sample::from_raw(&r))
                })
            }),
        ),
        Workload::custom(
            "raw_scan",
            "SQLite range scan of the inserted rows",
            "rows/s",
            Arc::new(|ctx| {
                Box::pin(async move {
                    let raw = ctx.raw.clone();
                    let (d, rows) = (ctx.settings.point, ctx.settings.scan_rows);
                    let r = on_server_cpu(&ctx, move || raw.lock().scan(d, rows)).await?;
                    Ok(Sample::from_raw(&r))
                })
            }),
        ),
        raw_commit(
            "raw_commit",
            "SQLite 1-row commit (1 KiB upsert), one txn each",
            false,
        ),
        raw_commit(
            "raw_commit_random",
            "SQLite 1-row commit (1 KiB upsert at a random one of 10,000 keys), one txn each",
            true,
        ),
        Workload::custom(
            "serde",
            "serde_json Value parse+serialize of ~312-B items, 1 core",
            "items/s",
            Arc::new(|ctx| {
                Box::pin(async move {
                    let items = ctx.items.clone();
                    let d = ctx.settings.point;
                    let r = on_server_cpu(&ctx, move || raw::serde_roundtrip(&items, d)).await;
                    Ok(Sample::from_raw(&r))
                })
            }),
        ),
        Workload::custom(
            "spawn",
            "spawn+exit of a tiny binary (--spawn-bin, default /bin/sh)",
            "spawns/s",
            Arc::new(|ctx| {
                Box::pin(async move {
                    let bin = ctx.settings.spawn_bin.clone();
                    let d = ctx.settings.point;
                    let r = on_server_cpu(&ctx, move || raw::spawn_exit(&bin, d, 2000)).await?;
                    Ok(Sample::from_raw(&r))
                })
            }),
        ),
        Workload::custom(
            "disk_write",
            "buffered write of 32 MiB + one fsync",
            "MB/s",
            Arc::new(|ctx| {
                Box::pin(async move {
                    let dir = ctx.work_dir.clone();
                    let bytes = if ctx.settings.quick {
                        8 << 20
                    } else {
                        32 << 20
                    };
                    let r = on_server_cpu(&ctx, move || raw::disk_write(&dir, bytes)).await?;
                    let mut s = Sample::from_raw(&r);
                    s.rate /= 1e6;
                    Ok(s)
                })
            }),
        ),
    ]
    .into_iter()
    .map(Workload::yardstick)
    .collect()
}

/// Counts successful pushes of `per_op` items, to compare with the dataset's count at the end.
fn counting_push_check(counter: Arc<AtomicU64>, per_op: u64) -> load::Check {
    Arc::new(move |resp| {
        if resp.status == StatusCode::CREATED {
            counter.fetch_add(per_op, Ordering::Relaxed);
            Ok(())
        } else {
            Err(format!("status {} (expected 201)", resp.status))
        }
    })
}

/// Verifies that a dataset holds exactly `expected` items (plus `base`).
fn verify_count(name: &'static str, counter: Arc<AtomicU64>) -> crate::bench::VerifyFn {
    Arc::new(move |ctx: Ctx| {
        let counter = counter.clone();
        Box::pin(async move {
            let id = ctx.id(name);
            let value = ctx
                .api_json(
                    Method::GET,
                    &format!("/v2/datasets/{id}"),
                    Bytes::new(),
                    StatusCode::OK,
                )
                .await?;
            let got = value["data"]["itemCount"].as_u64().unwrap_or(u64::MAX);
            let want = counter.load(Ordering::Relaxed);
            anyhow::ensure!(
                got == want,
                "dataset {name}: itemCount {got}, but {want} items were acknowledged"
            );
            Ok(())
        })
    })
}

/// Dataset workloads (datasets are created in `setup_datasets`).
pub fn datasets(ctx: &Ctx) -> Vec<Workload> {
    let mut list = Vec::new();
    let read = ctx.id("read");
    let total = ctx.settings.read_items;
    let page = 1000u64.min(total);

    list.push(
        Workload::http(
            "full_stack_hello",
            "T0 GET /v2/users/me (auth+tracing+routing), c=64",
            "req/s",
            1.0,
            64,
            Arc::new(|_, _| Req::get("/v2/users/me")),
            Arc::new(|resp| {
                if resp.status != StatusCode::OK {
                    return Err(format!("status {}", resp.status));
                }
                if !resp.body.starts_with(b"{\"data\":{") {
                    return Err("body is not {\"data\":{...}}".into());
                }
                Ok(())
            }),
        )
        .keep_body()
        .vs("hello"),
    );

    // Diagnostic for T0: the whole middleware stack and routing, no handler work, no auth.
    list.push(
        Workload::http(
            "route_404",
            "GET /v2/no-such-route (middleware + routing + error envelope), c=64",
            "req/s",
            1.0,
            64,
            Arc::new(|_, _| Req::get("/v2/no-such-route")),
            expect_status(404),
        )
        .vs("hello"),
    );

    // Pushes: every acknowledged item is counted and checked against itemCount at the end.
    let pushed = Arc::new(AtomicU64::new(0));
    let batch_id = ctx.id("push_batch");
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..8)
            .map(|b| Bytes::from(data::batch(b * 1000, 1000)))
            .collect(),
    );
    {
        let bodies = bodies.clone();
        let path = format!("/v2/datasets/{batch_id}/items");
        list.push(
            Workload::http(
                "push_batch",
                "T1 POST 1000-item array (~320 KB), c=4",
                "items/s",
                1000.0,
                4,
                Arc::new(move |seq, _| {
                    Req::new(
                        Method::POST,
                        path.clone(),
                        bodies[(seq % bodies.len() as u64) as usize].clone(),
                    )
                    .header("content-type", "application/json")
                }),
                counting_push_check(pushed.clone(), 1000),
            )
            .vs("raw_insert")
            .max_requests(if ctx.settings.quick { 50 } else { 1000 })
            .verify(verify_count("push_batch", pushed.clone())),
        );
    }
    {
        let gz: Arc<Vec<Bytes>> = Arc::new(bodies.iter().map(|b| gzip(b)).collect());
        let path = format!("/v2/datasets/{batch_id}/items");
        list.push(
            Workload::http(
                "push_batch_gzip",
                "T1 same, Content-Encoding: gzip",
                "items/s",
                1000.0,
                4,
                Arc::new(move |seq, _| {
                    Req::new(
                        Method::POST,
                        path.clone(),
                        gz[(seq % gz.len() as u64) as usize].clone(),
                    )
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                }),
                counting_push_check(pushed.clone(), 1000),
            )
            .vs("raw_insert")
            .max_requests(if ctx.settings.quick { 50 } else { 1000 }),
        );
    }
    {
        let single = Arc::new(AtomicU64::new(0));
        let id = ctx.id("push_single");
        let path = format!("/v2/datasets/{id}/items");
        let items: Arc<Vec<Bytes>> = Arc::new(
            ctx.items
                .iter()
                .take(1000)
                .map(|s| Bytes::from(s.clone()))
                .collect(),
        );
        list.push(
            Workload::http(
                "push_single",
                "T2 POST 1 item, c=8",
                "req/s",
                1.0,
                8,
                Arc::new(move |seq, _| {
                    Req::new(
                        Method::POST,
                        path.clone(),
                        items[(seq % items.len() as u64) as usize].clone(),
                    )
                    .header("content-type", "application/json")
                }),
                counting_push_check(single.clone(), 1),
            )
            .vs("raw_commit")
            .verify(verify_count("push_single", single)),
        );
    }

    // Reads of the seeded dataset.
    let span = total.saturating_sub(page).max(1);
    let get = |id: &str, desc: &str, query: String, conc: usize, vs: &str, random: bool| {
        let read = read.clone();
        let q = query.clone();
        Workload::http(
            id,
            desc,
            "items/s",
            page as f64,
            conc,
            Arc::new(move |_, rng| {
                let offset = if random { rng.below(span) } else { 0 };
                Req::get(format!(
                    "/v2/datasets/{read}/items?offset={offset}&limit={page}{q}"
                ))
            }),
            expect_page(page),
        )
        .vs(vs)
    };
    list.push(get(
        "items_json",
        "T3 GET items json, limit 1000, random offsets, c=8",
        String::new(),
        8,
        "raw_scan",
        true,
    ));
    list.push(get(
        "items_jsonl",
        "T3 GET items jsonl, random offsets, c=8",
        "&format=jsonl".into(),
        8,
        "raw_scan",
        true,
    ));
    list.push(get(
        "items_json_offset0",
        "T3 GET items json at offset 0, c=8",
        String::new(),
        8,
        "raw_scan",
        false,
    ));
    {
        let read = read.clone();
        let deep = total.saturating_sub(page);
        list.push(
            Workload::http(
                "items_json_deep",
                &format!("T3 GET items json at offset {deep}, c=8"),
                "items/s",
                page as f64,
                8,
                Arc::new(move |_, _| {
                    Req::get(format!(
                        "/v2/datasets/{read}/items?offset={deep}&limit={page}"
                    ))
                }),
                expect_page(page),
            )
            .vs("items_json_offset0"),
        );
    }
    list.push(get(
        "items_json_desc",
        "T3 GET items json desc=1, random offsets, c=8",
        "&desc=1".into(),
        8,
        "items_json",
        true,
    ));
    for (id, desc, q) in [
        ("items_csv", "T4 GET items csv", "&format=csv"),
        ("items_xml", "T4 GET items xml", "&format=xml"),
        ("items_html", "T4 GET items html", "&format=html"),
        ("items_rss", "T4 GET items rss", "&format=rss"),
        (
            "items_fields",
            "T4 GET items json fields=url,title,price",
            "&fields=url,title,price",
        ),
        (
            "items_omit",
            "T4 GET items json omit=description,tags",
            "&omit=description,tags",
        ),
        (
            "items_unwind",
            "T4 GET items json unwind=tags",
            "&unwind=tags",
        ),
        (
            "items_flatten",
            "T4 GET items json flatten=seller",
            "&flatten=seller",
        ),
        ("items_clean", "T4 GET items json clean=1", "&clean=1"),
        (
            "items_csv_fields",
            "T4 GET items csv fields=url,title,price",
            "&format=csv&fields=url,title,price",
        ),
    ] {
        let w = get(
            id,
            &format!("{desc}, limit 1000, c=4"),
            q.into(),
            4,
            "serde",
            true,
        );
        // unwind multiplies records, the page count header stays the item count.
        list.push(w);
    }
    {
        let xlsx_items = if ctx.settings.quick { 1000 } else { 10_000 }.min(total);
        let read = read.clone();
        let span = total.saturating_sub(xlsx_items).max(1);
        list.push(
            Workload::http(
                "items_xlsx",
                &format!("T4x GET items xlsx, limit {xlsx_items}, c=2"),
                "items/s",
                xlsx_items as f64,
                2,
                Arc::new(move |_, rng| {
                    let offset = rng.below(span);
                    Req::get(format!(
                        "/v2/datasets/{read}/items?format=xlsx&offset={offset}&limit={xlsx_items}"
                    ))
                }),
                expect_page(xlsx_items),
            )
            .vs("serde"),
        );
    }

    // Peak RSS of a whole-dataset export in each format.
    for format in ["json", "jsonl", "csv", "xml", "html", "rss", "xlsx"] {
        let read = read.clone();
        list.push(
            Workload::custom(
                &format!("export_rss_{format}"),
                &format!("whole-dataset export ({total} items) format={format}: peak server RSS"),
                "items/s",
                Arc::new(move |ctx| {
                    let read = read.clone();
                    Box::pin(async move {
                        export_rss(
                            &ctx,
                            &format!("/v2/datasets/{read}/items?format={format}"),
                            total,
                        )
                        .await
                    })
                }),
            )
            .once(),
        );
    }
    list
}

fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).expect("gzip");
    Bytes::from(enc.finish().expect("gzip"))
}

/// One export request while a sampler watches the server's memory. The peak is VmHWM after a
/// reset (exact) or else the highest sampled VmRSS; anonymous memory is sampled either way.
async fn export_rss(ctx: &Ctx, path: &str, total: u64) -> anyhow::Result<Sample> {
    let pid = ctx.troupe_pid;
    let before = crate::sys::mem(pid);
    let reset = crate::sys::reset_peak_rss(pid);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut rss, mut anon) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let m = crate::sys::mem(pid);
                rss = rss.max(m.rss_kb);
                anon = anon.max(m.anon_kb);
                std::thread::sleep(Duration::from_millis(10));
            }
            (rss, anon)
        })
    };
    let started = Instant::now();
    let result = load::run(LoadSpec {
        addr: ctx.troupe,
        conc: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(600),
        max_requests: 1,
        make: {
            let path = path.to_string();
            Arc::new(move |_, _| Req::get(path.clone()))
        },
        check: expect_page(total),
        keep_body: false,
        token: Some(ctx.token.clone()),
        server_pid: Some(pid),
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (sampled_rss, sampled_anon) = sampler.join().expect("sampler");
    let after = crate::sys::mem(pid);
    let peak_kb = if reset {
        after.hwm_kb.max(sampled_rss)
    } else {
        sampled_rss
    };
    let mut sample = Sample::from_load(&result, total as f64);
    sample.rate = if result.ok > 0 {
        total as f64 / secs
    } else {
        0.0
    };
    sample.cpu_us_per_op = result
        .server_cpu_ns
        .map(|ns| ns as f64 / 1000.0 / total as f64);
    let mb = |kb: u64| kb as f64 / 1024.0;
    sample.extra.insert("peak_rss_mb".into(), mb(peak_kb));
    sample.extra.insert("peak_anon_mb".into(), mb(sampled_anon));
    sample
        .extra
        .insert("rss_before_mb".into(), mb(before.rss_kb));
    sample
        .extra
        .insert("bytes_mb".into(), result.bytes_in as f64 / MIB as f64);
    Ok(sample)
}

/// Idle RSS of the freshly started server (before any load).
pub fn idle_rss(pid: u32) -> Sample {
    let m = crate::sys::mem(pid);
    let mut s = Sample::default();
    s.extra.insert("rss_mb".into(), m.rss_kb as f64 / 1024.0);
    s.extra.insert("anon_mb".into(), m.anon_kb as f64 / 1024.0);
    s
}

/// Creates the datasets and seeds the read dataset with `read_items` items through the API.
pub async fn setup_datasets(ctx: &Ctx) -> anyhow::Result<()> {
    let read = ctx.create_storage("datasets", "read").await?;
    ctx.create_storage("datasets", "push_batch").await?;
    ctx.create_storage("datasets", "push_single").await?;
    let total = ctx.settings.read_items;
    let batches = total.div_ceil(1000);
    let path = format!("/v2/datasets/{read}/items");
    let result = load::run(LoadSpec {
        addr: ctx.troupe,
        conc: 4,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(600),
        max_requests: batches,
        make: Arc::new(move |seq, _| {
            let first = seq * 1000;
            let n = 1000.min(total - first);
            Req::new(Method::POST, path.clone(), data::batch(first, n))
                .header("content-type", "application/json")
        }),
        check: expect_status(201),
        keep_body: false,
        token: Some(ctx.token.clone()),
        server_pid: None,
    })
    .await;
    anyhow::ensure!(
        result.errors == 0 && result.ok == batches,
        "seeding the read dataset: {} ok of {batches}, {} errors ({:?})",
        result.ok,
        result.errors,
        result.first_error
    );
    let value = ctx
        .api_json(
            Method::GET,
            &format!("/v2/datasets/{read}"),
            Bytes::new(),
            StatusCode::OK,
        )
        .await?;
    anyhow::ensure!(
        value["data"]["itemCount"].as_u64() == Some(total),
        "read dataset holds {} items, expected {total}",
        value["data"]["itemCount"]
    );
    Ok(())
}

/// The 1-row-commit yardstick, its keys in sequence or (`random`) at random (see
/// `RawEngine::commit`).
fn raw_commit(id: &'static str, description: &'static str, random: bool) -> Workload {
    Workload::custom(
        id,
        description,
        "commits/s",
        Arc::new(move |ctx| {
            Box::pin(async move {
                let raw = ctx.raw.clone();
                let d = ctx.settings.point;
                let r =
                    on_server_cpu(&ctx, move || raw.lock().commit(d, 1_000_000, random)).await?;
                Ok(Sample::from_raw(&r))
            })
        }),
    )
}
