use serde_json::json;
use troupe_model::queue::{parse_request, request_id, QueueRequest};
use troupe_model::storage::{StorageInfo, StorageKind};

use crate::queues::{DeleteTarget, LockOutcome, RequestFilter};
use crate::{Error, Storage};

const T0: i64 = 1_800_000_000_000;
const LOCK: i64 = 60_000;

fn req(key: &str) -> QueueRequest {
    parse_request(
        json!({"url": format!("https://example.com/{key}"), "uniqueKey": key, "extra": {"k": key}}),
        None,
    )
    .unwrap()
}

fn handled(key: &str) -> QueueRequest {
    parse_request(
        json!({"url": format!("https://example.com/{key}"), "uniqueKey": key, "handledAt": "2026-01-01T00:00:00.000Z"}),
        None,
    )
    .unwrap()
}

fn ck(key: &str) -> Option<String> {
    Some(key.to_string())
}

async fn new_queue(storage: &dyn Storage) -> StorageInfo {
    super::new_storage(storage, StorageKind::RequestQueue).await
}

async fn info(storage: &dyn Storage, id: &str) -> StorageInfo {
    storage
        .get_storage(StorageKind::RequestQueue, id)
        .await
        .unwrap()
        .unwrap()
}

async fn counts(storage: &dyn Storage, id: &str) -> (u64, u64) {
    let i = info(storage, id).await;
    (i.total_request_count, i.handled_request_count)
}

async fn head_keys(storage: &dyn Storage, id: &str, now: i64) -> Vec<String> {
    storage
        .list_head(id, 100, ck("a"), now)
        .await
        .unwrap()
        .items()
        .into_iter()
        .map(|i| i.unique_key)
        .collect()
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub async fn run(storage: &dyn Storage) {
    ordering_dedupe_and_counts(storage).await;
    update_upsert_and_delete(storage).await;
    locks(storage).await;
    listing(storage).await;
    clients_and_modified_at(storage).await;
    missing_queue(storage).await;
    // Request updates as the API makes them: the queue's access resolved just before (a
    // backend may keep it, see `get_storage_access`), and without.
    for resolved in [false, true] {
        updates_of_deleted_and_recreated_queues(storage, resolved).await;
        update_counts_clients(storage, resolved).await;
    }
    head_follows_writes_and_time(storage).await;
    head_is_never_older_than_an_acknowledged_write(storage).await;
}

/// Repeated heads (which a backend may answer from a cache) follow every write and the clock.
async fn head_follows_writes_and_time(storage: &dyn Storage) {
    let q = new_queue(storage).await;
    let batch: Vec<_> = (0..5).map(|i| req(&format!("h{i}"))).collect();
    storage
        .add_requests(&q.id, batch, false, ck("a"), T0)
        .await
        .unwrap();
    let all = keys(&["h0", "h1", "h2", "h3", "h4"]);
    assert_eq!(head_keys(storage, &q.id, T0).await, all);
    assert_eq!(head_keys(storage, &q.id, T0).await, all);
    // A smaller limit, then a larger one than any head read so far.
    let two = storage.list_head(&q.id, 2, ck("a"), T0).await.unwrap();
    assert_eq!(two.count, 2);
    assert_eq!(two.items().len(), 2);
    let ten = storage.list_head(&q.id, 10, ck("a"), T0).await.unwrap();
    assert_eq!(ten.items().len(), 5);
    let one = storage.list_head(&q.id, 1, ck("a"), T0).await.unwrap();
    assert_eq!(one.items()[0].unique_key, "h0");
    let none = storage.list_head(&q.id, 0, ck("a"), T0).await.unwrap();
    assert!(none.items().is_empty());
    // Locked requests go last; when their locks lapse (no write in between) they are back.
    storage
        .lock_head(&q.id, 2, LOCK, ck("a"), T0)
        .await
        .unwrap();
    let locked_last = keys(&["h2", "h3", "h4", "h0", "h1"]);
    assert_eq!(head_keys(storage, &q.id, T0 + 1).await, locked_last);
    assert_eq!(head_keys(storage, &q.id, T0 + 2).await, locked_last);
    assert_eq!(head_keys(storage, &q.id, T0 + LOCK - 1).await, locked_last);
    assert_eq!(head_keys(storage, &q.id, T0 + LOCK).await, all);
    assert_eq!(head_keys(storage, &q.id, T0 + LOCK + 1).await, all);
    // A clock that moved back sees the locks again.
    assert_eq!(head_keys(storage, &q.id, T0 + 3).await, locked_last);
    // Each kind of write shows at once.
    let later = T0 + 2 * LOCK;
    storage
        .update_request(&q.id, handled("h0"), false, ck("a"), later)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["h1", "h2", "h3", "h4"])
    );
    storage
        .add_requests(&q.id, vec![req("h5")], true, ck("a"), later)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["h5", "h1", "h2", "h3", "h4"])
    );
    storage
        .delete_requests(
            &q.id,
            vec![DeleteTarget {
                id: request_id("h2"),
                unique_key: None,
            }],
            ck("a"),
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["h5", "h1", "h3", "h4"])
    );
    storage
        .lock_head(&q.id, 1, LOCK, ck("a"), later)
        .await
        .unwrap();
    storage
        .delete_lock(&q.id, &request_id("h5"), false, ck("a"), later)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["h1", "h3", "h4", "h5"])
    );
    storage
        .lock_head(&q.id, 1, LOCK, ck("a"), later)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["h3", "h4", "h5", "h1"])
    );
    storage
        .unlock_requests(&q.id, ck("a"), later)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["h1", "h3", "h4", "h5"])
    );
    // The client count moves with reads too.
    let head = storage.list_head(&q.id, 10, ck("b"), later).await.unwrap();
    assert!(head.had_multiple_clients);
    let head = storage.list_head(&q.id, 10, ck("a"), later).await.unwrap();
    assert!(head.had_multiple_clients);
}

