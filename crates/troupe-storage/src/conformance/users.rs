use crate::Storage;

pub async fn run(storage: &dyn Storage) {
    let user = storage
        .ensure_default_user("alice", "secret-1")
        .await
        .unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.id.len(), 17);
    // A second call keeps the same user and adds the new token.
    let again = storage
        .ensure_default_user("ignored", "secret-2")
        .await
        .unwrap();
    assert_eq!(again, user);
    assert_eq!(
        storage.user_by_token("secret-1").await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        storage.user_by_token("secret-2").await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(storage.user_by_token("nope").await.unwrap(), None);
    assert_eq!(
        storage.find_user(&user.id).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(storage.find_user("alice").await.unwrap(), Some(user));
    assert_eq!(storage.find_user("bob").await.unwrap(), None);
}

/// Extra users, tokens and revocation.
pub async fn run_tokens(storage: &dyn Storage) {
    let admin = storage
        .ensure_default_user("admin", "admin-token")
        .await
        .unwrap();
    let bob = storage.create_user("bob").await.unwrap();
    assert!(matches!(
        storage.create_user("bob").await,
        Err(crate::Error::Conflict(_))
    ));
    let names: Vec<String> = storage
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, vec!["admin", "bob"]);

    let (info, secret) = storage.create_token(&bob.id, "ci", None).await.unwrap();
    assert_ne!(info.id, secret);
    assert_eq!(
        storage.user_by_token(&secret).await.unwrap(),
        Some(bob.clone())
    );
    let listed = storage.list_tokens(&bob.id).await.unwrap();
    assert_eq!(listed, vec![info.clone()]);
    assert!(storage.revoke_token(&info.id).await.unwrap());
    assert!(!storage.revoke_token(&info.id).await.unwrap());
    assert_eq!(storage.user_by_token(&secret).await.unwrap(), None);

    let (_, run_secret) = storage
        .create_token(&bob.id, "run", Some("RUN123"))
        .await
        .unwrap();
    assert_eq!(
        storage.user_by_token(&run_secret).await.unwrap(),
        Some(bob.clone())
    );
    // The owner of a run's token names the run; other tokens name none.
    assert_eq!(
        storage.token_owner(&run_secret).await.unwrap(),
        Some((bob.clone(), Some("RUN123".to_string())))
    );
    assert_eq!(
        storage.token_owner("admin-token").await.unwrap(),
        Some((admin.clone(), None))
    );
    assert_eq!(storage.token_owner("no-such-token").await.unwrap(), None);
    assert_eq!(storage.revoke_run_tokens("RUN123").await.unwrap(), 1);
    assert_eq!(storage.user_by_token(&run_secret).await.unwrap(), None);
    assert_eq!(storage.token_owner(&run_secret).await.unwrap(), None);
    assert!(matches!(
        storage.create_token("nobody", "x", None).await,
        Err(crate::Error::NotFound(_))
    ));

    assert!(matches!(
        storage.remove_user(&admin.id).await,
        Err(crate::Error::Invalid(_))
    ));
    let (_, bob_secret) = storage.create_token(&bob.id, "again", None).await.unwrap();
    assert!(storage.remove_user(&bob.id).await.unwrap());
    assert_eq!(storage.user_by_token(&bob_secret).await.unwrap(), None);
    assert!(!storage.remove_user(&bob.id).await.unwrap());
    assert_eq!(storage.list_tokens(&admin.id).await.unwrap().len(), 1);
}
