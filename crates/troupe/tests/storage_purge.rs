//! Deleting a storage: gone at once through the API, its content purged in the background in
//! bounded writes, and a purge cut short by `kill -9` resumes after the restart; nothing of
//! the deleted storages comes back.

mod common;

use common::{data_of, eventually, get_data, post_data, send, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// (number, kind) of every purge not finished, and rows of content left for those numbers.
fn purges(dir: &std::path::Path) -> (Vec<(i64, i64)>, i64) {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("troupe.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT num, kind FROM storage_purges ORDER BY num")
        .unwrap();
    let left: Vec<(i64, i64)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = 0;
    let storages: i64 = conn
        .query_row("SELECT max(num) FROM storages", [], |row| row.get(0))
        .unwrap();
    // Every number up to the largest in use or purged: whatever content is keyed by one that
    // is not a live storage belongs to a deleted one.
    let top = storages.max(left.last().map_or(0, |p| p.0));
    for num in 1..=top {
        let live: bool = conn
            .query_row(
                "SELECT count(*) FROM storages WHERE num = ?1",
                [num],
                |row| row.get::<_, i64>(0),
            )
            .unwrap()
            > 0;
        if live {
            continue;
        }
        let count: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM dataset_items WHERE k >= ?1 AND k < ?2)
                      + (SELECT count(*) FROM kv_records WHERE store_num = ?3)
                      + (SELECT count(*) FROM rq_requests WHERE queue = ?3)
                      + (SELECT count(*) FROM rq_pending WHERE queue = ?3)
                      + (SELECT count(*) FROM rq_ids WHERE queue = ?3)",
                rusqlite::params![num << 36, (num + 1) << 36, num],
                |row| row.get(0),
            )
            .unwrap();
        rows += count;
    }
    (left, rows)
}

fn blob_files(dir: &std::path::Path) -> usize {
    let kv = dir.join("blobs").join("kv");
    let Ok(shards) = std::fs::read_dir(&kv) else {
        return 0;
    };
    shards
        .flatten()
        .filter(|s| s.file_name() != "tmp" && s.path().is_dir())
        .map(|s| std::fs::read_dir(s.path()).unwrap().count())
        .sum()
}

async fn fill(server: &TestServer) -> [String; 3] {
    let dataset = post_data(server, "/datasets?name=pd", json!({}), 201).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items: Vec<Value> = (0..500).map(|i| json!({"i": i})).collect();
    let pushed = send(
        server,
        Method::POST,
        &format!("/datasets/{dataset}/items"),
        Some(json!(items)),
    )
    .await;
    assert_eq!(pushed.status(), 201);
    let store = post_data(server, "/key-value-stores?name=pk", json!({}), 201).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..30 {
        let body = if i == 0 {
            "x".repeat(200 * 1024)
        } else {
            format!("record {i}")
        };
        let put = common::client()
            .put(server.url(&format!("/key-value-stores/{store}/records/r{i}")))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
    }
    let queue = post_data(server, "/request-queues?name=pq", json!({}), 201).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for batch in 0..12 {
        let requests: Vec<Value> = (0..25)
            .map(|i| {
                let key = format!("https://example.com/{batch}/{i}");
                json!({"url": key, "uniqueKey": key})
            })
            .collect();
        let added = post_data(
            server,
            &format!("/request-queues/{queue}/requests/batch"),
            json!(requests),
            201,
        )
        .await;
        assert_eq!(added["unprocessedRequests"], json!([]));
    }
    let locked = post_data(
        server,
        &format!("/request-queues/{queue}/head/lock?lockSecs=600&limit=5&clientKey=c"),
        json!({}),
        201,
    )
    .await;
    assert_eq!(locked["items"].as_array().unwrap().len(), 5);
    [dataset, store, queue]
}

/// The storages named as the deleted ones (created with `status`: 201 new, 200 existing) are empty.
async fn assert_new_ones_empty(server: &TestServer, status: u16) {
    let dataset = post_data(server, "/datasets?name=pd", json!({}), status).await;
    assert_eq!(dataset["itemCount"], 0);
    let items = send(
        server,
        Method::GET,
        &format!("/datasets/{}/items", dataset["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(items.json::<Value>().await.unwrap(), json!([]));
    let store = post_data(server, "/key-value-stores?name=pk", json!({}), status).await;
    let keys = get_data(
        server,
        &format!("/key-value-stores/{}/keys", store["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(keys["items"], json!([]));
    let queue = post_data(server, "/request-queues?name=pq", json!({}), status).await;
    assert_eq!(queue["totalRequestCount"], 0);
    let queue_id = queue["id"].as_str().unwrap();
    let head = get_data(server, &format!("/request-queues/{queue_id}/head")).await;
    assert_eq!(head["items"], json!([]));
    let listed = get_data(server, &format!("/request-queues/{queue_id}/requests")).await;
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn deleted_storages_are_purged_and_a_purge_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // One chunk of 10 rows, then a pause far longer than the test: the kill lands mid-purge.
    let held = ["--purge-chunk-rows", "10", "--purge-pause-ms", "3600000"];
    let mut server = TestServer::start_in(dir.path(), &held);
    let ids = fill(&server).await;
    assert_eq!(blob_files(dir.path()), 1);
    for (collection, id) in ["datasets", "key-value-stores", "request-queues"]
        .iter()
        .zip(&ids)
    {
        let path = format!("/{collection}/{id}");
        let deleted = send(&server, Method::DELETE, &path, None).await;
        assert_eq!(deleted.status(), 204);
        let gone = send(&server, Method::GET, &path, None).await;
        assert_eq!(gone.status(), 404);
        let again = send(&server, Method::DELETE, &path, None).await;
        assert_eq!(again.status(), 404);
    }
    // Names are free at once; the new storages see nothing of the old content.
    assert_new_ones_empty(&server, 201).await;
    server.kill9();
    let (left, rows) = purges(dir.path());
    assert_eq!(
        left.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{left:?}"
    );
    assert!(rows > 500, "{rows}");

    let server = TestServer::start_in(dir.path(), &[]);
    eventually("the purges to finish after the restart", || async {
        let (left, rows) = purges(dir.path());
        (left.is_empty() && rows == 0).then_some(())
    })
    .await;
    eventually("the record file to go", || async {
        (blob_files(dir.path()) == 0).then_some(())
    })
    .await;
    for (collection, id) in ["datasets", "key-value-stores", "request-queues"]
        .iter()
        .zip(&ids)
    {
        let gone = send(&server, Method::GET, &format!("/{collection}/{id}"), None).await;
        assert_eq!(gone.status(), 404);
    }
    // The storages made before the kill are still there, still empty.
    for (collection, name) in [
        ("datasets", "pd"),
        ("key-value-stores", "pk"),
        ("request-queues", "pq"),
    ] {
        let info = data_of(
            send(
                &server,
                Method::GET,
                &format!("/{collection}/~{name}"),
                None,
            )
            .await,
            200,
        )
        .await;
        assert!(!ids.contains(&info["id"].as_str().unwrap().to_string()));
    }
    assert_new_ones_empty(&server, 200).await;
}
