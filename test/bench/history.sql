-- history.sql: a pipeline on pgbench_history for the TPC-B overhead
-- benchmark.  Each batch stores its deltas per account under its batch id
-- (replay-safe), so that afterwards the sums can be checked against
-- pgbench_history: every row exactly once.
CREATE EXTENSION microbatch;

CREATE TABLE history_by_batch (
    aid      integer NOT NULL,
    batch_id bigint NOT NULL,
    delta    bigint NOT NULL,
    rows     bigint NOT NULL,
    PRIMARY KEY (aid, batch_id)
);

SELECT microbatch.create_pipeline('history', 'pgbench_history');
SELECT microbatch.add_transform('history', 'by_account', 'gold', $$
    INSERT INTO history_by_batch
    SELECT aid, microbatch.current_batch_id(), sum(delta), count(*)
      FROM microbatch.history_batch
     GROUP BY aid
        ON CONFLICT (aid, batch_id) DO UPDATE
       SET delta = excluded.delta, rows = excluded.rows
$$);
