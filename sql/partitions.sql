--
-- Partitioned and inherited sources: every table that holds a source's rows
-- is guarded, tables join a hierarchy only with rows a batch will process,
-- and leave it only once their rows are processed
--
CREATE TABLE measures (day int, v int) PARTITION BY RANGE (day);
CREATE TABLE measures_1 PARTITION OF measures FOR VALUES FROM (1) TO (2);
CREATE TABLE measures_seen (batch_id bigint, day int, v int);
SELECT microbatch.create_pipeline('measures', 'measures');
SELECT microbatch.add_transform('measures', 'copy', 'bronze',
    $$INSERT INTO measures_seen SELECT microbatch.current_batch_id(), day, v FROM microbatch.measures_batch$$);

-- The guards: a constraint and triggers on each partition, a wake-up
-- trigger on the partitioned table too
CREATE TABLE measures_2 PARTITION OF measures FOR VALUES FROM (2) TO (3);
CREATE VIEW guards AS
SELECT c.relname,
       (SELECT count(*) FROM pg_constraint k
         WHERE k.conrelid = c.oid AND k.conname = 'microbatch_xid_current') AS checks,
       (SELECT string_agg(t.tgname || ':' || t.tgenabled::text, ', ' ORDER BY t.tgname)
          FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname LIKE 'microbatch%') AS triggers
  FROM pg_class c
 WHERE c.relname LIKE 'measures%' AND c.relkind IN ('r', 'p') AND c.relname <> 'measures_seen'
 ORDER BY 1;
SELECT * FROM guards;

-- Rows inserted through the parent and straight into a partition
INSERT INTO measures VALUES (1, 10), (2, 20);
INSERT INTO measures_2 VALUES (2, 21);
SELECT microbatch.run_batch('measures');
-- an explicit tracking value is refused in a partition too (the error's
-- detail, with transaction ids, is left out)
\set VERBOSITY terse
INSERT INTO measures_2 VALUES (2, 22, '3');
\echo :SQLSTATE
\set VERBOSITY default

-- A table loaded before the last batch would never be processed: refused
CREATE TABLE measures_3 (LIKE measures INCLUDING DEFAULTS);
INSERT INTO measures_3 VALUES (3, 30);
INSERT INTO measures VALUES (1, 11);
SELECT microbatch.run_batch('measures');
ALTER TABLE measures ATTACH PARTITION measures_3 FOR VALUES FROM (3) TO (4);
\echo :SQLSTATE
-- loaded since, with ids of its own transactions: accepted, and processed
CREATE TABLE measures_4 (LIKE measures INCLUDING DEFAULTS);
INSERT INTO measures_4 VALUES (4, 40), (4, 41);
ALTER TABLE measures ATTACH PARTITION measures_4 FOR VALUES FROM (4) TO (5);
SELECT * FROM guards;
SELECT microbatch.run_batch('measures');
-- the refused one, given current ids, can join
UPDATE measures_3 SET microbatch_xid = DEFAULT;
ALTER TABLE measures ATTACH PARTITION measures_3 FOR VALUES FROM (3) TO (4);
SELECT microbatch.run_batch('measures');
SELECT batch_id, day, v FROM measures_seen ORDER BY batch_id, day, v;
SELECT count(*) = count(DISTINCT (day, v)) AS exactly_once FROM measures_seen;

-- A partition whose rows are still waiting cannot leave, nor be dropped
-- or truncated
INSERT INTO measures VALUES (4, 42);
ALTER TABLE measures DETACH PARTITION measures_4;
\echo :SQLSTATE
DROP TABLE measures_4;
\echo :SQLSTATE
TRUNCATE measures_4;
\echo :SQLSTATE
TRUNCATE measures;
\echo :SQLSTATE
-- also in replica mode, as a TRUNCATE that logical replication applies
SET session_replication_role = replica;
TRUNCATE measures_4;
\echo :SQLSTATE
RESET session_replication_role;
SELECT microbatch.run_batch('measures');
-- processed, it may
ALTER TABLE measures DETACH PARTITION measures_4;
SELECT * FROM guards;
DROP TABLE measures_4;
TRUNCATE measures_1;

-- Sub-partitions are guarded too
CREATE TABLE measures_5 PARTITION OF measures FOR VALUES FROM (5) TO (7) PARTITION BY RANGE (day);
CREATE TABLE measures_5a PARTITION OF measures_5 FOR VALUES FROM (5) TO (6);
SELECT * FROM guards;
INSERT INTO measures_5a VALUES (5, 50);
SELECT microbatch.run_batch('measures');
SELECT batch_id, day, v FROM measures_seen WHERE day = 5;