/// Heads read while writes commit never show a state older than a write that was already
/// acknowledged (readers race the writes on purpose).
async fn head_is_never_older_than_an_acknowledged_write(storage: &dyn Storage) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let q = new_queue(storage).await;
    let done = AtomicBool::new(false);
    let reader = |n: usize| {
        let (done, id) = (&done, q.id.clone());
        async move {
            let mut calls = 0;
            while !done.load(Ordering::SeqCst) {
                storage
                    .list_head(&id, 1000, ck("a"), T0 + n as i64)
                    .await
                    .unwrap();
                calls += 1;
                // A cached head answers without awaiting anything: let the writer run.
                tokio::task::yield_now().await;
            }
            calls
        }
    };
    let writer = async {
        for i in 0..60 {
            let key = format!("w{i}");
            storage
                .add_requests(&q.id, vec![req(&key)], false, ck("a"), T0)
                .await
                .unwrap();
            let head = storage.list_head(&q.id, 1000, ck("a"), T0).await.unwrap();
            assert_eq!(head.count, i + 1, "head after write {i}");
            assert!(
                head.items().iter().any(|item| item.unique_key == key),
                "{key} in the head"
            );
            if i % 3 == 0 {
                storage
                    .lock_head(&q.id, 1, LOCK, ck("a"), T0)
                    .await
                    .unwrap();
                let head = storage.list_head(&q.id, 1000, ck("a"), T0).await.unwrap();
                assert_eq!(
                    head.items().last().unwrap().unique_key,
                    format!("w{}", i / 3),
                    "locked request last after lock {i}"
                );
            }
        }
        done.store(true, Ordering::SeqCst);
    };
    let (_, a, b, c) = futures::join!(writer, reader(0), reader(1), reader(2));
    assert!(a + b + c > 0);
}

