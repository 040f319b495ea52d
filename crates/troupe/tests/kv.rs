//! Key-value stores over HTTP against the real binary: byte-exact records, encodings, streaming
//! with bounded memory, key listing, signatures, hostile keys and every bad input.

mod common;

use std::io::{Read, Write};

use common::{assert_error, client, eventually, TestServer};
use serde_json::Value;

async fn create_store(server: &TestServer, name: Option<&str>) -> Value {
    let path = match name {
        Some(name) => format!("/key-value-stores?name={name}"),
        None => "/key-value-stores".to_string(),
    };
    let created: Value = client()
        .post(server.url(&path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["data"].clone()
}

fn record_url(server: &TestServer, store: &str, key: &str) -> String {
    server.url(&format!("/key-value-stores/{store}/records/{key}"))
}

async fn put(
    server: &TestServer,
    store: &str,
    key: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = client().put(record_url(server, store, key)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

async fn keys(server: &TestServer, store: &str) -> Vec<String> {
    let page: Value = client()
        .get(server.url(&format!("/key-value-stores/{store}/keys")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

async fn store_stats(server: &TestServer, store: &str) -> Value {
    let info: Value = client()
        .get(server.url(&format!("/key-value-stores/{store}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    info["data"]["stats"].clone()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Every file name under the data dir (recursively).
fn all_file_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            out.push(entry.file_name().to_string_lossy().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out
}

/// Names of the record files (blobs/kv/<shard>/<id>), excluding temp files.
fn record_files(server: &TestServer) -> Vec<String> {
    let kv = server.data_dir.join("blobs").join("kv");
    let mut out = Vec::new();
    for shard in std::fs::read_dir(&kv).unwrap() {
        let shard = shard.unwrap();
        for file in std::fs::read_dir(shard.path()).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().to_string();
            out.push(format!("{}/{name}", shard.file_name().to_string_lossy()));
        }
    }
    out
}

#[tokio::test]
async fn records_round_trip_byte_exact() {
    let server = TestServer::start();
    let http = client();
    let store = create_store(&server, Some("rt")).await;
    let id = store["id"].as_str().unwrap();

    let json = br#"{"hello": "world", "n": [1, 2, 3]}"#.to_vec();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let cases: Vec<(&str, Option<&str>, Vec<u8>, &str)> = vec![
        (
            "json",
            Some("application/json; charset=utf-8"),
            json.clone(),
            "application/json; charset=utf-8",
        ),
        (
            "text",
            Some("text/plain; charset=utf-8"),
            "héllo wörld\n".as_bytes().to_vec(),
            "text/plain; charset=utf-8",
        ),
        ("bin", Some("image/png"), binary.clone(), "image/png"),
        ("untyped", None, b"raw".to_vec(), "application/octet-stream"),
        ("empty", Some("text/plain"), Vec::new(), "text/plain"),
    ];
    for (key, content_type, body, _) in &cases {
        let response = put(&server, id, key, *content_type, body.clone()).await;
        assert_eq!(response.status(), 201);
        assert!(response.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with(&format!("/records/{key}")));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({}));
    }
    for (key, _, body, expected_type) in &cases {
        let response = http.get(record_url(&server, id, key)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], *expected_type);
        assert!(response.headers().get("content-encoding").is_none());
        assert!(response.headers().get("content-disposition").is_none());
        assert_eq!(response.bytes().await.unwrap().to_vec(), *body, "{key}");
        // HEAD: 200, no body, the length.
        let response = http
            .head(record_url(&server, id, key))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-length"].to_str().unwrap(),
            body.len().to_string()
        );
        assert!(response.bytes().await.unwrap().is_empty());
    }
    // attachment=1 / true.
    for value in ["1", "true"] {
        let response = http
            .get(record_url(&server, id, &format!("json?attachment={value}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-disposition"],
            "attachment; filename=\"json\""
        );
        assert_eq!(response.bytes().await.unwrap().to_vec(), json);
    }
    // POST is PUT.
    let response = http
        .post(record_url(&server, id, "json"))
        .header("content-type", "application/json")
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        http.get(record_url(&server, id, "json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "[1]"
    );
    // Through the store's name too.
    let by_name = http
        .get(server.url("/key-value-stores/~rt/records/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.text().await.unwrap(), "[1]");
    let by_user_name = http
        .get(server.url("/key-value-stores/troupe~rt/records/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_user_name.text().await.unwrap(), "[1]");

    // Missing record / store: 404 record-not-found (HEAD without a body).
    assert_error(
        http.get(record_url(&server, id, "nope"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    let head = http
        .head(record_url(&server, id, "nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert_error(
        http.get(record_url(&server, "NoSuchStore123456", "json"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    assert_error(
        put(&server, "NoSuchStore123456", "k", None, b"x".to_vec()).await,
        404,
        "record-not-found",
    )
    .await;
    assert_error(
        http.get(server.url("/key-value-stores/NoSuchStore123456/keys"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;

    // DELETE: 204, also for a key that does not exist.
    let stats = store_stats(&server, id).await;
    assert_eq!(
        http.delete(record_url(&server, id, "text"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.delete(record_url(&server, id, "text"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.get(record_url(&server, id, "text"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let after = store_stats(&server, id).await;
    assert_eq!(
        after["deleteCount"],
        stats["deleteCount"].as_u64().unwrap() + 1
    );
    assert_eq!(
        after["storageBytes"].as_u64().unwrap(),
        stats["storageBytes"].as_u64().unwrap() - "héllo wörld\n".len() as u64
    );
    assert_eq!(
        keys(&server, id).await,
        vec!["bin", "empty", "json", "untyped"]
    );
    let expected_bytes = 3 + binary.len() + 3;
    assert_eq!(
        after["storageBytes"].as_u64().unwrap(),
        expected_bytes as u64
    );
    assert_eq!(after["writeCount"], 6);
    // Reads are counted (buffered, flushed within about a second).
    eventually("readCount >= 12", || async {
        let read_count = store_stats(&server, id).await["readCount"].as_u64();
        (read_count.unwrap() >= 12).then_some(())
    })
    .await;
}

#[tokio::test]
async fn encoded_records_are_kept_encoded() {
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    for (key, plain) in [
        ("small", b"{\"a\":1}".repeat(10)),
        ("large", b"{\"abc\":12345}".repeat(200_000)),
    ] {
        let encoded = gzip(&plain);
        let response = http
            .put(record_url(&server, &id, key))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(encoded.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{key}");
        // Accepted: served as stored, gzip bytes and header.
        for accept in ["gzip", "gzip, deflate, br", "*", "br;q=1, gzip;q=0.5"] {
            let response = http
                .get(record_url(&server, &id, key))
                .header("accept-encoding", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["content-encoding"], "gzip", "{accept}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response.bytes().await.unwrap().to_vec(),
                encoded,
                "{key} {accept}"
            );
        }
        // Not accepted: decoded on the fly.
        for accept in [
            None,
            Some("identity"),
            Some("br"),
            Some("gzip;q=0"),
            Some("*, gzip;q=0"),
        ] {
            let mut request = http.get(record_url(&server, &id, key));
            if let Some(accept) = accept {
                request = request.header("accept-encoding", accept);
            }
            let response = request.send().await.unwrap();
            assert!(
                response.headers().get("content-encoding").is_none(),
                "{accept:?}"
            );
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response.bytes().await.unwrap().to_vec(),
                plain,
                "{key} {accept:?}"
            );
        }
        // Listed with the stored (encoded) size.
        let page: Value = http
            .get(server.url(&format!("/key-value-stores/{id}/keys?prefix={key}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["data"]["items"][0]["size"], encoded.len());
    }

    // Brotli and deflate (zlib-wrapped) too.
    let plain = b"brotli body ".repeat(50);
    let mut br = Vec::new();
    brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
        .write_all(&plain)
        .unwrap();
    let response = http
        .put(record_url(&server, &id, "br"))
        .header("content-type", "text/plain")
        .header("content-encoding", "br")
        .body(br.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let raw = http
        .get(record_url(&server, &id, "br"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "br");
    assert_eq!(raw.bytes().await.unwrap().to_vec(), br);
    let decoded = http
        .get(record_url(&server, &id, "br"))
        .send()
        .await
        .unwrap();
    assert_eq!(decoded.bytes().await.unwrap().to_vec(), plain);
    let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zl.write_all(&plain).unwrap();
    let zl = zl.finish().unwrap();
    http.put(record_url(&server, &id, "zl"))
        .header("content-encoding", "deflate")
        .body(zl)
        .send()
        .await
        .unwrap();
    let decoded = http
        .get(record_url(&server, &id, "zl"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        decoded.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(decoded.bytes().await.unwrap().to_vec(), plain);
    // identity is no encoding at all.
    http.put(record_url(&server, &id, "id"))
        .header("content-encoding", "identity")
        .body("plain")
        .send()
        .await
        .unwrap();
    let response = http
        .get(record_url(&server, &id, "id"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(response.text().await.unwrap(), "plain");

    // The ZIP of all records holds decoded bodies, named by key.
    let response = http
        .get(server.url(&format!("/key-value-stores/{id}/records")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let zip_bytes = response.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.to_vec())).unwrap();
    let mut names: Vec<String> = archive.file_names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, vec!["br", "id", "large", "small", "zl"]);
    let mut content = Vec::new();
    archive
        .by_name("br")
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    assert_eq!(content, plain);
    let mut content = Vec::new();
    archive
        .by_name("large")
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    assert_eq!(content, b"{\"abc\":12345}".repeat(200_000));
    // With a prefix.
    let response = http
        .get(server.url(&format!("/key-value-stores/{id}/records?prefix=l")))
        .send()
        .await
        .unwrap();
    let archive = zip::ZipArchive::new(std::io::Cursor::new(
        response.bytes().await.unwrap().to_vec(),
    ))
    .unwrap();
    assert_eq!(archive.file_names().collect::<Vec<_>>(), vec!["large"]);
}

fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap()
}

/// Deterministic pseudo-random bytes (poorly compressible).
fn chunk_of(index: u64, len: usize) -> Vec<u8> {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn large_record_streams_with_bounded_memory() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: u64 = 100; // 100 MiB
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = vm_hwm_kb(server.pid());

    // Upload as a chunked stream (no Content-Length), so nothing could size a buffer up front.
    let body = futures::stream::iter(
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(chunk_of(i, CHUNK)))),
    );
    let response = http
        .put(record_url(&server, &id, "big"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Download, streaming, comparing as we go.
    let response = http
        .get(record_url(&server, &id, "big"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        (CHUNKS * CHUNK as u64).to_string()
    );
    let mut stream = response.bytes_stream();
    let mut received: Vec<u8> = Vec::new();
    let mut index = 0u64;
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
        while received.len() >= CHUNK {
            let rest = received.split_off(CHUNK);
            assert!(received == chunk_of(index, CHUNK), "chunk {index} differs");
            received = rest;
            index += 1;
        }
    }
    assert!(received.is_empty());
    assert_eq!(index, CHUNKS);

    let after = vm_hwm_kb(server.pid());
    // A 100 MiB record went through twice; the server's peak RSS must stay far below that.
    assert!(
        after < 64 * 1024 && after - before.min(after) < 48 * 1024,
        "VmHWM before {before} kB, after {after} kB"
    );
    eprintln!("server VmHWM: before {before} kB, after 100 MiB up+down {after} kB");

    let page: Value = http
        .get(server.url(&format!("/key-value-stores/{id}/keys")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"]["items"][0]["size"], CHUNKS * CHUNK as u64);
    assert_eq!(
        store_stats(&server, &id).await["storageBytes"],
        CHUNKS * CHUNK as u64
    );
    // Deleting the record removes its file.
    assert_eq!(
        record_files(&server)
            .iter()
            .filter(|f| !f.starts_with("tmp/"))
            .count(),
        1
    );
    http.delete(record_url(&server, &id, "big"))
        .send()
        .await
        .unwrap();
    assert!(record_files(&server).is_empty());
}

#[tokio::test]
async fn acknowledged_large_and_small_writes_survive_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let large = chunk_of(7, 3 << 20);
    assert_eq!(
        put(
            &server,
            &id,
            "large",
            Some("application/x-thing"),
            large.clone()
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        put(&server, &id, "small", Some("text/plain"), b"small".to_vec())
            .await
            .status(),
        201
    );
    server.kill9();
    let server = TestServer::start_in(dir.path(), &[]);
    let response = client()
        .get(record_url(&server, &id, "large"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-thing");
    assert_eq!(response.bytes().await.unwrap().to_vec(), large);
    let response = client()
        .get(record_url(&server, &id, "small"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "small");
}

#[tokio::test]
async fn keys_paging_over_more_than_1000_keys() {
    let server = TestServer::start();
    let http = client();
    let store = create_store(&server, None).await;
    let id = store["id"].as_str().unwrap().to_string();
    let secret = store["urlSigningSecretKey"].as_str().unwrap().to_string();
    let mut expected: Vec<String> = (0..2100).map(|i| format!("key-{i:05}")).collect();
    expected.extend(
        [
            "A", "Z", "a", "z", "(", "0", "key", "key-", "keyz", "_x", "!",
        ]
        .map(str::to_string),
    );
    use futures::StreamExt;
    futures::stream::iter(expected.clone())
        .for_each_concurrent(16, |key| {
            let http = http.clone();
            let url = record_url(&server, &id, &key);
            async move {
                let status = http
                    .put(url)
                    .body(key.clone())
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 201);
            }
        })
        .await;
    expected.sort(); // byte order (all ASCII)

    // Default limit 1000, paging with nextExclusiveStartKey.
    let mut seen: Vec<String> = Vec::new();
    let mut start: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &start {
            None => format!("/key-value-stores/{id}/keys"),
            Some(start) => format!("/key-value-stores/{id}/keys?exclusiveStartKey={start}"),
        };
        let page: Value = http
            .get(server.url(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = &page["data"];
        pages += 1;
        assert_eq!(data["limit"], 1000);
        assert_eq!(
            data["exclusiveStartKey"],
            start.clone().map_or(Value::Null, Value::from)
        );
        let items = data["items"].as_array().unwrap();
        assert_eq!(data["count"], items.len());
        for item in items {
            let key = item["key"].as_str().unwrap();
            assert_eq!(item["size"], key.len());
            let url = item["recordPublicUrl"].as_str().unwrap();
            assert_eq!(
                url,
                format!(
                    "{}/key-value-stores/{id}/records/{key}?signature={}",
                    server.api(),
                    troupe_model::signature::record_signature(&secret, key)
                )
            );
            seen.push(key.to_string());
        }
        // nextExclusiveStartKey is always present: the last key, or null on the last page.
        let object = data.as_object().unwrap();
        assert!(object.contains_key("nextExclusiveStartKey"));
        if data["isTruncated"] == true {
            assert_eq!(
                data["nextExclusiveStartKey"],
                *items.last().unwrap().get("key").unwrap()
            );
            start = Some(data["nextExclusiveStartKey"].as_str().unwrap().to_string());
        } else {
            assert_eq!(data["nextExclusiveStartKey"], Value::Null);
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // limit + prefix + exclusiveStartKey.
    let page: Value = http
        .get(server.url(&format!(
            "/key-value-stores/{id}/keys?prefix=key-01&limit=50&exclusiveStartKey=key-01049"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = page["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        (1050..1100)
            .map(|i| format!("key-{i:05}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(page["data"]["isTruncated"], true);
    assert_eq!(page["data"]["nextExclusiveStartKey"], "key-01099");
    let page: Value = http
        .get(server.url(&format!(
            "/key-value-stores/{id}/keys?prefix=key-0209&limit=1000"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"]["count"], 10);
    assert_eq!(page["data"]["isTruncated"], false);
    assert_eq!(page["data"]["nextExclusiveStartKey"], Value::Null);
    // A limit above 1000 is capped.
    let page: Value = http
        .get(server.url(&format!("/key-value-stores/{id}/keys?limit=5000")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"]["limit"], 1000);
    assert_eq!(page["data"]["count"], 1000);
    // Bad paging input.
    for bad in ["limit=0", "limit=-1", "limit=abc", "collection=images"] {
        assert_error(
            http.get(server.url(&format!("/key-value-stores/{id}/keys?{bad}")))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-parameter",
        )
        .await;
    }
    assert_error(
        http.get(server.url(&format!("/key-value-stores/{id}/records?collection=x")))
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test]
async fn signed_urls_open_without_a_token() {
    let server = TestServer::start();
    let http = client();
    let store = create_store(&server, Some("signed")).await;
    let id = store["id"].as_str().unwrap().to_string();
    let secret = store["urlSigningSecretKey"].as_str().unwrap().to_string();
    put(
        &server,
        &id,
        "INPUT",
        Some("application/json"),
        b"{\"x\":1}".to_vec(),
    )
    .await;
    put(&server, &id, "OTHER", Some("text/plain"), b"other".to_vec()).await;
    let api = server.api();
    let sig = troupe_model::signature::record_signature(&secret, "INPUT");

    // No token: refused.
    assert_error(
        http.get(format!("{api}/key-value-stores/{id}/records/INPUT"))
            .send()
            .await
            .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    // The record's signature opens that record (GET and HEAD), nothing else.
    let response = http
        .get(format!(
            "{api}/key-value-stores/{id}/records/INPUT?signature={sig}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{\"x\":1}");
    let head = http
        .head(format!(
            "{api}/key-value-stores/{id}/records/INPUT?signature={sig}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_error(
        http.get(format!(
            "{api}/key-value-stores/{id}/records/OTHER?signature={sig}"
        ))
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_error(
        http.get(format!(
            "{api}/key-value-stores/{id}/records/INPUT?signature=abc{sig}"
        ))
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_error(
        http.get(format!("{api}/key-value-stores/{id}/keys?signature={sig}"))
            .send()
            .await
            .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_error(
        http.put(format!(
            "{api}/key-value-stores/{id}/records/INPUT?signature={sig}"
        ))
        .body("x")
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_error(
        http.delete(format!(
            "{api}/key-value-stores/{id}/records/INPUT?signature={sig}"
        ))
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_eq!(
        http.get(server.url(&format!("/key-value-stores/{id}/records/INPUT")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "{\"x\":1}"
    );

    // The storage signature (padded or not, never expiring or not yet expired) opens the keys
    // listing and the ZIP.
    let token = troupe_model::signature::storage_signature(&secret, &id, 0);
    let future = troupe_model::now_ms() + 3_600_000;
    let expiring = troupe_model::signature::storage_signature(&secret, &id, future);
    for sig in [token.clone(), format!("{token}=="), expiring] {
        let response = http
            .get(format!("{api}/key-value-stores/{id}/keys?signature={sig}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{sig}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["data"]["count"], 2);
        // The listed record URLs open without a token.
        let url = page["data"]["items"][0]["recordPublicUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let response = http.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "{\"x\":1}");
        let response = http
            .get(format!(
                "{api}/key-value-stores/{id}/records?signature={sig}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/zip");
    }
    let expired =
        troupe_model::signature::storage_signature(&secret, &id, troupe_model::now_ms() - 1000);
    assert_error(
        http.get(format!(
            "{api}/key-value-stores/{id}/keys?signature={expired}"
        ))
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    // Another store's signature does not work here.
    let other = create_store(&server, None).await;
    let other_token = troupe_model::signature::storage_signature(
        other["urlSigningSecretKey"].as_str().unwrap(),
        other["id"].as_str().unwrap(),
        0,
    );
    assert_error(
        http.get(format!(
            "{api}/key-value-stores/{id}/keys?signature={other_token}"
        ))
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    // The store object advertises the public URLs.
    let info: Value = http
        .get(server.url(&format!("/key-value-stores/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["data"]["keysPublicUrl"],
        format!("{api}/key-value-stores/{id}/keys")
    );
}

/// One HTTP/1.1 request over a plain socket, path sent exactly as given. Returns (status, body).
async fn raw_request(server: &TestServer, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.origin.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = out;
    }
    (status, body)
}

#[tokio::test]
async fn hostile_keys_are_refused_and_never_touch_the_filesystem() {
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Valid but odd keys work and are stored by id (large ones as files named by random ids).
    let big = vec![b'x'; 300_000];
    for key in ["(..)", "!'-_.", "...."] {
        assert_eq!(
            put(&server, &id, key, None, big.clone()).await.status(),
            201,
            "{key}"
        );
        let got = http
            .get(record_url(&server, &id, key))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), big.len());
    }
    // `.` and `..` are valid keys, but URL libraries resolve them as path segments; sent raw
    // they are plain keys.
    for key in ["..", "."] {
        let (status, _) = raw_request(
            &server,
            "PUT",
            &format!(
                "/v2/key-value-stores/{id}/records/{key}?token={}",
                server.token
            ),
            &big,
        )
        .await;
        assert_eq!(status, 201, "{key}");
        let (status, body) = raw_request(
            &server,
            "GET",
            &format!(
                "/v2/key-value-stores/{id}/records/{key}?token={}",
                server.token
            ),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(body.len(), big.len());
    }
    let long = "k".repeat(257);
    let max = "k".repeat(256);
    assert_eq!(
        put(&server, &id, &max, None, b"ok".to_vec()).await.status(),
        201
    );
    let mut before = keys(&server, &id).await;
    before.sort();
    let stats = store_stats(&server, &id).await;
    for key in [
        "a%2Fb",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "%2F",
        "a%5Cb",
        "%C3%A9",
        "a%20b",
        "a%00b",
        "~x",
        "a%2A",
        "a%3Fb",
        "%25",
        "a%3Cb%3E",
        "a%22b",
        long.as_str(),
        "a+b",
        "a,b",
        "a@b",
        "a%3Bb",
        "a:b",
    ] {
        let response = http
            .put(record_url(&server, &id, key))
            .body("evil")
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-record-key").await;
        assert_error(
            http.get(record_url(&server, &id, key))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-record-key",
        )
        .await;
        assert_error(
            http.delete(record_url(&server, &id, key))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-record-key",
        )
        .await;
        assert_eq!(
            http.head(record_url(&server, &id, key))
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
    }
    let mut after = keys(&server, &id).await;
    after.sort();
    assert_eq!(before, after);
    assert_eq!(
        store_stats(&server, &id).await["writeCount"],
        stats["writeCount"]
    );
    // No file anywhere in the data dir is named after a key; record files are random ids.
    for name in all_file_names(&server.data_dir) {
        assert!(
            !name.contains("evil")
                && name != ".."
                && name != "(..)"
                && name != "!'-_."
                && name != max,
            "{name}"
        );
    }
    for file in record_files(&server) {
        let (shard, name) = file.split_once('/').unwrap();
        assert!(
            name.len() == 17 && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{file}"
        );
        assert_eq!(&name[..2], shard);
    }
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &["--max-record-bytes", "1000000"]);
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    put(
        &server,
        &id,
        "keep",
        Some("text/plain"),
        b"original".to_vec(),
    )
    .await;
    let stats = store_stats(&server, &id).await;
    let unchanged = || async {
        let response = http
            .get(record_url(&server, &id, "keep"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(response.text().await.unwrap(), "original");
        assert_eq!(keys(&server, &id).await, vec!["keep"]);
        let now = store_stats(&server, &id).await;
        assert_eq!(now["writeCount"], stats["writeCount"]);
        assert_eq!(now["storageBytes"], stats["storageBytes"]);
        assert!(
            record_files(&server).is_empty(),
            "{:?}",
            record_files(&server)
        );
    };

    // Unsupported Content-Encoding → 415.
    for encoding in ["compress", "zstd", "gzip, snappy"] {
        let response = http
            .put(record_url(&server, &id, "keep"))
            .header("content-encoding", encoding)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_error(response, 415, "unsupported-content-encoding").await;
    }
    unchanged().await;
    // A body that is not what its Content-Encoding says → 400.
    for (encoding, body) in [
        ("gzip", b"not gzip at all".to_vec()),
        ("br", b"\xff\xff\xff\xff".to_vec()),
        ("gzip", vec![b'x'; 500_000]),
    ] {
        let response = http
            .put(record_url(&server, &id, "keep"))
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-input").await;
    }
    unchanged().await;
    // Non-ASCII Content-Type → 400.
    let response = http
        .put(record_url(&server, &id, "keep"))
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(b"text/\xe9").unwrap(),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-content-type-header").await;
    unchanged().await;
    // Over the record limit: by Content-Length, and streamed without one (the overflow is in the
    // last chunk, so the client has sent everything when the answer comes; with more to send,
    // the server answers 413 and closes the connection).
    let response = http
        .put(record_url(&server, &id, "keep"))
        .body(vec![0u8; 1_000_001])
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "record-too-large").await;
    let chunks = futures::stream::iter(
        (0..11).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 100_000]))),
    );
    let response = http
        .put(record_url(&server, &id, "keep"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "record-too-large").await;
    unchanged().await;
    // Bad query values.
    assert_error(
        http.get(record_url(&server, &id, "keep?attachment=maybe"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    // Wrong methods.
    assert_error(
        http.patch(record_url(&server, &id, "keep"))
            .body("x")
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    assert_error(
        http.post(server.url(&format!("/key-value-stores/{id}/keys")))
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    // Another user's token / no token.
    assert_error(
        http.put(format!(
            "{}/key-value-stores/{id}/records/keep",
            server.api()
        ))
        .body("x")
        .send()
        .await
        .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_error(
        http.put(format!(
            "{}/key-value-stores/{id}/records/keep?token=wrong",
            server.api()
        ))
        .body("x")
        .send()
        .await
        .unwrap(),
        401,
        "invalid-token",
    )
    .await;
    unchanged().await;
    // Exactly at the limit works (streamed to a file).
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![2u8; 100_000]))),
    );
    let response = http
        .put(record_url(&server, &id, "max"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        http.get(record_url(&server, &id, "max"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        1_000_000
    );
    http.delete(record_url(&server, &id, "max"))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_a_store_deletes_its_records_and_files() {
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, Some("doomed")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    put(&server, &id, "big", None, vec![3u8; 400_000]).await;
    put(&server, &id, "small", None, b"s".to_vec()).await;
    assert_eq!(record_files(&server).len(), 1);
    assert_eq!(
        http.delete(server.url(&format!("/key-value-stores/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_error(
        http.get(record_url(&server, &id, "small"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    eventually("the deleted store's record files removed", || async {
        record_files(&server).is_empty().then_some(())
    })
    .await;
    // A new store with the same name starts empty.
    let fresh = create_store(&server, Some("doomed")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(keys(&server, &fresh).await.is_empty());
}

/// A run's input and output records live in its default store and are reachable through the
/// run prefixes (`/actor-runs/{id}/key-value-store`, `/acts/{id}/runs/last/key-value-store`).
#[tokio::test]
async fn run_records_through_run_prefixes() {
    let server = TestServer::start();
    let http = client();
    let script = r#"python3 - <<'EOF'
import os, urllib.request
base = os.environ["APIFY_API_BASE_URL"] + "/v2/key-value-stores/" + os.environ["ACTOR_DEFAULT_KEY_VALUE_STORE_ID"] + "/records/"
auth = {"authorization": "Bearer " + os.environ["APIFY_TOKEN"]}
data = urllib.request.urlopen(urllib.request.Request(base + "INPUT", headers=auth)).read()
req = urllib.request.Request(base + "OUTPUT", data=data.upper(), method="PUT", headers=dict(auth, **{"content-type": "application/json"}))
urllib.request.urlopen(req).read()
EOF"#;
    let id = common::actors::built_actor(&server, "upper", script).await;
    let response = http
        .post(server.url(&format!("/acts/{id}/run-sync")))
        .header("content-type", "application/json")
        .body("{\"hello\":\"world\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let run_id = response.headers()["x-apify-run-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{\"HELLO\":\"WORLD\"}");

    let input = http
        .get(server.url(&format!(
            "/actor-runs/{run_id}/key-value-store/records/INPUT"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(input.status(), 200);
    assert_eq!(input.headers()["content-type"], "application/json");
    assert_eq!(input.text().await.unwrap(), "{\"hello\":\"world\"}");
    let page: Value = http
        .get(server.url(&format!("/actor-runs/{run_id}/key-value-store/keys")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = page["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["INPUT", "OUTPUT"]);
    for prefix in ["acts", "actors"] {
        let output = http
            .get(server.url(&format!("/{prefix}/{id}/runs/last/key-value-store/records/OUTPUT?status=SUCCEEDED&attachment=true")))
            .send()
            .await
            .unwrap();
        assert_eq!(output.status(), 200);
        assert_eq!(output.text().await.unwrap(), "{\"HELLO\":\"WORLD\"}");
    }
    // Writes through the run prefix land in the same store.
    let response = http
        .put(server.url(&format!(
            "/actor-runs/{run_id}/key-value-store/records/EXTRA"
        )))
        .header("content-type", "text/plain")
        .body("extra")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let run: Value = http
        .get(server.url(&format!("/actor-runs/{run_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let store_id = run["data"]["defaultKeyValueStoreId"].as_str().unwrap();
    assert_eq!(
        keys(&server, store_id).await,
        vec!["EXTRA", "INPUT", "OUTPUT"]
    );
    assert_error(
        http.get(server.url(&format!(
            "/acts/{id}/runs/last/key-value-store/records/OUTPUT?status=FAILED"
        )))
        .send()
        .await
        .unwrap(),
        404,
        "record-not-found",
    )
    .await;
}

/// Small records are served from a cache: every acknowledged change must show in the very next
/// read — overwrites (body and headers), deletes, the store's access settings, the store's
/// deletion — also while other clients keep reading the same record.
#[tokio::test]
async fn cached_records_follow_every_change() {
    let server = TestServer::start();
    let http = client();
    let store = create_store(&server, Some("cached")).await;
    let id = store["id"].as_str().unwrap().to_string();
    let url = record_url(&server, &id, "hot");
    let anonymous = format!("{}/key-value-stores/{id}/records/hot", server.api());
    let reader = http.clone();
    let get = move |url: String| {
        let http = reader.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            (status, content_type, r.bytes().await.unwrap().to_vec())
        }
    };
    assert_eq!(
        put(&server, &id, "hot", Some("text/plain"), b"v1".to_vec())
            .await
            .status(),
        201
    );
    for _ in 0..2 {
        let got = get(url.clone()).await;
        assert_eq!(
            (got.0, got.1.as_deref(), &got.2[..]),
            (200, Some("text/plain"), &b"v1"[..])
        );
    }
    // HEAD answers from the same entry, without a body.
    let head = http.head(url.clone()).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-length"], "2");

    // Overwrites, with other readers hammering the record meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (get, url, stop) = (get.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let got = get(url.clone()).await;
                    assert_eq!(got.0, 200);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..40 {
        let body = format!("value {i}").into_bytes();
        let content_type = if i % 2 == 0 {
            "text/plain"
        } else {
            "application/json"
        };
        assert_eq!(
            put(&server, &id, "hot", Some(content_type), body.clone())
                .await
                .status(),
            201
        );
        let got = get(url.clone()).await;
        assert_eq!(
            (got.0, got.1.as_deref(), got.2),
            (200, Some(content_type), body),
            "write {i}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }

    // Delete, then write again.
    let r = http.delete(url.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_error(
        http.get(url.clone()).send().await.unwrap(),
        404,
        "record-not-found",
    )
    .await;
    assert_eq!(
        put(&server, &id, "hot", Some("text/plain"), b"again".to_vec())
            .await
            .status(),
        201
    );
    assert_eq!(get(url.clone()).await.2, b"again");

    // The store's access settings travel with cached records.
    assert_error(
        http.get(anonymous.clone()).send().await.unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    let set_access = |access: &'static str| {
        let http = http.clone();
        let url = server.url(&format!("/key-value-stores/{id}"));
        async move {
            let r = http
                .put(url)
                .json(&serde_json::json!({ "generalAccess": access }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    set_access("ANYONE_WITH_ID_CAN_READ").await;
    assert_eq!(get(anonymous.clone()).await.2, b"again");
    assert_eq!(get(anonymous.clone()).await.2, b"again");
    set_access("RESTRICTED").await;
    assert_error(
        http.get(anonymous.clone()).send().await.unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_eq!(get(url.clone()).await.2, b"again");

    // A deleted store.
    let r = http
        .delete(server.url(&format!("/key-value-stores/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_error(
        http.get(url.clone()).send().await.unwrap(),
        404,
        "record-not-found",
    )
    .await;
}

/// Record writes resolve their store from memory (ids map to owner and row): other users,
/// deletions and a new store that may take over the deleted one's internal number must all be
/// seen by the very next write.
#[tokio::test]
async fn record_writes_follow_owners_and_deletions() {
    use common::Api;
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, Some("cached-put")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        let response = put(&server, &id, &format!("k{i}"), None, vec![b'a'; 100]).await;
        assert_eq!(response.status(), 201);
    }
    let bob = server.add_user("bob");
    let bob = server.as_user(&bob);
    for _ in 0..3 {
        let response = http
            .put(bob.url(&format!("/key-value-stores/{id}/records/k0")))
            .body("bob")
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "insufficient-permissions").await;
        let response = http
            .delete(bob.url(&format!("/key-value-stores/{id}/records/k1")))
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "insufficient-permissions").await;
    }
    assert_eq!(keys(&server, &id).await, ["k0", "k1", "k2"]);
    let stored = http
        .get(record_url(&server, &id, "k0"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&stored[..], &[b'a'; 100][..]);
    // Deleted: the next writes are 404s, and a store created since (which may reuse the deleted
    // one's internal number) gets nothing.
    let response = http
        .delete(server.url(&format!("/key-value-stores/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let fresh = create_store(&server, Some("cached-put-fresh")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    put(&server, &fresh, "k1", None, b"fresh".to_vec()).await;
    for _ in 0..2 {
        assert_error(
            put(&server, &id, "k0", None, b"late".to_vec()).await,
            404,
            "record-not-found",
        )
        .await;
        assert_error(
            http.delete(record_url(&server, &id, "k1"))
                .send()
                .await
                .unwrap(),
            404,
            "record-not-found",
        )
        .await;
    }
    assert_eq!(keys(&server, &fresh).await, ["k1"]);
    let stored = http
        .get(record_url(&server, &fresh, "k1"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&stored[..], b"fresh");
}

/// Records stored as files, of sizes around the 1 MiB chunk they are sent in, sent with a
/// length or streamed in odd chunks: GET gives the bytes with their length and type, HEAD the
/// headers alone, `attachment=1` the same bytes as an attachment. New record files go to the
/// shard folders `<c>0`.
#[tokio::test]
async fn file_records_around_the_chunk_size_round_trip() {
    const MIB: usize = 1 << 20;
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, len) in [128 * 1024 + 1, MIB - 1, MIB, MIB + 1, 2 * MIB + 123]
        .into_iter()
        .enumerate()
    {
        let data = chunk_of(100 + i as u64, len);
        for streamed in [false, true] {
            let key = format!("r{len}-{streamed}");
            let request = http
                .put(record_url(&server, &id, &key))
                .header("content-type", "application/x-test");
            let request = if streamed {
                let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = data
                    .chunks(7 * 1024 + 333)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect();
                request.body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            } else {
                request.body(data.clone())
            };
            assert_eq!(request.send().await.unwrap().status(), 201, "{key}");

            let response = http
                .get(record_url(&server, &id, &key))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{key}");
            assert_eq!(response.headers()["content-type"], "application/x-test");
            assert_eq!(
                response.headers()["content-length"].to_str().unwrap(),
                len.to_string()
            );
            assert!(response.headers().get("content-encoding").is_none());
            assert!(response.bytes().await.unwrap()[..] == data[..], "{key}");

            let response = http
                .head(record_url(&server, &id, &key))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{key}");
            assert_eq!(
                response.headers()["content-length"].to_str().unwrap(),
                len.to_string()
            );
            assert!(response.bytes().await.unwrap().is_empty());

            let url = record_url(&server, &id, &format!("{key}?attachment=1"));
            let response = http.get(url).send().await.unwrap();
            assert_eq!(
                response.headers()["content-disposition"],
                format!("attachment; filename=\"{key}\"").as_str()
            );
            assert!(response.bytes().await.unwrap()[..] == data[..], "{key}");
        }
    }
    let files = record_files(&server);
    let stored: Vec<&String> = files.iter().filter(|f| !f.starts_with("tmp/")).collect();
    assert_eq!(stored.len(), 10, "{files:?}");
    assert!(
        stored.iter().all(|f| f.as_bytes()[1] == b'0'),
        "new record files go to the shards <c>0: {files:?}"
    );
}

/// A gzip record too large to keep inline: served as stored (bytes, `Content-Encoding`,
/// length) to a client that accepts gzip, decoded for one that does not.
#[tokio::test]
async fn large_compressed_records_with_and_without_accept_encoding() {
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = chunk_of(5, 3 << 19); // 1.5 MiB, hardly compressible
    let encoded = gzip(&plain);
    assert!(encoded.len() > 1 << 20);
    let response = http
        .put(record_url(&server, &id, "gz"))
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(encoded.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let url = record_url(&server, &id, "gz");

    let response = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["vary"], "Accept-Encoding");
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        encoded.len().to_string()
    );
    assert!(response.bytes().await.unwrap()[..] == encoded[..]);

    let response = http
        .head(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        encoded.len().to_string()
    );

    for accept in [None, Some("identity"), Some("br")] {
        let mut request = http.get(&url);
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{accept:?}"
        );
        assert_eq!(response.headers()["vary"], "Accept-Encoding");
        assert!(
            response.bytes().await.unwrap()[..] == plain[..],
            "decoded for {accept:?}"
        );
    }
}

/// A GET already sending a large record keeps sending that record's bytes while the record is
/// overwritten and then deleted (record files are replaced, never changed in place); the
/// replaced files are removed from disk.
#[tokio::test]
async fn a_record_replaced_or_deleted_while_its_get_streams_keeps_its_bytes() {
    let server = TestServer::start();
    let http = client();
    let id = create_store(&server, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let old = chunk_of(11, 32 << 20);
    assert_eq!(
        put(&server, &id, "big", None, old.clone()).await.status(),
        201
    );
    let mut response = http
        .get(record_url(&server, &id, "big"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut got = response
        .chunk()
        .await
        .unwrap()
        .expect("a first chunk")
        .to_vec();
    assert!(got.len() < old.len());

    let new = chunk_of(12, (2 << 20) + 5);
    assert_eq!(
        put(&server, &id, "big", None, new.clone()).await.status(),
        201
    );
    let now = http
        .get(record_url(&server, &id, "big"))
        .send()
        .await
        .unwrap();
    assert!(now.bytes().await.unwrap()[..] == new[..]);
    let deleted = http
        .delete(record_url(&server, &id, "big"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http
        .get(record_url(&server, &id, "big"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    while let Some(chunk) = response.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(got.len() == old.len() && got == old, "{} bytes", got.len());
    assert!(
        record_files(&server).is_empty(),
        "{:?}",
        record_files(&server)
    );
}
