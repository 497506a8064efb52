--
-- The batch view is an ordinary relation to the planner
--
CREATE TABLE sales (id int, store_id int, amount numeric);
CREATE TABLE stores (store_id int PRIMARY KEY, city text);
INSERT INTO stores VALUES (1, 'Lyon'), (2, 'Porto');
SELECT microbatch.create_pipeline('sales', 'sales');

-- Outside a batch: no rows, no batch id
SELECT count(*) FROM microbatch.sales_batch;
SELECT microbatch.current_batch_id();

-- Joins and aggregates over the batch, with the batch id available
CREATE TABLE city_sales (batch_id bigint, city text, total numeric, n bigint);
SELECT microbatch.add_transform('sales', 'by_city', 'gold',
    $$INSERT INTO city_sales
      SELECT microbatch.current_batch_id(), st.city, sum(b.amount), count(*)
        FROM microbatch.sales_batch b JOIN stores st USING (store_id)
       GROUP BY st.city$$);
INSERT INTO sales VALUES (1, 1, 10), (2, 1, 5), (3, 2, 7);
SELECT microbatch.run_batch('sales');
INSERT INTO sales VALUES (4, 2, 1);
SELECT microbatch.run_batch('sales');
SELECT * FROM city_sales ORDER BY batch_id, city;

-- The window is an index range on the tracking column
INSERT INTO sales SELECT g, 1, 1 FROM generate_series(5, 20000) g;
SELECT microbatch.run_batch('sales');
ANALYZE sales;
-- (the pipeline id in the plan depends on the suites before this one)
CREATE FUNCTION explain_lines(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        RETURN NEXT regexp_replace(line, '(batch_\w+)\(\d+', '\1(N', 'g');
    END LOOP;
END $$;
SELECT explain_lines('SELECT store_id, sum(amount) FROM microbatch.sales_batch GROUP BY store_id');

-- Batches change nothing in the catalog: no temporary tables or views
SELECT count(*) AS relations, max(oid::text::bigint) AS newest_oid FROM pg_class \gset
INSERT INTO sales VALUES (20001, 1, 1);
SELECT microbatch.run_batch('sales');
INSERT INTO sales VALUES (20002, 2, 1);
SELECT microbatch.run_batch('sales');
SELECT count(*) - :relations AS new_relations,
       max(oid::text::bigint) = :newest_oid AS same_newest_oid
  FROM pg_class;

SELECT microbatch.drop_pipeline('sales');
DROP TABLE sales, stores, city_sales;
DROP FUNCTION explain_lines(text);

-- Catching up in capped batches costs each batch its own rows, not the
-- backlog's: cutting the window reads the first rows in tracking order and
-- stops, on a plain table and on a partitioned one.  Index entries read by
-- one capped batch of a 10,000-row backlog (100 rows a transaction) with a
-- cap of 100 rows: the cut, the count, and one transform.
CREATE TABLE backlog (id int, v int);
CREATE TABLE backlog_parts (id int, v int) PARTITION BY RANGE (id);
CREATE TABLE backlog_parts_1 PARTITION OF backlog_parts FOR VALUES FROM (0) TO (5000);
CREATE TABLE backlog_parts_2 PARTITION OF backlog_parts FOR VALUES FROM (5000) TO (10000);
CREATE TABLE backlog_sink (batch_id bigint, id int);
SELECT microbatch.create_pipeline('backlog', 'backlog', max_batch_rows => 100);
SELECT microbatch.create_pipeline('backlog_parts', 'backlog_parts', max_batch_rows => 100);
SELECT microbatch.add_transform('backlog', 'copy', 'bronze',
    'INSERT INTO backlog_sink SELECT microbatch.current_batch_id(), id FROM microbatch.backlog_batch');
SELECT microbatch.add_transform('backlog_parts', 'copy', 'bronze',
    'INSERT INTO backlog_sink SELECT -microbatch.current_batch_id(), id FROM microbatch.backlog_parts_batch');
CREATE PROCEDURE load_backlog(target regclass) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 0..99 LOOP
        EXECUTE format('INSERT INTO %s SELECT g, g FROM generate_series($1, $2) g', target)
          USING i * 100, i * 100 + 99;
        COMMIT;
    END LOOP;
END $$;
CALL load_backlog('backlog');
CALL load_backlog('backlog_parts');
ANALYZE backlog, backlog_parts;
CREATE FUNCTION index_entries_read(source regclass) RETURNS bigint LANGUAGE sql AS $$
    SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid))::bigint
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE a.attname = 'microbatch_xid'
       AND (i.indrelid = source OR i.indrelid IN (SELECT relid FROM pg_partition_tree(source))) $$;
BEGIN;
SELECT microbatch.run_batch('backlog');
SELECT index_entries_read('backlog') BETWEEN 300 AND 500 AS proportional;
SELECT microbatch.run_batch('backlog_parts');
SELECT index_entries_read('backlog_parts') BETWEEN 300 AND 500 AS proportional;
COMMIT;
-- the rest of the backlog, 100 rows a batch, each row once
SELECT count(microbatch.run_batch('backlog')), count(microbatch.run_batch('backlog_parts'))
  FROM generate_series(1, 100);
SELECT sign(batch_id) AS pipeline, count(*) AS rows, count(DISTINCT id) AS ids,
       count(DISTINCT batch_id) AS batches,
       bool_and(id / 100 = abs(batch_id) - 1) AS in_commit_order
  FROM backlog_sink GROUP BY 1 ORDER BY 1;
SELECT microbatch.drop_pipeline('backlog');
SELECT microbatch.drop_pipeline('backlog_parts');
DROP TABLE backlog, backlog_parts, backlog_sink;
DROP FUNCTION index_entries_read(regclass);
DROP PROCEDURE load_backlog(regclass);
