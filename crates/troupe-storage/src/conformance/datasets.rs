use troupe_model::storage::{NewItem, StorageKind, StorageOrigin};

use super::test_user;
use crate::{Error, Storage};

fn item(i: u64) -> NewItem {
    NewItem {
        json: format!("{{\"i\":{i}}}").into(),
        clean: i.is_multiple_of(2),
    }
}

pub async fn run(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let (ds, _) = storage
        .create_storage(StorageKind::Dataset, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let (other, _) = storage
        .create_storage(StorageKind::Dataset, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let after = storage
        .push_items(&ds.id, (0..10).map(item).collect())
        .await
        .unwrap();
    assert_eq!(after.item_count, 10);
    assert_eq!(after.clean_item_count, 5);
    storage
        .push_items(&other.id, vec![item(100)])
        .await
        .unwrap();
    let after = storage
        .push_items(&ds.id, (10..25).map(item).collect())
        .await
        .unwrap();
    assert_eq!(after.item_count, 25);

    let page = storage.read_items(&ds.id, 0, 3, false).await.unwrap();
    assert_eq!(page.total, 25);

    // Reads are recorded, each one (eventually: backends may buffer them): accessedAt moves
    // forward (never back), readCount grows by one a read.
    let before = storage
        .get_storage(StorageKind::Dataset, &ds.id)
        .await
        .unwrap()
        .unwrap();
    let later = before.accessed_at + 5_000;
    storage.note_dataset_read(before.num, later);
    storage.note_dataset_read(before.num, later - 10_000);
    storage.note_dataset_read(before.num, later - 20_000);
    storage.note_dataset_read(-12345, later);
    // (Flushed in the background: wait as long as a slow, loaded machine may need.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let read = loop {
        let read = storage
            .get_storage(StorageKind::Dataset, &ds.id)
            .await
            .unwrap()
            .unwrap();
        if read.read_count == before.read_count + 3 || std::time::Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(read.read_count, before.read_count + 3);
    assert_eq!(read.accessed_at, later);
    assert_eq!(read.modified_at, before.modified_at);
    assert_eq!(read.item_count, 25);
    assert_eq!(
        page.items,
        vec![&b"{\"i\":0}"[..], b"{\"i\":1}", b"{\"i\":2}"]
    );
    let page = storage.read_items(&ds.id, 23, 10, false).await.unwrap();
    assert_eq!(page.items, vec![&b"{\"i\":23}"[..], b"{\"i\":24}"]);
    let page = storage.read_items(&ds.id, 1, 2, true).await.unwrap();
    assert_eq!(page.items, vec![&b"{\"i\":23}"[..], b"{\"i\":22}"]);
    let page = storage.read_items(&ds.id, 25, 10, false).await.unwrap();
    assert!(page.items.is_empty());
    let page = storage.read_items(&ds.id, 0, u64::MAX, true).await.unwrap();
    assert_eq!(page.items.len(), 25);
    assert_eq!(page.items[24], &b"{\"i\":0}"[..]);
    // Other datasets' items never leak in.
    let page = storage.read_items(&other.id, 0, 100, false).await.unwrap();
    assert_eq!(page.items, vec![&b"{\"i\":100}"[..]]);

    // The blocking visitor sees the same items without a copy, and can stop early.
    let visit = |offset: u64, limit: u64, desc: bool, stop_after: usize| {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let (total, visited) = storage
            .visit_items(&ds.id, offset, limit, desc, &mut |raw| {
                seen.push(raw.to_vec());
                seen.len() < stop_after
            })
            .unwrap();
        assert_eq!(visited, seen.len() as u64);
        (total, seen)
    };
    let as_items = |ids: &[u64]| -> Vec<Vec<u8>> {
        ids.iter()
            .map(|i| format!("{{\"i\":{i}}}").into_bytes())
            .collect()
    };
    assert_eq!(visit(0, 3, false, usize::MAX), (25, as_items(&[0, 1, 2])));
    assert_eq!(
        visit(22, 100, false, usize::MAX),
        (25, as_items(&[22, 23, 24]))
    );
    assert_eq!(visit(1, 3, true, usize::MAX), (25, as_items(&[23, 22, 21])));
    assert_eq!(visit(5, 100, false, 2), (25, as_items(&[5, 6])));
    assert_eq!(visit(0, 100, true, 1), (25, as_items(&[24])));
    assert_eq!(visit(25, 10, false, usize::MAX), (25, Vec::new()));
    assert_eq!(visit(3, 0, false, usize::MAX), (25, Vec::new()));
    assert!(matches!(
        storage.visit_items("missing", 0, 1, false, &mut |_| true),
        Err(Error::NotFound(_))
    ));

    assert!(matches!(
        storage.push_items("missing", vec![item(1)]).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        storage.read_items("missing", 0, 1, false).await,
        Err(Error::NotFound(_))
    ));

    // Deleting a dataset removes its items; a new dataset starts empty.
    storage
        .delete_storage(StorageKind::Dataset, &ds.id)
        .await
        .unwrap();
    let (fresh, _) = storage
        .create_storage(StorageKind::Dataset, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    assert_eq!(
        storage
            .read_items(&fresh.id, 0, 100, false)
            .await
            .unwrap()
            .items
            .len(),
        0
    );

    // Pushes of every size keep the items in order, each once: 1-200 items in a row, so the
    // sizes a backend may cut a push into (and their remainders) all occur.
    let mut expected = Vec::new();
    let mut next = 0u64;
    for size in [1u64, 7, 8, 9, 63, 64, 65, 137, 200] {
        let after = storage
            .push_items(&fresh.id, (next..next + size).map(item).collect())
            .await
            .unwrap();
        expected.extend((next..next + size).map(|i| format!("{{\"i\":{i}}}")));
        next += size;
        assert_eq!(after.item_count, next);
    }
    let page = storage
        .read_items(&fresh.id, 0, 10_000, false)
        .await
        .unwrap();
    assert_eq!(page.total, next);
    let read: Vec<String> = page
        .items
        .iter()
        .map(|raw| String::from_utf8(raw.to_vec()).unwrap())
        .collect();
    assert_eq!(read, expected);
    let info = storage
        .get_storage(StorageKind::Dataset, &fresh.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.item_count, next);
    assert_eq!(
        info.storage_bytes,
        expected.iter().map(|s| s.len() as u64).sum::<u64>()
    );
}

/// Concurrent pushes (batched into shared commits by some backends) get distinct, contiguous
/// index ranges, the counters add up, and pushes racing the dataset's deletion land before it
/// or fail.
pub async fn run_concurrent(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let (ds, _) = storage
        .create_storage(StorageKind::Dataset, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let pushes = (1..=20u64).map(|n| {
        let id = &ds.id;
        async move {
            let items: Vec<NewItem> = (0..n).map(|i| item(n * 100 + i)).collect();
            (n, storage.push_items(id, items).await.unwrap())
        }
    });
    let mut ranges: Vec<(u64, u64)> = futures::future::join_all(pushes)
        .await
        .into_iter()
        .map(|(n, pushed)| (pushed.item_count - n, n))
        .collect();
    ranges.sort();
    let mut next = 0;
    let page = storage.read_items(&ds.id, 0, 1000, false).await.unwrap();
    for (first, n) in ranges {
        assert_eq!(first, next, "pushes overlap or leave gaps");
        for i in 0..n {
            let raw = &page.items[(first + i) as usize];
            assert_eq!(&raw[..], format!("{{\"i\":{}}}", n * 100 + i).as_bytes());
        }
        next += n;
    }
    assert_eq!(next, 210);
    let info = storage
        .get_storage(StorageKind::Dataset, &ds.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((info.item_count, info.write_count), (210, 210));
    let clean = (1..=20u64)
        .flat_map(|n| (0..n).map(move |i| n * 100 + i))
        .filter(|i| i.is_multiple_of(2))
        .count() as u64;
    assert_eq!(info.clean_item_count, clean);

    let (doomed, _) = storage
        .create_storage(StorageKind::Dataset, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let racing = (0..16u64).map(|n| {
        let id = &doomed.id;
        async move {
            if n == 8 {
                assert!(storage
                    .delete_storage(StorageKind::Dataset, id)
                    .await
                    .unwrap());
                return;
            }
            match storage.push_items(id, vec![item(n)]).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(err) => panic!("push {n} racing the deletion: {err:?}"),
            }
        }
    });
    futures::future::join_all(racing).await;
    assert!(storage
        .get_storage(StorageKind::Dataset, &doomed.id)
        .await
        .unwrap()
        .is_none());
}
