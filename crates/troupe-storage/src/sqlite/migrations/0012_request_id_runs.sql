-- `rq_ids` as sorted runs (a log-structured merge): every merge of the map of recent ids
-- (`sqlite/queues.rs`, `RecentIds`) writes its ids as a new run, appended at the end of the
-- table (the run number leads the key), instead of inserting them among every id merged
-- before, which rewrote each leaf of the table (ids are hashes) and cost a seek from the root
-- per id. Runs of about the same size are compacted into one (`compact_runs`), so a request
-- is rewritten O(log n) times and a lookup checks a few runs (a Bloom filter per run in
-- memory tells which it can skip). `rq_runs` lists the runs and the ids each holds.
CREATE TABLE rq_id_runs (
    run INTEGER NOT NULL,
    queue INTEGER NOT NULL,
    id TEXT NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (run, queue, id)
) WITHOUT ROWID;
INSERT INTO rq_id_runs (run, queue, id, rid) SELECT 1, queue, id, rid FROM rq_ids ORDER BY queue, id;
DROP TABLE rq_ids;
ALTER TABLE rq_id_runs RENAME TO rq_ids;
CREATE TABLE rq_runs (run INTEGER PRIMARY KEY, ids INTEGER NOT NULL);
INSERT INTO rq_runs (run, ids) SELECT 1, count(*) FROM rq_ids HAVING count(*) > 0;
