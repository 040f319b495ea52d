use std::time::Duration;

use bytes::Bytes;
use troupe_model::storage::{StorageInfo, StorageKind, StorageOrigin, StorageUpdate};

use super::test_user;
use crate::kv::{KeysQuery, NewRecord, RecordContent, RecordSource, StoreAccess};
use crate::{Error, Storage};

fn meta(content_type: &str, encoding: Option<&str>) -> NewRecord {
    NewRecord {
        content_type: content_type.into(),
        content_encoding: encoding.map(str::to_string),
    }
}

async fn read_all(storage: &dyn Storage, store: &StorageInfo, key: &str) -> Option<Vec<u8>> {
    let record = storage.get_record(store, key, false).await.unwrap()?;
    Some(match record.content.expect("content") {
        RecordContent::Inline(bytes) => bytes.to_vec(),
        RecordContent::File(mut file) => {
            use std::io::Read;
            let mut out = Vec::new();
            file.read_to_end(&mut out).unwrap();
            out
        }
    })
}

async fn keys(storage: &dyn Storage, store: &StorageInfo, query: KeysQuery) -> (Vec<String>, bool) {
    let page = storage.list_keys(store, query).await.unwrap();
    (
        page.keys.into_iter().map(|k| k.key).collect(),
        page.is_truncated,
    )
}

fn query(start: Option<&str>, prefix: Option<&str>, limit: u64) -> KeysQuery {
    KeysQuery {
        exclusive_start_key: start.map(str::to_string),
        prefix: prefix.map(str::to_string),
        limit,
    }
}

async fn store_info(storage: &dyn Storage, id: &str) -> StorageInfo {
    storage
        .get_storage(StorageKind::KeyValueStore, id)
        .await
        .unwrap()
        .unwrap()
}

