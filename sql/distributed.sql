--
-- Distributed pipelines (src/citus.c) without Citus: the coordinator's
-- functions refuse clearly, the shard pipelines' union batch view (which a
-- worker builds over its shards) works on tables named like shards, and
-- shard moves are refused while a distributed pipeline exists.
-- test/t/027_citus.pl runs them on a Citus cluster.
--
CREATE SCHEMA dist AUTHORIZATION mb_alice;
GRANT USAGE ON SCHEMA dist TO mb_bob;
SET ROLE mb_alice;
CREATE TABLE dist.events_101 (k int NOT NULL, v int NOT NULL);
-- this one has its tracking column already: it keeps it
CREATE TABLE dist.events_102 (k int NOT NULL, v int NOT NULL,
                              microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id());
CREATE TABLE dist.gold (k int PRIMARY KEY, n bigint NOT NULL, s bigint NOT NULL);
INSERT INTO dist.events_101 VALUES (1, 10), (1, 11);
INSERT INTO dist.events_102 VALUES (2, 20);
RESET ROLE;

-- without Citus
SELECT microbatch.create_distributed_pipeline('clicks', 'dist.events_101');
\echo :SQLSTATE
SELECT microbatch.add_distributed_transform('clicks', 't', 'gold', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.drop_distributed_pipeline('clicks');
\echo :SQLSTATE
SELECT microbatch.create_distributed_pipeline(repeat('x', 40)::name, 'dist.events_101');
\echo :SQLSTATE
-- each node changes in a transaction of its own, which a rollback here
-- would not undo: not in a transaction block
BEGIN;
SELECT microbatch.create_distributed_pipeline('clicks', 'dist.events_101');
\echo :SQLSTATE
ROLLBACK;
BEGIN;
SELECT microbatch.drop_distributed_pipeline('clicks');
\echo :SQLSTATE
ROLLBACK;

-- a table whose name does not end in a shard id is not a shard
SET ROLE mb_alice;
SELECT microbatch.create_shard_pipelines('clicks', ARRAY['dist.gold']::regclass[],
                                         '0', NULL, 'beginning', NULL);
\echo :SQLSTATE
RESET ROLE;

-- bob does not own the shards: nothing is created
SET ROLE mb_bob;
SELECT microbatch.create_shard_pipelines('clicks', ARRAY['dist.events_101', 'dist.events_102']::regclass[],
                                         '0', NULL, 'beginning', NULL);
\echo :SQLSTATE
RESET ROLE;
SELECT count(*) AS pipelines FROM microbatch.pipeline;

-- alice's shard pipelines: one per shard, and the union view
SET ROLE mb_alice;
SELECT microbatch.create_shard_pipelines('clicks', ARRAY['dist.events_101', 'dist.events_102']::regclass[],
                                         '0', NULL, 'beginning', NULL);
SELECT distributed_pipeline, pipeline, shard, owner FROM microbatch.shard_pipelines ORDER BY 2;
SELECT pg_get_viewdef('microbatch.clicks_batch'::regclass);
-- a transform's text is stored as given, % signs and all
SELECT microbatch.add_shard_transform('clicks', 'gold', 'gold',
    $$INSERT INTO gold AS g SELECT k, count(*), sum(v) FROM microbatch.clicks_batch
       WHERE format('%s', k) NOT LIKE '%%d' AND k % 1 = 0 GROUP BY k
      ON CONFLICT (k) DO UPDATE SET n = g.n + excluded.n, s = g.s + excluded.s$$,
    'dist, public');
SELECT DISTINCT command FROM microbatch.transforms WHERE transform = 'gold';
SELECT pipeline, transform FROM microbatch.transforms ORDER BY 1;
-- outside a batch the union is empty; each batch holds its shard's rows only
SELECT count(*) FROM microbatch.clicks_batch;
SELECT microbatch.run_batch('clicks_101');
SELECT * FROM dist.gold ORDER BY k;
INSERT INTO dist.events_101 VALUES (2, 1000);
SELECT microbatch.run_batch('clicks_102');
SELECT microbatch.run_batch('clicks_101');
SELECT * FROM dist.gold ORDER BY k;
RESET ROLE;

-- a refresh rebuilds the union view, and keeps its owner
RESET ROLE;
SELECT microbatch.change_shard_pipelines('clicks', 'refresh');
SELECT relowner::regrole FROM pg_class WHERE oid = 'microbatch.clicks_batch'::regclass;
SELECT microbatch.change_shard_pipelines('clicks', 'rename');
\echo :SQLSTATE
SET ROLE mb_alice;
SELECT microbatch.change_shard_pipelines('clicks', 'pause');
SELECT pipeline, state FROM microbatch.pipelines ORDER BY 1;
SELECT microbatch.change_shard_pipelines('clicks', 'resume');
RESET ROLE;

-- bob cannot change or drop them
SET ROLE mb_bob;
SELECT microbatch.add_shard_transform('clicks', 'evil', 'gold', 'SELECT 1', 'public');
\echo :SQLSTATE
SELECT microbatch.remove_shard_transform('clicks', 'gold');
\echo :SQLSTATE
SELECT microbatch.drop_shard_pipelines('clicks');
\echo :SQLSTATE
RESET ROLE;
SELECT count(*) AS transforms FROM microbatch.transform;

-- a shard pipeline goes with its distributed pipeline only
SELECT microbatch.drop_pipeline('clicks_101');
\echo :SQLSTATE

-- shard moves are refused while the database has a distributed pipeline
-- (a stand-in for Citus' function, and a distributed pipeline recorded by
-- hand: there is no Citus here)
CREATE FUNCTION pg_catalog.citus_move_shard_placement(shard_id bigint)
RETURNS void LANGUAGE sql AS '';
SELECT pg_catalog.citus_move_shard_placement(1);
PREPARE move_it AS SELECT pg_catalog.citus_move_shard_placement(1);
INSERT INTO microbatch.distributed_pipeline (pipeline_name, source_table, owner_role)
VALUES ('clicks', 'dist.events_101', 'mb_alice');
SELECT pg_catalog.citus_move_shard_placement(1);
\echo :SQLSTATE
SELECT * FROM pg_catalog.citus_move_shard_placement(1);
\echo :SQLSTATE
DO $$ BEGIN PERFORM pg_catalog.citus_move_shard_placement(1); END $$;
\echo :SQLSTATE
-- also when the call was parsed before: a SQL function's body, a prepared
-- statement
CREATE FUNCTION move_it() RETURNS void LANGUAGE sql
BEGIN ATOMIC SELECT pg_catalog.citus_move_shard_placement(1); END;
SELECT move_it();
\echo :SQLSTATE
DROP FUNCTION move_it();
EXECUTE move_it;
\echo :SQLSTATE
DEALLOCATE move_it;
SELECT pipeline, source, owner FROM microbatch.distributed_pipelines;
DELETE FROM microbatch.distributed_pipeline;
SELECT pg_catalog.citus_move_shard_placement(1);
DROP FUNCTION pg_catalog.citus_move_shard_placement(bigint);

SET ROLE mb_alice;
SELECT microbatch.remove_shard_transform('clicks', 'gold');
SELECT microbatch.drop_shard_pipelines('clicks');
SELECT count(*) FROM microbatch.shard_pipelines;
-- a shard gets its distributed table's columns back: the tracking column
-- goes where the shard pipeline added it
SELECT attrelid::regclass AS tracked FROM pg_attribute
 WHERE attrelid IN ('dist.events_101'::regclass, 'dist.events_102'::regclass)
   AND attname = 'microbatch_xid' AND NOT attisdropped;
-- nothing to drop is no error, and another pipeline's batch view stays
SELECT microbatch.create_pipeline('solo', 'dist.events_101');
SELECT microbatch.drop_shard_pipelines('solo');
SELECT pipeline FROM microbatch.pipelines;
SELECT microbatch.drop_pipeline('solo');
SELECT count(*) FROM pg_class WHERE relname = 'clicks_batch';
RESET ROLE;
-- a distributed pipeline whose table is dropped is forgotten
INSERT INTO microbatch.distributed_pipeline (pipeline_name, source_table, owner_role)
VALUES ('gone', 'dist.gold', 'mb_alice');
DROP TABLE dist.gold;
SELECT count(*) FROM microbatch.distributed_pipeline;
DROP SCHEMA dist CASCADE;
