//! Durability: the server is killed with SIGKILL again and again while clients write; after
//! each restart everything that was acknowledged is there, in order, exactly once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{client, TestServer};
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
