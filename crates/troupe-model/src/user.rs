//! Users of a troupe server.

/// A user as storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub created_at: i64,
}
