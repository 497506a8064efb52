--
-- Lifecycle: staging retention, history retention, backfills, reset,
-- preview, transform versions
--
-- Background workers may run in this cluster, so a retention setting that
-- stays committed never lets a row become removable behind the suite's back:
-- it is either '100 years' (every batch is younger), or '0' on a source
-- whose rows a paused pipeline still holds.  Removals happen in explicit
-- transactions that set '0' first.
--
CREATE ROLE mb_lc_owner LOGIN;
CREATE ROLE mb_lc_other LOGIN;
CREATE SCHEMA lc AUTHORIZATION mb_lc_owner;
GRANT USAGE ON SCHEMA lc TO mb_lc_other;
SET ROLE mb_lc_owner;
SET search_path = lc, public;

-- The settings, and their defaults
SHOW microbatch.history_retention;
SHOW microbatch.retention_step_rows;
SHOW microbatch.backfill_delay;
SET microbatch.history_retention = '1h';
\echo :SQLSTATE

--
-- 1. Staging retention: the setting
--
CREATE TABLE lc.events (id int, v int);
CREATE TABLE lc.orphan (id int);
CREATE TABLE lc.out_a (batch_id bigint, id int);
CREATE TABLE lc.out_b (batch_id bigint, id int);
SELECT microbatch.create_pipeline('lc_a', 'lc.events');
SELECT microbatch.add_transform('lc_a', 'copy', 'bronze',
    $$WITH earlier AS (DELETE FROM lc.out_a WHERE batch_id = microbatch.current_batch_id())
      INSERT INTO lc.out_a SELECT microbatch.current_batch_id(), id FROM microbatch.lc_a_batch$$);
SELECT microbatch.create_pipeline('lc_b', 'lc.events');
SELECT microbatch.add_transform('lc_b', 'copy', 'bronze',
    $$INSERT INTO lc.out_b SELECT microbatch.current_batch_id(), id FROM microbatch.lc_b_batch$$);

-- errors: nothing is stored
SELECT microbatch.set_retention(NULL, '1 day');
\echo :SQLSTATE
SELECT microbatch.set_retention('lc.events', '-1 second');
\echo :SQLSTATE
SELECT microbatch.set_retention('lc.events', '1 day -25 hours');
\echo :SQLSTATE
-- a table that no pipeline reads
SELECT microbatch.set_retention('lc.orphan', '1 day');
\echo :SQLSTATE
SELECT microbatch.retention_now('lc.orphan');
\echo :SQLSTATE
-- a role without the privileges of the table's owner
RESET ROLE;
SET ROLE mb_lc_other;
SELECT microbatch.set_retention('lc.events', '1 day');
\echo :SQLSTATE
SELECT microbatch.retention_now('lc.events');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_owner;
SELECT count(*) AS settings FROM microbatch.retention;

-- a setting: one row in the view
SELECT microbatch.set_retention('lc.events', '100 years');
SELECT source, retain, removable_rows, rows_removed, partitions_dropped,
       last_removed_at IS NULL AS never_removed
  FROM microbatch.retention;

--
-- 2. A row goes once every pipeline on the table processed it and the
-- batches over it are older than retain
--
INSERT INTO lc.events VALUES (1, 10), (2, 20), (3, 30);
SELECT microbatch.run_batch('lc_a');
-- lc_b has not processed the rows: nothing goes
BEGIN;
SELECT microbatch.set_retention('lc.events', '0');
SELECT source, retain, held_back_by, held_back_state, removable_rows,
       (SELECT count(*) FROM lc.events e WHERE e.microbatch_xid < r.horizon_xid) AS rows_below_horizon
  FROM microbatch.retention r;
SELECT microbatch.retention_now('lc.events') AS removed;
SELECT id FROM lc.events ORDER BY id;
ROLLBACK;
SELECT microbatch.run_batch('lc_b');
-- rows committed after the last batches are in the next windows: they stay
INSERT INTO lc.events VALUES (4, 40), (5, 50);
-- the batches finished less than an hour ago: nothing goes
BEGIN;
SELECT microbatch.set_retention('lc.events', '1 hour');
SELECT removable_rows,
       (SELECT count(*) FROM lc.events e WHERE e.microbatch_xid < r.horizon_xid) AS rows_below_horizon
  FROM microbatch.retention r;
