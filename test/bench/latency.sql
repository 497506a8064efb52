-- latency.sql: measuring the time from a loader's commit to the batch that
-- makes its rows visible in gold.
--
-- * bench.commits: each loader transaction (insert-events.pgbench) writes
--   its transaction id and clock_timestamp() here as its LAST statement, right
--   before COMMIT.  The true commit is a little later (the COMMIT round trip
--   and WAL flush), so latencies measured from this time are over-estimated
--   by that much.
-- * A batch's gold rows and its ledger row (microbatch.batch) commit in the
--   same transaction, so a batch is visible in gold exactly when its ledger
--   row is.  bench.watch polls the ledger every millisecond and records when
--   it first sees each batch id: an upper bound on visibility, late by at most
--   one polling period plus the query.
-- * The ledger's finished_at is taken before the batch commits: a lower
--   bound on visibility.
-- * With track_commit_timestamp on (run-bench.sh turns it on for this
--   section), the exact figure: the commit timestamp of the batch's
--   transaction (its ledger row's xmin) minus that of the loader's.  Both are
--   taken as the commit record is written, so the figure counts the loader's
--   WAL flush, not its COMMIT round trip nor any polling.
-- * The batch holding a transaction is the first committed batch whose upper
--   snapshot shows it as committed (and whose xid range, when max_batch_rows
--   cut the window, contains it): the definition of a batch window in
--   docs/architecture.md.

CREATE TABLE bench.commits (
    run          integer NOT NULL,
    xid          xid8 NOT NULL,
    committed_at timestamptz NOT NULL,
    rows         integer NOT NULL
);

CREATE TABLE bench.seen (
    run      integer NOT NULL,
    batch_id bigint NOT NULL,
    seen_at  timestamptz NOT NULL
);

-- A procedure, so that it can COMMIT every 100 ms: a 15-second statement
-- would hold back the xmin horizon and keep gold's dead tuples around.
-- Each SELECT takes a fresh snapshot (READ COMMITTED).
CREATE PROCEDURE bench.watch(p_run integer, p_pipeline name, p_seconds float8)
LANGUAGE plpgsql AS $$
DECLARE
    pid      integer;
    last_id  bigint;
    cur      bigint;
    ids      bigint[] := '{}';
    stamps   timestamptz[] := '{}';
    t        timestamptz;
    stop_at  timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
    polls    integer := 0;
BEGIN
    SELECT pipeline_id INTO pid FROM microbatch.pipeline WHERE pipeline_name = p_pipeline;
    SELECT coalesce(max(batch_id), 0) INTO last_id
      FROM microbatch.batch WHERE pipeline_id = pid AND status = 'committed';
    LOOP
        SELECT max(batch_id) INTO cur
          FROM microbatch.batch WHERE pipeline_id = pid AND status = 'committed';
        t := clock_timestamp();
        IF cur > last_id THEN
            ids := ids || ARRAY(SELECT generate_series(last_id + 1, cur));
            stamps := stamps || array_fill(t, ARRAY[(cur - last_id)::int]);
            last_id := cur;
        END IF;
        EXIT WHEN t > stop_at;
        PERFORM pg_sleep(0.001);
        polls := polls + 1;
        IF polls % 100 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
    INSERT INTO bench.seen SELECT p_run, unnest(ids), unnest(stamps);
END $$;

-- A copy of a pipeline's committed batches since p_after, indexed on
-- finished_at.  The batch holding a transaction finished after it committed
-- (its upper snapshot was taken after the commit), and batches finish in
-- batch order, so the lookup below starts at the commit time and stops at the
-- first batch that holds the transaction: a few index steps, instead of a
-- scan of the whole ledger per transaction.
CREATE FUNCTION bench.load_ledger(p_pipeline name, p_after bigint) RETURNS bigint
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    n bigint;
BEGIN
    DROP TABLE IF EXISTS pg_temp.mb_ledger;
    CREATE TEMP TABLE mb_ledger AS
    SELECT b.batch_id, b.finished_at, b.upper_snapshot, b.xid_from, b.xid_to,
           CASE WHEN current_setting('track_commit_timestamp')::bool
                THEN pg_xact_commit_timestamp(b.xmin) END AS visible_at
      FROM microbatch.batch b
      JOIN microbatch.pipeline p USING (pipeline_id)
     WHERE p.pipeline_name = p_pipeline AND b.status = 'committed'
       AND b.batch_id > p_after;
    CREATE INDEX ON mb_ledger (finished_at);
    ANALYZE mb_ledger;
    SELECT count(*) INTO n FROM mb_ledger;
    RETURN n;
END $$;

-- The batch holding each loader transaction of a run (NULL when none has
-- yet), with its commit time, the batch's finished_at and the time the
-- watcher saw it, and both commit timestamps when they are tracked.
-- Expects bench.load_ledger().
CREATE FUNCTION bench.run_batches(p_run integer)
RETURNS TABLE (rows integer, committed_at timestamptz, batch_id bigint,
               finished_at timestamptz, seen_at timestamptz,
               commit_ts timestamptz, visible_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT c.rows, c.committed_at, b.batch_id, b.finished_at, s.seen_at,
           CASE WHEN current_setting('track_commit_timestamp')::bool
                THEN pg_xact_commit_timestamp(xid(c.xid)) END,
           b.visible_at
      FROM bench.commits c
      LEFT JOIN LATERAL (
            SELECT l.batch_id, l.finished_at, l.visible_at
              FROM pg_temp.mb_ledger l
             WHERE l.finished_at > c.committed_at
               AND pg_visible_in_snapshot(c.xid, l.upper_snapshot)
               AND (l.xid_from IS NULL OR c.xid >= l.xid_from)
               AND (l.xid_to IS NULL OR c.xid < l.xid_to)
             ORDER BY l.finished_at
             LIMIT 1) b ON true
      LEFT JOIN bench.seen s ON s.run = p_run AND s.batch_id = b.batch_id
     WHERE c.run = p_run;
END $$;

-- Per-row latency percentiles of a run, in milliseconds: from the watcher
-- (upper bound), from finished_at (lower bound) and from the commit
-- timestamps (exact; NULL when they are not tracked).  Every row of a
-- transaction has that transaction's latency.
CREATE FUNCTION bench.latency(p_run integer, p_pipeline name, p_after bigint,
                              OUT txns bigint, OUT rows bigint, OUT unseen_rows bigint,
                              OUT seconds float8, OUT batches bigint,
                              OUT p50 float8, OUT p95 float8, OUT p99 float8, OUT pmax float8,
                              OUT lb50 float8, OUT lb95 float8, OUT lb99 float8,
                              OUT ex50 float8, OUT ex95 float8, OUT ex99 float8, OUT exmax float8)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.load_ledger(p_pipeline, p_after);
    CREATE TEMP TABLE run_txns ON COMMIT DROP AS SELECT * FROM bench.run_batches(p_run);
    SELECT count(*), sum(t.rows), coalesce(sum(t.rows) FILTER (WHERE t.seen_at IS NULL), 0),
           extract(epoch FROM max(t.committed_at) - min(t.committed_at))::float8,
           count(DISTINCT t.batch_id)
      INTO txns, rows, unseen_rows, seconds, batches
      FROM run_txns t;
    SELECT percentile_cont(0.50) WITHIN GROUP (ORDER BY r.ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY r.ms),
           max(r.ms),
           percentile_cont(0.50) WITHIN GROUP (ORDER BY r.lb_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.lb_ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY r.lb_ms),
           percentile_cont(0.50) WITHIN GROUP (ORDER BY r.ex_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ex_ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY r.ex_ms),
           max(r.ex_ms)
      INTO p50, p95, p99, pmax, lb50, lb95, lb99, ex50, ex95, ex99, exmax
      FROM (SELECT extract(epoch FROM t.seen_at - t.committed_at)::float8 * 1000 AS ms,
                   extract(epoch FROM t.finished_at - t.committed_at)::float8 * 1000 AS lb_ms,
                   extract(epoch FROM t.visible_at - t.commit_ts)::float8 * 1000 AS ex_ms
              FROM run_txns t, generate_series(1, t.rows)
             WHERE t.seen_at IS NOT NULL) r;
    DROP TABLE run_txns;
END $$;
