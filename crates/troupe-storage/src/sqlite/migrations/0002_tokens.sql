-- Tokens get a public id (to list and revoke them without showing secrets) and may belong to a run.
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN run_id TEXT;
UPDATE tokens SET id = substr(token_hash, 1, 17) WHERE id IS NULL;
CREATE UNIQUE INDEX tokens_by_id ON tokens (id);
CREATE INDEX tokens_by_user ON tokens (user_id);
