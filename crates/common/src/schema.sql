-- The voting schema. Idempotent: applied by every service that uses PostgreSQL, at start,
-- under an advisory lock (see schema.rs). Names `votes.id` / `votes.vote` are the original
-- app's, so its result page can read this database.

CREATE TABLE IF NOT EXISTS votes (
    id text PRIMARY KEY,
    vote text NOT NULL
);

-- The version of a row is the Redis stream ID of the ballot that wrote it: a ballot only
-- replaces a row whose version is older, so replaying a batch changes nothing.
ALTER TABLE votes ADD COLUMN IF NOT EXISTS version_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE votes ADD COLUMN IF NOT EXISTS version_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE votes ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

-- One row per option ever voted for: reading results costs O(options), not O(votes).
CREATE TABLE IF NOT EXISTS tallies (
    vote text PRIMARY KEY,
    count bigint NOT NULL DEFAULT 0
);

-- Tallies follow `votes` through statement-level triggers with transition tables: they see the
-- row versions actually replaced (also under concurrent workers) and update each tally row
-- once per statement, in key order, so concurrent writers do not deadlock on them.
CREATE OR REPLACE FUNCTION voting_tally_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tallies (vote, count)
        SELECT vote, count(*) FROM new_rows GROUP BY vote ORDER BY vote
        ON CONFLICT (vote) DO UPDATE SET count = tallies.count + EXCLUDED.count;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO tallies (vote, count)
        SELECT vote, sum(delta) FROM (
            SELECT vote, 1 AS delta FROM new_rows
            UNION ALL
            SELECT vote, -1 AS delta FROM old_rows
        ) d
        GROUP BY vote HAVING sum(delta) <> 0 ORDER BY vote
        ON CONFLICT (vote) DO UPDATE SET count = tallies.count + EXCLUDED.count;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE tallies t SET count = t.count - d.n
        FROM (SELECT vote, count(*) AS n FROM old_rows GROUP BY vote ORDER BY vote) d
        WHERE t.vote = d.vote;
    END IF;
    RETURN NULL;
END
$$;

-- On first install (or over the original app's table) the tallies start from what is there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'votes_tally_insert') THEN
        DELETE FROM tallies;
        INSERT INTO tallies (vote, count) SELECT vote, count(*) FROM votes GROUP BY vote;
    END IF;
END
$$;

CREATE OR REPLACE TRIGGER votes_tally_insert AFTER INSERT ON votes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION voting_tally_apply();
CREATE OR REPLACE TRIGGER votes_tally_update AFTER UPDATE ON votes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION voting_tally_apply();
CREATE OR REPLACE TRIGGER votes_tally_delete AFTER DELETE ON votes
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION voting_tally_apply();
