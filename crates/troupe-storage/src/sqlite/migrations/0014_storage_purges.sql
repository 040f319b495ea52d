-- Deleted storages whose content is still being removed (`sqlite/purge.rs`). Deleting a storage
-- removes its catalog row and adds a row here in one small transaction; a background purger
-- then deletes the content (keyed by the catalog number `num`) in bounded chunks, each its
-- own write, and drops the row with the last one. Rows left by a crash are resumed at start-up.
-- A number listed here is never given to a new storage (`create_storage` allocates above both
-- tables), so no storage sees content of a deleted one.
CREATE TABLE storage_purges (
    num INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    deleted_at INTEGER NOT NULL
);
