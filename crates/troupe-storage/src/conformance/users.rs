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
