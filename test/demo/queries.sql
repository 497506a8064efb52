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

\echo '== What silver kept out'
SELECT reason, count(*) AS rows
  FROM silver.quarantine
 GROUP BY reason
UNION ALL
SELECT 'duplicate event_id (dropped)',
       (SELECT count(*) FROM bronze.events b
         WHERE silver.invalid_reason(b.user_id, b.amount, b.payload) IS NULL)
       - (SELECT count(*) FROM silver.events)
 ORDER BY rows DESC;

-- Exactly once, end to end: every staged row is in bronze once, each is
-- either quarantined or a copy of an event of silver, and the fact holds
-- every silver event and each page's distinct users.  Meaningful once
-- microbatch.pipelines shows no rows waiting.
\echo '== Reconciliation: staging = bronze = quarantine + valid; silver = fact'
WITH staged AS (
    SELECT count(*) AS rows,
           count(*) FILTER (WHERE silver.invalid_reason(user_id, amount, payload) IS NULL)
               AS valid_rows,
           count(DISTINCT event_id)
               FILTER (WHERE silver.invalid_reason(user_id, amount, payload) IS NULL)
               AS valid_events
      FROM staging.events),
loaded AS (
    SELECT (SELECT count(*) FROM bronze.events)             AS bronze,
           (SELECT count(*) FROM silver.quarantine)         AS quarantined,
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
SELECT s.rows AS staged, l.bronze, l.quarantined, s.valid_rows, s.valid_events,
       l.silver_events, l.fact_events, m.groups AS user_count_mismatches,
       s.rows = l.bronze
       AND s.rows = s.valid_rows + l.quarantined
       AND s.valid_events = l.silver_events
       AND l.silver_events = l.fact_events
       AND m.groups = 0 AS ok
  FROM staged s, loaded l, user_mismatches m;
