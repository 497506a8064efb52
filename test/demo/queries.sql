-- queries.sql: reports on the gold layer of test/demo/clickstream.sql.
--
--     psql -d mydb -f test/demo/queries.sql
--
-- Gold is read through gold.page_events_daily, which sums the contributions
-- of the batches; the reports look at the latest day in it.

\echo '== Top products of the day: funnel and revenue'
SELECT p.page_path                                              AS product,
       sum(f.events) FILTER (WHERE f.event_type = 'page_view')   AS views,
       sum(f.users)  FILTER (WHERE f.event_type = 'page_view')   AS viewers,
       sum(f.events) FILTER (WHERE f.event_type = 'add_to_cart') AS carts,
       sum(f.events) FILTER (WHERE f.event_type = 'purchase')    AS purchases,
       round(100.0 * sum(f.events) FILTER (WHERE f.event_type = 'purchase')
             / nullif(sum(f.events) FILTER (WHERE f.event_type = 'page_view'), 0), 1)
                                                                AS "conv %",
       sum(f.revenue)                                           AS revenue
  FROM gold.page_events_daily f
  JOIN gold.dim_page p USING (page_id)
 WHERE f.day = (SELECT max(day) FROM gold.page_events_by_batch)
   AND p.page_type = 'product'
 GROUP BY p.page_path
 ORDER BY revenue DESC, views DESC
 LIMIT 5;

\echo '== Traffic of the day by page type and event type'
SELECT p.page_type, f.event_type,
       sum(f.events)  AS events,
       sum(f.revenue) AS revenue
  FROM gold.page_events_daily f
  JOIN gold.dim_page p USING (page_id)
 WHERE f.day = (SELECT max(day) FROM gold.page_events_by_batch)
 GROUP BY p.page_type, f.event_type
 ORDER BY p.page_type, events DESC;

\echo '== Users by e-mail domain (masked in silver, never stored in clear past bronze)'
SELECT email_domain,
       count(*)                                   AS users,
       (array_agg(email_masked ORDER BY user_id))[1:3] AS sample,
       max(last_seen_at)                          AS last_seen
  FROM gold.dim_user
 GROUP BY email_domain
 ORDER BY users DESC;

\echo '== What the expectations kept out of silver, and what they only counted'
SELECT name AS expectation, action, sum(failed_rows) AS rows
  FROM microbatch.expectation_results
 WHERE pipeline = 'clickstream' AND kind = 'expectation'
 GROUP BY name, action
UNION ALL
SELECT 'duplicate event_id (the silver transform keeps one)', 'dedup',
       (SELECT count(*) FROM bronze.events) - (SELECT count(*) FROM silver.events)
 ORDER BY rows DESC;

\echo '== A few quarantined rows'
SELECT batch_id, expectations, row_data->>'amount' AS amount,
       left(row_data->>'payload', 30) AS payload, row_data->>'user_id' AS user_id
  FROM microbatch.quarantine
 WHERE pipeline = 'clickstream'
 ORDER BY batch_id DESC
 LIMIT 5;

-- Exactly once, end to end: every staged row is either quarantined or in
-- bronze, once; each bronze row is a copy of an event of silver, and the
-- fact holds every silver event and each page's distinct users.
-- Meaningful once microbatch.pipelines shows no rows waiting.
\echo '== Reconciliation: staging = bronze + quarantine; silver = distinct bronze events = fact'
WITH loaded AS (
    SELECT (SELECT count(*) FROM staging.events)            AS staged,
           (SELECT count(*) FROM bronze.events)             AS bronze,
           (SELECT count(DISTINCT event_id) FROM bronze.events) AS bronze_events,
           (SELECT count(*) FROM microbatch.quarantine
             WHERE pipeline = 'clickstream')                AS quarantined,
           (SELECT count(*) FROM silver.events)             AS silver_events,
           (SELECT sum(events) FROM gold.page_events_daily) AS fact_events),
user_mismatches AS (
    SELECT count(*) AS groups
      FROM (SELECT e.event_day AS day, p.page_id, e.event_type,
                   count(DISTINCT e.user_id) AS users
              FROM silver.events e
              JOIN gold.dim_page p USING (page_path)
             GROUP BY 1, 2, 3) u
      FULL JOIN gold.page_events_daily f USING (day, page_id, event_type)
     WHERE u.users IS DISTINCT FROM f.users)
SELECT l.staged, l.bronze, l.quarantined, l.bronze_events, l.silver_events,
       l.fact_events, m.groups AS user_count_mismatches,
       l.staged = l.bronze + l.quarantined
       AND l.bronze_events = l.silver_events
       AND l.silver_events = l.fact_events
       AND m.groups = 0 AS ok
  FROM loaded l, user_mismatches m;
