--
-- Monitoring: per-batch progress, freshness, cumulative statistics
--
-- Times vary from run to run: the suite shows what they are (set, not
-- negative, adding up), not their values.  track_commit_timestamp is off in
-- this cluster; test/t/025_freshness.pl runs with it on.
--
CREATE ROLE mb_mon_owner LOGIN;
CREATE ROLE mb_mon_other LOGIN;
CREATE SCHEMA mon AUTHORIZATION mb_mon_owner;
GRANT USAGE ON SCHEMA mon TO mb_mon_other;
SET ROLE mb_mon_owner;
SET search_path = mon, public;

CREATE TABLE mon.events (id int, v int);
CREATE TABLE mon.bronze (batch_id bigint, id int, v int);
CREATE TABLE mon.silver (batch_id bigint, id int, v int);
SELECT microbatch.create_pipeline('mon', 'mon.events');
SELECT microbatch.add_expectation('mon', 'v_known', 'v IS NOT NULL', 'drop');
SELECT microbatch.add_transform('mon', 'load', 'bronze',
    $$INSERT INTO mon.bronze SELECT microbatch.current_batch_id(), id, v FROM microbatch.mon_batch$$);
-- a name that needs escaping in JSON
SELECT microbatch.add_transform('mon', 'clean "quoted" \ name', 'silver',
    $$INSERT INTO mon.silver SELECT batch_id, id, v FROM mon.bronze
       WHERE batch_id = microbatch.current_batch_id() AND v > 1$$);
SELECT microbatch.add_audit('mon', 'no_negative', 'silver',
    $$SELECT * FROM mon.silver WHERE v < 0$$, 'warn');

-- Nothing has run: no statistics, everything waits
SELECT * FROM microbatch.stat_pipelines;
INSERT INTO mon.events VALUES (1, 1), (2, 2), (3, 3), (4, NULL);
SELECT pipeline, state, rows_waiting, oldest_waiting_xid IS NOT NULL AS has_xid,
       oldest_waiting_committed_at, lag, lag_xids > 0 AS lag_xids,
       last_batch_at, last_batch_latency
  FROM microbatch.freshness;
-- the oldest waiting xid is the lowest tracking xid of the rows
SELECT f.oldest_waiting_xid = (SELECT min(microbatch_xid) FROM mon.events)
  FROM microbatch.freshness f;

--
-- 1. Per-batch progress: each step, in order, with its rows and time
--
SELECT microbatch.run_batch('mon');
SELECT pipeline, batch_id, attempt, status, step, kind, name, layer, rows,
       duration >= interval '0' AS timed
  FROM microbatch.batch_steps ORDER BY batch_id, attempt, step;
SELECT pipeline, batch_id, status, rows_in, rows_written, rows_dropped,
       lock_wait >= interval '0' AS lock_wait,
       window_time >= interval '0' AS window_time,
       expectations_time >= interval '0' AS expectations_time,
       transforms_time >= interval '0' AS transforms_time,
       audits_time >= interval '0' AS audits_time,
       window_time + expectations_time + transforms_time + audits_time <= duration
           AS steps_within_duration,
       oldest_row_committed_at, latency,
       processed_rows_per_second > 0 AS processed_rate,
       input_rows_per_second
  FROM microbatch.batch_progress;
-- the steps of the view are the ledger's
RESET ROLE;
SELECT jsonb_array_length(progress -> 'steps') AS steps,
       (progress ->> 'lock_wait_us')::bigint >= 0 AS lock_wait
  FROM microbatch.batch
 WHERE pipeline_id = (SELECT pipeline_id FROM microbatch.pipelines WHERE pipeline = 'mon');
SET ROLE mb_mon_owner;
-- nothing waits now
SELECT rows_waiting, oldest_waiting_xid, lag, lag_xids, last_batch_at IS NOT NULL AS ran
  FROM microbatch.freshness;

-- A second batch has an input rate: rows over the time since the first
INSERT INTO mon.events VALUES (5, 5);
SELECT microbatch.run_batch('mon');
SELECT batch_id, rows_in, rows_written, input_rows_per_second > 0 AS input_rate
  FROM microbatch.batch_progress ORDER BY batch_id;

-- A failed attempt keeps the steps that ran before the failure; a SELECT
-- writes no rows
SELECT microbatch.add_transform('mon', 'look', 'gold', $$SELECT * FROM mon.silver$$);
SELECT microbatch.add_transform('mon', 'boom', 'gold',
    $$SELECT 1 / (v - v) FROM microbatch.mon_batch$$);
