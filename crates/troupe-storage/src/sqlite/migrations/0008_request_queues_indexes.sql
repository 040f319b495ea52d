-- Request ids are hashes, so every index keyed by them takes random inserts that rewrite a leaf
-- page per request; keep only the one dedup needs (rq_by_id). `filter=pending` listings walk
-- rq_by_id instead.
DROP INDEX rq_pending;
