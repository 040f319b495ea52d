-- `rq_pending_locked` (migration 0011) found a locked request's `rq_pending` entry by `rid`,
-- at the price of an index entry written by every lock and removed by every handled PUT
-- (~6k instructions and a page per commit). The entry's key is now known from the lock hints
-- (`sqlite/queues.rs`, `LockHints`: kept for every lock taken, prolonged or loaded at
-- start-up, each checked against the entry), an available request's is (queue, 0, ord), and
-- only a locked request that no hint knows (the hints start over when full) is found by a
-- scan of its queue's locked entries.
DROP INDEX rq_pending_locked;
