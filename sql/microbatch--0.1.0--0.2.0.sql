-- microbatch 0.1.0 -> 0.2.0: per-batch progress, freshness, cumulative statistics

\echo Use "ALTER EXTENSION microbatch UPDATE TO '0.2.0'" to load this file. \quit

-- The ledger keeps what each step of a batch did, and when its oldest row
-- committed.  Batches before the update have neither.
ALTER TABLE microbatch.batch
    ADD COLUMN progress jsonb,
    ADD COLUMN oldest_row_committed_at timestamptz;

/*
 * Progress, freshness and cumulative statistics (0.2.0).  The ledger keeps
 * what each step of a batch did (progress) and when its oldest row committed,
 * by commit timestamps; shared memory keeps the counts since the server
 * started (src/stats.c).
 */
CREATE FUNCTION microbatch.backlog(pipeline name, OUT rows_waiting bigint,
                                   OUT oldest_xid xid8,
                                   OUT oldest_committed_at timestamptz)
RETURNS record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_backlog';

COMMENT ON FUNCTION microbatch.backlog(name)
    IS 'the committed rows no batch of a pipeline has processed, the oldest one''s tracking xid and, with track_commit_timestamp on, its commit time';

CREATE FUNCTION microbatch.pipeline_stats(OUT pipeline_id integer,
    OUT batches bigint, OUT failures bigint, OUT rows_in bigint,
    OUT rows_written bigint, OUT rows_dropped bigint,
    OUT total_time double precision, OUT max_time double precision,
    OUT mean_time double precision, OUT total_lock_wait_time double precision,
    OUT total_commit_time double precision, OUT last_batch_at timestamptz,
    OUT duration_bounds double precision[], OUT duration_buckets bigint[],
    OUT latency_bounds double precision[], OUT latency_buckets bigint[],
    OUT latency_count bigint, OUT latency_sum double precision,
    OUT stats_reset timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_stat_pipelines';

CREATE FUNCTION microbatch.stat_reset(pipeline name DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_stat_reset';

COMMENT ON FUNCTION microbatch.stat_reset(name)
    IS 'zero the cumulative statistics of a pipeline, or with NULL of every pipeline of this database the caller has privileges on';

-- One row per batch attempt; attempts before 0.2.0 have no step times
CREATE VIEW microbatch.batch_progress WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       b.batch_id,
       b.attempt,
       b.status,
       b.rows_in,
       -- a failed attempt's writes were rolled back: its steps show them
       CASE WHEN b.status = 'committed' THEN s.rows_written END AS rows_written,
       b.rows_dropped,
       b.started_at,
       b.finished_at,
       pg_catalog.make_interval(secs => (b.progress ->> 'lock_wait_us')::bigint / 1e6)
           AS lock_wait,
       s.window_time,
       s.expectations_time,
       s.transforms_time,
       s.audits_time,
       b.finished_at - b.started_at AS duration,
       b.oldest_row_committed_at,
       b.finished_at - b.oldest_row_committed_at AS latency,
       b.rows_in / NULLIF(EXTRACT(epoch FROM b.finished_at - b.started_at), 0)::float8
           AS processed_rows_per_second,
       b.rows_in / NULLIF(EXTRACT(epoch FROM b.started_at - prev.started_at), 0)::float8
           AS input_rows_per_second
  FROM microbatch.batch b
  JOIN microbatch.pipeline p USING (pipeline_id)
  -- the previous attempt, through the primary key: a filter on batch_id
  -- reaches the ledger's index
  LEFT JOIN LATERAL (
        SELECT b2.started_at
          FROM microbatch.batch b2
         WHERE b2.pipeline_id = b.pipeline_id
           AND (b2.batch_id, b2.attempt) < (b.batch_id, b.attempt)
         ORDER BY b2.batch_id DESC, b2.attempt DESC
         LIMIT 1) prev ON true
  LEFT JOIN LATERAL (
        SELECT pg_catalog.sum(st.rows) FILTER (WHERE st.kind = 'transform')
                   AS rows_written,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'window') / 1e6)
                   AS window_time,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'expectations') / 1e6)
                   AS expectations_time,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'transform') / 1e6)
                   AS transforms_time,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'audit') / 1e6)
                   AS audits_time
          FROM pg_catalog.jsonb_to_recordset(b.progress -> 'steps')
               AS st(kind text, rows bigint, us bigint)
         WHERE b.progress IS NOT NULL) s ON true
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

-- One row per step of a batch attempt, as preview_batch() shows them
CREATE VIEW microbatch.batch_steps WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       b.batch_id,
       b.attempt,
       b.status,
       (st.ordinality - 1)::integer AS step,
       st.kind,
       st.name::name AS name,
       st.layer,
       st.rows,
       pg_catalog.make_interval(secs => st.us / 1e6) AS duration
  FROM microbatch.batch b
  JOIN microbatch.pipeline p USING (pipeline_id)
  CROSS JOIN LATERAL ROWS FROM (
        pg_catalog.jsonb_to_recordset(b.progress -> 'steps')
        AS (kind text, name text, layer text, rows bigint, us bigint))
        WITH ORDINALITY AS st(kind, name, layer, rows, us, ordinality)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

-- One row per pipeline: what waits for it, and how old it is.  Counts, not
-- rows: pg_read_all_stats sees them too, as in stat_pipelines
CREATE VIEW microbatch.freshness WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       p.state,
       p.consecutive_failures,
       w.rows_waiting,
       w.oldest_xid AS oldest_waiting_xid,
       w.oldest_committed_at AS oldest_waiting_committed_at,
       CASE WHEN w.rows_waiting = 0 THEN interval '0'
            ELSE pg_catalog.now() - w.oldest_committed_at END AS lag,
       CASE WHEN w.rows_waiting = 0 THEN 0
            ELSE pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint
                 - w.oldest_xid::text::bigint END AS lag_xids,
       last.finished_at AS last_batch_at,
       last.finished_at - last.oldest_row_committed_at AS last_batch_latency,
       microbatch.next_run_at(p.pipeline_id) AS next_run_at
  FROM microbatch.pipeline p
  CROSS JOIN LATERAL microbatch.backlog(p.pipeline_name) w
  LEFT JOIN LATERAL (
        SELECT b.finished_at, b.oldest_row_committed_at
          FROM microbatch.batch b
         WHERE b.pipeline_id = p.pipeline_id AND b.status = 'committed'
         ORDER BY b.batch_id DESC
         LIMIT 1) last ON true
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

-- In the style of pg_stat_statements: counts since stats_reset, for the
-- owner's roles and pg_read_all_stats
CREATE VIEW microbatch.stat_pipelines WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       s.pipeline_id,
       s.batches,
       s.failures,
       s.rows_in,
       s.rows_written,
       s.rows_dropped,
       s.total_time,
       s.max_time,
       s.mean_time,
       s.total_lock_wait_time,
       s.total_commit_time,
       s.last_batch_at,
       s.duration_bounds,
       s.duration_buckets,
       s.latency_bounds,
       s.latency_buckets,
       s.latency_count,
       s.latency_sum,
       s.stats_reset
  FROM microbatch.pipeline_stats() s
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

GRANT SELECT ON microbatch.batch_progress, microbatch.batch_steps,
    microbatch.freshness, microbatch.stat_pipelines TO PUBLIC;
