-- Actors, builds and runs. Each row keeps the whole object as JSON (`data`) plus the columns
-- that are filtered or sorted on.
CREATE TABLE actors (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX actors_by_name ON actors (user_id, name);
CREATE INDEX actors_by_owner ON actors (user_id, created_at);

CREATE TABLE builds (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    act_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX builds_by_owner ON builds (user_id, started_at);
CREATE INDEX builds_by_actor ON builds (user_id, act_id, started_at);
CREATE INDEX builds_unfinished ON builds (status) WHERE status IN ('READY', 'RUNNING');

CREATE TABLE runs (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    act_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    origin TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX runs_by_owner ON runs (user_id, started_at);
CREATE INDEX runs_by_owner_status ON runs (user_id, status, started_at);
CREATE INDEX runs_by_actor ON runs (act_id, user_id, started_at);
CREATE INDEX runs_by_actor_status ON runs (act_id, user_id, status, started_at);
CREATE INDEX runs_by_actor_origin ON runs (act_id, user_id, origin, started_at);
CREATE INDEX runs_unfinished ON runs (status, num)
    WHERE status NOT IN ('SUCCEEDED', 'FAILED', 'TIMED-OUT', 'ABORTED');