SELECT microbatch.retention_now('lc.events') AS removed;
ROLLBACK;
-- with retain 0, rows 1 to 3 go; retention_now is part of its transaction
BEGIN;
SELECT microbatch.set_retention('lc.events', '0');
SELECT removable_rows,
       (SELECT count(*) FROM lc.events e WHERE e.microbatch_xid < r.horizon_xid) AS rows_below_horizon
  FROM microbatch.retention r;
SELECT microbatch.retention_now('lc.events') AS removed;
SELECT id FROM lc.events ORDER BY id;
ROLLBACK;
SELECT id FROM lc.events ORDER BY id;
SELECT rows_removed FROM microbatch.retention;
BEGIN;
SELECT microbatch.set_retention('lc.events', '0');
SELECT microbatch.retention_now('lc.events') AS removed;
SELECT microbatch.retention_now('lc.events') AS removed_again;
SELECT microbatch.set_retention('lc.events', '100 years');
COMMIT;
SELECT id FROM lc.events ORDER BY id;
SELECT retain, removable_rows, rows_removed, partitions_dropped,
       last_removed_at IS NOT NULL AS removed_at_set
  FROM microbatch.retention;
-- the outputs are untouched
SELECT batch_id, count(*) FROM lc.out_a GROUP BY 1 ORDER BY 1;

--
-- 3. A paused pipeline holds rows back
--
SELECT microbatch.pause_pipeline('lc_b');
SELECT microbatch.run_batch('lc_a');
INSERT INTO lc.events VALUES (6, 60);
SELECT microbatch.run_batch('lc_a');
-- lc_b is paused, so nothing lc_a processed since can go; this setting
-- stays committed
SELECT microbatch.set_retention('lc.events', '0');
SELECT source, retain, held_back_by, held_back_state, removable_rows, rows_removed
  FROM microbatch.retention;
SELECT microbatch.retention_now('lc.events') AS removed;
SELECT id FROM lc.events ORDER BY id;

--
-- 4. Replays of batches whose rows retention removed are refused, before
-- anything is replayed
--
SELECT batch_id, status, rows_in, replays FROM microbatch.batches
 WHERE pipeline = 'lc_a' ORDER BY batch_id;
SELECT microbatch.replay_batch('lc_a', 1);
\echo :SQLSTATE
SELECT microbatch.replay_batch('lc_b', 1);
\echo :SQLSTATE
-- a range: batch 1 is outside, 2 and 3 are not; none is replayed
CALL microbatch.replay('lc_a', 1, 3);
\echo :SQLSTATE
SELECT microbatch.start_replay('lc_a', 1, 3);
\echo :SQLSTATE
SELECT batch_id, replays FROM microbatch.batches WHERE pipeline = 'lc_a' ORDER BY batch_id;
SELECT batch_id, count(*) FROM lc.out_a GROUP BY 1 ORDER BY 1;
-- batches 2 and 3 are kept by lc_b, which has not processed their rows
SELECT microbatch.replay_batch('lc_a', 2);
CALL microbatch.replay('lc_a', 2, 3);
SELECT batch_id, replays FROM microbatch.batches WHERE pipeline = 'lc_a' ORDER BY batch_id;
SELECT batch_id, count(*) FROM lc.out_a GROUP BY 1 ORDER BY 1;

-- roles without the owner's privileges see no setting
RESET ROLE;
SET ROLE mb_lc_other;
SELECT count(*) AS other_sees FROM microbatch.retention;
RESET ROLE;
SET ROLE mb_lc_owner;

-- NULL removes the setting; replays of batches whose rows it removed are
-- still refused
SELECT microbatch.set_retention('lc.events', NULL);
SELECT count(*) AS settings FROM microbatch.retention;
SELECT microbatch.replay_batch('lc_a', 1);
\echo :SQLSTATE