pub async fn run(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let (store, _) = storage
        .create_storage(
            StorageKind::KeyValueStore,
            &user,
            None,
            StorageOrigin::default(),
        )
        .await
        .unwrap();
    let (other, _) = storage
        .create_storage(
            StorageKind::KeyValueStore,
            &user,
            None,
            StorageOrigin::default(),
        )
        .await
        .unwrap();

    // Round trip, byte for byte, with type and encoding as given.
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let size = storage
        .put_record(
            &store,
            "bin",
            meta("image/png", None),
            RecordSource::Bytes(binary.clone().into()),
        )
        .await
        .unwrap();
    assert_eq!(size, 5000);
    assert_eq!(read_all(storage, &store, "bin").await.unwrap(), binary);
    let gz = b"\x1f\x8b pretend gzip".to_vec();
    storage
        .put_record(
            &store,
            "gz",
            meta("application/json; charset=utf-8", Some("gzip")),
            RecordSource::Bytes(gz.clone().into()),
        )
        .await
        .unwrap();
    let record = storage
        .get_record(&store, "gz", true)
        .await
        .unwrap()
        .unwrap();
    assert!(record.content.is_none());
    assert_eq!(record.meta.content_type, "application/json; charset=utf-8");
    assert_eq!(record.meta.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(record.meta.size, gz.len() as u64);
    assert_eq!(read_all(storage, &store, "gz").await.unwrap(), gz);
    // Empty records exist.
    storage
        .put_record(
            &store,
            "empty",
            meta("text/plain", None),
            RecordSource::Bytes(Bytes::new()),
        )
        .await
        .unwrap();
    assert_eq!(read_all(storage, &store, "empty").await.unwrap(), b"");

    // A large record streamed in chunks (crosses any inline threshold).
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<std::io::Result<Bytes>> = large
        .chunks(65536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let size = storage
        .put_record(
            &store,
            "large",
            meta("application/octet-stream", None),
            RecordSource::Chunks(Box::pin(futures::stream::iter(chunks))),
        )
        .await
        .unwrap();
    assert_eq!(size, large.len() as u64);
    assert_eq!(read_all(storage, &store, "large").await.unwrap(), large);

    // The hot-path lookup: store and record in one call.
    let (access, record) = storage
        .get_store_record(&store.id, "bin", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (access.num, access.user_id.as_str()),
        (store.num, store.user_id.as_str())
    );
    assert_eq!(access.url_signing_secret_key, store.url_signing_secret_key);
    assert_eq!(access.general_access, store.general_access);
    let record = record.unwrap();
    assert_eq!(record.meta.content_type, "image/png");
    assert!(matches!(record.content, Some(RecordContent::Inline(ref b)) if b[..] == binary[..]));
    let (_, record) = storage
        .get_store_record(&store.id, "large", false)
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    match record.unwrap().content.unwrap() {
        RecordContent::Inline(bytes) => got.extend_from_slice(&bytes),
        RecordContent::File(mut file) => {
            use std::io::Read;
            file.read_to_end(&mut got).unwrap();
        }
    }
    assert_eq!(got, large);
    let (_, record) = storage
        .get_store_record(&store.id, "gz", true)
        .await
        .unwrap()
        .unwrap();
    let record = record.unwrap();
    assert!(record.content.is_none());
    assert_eq!(record.meta.content_encoding.as_deref(), Some("gzip"));
    let (_, record) = storage
        .get_store_record(&store.id, "nope", false)
        .await
        .unwrap()
        .unwrap();
    assert!(record.is_none());
    assert!(storage
        .get_store_record("NoSuchStore", "bin", false)
        .await
        .unwrap()
        .is_none());

    // A failing stream changes nothing: the old record stays.
    let failing = futures::stream::iter(
        (0..40)
            .map(|_| Ok(Bytes::from(vec![1u8; 65536])))
            .chain([Err(std::io::Error::other("client went away"))]),
    );
    let before = store_info(storage, &store.id).await;
    let failed = storage
        .put_record(
            &store,
            "large",
            meta("text/plain", None),
            RecordSource::Chunks(Box::pin(failing)),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(read_all(storage, &store, "large").await.unwrap(), large);
    let after = store_info(storage, &store.id).await;
    assert_eq!(before.storage_bytes, after.storage_bytes);
    assert_eq!(before.write_count, after.write_count);

    // Counters: bytes follow overwrites and deletes.
    let info = store_info(storage, &store.id).await;
    assert_eq!(
        info.storage_bytes,
        5000 + gz.len() as u64 + large.len() as u64
    );
    assert_eq!(info.write_count, 4);
    storage
        .put_record(
            &store,
            "large",
            meta("text/plain", None),
            RecordSource::Bytes("tiny".into()),
        )
        .await
        .unwrap();
    assert_eq!(read_all(storage, &store, "large").await.unwrap(), b"tiny");
    let info = store_info(storage, &store.id).await;
    assert_eq!(info.storage_bytes, 5000 + gz.len() as u64 + 4);
    assert!(storage.delete_record(&store, "large").await.unwrap());
    assert!(!storage.delete_record(&store, "large").await.unwrap());
    assert!(storage
        .get_record(&store, "large", false)
        .await
        .unwrap()
        .is_none());
    let info = store_info(storage, &store.id).await;
    assert_eq!(info.storage_bytes, 5000 + gz.len() as u64);
    assert_eq!(info.delete_count, 1);
    assert!(info.modified_at >= store.modified_at);

    // Invalid keys are refused; nothing is stored.
    for bad in ["", "a/b", "../x", "é", &"k".repeat(257)] {
        assert!(matches!(
            storage
                .put_record(
                    &store,
                    bad,
                    meta("text/plain", None),
                    RecordSource::Bytes("x".into())
                )
                .await,
            Err(Error::Invalid(_))
        ));
    }
    // Records of other stores never leak in.
    storage
        .put_record(
            &other,
            "bin",
            meta("text/plain", None),
            RecordSource::Bytes("other".into()),
        )
        .await
        .unwrap();
    assert_eq!(read_all(storage, &store, "bin").await.unwrap(), binary);
    assert_eq!(read_all(storage, &other, "bin").await.unwrap(), b"other");

    // Listing: byte order (uppercase before lowercase, '(' before digits), paging, prefix.
    let (k, _) = storage
        .create_storage(
            StorageKind::KeyValueStore,
            &user,
            None,
            StorageOrigin::default(),
        )
        .await
        .unwrap();
    let mut names: Vec<String> = (0..30).map(|i| format!("item-{i:03}")).collect();
    names.extend(["A", "Z", "a", "z", "(x)", "0", "item", "item-", "itemz"].map(str::to_string));
    for name in &names {
        storage
            .put_record(
                &k,
                name,
                meta("text/plain", None),
                RecordSource::Bytes(name.clone().into_bytes().into()),
            )
            .await
            .unwrap();
    }
    let mut sorted = names.clone();
    sorted.sort();
    let (all, truncated) = keys(storage, &k, query(None, None, 1000)).await;
    assert_eq!(all, sorted);
    assert!(!truncated);
    let page = storage
        .list_keys(&k, query(None, None, 1000))
        .await
        .unwrap();
    assert_eq!(
        page.keys.iter().find(|e| e.key == "item-003").unwrap().size,
        8
    );
    // Paging with exclusive start keys visits each key once.
    let mut seen = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let (page, truncated) = keys(storage, &k, query(start.as_deref(), None, 7)).await;
        assert!(page.len() <= 7);
        seen.extend(page.clone());
        if !truncated {
            break;
        }
        start = page.last().cloned();
    }
    assert_eq!(seen, sorted);
    // The start key itself is skipped, and it need not exist.
    let (page, _) = keys(storage, &k, query(Some("item-005"), None, 2)).await;
    assert_eq!(page, vec!["item-006", "item-007"]);
    let (page, _) = keys(storage, &k, query(Some("item-0055"), None, 1)).await;
    assert_eq!(page, vec!["item-006"]);
    // Prefix (with and without a start key).
    let (page, truncated) = keys(storage, &k, query(None, Some("item-01"), 1000)).await;
    assert_eq!(
        page,
        (10..20).map(|i| format!("item-{i:03}")).collect::<Vec<_>>()
    );
    assert!(!truncated);
    let (page, truncated) = keys(storage, &k, query(Some("item-015"), Some("item-01"), 3)).await;
    assert_eq!(page, vec!["item-016", "item-017", "item-018"]);
    assert!(truncated);
    let (page, truncated) = keys(storage, &k, query(Some("item-018"), Some("item-01"), 3)).await;
    assert_eq!(page, vec!["item-019"]);
    assert!(!truncated);
    let (page, _) = keys(storage, &k, query(Some("a"), Some("item"), 1000)).await;
    assert_eq!(page.len(), 33);
    let (page, _) = keys(storage, &k, query(None, Some("itemz"), 1000)).await;
    assert_eq!(page, vec!["itemz"]);
    let (page, _) = keys(storage, &k, query(None, Some("nothing"), 1000)).await;
    assert!(page.is_empty());
    let (page, _) = keys(storage, &k, query(None, Some("é/"), 1000)).await;
    assert!(page.is_empty());
    let (page, truncated) = keys(storage, &k, query(Some("zz"), None, 1000)).await;
    assert!(page.is_empty() && !truncated);

    // Read and list counters are eventually exact.
    for _ in 0..3 {
        storage.get_record(&k, "A", false).await.unwrap();
    }
    // (Flushed in the background: wait as long as a slow, loaded machine may need.)
    let mut ok = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let info = store_info(storage, &k.id).await;
        if info.read_count == 3 && info.list_count >= 14 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "read/list counters were not flushed");

    // Concurrent writes (batched into shared commits by some backends) each succeed or fail on
    // their own, and the counters add up.
    let (gone, _) = storage
        .create_storage(
            StorageKind::KeyValueStore,
            &user,
            None,
            StorageOrigin::default(),
        )
        .await
        .unwrap();
    storage
        .delete_storage(StorageKind::KeyValueStore, &gone.id)
        .await
        .unwrap();
    let writes = (0..60u32).map(|i| {
        let target = if i % 10 == 9 { &gone } else { &k };
        let key = format!("c-{i:02}");
        async move {
            let result = storage
                .put_record(
                    target,
                    &key,
                    meta("text/plain", None),
                    RecordSource::Bytes(vec![b'x'; i as usize].into()),
                )
                .await;
            (i, result)
        }
    });
    for (i, result) in futures::future::join_all(writes).await {
        if i % 10 == 9 {
            assert!(matches!(result, Err(Error::NotFound(_))), "{i}");
        } else {
            assert_eq!(result.unwrap(), u64::from(i));
        }
    }
    let (page, _) = keys(storage, &k, query(None, Some("c-"), 1000)).await;
    assert_eq!(page.len(), 54);
    let info = store_info(storage, &k.id).await;
    let expected: u64 = (0..60u64).filter(|i| i % 10 != 9).sum::<u64>()
        + names.iter().map(|n| n.len() as u64).sum::<u64>();
    assert_eq!(info.storage_bytes, expected);
    assert_eq!(info.write_count, 54 + names.len() as u64);

    concurrent_counters(storage, &k).await;

    // Deleting a store removes it with its records; unknown store → NotFound.
    storage
        .delete_storage(StorageKind::KeyValueStore, &k.id)
        .await
        .unwrap();
    assert!(storage
        .get_store_record(&k.id, "A", false)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        storage
            .put_record(
                &k,
                "A",
                meta("text/plain", None),
                RecordSource::Bytes("x".into())
            )
            .await,
        Err(Error::NotFound(_))
    ));
    // A backend may remove the content in the background (SQLite purges it in chunks after the
    // DELETE): the records must be gone once it has, without a deadline on how fast.
    let mut page = keys(storage, &k, query(None, None, 1000)).await.0;
    for _ in 0..1000 {
        if page.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        page = keys(storage, &k, query(None, None, 1000)).await.0;
    }
    assert!(page.is_empty());

    store_access(storage).await;
}

