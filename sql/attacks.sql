--
-- Attacks, as ordinary roles: a pipeline never runs with more rights than
-- its owner has, leaves no setting behind, and no object a user creates can
-- capture the engine's own SQL (CVE-2018-1058, CVE-2020-25695 and
-- CVE-2022-1552 are the models).
--
CREATE ROLE mb_mallory LOGIN;
CREATE SCHEMA mallory AUTHORIZATION mb_mallory;
CREATE TABLE attack_log (who text, what text);
GRANT INSERT ON attack_log TO PUBLIC;

-- Operators and functions that would hand mallory superuser rights if
-- whoever ran them had them, and leave a trace either way.
SET ROLE mb_mallory;
CREATE FUNCTION mallory.grab() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.attack_log VALUES (current_user, 'grab');
    BEGIN
        EXECUTE 'ALTER ROLE mb_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN false;
END $$;
CREATE FUNCTION mallory.eq_name(name, name) RETURNS boolean LANGUAGE sql
    AS $$SELECT mallory.grab() OR $1 OPERATOR(pg_catalog.=) $2$$;
CREATE OPERATOR mallory.= (LEFTARG = name, RIGHTARG = name, FUNCTION = mallory.eq_name);
CREATE FUNCTION mallory.eq_int(int, int) RETURNS boolean LANGUAGE sql
    AS $$SELECT mallory.grab() OR $1 OPERATOR(pg_catalog.=) $2$$;
CREATE OPERATOR mallory.= (LEFTARG = int, RIGHTARG = int, FUNCTION = mallory.eq_int);
CREATE FUNCTION mallory.eq_text(text, text) RETURNS boolean LANGUAGE sql
    AS $$SELECT mallory.grab() OR $1 OPERATOR(pg_catalog.=) $2$$;
CREATE OPERATOR mallory.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mallory.eq_text);
CREATE FUNCTION mallory.ge_xid(xid8, xid8) RETURNS boolean LANGUAGE sql
    AS $$SELECT mallory.grab() OR $1 OPERATOR(pg_catalog.>=) $2$$;
CREATE OPERATOR mallory.>= (LEFTARG = xid8, RIGHTARG = xid8, FUNCTION = mallory.ge_xid);
CREATE FUNCTION mallory.plus(int, int) RETURNS int LANGUAGE sql
    AS $$SELECT CASE WHEN mallory.grab() THEN 0 ELSE $1 OPERATOR(pg_catalog.+) $2 END$$;
CREATE OPERATOR mallory.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = mallory.plus);
CREATE FUNCTION mallory.count(anyelement) RETURNS bigint LANGUAGE sql
    AS $$SELECT CASE WHEN mallory.grab() THEN 0 ELSE 0 END::bigint$$;

CREATE TABLE mallory.src (id int);
CREATE TABLE mallory.dst (id int, tz text);
RESET ROLE;

--
-- 1. A transform that changes search_path for the session, so that the
-- engine's next catalog query (run as the catalog's owner, a superuser)
-- resolves "=" to mallory's operator.
--
SET ROLE mb_mallory;
SET search_path = mallory, public;
SELECT microbatch.create_pipeline('hijack', 'mallory.src');
SELECT microbatch.add_transform('hijack', 'path', 'bronze',
    $$SELECT pg_catalog.set_config('search_path', 'mallory, pg_catalog', false) FROM microbatch.hijack_batch LIMIT 1$$);
-- the same through a function of her own, with a session-level SET inside
CREATE FUNCTION mallory.set_path() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    SET search_path = mallory, pg_catalog;
    SET TimeZone = 'Pacific/Kiritimati';
    PERFORM pg_catalog.set_config('work_mem', '64kB', false);
    PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
    PERFORM pg_catalog.set_config('lock_timeout', '1ms', false);
END $$;
SELECT microbatch.add_transform('hijack', 'path_in_function', 'silver',
    'SELECT mallory.set_path() FROM microbatch.hijack_batch LIMIT 1');