INSERT INTO mon.events VALUES (6, 6);
SELECT microbatch.run_batch('mon');
SELECT batch_id, attempt, status, step, kind, name, rows
  FROM microbatch.batch_steps WHERE batch_id = 3 ORDER BY step;
SELECT batch_id, attempt, status, rows_in, rows_written, rows_dropped
  FROM microbatch.batch_progress WHERE batch_id = 3;
SELECT microbatch.remove_transform('mon', 'boom');
SELECT microbatch.run_batch('mon');
SELECT batch_id, attempt, status, step, kind, name, rows
  FROM microbatch.batch_steps WHERE batch_id = 3 AND status = 'committed' ORDER BY step;
SELECT microbatch.remove_transform('mon', 'look');

--
-- 2. Cumulative statistics: counted when the batch commits, and only then
--
SELECT pipeline, batches, failures, rows_in, rows_written, rows_dropped,
       total_time > 0 AS total_time, max_time <= total_time AS max_time,
       abs(mean_time - total_time / (batches + failures)) < 1e-9 AS mean_time,
       total_lock_wait_time >= 0 AS lock_wait, total_commit_time >= 0 AS commit_time,
       last_batch_at IS NOT NULL AS last_batch_at,
       duration_bounds, duration_buckets[10] AS attempts_within_60s,
       latency_bounds, latency_buckets, latency_count, latency_sum,
       stats_reset IS NOT NULL AS stats_reset
  FROM microbatch.stat_pipelines;
-- cumulative buckets never decrease
SELECT bool_and(d.b >= d.prev) AS cumulative
  FROM (SELECT b, lag(b, 1, 0::bigint) OVER (ORDER BY i) AS prev
          FROM microbatch.stat_pipelines, unnest(duration_buckets) WITH ORDINALITY AS u(b, i)) d;

-- A batch rolled back by its caller counts nothing, as it left no ledger row
INSERT INTO mon.events VALUES (7, 7);
BEGIN;
SELECT microbatch.run_batch('mon');
SELECT batches FROM microbatch.stat_pipelines;
ROLLBACK;
SELECT batches FROM microbatch.stat_pipelines;
-- nor does one in a savepoint rolled back; the one released counts
BEGIN;
SAVEPOINT s1;
SELECT microbatch.run_batch('mon');
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
SELECT microbatch.run_batch('mon');
RELEASE SAVEPOINT s2;
COMMIT;
SELECT batches, rows_in FROM microbatch.stat_pipelines;

-- A transform may not run a batch: the outer attempt fails with the steps
-- it took, and counts as a failure with no rows
CREATE TABLE mon.trigger_events (id int);
SELECT microbatch.create_pipeline('mon_outer', 'mon.trigger_events');
SELECT microbatch.add_transform('mon_outer', 'run_inner', 'bronze',
    $$SELECT microbatch.run_batch('mon') FROM microbatch.mon_outer_batch LIMIT 1$$);
INSERT INTO mon.events VALUES (8, 8);
INSERT INTO mon.trigger_events VALUES (1);
SELECT microbatch.run_batch('mon_outer');
SELECT pipeline, batch_id, step, kind, name, rows
  FROM microbatch.batch_steps
 WHERE pipeline = 'mon_outer'
 ORDER BY pipeline, batch_id, step;
SELECT pipeline, batches, failures, rows_in FROM microbatch.stat_pipelines ORDER BY pipeline;

-- A preview records nothing: no ledger row, no statistics
INSERT INTO mon.events VALUES (9, 9);
SELECT step, kind, name, rows FROM microbatch.preview_batch('mon');
SELECT batches FROM microbatch.stat_pipelines WHERE pipeline = 'mon';
SELECT count(*) FROM microbatch.batch_progress WHERE pipeline = 'mon';