-- However a drop reaches a table, it takes no waiting rows from a pipeline
-- that stays: a partitioned table with waiting rows below it, a schema
-- dropped with CASCADE, a role's tables dropped with DROP OWNED
INSERT INTO measures VALUES (5, 51);
DROP TABLE measures_5;
\echo :SQLSTATE
CREATE SCHEMA side;
CREATE TABLE side.measures_8 PARTITION OF measures FOR VALUES FROM (8) TO (9);
INSERT INTO measures VALUES (8, 80);
DROP SCHEMA side CASCADE;
\echo :SQLSTATE
CREATE ROLE mb_partition_owner;
CREATE TABLE measures_9 PARTITION OF measures FOR VALUES FROM (9) TO (10);
ALTER TABLE measures_9 OWNER TO mb_partition_owner;
INSERT INTO measures VALUES (9, 90);
DROP OWNED BY mb_partition_owner;
\echo :SQLSTATE
-- a refused drop undone by a savepoint leaves nothing behind for the next
-- one in the transaction, nor a count that is no longer true
BEGIN;
SAVEPOINT before_drop;
DROP TABLE measures_5;
ROLLBACK TO SAVEPOINT before_drop;
CREATE TABLE scratch (id int);
DROP TABLE scratch;
SELECT microbatch.run_batch('measures');
DROP TABLE measures_5;
COMMIT;
-- once processed, all of them may go
DROP SCHEMA side CASCADE;
DROP OWNED BY mb_partition_owner;
DROP ROLE mb_partition_owner;
SELECT count(*) FROM measures_seen WHERE day IN (5, 8, 9);

-- Dropping a whole source takes its pipeline along, waiting rows or not
CREATE TABLE spare (day int, v int) PARTITION BY RANGE (day);
CREATE TABLE spare_1 PARTITION OF spare FOR VALUES FROM (1) TO (2);
SELECT microbatch.create_pipeline('spare', 'spare');
INSERT INTO spare VALUES (1, 1);
DROP TABLE spare CASCADE;

-- microbatch's triggers stay as they are: not all at once, not dropped,
-- not renamed
ALTER TABLE measures DISABLE TRIGGER ALL;
\echo :SQLSTATE
ALTER TABLE measures_1 DISABLE TRIGGER USER;
\echo :SQLSTATE
ALTER TABLE measures_1 ENABLE TRIGGER USER;
\echo :SQLSTATE
DROP TRIGGER microbatch_source_truncated ON measures_1;
\echo :SQLSTATE
ALTER TRIGGER microbatch_source_changed ON measures RENAME TO quiet;
\echo :SQLSTATE
SELECT * FROM guards;

-- DETACH ... CONCURRENTLY commits its first step before anything could
-- count the waiting rows: refused, even with none
ALTER TABLE measures DETACH PARTITION measures_1 CONCURRENTLY;
\echo :SQLSTATE

-- Nor can an unlogged table, which a crash empties
CREATE UNLOGGED TABLE measures_u PARTITION OF measures FOR VALUES FROM (12) TO (13);
\echo :SQLSTATE
ALTER TABLE measures_1 SET UNLOGGED;
\echo :SQLSTATE

-- Partitions created by CREATE SCHEMA, whose tables fire no event trigger
-- of their own, get the guards too
CREATE SCHEMA inside CREATE TABLE measures_13 PARTITION OF public.measures FOR VALUES FROM (13) TO (14);
SELECT k.conname, string_agg(t.tgname, ', ' ORDER BY t.tgname) AS triggers
  FROM pg_constraint k JOIN pg_trigger t ON t.tgrelid = k.conrelid
 WHERE k.conrelid = 'inside.measures_13'::regclass AND t.tgname LIKE 'microbatch%'
 GROUP BY k.conname;
DROP SCHEMA inside CASCADE;

-- A change to the tracking column of a table without pipelines reaches the
-- tables below it: refused when one of those is a source
CREATE TABLE upper_m (day int, v int) PARTITION BY RANGE (day);
CREATE TABLE lower_m PARTITION OF upper_m FOR VALUES FROM (1) TO (2);
SELECT microbatch.create_pipeline('upper_m', 'upper_m');
SELECT microbatch.create_pipeline('lower_m', 'lower_m');
SELECT microbatch.drop_pipeline('upper_m');
ALTER TABLE upper_m ALTER COLUMN microbatch_xid DROP DEFAULT;
\echo :SQLSTATE
ALTER TABLE upper_m ALTER COLUMN microbatch_xid DROP NOT NULL;
\echo :SQLSTATE
-- its own triggers are its owner's business
ALTER TABLE upper_m DISABLE TRIGGER ALL;
ALTER TABLE upper_m ENABLE TRIGGER ALL;
SELECT microbatch.drop_pipeline('lower_m');
DROP TABLE upper_m;

