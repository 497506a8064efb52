--
-- Adding and removing transforms
--
CREATE TABLE orders (id int, amount numeric);
SELECT microbatch.create_pipeline('orders', 'orders');
CREATE TABLE run_log (seq serial, transform text, batch_id bigint);

-- Layers run bronze, silver, gold whatever the order they were added in;
-- within a layer, in the order added
SELECT microbatch.add_transform('orders', 'g1', 'gold',
    $$INSERT INTO run_log (transform, batch_id) VALUES ('g1', microbatch.current_batch_id())$$);
SELECT microbatch.add_transform('orders', 's1', 'silver',
    $$INSERT INTO run_log (transform, batch_id) VALUES ('s1', microbatch.current_batch_id())$$);
SELECT microbatch.add_transform('orders', 'b2', 'bronze',
    $$INSERT INTO run_log (transform, batch_id) VALUES ('b2', microbatch.current_batch_id())$$);
SELECT microbatch.add_transform('orders', 'b1', 'bronze',
    $$INSERT INTO run_log (transform, batch_id) VALUES ('b1', microbatch.current_batch_id())$$);
SELECT microbatch.add_transform('orders', 'g2', 'gold',
    $$INSERT INTO run_log (transform, batch_id) VALUES ('g2', microbatch.current_batch_id())$$);
SELECT pipeline, transform, layer, run_order FROM microbatch.transforms ORDER BY run_order;

INSERT INTO orders VALUES (1, 10);
SELECT microbatch.run_batch('orders');
SELECT transform, batch_id FROM run_log ORDER BY seq;

-- Each kind of statement a transform may be
CREATE TABLE order_totals (id int PRIMARY KEY, amount numeric);
SELECT microbatch.add_transform('orders', 'upsert', 'gold',
    $$INSERT INTO order_totals SELECT id, amount FROM microbatch.orders_batch
      ON CONFLICT (id) DO UPDATE SET amount = order_totals.amount + excluded.amount$$);
SELECT microbatch.add_transform('orders', 'update', 'gold',
    $$UPDATE order_totals t SET amount = t.amount FROM microbatch.orders_batch b WHERE b.id = t.id$$);
SELECT microbatch.add_transform('orders', 'delete', 'gold',
    $$DELETE FROM run_log WHERE batch_id < microbatch.current_batch_id() - 1$$);
SELECT microbatch.add_transform('orders', 'merge', 'gold',
    $$MERGE INTO order_totals t USING microbatch.orders_batch b ON t.id = b.id
      WHEN NOT MATCHED THEN INSERT VALUES (b.id, b.amount)$$);
SELECT microbatch.add_transform('orders', 'select', 'gold',
    $$SELECT count(*) FROM microbatch.orders_batch$$);
SELECT microbatch.add_transform('orders', 'cte', 'gold',
    $$WITH b AS (SELECT * FROM microbatch.orders_batch) SELECT count(*) FROM b$$);

-- Bad transforms are refused when added, and nothing is stored
SELECT microbatch.add_transform('orders', 'bad_layer', 'platinum', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'two', 'bronze', 'SELECT 1; SELECT 2');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'empty', 'bronze', '   ');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'syntax', 'bronze', 'INSERT INTO WHERE');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'unknown_table', 'bronze',
    'INSERT INTO no_such_table SELECT * FROM microbatch.orders_batch');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'unknown_column', 'bronze',
    'SELECT no_such_column FROM microbatch.orders_batch');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'ddl', 'bronze', 'CREATE TABLE t (a int)');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'select_into', 'bronze',
    'SELECT * INTO new_table FROM microbatch.orders_batch');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'truncate', 'bronze', 'TRUNCATE run_log');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'g1', 'gold', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', NULL, 'gold', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.add_transform('orders', 'no_command', 'gold', NULL);
\echo :SQLSTATE
SELECT microbatch.add_transform('no_such_pipeline', 'x', 'gold', 'SELECT 1');
\echo :SQLSTATE
SELECT count(*) AS transforms FROM microbatch.transforms;

-- Removing
SELECT microbatch.remove_transform('orders', 'b2');
SELECT microbatch.remove_transform('orders', 'b2');
\echo :SQLSTATE
SELECT transform, layer, run_order FROM microbatch.transforms ORDER BY run_order;

INSERT INTO orders VALUES (2, 20);
SELECT microbatch.run_batch('orders');
SELECT transform, batch_id FROM run_log ORDER BY seq;
SELECT * FROM order_totals ORDER BY id;

SELECT microbatch.drop_pipeline('orders');
DROP TABLE orders, run_log, order_totals;

-- Transform ids start again when the extension is recreated: a plan this
-- session keeps must not outlive the transform it was made for
CREATE TABLE plan_check (id int);
CREATE TABLE run_notes (note text);
DROP EXTENSION microbatch;
CREATE EXTENSION microbatch;
SELECT microbatch.create_pipeline('plans', 'plan_check');
SELECT microbatch.add_transform('plans', 'first', 'bronze',
    $$INSERT INTO run_notes SELECT 'first command' FROM microbatch.plans_batch$$);
INSERT INTO plan_check VALUES (1);
SELECT microbatch.run_batch('plans');
SELECT microbatch.drop_pipeline('plans');
DROP EXTENSION microbatch;
CREATE EXTENSION microbatch;
SELECT microbatch.create_pipeline('plans', 'plan_check');
SELECT microbatch.add_transform('plans', 'second', 'bronze',
    $$INSERT INTO run_notes SELECT 'second command' FROM microbatch.plans_batch$$);
SELECT transform, run_order FROM microbatch.transforms;
SELECT microbatch.run_batch('plans');
SELECT note, count(*) FROM run_notes GROUP BY note ORDER BY note;
SELECT microbatch.drop_pipeline('plans');
DROP TABLE plan_check, run_notes;