async fn ordering_dedupe_and_counts(storage: &dyn Storage) {
    let q = new_queue(storage).await;
    let out = storage
        .add_requests(
            &q.id,
            vec![req("a"), req("b"), req("a")],
            false,
            ck("a"),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(out[0].request_id, request_id("a"));
    assert!(!out[0].was_already_present && !out[1].was_already_present);
    assert!(out[2].was_already_present && !out[2].was_already_handled);
    storage
        .add_requests(&q.id, vec![req("c")], false, ck("a"), T0)
        .await
        .unwrap();
    // Forefront: newest first, before everything else.
    storage
        .add_requests(&q.id, vec![req("f1"), req("f2")], true, ck("a"), T0)
        .await
        .unwrap();
    storage
        .add_requests(&q.id, vec![req("f3")], true, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, T0).await,
        keys(&["f3", "f2", "f1", "a", "b", "c"])
    );
    // Re-adding an existing request changes nothing, not even with forefront.
    let again = storage
        .add_requests(&q.id, vec![req("c")], true, ck("a"), T0)
        .await
        .unwrap();
    assert!(again[0].was_already_present);
    assert_eq!(
        head_keys(storage, &q.id, T0).await,
        keys(&["f3", "f2", "f1", "a", "b", "c"])
    );
    assert_eq!(counts(storage, &q.id).await, (6, 0));
    // Added as handled: counts as handled at once, never in the head, reported as new.
    let out = storage
        .add_requests(&q.id, vec![handled("h")], false, ck("a"), T0)
        .await
        .unwrap();
    assert!(!out[0].was_already_present && !out[0].was_already_handled);
    assert_eq!(counts(storage, &q.id).await, (7, 1));
    assert!(!head_keys(storage, &q.id, T0)
        .await
        .contains(&"h".to_string()));
    let again = storage
        .add_requests(&q.id, vec![req("h")], false, ck("a"), T0)
        .await
        .unwrap();
    assert!(again[0].was_already_present && again[0].was_already_handled);
    // Unknown fields round-trip.
    let stored = storage
        .get_request(&q.id, &request_id("a"))
        .await
        .unwrap()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["extra"]["k"], "a");
    assert_eq!(stored["id"], request_id("a"));
    assert!(storage
        .get_request(&q.id, "nosuchrequest00")
        .await
        .unwrap()
        .is_none());
}