--
-- 5. Partitioned sources
--
CREATE TABLE lc.parts (id int, v int) PARTITION BY RANGE (id);
CREATE TABLE lc.parts_1 PARTITION OF lc.parts FOR VALUES FROM (0) TO (100);
CREATE TABLE lc.parts_2 PARTITION OF lc.parts FOR VALUES FROM (100) TO (200);
CREATE TABLE lc.parts_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('lc_parts', 'lc.parts');
SELECT microbatch.add_transform('lc_parts', 'copy', 'bronze',
    $$INSERT INTO lc.parts_out SELECT microbatch.current_batch_id(), id FROM microbatch.lc_parts_batch$$);
SELECT microbatch.create_pipeline('lc_leaf', 'lc.parts_2');
SELECT microbatch.add_transform('lc_leaf', 'copy', 'bronze',
    $$INSERT INTO lc.parts_out SELECT -microbatch.current_batch_id(), id FROM microbatch.lc_leaf_batch$$);
-- a partition of a source may have the setting, but not also its parent
SELECT microbatch.set_retention('lc.parts_1', '100 years');
SELECT microbatch.set_retention('lc.parts', '100 years');
\echo :SQLSTATE
-- changing the table's own setting is not a second one
SELECT microbatch.set_retention('lc.parts_1', '200 years');
SELECT source, retain FROM microbatch.retention WHERE source::text LIKE 'parts%' ORDER BY source::text;
SELECT microbatch.set_retention('lc.parts_1', NULL);
-- the parent's setting excludes its partitions'
SELECT microbatch.set_retention('lc.parts', '100 years');
SELECT microbatch.set_retention('lc.parts_2', '1 day');
\echo :SQLSTATE
SELECT microbatch.set_retention('lc.parts_1', '1 day');
\echo :SQLSTATE
SELECT source, retain FROM microbatch.retention WHERE source::text LIKE 'parts%' ORDER BY source::text;

-- one horizon for the whole tree: lc_leaf, on parts_2, has not run, so it
-- holds back the rows of parts_1 too, which only lc_parts reads (removing
-- less than allowed, never more)
INSERT INTO lc.parts VALUES (1, 1), (2, 2), (101, 101), (102, 102);
SELECT microbatch.run_batch('lc_parts');
BEGIN;
SELECT microbatch.set_retention('lc.parts', '0');
SELECT microbatch.retention_now('lc.parts') AS removed;
SELECT tableoid::regclass AS partition, id FROM lc.parts ORDER BY id;
ROLLBACK;
SELECT microbatch.run_batch('lc_leaf');
BEGIN;
SELECT microbatch.set_retention('lc.parts', '0');
SELECT microbatch.retention_now('lc.parts') AS removed;
SELECT tableoid::regclass AS partition, id FROM lc.parts ORDER BY id;
-- partitions on an integer key are emptied, not dropped
SELECT inhrelid::regclass AS partition FROM pg_inherits
 WHERE inhparent = 'lc.parts'::regclass ORDER BY 1::text;
SELECT rows_removed, partitions_dropped FROM microbatch.retention WHERE source = 'lc.parts'::regclass;
ROLLBACK;

-- a partition on a time key wholly in the past, all of whose rows can go,
-- is detached and dropped once the table has a default partition, which
-- takes late rows (without one, such a row would have nowhere to go, so the
-- partition is only emptied); one holding a row not processed yet is
-- emptied of the others; the last one, with no upper bound, is emptied
CREATE TABLE lc.log (at timestamptz, id int) PARTITION BY RANGE (at);
CREATE TABLE lc.log_2020 PARTITION OF lc.log FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
CREATE TABLE lc.log_2021 PARTITION OF lc.log FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
CREATE TABLE lc.log_now PARTITION OF lc.log FOR VALUES FROM ('2022-01-01') TO (MAXVALUE);
CREATE TABLE lc.log_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('lc_log', 'lc.log');
SELECT microbatch.add_transform('lc_log', 'copy', 'bronze',
    $$INSERT INTO lc.log_out SELECT microbatch.current_batch_id(), id FROM microbatch.lc_log_batch$$);
INSERT INTO lc.log VALUES ('2020-03-01', 1), ('2020-04-01', 2), ('2021-03-01', 3),
                          (now(), 4), (now(), 5);
