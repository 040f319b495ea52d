use troupe_model::list::ListParams;
use troupe_model::storage::{StorageKind, StorageListFilter, StorageOrigin, StorageUpdate};

use super::test_user;
use crate::{Error, Storage};

pub async fn run(storage: &dyn Storage) {
    let user = test_user(storage).await;
    for kind in [
        StorageKind::Dataset,
        StorageKind::KeyValueStore,
        StorageKind::RequestQueue,
    ] {
        let (unnamed, created) = storage
            .create_storage(kind, &user, None, StorageOrigin::default())
            .await
            .unwrap();
        assert!(created);
        assert_eq!(unnamed.name, None);
        assert_eq!(unnamed.kind, kind);
        assert_eq!(unnamed.username, "tester");
        let (named, created) = storage
            .create_storage(kind, &user, Some("my-store"), StorageOrigin::default())
            .await
            .unwrap();
        assert!(created);
        let (again, created) = storage
            .create_storage(kind, &user, Some("my-store"), StorageOrigin::default())
            .await
            .unwrap();
        assert!(!created, "get-or-create returns the existing storage");
        assert_eq!(again.id, named.id);

        // Same name, other kind: a different storage.
        assert_eq!(
            storage
                .get_storage(kind, &named.id)
                .await
                .unwrap()
                .unwrap()
                .id,
            named.id
        );
        let by_name = storage
            .get_storage_by_name(kind, &user.id, "my-store")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_name.id, named.id);

        let named_only = storage
            .list_storages(
                kind,
                &user.id,
                StorageListFilter::default(),
                ListParams::default(),
            )
            .await
            .unwrap();
        assert_eq!(named_only.total, 1);
        let all = storage
            .list_storages(
                kind,
                &user.id,
                StorageListFilter { unnamed: true },
                ListParams::default(),
            )
            .await
            .unwrap();
        assert_eq!(all.total, 2);
        assert_eq!(all.items[0].id, unnamed.id, "oldest first");
        let desc = storage
            .list_storages(
                kind,
                &user.id,
                StorageListFilter { unnamed: true },
                ListParams {
                    offset: 0,
                    limit: 1,
                    desc: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (desc.total, desc.count, desc.items[0].id.as_str()),
            (2, 1, named.id.as_str())
        );

        // Rename, clash, access.
        let renamed = storage
            .update_storage(
                kind,
                &unnamed.id,
                StorageUpdate {
                    name: Some(Some("other".into())),
                    general_access: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(renamed.name.as_deref(), Some("other"));
        let clash = storage
            .update_storage(
                kind,
                &unnamed.id,
                StorageUpdate {
                    name: Some(Some("my-store".into())),
                    general_access: None,
                },
            )
            .await;
        assert!(matches!(clash, Err(Error::Conflict(_))));
        let opened = storage
            .update_storage(
                kind,
                &named.id,
                StorageUpdate {
                    name: None,
                    general_access: Some("ANYONE_WITH_ID_CAN_READ".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(opened.general_access, "ANYONE_WITH_ID_CAN_READ");
        assert!(matches!(
            storage
                .update_storage(kind, "missing", StorageUpdate::default())
                .await,
            Err(Error::NotFound(_))
        ));

        assert!(storage.delete_storage(kind, &named.id).await.unwrap());
        assert!(!storage.delete_storage(kind, &named.id).await.unwrap());
        assert!(storage
            .get_storage(kind, &named.id)
            .await
            .unwrap()
            .is_none());
        assert!(storage.delete_storage(kind, &unnamed.id).await.unwrap());
    }
}

/// What the retention policy sees: unnamed storages idle since before the cutoff.
pub async fn run_retention(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let (old, _) = storage
        .create_storage(
            StorageKind::KeyValueStore,
            &user,
            None,
            StorageOrigin::default(),
        )
        .await
        .unwrap();
    let (named, _) = storage
        .create_storage(
            StorageKind::Dataset,
            &user,
            Some("keep"),
            StorageOrigin::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = troupe_model::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (fresh, _) = storage
        .create_storage(StorageKind::Dataset, &user, None, StorageOrigin::default())
        .await
        .unwrap();
    let expired = storage.expired_unnamed_storages(cutoff, 100).await.unwrap();
    assert_eq!(expired, vec![(StorageKind::KeyValueStore, old.id.clone())]);
    assert!(!expired
        .iter()
        .any(|(_, id)| id == &named.id || id == &fresh.id));
    assert!(storage
        .expired_unnamed_storages(cutoff, 0)
        .await
        .unwrap()
        .is_empty());
}
