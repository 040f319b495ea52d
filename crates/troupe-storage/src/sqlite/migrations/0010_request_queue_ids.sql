-- Request ids are hashes of uniqueKey, so an index keyed by them takes each new request on a
-- random leaf page: adding 25 requests dirtied ~25 pages of `rq_by_id`, each written to the
-- WAL at commit and again at the next checkpoint. Ids now live in `rq_ids`, filled in large
-- sorted runs ("merges"): a request added since the last merge (`rid` above `rq_merged`'s
-- watermark) is found through an in-memory map rebuilt from those rows at start-up
-- (`sqlite/queues.rs`, `RecentIds`); every older request has its row here.
CREATE TABLE rq_ids (
    queue INTEGER NOT NULL,
    id TEXT NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
CREATE TABLE rq_merged (watermark INTEGER NOT NULL);
INSERT INTO rq_ids (queue, id, rid) SELECT queue, id, rid FROM rq_requests ORDER BY queue, id;
INSERT INTO rq_merged (watermark) SELECT coalesce(max(rid), 0) FROM rq_requests;
DROP INDEX rq_by_id;
