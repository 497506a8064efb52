--
-- Loading paths: every row that reaches a source is processed exactly once,
-- or refused with a clear error
--
CREATE TABLE loads (id int, v text);
CREATE TABLE loaded (batch_id bigint, id int, v text);
SELECT microbatch.create_pipeline('loads', 'loads');
SELECT microbatch.add_transform('loads', 'copy', 'bronze',
    $$INSERT INTO loaded SELECT microbatch.current_batch_id(), id, v FROM microbatch.loads_batch$$);

-- The ways to load that leave microbatch_xid to its default
INSERT INTO loads (id, v) VALUES (1, 'insert');
INSERT INTO loads VALUES (2, 'insert without a column list');
COPY loads (id, v) FROM stdin;
3	copy
\.
INSERT INTO loads (id, v) SELECT 4, 'insert select';
SELECT microbatch.run_batch('loads');

-- An explicit or copied tracking value is refused, whatever the path.  The
-- error's detail shows transaction ids, which vary from run to run: this
-- shows the rest.
CREATE FUNCTION refused(command text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    message text;
    hint text;
BEGIN
    EXECUTE command;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            hint = PG_EXCEPTION_HINT;
    RETURN state || ': ' || message || E'\nHINT: ' || hint;
END $$;
SELECT refused($$INSERT INTO loads VALUES (5, 'explicit', '5')$$);
CREATE TABLE other_source (id int, v text);
SELECT microbatch.create_pipeline('other', 'other_source');
INSERT INTO other_source VALUES (6, 'copied between sources');
SELECT refused('INSERT INTO loads SELECT * FROM other_source');
\set VERBOSITY terse
COPY loads FROM stdin;
7	copy with the column	42
\.
\set VERBOSITY default
INSERT INTO loads (id, v, microbatch_xid) VALUES (8, 'null', NULL);
\echo :SQLSTATE
SELECT count(*) AS refused_rows_kept FROM loads WHERE id BETWEEN 5 AND 8;

-- An update is a new version of the row, for the next batch: it must say so
SELECT refused($$UPDATE loads SET v = 'updated' WHERE id = 1$$);
UPDATE loads SET v = 'updated', microbatch_xid = DEFAULT WHERE id = 1;
INSERT INTO loads (id, v) VALUES (9, 'upsert') ;
CREATE UNIQUE INDEX ON loads (id);
SELECT refused($$INSERT INTO loads (id, v) VALUES (9, 'upserted') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v$$);
INSERT INTO loads (id, v) VALUES (9, 'upserted') ON CONFLICT (id)
    DO UPDATE SET v = EXCLUDED.v, microbatch_xid = EXCLUDED.microbatch_xid;
SELECT microbatch.run_batch('loads');
SELECT batch_id, id, v FROM loaded ORDER BY batch_id, id;

-- Rows applied in replica mode (logical replication) into a table no
-- subscription writes into have no trigger to renumber them (a BEFORE ROW
-- trigger makes every COPY insert row by row): a publisher's id is
-- refused, saying how to fix it; the default is taken
SELECT count(*) AS replica_triggers FROM pg_trigger
 WHERE tgrelid = 'loads'::regclass AND tgname = 'microbatch_source_replicated';
SET session_replication_role = replica;
\set VERBOSITY terse
INSERT INTO loads VALUES (10, 'replicated', '3');
\set VERBOSITY default
INSERT INTO loads (id, v) VALUES (10, 'replicated');
RESET session_replication_role;
SELECT microbatch.run_batch('loads');
SELECT batch_id, id, v FROM loaded WHERE id = 10;

-- The guards cannot be taken off the source, nor the column changed
ALTER TABLE loads ALTER COLUMN microbatch_xid DROP DEFAULT;
\echo :SQLSTATE
ALTER TABLE loads ALTER COLUMN microbatch_xid SET DEFAULT '1';
\echo :SQLSTATE
ALTER TABLE loads ALTER COLUMN microbatch_xid DROP NOT NULL;
\echo :SQLSTATE
ALTER TABLE loads ALTER COLUMN microbatch_xid TYPE bigint USING 0;
\echo :SQLSTATE
ALTER TABLE loads RENAME COLUMN microbatch_xid TO batch_xid;
\echo :SQLSTATE
ALTER TABLE loads DROP CONSTRAINT microbatch_xid_current;
\echo :SQLSTATE
ALTER TABLE loads DISABLE TRIGGER microbatch_source_truncated;
\echo :SQLSTATE
ALTER TABLE loads ENABLE REPLICA TRIGGER microbatch_source_truncated;
\echo :SQLSTATE
-- setting a trigger to its own state is what pg_dump does: allowed
ALTER TABLE loads ENABLE ALWAYS TRIGGER microbatch_source_truncated;
-- other changes are the owner's business
ALTER TABLE loads ADD COLUMN note text;
ALTER TABLE loads DROP COLUMN note;

-- Changes the event triggers did not see make the batches fail, saying why
ALTER EVENT TRIGGER microbatch_ddl_start DISABLE;
ALTER TABLE loads DISABLE TRIGGER microbatch_source_truncated;
INSERT INTO loads (id, v) VALUES (11, 'after the guard went');
SELECT microbatch.run_batch('loads');
\echo :SQLSTATE
SELECT microbatch.refresh_pipeline('loads');
SELECT microbatch.run_batch('loads');
ALTER TABLE loads ALTER COLUMN microbatch_xid SET DEFAULT '1';
SELECT microbatch.run_batch('loads');
\echo :SQLSTATE
ALTER TABLE loads ALTER COLUMN microbatch_xid SET DEFAULT pg_current_xact_id();
ALTER TABLE loads DROP CONSTRAINT microbatch_xid_current;
SELECT microbatch.run_batch('loads');
\echo :SQLSTATE
ALTER EVENT TRIGGER microbatch_ddl_start ENABLE ALWAYS;
SELECT microbatch.refresh_pipeline('loads');
INSERT INTO loads (id, v) VALUES (12, 'guarded again');
SELECT microbatch.run_batch('loads');

-- TRUNCATE cannot lose rows a pipeline has not processed
INSERT INTO loads (id, v) VALUES (13, 'waiting');
TRUNCATE loads;
\echo :SQLSTATE
SELECT microbatch.run_batch('loads');
TRUNCATE loads;
SELECT count(*) FROM loads;
-- a pipeline that never ran waits for every row
INSERT INTO other_source VALUES (14, 'never processed');
TRUNCATE other_source;
\echo :SQLSTATE
SELECT microbatch.drop_pipeline('other');
TRUNCATE other_source;
SELECT count(*) AS guards_left FROM pg_trigger
 WHERE tgrelid = 'other_source'::regclass AND tgname LIKE 'microbatch%';
SELECT count(*) AS constraints_left FROM pg_constraint
 WHERE conrelid = 'other_source'::regclass AND conname = 'microbatch_xid_current';
-- without pipelines the table takes any value again
INSERT INTO other_source VALUES (15, 'unguarded', '1');

-- A table that already has the column must have it right, and its rows
-- must carry transaction ids of this cluster
CREATE TABLE own_column (id int, microbatch_xid xid8);
INSERT INTO own_column VALUES (1, '3');
SELECT microbatch.create_pipeline('own_column', 'own_column');
\echo :SQLSTATE
ALTER TABLE own_column ALTER COLUMN microbatch_xid SET DEFAULT pg_current_xact_id(),
    ALTER COLUMN microbatch_xid SET NOT NULL;
INSERT INTO own_column VALUES (2, '9223372036854775807');
SELECT microbatch.create_pipeline('own_column', 'own_column');
\echo :SQLSTATE
SELECT count(*) AS pipelines FROM microbatch.pipelines WHERE pipeline = 'own_column';
DELETE FROM own_column WHERE id = 2;
SELECT microbatch.create_pipeline('own_column', 'own_column');
CREATE TABLE own_column_seen (id int);
SELECT microbatch.add_transform('own_column', 'copy', 'bronze',
    'INSERT INTO own_column_seen SELECT id FROM microbatch.own_column_batch');
SELECT microbatch.run_batch('own_column');
SELECT id FROM own_column_seen;

-- start_from 'now' skips the rows already there
CREATE TABLE history (id int);
INSERT INTO history SELECT generate_series(1, 5);
BEGIN;
SELECT microbatch.create_pipeline('recent', 'history', start_from => 'now');
INSERT INTO history VALUES (6);
COMMIT;
CREATE TABLE recent_seen (batch_id bigint, id int);
SELECT microbatch.add_transform('recent', 'copy', 'bronze',
    $$INSERT INTO recent_seen SELECT microbatch.current_batch_id(), id FROM microbatch.recent_batch$$);
INSERT INTO history VALUES (7);
SELECT microbatch.run_batch('recent');
SELECT * FROM recent_seen;
SELECT batch_id, status, rows_in, note FROM microbatch.batches WHERE pipeline = 'recent' ORDER BY 1;
SELECT microbatch.replay_batch('recent', 1);
\echo :SQLSTATE
SELECT microbatch.create_pipeline('bad_start', 'history', start_from => 'yesterday');
\echo :SQLSTATE

SELECT microbatch.drop_pipeline('loads');
SELECT microbatch.drop_pipeline('own_column');
SELECT microbatch.drop_pipeline('recent');
DROP TABLE loads, loaded, other_source, own_column, own_column_seen, history, recent_seen;
DROP FUNCTION refused(text);
