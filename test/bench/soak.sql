-- soak.sql: the soak benchmark's bookkeeping, in a database that runs the
-- demo's pipeline (test/demo/clickstream.sql) with staging and history
-- retention on.
--
-- * bench.soak_loaded: each loader transaction (soak-insert.pgbench) writes
--   how many rows it inserted, in the same transaction as the rows: the
--   ground truth of what was committed into the staging table, which
--   retention empties as it goes.
-- * bench.soak_ledger: a copy of the pipeline's committed batches, taken at
--   every sample (every 10 s), since history retention removes ledger rows
--   a minute after they finished: the sum of their rows_in is what the
--   pipeline processed, a row processed twice counted twice.
-- * bench.soak_quarantine: the same for the rows the demo's drop
--   expectations kept out of the transforms (and so out of bronze), which
--   go with their batches' ledger rows.
-- * bench.soak_samples: what bench.soak_sample() measures every 10 s.

SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

CREATE TABLE bench.soak_loaded (
    rows integer NOT NULL
);

CREATE TABLE bench.soak_ledger (
    batch_id    bigint PRIMARY KEY,
    status      text NOT NULL,
    rows_in     bigint,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL
);

CREATE TABLE bench.soak_quarantine (
    batch_id  bigint NOT NULL,
    ingest_id bigint NOT NULL,
    PRIMARY KEY (batch_id, ingest_id)
);

CREATE TABLE bench.soak_samples (
    t                   float8 NOT NULL,     -- seconds since the loader started
    staging_table_bytes bigint NOT NULL,     -- pg_table_size: heap, TOAST, FSM, VM
    staging_index_bytes bigint NOT NULL,     -- pg_indexes_size
    staging_rows        bigint NOT NULL,     -- count(*)
    staging_dead_rows   bigint NOT NULL,     -- pg_stat_user_tables.n_dead_tup
    staging_autovacuums bigint NOT NULL,     -- pg_stat_user_tables.autovacuum_count
    ledger_rows         bigint NOT NULL,     -- count(*) of microbatch.batch
    ledger_bytes        bigint NOT NULL,     -- pg_total_relation_size of microbatch.batch
    checks_rows         bigint NOT NULL,     -- check_result + quarantined_row rows
    checks_bytes        bigint NOT NULL,     -- and their pg_total_relation_size
    outputs_bytes       bigint NOT NULL,     -- bronze, silver and gold tables
    rows_removed        bigint NOT NULL,     -- microbatch.retention, cumulative
    removable_rows      bigint NOT NULL,     -- microbatch.retention
    wal_bytes           numeric NOT NULL,    -- since the loader started
    loaded_rows         bigint NOT NULL,     -- bench.soak_loaded
    rows_waiting        bigint NOT NULL      -- microbatch.rows_waiting()
);

-- Copies the ledger's new committed (or skipped) batches and quarantined rows.
CREATE FUNCTION bench.soak_copy_ledger() RETURNS void
LANGUAGE sql AS $$
    INSERT INTO bench.soak_ledger
    SELECT batch_id, status, rows_in, started_at, finished_at
      FROM microbatch.batches
     WHERE pipeline = 'clickstream' AND status IN ('committed', 'skipped')
        ON CONFLICT (batch_id) DO NOTHING;
    INSERT INTO bench.soak_quarantine
    SELECT batch_id, (row_data ->> 'ingest_id')::bigint
      FROM microbatch.quarantine
     WHERE pipeline = 'clickstream'
        ON CONFLICT DO NOTHING;
$$;

-- Copies the ledger, then takes one sample.
CREATE FUNCTION bench.soak_sample(p_t float8, p_lsn0 pg_lsn) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.soak_copy_ledger();
    INSERT INTO bench.soak_samples
    SELECT p_t,
           pg_table_size('staging.events'),
           pg_indexes_size('staging.events'),
           (SELECT count(*) FROM staging.events),
           coalesce(s.n_dead_tup, 0),
           coalesce(s.autovacuum_count, 0),
           (SELECT count(*) FROM microbatch.batch),
           pg_total_relation_size('microbatch.batch'),
           (SELECT count(*) FROM microbatch.check_result)
               + (SELECT count(*) FROM microbatch.quarantined_row),
           pg_total_relation_size('microbatch.check_result')
               + pg_total_relation_size('microbatch.quarantined_row'),
           (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('bronze', 'silver', 'gold') AND c.relkind = 'r'),
           coalesce(r.rows_removed, 0),
           coalesce(r.removable_rows, 0),
           pg_wal_lsn_diff(pg_current_wal_lsn(), p_lsn0),
           (SELECT coalesce(sum(rows), 0) FROM bench.soak_loaded),
           microbatch.rows_waiting('clickstream')
      FROM (SELECT 1) one
      LEFT JOIN pg_stat_user_tables s ON s.relid = 'staging.events'::regclass
      LEFT JOIN microbatch.retention r ON r.source = 'staging.events'::regclass;
END $$;

-- mean of the last third of the soak over the mean of its middle third, for
-- each figure: flat when close to 1
CREATE FUNCTION bench.soak_flatness(p_seconds float8)
RETURNS TABLE (figure text, middle float8, last float8, ratio float8)
LANGUAGE sql AS $$
    WITH s AS (
        SELECT CASE WHEN t >= 2 * p_seconds / 3 THEN 'last'
                    WHEN t >= p_seconds / 3 THEN 'middle' END AS third,
               (staging_table_bytes + staging_index_bytes) / 1048576.0 AS staging_mb,
               staging_table_bytes / 1048576.0 AS table_mb,
               staging_index_bytes / 1048576.0 AS index_mb,
               staging_rows::float8 AS staging_rows,
               ledger_rows::float8 AS ledger_rows,
               (ledger_bytes + checks_bytes) / 1048576.0 AS ledger_mb,
               outputs_bytes / 1048576.0 AS outputs_mb
          FROM bench.soak_samples
         WHERE t <= p_seconds),
    f AS (
        SELECT x.figure, s.third, x.v
          FROM s, LATERAL (VALUES ('staging_mb', s.staging_mb), ('table_mb', s.table_mb),
                                  ('index_mb', s.index_mb), ('staging_rows', s.staging_rows),
                                  ('ledger_rows', s.ledger_rows), ('ledger_mb', s.ledger_mb),
                                  ('outputs_mb', s.outputs_mb)) x(figure, v)
         WHERE s.third IS NOT NULL)
    SELECT figure,
           avg(v) FILTER (WHERE third = 'middle'),
           avg(v) FILTER (WHERE third = 'last'),
           avg(v) FILTER (WHERE third = 'last') / nullif(avg(v) FILTER (WHERE third = 'middle'), 0)
      FROM f GROUP BY figure
$$;
