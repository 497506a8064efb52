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
