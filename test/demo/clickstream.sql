-- clickstream.sql: a clickstream pipeline with microbatch, from raw events to
-- a small star schema.  `make demo` runs it in a database of its own; run it
-- in any database of a server that preloads microbatch:
--
--     psql -v ON_ERROR_STOP=1 -d mydb -f test/demo/clickstream.sql
--
--   staging.events            raw events, appended by the trackers (load.pgbench)
--     | pipeline "clickstream", one batch every 200 ms, one transaction each
--     v
--   bronze.events             the raw rows, tagged with their batch id
--   silver.events             valid events: typed, deduplicated, e-mail masked
--                             (expectations keep the malformed rows out, in
--                             microbatch.quarantine)
--   gold.dim_page             page dimension
--   gold.dim_user             user dimension (masked e-mail only)
--   gold.page_day_users       each user once per day, page and event type
--   gold.page_events_by_batch daily fact, one contribution per batch
--   gold.page_events_daily    the daily fact: the contributions summed (a view)
--
-- Every transform can run twice over the same batch, which replay_batch does
-- after a fix, without counting anything twice: outputs are keyed by the
-- batch id or by a key of the input, never added to a running total.  Every
-- object is schema-qualified because a transform runs with the search_path
-- of the moment it was added.

CREATE EXTENSION IF NOT EXISTS microbatch;

CREATE SCHEMA staging;
CREATE SCHEMA bronze;
CREATE SCHEMA silver;
CREATE SCHEMA gold;