-- A foreign table cannot hold a source's rows
CREATE FOREIGN DATA WRAPPER mb_nowhere;
CREATE SERVER mb_nowhere FOREIGN DATA WRAPPER mb_nowhere;
CREATE FOREIGN TABLE measures_f PARTITION OF measures FOR VALUES FROM (10) TO (11)
    SERVER mb_nowhere;
\echo :SQLSTATE
CREATE FOREIGN TABLE measures_f (day int, v int, microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id())
    SERVER mb_nowhere;
ALTER TABLE measures ATTACH PARTITION measures_f FOR VALUES FROM (10) TO (11);
\echo :SQLSTATE
DROP FOREIGN TABLE measures_f;
DROP SERVER mb_nowhere;
DROP FOREIGN DATA WRAPPER mb_nowhere;

-- Without the event triggers, a new partition lacks the guards: the batch
-- stops until refresh_pipeline() adds them
ALTER EVENT TRIGGER microbatch_ddl_end DISABLE;
CREATE TABLE measures_7 PARTITION OF measures FOR VALUES FROM (7) TO (8);
ALTER EVENT TRIGGER microbatch_ddl_end ENABLE ALWAYS;
INSERT INTO measures VALUES (7, 70);
SELECT microbatch.run_batch('measures');
\echo :SQLSTATE
SELECT microbatch.refresh_pipeline('measures');
SELECT microbatch.run_batch('measures');
-- a table attached then with rows from before the last batch: the refresh
-- cannot tell whether they were processed, and says so
CREATE TABLE measures_11 (day int, v int, microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id());
INSERT INTO measures_11 VALUES (11, 110);
INSERT INTO measures VALUES (1, 12);
SELECT microbatch.run_batch('measures');
ALTER EVENT TRIGGER microbatch_ddl_end DISABLE;
ALTER TABLE measures ATTACH PARTITION measures_11 FOR VALUES FROM (11) TO (12);
ALTER EVENT TRIGGER microbatch_ddl_end ENABLE ALWAYS;
SELECT microbatch.refresh_pipeline('measures');
SELECT microbatch.refresh_pipeline('measures');

-- Inheritance children are part of the source too
CREATE TABLE readings (id int, v int);
CREATE TABLE readings_seen (batch_id bigint, id int);
SELECT microbatch.create_pipeline('readings', 'readings');
SELECT microbatch.add_transform('readings', 'copy', 'bronze',
    $$INSERT INTO readings_seen SELECT microbatch.current_batch_id(), id FROM microbatch.readings_batch$$);
CREATE TABLE readings_child () INHERITS (readings);
SELECT c.relname, k.conname, k.connoinherit,
       (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) AS indexes
  FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid AND k.conname = 'microbatch_xid_current'
 WHERE c.relname LIKE 'readings%' ORDER BY 1;
INSERT INTO readings VALUES (1, 1);
INSERT INTO readings_child VALUES (2, 2);
-- a temporary child would hold rows no other session sees
CREATE TEMP TABLE readings_temp () INHERITS (readings);
\echo :SQLSTATE
SELECT microbatch.run_batch('readings');
-- a table with old rows cannot join by INHERIT
CREATE TABLE readings_old (id int, v int, microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id());
INSERT INTO readings_old VALUES (3, 3);
INSERT INTO readings VALUES (4, 4);
SELECT microbatch.run_batch('readings');
ALTER TABLE readings_old INHERIT readings;
\echo :SQLSTATE
-- given the constraint by hand, without checking its old rows, it is
-- still refused
DO $$
BEGIN
    EXECUTE format('ALTER TABLE readings_old ADD CONSTRAINT microbatch_xid_current '
                   'CHECK (microbatch.tracking_xid_ok(microbatch_xid, %L::regclass, %L::bigint)) NOT VALID',
                   'readings', (SELECT system_identifier FROM pg_control_system()));
END $$;
ALTER TABLE readings_old INHERIT readings;
\echo :SQLSTATE
-- nor a child with waiting rows leave
INSERT INTO readings_child VALUES (5, 5);
ALTER TABLE readings_child NO INHERIT readings;
\echo :SQLSTATE
SELECT microbatch.run_batch('readings');
ALTER TABLE readings_child NO INHERIT readings;
SELECT id FROM readings_seen ORDER BY id;

-- Two pipelines on one hierarchy, on the parent and on a partition: the
-- partition's guards stay while either needs them
SELECT microbatch.create_pipeline('measures_1', 'measures_1');
SELECT microbatch.add_transform('measures_1', 'count', 'bronze',
    'SELECT count(*) FROM microbatch.measures_1_batch');
SELECT microbatch.drop_pipeline('measures');
SELECT * FROM guards;
SELECT microbatch.drop_pipeline('measures_1');
SELECT * FROM guards;

SELECT microbatch.drop_pipeline('readings');
DROP VIEW guards;
DROP TABLE measures, measures_seen, readings, readings_child,
    readings_old, readings_seen;
