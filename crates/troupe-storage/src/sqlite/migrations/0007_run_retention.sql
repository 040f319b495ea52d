-- The retention policy looks up finished runs by age.
CREATE INDEX runs_by_start ON runs (started_at);
