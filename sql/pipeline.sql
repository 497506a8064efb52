--
-- Creating, pausing, refreshing and dropping pipelines
--
CREATE TABLE clicks (id bigserial PRIMARY KEY, user_id int, url text);
INSERT INTO clicks (user_id, url) VALUES (1, '/a'), (2, '/b');

SELECT microbatch.create_pipeline('clicks', 'clicks', '5 seconds');
CREATE TABLE clicks_seen (batch_id bigint, id bigint);
SELECT microbatch.add_transform('clicks', 'seen', 'bronze',
    $$INSERT INTO clicks_seen SELECT microbatch.current_batch_id(), id FROM microbatch.clicks_batch$$);

-- The tracking column, its index, the constraint that keeps other values
-- out, and the triggers (the system identifier varies from cluster to
-- cluster, so it is masked)
SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'clicks'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;
SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) AS definition
  FROM pg_index WHERE indrelid = 'clicks'::regclass ORDER BY 1;
SELECT conname, convalidated, connoinherit,
       regexp_replace(pg_get_constraintdef(oid), '''-?[0-9]+''::bigint', '''<system identifier>''::bigint') AS definition
  FROM pg_constraint WHERE conrelid = 'clicks'::regclass AND contype = 'c';
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'clicks'::regclass AND NOT tgisinternal ORDER BY 1;
-- The batch view has the source's columns, without the tracking column
\d microbatch.clicks_batch
-- Outside a batch it is empty
SELECT count(*) FROM microbatch.clicks_batch;

SELECT pipeline, source, owner, batch_interval, max_batch_rows, state,
       last_batch_id, last_batch_at, rows_waiting
  FROM microbatch.pipelines;

-- Rows that existed before the pipeline belong to its first batch
SELECT microbatch.run_batch('clicks');
SELECT * FROM clicks_seen ORDER BY id;
SELECT pipeline, batch_id, attempt, status, rows_in, replays, error
  FROM microbatch.batches;

-- A second pipeline on the same source reuses the column and sees every row
SELECT microbatch.create_pipeline('clicks_audit', 'clicks', max_batch_rows => 100);
-- without transforms, a pipeline runs no batch: its rows wait for them
SELECT microbatch.run_batch('clicks_audit');
SELECT microbatch.add_transform('clicks_audit', 'count', 'bronze',
    'SELECT count(*) FROM microbatch.clicks_audit_batch');
SELECT count(*) AS tracking_columns FROM pg_attribute
 WHERE attrelid = 'clicks'::regclass AND attname = 'microbatch_xid';
SELECT microbatch.run_batch('clicks_audit');
SELECT pipeline, batch_id, rows_in FROM microbatch.batches ORDER BY 1, 2;

-- Pause, alter and resume
SELECT microbatch.alter_pipeline('clicks', batch_interval => '250 ms');
SELECT microbatch.alter_pipeline('clicks_audit', max_batch_rows => 0);
SELECT pipeline, batch_interval, max_batch_rows FROM microbatch.pipelines ORDER BY 1;
SELECT microbatch.alter_pipeline('clicks', batch_interval => '-1 s');
\echo :SQLSTATE
SELECT microbatch.alter_pipeline('clicks', max_batch_rows => -1);
\echo :SQLSTATE
SELECT microbatch.pause_pipeline('clicks');
SELECT pipeline, state FROM microbatch.pipelines ORDER BY 1;
SELECT microbatch.resume_pipeline('clicks');
SELECT pipeline, state FROM microbatch.pipelines ORDER BY 1;

-- Bad input: clear errors, nothing changes
SELECT microbatch.create_pipeline('clicks', 'clicks');
\echo :SQLSTATE
SELECT microbatch.create_pipeline('nope', 'no_such_table');
\echo :SQLSTATE
SELECT microbatch.create_pipeline(NULL, 'clicks');
\echo :SQLSTATE
SELECT microbatch.create_pipeline('', 'clicks');
\echo :SQLSTATE
SELECT microbatch.create_pipeline(repeat('p', 60), 'clicks');
\echo :SQLSTATE
SELECT microbatch.create_pipeline('neg', 'clicks', '-1 second');
\echo :SQLSTATE
SELECT microbatch.create_pipeline('zero', 'clicks', max_batch_rows => 0);
\echo :SQLSTATE
CREATE VIEW clicks_view AS SELECT * FROM clicks;
SELECT microbatch.create_pipeline('on_view', 'clicks_view');
\echo :SQLSTATE
CREATE TEMP TABLE temp_events (id int);
SELECT microbatch.create_pipeline('on_temp', 'temp_events');
\echo :SQLSTATE
-- a crash would empty it, unprocessed rows included
CREATE UNLOGGED TABLE unlogged_events (id int);
SELECT microbatch.create_pipeline('on_unlogged', 'unlogged_events');
\echo :SQLSTATE
SELECT count(*) AS tracking_columns FROM pg_attribute
 WHERE attrelid = 'unlogged_events'::regclass AND attname = 'microbatch_xid';
DROP TABLE unlogged_events;
CREATE TABLE squatter (id int, microbatch_xid text);
SELECT microbatch.create_pipeline('squat', 'squatter');
\echo :SQLSTATE
SELECT microbatch.drop_pipeline('no_such_pipeline');
\echo :SQLSTATE
SELECT microbatch.pause_pipeline('no_such_pipeline');
\echo :SQLSTATE
SELECT microbatch.run_batch('no_such_pipeline');
\echo :SQLSTATE
SELECT count(*) AS pipelines FROM microbatch.pipelines;
SELECT count(*) AS views FROM pg_views WHERE schemaname = 'microbatch';

-- The batch view keeps the source from being dropped or changed under it
DROP TABLE clicks;
\echo :SQLSTATE
ALTER TABLE clicks DROP COLUMN url;
\echo :SQLSTATE
ALTER TABLE clicks ALTER COLUMN user_id TYPE bigint;
\echo :SQLSTATE

-- A column added to the source stops the batches until the view is rebuilt
ALTER TABLE clicks ADD COLUMN referrer text;
INSERT INTO clicks (user_id, url, referrer) VALUES (3, '/c', 'search');
SELECT microbatch.run_batch('clicks');
\echo :SQLSTATE
SELECT microbatch.refresh_pipeline('clicks');
\d microbatch.clicks_batch
SELECT microbatch.run_batch('clicks');

-- So does a renamed column
ALTER TABLE clicks RENAME COLUMN referrer TO referer;
SELECT microbatch.run_batch('clicks');
\echo :SQLSTATE
SELECT microbatch.refresh_pipeline('clicks');
SELECT microbatch.run_batch('clicks');

-- Names are quoted everywhere
CREATE TABLE "Odd ""Table"""(id int);
SELECT microbatch.create_pipeline('we"ird; DROP TABLE clicks', '"Odd ""Table"""');
SELECT microbatch.add_transform('we"ird; DROP TABLE clicks', 'count', 'bronze',
    $$SELECT count(*) FROM microbatch."we""ird; DROP TABLE clicks_batch"$$);
INSERT INTO "Odd ""Table""" VALUES (1);
SELECT microbatch.run_batch('we"ird; DROP TABLE clicks');
SELECT viewname FROM pg_views WHERE schemaname = 'microbatch' ORDER BY 1;

-- Dropping a pipeline removes its view and history, not the source's column
SELECT microbatch.drop_pipeline('we"ird; DROP TABLE clicks');
SELECT microbatch.drop_pipeline('clicks_audit');
SELECT pipeline FROM microbatch.pipelines;
SELECT DISTINCT pipeline FROM microbatch.batches;
SELECT viewname FROM pg_views WHERE schemaname = 'microbatch' ORDER BY 1;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'clicks'::regclass AND attname = 'microbatch_xid';

-- With CASCADE the source goes, and its pipelines with it
DROP TABLE clicks CASCADE;
SELECT microbatch.run_batch('clicks');
\echo :SQLSTATE
SELECT count(*) FROM microbatch.pipelines;
SELECT count(*) FROM microbatch.batches;
DROP TABLE squatter, "Odd ""Table""", clicks_seen;