SELECT microbatch.run_batch('lc_log');
INSERT INTO lc.log VALUES ('2021-05-01', 6), (now(), 7);
BEGIN;
SELECT microbatch.set_retention('lc.log', '0');
SELECT microbatch.retention_now('lc.log') AS removed;
SELECT tableoid::regclass AS partition, id FROM lc.log ORDER BY id;
SELECT to_regclass('lc.log_2020') AS log_2020;
SELECT inhrelid::regclass AS partition FROM pg_inherits
 WHERE inhparent = 'lc.log'::regclass ORDER BY 1::text;
SELECT rows_removed, partitions_dropped FROM microbatch.retention WHERE source = 'lc.log'::regclass;
CREATE TABLE lc.log_late PARTITION OF lc.log DEFAULT;
SELECT microbatch.retention_now('lc.log') AS removed;
SELECT inhrelid::regclass AS partition FROM pg_inherits
 WHERE inhparent = 'lc.log'::regclass ORDER BY 1::text;
SELECT rows_removed, partitions_dropped FROM microbatch.retention WHERE source = 'lc.log'::regclass;
INSERT INTO lc.log VALUES ('2020-06-01', 8);
SELECT tableoid::regclass AS partition, id FROM lc.log WHERE id = 8;
ROLLBACK;
SELECT microbatch.drop_pipeline('lc_log');
DROP TABLE lc.log, lc.log_out;

-- Rows go with the rights of the retention's table owner: a partition a
-- superuser added, with a row trigger the owner wrote on the parent (copied
-- onto every new partition), keeps its rows, and the trigger never runs as
-- the superuser
CREATE TABLE lc.ten (id int, v int) PARTITION BY RANGE (id);
CREATE TABLE lc.ten_a PARTITION OF lc.ten FOR VALUES FROM (0) TO (100);
CREATE FUNCTION lc.ten_escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mb_lc_owner SUPERUSER';
    END IF;
    RETURN OLD;
END$$;
CREATE TRIGGER ten_escalate BEFORE DELETE ON lc.ten
    FOR EACH ROW EXECUTE FUNCTION lc.ten_escalate();
CREATE TABLE lc.ten_out (id int);
SELECT microbatch.create_pipeline('lc_ten', 'lc.ten');
SELECT microbatch.add_transform('lc_ten', 'copy', 'bronze',
    $$INSERT INTO lc.ten_out SELECT id FROM microbatch.lc_ten_batch$$);
RESET ROLE;
CREATE TABLE lc.ten_b PARTITION OF lc.ten FOR VALUES FROM (100) TO (200);
SET ROLE mb_lc_owner;
INSERT INTO lc.ten VALUES (1, 1), (150, 2);
SELECT microbatch.run_batch('lc_ten');
SELECT microbatch.set_retention('lc.ten', '0');
SELECT microbatch.retention_now('lc.ten') AS removed;
SELECT tableoid::regclass AS partition, id FROM lc.ten ORDER BY id;
SELECT rolsuper FROM pg_roles WHERE rolname = 'mb_lc_owner';
SELECT microbatch.drop_pipeline('lc_ten');
RESET ROLE;
DROP TABLE lc.ten, lc.ten_out;
DROP FUNCTION lc.ten_escalate();
SET ROLE mb_lc_owner;

--
-- 6. History retention: the per-pipeline setting
--
SELECT pipeline, history_retention FROM microbatch.pipelines WHERE pipeline = 'lc_a';
SELECT microbatch.set_history_retention('lc_a', '30 days');
SELECT pipeline, history_retention FROM microbatch.pipelines WHERE pipeline = 'lc_a';
SELECT microbatch.set_history_retention('lc_a', NULL);
SELECT pipeline, history_retention FROM microbatch.pipelines WHERE pipeline = 'lc_a';
SELECT microbatch.set_history_retention(NULL, '1 day');
\echo :SQLSTATE
SELECT microbatch.set_history_retention('no_such_pipeline', '1 day');
\echo :SQLSTATE
SELECT microbatch.set_history_retention('lc_a', '-1 day');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_other;
SELECT microbatch.set_history_retention('lc_a', '1 day');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_owner;
SELECT pipeline, history_retention FROM microbatch.pipelines WHERE pipeline = 'lc_a';

