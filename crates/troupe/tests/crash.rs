//! Durability: the server is killed with SIGKILL again and again while clients write; after
//! each restart everything that was acknowledged is there, in order, exactly once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{client, eventually, TestServer};
use serde_json::{json, Value};

/// Acknowledged writes as (writer, sequence number), in acknowledgement order.
#[derive(Default)]
struct Acked {
    items: std::sync::Mutex<Vec<(u64, u64)>>,
}

async fn writer(api_url: String, writer_id: u64, start_seq: u64, acked: Arc<Acked>) -> u64 {
    let http = client();
    let mut seq = start_seq;
    loop {
        // Alternate single items and small batches.
        let batch: Vec<Value> = if seq.is_multiple_of(3) {
            vec![json!({"w": writer_id, "s": seq})]
        } else {
            (0..5)
                .map(|i| json!({"w": writer_id, "s": seq + i}))
                .collect()
        };
        let n = batch.len() as u64;
        match http.post(&api_url).json(&batch).send().await {
            Ok(response) if response.status() == 201 => {
                let mut items = acked.items.lock().unwrap();
                for i in 0..n {
                    items.push((writer_id, seq + i));
                }
                seq += n;
            }
            // The server died under us: this write may or may not have landed.
            _ => return seq + n,
        }
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let http = client();
    assert_eq!(
        http.post(server.url("/datasets?name=crash"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let acked = Arc::new(Acked::default());
    let mut next_seq: HashMap<u64, u64> = (0..4).map(|w| (w, 0)).collect();

    for round in 0..5u64 {
        let url = server.url("/datasets/~crash/items");
        let tasks: Vec<_> = (0..4u64)
            .map(|w| tokio::spawn(writer(url.clone(), w, next_seq[&w], acked.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + round * 70)).await;
        // However slow the machine, the writers got somewhere in this round before the kill.
        let target = 20 * (round as usize + 1) + 1;
        eventually("writers to make progress", || async {
            (acked.items.lock().unwrap().len() >= target).then_some(())
        })
        .await;
        server.kill9();
        for (w, task) in tasks.into_iter().enumerate() {
            // Skip past anything that might have landed unacknowledged.
            next_seq.insert(w as u64, task.await.unwrap() + 1000);
        }
        server = TestServer::start_in(dir.path(), &[]);

        let items: Vec<Value> = http
            .get(server.url("/datasets/~crash/items"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored: Vec<(u64, u64)> = items
            .iter()
            .map(|i| (i["w"].as_u64().unwrap(), i["s"].as_u64().unwrap()))
            .collect();
        let info: Value = http
            .get(server.url("/datasets/~crash"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            info["data"]["itemCount"].as_u64().unwrap(),
            stored.len() as u64,
            "count matches items"
        );
        let acked_now = acked.items.lock().unwrap().clone();
        assert!(
            acked_now.len() as u64 > 20 * (round + 1),
            "writers made progress: {}",
            acked_now.len()
        );
        for writer_id in 0..4u64 {
            let acked_seqs: Vec<u64> = acked_now
                .iter()
                .filter(|(w, _)| *w == writer_id)
                .map(|(_, s)| *s)
                .collect();
            let stored_seqs: Vec<u64> = stored
                .iter()
                .filter(|(w, _)| *w == writer_id)
                .map(|(_, s)| *s)
                .collect();
            // Stored order per writer is increasing (in order, no duplicates)...
            assert!(
                stored_seqs.windows(2).all(|p| p[0] < p[1]),
                "writer {writer_id}: order/duplicates"
            );
            // ...and contains every acknowledged item.
            let mut cursor = stored_seqs.iter();
            for seq in &acked_seqs {
                assert!(
                    cursor.any(|s| s == seq),
                    "round {round}: acknowledged item w{writer_id}/s{seq} lost"
                );
            }
        }
    }
}

/// Puts records `w{writer}-{n}` with a body naming them until the server dies.
async fn record_writer(
    server_api: String,
    token: String,
    writer_id: u64,
    start: u64,
    acked: Arc<Acked>,
) -> u64 {
    let http = client();
    let mut n = start;
    loop {
        let body = format!(
            "{{\"writer\":{writer_id},\"n\":{n},\"pad\":\"{}\"}}",
            "x".repeat((n % 7) as usize * 300)
        );
        let url =
            format!("{server_api}/key-value-stores/~crash/records/w{writer_id}-{n}?token={token}");
        match http
            .put(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                acked.items.lock().unwrap().push((writer_id, n));
                n += 1;
            }
            _ => return n + 1,
        }
    }
}

#[tokio::test]
async fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let http = client();
    assert_eq!(
        http.post(server.url("/key-value-stores?name=crash"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let acked = Arc::new(Acked::default());
    let mut next: HashMap<u64, u64> = (0..4).map(|w| (w, 0)).collect();
    for round in 0..4u64 {
        let acked_before = acked.items.lock().unwrap().len();
        let tasks: Vec<_> = (0..4u64)
            .map(|w| {
                tokio::spawn(record_writer(
                    server.api(),
                    server.token.clone(),
                    w,
                    next[&w],
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + round * 60)).await;
        // However slow the machine, some write of this round was acknowledged before the kill.
        eventually("a record write acknowledged", || async {
            (acked.items.lock().unwrap().len() > acked_before).then_some(())
        })
        .await;
        server.kill9();
        for (w, task) in tasks.into_iter().enumerate() {
            next.insert(w as u64, task.await.unwrap() + 100);
        }
        server = TestServer::start_in(dir.path(), &[]);
        let acked_now = acked.items.lock().unwrap().clone();
        assert!(!acked_now.is_empty());
        for (writer_id, n) in acked_now {
            let url = server.url(&format!(
                "/key-value-stores/~crash/records/w{writer_id}-{n}"
            ));
            let response = http.get(&url).send().await.unwrap();
            assert_eq!(
                response.status(),
                200,
                "round {round}: acknowledged record w{writer_id}-{n} lost"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                (body["writer"].as_u64(), body["n"].as_u64()),
                (Some(writer_id), Some(n)),
                "record content intact"
            );
        }
    }
}

/// Locks and handles requests until the server dies; records what it saw acknowledged as handled.
/// Locks go by the queue's name, updates by its id (`queue`), as the SDKs make them.
async fn consumer(
    api: String,
    token: String,
    client_key: String,
    handled: Arc<Acked>,
    queue: String,
) {
    let http = client();
    loop {
        let url = format!("{api}/request-queues/~crash/head/lock?lockSecs=60&limit=5&clientKey={client_key}&token={token}");
        let Ok(response) = http.post(&url).send().await else {
            return;
        };
        if response.status() != 201 {
            return;
        }
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        let items = body["data"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if items.is_empty() {
            return;
        }
        for item in items {
            let id = item["id"].as_str().unwrap().to_string();
            let mut request = item.clone();
            request["handledAt"] = json!(troupe_model::format_ts(troupe_model::now_ms()));
            let url = format!(
                "{api}/request-queues/{queue}/requests/{id}?clientKey={client_key}&token={token}"
            );
            match http.put(&url).json(&request).send().await {
                Ok(response) if response.status().is_success() => {
                    let n: u64 = item["uniqueKey"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("u")
                        .parse()
                        .unwrap();
                    handled.items.lock().unwrap().push((0, n));
                }
                _ => return,
            }
        }
    }
}

#[tokio::test]
async fn queue_draining_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let http = client();
    let created = http
        .post(server.url("/request-queues?name=crash"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let queue = created.json::<Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    const TOTAL: u64 = 2000;
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(25) {
        let batch: Vec<Value> = chunk.iter().map(|n| json!({"url": format!("http://example.test/{n}"), "uniqueKey": format!("u{n}")})).collect();
        let response = http
            .post(server.url("/request-queues/~crash/requests/batch"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let handled = Arc::new(Acked::default());
    for round in 0..3u64 {
        let tasks: Vec<_> = (0..4)
            .map(|c| {
                tokio::spawn(consumer(
                    server.api(),
                    server.token.clone(),
                    format!("c{round}x{c}"),
                    handled.clone(),
                    queue.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + round * 100)).await;
        server.kill9();
        for task in tasks {
            task.await.unwrap();
        }
        server = TestServer::start_in(dir.path(), &[]);
        let info: Value = http
            .get(server.url("/request-queues/~crash"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let total = info["data"]["totalRequestCount"].as_u64().unwrap();
        let handled_count = info["data"]["handledRequestCount"].as_u64().unwrap();
        let pending = info["data"]["pendingRequestCount"].as_u64().unwrap();
        assert_eq!(total, TOTAL, "no request lost or duplicated");
        assert_eq!(handled_count + pending, total, "counts consistent");
        let acked_now = handled.items.lock().unwrap().clone();
        assert!(
            handled_count >= acked_now.len() as u64,
            "every acknowledged handle counted"
        );
        for (_, n) in acked_now.iter().take(200) {
            let id = troupe_model::queue::request_id(&format!("u{n}"));
            let request: Value = http
                .get(server.url(&format!("/request-queues/~crash/requests/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(
                request["data"]["handledAt"].is_string(),
                "acknowledged handled request u{n} is handled after restart"
            );
        }
    }
}
