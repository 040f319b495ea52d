use super::SqliteStorage;
use crate::ActorStore;

impl ActorStore for SqliteStorage {}
