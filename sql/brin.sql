--
-- BRIN tracking indexes: set_tracking_index(), its refusals, and windows
-- that stay exact and capped batches that stay proportional to the batch
-- without a B-tree
--
CREATE TABLE events (id int, v int) WITH (autovacuum_enabled = off);
CREATE TABLE events_seen (batch_id bigint, id int, v int);
SELECT microbatch.create_pipeline('events', 'events', max_batch_rows => 1000);
SELECT microbatch.add_transform('events', 'copy', 'bronze',
    $$INSERT INTO events_seen SELECT microbatch.current_batch_id(), id, v FROM microbatch.events_batch$$);
CREATE FUNCTION tracking_indexes(t regclass) RETURNS TABLE (method name, definition text)
LANGUAGE sql AS $$
    SELECT am.amname, regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \S+ ON', 'INDEX ON')
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
     WHERE i.indrelid = t ORDER BY 1 $$;
SELECT * FROM tracking_indexes('events');

-- Refusals, each before any change
SELECT microbatch.set_tracking_index('events', 'hash');
\echo :SQLSTATE
SELECT microbatch.set_tracking_index('events', NULL);
\echo :SQLSTATE
SELECT microbatch.set_tracking_index(NULL, 'brin');
\echo :SQLSTATE
CREATE TABLE not_a_source (id int);
SELECT microbatch.set_tracking_index('not_a_source', 'brin');
\echo :SQLSTATE
CREATE TABLE parted (id int) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10);
SELECT microbatch.create_pipeline('parted', 'parted');
SELECT microbatch.set_tracking_index('parted', 'brin');
\echo :SQLSTATE
SELECT microbatch.set_tracking_index('parted_1', 'brin');
\echo :SQLSTATE
CREATE TABLE parent (id int);
SELECT microbatch.create_pipeline('parent', 'parent');
CREATE TABLE child () INHERITS (parent);
SELECT microbatch.set_tracking_index('parent', 'brin');
\echo :SQLSTATE
-- a B-tree it may have (it has one: nothing changes)
SELECT microbatch.set_tracking_index('parent', 'btree')::text AS index;
CREATE ROLE mb_brin_other;
SET ROLE mb_brin_other;
SELECT microbatch.set_tracking_index('events', 'brin');
\echo :SQLSTATE
RESET ROLE;
SELECT * FROM tracking_indexes('events');

-- The switch: a BRIN index of the extension's operator class, the B-tree
-- gone; the batch view is the same
SELECT pg_get_viewdef('microbatch.events_batch') AS view_before \gset
SELECT microbatch.set_tracking_index('events', 'brin')::text LIKE 'events_%' AS switched;
SELECT * FROM tracking_indexes('events');
SELECT pg_get_viewdef('microbatch.events_batch') = :'view_before' AS same_view;
-- again: nothing to do
SELECT * FROM tracking_indexes('events');
SELECT microbatch.set_tracking_index('events', 'brin') IS NOT NULL AS kept;
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'events'::regclass;
-- refresh_pipeline() keeps it: a BRIN index is a tracking index
SELECT microbatch.refresh_pipeline('events');
SELECT * FROM tracking_indexes('events');

-- A second pipeline on the table uses the BRIN index: no B-tree is added
SELECT microbatch.create_pipeline('events_too', 'events');
SELECT * FROM tracking_indexes('events');
SELECT microbatch.drop_pipeline('events_too');
-- an invalid BRIN index of the class is no tracking index: the B-tree is
-- made again, and the invalid one left alone
CREATE TABLE invalid_brin (id int);
SELECT microbatch.create_pipeline('invalid_brin', 'invalid_brin');
SELECT microbatch.set_tracking_index('invalid_brin', 'brin') IS NOT NULL AS switched;
UPDATE pg_index SET indisvalid = false WHERE indrelid = 'invalid_brin'::regclass;
SELECT microbatch.refresh_pipeline('invalid_brin');
SELECT * FROM tracking_indexes('invalid_brin');
SELECT microbatch.drop_pipeline('invalid_brin');
DROP TABLE invalid_brin;

-- a B-tree with more columns is kept, and serves the windows: a NOTICE says so
CREATE TABLE composite (id int);
SELECT microbatch.create_pipeline('composite', 'composite');
CREATE INDEX composite_xid_id ON composite (microbatch_xid, id);
SELECT microbatch.set_tracking_index('composite', 'brin') IS NOT NULL AS switched;
SELECT * FROM tracking_indexes('composite');
SELECT microbatch.drop_pipeline('composite');
DROP TABLE composite;

-- A backlog of 100 transactions of 1,000 rows, never analysed and never
-- summarized, drained 1,000 rows a batch.  The first batch summarizes the
-- full ranges and analyses the column; each batch after it reads about its
-- own pages and a few ranges around them (some 250 of the table's 540),
-- not the backlog's (a window over unsummarized ranges, or a cut that sorted
-- the window, would read them all, for each of its queries).
CREATE PROCEDURE load_events() LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 0..99 LOOP
        INSERT INTO events SELECT g, g FROM generate_series(i * 1000, i * 1000 + 999) g;
        COMMIT;
    END LOOP;
END $$;
CALL load_events();
SELECT pg_relation_size('events') / current_setting('block_size')::int > 400 AS backlog_pages;
SELECT microbatch.run_batch('events') AS batch;
SELECT count(*) > 0 AS analysed FROM pg_stats WHERE tablename = 'events' AND attname = 'microbatch_xid';
-- (a new session: the pending counts of this one include the load's)
\c
BEGIN;
SELECT microbatch.run_batch('events') AS batch;
SELECT pg_stat_get_xact_blocks_fetched('events'::regclass) < 400 AS proportional;
COMMIT;
SELECT count(microbatch.run_batch('events')) AS batches FROM generate_series(1, 99);
SELECT count(*) AS rows, count(DISTINCT id) AS ids, count(DISTINCT batch_id) AS batches,
       bool_and(id / 1000 = batch_id - 1) AS in_commit_order
  FROM events_seen;
SELECT microbatch.rows_waiting('events');

-- The rows of a transaction running at a batch's snapshot: capped_window_brin

-- And back to a B-tree
SELECT microbatch.set_tracking_index('events', 'btree') IS NOT NULL AS switched;
SELECT * FROM tracking_indexes('events');
INSERT INTO events VALUES (-1, -1);
SELECT microbatch.run_batch('events') AS batch;
SELECT id, batch_id FROM events_seen WHERE id < 0;

SELECT microbatch.drop_pipeline('events');
SELECT microbatch.drop_pipeline('parted');
SELECT microbatch.drop_pipeline('parent');
DROP TABLE events, events_seen, not_a_source, parted, parent, child;
DROP FUNCTION tracking_indexes(regclass);
DROP PROCEDURE load_events();
DROP ROLE mb_brin_other;
