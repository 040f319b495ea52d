//! Datasets over HTTP against the real binary: one test per kind of bad input (status, error
//! type, and that nothing was stored or changed), compressed pushes, name references, HEAD,
//! get-or-create, and pagination headers.

mod common;

use std::io::Write;

use common::{assert_error, client, TestServer};
use serde_json::{json, Value};

/// Creates (or gets) the named dataset; returns its id.
async fn create(server: &TestServer, name: &str) -> String {
    let response = client()
        .post(server.url(&format!("/datasets?name={name}")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let body: Value = response.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_string()
}

/// The dataset object.
async fn info(server: &TestServer, id: &str) -> Value {
    let response = client()
        .get(server.url(&format!("/datasets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"].clone()
}

async fn item_count(server: &TestServer, id: &str) -> u64 {
    info(server, id).await["itemCount"].as_u64().unwrap()
}

async fn items(server: &TestServer, id: &str) -> Value {
    client()
        .get(server.url(&format!("/datasets/{id}/items")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn push(server: &TestServer, id: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    client()
        .post(server.url(&format!("/datasets/{id}/items")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn malformed_json_push_stores_nothing() {
    let server = TestServer::start();
    let id = create(&server, "malformed").await;
    for body in [
        &b"[{\"a\":1},"[..],
        b"{\"a\":",
        b"not json",
        b"",
        b"[{\"a\":1}] trailing",
        b"\xff\xfe",
    ] {
        assert_error(
            push(&server, &id, body.to_vec()).await,
            400,
            "invalid-input",
        )
        .await;
    }
    assert_eq!(item_count(&server, &id).await, 0);
    assert_eq!(items(&server, &id).await, json!([]));
}

#[tokio::test]
async fn non_object_items_are_rejected_with_positions() {
    let server = TestServer::start();
    let id = create(&server, "non-objects").await;
    let body = assert_error(
        push(
            &server,
            &id,
            r#"[{"ok":1}, 2, "x", {"ok":2}, null, [1], true]"#,
        )
        .await,
        400,
        "schema-validation-error",
    )
    .await;
    let positions: Vec<u64> = body["error"]["data"]["invalidItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["itemPosition"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2, 4, 5, 6]);
    let first = &body["error"]["data"]["invalidItems"][0];
    assert!(
        first["validationErrors"][0]["message"].is_string(),
        "{first}"
    );
    // A bare scalar body is one invalid item at position 0.
    let body = assert_error(
        push(&server, &id, "42").await,
        400,
        "schema-validation-error",
    )
    .await;
    assert_eq!(body["error"]["data"]["invalidItems"][0]["itemPosition"], 0);
    assert_eq!(item_count(&server, &id).await, 0);
    assert_eq!(items(&server, &id).await, json!([]));
}

#[tokio::test]
async fn wrong_types_in_update_change_nothing() {
    let server = TestServer::start();
    let id = create(&server, "typed").await;
    let before = info(&server, &id).await;
    let http = client();
    for body in [
        json!({"name": 5}),
        json!({"name": ["x"]}),
        json!({"generalAccess": "EVERYONE"}),
        json!({"generalAccess": 1}),
        json!({"name": "renamed", "generalAccess": true}),
        json!(["name", "x"]),
        json!("renamed"),
    ] {
        let response = http
            .put(server.url(&format!("/datasets/{id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-input").await;
    }
    let response = http
        .put(server.url(&format!("/datasets/{id}")))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-input").await;
    let after = info(&server, &id).await;
    assert_eq!(after["name"], "typed");
    assert_eq!(after["generalAccess"], before["generalAccess"]);
    assert_eq!(after["modifiedAt"], before["modifiedAt"]);
}

#[tokio::test]
async fn bad_limit_and_offset_are_rejected() {
    let server = TestServer::start();
    let id = create(&server, "paging").await;
    push(&server, &id, r#"[{"a":1},{"a":2}]"#).await;
    let http = client();
    for query in [
        "limit=-1",
        "offset=-5",
        "limit=abc",
        "offset=1x",
        "limit=1.5",
        "offset=NaN",
    ] {
        for path in [
            format!("/datasets/{id}/items?{query}"),
            format!("/datasets?{query}"),
        ] {
            let response = http.get(server.url(&path)).send().await.unwrap();
            let body = assert_error(response, 400, "invalid-parameter").await;
            let name = query.split('=').next().unwrap();
            assert!(
                body["error"]["message"].as_str().unwrap().contains(name),
                "{body}"
            );
        }
    }
    for query in ["desc=maybe", "clean=2", "bom=yes"] {
        let response = http
            .get(server.url(&format!("/datasets/{id}/items?{query}")))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-parameter").await;
    }
    assert_eq!(item_count(&server, &id).await, 2);
}

#[tokio::test]
async fn unknown_format_and_bad_export_options() {
    let server = TestServer::start();
    let id = create(&server, "formats").await;
    push(&server, &id, r#"{"a":1}"#).await;
    let http = client();
    for query in [
        "format=pdf",
        "format=",
        "format=csv&delimiter=ab",
        "format=xml&xmlRoot=1bad",
        "format=xml&xmlRow=a%20b",
        "fields=a,b&outputFields=x",
    ] {
        let response = http
            .get(server.url(&format!("/datasets/{id}/items?{query}")))
            .send()
            .await
            .unwrap();
        if query == "format=" {
            // An empty value counts as absent: the default format.
            assert_eq!(response.status(), 200);
            continue;
        }
        assert_error(response, 400, "invalid-parameter").await;
    }
    let head = http
        .head(server.url(&format!("/datasets/{id}/items?format=pdf")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 400);
}

#[tokio::test]
async fn over_size_bodies_are_rejected() {
    let server = TestServer::start();
    let id = create(&server, "big").await;
    // Plain: 10 MB of valid items.
    let item = format!("{{\"text\":\"{}\"}}", "x".repeat(1000));
    let big = format!("[{}]", vec![item.as_str(); 10_000].join(","));
    assert!(big.len() > 9 * 1024 * 1024);
    assert_error(
        push(&server, &id, big.clone()).await,
        413,
        "request-too-large",
    )
    .await;
    // Gzip bomb: small on the wire, over the limit once decoded.
    let bomb = gzip(big.as_bytes());
    assert!(bomb.len() < 1024 * 1024);
    let response = client()
        .post(server.url(&format!("/datasets/{id}/items")))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "request-too-large").await;
    // Just under the limit is fine.
    let fits = format!("[{}]", vec![item.as_str(); 9000].join(","));
    assert!(fits.len() < 9 * 1024 * 1024);
    assert_eq!(push(&server, &id, fits).await.status(), 201);
    assert_eq!(item_count(&server, &id).await, 9000);
}

#[tokio::test]
async fn unsupported_or_corrupt_encoding_stores_nothing() {
    let server = TestServer::start();
    let id = create(&server, "encodings").await;
    let http = client();
    for encoding in ["compress", "zstd", "gzip, snappy"] {
        let response = http
            .post(server.url(&format!("/datasets/{id}/items")))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(r#"{"a":1}"#)
            .send()
            .await
            .unwrap();
        assert_error(response, 415, "unsupported-content-encoding").await;
    }
    // Declared gzip but not gzip data.
    let response = http
        .post(server.url(&format!("/datasets/{id}/items")))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-input").await;
    assert_eq!(item_count(&server, &id).await, 0);
}

#[tokio::test]
async fn bad_token_changes_nothing() {
    let server = TestServer::start();
    let id = create(&server, "guarded").await;
    let http = client();
    let url = format!("{}/datasets/{id}/items", server.api());
    let response = http
        .post(&url)
        .bearer_auth("wrong-token")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid-token").await;
    let response = http.post(&url).body(r#"{"a":1}"#).send().await.unwrap();
    assert_error(response, 401, "token-not-provided").await;
    let response = http.get(format!("{url}?token=nope")).send().await.unwrap();
    assert_error(response, 401, "invalid-token").await;
    let response = http
        .put(format!("{}/datasets/{id}", server.api()))
        .bearer_auth("wrong-token")
        .json(&json!({"name": "stolen"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid-token").await;
    let response = http
        .delete(format!("{}/datasets/{id}", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "token-not-provided").await;
    let response = http
        .post(format!("{}/datasets?name=sneaky", server.api()))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid-token").await;
    assert_eq!(info(&server, &id).await["name"], "guarded");
    assert_eq!(item_count(&server, &id).await, 0);
    let list: Value = http
        .get(server.url("/datasets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["total"], 1);
}

#[tokio::test]
async fn unknown_id_is_record_not_found() {
    let server = TestServer::start();
    let http = client();
    let missing = "aaaaaaaaaaaaaaaaa";
    for (method, path) in [
        ("GET", format!("/datasets/{missing}")),
        ("PUT", format!("/datasets/{missing}")),
        ("DELETE", format!("/datasets/{missing}")),
        ("GET", format!("/datasets/{missing}/items")),
        ("POST", format!("/datasets/{missing}/items")),
        ("GET", format!("/datasets/{missing}/statistics")),
        ("GET", "/datasets/~no-such-name/items".to_string()),
        ("GET", "/datasets/nobody~no-such-name".to_string()),
        ("GET", "/datasets/troupe~no-such-name".to_string()),
    ] {
        let request = http
            .request(method.parse().unwrap(), server.url(&path))
            .header("content-type", "application/json");
        let request = if method == "GET" || method == "DELETE" {
            request
        } else {
            request.body(r#"{"name":"x"}"#)
        };
        assert_error(request.send().await.unwrap(), 404, "record-not-found").await;
    }
    let head = http
        .head(server.url(&format!("/datasets/{missing}/items")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    let list: Value = http
        .get(server.url("/datasets?unnamed=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["total"], 0, "nothing created: {list}");
}

#[tokio::test]
async fn invalid_storage_names_are_rejected() {
    let server = TestServer::start();
    let http = client();
    let long = "a".repeat(64);
    for name in [
        "bad_name",
        "-lead",
        "trail-",
        "sp%20ace",
        "dots.name",
        long.as_str(),
        "%C3%A9t%C3%A9",
    ] {
        let response = http
            .post(server.url(&format!("/datasets?name={name}")))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-parameter").await;
    }
    let id = create(&server, "valid-name").await;
    for name in ["bad_name", "x y", "-x"] {
        let response = http
            .put(server.url(&format!("/datasets/{id}")))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-input").await;
    }
    // A name taken by another dataset: 409, nothing renamed.
    let other = create(&server, "other-name").await;
    let response = http
        .put(server.url(&format!("/datasets/{other}")))
        .json(&json!({ "name": "valid-name" }))
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "name-not-unique").await;
    assert_eq!(info(&server, &other).await["name"], "other-name");
    let list: Value = http
        .get(server.url("/datasets?unnamed=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["total"], 2, "{list}");
}

#[tokio::test]
async fn compressed_pushes_are_decoded() {
    let server = TestServer::start();
    let id = create(&server, "compressed").await;
    let payload = |tag: &str| {
        let items: Vec<Value> = (0..200)
            .map(|n| json!({"enc": tag, "n": n, "pad": "p".repeat(20)}))
            .collect();
        serde_json::to_vec(&items).unwrap()
    };
    let http = client();
    let send = |encoding: &'static str, body: Vec<u8>| {
        http.post(server.url(&format!("/datasets/{id}/items")))
            .header("content-type", "application/json; charset=utf-8")
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    assert_eq!(
        send("gzip", gzip(&payload("gzip"))).await.unwrap().status(),
        201
    );
    let mut br = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut br, 4096, 6, 22);
        writer.write_all(&payload("br")).unwrap();
    }
    assert_eq!(send("br", br).await.unwrap().status(), 201);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&payload("deflate")).unwrap();
    assert_eq!(
        send("deflate", zlib.finish().unwrap())
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        send("identity", payload("identity"))
            .await
            .unwrap()
            .status(),
        201
    );
    let all = items(&server, &id).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 800);
    for (block, tag) in ["gzip", "br", "deflate", "identity"].iter().enumerate() {
        for n in 0..200 {
            assert_eq!(
                all[block * 200 + n],
                json!({"enc": tag, "n": n, "pad": "p".repeat(20)})
            );
        }
    }
}

#[tokio::test]
async fn name_references_resolve_everywhere() {
    let server = TestServer::start();
    let id = create(&server, "by-name").await;
    let http = client();
    for reference in [
        "~by-name",
        "%7Eby-name",
        "%7eby-name",
        "troupe~by-name",
        "troupe%7Eby-name",
        "by-name",
    ] {
        let response = push(&server, reference, format!(r#"{{"ref":"{reference}"}}"#)).await;
        assert_eq!(response.status(), 201, "{reference}");
        let got: Value = http
            .get(server.url(&format!("/datasets/{reference}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["data"]["id"], id, "{reference}");
    }
    assert_eq!(item_count(&server, &id).await, 6);
    let csv = http
        .get(server.url("/datasets/troupe%7Eby-name/items?format=csv&bom=0"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert_eq!(csv.lines().next(), Some("ref"));
}

#[tokio::test]
async fn head_items_has_headers_and_no_body() {
    let server = TestServer::start();
    let id = create(&server, "head").await;
    push(
        &server,
        &id,
        serde_json::to_string(&(0..30).map(|n| json!({"n": n})).collect::<Vec<_>>()).unwrap(),
    )
    .await;
    let http = client();
    let response = http
        .head(server.url(&format!(
            "/datasets/{id}/items?offset=25&limit=10&desc=1&format=csv"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-apify-pagination-offset"), "25");
    assert_eq!(header(&response, "x-apify-pagination-limit"), "10");
    assert_eq!(header(&response, "x-apify-pagination-count"), "5");
    assert_eq!(header(&response, "x-apify-pagination-total"), "30");
    assert_eq!(header(&response, "x-apify-pagination-desc"), "true");
    assert!(header(&response, "content-type").starts_with("text/csv"));
    assert!(response.bytes().await.unwrap().is_empty());
    let response = http
        .head(server.url(&format!("/datasets/{id}/items")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-apify-pagination-limit"),
        "999999999999"
    );
    assert_eq!(header(&response, "x-apify-pagination-count"), "30");
    assert_eq!(header(&response, "x-apify-pagination-desc"), "false");
}

#[tokio::test]
async fn get_or_create_is_201_then_200() {
    let server = TestServer::start();
    let http = client();
    let first = http
        .post(server.url("/datasets?name=once"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let location = header(&first, "location");
    let first: Value = first.json().await.unwrap();
    let id = first["data"]["id"].as_str().unwrap().to_string();
    assert!(
        location.ends_with(&format!("/v2/datasets/{id}")),
        "{location}"
    );
    let second = http
        .post(server.url("/datasets?name=once"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["data"]["id"], id.as_str());
    // Unnamed creates are new every time.
    let a: Value = http
        .post(server.url("/datasets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = http.post(server.url("/datasets")).send().await.unwrap();
    assert_eq!(b.status(), 201);
    let b: Value = b.json().await.unwrap();
    assert_ne!(a["data"]["id"], b["data"]["id"]);
    assert_eq!(a["data"]["name"], Value::Null);
    // Named listing has one; with unnamed=1, three (unnamed ones listed with name "").
    let named: Value = http
        .get(server.url("/datasets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(named["data"]["total"], 1);
    let all: Value = http
        .get(server.url("/datasets?unnamed=true&desc=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"]["total"], 3);
    assert_eq!(all["data"]["desc"], true);
    assert_eq!(all["data"]["items"][0]["id"], b["data"]["id"]);
    assert_eq!(all["data"]["items"][0]["name"], "");
    assert_eq!(all["data"]["items"][2]["name"], "once");
}

#[tokio::test]
async fn pagination_headers_at_deep_offsets_and_desc() {
    let server = TestServer::start();
    let id = create(&server, "deep").await;
    for chunk in 0..5 {
        let batch: Vec<Value> = (0..1000).map(|n| json!({"n": chunk * 1000 + n})).collect();
        assert_eq!(
            push(&server, &id, serde_json::to_vec(&batch).unwrap())
                .await
                .status(),
            201
        );
    }
    let http = client();
    let get = |query: String| {
        http.get(server.url(&format!("/datasets/{id}/items?{query}")))
            .send()
    };
    let numbers = |body: &Value| -> Vec<u64> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|item| item["n"].as_u64().unwrap())
            .collect()
    };

    let response = get("offset=4990&limit=100".into()).await.unwrap();
    assert_eq!(header(&response, "x-apify-pagination-offset"), "4990");
    assert_eq!(header(&response, "x-apify-pagination-limit"), "100");
    assert_eq!(header(&response, "x-apify-pagination-count"), "10");
    assert_eq!(header(&response, "x-apify-pagination-total"), "5000");
    assert_eq!(
        numbers(&response.json().await.unwrap()),
        (4990..5000).collect::<Vec<_>>()
    );

    let response = get("offset=2500&limit=3&desc=true".into()).await.unwrap();
    assert_eq!(header(&response, "x-apify-pagination-desc"), "true");
    assert_eq!(
        numbers(&response.json().await.unwrap()),
        vec![2499, 2498, 2497]
    );

    let response = get("desc=1&limit=2".into()).await.unwrap();
    assert_eq!(numbers(&response.json().await.unwrap()), vec![4999, 4998]);

    // Past the end: an empty page that scanned nothing (iterators stop on it).
    for query in [
        "offset=5000",
        "offset=999999999&limit=10",
        "offset=6000&desc=1",
    ] {
        let response = get(query.into()).await.unwrap();
        assert_eq!(
            header(&response, "x-apify-pagination-count"),
            "0",
            "{query}"
        );
        assert_eq!(response.json::<Value>().await.unwrap(), json!([]));
    }
    // limit=0 means no limit (as the clients assume).
    let response = get("offset=4000&limit=0".into()).await.unwrap();
    assert_eq!(
        header(&response, "x-apify-pagination-limit"),
        "999999999999"
    );
    assert_eq!(header(&response, "x-apify-pagination-count"), "1000");

    // Count is scanned items, before filters drop any.
    let response = get("offset=10&limit=5&fields=missing&skipEmpty=1".into())
        .await
        .unwrap();
    assert_eq!(header(&response, "x-apify-pagination-count"), "5");
    assert_eq!(response.json::<Value>().await.unwrap(), json!([]));

    // Paging the whole dataset backwards returns every item once.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let response = get(format!("offset={offset}&limit=700&desc=1"))
            .await
            .unwrap();
        let count: u64 = header(&response, "x-apify-pagination-count")
            .parse()
            .unwrap();
        if count == 0 {
            break;
        }
        seen.extend(numbers(&response.json().await.unwrap()));
        offset += count;
    }
    assert_eq!(seen, (0..5000).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn delete_removes_dataset_and_items() {
    let server = TestServer::start();
    let id = create(&server, "doomed").await;
    push(&server, &id, r#"[{"a":1}]"#).await;
    let http = client();
    let response = http
        .delete(server.url(&format!("/datasets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_error(
        http.get(server.url(&format!("/datasets/{id}")))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    assert_error(
        http.get(server.url(&format!("/datasets/{id}/items")))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    // The name is free again, and the new dataset starts empty.
    let again = create(&server, "doomed").await;
    assert_ne!(again, id);
    assert_eq!(items(&server, &again).await, json!([]));
}

/// A tabular export longer than what the column pass keeps in memory (16 MiB of rows): the
/// first items' rows come from that pass, the rest are read and laid out again while writing.
/// Columns that first appear late still get their place, in every row, in both directions.
#[tokio::test]
async fn long_tabular_exports_keep_every_row_and_late_columns() {
    let server = TestServer::start();
    let id = create(&server, "long-table").await;
    let pad = "p,\"q\"".repeat(20_000); // 100 kB of cell text that needs quoting
    for batch in 0..4 {
        let items: Vec<Value> = (batch * 50..batch * 50 + 50)
            .map(|i| {
                let mut item = json!({"i": i, "pad": pad});
                if i == 5 {
                    item["n"] = json!({"a": [1, null]});
                }
                if i >= 190 {
                    item["late"] = json!(format!("yes{i}"));
                }
                item
            })
            .collect();
        let response = push(&server, &id, serde_json::to_vec(&items).unwrap()).await;
        assert_eq!(response.status(), 201);
    }
    let http = client();
    let get = |query: &str| {
        http.get(server.url(&format!("/datasets/{id}/items?bom=0&{query}")))
            .send()
    };
    let table = |text: String| -> Vec<Vec<String>> {
        csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|record| record.unwrap().iter().map(str::to_string).collect())
            .collect()
    };

    for desc in [false, true] {
        let text = get(&format!("format=csv&desc={desc}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Columns in order of first appearance in the exported order.
        let header = if desc {
            "i,pad,late,n/a/0,n/a/1\n"
        } else {
            "i,pad,n/a/0,n/a/1,late\n"
        };
        assert!(text.starts_with(header), "{desc}");
        let rows = table(text);
        assert_eq!(rows.len(), 200);
        let mut order: Vec<usize> = (0..200).collect();
        if desc {
            order.reverse();
        }
        let (n, late) = if desc { (3, 2) } else { (2, 4) };
        for (row, i) in rows.iter().zip(order) {
            assert_eq!(row[0], i.to_string());
            assert_eq!(row[1], pad);
            assert_eq!(row[n], if i == 5 { "1" } else { "" });
            assert_eq!(row[n + 1], "");
            let expected = if i >= 190 {
                format!("yes{i}")
            } else {
                String::new()
            };
            assert_eq!(row[late], expected);
        }
    }

    // `fields` orders the columns; a window that starts inside the dataset.
    let text = get("format=csv&fields=late,i&offset=150")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows = table(text);
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0], ["", "150"]);
    assert_eq!(rows[49], ["yes199", "199"]);

    let html = get("format=html").await.unwrap().text().await.unwrap();
    assert_eq!(html.matches("<tr>").count(), 201); // header + 200 rows
    assert_eq!(html.matches("<td>yes199</td></tr>").count(), 1);
    assert!(html.ends_with("</tbody></table></body></html>\n"));
}

/// Exports larger than one page and one buffer stream in order, in every text format; a small
/// selection is one body with a length; huge items end a page early without losing any.
#[tokio::test]
async fn large_exports_stream_every_item_in_order() {
    let server = TestServer::start();
    let id = create(&server, "streamed").await;
    let pad = "p".repeat(300);
    for chunk in 0..3 {
        let batch: Vec<Value> = (0..1000)
            .map(|n| json!({"n": chunk * 1000 + n, "pad": pad}))
            .collect();
        assert_eq!(
            push(&server, &id, serde_json::to_vec(&batch).unwrap())
                .await
                .status(),
            201
        );
    }
    // Three items of 700 KB: one page of them is more than the export's buffer.
    let huge = "h".repeat(700_000);
    for n in 3000..3003 {
        let body = serde_json::to_vec(&json!({"n": n, "pad": huge})).unwrap();
        assert_eq!(push(&server, &id, body).await.status(), 201);
    }
    let total = 3003u64;
    let http = client();
    let get = |query: &str| {
        http.get(server.url(&format!("/datasets/{id}/items?{query}")))
            .send()
    };
    let numbers = |items: Vec<Value>| -> Vec<u64> {
        items
            .iter()
            .map(|item| item["n"].as_u64().unwrap())
            .collect()
    };

    let response = get("").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-apify-pagination-count"), "3003");
    let all: Vec<Value> = response.json().await.unwrap();
    assert_eq!(numbers(all.clone()), (0..total).collect::<Vec<_>>());
    assert_eq!(all[3001]["pad"].as_str().unwrap().len(), 700_000);

    let response = get("desc=1&offset=1&limit=2500").await.unwrap();
    let page: Vec<Value> = response.json().await.unwrap();
    assert_eq!(numbers(page), (502..3002).rev().collect::<Vec<_>>());

    let response = get("format=jsonl&offset=2990").await.unwrap();
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(numbers(lines), (2990..total).collect::<Vec<_>>());

    let response = get("format=csv&fields=n&bom=0").await.unwrap();
    let text = response.text().await.unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "n");
    let expected: Vec<String> = (0..total).map(|n| n.to_string()).collect();
    assert_eq!(rows[1..], expected[..]);

    // Transformed JSON across pages (every item re-encoded).
    let response = get("fields=n&offset=500").await.unwrap();
    let page: Vec<Value> = response.json().await.unwrap();
    assert_eq!(page.len(), 2503);
    assert_eq!(page[0], json!({"n": 500}));
    assert_eq!(page[2502], json!({"n": 3002}));

    // A small selection is one body with its length; a whole large export streams.
    let response = get("limit=10").await.unwrap();
    let length: u64 = header(&response, "content-length").parse().unwrap();
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len() as u64, length);
    let response = get("format=jsonl").await.unwrap();
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.text().await.unwrap().lines().count(), 3003);
}

/// A tabular export over the column limit is a 400 (found before the first byte is sent).
#[tokio::test]
async fn tabular_export_over_the_column_limit_is_rejected() {
    let server = TestServer::start();
    let id = create(&server, "wide").await;
    let wide: serde_json::Map<String, Value> =
        (0..2001).map(|i| (format!("c{i}"), json!(i))).collect();
    assert_eq!(
        push(&server, &id, serde_json::to_vec(&wide).unwrap())
            .await
            .status(),
        201
    );
    for format in ["csv", "html", "xlsx"] {
        let response = client()
            .get(server.url(&format!("/datasets/{id}/items?format={format}")))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid-parameter").await;
    }
    let response = client()
        .get(server.url(&format!(
            "/datasets/{id}/items?format=csv&fields=c0,c2000&bom=0"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "c0,c2000\n0,2000\n");
}

#[tokio::test]
async fn statistics_per_field() {
    let server = TestServer::start();
    let c = client();
    let created: Value = c
        .post(server.url("/datasets?name=stats-fields"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["data"]["id"].as_str().unwrap().to_string();
    let stats = |c: reqwest::Client| {
        let url = server.url(&format!("/datasets/{id}/statistics"));
        async move {
            let response = c.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["data"].clone()
        }
    };
    // Nothing to measure yet.
    assert_eq!(stats(c.clone()).await, json!({"fieldStatistics": null}));
    let pushed = c
        .post(server.url(&format!("/datasets/{id}/items")))
        .json(&json!([
            {"price": 59, "name": "a", "tags": [1, 2, 3]},
            {"price": 89.5, "name": null, "tags": []},
            {"price": 70, "name": "longer", "extra": {"x": 1, "y": 2}},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let got = stats(c.clone()).await;
    let fields = &got["fieldStatistics"];
    assert_eq!(
        fields["price"],
        json!({"min": 59, "max": 89.5, "nullCount": 0, "emptyCount": 0})
    );
    assert_eq!(
        fields["name"],
        json!({"min": 1, "max": 6, "nullCount": 1, "emptyCount": 0})
    );
    assert_eq!(
        fields["tags"],
        json!({"min": 0, "max": 3, "nullCount": 0, "emptyCount": 1})
    );
    assert_eq!(
        fields["extra"],
        json!({"min": 2, "max": 2, "nullCount": 0, "emptyCount": 2})
    );
    // Reading statistics changes nothing.
    let after: Value = c
        .get(server.url(&format!("/datasets/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["data"]["itemCount"], 3);
    // Items pushed after a call count in the next one (the figures so far are kept and extended).
    let pushed = c
        .post(server.url(&format!("/datasets/{id}/items")))
        .json(&json!([
            {"price": 12, "name": "a much longer name", "fresh": true},
            {"price": null, "tags": [1, 2, 3, 4, 5]},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let fields = stats(c.clone()).await["fieldStatistics"].clone();
    assert_eq!(
        fields["price"],
        json!({"min": 12, "max": 89.5, "nullCount": 1, "emptyCount": 0})
    );
    assert_eq!(
        fields["name"],
        json!({"min": 1, "max": 18, "nullCount": 1, "emptyCount": 1})
    );
    assert_eq!(
        fields["tags"],
        json!({"min": 0, "max": 5, "nullCount": 0, "emptyCount": 2})
    );
    assert_eq!(
        fields["extra"],
        json!({"min": 2, "max": 2, "nullCount": 0, "emptyCount": 4})
    );
    assert_eq!(
        fields["fresh"],
        json!({"min": null, "max": null, "nullCount": 0, "emptyCount": 4})
    );
    // Asked again with nothing new: the same answer.
    assert_eq!(stats(c.clone()).await["fieldStatistics"], fields);
    // A missing dataset: 404 record-not-found.
    let response = c
        .get(server.url("/datasets/nosuchdataset1234/statistics"))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "record-not-found").await;
}

/// Pushes resolve their dataset from memory (ids map to owner and row): renames, other users,
/// deletions and a new dataset that may take over the deleted one's internal number must all be
/// seen by the very next push.
#[tokio::test]
async fn pushes_follow_renames_owners_and_deletions() {
    use common::Api;
    let server = TestServer::start();
    let http = client();
    let id = create(&server, "cached-push").await;
    for i in 0..3 {
        assert_eq!(
            push(&server, &id, format!(r#"{{"i":{i}}}"#)).await.status(),
            201
        );
    }
    // A rename: pushes by id go on, by the new name too.
    let response = http
        .put(server.url(&format!("/datasets/{id}")))
        .json(&json!({"name": "cached-push-renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(push(&server, &id, r#"{"i":3}"#).await.status(), 201);
    assert_eq!(
        push(&server, "~cached-push-renamed", r#"{"i":4}"#)
            .await
            .status(),
        201
    );
    assert_eq!(item_count(&server, &id).await, 5);
    // Another user may not push, however often it tries, and changes nothing.
    let bob = server.add_user("bob");
    let bob = server.as_user(&bob);
    for _ in 0..3 {
        let response = http
            .post(bob.url(&format!("/datasets/{id}/items")))
            .header("content-type", "application/json")
            .body(r#"{"i":99}"#)
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "insufficient-permissions").await;
    }
    assert_eq!(item_count(&server, &id).await, 5);
    // Deleted: the next push is a 404, and a dataset created since (which may reuse the deleted
    // one's internal number) gets nothing.
    let response = http
        .delete(server.url(&format!("/datasets/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let fresh = create(&server, "cached-push-fresh").await;
    for _ in 0..2 {
        assert_error(
            push(&server, &id, r#"{"i":5}"#).await,
            404,
            "record-not-found",
        )
        .await;
    }
    assert_eq!(item_count(&server, &fresh).await, 0);
    assert_eq!(items(&server, &fresh).await, json!([]));
    assert_eq!(push(&server, &fresh, r#"{"i":6}"#).await.status(), 201);
    assert_eq!(items(&server, &fresh).await, json!([{"i": 6}]));
}

/// `stats.readCount` counts every read of the items (as on Apify), whatever the format; reading
/// the dataset object is no items read. Counters are buffered, so the count shows within seconds.
#[tokio::test]
async fn read_count_counts_every_items_read() {
    let server = TestServer::start();
    let id = create(&server, "counted-reads").await;
    assert_eq!(
        push(&server, &id, r#"[{"a":1},{"a":2}]"#).await.status(),
        201
    );
    let before = info(&server, &id).await["stats"]["readCount"]
        .as_u64()
        .unwrap();
    for query in ["", "?format=csv", "?limit=1&desc=1"] {
        let response = client()
            .get(server.url(&format!("/datasets/{id}/items{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{query}");
        response.bytes().await.unwrap();
    }
    let count = common::eventually("readCount to reach 3 reads", || async {
        let count = info(&server, &id).await["stats"]["readCount"]
            .as_u64()
            .unwrap();
        (count >= before + 3).then_some(count)
    })
    .await;
    assert_eq!(count, before + 3);
}