--
-- 7. Reset: the next batch starts again from the first row still in the
-- table, in the same transaction as the TRUNCATE of the outputs
--
CREATE TABLE lc.sales (id int, amount int);
CREATE TABLE lc.gold_sales (batch_id bigint PRIMARY KEY, n bigint, total bigint);
SELECT microbatch.create_pipeline('lc_sales', 'lc.sales');
SELECT microbatch.add_transform('lc_sales', 'totals', 'gold',
    $$INSERT INTO lc.gold_sales
      SELECT microbatch.current_batch_id(), count(*), sum(amount) FROM microbatch.lc_sales_batch
      ON CONFLICT (batch_id) DO UPDATE SET n = excluded.n, total = excluded.total$$);
INSERT INTO lc.sales VALUES (1, 100), (2, 200), (3, 300);
SELECT microbatch.run_batch('lc_sales');
INSERT INTO lc.sales VALUES (4, 400), (5, 500);
SELECT microbatch.run_batch('lc_sales');
-- row 1 is no longer in the staging table
DELETE FROM lc.sales WHERE id = 1;
BEGIN;
TRUNCATE lc.gold_sales;
SELECT microbatch.reset_pipeline('lc_sales');
SELECT microbatch.rows_waiting('lc_sales');
COMMIT;
SELECT batch_id, status, rows_in, note LIKE 'reset by mb_lc_owner:%' AS reset_note
  FROM microbatch.batches WHERE pipeline = 'lc_sales' ORDER BY batch_id, attempt;
SELECT last_batch_id, rows_waiting FROM microbatch.pipelines WHERE pipeline = 'lc_sales';
SELECT microbatch.run_batch('lc_sales');
SELECT * FROM lc.gold_sales ORDER BY batch_id;
SELECT batch_id, status, rows_in FROM microbatch.batches
 WHERE pipeline = 'lc_sales' ORDER BY batch_id, attempt;
SELECT microbatch.run_batch('lc_sales');
-- a reset that rolls back leaves no trace: the next batch takes its id
BEGIN;
TRUNCATE lc.gold_sales;
SELECT microbatch.reset_pipeline('lc_sales');
ROLLBACK;
SELECT count(*) AS ledger_rows, max(batch_id) AS last_id
  FROM microbatch.batches WHERE pipeline = 'lc_sales';
SELECT microbatch.rows_waiting('lc_sales');
SELECT microbatch.run_batch('lc_sales');
SELECT * FROM lc.gold_sales ORDER BY batch_id;
INSERT INTO lc.sales VALUES (6, 600);
SELECT microbatch.run_batch('lc_sales');
SELECT * FROM lc.gold_sales ORDER BY batch_id;
-- errors
SELECT microbatch.reset_pipeline(NULL);
\echo :SQLSTATE
SELECT microbatch.reset_pipeline('no_such_pipeline');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_other;
SELECT microbatch.reset_pipeline('lc_sales');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_owner;
SELECT count(*) AS ledger_rows FROM microbatch.batches WHERE pipeline = 'lc_sales';

--
-- 8. Preview: the next batch, rolled back
--
CREATE TABLE lc.signups (id int, email text, plan text);
CREATE TABLE lc.signups_clean (batch_id bigint, id int, email text, plan text);
CREATE TABLE lc.signups_plans (batch_id bigint, plan text, n bigint);
SELECT microbatch.create_pipeline('lc_prev', 'lc.signups');
SELECT microbatch.add_transform('lc_prev', 'clean', 'silver',
    $$INSERT INTO lc.signups_clean
      SELECT microbatch.current_batch_id(), id, email, plan FROM microbatch.lc_prev_batch$$);
SELECT microbatch.add_transform('lc_prev', 'plans', 'gold',
    $$INSERT INTO lc.signups_plans
      SELECT microbatch.current_batch_id(), plan, count(*) FROM microbatch.lc_prev_batch GROUP BY plan$$);
