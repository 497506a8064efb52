-- watermark.sql: what users write today instead of microbatch, next to the
-- same aggregation as a microbatch pipeline, both over one table.
--
-- bench.orders is fed by concurrent inserters (watermark-insert.pgbench).
-- The hand-written job is the usual one: remember the highest bigserial id
-- processed, and each run fold the rows above it into per-user totals.  It is
-- written carefully (the upper bound is read before the rows, the state row
-- is locked, totals and watermark commit together), and it still loses rows:
-- an id is assigned when a row is inserted, not when it commits, so a row
-- whose transaction commits after a run has moved the watermark past its id
-- is never read.  Several consumers (a pg_cron job, a loop every second) run
-- the same procedure with their own state.

CREATE TABLE bench.orders (
    id      bigserial PRIMARY KEY,
    user_id integer NOT NULL,
    amount  integer NOT NULL
);

-- Written last by each inserting transaction: its ids and the time just
-- before COMMIT, for the latencies.
CREATE TABLE bench.order_commits (
    id           bigint NOT NULL,
    xid          xid8 NOT NULL,
    committed_at timestamptz NOT NULL
);

CREATE TABLE bench.wm_state (
    consumer text PRIMARY KEY,
    last_id  bigint NOT NULL
);

CREATE TABLE bench.wm_totals (
    consumer text NOT NULL,
    user_id  integer NOT NULL,
    orders   bigint NOT NULL,
    amount   bigint NOT NULL,
    PRIMARY KEY (consumer, user_id)
);

-- One row per run: the ids it took and when it finished.
CREATE TABLE bench.wm_runs (
    consumer    text NOT NULL,
    from_id     bigint NOT NULL,
    to_id       bigint NOT NULL,
    finished_at timestamptz NOT NULL
);

CREATE PROCEDURE bench.wm_rollup(p_consumer text)
LANGUAGE plpgsql AS $$
DECLARE
    wm bigint;
    hi bigint;
BEGIN
    -- one run at a time per consumer
    SELECT last_id INTO wm FROM bench.wm_state WHERE consumer = p_consumer FOR UPDATE;
    -- the highest id committed now; everything up to it is taken
    SELECT coalesce(max(id), wm) INTO hi FROM bench.orders;
    IF hi <= wm THEN
        RETURN;
    END IF;
    INSERT INTO bench.wm_totals AS t
    SELECT p_consumer, user_id, count(*), sum(amount)
      FROM bench.orders
     WHERE id > wm AND id <= hi
     GROUP BY user_id
        ON CONFLICT (consumer, user_id) DO UPDATE
       SET orders = t.orders + excluded.orders,
           amount = t.amount + excluded.amount;
    UPDATE bench.wm_state SET last_id = hi WHERE consumer = p_consumer;
    INSERT INTO bench.wm_runs VALUES (p_consumer, wm, hi, clock_timestamp());
END $$;

INSERT INTO bench.wm_state VALUES ('pg_cron', 0), ('every_second', 0);

-- The same totals with microbatch: each batch's contribution under its id.
CREATE TABLE bench.mb_totals (
    user_id  integer NOT NULL,
    batch_id bigint NOT NULL,
    orders   bigint NOT NULL,
    amount   bigint NOT NULL,
    PRIMARY KEY (user_id, batch_id)
);

SELECT microbatch.create_pipeline('orders', 'bench.orders', batch_interval => '0');
SELECT microbatch.add_transform('orders', 'totals', 'gold', $$
    INSERT INTO bench.mb_totals
    SELECT user_id, microbatch.current_batch_id(), count(*), sum(amount)
      FROM microbatch.orders_batch
     GROUP BY user_id
        ON CONFLICT (user_id, batch_id) DO UPDATE
       SET orders = excluded.orders, amount = excluded.amount
$$);

-- Rows lost and counted twice by a consumer, per user: the totals against
-- the table.  Exact unless one user has both lost and doubled rows, which
-- would cancel out (neither method here can double count).
CREATE FUNCTION bench.wm_check(OUT consumer text, OUT orders bigint, OUT counted bigint,
                               OUT lost bigint, OUT doubled bigint)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
    WITH truth AS (SELECT user_id, count(*) AS n FROM bench.orders GROUP BY user_id),
    got AS (SELECT consumer, user_id, orders AS n FROM bench.wm_totals
            UNION ALL
            SELECT 'microbatch', user_id, sum(orders) FROM bench.mb_totals GROUP BY user_id),
    consumers AS (SELECT DISTINCT consumer FROM bench.wm_state
                  UNION SELECT 'microbatch')
    SELECT c.consumer, sum(t.n)::bigint, sum(coalesce(g.n, 0))::bigint,
           sum(greatest(t.n - coalesce(g.n, 0), 0))::bigint,
           sum(greatest(coalesce(g.n, 0) - t.n, 0))::bigint
      FROM consumers c
     CROSS JOIN truth t
      LEFT JOIN got g ON g.consumer = c.consumer AND g.user_id = t.user_id
     GROUP BY c.consumer
     ORDER BY c.consumer
$$;

-- Latency of the rows each watermark run took: from the inserting
-- transaction's last statement to the end of the run (taken before it
-- commits), in ms.  Rows a consumer lost have no latency.
CREATE FUNCTION bench.wm_latency(p_consumer text, p_until timestamptz,
                                 OUT runs bigint, OUT rows bigint,
                                 OUT p50 float8, OUT p99 float8, OUT pmax float8)
LANGUAGE sql STABLE AS $$
    WITH r AS (SELECT * FROM bench.wm_runs
                WHERE consumer = p_consumer AND finished_at <= p_until),
    l AS (SELECT extract(epoch FROM r.finished_at - c.committed_at)::float8 * 1000 AS ms
            FROM r JOIN bench.order_commits c ON c.id > r.from_id AND c.id <= r.to_id
           WHERE c.committed_at <= r.finished_at)
    SELECT (SELECT count(*) FROM r), count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
      FROM l
$$;

-- The same for microbatch, from the batches' finished_at.  The pipeline
-- has no row cap, so a transaction's batch is the first whose upper snapshot
-- shows it committed (see latency.sql).
CREATE FUNCTION bench.mb_orders_latency(p_until timestamptz,
                                        OUT batches bigint, OUT rows bigint,
                                        OUT p50 float8, OUT p99 float8, OUT pmax float8)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.load_ledger('orders', 0);
    SELECT (SELECT count(*) FROM pg_temp.mb_ledger WHERE finished_at <= p_until), count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY l.ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY l.ms), max(l.ms)
      INTO batches, rows, p50, p99, pmax
      FROM (SELECT extract(epoch FROM x.finished_at - c.committed_at)::float8 * 1000 AS ms
              FROM bench.order_commits c
             CROSS JOIN LATERAL (
                   SELECT m.finished_at FROM pg_temp.mb_ledger m
                    WHERE m.finished_at > c.committed_at
                      AND pg_visible_in_snapshot(c.xid, m.upper_snapshot)
                    ORDER BY m.finished_at LIMIT 1) x
             WHERE x.finished_at <= p_until) l;
END $$;

-- What a '1 second' pg_cron schedule does (pg_cron 1.5+), for older
-- pg_cron: on each whole second, one run in a transaction of its own.
CREATE PROCEDURE bench.every_second(p_seconds integer)
LANGUAGE plpgsql AS $$
DECLARE
    stop_at timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
BEGIN
    WHILE clock_timestamp() < stop_at LOOP
        PERFORM pg_sleep(1 - extract(epoch FROM clock_timestamp()) % 1);
        CALL bench.wm_rollup('every_second');
        COMMIT;
    END LOOP;
END $$;
