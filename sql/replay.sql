--
-- Replaying committed batches
--
CREATE TABLE raw_orders (order_id int, day date, amount_cents int);
SELECT microbatch.create_pipeline('orders', 'raw_orders');

-- Append pattern: rows tagged with their batch id; the statement first
-- removes what an earlier run of the same batch wrote
CREATE TABLE bronze_orders (batch_id bigint, order_id int, day date, amount_cents int);
SELECT microbatch.add_transform('orders', 'bronze', 'bronze',
    $$WITH earlier AS (
          DELETE FROM bronze_orders WHERE batch_id = microbatch.current_batch_id())
      INSERT INTO bronze_orders
      SELECT microbatch.current_batch_id(), order_id, day, amount_cents
        FROM microbatch.orders_batch$$);

-- Aggregate pattern: each batch's contribution is kept under its batch id
-- and overwritten, never added to, so a replay replaces it
CREATE TABLE daily_by_batch (day date, batch_id bigint, revenue numeric,
                             PRIMARY KEY (day, batch_id));
SELECT microbatch.add_transform('orders', 'daily', 'gold',
    $$INSERT INTO daily_by_batch
      SELECT day, microbatch.current_batch_id(), sum(amount_cents) / 100.0
        FROM microbatch.orders_batch GROUP BY day
      ON CONFLICT (day, batch_id) DO UPDATE SET revenue = excluded.revenue$$);
CREATE VIEW daily_revenue AS
    SELECT day, round(sum(revenue), 2) AS revenue FROM daily_by_batch GROUP BY day;

INSERT INTO raw_orders VALUES (1, '2026-01-01', 1000), (2, '2026-01-01', 250);
SELECT microbatch.run_batch('orders');
INSERT INTO raw_orders VALUES (3, '2026-01-01', 100), (4, '2026-01-02', 400);
SELECT microbatch.run_batch('orders');
SELECT * FROM daily_revenue ORDER BY day;

-- Replaying changes nothing: no double counting in either pattern
SELECT microbatch.replay_batch('orders', 1);
SELECT microbatch.replay_batch('orders', 2);
SELECT microbatch.replay_batch('orders', 1);
SELECT * FROM daily_revenue ORDER BY day;
SELECT batch_id, count(*) AS rows FROM bronze_orders GROUP BY 1 ORDER BY 1;
SELECT batch_id, rows_in, replays, last_replayed_at IS NOT NULL AS replayed
  FROM microbatch.batches WHERE pipeline = 'orders' ORDER BY batch_id;

-- The backfill use: fix a transform, replay every batch
SELECT microbatch.remove_transform('orders', 'daily');
SELECT microbatch.add_transform('orders', 'daily', 'gold',
    $$INSERT INTO daily_by_batch
      SELECT day, microbatch.current_batch_id(), sum(amount_cents) / 100.0 * 1.2
        FROM microbatch.orders_batch GROUP BY day
      ON CONFLICT (day, batch_id) DO UPDATE SET revenue = excluded.revenue$$);
SELECT b.batch_id, microbatch.replay_batch('orders', b.batch_id)
  FROM microbatch.batches b WHERE b.pipeline = 'orders' AND b.status = 'committed'
 ORDER BY b.batch_id;
SELECT * FROM daily_revenue ORDER BY day;

-- A replay sees exactly the rows of the original batch, even after more
-- rows arrived, with the original batch id
INSERT INTO raw_orders VALUES (5, '2026-01-02', 600);
CREATE TABLE replay_seen (batch_id bigint, order_id int);
SELECT microbatch.add_transform('orders', 'seen', 'gold',
    $$INSERT INTO replay_seen SELECT microbatch.current_batch_id(), order_id FROM microbatch.orders_batch$$);
SELECT microbatch.replay_batch('orders', 1);
SELECT * FROM replay_seen ORDER BY order_id;