SELECT microbatch.add_transform('lc_prev', 'raw_count', 'bronze',
    'SELECT count(*) FROM microbatch.lc_prev_batch');
SELECT microbatch.add_expectation('lc_prev', 'has_email', 'email IS NOT NULL', 'drop');
SELECT microbatch.add_expectation('lc_prev', 'known_plan', $$plan IN ('free', 'pro')$$, 'warn');
SELECT microbatch.add_audit('lc_prev', 'odd_emails', 'silver',
    $$SELECT id FROM lc.signups_clean
       WHERE email NOT LIKE '%@%' AND batch_id = microbatch.current_batch_id()$$, 'warn');
-- an empty window: the window row alone
SELECT step, kind, name, layer, rows FROM microbatch.preview_batch('lc_prev');
INSERT INTO lc.signups VALUES (1, 'a@x', 'free'), (2, NULL, 'pro'), (3, 'c@x', 'gold'),
                              (4, 'bad', 'free'), (5, 'e@x', 'pro');
SELECT step, kind, name, layer, rows FROM microbatch.preview_batch('lc_prev');
SELECT count(*) AS bad_durations FROM microbatch.preview_batch('lc_prev')
 WHERE duration IS NULL OR duration < interval '0';
-- nothing remains of it
SELECT (SELECT count(*) FROM microbatch.batches WHERE pipeline = 'lc_prev') AS ledger_rows,
       (SELECT count(*) FROM lc.signups_clean) AS clean_rows,
       (SELECT count(*) FROM lc.signups_plans) AS plan_rows,
       (SELECT count(*) FROM microbatch.quarantine WHERE pipeline = 'lc_prev') AS quarantined,
       (SELECT count(*) FROM microbatch.expectation_results WHERE pipeline = 'lc_prev') AS results,
       microbatch.rows_waiting('lc_prev') AS rows_waiting;
-- the next batch covers the same rows
SELECT microbatch.run_batch('lc_prev');
SELECT batch_id, status, rows_in, rows_dropped FROM microbatch.batches WHERE pipeline = 'lc_prev';
SELECT id FROM lc.signups_clean ORDER BY id;
SELECT row_data->>'id' AS quarantined_id FROM microbatch.quarantine WHERE pipeline = 'lc_prev';
SELECT kind, name, failed_rows FROM microbatch.expectation_results
 WHERE pipeline = 'lc_prev' ORDER BY kind, name;

-- fail checks do not raise in a preview: their rows show the failing rows
SELECT microbatch.add_expectation('lc_prev', 'no_gold', $$plan <> 'gold'$$, 'fail');
SELECT microbatch.add_audit('lc_prev', 'no_gold_plans', 'gold',
    $$SELECT plan FROM lc.signups_plans
       WHERE plan = 'gold' AND batch_id = microbatch.current_batch_id()$$, 'fail');
INSERT INTO lc.signups VALUES (6, 'f@x', 'gold'), (7, 'g@x', 'free');
SELECT step, kind, name, layer, rows FROM microbatch.preview_batch('lc_prev');
SELECT (SELECT count(*) FROM microbatch.batches WHERE pipeline = 'lc_prev') AS ledger_rows,
       (SELECT count(*) FROM lc.signups_clean) AS clean_rows,
       (SELECT count(*) FROM microbatch.quarantine WHERE pipeline = 'lc_prev') AS quarantined,
       (SELECT count(*) FROM microbatch.expectation_results WHERE pipeline = 'lc_prev') AS results,
       consecutive_failures
  FROM microbatch.pipelines WHERE pipeline = 'lc_prev';
SELECT microbatch.remove_expectation('lc_prev', 'no_gold');
SELECT microbatch.remove_audit('lc_prev', 'no_gold_plans');
SELECT microbatch.run_batch('lc_prev');
SELECT batch_id, status, rows_in FROM microbatch.batches WHERE pipeline = 'lc_prev' ORDER BY batch_id;

-- a transform's error is raised, with the transform named, and leaves nothing
SELECT microbatch.add_transform('lc_prev', 'boom', 'gold',
    'SELECT 1 / (id - id) FROM microbatch.lc_prev_batch');