INSERT INTO src VALUES (1);
SELECT microbatch.run_batch('hijack');
INSERT INTO src VALUES (2);
SELECT microbatch.run_batch('hijack');
-- her own session keeps her own settings, not the transform's
SHOW search_path;
SHOW TimeZone;
SHOW work_mem;
SHOW default_transaction_read_only;
SHOW lock_timeout;
RESET search_path;
RESET ROLE;
-- a superuser running, replaying and watching her pipeline, with her
-- schema first on its search_path, calls none of her operators
SET search_path = mallory, public;
INSERT INTO mallory.src VALUES (3);
SELECT microbatch.run_batch('hijack');
SELECT microbatch.replay_batch('hijack', 1);
SELECT pipeline, last_batch_id, rows_waiting FROM microbatch.pipelines WHERE pipeline = 'hijack';
SELECT pipeline, batch_id, status FROM microbatch.batches WHERE pipeline = 'hijack' ORDER BY 2;
SELECT microbatch.alter_pipeline('hijack', batch_interval => '2 s');
SELECT microbatch.pause_pipeline('hijack');
SELECT microbatch.resume_pipeline('hijack');
SHOW search_path;
RESET search_path;
SHOW TimeZone;
SELECT rolsuper FROM pg_roles WHERE rolname = 'mb_mallory';
-- her functions ran only as herself, inside her transforms, if at all
SELECT DISTINCT who FROM attack_log;

--
-- 2. Inside a transform, the owner is in a security-restricted operation:
-- no SET ROLE, no temporary objects, also from triggers on its targets
--
SET ROLE mb_mallory;
CREATE FUNCTION mallory.become() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('role', 'mb_alice', false);
    RETURN NEW;
END $$;
CREATE TRIGGER become BEFORE INSERT ON mallory.dst
    FOR EACH ROW EXECUTE FUNCTION mallory.become();
SELECT microbatch.add_transform('hijack', 'to_dst', 'gold',
    'INSERT INTO mallory.dst SELECT id, NULL FROM microbatch.hijack_batch');
INSERT INTO mallory.src VALUES (4);
SELECT microbatch.run_batch('hijack');
SELECT microbatch.remove_transform('hijack', 'to_dst');
DROP TRIGGER become ON mallory.dst;
CREATE FUNCTION mallory.make_temp() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE loot (x int);
END $$;
SELECT microbatch.add_transform('hijack', 'temp', 'gold',
    'SELECT mallory.make_temp() FROM microbatch.hijack_batch');
SELECT microbatch.run_batch('hijack');
SELECT microbatch.remove_transform('hijack', 'temp');
SELECT microbatch.run_batch('hijack');
RESET ROLE;
SELECT batch_id, attempt, status, sqlstate, error FROM microbatch.batches
 WHERE pipeline = 'hijack' AND status = 'failed' ORDER BY 1, 2;

