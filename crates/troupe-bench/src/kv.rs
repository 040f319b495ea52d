//! Key-value store workloads: GET and PUT of 1 KiB (T5, T6) and 1 MiB (T5L, T6L) records.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::bench::{Ctx, Workload};
use crate::load::{self, LoadSpec, Req};

const KIB: usize = 1024;
const MIB: usize = 1 << 20;

fn small_count(ctx: &Ctx) -> u64 {
    if ctx.settings.quick {
        1_000
    } else {
        10_000
    }
}

fn large_count(ctx: &Ctx) -> u64 {
    if ctx.settings.quick {
        4
    } else {
        20
    }
}

fn value(len: usize, seed: u64) -> Bytes {
    let mut v = vec![b'a' + (seed % 26) as u8; len];
    v[0] = b'{';
    Bytes::from(v)
}

fn ok_2xx(len: Option<u64>) -> load::Check {
    Arc::new(move |resp| {
        if !resp.status.is_success() {
            return Err(format!("status {}", resp.status));
        }
        if let Some(len) = len {
            if resp.len != len {
                return Err(format!("body of {} bytes, expected {len}", resp.len));
            }
        }
        Ok(())
    })
}

/// Creates and seeds the store; false when troupe has no key-value records yet.
pub async fn setup(ctx: &Ctx) -> anyhow::Result<bool> {
    let store = ctx.create_storage("key-value-stores", "kv").await?;
    let (status, _) = ctx
        .api(
            Method::PUT,
            &format!("/v2/key-value-stores/{store}/records/probe"),
            value(KIB, 0),
        )
        .await?;
    if !status.is_success() {
        return Ok(false);
    }
    for (prefix, count, len) in [("s", small_count(ctx), KIB), ("l", large_count(ctx), MIB)] {
        let path = format!("/v2/key-value-stores/{store}/records/{prefix}");
        let result = load::run(LoadSpec {
            addr: ctx.troupe,
            conc: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(600),
            max_requests: count,
            make: Arc::new(move |seq, _| {
                Req::new(Method::PUT, format!("{path}{seq}"), value(len, seq))
                    .header("content-type", "application/octet-stream")
            }),
            check: ok_2xx(None),
            keep_body: false,
            token: Some(ctx.token.clone()),
            server_pid: None,
        })
        .await;
        anyhow::ensure!(
            result.errors == 0 && result.ok == count,
            "seeding records: {} ok of {count}, {} errors ({:?})",
            result.ok,
            result.errors,
            result.first_error
        );
    }
    let (status, _) = ctx
        .api(
            Method::GET,
            &format!("/v2/key-value-stores/{store}/records/s0"),
            Bytes::new(),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "seeded record not readable: {status}"
    );
    Ok(true)
}

pub fn workloads(ctx: &Ctx) -> Vec<Workload> {
    let store = ctx.id("kv");
    let (small, large) = (small_count(ctx), large_count(ctx));
    let base = format!("/v2/key-value-stores/{store}/records");
    let mut list = Vec::new();
    let b = base.clone();
    list.push(
        Workload::http(
            "kv_get_1k",
            "T5 GET record 1 KiB, random keys, c=64",
            "req/s",
            1.0,
            64,
            Arc::new(move |_, rng| Req::get(format!("{b}/s{}", rng.below(small)))),
            ok_2xx(Some(KIB as u64)),
        )
        .vs("hello"),
    );
    let b = base.clone();
    list.push(
        Workload::http(
            "kv_get_1m",
            "T5L GET record 1 MiB, c=8",
            "MiB/s",
            1.0,
            8,
            Arc::new(move |_, rng| Req::get(format!("{b}/l{}", rng.below(large)))),
            ok_2xx(Some(MIB as u64)),
        )
        .vs("sink_1mib"),
    );
    let b = base.clone();
    let values: Arc<Vec<Bytes>> = Arc::new((0..16).map(|i| value(KIB, i)).collect());
    list.push(
        Workload::http(
            "kv_put_1k",
            "T6 PUT record 1 KiB (overwrite), random keys, c=8",
            "req/s",
            1.0,
            8,
            Arc::new(move |seq, rng| {
                Req::new(
                    Method::PUT,
                    format!("{b}/s{}", rng.below(small)),
                    values[(seq % 16) as usize].clone(),
                )
                .header("content-type", "application/octet-stream")
            }),
            ok_2xx(None),
        )
        .vs("raw_commit_random"),
    );
    let b = base;
    let big = value(MIB, 3);
    list.push(
        Workload::http(
            "kv_put_1m",
            "T6L PUT record 1 MiB (overwrite), c=4",
            "MiB/s",
            1.0,
            4,
            Arc::new(move |_, rng| {
                Req::new(
                    Method::PUT,
                    format!("{b}/l{}", rng.below(large)),
                    big.clone(),
                )
                .header("content-type", "application/octet-stream")
            }),
            ok_2xx(None),
        )
        .vs("sink_1mib"),
    );
    list
}