INSERT INTO lc.signups VALUES (8, 'h@x', 'pro');
SELECT step, kind, name, layer, rows FROM microbatch.preview_batch('lc_prev');
\echo :SQLSTATE
SELECT (SELECT count(*) FROM microbatch.batches WHERE pipeline = 'lc_prev') AS ledger_rows,
       consecutive_failures
  FROM microbatch.pipelines WHERE pipeline = 'lc_prev';
SELECT microbatch.remove_transform('lc_prev', 'boom');
-- errors
SELECT * FROM microbatch.preview_batch(NULL);
\echo :SQLSTATE
SELECT * FROM microbatch.preview_batch('no_such_pipeline');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_other;
SELECT * FROM microbatch.preview_batch('lc_prev');
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_owner;

--
-- 9. Transform versions
--
CREATE TABLE lc.items (id int, price int);
CREATE TABLE lc.items_out (batch_id bigint, id int, price int);
SELECT microbatch.create_pipeline('lc_ver', 'lc.items');
SELECT microbatch.add_transform('lc_ver', 'first', 'bronze', 'SELECT count(*) FROM microbatch.lc_ver_batch');
SELECT microbatch.add_transform('lc_ver', 'load', 'bronze',
    $$WITH earlier AS (DELETE FROM lc.items_out WHERE batch_id = microbatch.current_batch_id())
      INSERT INTO lc.items_out SELECT microbatch.current_batch_id(), id, price FROM microbatch.lc_ver_batch$$);
SELECT microbatch.add_transform('lc_ver', 'last', 'bronze', 'SELECT 1');
SELECT transform, layer, run_order, version FROM microbatch.transforms
 WHERE pipeline = 'lc_ver' ORDER BY run_order;
INSERT INTO lc.items VALUES (1, 10);
SELECT microbatch.run_batch('lc_ver');
-- replace keeps the layer and the place in the run order
SELECT microbatch.replace_transform('lc_ver', 'load',
    $$WITH earlier AS (DELETE FROM lc.items_out WHERE batch_id = microbatch.current_batch_id())
      INSERT INTO lc.items_out SELECT microbatch.current_batch_id(), id, price * 2 FROM microbatch.lc_ver_batch$$);
SELECT transform, layer, run_order, version, command LIKE '%price * 2%' AS new_command
  FROM microbatch.transforms WHERE pipeline = 'lc_ver' ORDER BY run_order;
INSERT INTO lc.items VALUES (2, 20);
SELECT microbatch.run_batch('lc_ver');
SELECT * FROM lc.items_out ORDER BY batch_id;
SELECT batch_id, transform_versions FROM microbatch.batches
 WHERE pipeline = 'lc_ver' ORDER BY batch_id;
SELECT transform, version, layer, command LIKE '%price * 2%' AS doubles, search_path,
       created_at IS NOT NULL AS has_created_at
  FROM microbatch.transform_history WHERE pipeline = 'lc_ver' ORDER BY transform, version;
