-- Request queue contents. Position: `ord` (forefront requests get decreasing negative numbers,
-- the rest increasing positive ones, from the per-queue counters rq_front / rq_back). A lock
-- sets `locked_until` (0 = unlocked), which moves the request out of the `locked_until = 0`
-- range of `rq_head`, so taking the head is an index range scan that never walks locked rows.
ALTER TABLE storages ADD COLUMN rq_front INTEGER NOT NULL DEFAULT 0;
ALTER TABLE storages ADD COLUMN rq_back INTEGER NOT NULL DEFAULT 0;

CREATE TABLE rq_requests (
    rid INTEGER PRIMARY KEY,
    queue INTEGER NOT NULL,
    id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    handled_at INTEGER,
    locked_until INTEGER NOT NULL DEFAULT 0,
    lock_client TEXT,
    -- Where the request goes when its lock lapses: NULL = stays, 1 = front, 0 = back.
    lapse_to INTEGER,
    unique_key TEXT NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    retry_count INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX rq_by_id ON rq_requests (queue, id);
CREATE INDEX rq_head ON rq_requests (queue, locked_until, ord) WHERE handled_at IS NULL;
CREATE INDEX rq_pending ON rq_requests (queue, id) WHERE handled_at IS NULL;
