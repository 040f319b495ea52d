-- The queue order and lock state of pending requests, in a narrow table of their own. Before,
-- they lived in the wide request row (~300-450 bytes) and its partial index `rq_head`, so every
-- lock rewrote the whole row and moved its index entry. Now a lock moves a ~30-byte entry of
-- `rq_pending` (the first available requests are one key range: deleted as one range, re-added
-- under their lock's expiry) and leaves `rq_requests` alone.
--
-- An entry exists exactly while its request is pending (`rq_requests.handled_at IS NULL`), in
-- the same transaction. `locked_until` = 0: available; otherwise the lock's expiry (a lapsed
-- lock is cleared by the next `head/lock`). `ord` is the request's position (also kept in
-- `rq_requests.ord`, equal while pending: positions come from the per-queue counters
-- `rq_front`/`rq_back`, so they are unique per queue). `rq_pending_locked` finds a locked
-- request's entry by `rid`; an available one is (queue, 0, ord).
--
-- The columns `locked_until`, `lock_client` and `lapse_to` of `rq_requests` are no longer
-- read or written (dropping them would rewrite the whole table).
CREATE TABLE rq_pending (
    queue INTEGER NOT NULL,
    locked_until INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    rid INTEGER NOT NULL,
    lock_client TEXT,
    -- Where the request goes when its lock lapses: NULL = stays, 1 = front, 0 = back.
    lapse_to INTEGER,
    PRIMARY KEY (queue, locked_until, ord)
) WITHOUT ROWID;
INSERT INTO rq_pending (queue, locked_until, ord, rid, lock_client, lapse_to)
    SELECT queue, locked_until, ord, rid, lock_client, lapse_to FROM rq_requests
    WHERE handled_at IS NULL ORDER BY queue, locked_until, ord;
CREATE INDEX rq_pending_locked ON rq_pending (rid) WHERE locked_until > 0;
DROP INDEX rq_head;
