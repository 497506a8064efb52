--
-- Failed batches: rolled back whole, recorded, retried with the same id
--
CREATE TABLE readings (id int, value numeric);
SELECT microbatch.create_pipeline('readings', 'readings');
CREATE TABLE bronze_readings (batch_id bigint, id int, value numeric);
CREATE TABLE gold_inverse (id int, inverse numeric);
SELECT microbatch.add_transform('readings', 'bronze', 'bronze',
    $$INSERT INTO bronze_readings SELECT microbatch.current_batch_id(), * FROM microbatch.readings_batch$$);
SELECT microbatch.add_transform('readings', 'inverse', 'gold',
    $$INSERT INTO gold_inverse SELECT id, 1 / value FROM microbatch.readings_batch$$);

INSERT INTO readings VALUES (1, 2);
SELECT microbatch.run_batch('readings');

-- A zero makes the gold transform fail: the bronze rows written before it
-- are rolled back too, and the failure is recorded
INSERT INTO readings VALUES (2, 0), (3, 4);
SELECT microbatch.run_batch('readings');
SELECT * FROM bronze_readings ORDER BY id;
SELECT batch_id, attempt, status, rows_in, sqlstate, error, error_context
  FROM microbatch.batches ORDER BY batch_id, attempt;
SELECT pipeline, last_batch_id, rows_waiting FROM microbatch.pipelines;

-- The next run retries the same batch id, with the rows that came since
INSERT INTO readings VALUES (4, 5);
SELECT microbatch.run_batch('readings');
SELECT batch_id, attempt, status, rows_in FROM microbatch.batches ORDER BY batch_id, attempt;

-- Fixed, the batch commits under the same id
SELECT microbatch.remove_transform('readings', 'inverse');
SELECT microbatch.add_transform('readings', 'inverse', 'gold',
    $$INSERT INTO gold_inverse SELECT id, 1 / nullif(value, 0) FROM microbatch.readings_batch$$);
SELECT microbatch.run_batch('readings');
SELECT batch_id, attempt, status, rows_in, sqlstate FROM microbatch.batches ORDER BY batch_id, attempt;
SELECT * FROM bronze_readings ORDER BY id;
SELECT * FROM gold_inverse ORDER BY id;

-- A transform that no longer plans (its table was dropped) fails the same way
CREATE TABLE side (id int);
SELECT microbatch.add_transform('readings', 'side', 'gold',
    'INSERT INTO side SELECT id FROM microbatch.readings_batch');
DROP TABLE side;
INSERT INTO readings VALUES (5, 1);
SELECT microbatch.run_batch('readings');
SELECT batch_id, attempt, status, sqlstate, error FROM microbatch.batches
 WHERE status = 'failed' ORDER BY batch_id, attempt;
SELECT microbatch.remove_transform('readings', 'side');

-- Batches do not nest
SELECT microbatch.add_transform('readings', 'nested', 'gold',
    $$SELECT microbatch.run_batch('readings')$$);
SELECT microbatch.run_batch('readings');
SELECT batch_id, attempt, status, sqlstate, error FROM microbatch.batches
 WHERE status = 'failed' ORDER BY batch_id, attempt;
SELECT microbatch.remove_transform('readings', 'nested');
SELECT microbatch.run_batch('readings');

-- A cancelled batch is not a failure: the cancel reaches the caller
SELECT microbatch.add_transform('readings', 'slow', 'gold', 'SELECT pg_sleep(5)');
INSERT INTO readings VALUES (6, 1);
SET statement_timeout = '200ms';
SELECT microbatch.run_batch('readings');
RESET statement_timeout;
SELECT count(*) AS failures_recorded FROM microbatch.batches WHERE batch_id = 4;
SELECT microbatch.remove_transform('readings', 'slow');
SELECT microbatch.run_batch('readings');

SELECT microbatch.drop_pipeline('readings');
DROP TABLE readings, bronze_readings, gold_inverse;