-- Errors
SELECT microbatch.replay_batch('orders', 99);
\echo :SQLSTATE
SELECT microbatch.replay_batch('orders', NULL);
\echo :SQLSTATE
SELECT microbatch.replay_batch('no_such_pipeline', 1);
\echo :SQLSTATE
-- rows deleted from the source cannot be replayed
DELETE FROM raw_orders WHERE order_id = 2;
SELECT microbatch.replay_batch('orders', 1);
\echo :SQLSTATE
SELECT batch_id, replays FROM microbatch.batches WHERE pipeline = 'orders' ORDER BY batch_id;

-- Replay checks the rows' content, not only their count
CREATE TABLE facts (id int, v int);
SELECT microbatch.create_pipeline('facts', 'facts');
SELECT microbatch.add_transform('facts', 'count', 'bronze',
    'SELECT count(*) FROM microbatch.facts_batch');
INSERT INTO facts VALUES (1, 10), (2, 20);
SELECT microbatch.run_batch('facts');
INSERT INTO facts VALUES (3, 30);
SELECT microbatch.run_batch('facts');
-- a column whose old rows are null leaves them as they were
ALTER TABLE facts ADD COLUMN note text;
SELECT microbatch.refresh_pipeline('facts');
SELECT microbatch.replay_batch('facts', 1);
-- one added with a default changes every old row
ALTER TABLE facts ADD COLUMN unit text DEFAULT 'kg';
SELECT microbatch.refresh_pipeline('facts');
SELECT microbatch.replay_batch('facts', 1);
\echo :SQLSTATE
-- a row deleted and inserted again is a new row, in a later window
DELETE FROM facts WHERE id = 3;
INSERT INTO facts VALUES (3, 30);
SELECT microbatch.replay_batch('facts', 2);
\echo :SQLSTATE
-- a change in place (possible only with the constraint dropped, here
-- behind the event trigger's back) is caught too
CREATE TABLE facts_2 (id int, v int);
SELECT microbatch.create_pipeline('facts_2', 'facts_2');
SELECT microbatch.add_transform('facts_2', 'count', 'bronze',
    'SELECT count(*) FROM microbatch.facts_2_batch');
INSERT INTO facts_2 VALUES (1, 10), (2, 20);
SELECT microbatch.run_batch('facts_2');
ALTER EVENT TRIGGER microbatch_ddl_start DISABLE;
ALTER TABLE facts_2 DROP CONSTRAINT microbatch_xid_current;
ALTER EVENT TRIGGER microbatch_ddl_start ENABLE ALWAYS;
UPDATE facts_2 SET v = 11 WHERE id = 1;
SELECT microbatch.refresh_pipeline('facts_2');
SELECT microbatch.replay_batch('facts_2', 1);
\echo :SQLSTATE
SELECT microbatch.drop_pipeline('facts');
SELECT microbatch.drop_pipeline('facts_2');
DROP TABLE facts, facts_2;

-- Chained pipelines: the transforms of a replay may not feed another
-- pipeline, which would count the replayed rows again
CREATE TABLE chain_src (id int);
CREATE TABLE chain_mid (id int);
CREATE TABLE chain_out (id int);
SELECT microbatch.create_pipeline('chain_first', 'chain_src');
SELECT microbatch.add_transform('chain_first', 'forward', 'bronze',
    'INSERT INTO chain_mid SELECT id FROM microbatch.chain_first_batch');
SELECT microbatch.create_pipeline('chain_second', 'chain_mid');
SELECT microbatch.add_transform('chain_second', 'out', 'bronze',
    'INSERT INTO chain_out SELECT id FROM microbatch.chain_second_batch');
INSERT INTO chain_src VALUES (1), (2);
SELECT microbatch.run_batch('chain_first');
SELECT microbatch.run_batch('chain_second');
SELECT microbatch.replay_batch('chain_first', 1);
\echo :SQLSTATE
SELECT microbatch.run_batch('chain_second');
SELECT count(*) AS rows_out FROM chain_out;
SELECT microbatch.drop_pipeline('chain_first');
SELECT microbatch.drop_pipeline('chain_second');
DROP TABLE chain_src, chain_mid, chain_out;

SELECT microbatch.drop_pipeline('orders');
DROP VIEW daily_revenue;
DROP TABLE raw_orders, bronze_orders, daily_by_batch, replay_seen;