--------------------------------------------------------------------------
-- Staging: what the trackers send, as they send it.  amount and payload
-- stay text: a feed that sends "12,50" or a truncated JSON document must
-- not make the loader fail, so checking them is the pipeline's job.
--------------------------------------------------------------------------
CREATE TABLE staging.events (
    ingest_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL,          -- set by the tracker; re-sent on retries
    user_id     bigint,                 -- NULL when the tracker lost it
    email       text,
    url         text NOT NULL,
    event_type  text NOT NULL,          -- page_view, add_to_cart, purchase
    amount      text,                   -- purchases only, e.g. '42.50'
    payload     text,                   -- a JSON document, in principle
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Adds the tracking column staging.events.microbatch_xid and its index, and
-- the batch view microbatch.clickstream_batch.
SELECT microbatch.create_pipeline('clickstream', 'staging.events',
                                  batch_interval => '200 ms');

--------------------------------------------------------------------------
-- Bronze: every raw row once, with the batch that brought it.
--------------------------------------------------------------------------
CREATE TABLE bronze.events (
    ingest_id   bigint PRIMARY KEY,
    batch_id    bigint NOT NULL,
    event_id    uuid NOT NULL,
    user_id     bigint,
    email       text,
    url         text NOT NULL,
    event_type  text NOT NULL,
    amount      text,
    payload     text,
    received_at timestamptz NOT NULL
);

-- ingest_id is a key of the input: a replay finds its rows already there.
SELECT microbatch.add_transform('clickstream', 'raw_events', 'bronze', $$
    INSERT INTO bronze.events
    SELECT b.ingest_id, microbatch.current_batch_id(), b.event_id, b.user_id,
           b.email, b.url, b.event_type, b.amount, b.payload, b.received_at
      FROM microbatch.clickstream_batch b
        ON CONFLICT (ingest_id) DO NOTHING
$$);

--------------------------------------------------------------------------
-- Silver: expectations check every row of the batch, in one pass, before
-- the transforms.  A row that fails a drop expectation is kept out of
-- microbatch.clickstream_batch and put in microbatch.quarantine with the
-- names of what it failed; a warn expectation only counts.  Both commit
-- with the batch, and microbatch.expectation_results has the counts per
-- batch.  A null result is a violation, hence the IS NULL OR.
--------------------------------------------------------------------------

-- The payload as jsonb, or NULL when it is not valid JSON (PostgreSQL 15
-- has no IS JSON predicate).  PARALLEL UNSAFE: the exception block is a
-- subtransaction, which parallel workers cannot start.
CREATE FUNCTION silver.try_jsonb(doc text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $$
BEGIN
    RETURN doc::jsonb;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END $$;

SELECT microbatch.expect_not_null('clickstream', 'user_id');
SELECT microbatch.add_expectation('clickstream', 'amount_is_number',
    $$amount IS NULL OR amount ~ '^[0-9]{1,10}(\.[0-9]{1,2})?$'$$, 'drop');
SELECT microbatch.add_expectation('clickstream', 'payload_is_json',
    'payload IS NULL OR silver.try_jsonb(payload) IS NOT NULL', 'drop');
SELECT microbatch.expect_accepted_values('clickstream', 'event_type',
    ARRAY['page_view', 'add_to_cart', 'purchase'], 'warn');
SELECT microbatch.add_expectation('clickstream', 'email_has_domain',
    $$email IS NULL OR email LIKE '%_@_%._%'$$, 'warn');

-- 'carol.42@example.com' -> 'c***@example.com': enough to tell domains and
-- users apart in reports, without the address.
CREATE FUNCTION silver.mask_email(email text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT left(email, 1) || '***@' || split_part(email, '@', 2)
$$;

-- One row per event: batch_id is the batch that saw the event first, which
-- is how gold finds the events each batch added.
CREATE TABLE silver.events (
    event_id     uuid PRIMARY KEY,
    batch_id     bigint NOT NULL,
    user_id      bigint NOT NULL,
    email_masked text,
    page_path    text NOT NULL,         -- the url without host and query string
    event_type   text NOT NULL,
    amount       numeric(12,2),
    payload      jsonb,
    received_at  timestamptz NOT NULL,
    event_day    date NOT NULL          -- in UTC, whatever the session's TimeZone
);
CREATE INDEX ON silver.events (batch_id);

-- The batch view holds only the rows the expectations kept, so the casts
-- cannot fail.  A retried event can come twice in one batch (DISTINCT ON
-- keeps the first copy) or in a later batch (ON CONFLICT keeps the copy
-- already in silver).  So a replay leaves silver as it is; for a replay to
-- rewrite silver after a fix to this transform, use DO UPDATE ... WHERE the
-- row's batch_id is the batch's.
SELECT microbatch.add_transform('clickstream', 'events', 'silver', $$
    INSERT INTO silver.events
    SELECT DISTINCT ON (b.event_id)
           b.event_id, microbatch.current_batch_id(), b.user_id,
           silver.mask_email(b.email),
           regexp_replace(b.url, '^[a-z]+://[^/]*|[?#].*$', '', 'g'),
           b.event_type, b.amount::numeric(12,2), b.payload::jsonb,
           b.received_at, (b.received_at AT TIME ZONE 'UTC')::date
      FROM microbatch.clickstream_batch b
     ORDER BY b.event_id, b.ingest_id
        ON CONFLICT (event_id) DO NOTHING
$$);

--------------------------------------------------------------------------
-- Gold: a star schema.  Each transform reads the silver events of the
-- current batch; they run in the order they are added.
--------------------------------------------------------------------------
CREATE TABLE gold.dim_page (
    page_id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    page_path     text NOT NULL UNIQUE,
    page_type     text NOT NULL,
    first_seen_at timestamptz NOT NULL
);

-- The WHERE clause leaves known pages alone instead of rewriting them on
-- every batch.
SELECT microbatch.add_transform('clickstream', 'dim_page', 'gold', $$
    INSERT INTO gold.dim_page AS d (page_path, page_type, first_seen_at)
    SELECT e.page_path,
           CASE WHEN e.page_path LIKE '/products/%' THEN 'product'
                WHEN e.page_path = '/' THEN 'home'
                ELSE 'other' END,
           min(e.received_at)
      FROM silver.events e
     WHERE e.batch_id = microbatch.current_batch_id()
     GROUP BY e.page_path
        ON CONFLICT (page_path) DO UPDATE
       SET first_seen_at = excluded.first_seen_at
     WHERE excluded.first_seen_at < d.first_seen_at
$$);

CREATE TABLE gold.dim_user (
    user_id       bigint PRIMARY KEY,
    email_masked  text,
    email_domain  text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);

-- min/max instead of counters, so that a replay changes nothing; the e-mail
-- is the one of the user's latest event, even when an old batch is replayed.
SELECT microbatch.add_transform('clickstream', 'dim_user', 'gold', $$
    INSERT INTO gold.dim_user AS d
    SELECT u.user_id, u.email_masked, split_part(u.email_masked, '@', 2),
           u.first_seen_at, u.last_seen_at
      FROM (SELECT e.user_id,
                   (array_agg(e.email_masked ORDER BY e.received_at DESC))[1]
                       AS email_masked,
                   min(e.received_at) AS first_seen_at,
                   max(e.received_at) AS last_seen_at
              FROM silver.events e
             WHERE e.batch_id = microbatch.current_batch_id()
             GROUP BY e.user_id) u
        ON CONFLICT (user_id) DO UPDATE
       SET email_masked  = CASE WHEN excluded.last_seen_at >= d.last_seen_at
                                THEN excluded.email_masked ELSE d.email_masked END,
           email_domain  = CASE WHEN excluded.last_seen_at >= d.last_seen_at
                                THEN excluded.email_domain ELSE d.email_domain END,
           first_seen_at = least(d.first_seen_at, excluded.first_seen_at),
           last_seen_at  = greatest(d.last_seen_at, excluded.last_seen_at)
$$);

-- Distinct users cannot be summed over batches: a user active in two
-- batches would count twice.  So each (day, page, event type, user) is kept
-- once, with the batch that saw it first, and each batch contributes the
-- users it saw first: those contributions add up to the distinct count.
--
-- The gold tables have no foreign keys to the dimensions, as is usual for a
-- star schema fed by one pipeline: the transforms above wrote the dimension
-- rows in the same transaction, and checking every fact row against them
-- would cost more than inserting it.
CREATE TABLE gold.page_day_users (
    day        date NOT NULL,
    page_id    integer NOT NULL,
    event_type text NOT NULL,
    user_id    bigint NOT NULL,
    batch_id   bigint NOT NULL,
    PRIMARY KEY (day, page_id, event_type, user_id)
);
CREATE INDEX ON gold.page_day_users (batch_id);

SELECT microbatch.add_transform('clickstream', 'page_day_users', 'gold', $$
    INSERT INTO gold.page_day_users
    SELECT DISTINCT e.event_day, p.page_id, e.event_type, e.user_id,
           microbatch.current_batch_id()
      FROM silver.events e
      JOIN gold.dim_page p USING (page_path)
     WHERE e.batch_id = microbatch.current_batch_id()
        ON CONFLICT DO NOTHING
$$);

-- The fact: each batch's contribution per day x page x event type, stored
-- under its batch id and overwritten, never added to, when replayed.
CREATE TABLE gold.page_events_by_batch (
    day        date NOT NULL,
    page_id    integer NOT NULL,
    event_type text NOT NULL,
    batch_id   bigint NOT NULL,
    events     bigint NOT NULL,
    new_users  bigint NOT NULL,
    revenue    numeric(14,2) NOT NULL,
    PRIMARY KEY (day, page_id, event_type, batch_id)
);
-- for the audit below, which reads the batch's own rows
CREATE INDEX ON gold.page_events_by_batch (batch_id);

-- A user counted as new in a group had an event in it in this batch, so
-- every group of new_users is a group of events: the batch's events and its
-- new users are summed in one aggregate.  Not a join of two aggregates: the
-- batch's own rows are never in the statistics (this transaction wrote
-- them), the planner takes each side for a row or so, and a nested loop
-- over two aggregates of the batch costs their product.
SELECT microbatch.add_transform('clickstream', 'page_events', 'gold', $$
    WITH contributions AS (
        SELECT e.event_day AS day, p.page_id, e.event_type,
               1 AS events, 0 AS new_users, coalesce(e.amount, 0) AS revenue
          FROM silver.events e
          JOIN gold.dim_page p USING (page_path)
         WHERE e.batch_id = microbatch.current_batch_id()
        UNION ALL
        SELECT u.day, u.page_id, u.event_type, 0, 1, 0
          FROM gold.page_day_users u
         WHERE u.batch_id = microbatch.current_batch_id())
    INSERT INTO gold.page_events_by_batch
    SELECT day, page_id, event_type, microbatch.current_batch_id(),
           sum(events), sum(new_users), sum(revenue)
      FROM contributions
     GROUP BY day, page_id, event_type
        ON CONFLICT (day, page_id, event_type, batch_id) DO UPDATE
       SET events = excluded.events,
           new_users = excluded.new_users,
           revenue = excluded.revenue
$$);

-- What reports read.
CREATE VIEW gold.page_events_daily AS
SELECT day, page_id, event_type,
       sum(events)::bigint    AS events,
       sum(new_users)::bigint AS users,
       sum(revenue)           AS revenue
  FROM gold.page_events_by_batch
 GROUP BY day, page_id, event_type;

-- Write-audit-publish: a batch whose fact rows point at a page the
-- dimension does not have is rolled back before anyone can read it.
SELECT microbatch.audit_relationships('clickstream', 'gold', 'gold.page_events_by_batch',
                                      'page_id', 'gold.dim_page', 'page_id',
                                      batch_column => 'batch_id');