/// Concurrent overwrites and deletes of the same keys keep the counters exact (`storageBytes`
/// is the size of what is left, `writeCount`/`deleteCount` count what succeeded), counters read
/// right after a write include it, and writes racing the deletion of their store either land
/// before it or fail, never in a store that took its number.
async fn concurrent_counters(storage: &dyn Storage, k: &StorageInfo) {
    let before = store_info(storage, &k.id).await;
    let ops = (0..48u32).map(|i| {
        let key = format!("o-{}", i % 4);
        async move {
            if i % 6 == 5 {
                (
                    i,
                    storage.delete_record(k, &key).await.map(|gone| gone as u64),
                )
            } else {
                let body = RecordSource::Bytes(vec![b'o'; 10 + i as usize].into());
                (
                    i,
                    storage
                        .put_record(k, &key, meta("text/plain", None), body)
                        .await,
                )
            }
        }
    });
    let (mut puts, mut deletes) = (0, 0);
    for (i, result) in futures::future::join_all(ops).await {
        match result.unwrap() {
            size if i % 6 != 5 => {
                assert_eq!(size, 10 + u64::from(i));
                puts += 1;
            }
            1 => deletes += 1,
            _ => {}
        }
    }
    let mut left = 0;
    for n in 0..4 {
        if let Some(bytes) = read_all(storage, k, &format!("o-{n}")).await {
            left += bytes.len() as u64;
        }
    }
    let info = store_info(storage, &k.id).await;
    assert_eq!(info.storage_bytes, before.storage_bytes + left);
    assert_eq!(info.write_count, before.write_count + puts);
    assert_eq!(info.delete_count, before.delete_count + deletes);
    // Read-your-writes of the counters.
    for n in 0..3u64 {
        let body = RecordSource::Bytes(vec![b'r'; 7].into());
        storage
            .put_record(k, "ryw", meta("text/plain", None), body)
            .await
            .unwrap();
        let now = store_info(storage, &k.id).await;
        assert_eq!(now.write_count, info.write_count + n + 1);
        assert_eq!(now.storage_bytes, info.storage_bytes + 7);
    }
    for n in 0..4 {
        storage.delete_record(k, &format!("o-{n}")).await.unwrap();
    }
    storage.delete_record(k, "ryw").await.unwrap();
    let after = store_info(storage, &k.id).await;
    assert_eq!(after.storage_bytes, before.storage_bytes);

    // Writes racing the deletion of their store.
    let user = test_user(storage).await;
    let kind = StorageKind::KeyValueStore;
    let (doomed, _) = storage
        .create_storage(kind, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let writes = (0..24u32).map(|i| {
        let doomed = &doomed;
        async move {
            if i == 12 {
                let deleted = storage.delete_storage(kind, &doomed.id).await.unwrap();
                assert!(deleted);
                return;
            }
            let body = RecordSource::Bytes(vec![b'd'; 5].into());
            match storage
                .put_record(doomed, &format!("d-{i}"), meta("text/plain", None), body)
                .await
            {
                Ok(size) => assert_eq!(size, 5),
                Err(Error::NotFound(_)) => {}
                Err(err) => panic!("write {i} racing the deletion: {err:?}"),
            }
        }
    });
    futures::future::join_all(writes).await;
    assert!(storage
        .get_storage(kind, &doomed.id)
        .await
        .unwrap()
        .is_none());
    // A new store (which may take the deleted one's number) starts empty.
    let (fresh, _) = storage
        .create_storage(kind, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let info = store_info(storage, &fresh.id).await;
    assert_eq!((info.storage_bytes, info.write_count), (0, 0));
    let (page, _) = keys(storage, &fresh, query(None, None, 1000)).await;
    assert!(page.is_empty());
    let late = storage
        .put_record(
            &doomed,
            "late",
            meta("text/plain", None),
            RecordSource::Bytes("x".into()),
        )
        .await;
    assert!(matches!(late, Err(Error::NotFound(_))));
    let (page, _) = keys(storage, &fresh, query(None, None, 1000)).await;
    assert!(page.is_empty());
}

/// `get_storage_access` (what writes resolve) follows access changes and deletions, and a
/// reference to a deleted store never writes into a newer one that took its internal number.
async fn store_access(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let kind = StorageKind::KeyValueStore;
    let create = || storage.create_storage(kind, &user, None, StorageOrigin::default());
    let (doomed, _) = create().await.unwrap();
    let access = storage
        .get_storage_access(kind, &doomed.id)
        .await
        .unwrap()
        .expect("found");
    assert_eq!(
        (access.num, &access.id, &access.user_id),
        (doomed.num, &doomed.id, &user.id)
    );
    assert_eq!(access.general_access, doomed.general_access);
    assert_eq!(access.url_signing_secret_key, doomed.url_signing_secret_key);
    assert!(storage
        .get_storage_access(StorageKind::Dataset, &doomed.id)
        .await
        .unwrap()
        .is_none());
    storage
        .put_record(
            &access,
            "a",
            meta("text/plain", None),
            RecordSource::Bytes(Bytes::from_static(b"1")),
        )
        .await
        .unwrap();
    let update = StorageUpdate {
        name: None,
        general_access: Some("ANYONE_WITH_ID_CAN_READ".into()),
    };
    storage
        .update_storage(kind, &doomed.id, update)
        .await
        .unwrap();
    let changed = storage
        .get_storage_access(kind, &doomed.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.general_access, "ANYONE_WITH_ID_CAN_READ");
    assert!(storage.delete_storage(kind, &doomed.id).await.unwrap());
    assert!(storage
        .get_storage_access(kind, &doomed.id)
        .await
        .unwrap()
        .is_none());
    let (newer, _) = create().await.unwrap();
    storage
        .put_record(
            &newer,
            "a",
            meta("text/plain", None),
            RecordSource::Bytes(Bytes::from_static(b"new")),
        )
        .await
        .unwrap();
    // The deleted store's id with the newer store's number (as a write that resolved before
    // the deletion and committed after it would carry, had the number been reused).
    let stale = StoreAccess {
        num: newer.num,
        ..(*access).clone()
    };
    let result = storage
        .put_record(
            &stale,
            "a",
            meta("text/plain", None),
            RecordSource::Bytes(Bytes::from_static(b"late")),
        )
        .await;
    assert!(matches!(result, Err(Error::NotFound(_))));
    let result = storage.delete_record(&stale, "a").await;
    assert!(matches!(result, Err(Error::NotFound(_))));
    assert_eq!(read_all(storage, &newer, "a").await, Some(b"new".to_vec()));
    let info = storage.get_storage(kind, &newer.id).await.unwrap().unwrap();
    assert_eq!(info.storage_bytes, 3);
}