--
-- 3. Row security policies on a source are the owner's code too: they run
-- as the pipeline's owner, restricted
--
SET ROLE mb_mallory;
CREATE FUNCTION mallory.policy_check(int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.attack_log VALUES (current_user, 'policy');
    PERFORM pg_catalog.set_config('role', 'mb_alice', false);
    RETURN true;
EXCEPTION WHEN insufficient_privilege THEN
    INSERT INTO public.attack_log VALUES (current_user, 'policy refused SET ROLE');
    RETURN true;
END $$;
CREATE TABLE mallory.guarded (id int);
ALTER TABLE mallory.guarded ENABLE ROW LEVEL SECURITY;
ALTER TABLE mallory.guarded FORCE ROW LEVEL SECURITY;
CREATE POLICY see ON mallory.guarded USING (mallory.policy_check(id));
SELECT microbatch.create_pipeline('guarded', 'mallory.guarded');
SELECT microbatch.add_transform('guarded', 'count', 'bronze',
    'SELECT count(*) FROM microbatch.guarded_batch');
INSERT INTO mallory.guarded VALUES (1);
RESET ROLE;
TRUNCATE attack_log;
-- run by a superuser, and counted by the pipelines view
SELECT microbatch.run_batch('guarded');
INSERT INTO mallory.guarded VALUES (2);
SELECT pipeline, rows_waiting FROM microbatch.pipelines WHERE pipeline = 'guarded';
SELECT who, what, count(*) > 0 AS ran FROM attack_log GROUP BY 1, 2 ORDER BY 1, 2;

--
-- 4. The monitoring views are security barriers: a cheap leaky function in
-- a caller's WHERE clause never sees the rows the view hides
--
SET ROLE mb_mallory;
INSERT INTO mallory.src VALUES (5);
SELECT microbatch.run_batch('hijack');
RESET ROLE;
CREATE ROLE mb_eve LOGIN;
SET ROLE mb_eve;
CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    RAISE NOTICE 'leaked: %', $1;
    RETURN true;
END $$;
SELECT count(*) FROM microbatch.pipelines WHERE pg_temp.leak(pipeline::text);
SELECT count(*) FROM microbatch.transforms WHERE pg_temp.leak(command);
SELECT count(*) FROM microbatch.batches WHERE pg_temp.leak(error);
-- and the workers view names no pipeline of another owner
SELECT count(*) FROM microbatch.workers WHERE pipeline IS NOT NULL;
DROP FUNCTION pg_temp.leak(text);
RESET ROLE;

--
-- 5. What cannot be a source: the catalog, system catalogs
--
SELECT microbatch.create_pipeline('ledger', 'microbatch.batch');
\echo :SQLSTATE
SELECT microbatch.create_pipeline('classes', 'pg_catalog.pg_class');
\echo :SQLSTATE
SELECT count(*) AS tracking_columns FROM pg_attribute
 WHERE attrelid = 'microbatch.batch'::regclass AND attname = 'microbatch_xid';

--
-- 6. Internal functions are not for users
--
SELECT has_function_privilege('public', 'microbatch.extension_created()', 'EXECUTE') AS public_can_call;
SELECT microbatch.extension_created();
\echo :SQLSTATE

--
-- 7. A transform may call only functions its owner may execute
--
CREATE FUNCTION public.privileged(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
REVOKE EXECUTE ON FUNCTION public.privileged(int) FROM PUBLIC;
SET ROLE mb_mallory;
SELECT microbatch.add_transform('hijack', 'call', 'gold',
    'SELECT public.privileged(id) FROM microbatch.hijack_batch');
\echo :SQLSTATE
RESET ROLE;
SELECT count(*) AS transforms FROM microbatch.transforms WHERE transform = 'call';

--
-- 8. A pipeline does not outlive its owner's right to log in
--
ALTER ROLE mb_mallory NOLOGIN;
INSERT INTO mallory.src VALUES (6);
SELECT microbatch.run_batch('hijack');
\echo :SQLSTATE
SELECT microbatch.rows_waiting('hijack');
ALTER ROLE mb_mallory LOGIN VALID UNTIL '2000-01-01';
SELECT microbatch.run_batch('hijack');
\echo :SQLSTATE
ALTER ROLE mb_mallory VALID UNTIL 'infinity';
SELECT microbatch.run_batch('hijack') IS NOT NULL AS ran;
-- nor can a role that may not log in create one
CREATE ROLE mb_group NOLOGIN;
CREATE TABLE group_src (id int);
ALTER TABLE group_src OWNER TO mb_group;
SET ROLE mb_group;
SELECT microbatch.create_pipeline('group_pipeline', 'group_src');
\echo :SQLSTATE
RESET ROLE;

--
-- 9. Batch views stay where and whose they are; a pipeline is dropped by
-- its view's OID, never by a name another owner could give a view
--
SET ROLE mb_mallory;
ALTER VIEW microbatch.hijack_batch RENAME TO guarded_batch2;
\echo :SQLSTATE
ALTER VIEW microbatch.hijack_batch SET SCHEMA mallory;
\echo :SQLSTATE
RESET ROLE;
ALTER VIEW microbatch.hijack_batch OWNER TO mb_eve;
\echo :SQLSTATE
-- even with the event triggers off, a view moved away and given the name
-- of another pipeline's view is not the other pipeline's to drop
ALTER EVENT TRIGGER microbatch_ddl_start DISABLE;
SET ROLE mb_mallory;
ALTER VIEW microbatch.hijack_batch SET SCHEMA mallory;
ALTER VIEW mallory.hijack_batch RENAME TO guarded_batch;
RESET ROLE;
ALTER EVENT TRIGGER microbatch_ddl_start ENABLE ALWAYS;
SELECT microbatch.run_batch('hijack');
\echo :SQLSTATE
SELECT microbatch.drop_pipeline('hijack');
SELECT to_regclass('microbatch.guarded_batch') IS NOT NULL AS victim_view_kept,
       to_regclass('mallory.guarded_batch') IS NOT NULL AS moved_view_kept;
DROP VIEW mallory.guarded_batch;

--
-- 10. Ownership: REASSIGN OWNED moves pipelines with their views, DROP OWNED
-- drops them, and alter_pipeline_owner hands one over
--
CREATE ROLE mb_dave LOGIN;
REASSIGN OWNED BY mb_mallory TO mb_dave;
SELECT pipeline, owner FROM microbatch.pipelines WHERE pipeline = 'guarded';
SELECT viewowner FROM pg_views WHERE viewname = 'guarded_batch';
SELECT microbatch.run_batch('guarded') IS NOT NULL AS ran;
-- the new owner may not give it to a role it is not a member of
SET ROLE mb_dave;
SELECT microbatch.alter_pipeline_owner('guarded', 'mb_eve');
\echo :SQLSTATE
RESET ROLE;
DROP ROLE mb_dave;
\echo :SQLSTATE
DROP OWNED BY mb_dave;
SELECT count(*) AS pipelines FROM microbatch.pipelines WHERE pipeline = 'guarded';
DROP ROLE mb_dave;

--
-- 11. Deferred constraints cannot be checked inside a batch: add_transform
-- says so instead of every batch failing
--
CREATE TABLE dim (id int PRIMARY KEY);
CREATE TABLE fact (id int REFERENCES dim DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE deferred_src (id int);
SELECT microbatch.create_pipeline('deferred', 'deferred_src');
SELECT microbatch.add_transform('deferred', 'fact', 'gold',
    'INSERT INTO fact SELECT id FROM microbatch.deferred_batch');
\echo :SQLSTATE
SELECT microbatch.add_transform('deferred', 'dim', 'gold',
    'DELETE FROM dim WHERE id IN (SELECT id FROM microbatch.deferred_batch)');
\echo :SQLSTATE
ALTER TABLE fact ALTER CONSTRAINT fact_id_fkey INITIALLY IMMEDIATE;
SELECT microbatch.add_transform('deferred', 'dim', 'gold',
    'INSERT INTO dim SELECT id FROM microbatch.deferred_batch ON CONFLICT DO NOTHING');
SELECT microbatch.add_transform('deferred', 'fact', 'gold',
    'INSERT INTO fact SELECT id FROM microbatch.deferred_batch');
INSERT INTO deferred_src VALUES (1), (2);
SELECT microbatch.run_batch('deferred');
SELECT count(*) FROM fact;
SELECT microbatch.drop_pipeline('deferred');

--
-- 12. Read-only transactions are refused up front, with no internal SQL in
-- the message
--
CREATE TABLE ro_src (id int);
SELECT microbatch.create_pipeline('ro', 'ro_src');
SELECT microbatch.add_transform('ro', 'noop', 'bronze', 'SELECT 1 FROM microbatch.ro_batch');
INSERT INTO ro_src VALUES (1);
BEGIN READ ONLY;
SELECT microbatch.run_batch('ro');
ROLLBACK;
BEGIN READ ONLY;
SELECT microbatch.create_pipeline('ro2', 'ro_src');
ROLLBACK;
BEGIN READ ONLY;
SELECT microbatch.drop_pipeline('ro');
ROLLBACK;

--
-- 13. Intervals say what they mean
--
SELECT microbatch.alter_pipeline('ro', batch_interval => '1 mon -30 days');
\echo :SQLSTATE
SELECT microbatch.alter_pipeline('ro', batch_interval => '300000 years');
\echo :SQLSTATE
SELECT microbatch.alter_pipeline('ro', batch_interval => '0.5 ms');
\echo :SQLSTATE
SELECT microbatch.alter_pipeline('ro', batch_interval => '366 days');
SELECT microbatch.alter_pipeline('ro', batch_timeout => '-1 s');
\echo :SQLSTATE
SELECT microbatch.alter_pipeline('ro', batch_timeout => '2 hours');
SELECT pipeline, batch_interval, batch_timeout FROM microbatch.pipelines WHERE pipeline = 'ro';
CREATE SCHEMA alice_app AUTHORIZATION mb_alice;
SET ROLE mb_alice;
CREATE TABLE alice_app.alice_ro (id int);
SELECT microbatch.create_pipeline('alice_ro', 'alice_app.alice_ro');
SELECT microbatch.alter_pipeline('alice_ro', batch_timeout => '2 hours');
\echo :SQLSTATE
SELECT microbatch.alter_pipeline('alice_ro', batch_timeout => '10 min');
SELECT microbatch.alter_pipeline('alice_ro', batch_timeout => '0');
SELECT pipeline, batch_timeout FROM microbatch.pipelines WHERE pipeline = 'alice_ro';
SELECT microbatch.drop_pipeline('alice_ro');
RESET ROLE;
DROP SCHEMA alice_app CASCADE;
SELECT microbatch.drop_pipeline('ro');

--
-- 14. Hints quote the names they paste into SQL
--
CREATE TABLE quoted_src (v int);
SELECT microbatch.create_pipeline($$x'); DROP TABLE quoted_src; --$$, 'quoted_src');
SELECT microbatch.add_transform($$x'); DROP TABLE quoted_src; --$$, 'divide', 'gold',
    $$SELECT 1 / v FROM microbatch."x'); DROP TABLE quoted_src; --_batch"$$);
INSERT INTO quoted_src VALUES (0);
\set VERBOSITY terse
SELECT microbatch.run_batch($$x'); DROP TABLE quoted_src; --$$) FROM generate_series(1, 4);
\set VERBOSITY default
SELECT microbatch.run_batch($$x'); DROP TABLE quoted_src; --$$);
SELECT microbatch.drop_pipeline($$x'); DROP TABLE quoted_src; --$$);

--
-- 15. A rebind rewrites the rows of the tables it rebinds, and no others:
-- an owner's trigger that fires meanwhile cannot slip rows with made-up
-- tracking values into another owner's source (the rebind runs in replica
-- mode, and the victim's table has no replica trigger: the constraint
-- refuses the row, and the rebind fails having changed nothing)
--
CREATE TABLE victim_src (id int, note text);
SELECT microbatch.create_pipeline('victim', 'victim_src');
GRANT INSERT ON victim_src TO mb_mallory;
CREATE SCHEMA mallory_app AUTHORIZATION mb_mallory;
SET ROLE mb_mallory;
CREATE TABLE mallory_app.mallory_src (id int);
SELECT microbatch.create_pipeline('mallory_rb', 'mallory_app.mallory_src');
CREATE FUNCTION mallory_app.smuggle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.victim_src (id, note, microbatch_xid) VALUES (NEW.id, 'smuggled', '3');
    RETURN NEW;
END $$;
CREATE TRIGGER smuggle AFTER UPDATE ON mallory_app.mallory_src
    FOR EACH ROW EXECUTE FUNCTION mallory_app.smuggle();
ALTER TABLE mallory_app.mallory_src ENABLE ALWAYS TRIGGER smuggle;
INSERT INTO mallory_app.mallory_src VALUES (1);
RESET ROLE;
-- as if restored from another cluster
UPDATE microbatch.pipeline SET system_identifier = 1 WHERE pipeline_name = 'mallory_rb';
SET ROLE mb_mallory;
\set VERBOSITY terse
SELECT microbatch.rebind_pipeline('mallory_rb');
\set VERBOSITY default
RESET ROLE;
-- no row with the made-up id, and none waiting
SELECT count(*) AS made_up FROM victim_src WHERE microbatch_xid = '3';
SELECT microbatch.rows_waiting('victim');
SELECT microbatch.drop_pipeline('mallory_rb');
SELECT microbatch.drop_pipeline('victim');
DROP TABLE victim_src;
DROP SCHEMA mallory_app CASCADE;

DROP TABLE quoted_src, ro_src, deferred_src, fact, dim, group_src, attack_log;
DROP FUNCTION public.privileged(int);
DROP ROLE mb_mallory, mb_eve, mb_group;
