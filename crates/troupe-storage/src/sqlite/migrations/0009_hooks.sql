-- Webhooks, their dispatches, schedules and schedule logs: the object as JSON plus the columns
-- the queries seek on.
CREATE TABLE webhooks (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    idempotency_key TEXT,
    cond_actor_id TEXT,
    cond_task_id TEXT,
    cond_run_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX webhooks_by_owner ON webhooks (user_id, created_at);
CREATE UNIQUE INDEX webhooks_by_idempotency_key ON webhooks (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX webhooks_by_actor ON webhooks (cond_actor_id, user_id, created_at)
    WHERE cond_actor_id IS NOT NULL;
CREATE INDEX webhooks_by_task ON webhooks (cond_task_id, user_id, created_at)
    WHERE cond_task_id IS NOT NULL;
CREATE INDEX webhooks_by_run ON webhooks (cond_run_id, user_id)
    WHERE cond_run_id IS NOT NULL;

CREATE TABLE webhook_dispatches (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX webhook_dispatches_by_owner ON webhook_dispatches (user_id, created_at);
CREATE INDEX webhook_dispatches_by_webhook ON webhook_dispatches (webhook_id, user_id, created_at);
CREATE INDEX webhook_dispatches_active ON webhook_dispatches (created_at)
    WHERE status = 'ACTIVE';

CREATE TABLE schedules (
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_run_at INTEGER,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX schedules_by_name ON schedules (user_id, name);
CREATE INDEX schedules_by_owner ON schedules (user_id, created_at);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;

CREATE TABLE schedule_log (
    num INTEGER PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX schedule_log_by_schedule ON schedule_log (schedule_id, num);