async fn update_upsert_and_delete(storage: &dyn Storage) {
    let q = new_queue(storage).await;
    storage
        .add_requests(
            &q.id,
            vec![req("a"), req("b"), req("c")],
            false,
            ck("a"),
            T0,
        )
        .await
        .unwrap();
    // Handle "a".
    let out = storage
        .update_request(&q.id, handled("a"), false, ck("a"), T0)
        .await
        .unwrap();
    assert!(out.was_already_present && !out.was_already_handled);
    assert_eq!(counts(storage, &q.id).await, (3, 1));
    assert_eq!(head_keys(storage, &q.id, T0).await, keys(&["b", "c"]));
    // Handling again: state before is handled, counts unchanged.
    let out = storage
        .update_request(&q.id, handled("a"), false, ck("a"), T0)
        .await
        .unwrap();
    assert!(out.was_already_handled);
    assert_eq!(counts(storage, &q.id).await, (3, 1));
    // Reclaim "b" to the back, then "c" to the front.
    storage
        .update_request(&q.id, req("b"), false, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(head_keys(storage, &q.id, T0).await, keys(&["c", "b"]));
    storage
        .update_request(&q.id, req("b"), true, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(head_keys(storage, &q.id, T0).await, keys(&["b", "c"]));
    // Reclaiming a handled request makes it pending again.
    let out = storage
        .update_request(&q.id, req("a"), false, ck("a"), T0)
        .await
        .unwrap();
    assert!(out.was_already_handled);
    assert_eq!(counts(storage, &q.id).await, (3, 0));
    assert_eq!(head_keys(storage, &q.id, T0).await, keys(&["b", "c", "a"]));
    // Upsert of an unknown request, handled or not.
    let out = storage
        .update_request(&q.id, handled("u1"), false, ck("a"), T0)
        .await
        .unwrap();
    assert!(!out.was_already_present && !out.was_already_handled);
    storage
        .update_request(&q.id, req("u2"), true, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(counts(storage, &q.id).await, (5, 1));
    assert_eq!(
        head_keys(storage, &q.id, T0).await,
        keys(&["u2", "b", "c", "a"])
    );
    // Deletes: handled and pending, unknown ids report false.
    let deleted = storage
        .delete_requests(
            &q.id,
            vec![
                DeleteTarget {
                    id: request_id("u1"),
                    unique_key: None,
                },
                DeleteTarget {
                    id: request_id("c"),
                    unique_key: None,
                },
                DeleteTarget {
                    id: request_id("zzz"),
                    unique_key: None,
                },
            ],
            ck("a"),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(deleted, vec![true, true, false]);
    assert_eq!(counts(storage, &q.id).await, (3, 0));
    assert_eq!(head_keys(storage, &q.id, T0).await, keys(&["u2", "b", "a"]));
    // Deleting the queue removes its requests.
    storage
        .delete_storage(StorageKind::RequestQueue, &q.id)
        .await
        .unwrap();
    assert!(matches!(
        storage.get_request(&q.id, &request_id("a")).await,
        Err(Error::NotFound(_))
    ));
}

async fn locks(storage: &dyn Storage) {
    let q = new_queue(storage).await;
    let batch: Vec<_> = (0..10).map(|i| req(&format!("r{i}"))).collect();
    storage
        .add_requests(&q.id, batch, false, ck("a"), T0)
        .await
        .unwrap();
    // Two clients never get the same request.
    let a = storage
        .lock_head(&q.id, 4, LOCK, ck("a"), T0)
        .await
        .unwrap();
    let b = storage
        .lock_head(&q.id, 4, LOCK, ck("b"), T0)
        .await
        .unwrap();
    let a_keys: Vec<_> = a.items.iter().map(|i| i.unique_key.clone()).collect();
    let b_keys: Vec<_> = b.items.iter().map(|i| i.unique_key.clone()).collect();
    assert_eq!(a_keys, keys(&["r0", "r1", "r2", "r3"]));
    assert_eq!(b_keys, keys(&["r4", "r5", "r6", "r7"]));
    assert!(a.queue_has_locked_requests && b.queue_has_locked_requests);
    assert_eq!(a.items[0].lock_expires_at, Some(T0 + LOCK));
    assert!(b.had_multiple_clients);
    // The non-locking head lists available ones first, then locked ones.
    assert_eq!(
        head_keys(storage, &q.id, T0).await,
        keys(&["r8", "r9", "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"])
    );
    // Prolong: holder only; others get LockedByOther.
    let r0 = request_id("r0");
    assert_eq!(
        storage
            .prolong_lock(&q.id, &r0, LOCK, false, ck("b"), T0 + 1)
            .await
            .unwrap(),
        LockOutcome::LockedByOther
    );
    assert_eq!(
        storage
            .prolong_lock(&q.id, &r0, 2 * LOCK, false, ck("a"), T0 + 1)
            .await
            .unwrap(),
        LockOutcome::Ok(Some(T0 + 1 + 2 * LOCK))
    );
    assert_eq!(
        storage
            .prolong_lock(&q.id, "nosuchrequest00", LOCK, false, ck("a"), T0)
            .await
            .unwrap(),
        LockOutcome::NotFound
    );
    // Delete lock: holder only; forefront puts it first.
    let r1 = request_id("r1");
    assert_eq!(
        storage
            .delete_lock(&q.id, &r1, true, ck("b"), T0)
            .await
            .unwrap(),
        LockOutcome::LockedByOther
    );
    assert_eq!(
        storage
            .delete_lock(&q.id, &r1, true, ck("a"), T0)
            .await
            .unwrap(),
        LockOutcome::Ok(None)
    );
    assert_eq!(
        storage
            .delete_lock(&q.id, &r1, true, ck("a"), T0)
            .await
            .unwrap(),
        LockOutcome::NotLocked
    );
    assert_eq!(
        head_keys(storage, &q.id, T0).await[..3],
        keys(&["r1", "r8", "r9"])
    );
    // Handled requests leave the head and cannot be prolonged.
    storage
        .update_request(&q.id, handled("r2"), false, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(
        storage
            .prolong_lock(&q.id, &request_id("r2"), LOCK, false, ck("a"), T0)
            .await
            .unwrap(),
        LockOutcome::Handled
    );
    // Nothing more available for a third client, but locks are held.
    let c = storage
        .lock_head(&q.id, 25, LOCK, ck("c"), T0)
        .await
        .unwrap();
    assert_eq!(
        c.items
            .iter()
            .map(|i| i.unique_key.clone())
            .collect::<Vec<_>>(),
        keys(&["r1", "r8", "r9"])
    );
    let c2 = storage
        .lock_head(&q.id, 25, LOCK, ck("c"), T0)
        .await
        .unwrap();
    assert!(c2.items.is_empty() && c2.queue_has_locked_requests);
    // Unlock all of client b: four requests become available again at their places.
    assert_eq!(
        storage.unlock_requests(&q.id, ck("b"), T0).await.unwrap(),
        4
    );
    assert_eq!(
        storage.unlock_requests(&q.id, ck("b"), T0).await.unwrap(),
        0
    );
    let c3 = storage
        .lock_head(&q.id, 2, LOCK, ck("c"), T0)
        .await
        .unwrap();
    assert_eq!(
        c3.items
            .iter()
            .map(|i| i.unique_key.clone())
            .collect::<Vec<_>>(),
        keys(&["r4", "r5"])
    );
    // Expiry: after the locks lapse, the requests are available again; r0 was prolonged
    // (forefront=false) so it goes to the back, the others stay where they were.
    let later = T0 + 3 * LOCK;
    assert_eq!(
        head_keys(storage, &q.id, later).await,
        keys(&["r1", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r0"])
    );
    let d = storage
        .lock_head(&q.id, 25, LOCK, ck("d"), later)
        .await
        .unwrap();
    assert_eq!(
        d.items
            .iter()
            .map(|i| i.unique_key.clone())
            .collect::<Vec<_>>(),
        keys(&["r1", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r0"])
    );
    // Handle everything d holds: the queue is done and reports no locks.
    for item in &d.items {
        storage
            .update_request(&q.id, handled(&item.unique_key), false, ck("d"), later)
            .await
            .unwrap();
    }
    let done = storage
        .lock_head(&q.id, 25, LOCK, ck("d"), later)
        .await
        .unwrap();
    assert!(done.items.is_empty());
    assert!(!done.queue_has_locked_requests);
    assert_eq!(counts(storage, &q.id).await, (10, 10));
    // A reclaim via PUT clears the lock.
    storage
        .update_request(&q.id, req("r5"), true, ck("d"), later)
        .await
        .unwrap();
    let e = storage
        .lock_head(&q.id, 25, LOCK, ck("e"), later)
        .await
        .unwrap();
    assert_eq!(e.items.len(), 1);
    storage
        .update_request(&q.id, req("r5"), false, ck("e"), later)
        .await
        .unwrap();
    let f = storage
        .lock_head(&q.id, 25, LOCK, ck("f"), later)
        .await
        .unwrap();
    assert_eq!(f.items.len(), 1, "reclaim dropped the lock");
    // A forefront prolong sends a lapsed request to the front.
    storage
        .add_requests(&q.id, vec![req("z1"), req("z2")], false, ck("f"), later)
        .await
        .unwrap();
    storage
        .prolong_lock(&q.id, &request_id("r5"), LOCK, true, ck("f"), later)
        .await
        .unwrap();
    assert_eq!(
        head_keys(storage, &q.id, later + 2 * LOCK).await,
        keys(&["r5", "z1", "z2"])
    );
    let g = storage
        .lock_head(&q.id, 25, LOCK, ck("g"), later + 2 * LOCK)
        .await
        .unwrap();
    assert_eq!(
        g.items
            .iter()
            .map(|i| i.unique_key.clone())
            .collect::<Vec<_>>(),
        keys(&["r5", "z1", "z2"])
    );
}

async fn listing(storage: &dyn Storage) {
    let q = new_queue(storage).await;
    let batch: Vec<_> = (0..25).map(|i| req(&format!("l{i}"))).collect();
    storage
        .add_requests(&q.id, batch, false, ck("a"), T0)
        .await
        .unwrap();
    storage
        .update_request(&q.id, handled("l0"), false, ck("a"), T0)
        .await
        .unwrap();
    storage
        .lock_head(&q.id, 3, LOCK, ck("a"), T0)
        .await
        .unwrap();
    let mut after = None;
    let mut ids = Vec::new();
    loop {
        let page = storage
            .list_requests(&q.id, after.clone(), 7, RequestFilter::All, ck("a"), T0)
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        for item in &page.items {
            let v: serde_json::Value = serde_json::from_str(item).unwrap();
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<_> = (0..25).map(|i| request_id(&format!("l{i}"))).collect();
    expected.sort();
    assert_eq!(ids, expected);
    let pending = storage
        .list_requests(&q.id, None, 100, RequestFilter::Pending, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 24);
    assert!(pending.next_after.is_none());
    let locked = storage
        .list_requests(&q.id, None, 100, RequestFilter::Locked, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(locked.items.len(), 3);
    let expired = storage
        .list_requests(&q.id, None, 100, RequestFilter::Locked, ck("a"), T0 + LOCK)
        .await
        .unwrap();
    assert!(expired.items.is_empty());
    let exact = storage
        .list_requests(&q.id, None, 25, RequestFilter::All, ck("a"), T0)
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 25);
    assert!(exact.next_after.is_none());
}

async fn clients_and_modified_at(storage: &dyn Storage) {
    // One client: never multiple. Reads and lock operations do not move modifiedAt.
    let q = new_queue(storage).await;
    storage
        .add_requests(&q.id, vec![req("a"), req("b")], false, ck("one"), T0)
        .await
        .unwrap();
    let after_add = info(storage, &q.id).await;
    assert_eq!(after_add.modified_at, T0);
    let head = storage
        .list_head(&q.id, 10, ck("one"), T0 + 5)
        .await
        .unwrap();
    assert_eq!(head.queue_modified_at, T0);
    storage
        .lock_head(&q.id, 1, LOCK, ck("one"), T0 + 10)
        .await
        .unwrap();
    storage
        .prolong_lock(&q.id, &request_id("a"), LOCK, false, ck("one"), T0 + 11)
        .await
        .unwrap();
    storage
        .delete_lock(&q.id, &request_id("a"), false, ck("one"), T0 + 12)
        .await
        .unwrap();
    storage
        .unlock_requests(&q.id, ck("one"), T0 + 13)
        .await
        .unwrap();
    storage
        .list_requests(&q.id, None, 10, RequestFilter::All, ck("one"), T0 + 14)
        .await
        .unwrap();
    storage
        .add_requests(&q.id, vec![req("a")], false, ck("one"), T0 + 15)
        .await
        .unwrap();
    storage
        .delete_requests(
            &q.id,
            vec![DeleteTarget {
                id: request_id("nope"),
                unique_key: None,
            }],
            ck("one"),
            T0 + 16,
        )
        .await
        .unwrap();
    let i = info(storage, &q.id).await;
    assert_eq!(i.modified_at, T0, "no write happened");
    assert!(!i.had_multiple_clients);
    storage
        .update_request(&q.id, handled("a"), false, ck("one"), T0 + 20)
        .await
        .unwrap();
    assert_eq!(info(storage, &q.id).await.modified_at, T0 + 20);
    storage
        .delete_requests(
            &q.id,
            vec![DeleteTarget {
                id: request_id("b"),
                unique_key: None,
            }],
            ck("one"),
            T0 + 30,
        )
        .await
        .unwrap();
    assert_eq!(info(storage, &q.id).await.modified_at, T0 + 30);
    // A second key makes it multiple, through a read too.
    let head = storage
        .list_head(&q.id, 10, ck("two"), T0 + 40)
        .await
        .unwrap();
    assert!(head.had_multiple_clients);
    assert!(info(storage, &q.id).await.had_multiple_clients);

    // A missing clientKey counts as a new client each time.
    let q = new_queue(storage).await;
    let head = storage.list_head(&q.id, 10, None, T0).await.unwrap();
    assert!(!head.had_multiple_clients);
    let head = storage.list_head(&q.id, 10, None, T0).await.unwrap();
    assert!(head.had_multiple_clients);
    let q = new_queue(storage).await;
    storage.list_head(&q.id, 10, ck("x"), T0).await.unwrap();
    assert!(
        storage
            .list_head(&q.id, 10, None, T0)
            .await
            .unwrap()
            .had_multiple_clients
    );
}

async fn missing_queue(storage: &dyn Storage) {
    assert!(matches!(
        storage
            .add_requests("missing", vec![req("a")], false, None, T0)
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        storage.lock_head("missing", 1, LOCK, None, T0).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        storage.list_head("missing", 1, None, T0).await,
        Err(Error::NotFound(_))
    ));
}

/// Resolves the queue's access the way a write handler does before calling storage.
async fn resolve(storage: &dyn Storage, id: &str, resolved: bool) {
    if resolved {
        let access = storage
            .get_storage_access(StorageKind::RequestQueue, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(access.id, id);
    }
}

/// A request update names its queue by id: once the queue is deleted it is not found, even when
/// a new queue took the old one's place and holds a request with the same id.
async fn updates_of_deleted_and_recreated_queues(storage: &dyn Storage, resolved: bool) {
    let old = new_queue(storage).await;
    resolve(storage, &old.id, resolved).await;
    storage
        .add_requests(&old.id, vec![req("a"), req("b")], false, ck("a"), T0)
        .await
        .unwrap();
    storage
        .update_request(&old.id, handled("b"), false, ck("a"), T0)
        .await
        .unwrap();
    storage
        .delete_storage(StorageKind::RequestQueue, &old.id)
        .await
        .unwrap();
    let new = new_queue(storage).await;
    storage
        .add_requests(&new.id, vec![req("a")], false, ck("a"), T0)
        .await
        .unwrap();
    resolve(storage, &new.id, resolved).await;
    for request in [handled("a"), req("a")] {
        assert!(matches!(
            storage
                .update_request(&old.id, request, false, ck("a"), T0 + 1)
                .await,
            Err(Error::NotFound(_))
        ));
    }
    let i = info(storage, &new.id).await;
    assert_eq!((i.total_request_count, i.handled_request_count), (1, 0));
    assert_eq!(i.modified_at, T0);
    assert_eq!(head_keys(storage, &new.id, T0 + 2).await, keys(&["a"]));
    // The new queue's own updates work.
    storage
        .update_request(&new.id, handled("a"), false, ck("a"), T0 + 3)
        .await
        .unwrap();
    assert_eq!(counts(storage, &new.id).await, (1, 1));
}

/// Repeated updates of existing requests keep every counter and the client tracking exact.
async fn update_counts_clients(storage: &dyn Storage, resolved: bool) {
    let q = new_queue(storage).await;
    resolve(storage, &q.id, resolved).await;
    storage
        .add_requests(
            &q.id,
            vec![req("a"), req("b"), req("c")],
            false,
            ck("one"),
            T0,
        )
        .await
        .unwrap();
    let bytes = info(storage, &q.id).await.storage_bytes;
    let writes = info(storage, &q.id).await.write_count;
    for (n, key) in ["a", "b", "a"].iter().enumerate() {
        storage
            .update_request(&q.id, handled(key), false, ck("one"), T0 + 1 + n as i64)
            .await
            .unwrap();
    }
    let i = info(storage, &q.id).await;
    assert_eq!((i.total_request_count, i.handled_request_count), (3, 2));
    assert_eq!(i.write_count, writes + 3);
    assert_eq!(i.modified_at, T0 + 3);
    assert!(!i.had_multiple_clients);
    let stored = |key: &str| handled(key).json.len() as i64 - req(key).json.len() as i64;
    assert_eq!(
        i.storage_bytes as i64,
        bytes as i64 + stored("a") + stored("b")
    );
    // Back into the queue at the front, by another client.
    storage
        .update_request(&q.id, req("b"), true, ck("two"), T0 + 10)
        .await
        .unwrap();
    let i = info(storage, &q.id).await;
    assert_eq!((i.total_request_count, i.handled_request_count), (3, 1));
    assert!(i.had_multiple_clients);
    assert_eq!(head_keys(storage, &q.id, T0 + 11).await, keys(&["b", "c"]));
    // No clientKey counts as a new client on a queue that had one client so far.
    let q = new_queue(storage).await;
    resolve(storage, &q.id, resolved).await;
    storage
        .add_requests(&q.id, vec![req("a")], false, ck("one"), T0)
        .await
        .unwrap();
    storage
        .update_request(&q.id, handled("a"), false, ck("one"), T0 + 1)
        .await
        .unwrap();
    assert!(!info(storage, &q.id).await.had_multiple_clients);
    storage
        .update_request(&q.id, handled("a"), false, None, T0 + 2)
        .await
        .unwrap();
    assert!(info(storage, &q.id).await.had_multiple_clients);
}