--
-- 3. Other roles see nothing of it, and cannot reset it
--
RESET ROLE;
SET ROLE mb_mon_other;
SELECT count(*) FROM microbatch.stat_pipelines;
SELECT count(*) FROM microbatch.pipeline_stats();
SELECT count(*) FROM microbatch.batch_progress;
SELECT count(*) FROM microbatch.batch_steps;
SELECT count(*) FROM microbatch.freshness;
SELECT * FROM microbatch.backlog('mon');
SELECT microbatch.stat_reset('mon');
\echo :SQLSTATE
SELECT microbatch.stat_reset('no_such_pipeline');
\echo :SQLSTATE
-- a reset of all is a reset of one's own
SELECT microbatch.stat_reset();
RESET ROLE;
-- pg_read_all_stats sees the counts (as an exporter's pg_monitor role
-- does), not the batches' steps, and resets nothing
GRANT pg_read_all_stats TO mb_mon_other;
SET ROLE mb_mon_other;
SELECT pipeline, batches > 0 AS counted FROM microbatch.stat_pipelines ORDER BY pipeline;
SELECT pipeline, state, consecutive_failures, rows_waiting FROM microbatch.freshness ORDER BY pipeline;
SELECT rows_waiting FROM microbatch.backlog('mon');
SELECT count(*) FROM microbatch.batch_progress;
SELECT count(*) FROM microbatch.batch_steps;
SELECT microbatch.stat_reset('mon');
\echo :SQLSTATE
SELECT microbatch.stat_reset();
RESET ROLE;
SELECT pipeline, batches > 0 AS still_counted FROM microbatch.stat_pipelines ORDER BY pipeline;
-- a forced row security policy on the source would run the owner's code
-- in the monitoring role's session: the count is not given to it
CREATE FUNCTION mon.trap() RETURNS boolean LANGUAGE plpgsql AS
    $$BEGIN RAISE NOTICE 'the owner''s policy ran as %', current_user; RETURN true; END$$;
ALTER FUNCTION mon.trap() OWNER TO mb_mon_owner;
SET ROLE mb_mon_owner;
ALTER TABLE mon.events ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY trap ON mon.events USING (mon.trap());
RESET ROLE;
SET ROLE mb_mon_other;
SELECT * FROM microbatch.backlog('mon');
SELECT microbatch.rows_waiting('mon');
SELECT pipeline, rows_waiting, lag FROM microbatch.freshness WHERE pipeline = 'mon';
RESET ROLE;
SET ROLE mb_mon_owner;
SELECT rows_waiting FROM microbatch.backlog('mon');
DROP POLICY trap ON mon.events;
ALTER TABLE mon.events NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY;
RESET ROLE;
REVOKE pg_read_all_stats FROM mb_mon_other;
SET ROLE mb_mon_owner;
SELECT pipeline, batches > 0 AS counted FROM microbatch.stat_pipelines ORDER BY pipeline;

--
-- 4. stat_reset() zeroes the counts and restarts stats_reset
--
SELECT stats_reset AS before_reset FROM microbatch.stat_pipelines WHERE pipeline = 'mon' \gset
SELECT microbatch.stat_reset('mon');
SELECT pipeline, batches, failures, rows_in, total_time > 0 AS total_time,
       mean_time > 0 AS mean_time, duration_buckets[10] AS within_60s, latency_count,
       stats_reset > :'before_reset' AS reset_later
  FROM microbatch.stat_pipelines ORDER BY pipeline;
SELECT microbatch.stat_reset();
SELECT pipeline, batches FROM microbatch.stat_pipelines ORDER BY pipeline;

-- A batch in a prepared transaction is in the ledger once committed, but
-- not counted: its outcome is known only where it is committed
INSERT INTO mon.events VALUES (10, 10);
BEGIN;
SELECT microbatch.run_batch('mon');
PREPARE TRANSACTION 'mon_batch';
COMMIT PREPARED 'mon_batch';
SELECT (SELECT batches FROM microbatch.stat_pipelines WHERE pipeline = 'mon') AS counted,
       (SELECT count(*) FROM microbatch.batch_progress WHERE pipeline = 'mon' AND status = 'committed') AS in_ledger;

-- A dropped pipeline's statistics go when the drop commits
SELECT microbatch.run_batch('mon');
BEGIN;
SELECT microbatch.drop_pipeline('mon_outer');
ROLLBACK;
SELECT pipeline FROM microbatch.stat_pipelines ORDER BY pipeline;
SELECT microbatch.drop_pipeline('mon_outer');
SELECT pipeline FROM microbatch.pipeline_stats() JOIN microbatch.pipelines USING (pipeline_id);
SELECT count(*) FROM microbatch.pipeline_stats();

-- Clean up
SELECT microbatch.drop_pipeline('mon');
RESET ROLE;
DROP SCHEMA mon CASCADE;
DROP ROLE mb_mon_owner;
DROP ROLE mb_mon_other;