-- errors: nothing changes
SELECT microbatch.replace_transform('lc_ver', 'no_such_transform', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.replace_transform('no_such_pipeline', 'load', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.replace_transform('lc_ver', 'load', 'SELEC 1');
\echo :SQLSTATE
SELECT microbatch.replace_transform('lc_ver', 'load', 'SELECT nosuch FROM microbatch.lc_ver_batch');
\echo :SQLSTATE
SELECT microbatch.replace_transform('lc_ver', 'load', 'TRUNCATE lc.items_out');
\echo :SQLSTATE
SELECT microbatch.replace_transform('lc_ver', 'load', 'SELECT 1; SELECT 2');
\echo :SQLSTATE
SELECT microbatch.replace_transform('lc_ver', 'load', NULL);
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_other;
SELECT microbatch.replace_transform('lc_ver', 'load', 'SELECT 1');
\echo :SQLSTATE
SELECT count(*) AS other_sees FROM microbatch.transform_history;
RESET ROLE;
SET ROLE mb_lc_owner;
SELECT transform, version FROM microbatch.transforms WHERE pipeline = 'lc_ver' ORDER BY run_order;
SELECT count(*) AS versions FROM microbatch.transform_history WHERE pipeline = 'lc_ver';

-- a replay runs, and records, the current versions
SELECT microbatch.replace_transform('lc_ver', 'load',
    $$WITH earlier AS (DELETE FROM lc.items_out WHERE batch_id = microbatch.current_batch_id())
      INSERT INTO lc.items_out SELECT microbatch.current_batch_id(), id, price * 3 FROM microbatch.lc_ver_batch$$);
SELECT microbatch.replay_batch('lc_ver', 1);
SELECT * FROM lc.items_out ORDER BY batch_id;
SELECT batch_id, replays, transform_versions FROM microbatch.batches
 WHERE pipeline = 'lc_ver' ORDER BY batch_id;
-- a name used before continues its numbering, at the end of its new layer
SELECT microbatch.remove_transform('lc_ver', 'load');
SELECT microbatch.add_transform('lc_ver', 'load', 'gold',
    $$WITH earlier AS (DELETE FROM lc.items_out WHERE batch_id = microbatch.current_batch_id())
      INSERT INTO lc.items_out SELECT microbatch.current_batch_id(), id, price * 4 FROM microbatch.lc_ver_batch$$);
SELECT transform, layer, run_order, version FROM microbatch.transforms
 WHERE pipeline = 'lc_ver' ORDER BY run_order;
SELECT transform, version, layer FROM microbatch.transform_history
 WHERE pipeline = 'lc_ver' ORDER BY transform, version;

--
-- 10. Backfills: CALL microbatch.replay
--
-- inside a transaction block it cannot commit after each batch
BEGIN;
CALL microbatch.replay('lc_ver', 1, 2);
\echo :SQLSTATE
ROLLBACK;
-- every committed batch of the range, the range may reach past the last one
CALL microbatch.replay('lc_ver', 1, 99);
SELECT * FROM lc.items_out ORDER BY batch_id;
SELECT batch_id, replays, transform_versions FROM microbatch.batches
 WHERE pipeline = 'lc_ver' ORDER BY batch_id;
-- by time: the batches that started in [from_time, to_time)
SELECT started_at AS t1 FROM microbatch.batches WHERE pipeline = 'lc_ver' AND batch_id = 1 \gset
SELECT started_at AS t2 FROM microbatch.batches WHERE pipeline = 'lc_ver' AND batch_id = 2 \gset
SET client_min_messages = warning;
CALL microbatch.replay('lc_ver', :'t1'::timestamptz, :'t2'::timestamptz);
SELECT batch_id, replays FROM microbatch.batches WHERE pipeline = 'lc_ver' ORDER BY batch_id;
CALL microbatch.replay('lc_ver', from_time => :'t2', to_time => now());
RESET client_min_messages;
SELECT batch_id, replays FROM microbatch.batches WHERE pipeline = 'lc_ver' ORDER BY batch_id;
-- untyped literals are ambiguous
CALL microbatch.replay('lc_ver', '1', '2');
\echo :SQLSTATE
-- errors
CALL microbatch.replay('lc_ver', NULL::bigint, 2);
\echo :SQLSTATE
CALL microbatch.replay('no_such_pipeline', 1, 2);
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_other;
CALL microbatch.replay('lc_ver', 1, 2);
\echo :SQLSTATE
SELECT microbatch.start_replay('lc_ver', 1, 2);
\echo :SQLSTATE
RESET ROLE;
SET ROLE mb_lc_owner;
SELECT batch_id, replays FROM microbatch.batches WHERE pipeline = 'lc_ver' ORDER BY batch_id;
SELECT count(*) AS running_backfills FROM microbatch.replay_progress;

--
-- Clean up
--
SELECT microbatch.drop_pipeline(pipeline) FROM microbatch.pipelines
 WHERE pipeline IN ('lc_a', 'lc_b', 'lc_parts', 'lc_leaf', 'lc_sales', 'lc_prev', 'lc_ver')
 ORDER BY pipeline;
RESET ROLE;
RESET search_path;
DROP SCHEMA lc CASCADE;
DROP ROLE mb_lc_owner;
DROP ROLE mb_lc_other;
