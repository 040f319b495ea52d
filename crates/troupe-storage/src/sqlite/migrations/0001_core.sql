-- Users, tokens and the storage catalog, plus dataset items.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0
);

-- Tokens are kept as hex SHA-256 hashes, never in clear.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    description TEXT
);

-- One catalog for datasets (kind 1), key-value stores (2) and request queues (3).
CREATE TABLE storages (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    accessed_at INTEGER NOT NULL,
    act_id TEXT,
    act_run_id TEXT,
    general_access TEXT NOT NULL,
    secret TEXT NOT NULL,
    read_count INTEGER NOT NULL DEFAULT 0,
    write_count INTEGER NOT NULL DEFAULT 0,
    delete_count INTEGER NOT NULL DEFAULT 0,
    list_count INTEGER NOT NULL DEFAULT 0,
    storage_bytes INTEGER NOT NULL DEFAULT 0,
    item_count INTEGER NOT NULL DEFAULT 0,
    clean_item_count INTEGER NOT NULL DEFAULT 0,
    total_request_count INTEGER NOT NULL DEFAULT 0,
    handled_request_count INTEGER NOT NULL DEFAULT 0,
    had_multiple_clients INTEGER NOT NULL DEFAULT 0,
    last_client_key TEXT
);
CREATE UNIQUE INDEX storages_by_name ON storages (user_id, kind, name) WHERE name IS NOT NULL;
CREATE INDEX storages_by_owner ON storages (user_id, kind, created_at);

-- Dataset items: k = (storage num << 36) + index, so an offset is a primary-key seek.
CREATE TABLE dataset_items (
    k INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
