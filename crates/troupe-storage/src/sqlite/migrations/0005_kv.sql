-- Key-value store records. Small bodies are kept inline in `data`; large ones are files under
-- blobs/kv/, named by `blob` (a random internal id, never the key). `data` is the last column so
-- reading the metadata never touches its overflow pages.
CREATE TABLE kv_records (
    id INTEGER PRIMARY KEY,
    store_num INTEGER NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT,
    modified_at INTEGER NOT NULL,
    blob TEXT,
    data BLOB
);
-- Lookups and listings: (store, key) in BINARY collation = UTF-8 byte order.
CREATE UNIQUE INDEX kv_records_by_key ON kv_records (store_num, key);
-- Blob files still referenced (orphan sweeping).
CREATE INDEX kv_records_by_blob ON kv_records (blob) WHERE blob IS NOT NULL;
