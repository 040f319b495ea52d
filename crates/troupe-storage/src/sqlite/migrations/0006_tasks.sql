-- Actor tasks, the task a run was started from, and the indexes that make "last run" of an
-- Actor or a task one index seek for every combination of the `status`/`origin` filters.
CREATE TABLE tasks (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    act_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX tasks_by_name ON tasks (user_id, name);
CREATE INDEX tasks_by_owner ON tasks (user_id, created_at);

ALTER TABLE runs ADD COLUMN actor_task_id TEXT;
UPDATE runs SET actor_task_id = json_extract(data, '$.actorTaskId')
    WHERE json_extract(data, '$.actorTaskId') IS NOT NULL;

CREATE INDEX runs_by_actor_status_origin ON runs (act_id, user_id, status, origin, started_at);
CREATE INDEX runs_by_task ON runs (actor_task_id, user_id, started_at)
    WHERE actor_task_id IS NOT NULL;
CREATE INDEX runs_by_task_status ON runs (actor_task_id, user_id, status, started_at)
    WHERE actor_task_id IS NOT NULL;
CREATE INDEX runs_by_task_origin ON runs (actor_task_id, user_id, origin, started_at)
    WHERE actor_task_id IS NOT NULL;
CREATE INDEX runs_by_task_status_origin ON runs (actor_task_id, user_id, status, origin, started_at)
    WHERE actor_task_id IS NOT NULL;
