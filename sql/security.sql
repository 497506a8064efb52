--
-- Rights: pipelines run with their owner's rights, never more
--
CREATE SCHEMA alice_app AUTHORIZATION mb_alice;
CREATE SCHEMA evil;
GRANT USAGE, CREATE ON SCHEMA evil TO PUBLIC;

SET ROLE mb_alice;
CREATE TABLE alice_app.payments (id int, amount numeric, card text);
CREATE TABLE alice_app.target (id int, amount numeric, who text, as_user text);
INSERT INTO alice_app.payments VALUES (1, 10, '4111');
RESET ROLE;

-- bob may not read alice's table, so he cannot build a pipeline on it
GRANT USAGE ON SCHEMA alice_app TO mb_bob;
SET ROLE mb_bob;
SELECT microbatch.create_pipeline('bob_payments', 'alice_app.payments');
\echo :SQLSTATE
RESET ROLE;

-- carol may read it, but a pipeline changes the table: owner only, as
-- CREATE PUBLICATION
GRANT USAGE ON SCHEMA alice_app TO mb_carol;
GRANT SELECT ON alice_app.payments TO mb_carol;
SET ROLE mb_carol;
SELECT microbatch.create_pipeline('carol_payments', 'alice_app.payments');
\echo :SQLSTATE
RESET ROLE;
SELECT count(*) AS tracking_columns FROM pg_attribute
 WHERE attrelid = 'alice_app.payments'::regclass AND attname = 'microbatch_xid';

-- alice creates it, under her own search_path
SET ROLE mb_alice;
SET search_path = alice_app, public;
SELECT microbatch.create_pipeline('payments', 'payments');
SELECT microbatch.add_transform('payments', 'copy', 'bronze',
    $$INSERT INTO target SELECT id, amount, current_user, session_user FROM microbatch.payments_batch$$);
RESET search_path;
RESET ROLE;
SELECT pipeline, owner FROM microbatch.pipelines;
SELECT viewowner FROM pg_views WHERE viewname = 'payments_batch';

-- alice can make one and give it to carol, who may read the table; its
-- transforms, which read the batch view, are checked as carol, who owns
-- the view by then
SET ROLE mb_alice;
SELECT microbatch.create_pipeline('carol_payments', 'alice_app.payments');
SELECT microbatch.add_transform('carol_payments', 'count', 'bronze',
    'SELECT count(*) FROM microbatch.carol_payments_batch');
RESET ROLE;
SELECT microbatch.alter_pipeline_owner('carol_payments', 'mb_carol');
SELECT pipeline, owner FROM microbatch.pipelines ORDER BY 1;
SELECT viewowner FROM pg_views WHERE viewname = 'carol_payments_batch';
-- alice, who owns the table, may still refresh it (only she can guard
-- her tables), and so may carol; bob may not
SET ROLE mb_alice;
SELECT microbatch.refresh_pipeline('carol_payments');
RESET ROLE;
SET ROLE mb_carol;
SELECT microbatch.refresh_pipeline('carol_payments');
RESET ROLE;
SET ROLE mb_bob;
SELECT microbatch.refresh_pipeline('carol_payments');
\echo :SQLSTATE
RESET ROLE;
SELECT viewowner FROM pg_views WHERE viewname = 'carol_payments_batch';

-- bob can neither run, change nor drop alice's pipeline
SET ROLE mb_bob;
SELECT microbatch.run_batch('payments');
\echo :SQLSTATE
SELECT microbatch.replay_batch('payments', 1);
\echo :SQLSTATE
SELECT microbatch.add_transform('payments', 'steal', 'bronze', 'SELECT 1');
\echo :SQLSTATE
SELECT microbatch.remove_transform('payments', 'copy');
\echo :SQLSTATE
SELECT microbatch.pause_pipeline('payments');
\echo :SQLSTATE
SELECT microbatch.drop_pipeline('payments');
\echo :SQLSTATE
-- nor read or write the catalog behind the views
SELECT * FROM microbatch.pipeline;
\echo :SQLSTATE
DELETE FROM microbatch.batch;
\echo :SQLSTATE
-- nor read alice's rows through her batch view
SELECT * FROM microbatch.payments_batch;
\echo :SQLSTATE
-- the views show a role the pipelines whose owner's privileges it has:
-- none for bob, hers for alice
SELECT pipeline, state FROM microbatch.pipelines ORDER BY 1;
SELECT count(*) AS transforms FROM microbatch.transforms;
SELECT microbatch.rows_waiting('payments');
RESET ROLE;
SET ROLE mb_alice;
SELECT pipeline, state FROM microbatch.pipelines ORDER BY 1;
SELECT transform FROM microbatch.transforms;
RESET ROLE;

-- A superuser running the batch, with a hostile search_path, still runs it
-- as alice, with the search_path pinned when the transform was added
CREATE TABLE evil.target (id int, amount numeric, who text, as_user text);
SET search_path = evil, public;
SELECT microbatch.run_batch('payments');
RESET search_path;
SELECT id, amount, who FROM alice_app.target;
SELECT count(*) AS captured FROM evil.target;

-- A transform is checked with its owner's rights when it is added
CREATE TABLE secret (id int);
SET ROLE mb_alice;
SELECT microbatch.add_transform('payments', 'leak', 'gold',
    'INSERT INTO alice_app.target (id) SELECT id FROM public.secret');
\echo :SQLSTATE
SELECT microbatch.add_transform('payments', 'tamper', 'gold',
    'DELETE FROM microbatch.batch');
\echo :SQLSTATE
RESET ROLE;
SELECT transform FROM microbatch.transforms WHERE pipeline = 'payments';

-- and rights revoked later make the batch fail, not run with more rights
SET ROLE mb_alice;
CREATE TABLE alice_app.audit (id int);
SELECT microbatch.add_transform('payments', 'audit', 'gold',
    'INSERT INTO alice_app.audit SELECT id FROM microbatch.payments_batch');
REVOKE INSERT ON alice_app.audit FROM mb_alice;
INSERT INTO alice_app.payments VALUES (2, 20, '5500');
SELECT microbatch.run_batch('payments');
RESET ROLE;
SELECT batch_id, attempt, status, sqlstate, error FROM microbatch.batches
 WHERE pipeline = 'payments' ORDER BY batch_id, attempt;

-- Transforms run in a security-restricted operation
SET ROLE mb_alice;
GRANT INSERT ON alice_app.audit TO mb_alice;
SELECT microbatch.remove_transform('payments', 'audit');
SELECT microbatch.add_transform('payments', 'escape', 'gold',
    $$SELECT set_config('role', 'mb_bob', true)$$);
SELECT microbatch.run_batch('payments');
RESET ROLE;
SELECT batch_id, attempt, status, sqlstate, error FROM microbatch.batches
 WHERE pipeline = 'payments' ORDER BY batch_id, attempt;

SET ROLE mb_alice;
SELECT microbatch.drop_pipeline('payments');
RESET ROLE;
-- carol does not own the table: her drop of its last pipeline leaves the
-- guards, and says so
SET ROLE mb_carol;
SELECT microbatch.drop_pipeline('carol_payments');
RESET ROLE;
DROP SCHEMA alice_app CASCADE;
DROP SCHEMA evil CASCADE;
DROP TABLE secret;
