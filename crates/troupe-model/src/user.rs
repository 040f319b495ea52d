//! Users of a troupe server.

/// A user as storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub created_at: i64,
}

/// An API token as listed (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub description: Option<String>,
    /// Set for the token a run gets; it stops working when the run ends.
    pub run_id: Option<String>,
}
