--
-- Data quality: expectations, audits, quarantine
--
CREATE SCHEMA quality AUTHORIZATION mb_alice;
GRANT USAGE ON SCHEMA quality TO mb_bob;
SET ROLE mb_alice;
SET search_path = quality, public;

CREATE TABLE signups (id int, email text, plan text, amount numeric, country text);
CREATE TABLE clean (batch_id bigint, id int, email text, plan text, amount numeric, country text);
CREATE TABLE countries (code text PRIMARY KEY);
INSERT INTO countries VALUES ('fr'), ('de');
SELECT microbatch.create_pipeline('signups', 'signups');
SELECT microbatch.add_transform('signups', 'clean', 'silver',
    $$INSERT INTO clean SELECT microbatch.current_batch_id(), id, email, plan, amount, country
        FROM microbatch.signups_batch$$);

-- 1. A predicate is validated when added; a refused one stores nothing
SELECT microbatch.add_expectation('signups', 'e', 'nosuch IS NOT NULL');
SELECT microbatch.add_expectation('signups', 'e', 'microbatch_xid IS NOT NULL');
SELECT microbatch.add_expectation('signups', 'e', 'ctid IS NOT NULL');
SELECT microbatch.add_expectation('signups', 'e', 'signups_batch IS NOT NULL');
SELECT microbatch.add_expectation('signups', 'e', 'id IN (SELECT code::int FROM countries)');
SELECT microbatch.add_expectation('signups', 'e', 'EXISTS (SELECT 1)');
SELECT microbatch.add_expectation('signups', 'e', 'random() < 0.5');
SELECT microbatch.add_expectation('signups', 'e', 'count(*) > 0');
SELECT microbatch.add_expectation('signups', 'e', 'row_number() OVER () > 0');
SELECT microbatch.add_expectation('signups', 'e', 'generate_series(1, id) > 0');
SELECT microbatch.add_expectation('signups', 'e', 'amount + 1');
SELECT microbatch.add_expectation('signups', 'e', 'true, false');
SELECT microbatch.add_expectation('signups', 'e', 'id >');
SELECT microbatch.add_expectation('signups', 'e', 'true) FROM pg_authid WHERE (true');
SELECT microbatch.add_expectation('signups', 'e', 'true); DROP TABLE clean; SELECT (true');
SELECT microbatch.add_expectation('signups', 'e', 'true) AS x, (false');
SELECT microbatch.add_expectation('signups', 'e', NULL);
SELECT microbatch.add_expectation('signups', 'e', 'id > 0', 'ignore');
SELECT microbatch.add_expectation('nosuch', 'e', 'id > 0');
SELECT count(*) AS stored FROM microbatch.expectations;

-- A trailing comment is fine; what is stored is the deparsed expression,
-- with names outside pg_catalog qualified
CREATE FUNCTION quality.valid_email(text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$SELECT $1 LIKE '%@%'$$;
SELECT microbatch.add_expectation('signups', 'email_valid', 'valid_email(email) -- has an @', 'drop');
SELECT microbatch.add_expectation('signups', 'amount_positive', 'amount > 0');
SELECT microbatch.add_expectation('signups', 'email_valid', 'true');
SELECT expectation, predicate, on_violation FROM microbatch.expectations ORDER BY 1;

-- 2. warn keeps and counts, drop quarantines; a null result is a violation
INSERT INTO signups VALUES
    (1, 'a@x', 'free', 10, 'fr'),
    (2, 'nobody', 'free', 5, 'fr'),
    (3, 'c@x', 'pro', -1, 'de'),
    (4, NULL, 'pro', NULL, 'xx'),
    (5, 'e@x', 'gold', 7, 'de');
SELECT microbatch.run_batch('signups');
SELECT id, email, amount FROM clean ORDER BY id;
SELECT batch_id, expectations, row_data FROM microbatch.quarantine ORDER BY row_data->>'id';
SELECT batch_id, kind, name, action, passed_rows, failed_rows
  FROM microbatch.expectation_results ORDER BY batch_id, kind, name;
SELECT batch_id, rows_in, rows_dropped FROM microbatch.batches WHERE pipeline = 'signups';
SELECT last_batch_id, last_batch_rows_dropped, last_batch_warnings
  FROM microbatch.pipelines WHERE pipeline = 'signups';

-- 3. fail: the batch rolls back with everything it wrote, and is retried
SELECT microbatch.add_expectation('signups', 'known_plan', $$plan IN ('free', 'pro')$$, 'fail');
INSERT INTO signups VALUES (6, 'f@x', 'free', 1, 'fr'), (7, 'g@x', 'platinum', 2, 'fr');
SELECT microbatch.run_batch('signups');
SELECT count(*) AS clean_rows FROM clean;
SELECT batch_id, count(*) FROM microbatch.quarantine GROUP BY 1 ORDER BY 1;
SELECT count(*) AS results_of_batch_2 FROM microbatch.expectation_results WHERE batch_id = 2;
SELECT batch_id, status, sqlstate, error, error_detail
  FROM microbatch.batches WHERE pipeline = 'signups' ORDER BY batch_id, attempt;
SELECT consecutive_failures FROM microbatch.pipelines WHERE pipeline = 'signups';
SELECT microbatch.remove_expectation('signups', 'known_plan');
SELECT microbatch.remove_expectation('signups', 'known_plan');
SELECT microbatch.run_batch('signups');
SELECT id, plan FROM clean WHERE batch_id = 2 ORDER BY id;

-- 4. Audits run after the transforms of their layer, inside the batch
SELECT microbatch.add_audit('signups', 'before_silver', 'bronze',
    $$SELECT id FROM clean WHERE batch_id = microbatch.current_batch_id()$$, 'warn');
SELECT microbatch.add_audit('signups', 'after_silver', 'silver',
    $$SELECT id, email FROM clean WHERE batch_id = microbatch.current_batch_id()$$, 'warn');
INSERT INTO signups VALUES (8, 'h@x', 'pro', 3, 'fr');
SELECT microbatch.run_batch('signups');
SELECT name, action, passed_rows, failed_rows, sample
  FROM microbatch.expectation_results WHERE batch_id = 3 AND kind = 'audit' ORDER BY name;
SELECT last_batch_warnings FROM microbatch.pipelines WHERE pipeline = 'signups';

-- a fail audit: write-audit-publish, no reader ever sees the batch
SELECT microbatch.add_audit('signups', 'no_big_amounts', 'gold',
    $$SELECT id, amount FROM clean WHERE amount > 100$$);
INSERT INTO signups VALUES (9, 'i@x', 'pro', 1000, 'de');
SELECT microbatch.run_batch('signups');
SELECT count(*) AS big_rows FROM clean WHERE amount > 100;
SELECT batch_id, status, error, error_detail FROM microbatch.batches
 WHERE pipeline = 'signups' AND status = 'failed' AND batch_id = 4;
SELECT microbatch.remove_audit('signups', 'no_big_amounts');
SELECT microbatch.remove_audit('signups', 'no_big_amounts');
SELECT microbatch.run_batch('signups');

-- audits are SELECTs the owner may run; a refused one stores nothing
SELECT microbatch.add_audit('signups', 'a', 'gold', 'DELETE FROM clean');
SELECT microbatch.add_audit('signups', 'a', 'gold',
    'WITH gone AS (DELETE FROM clean RETURNING *) SELECT * FROM gone');
SELECT microbatch.add_audit('signups', 'a', 'gold', 'SELECT 1; SELECT 2');
SELECT microbatch.add_audit('signups', 'a', 'gold', 'SELECT * INTO copied FROM clean');
SELECT microbatch.add_audit('signups', 'a', 'gold', 'SELECT nosuch FROM clean');
SELECT microbatch.add_audit('signups', 'a', 'gold', 'SELECT * FROM pg_authid');
SELECT microbatch.add_audit('signups', 'a', 'platinum', 'SELECT 1');
SELECT microbatch.add_audit('signups', 'a', 'gold', 'SELECT 1', 'drop');
SELECT microbatch.add_audit('signups', 'after_silver', 'gold', 'SELECT 1');
SELECT audit, layer, on_failure FROM microbatch.audits ORDER BY 1;

-- 5. A replay evaluates the current expectations again and replaces the
-- batch's quarantine and results
SELECT count(*) AS quarantined, (SELECT count(*) FROM microbatch.expectation_results WHERE batch_id = 1) AS results
  FROM microbatch.quarantine WHERE batch_id = 1;
SELECT microbatch.remove_audit('signups', 'before_silver');
SELECT microbatch.remove_audit('signups', 'after_silver');
SELECT microbatch.replay_batch('signups', 1);
SELECT count(*) AS quarantined, (SELECT count(*) FROM microbatch.expectation_results WHERE batch_id = 1) AS results
  FROM microbatch.quarantine WHERE batch_id = 1;
SELECT microbatch.remove_expectation('signups', 'email_valid');
SELECT microbatch.add_expectation('signups', 'country_known', $$country IN ('fr', 'de')$$, 'drop');
SELECT microbatch.replay_batch('signups', 1);
SELECT batch_id, expectations, row_data->>'id' AS id FROM microbatch.quarantine WHERE batch_id = 1;
SELECT name, action, passed_rows, failed_rows FROM microbatch.expectation_results
 WHERE batch_id = 1 ORDER BY name;
SELECT rows_dropped, replays FROM microbatch.batches WHERE pipeline = 'signups' AND batch_id = 1;

-- 6. dbt's generic tests, one call each
CREATE TABLE dim_country (code text PRIMARY KEY);
INSERT INTO dim_country VALUES ('fr'), ('de');
CREATE TABLE fact_signup (batch_id bigint, id int, country text);
SELECT microbatch.add_transform('signups', 'fact', 'gold',
    $$INSERT INTO fact_signup SELECT microbatch.current_batch_id(), id, country FROM microbatch.signups_batch$$);
SELECT microbatch.remove_expectation('signups', 'country_known');
SELECT microbatch.expect_not_null('signups', 'email');
SELECT microbatch.expect_accepted_values('signups', 'plan', ARRAY['free', 'pro'], 'warn');
SELECT microbatch.expect_accepted_values('signups', 'plan', ARRAY[]::text[]);
SELECT microbatch.audit_unique('signups', 'gold', 'fact_signup', ARRAY['id'], batch_column => 'batch_id');
SELECT microbatch.audit_relationships('signups', 'gold', 'fact_signup', 'country',
                                      'dim_country', 'code', 'batch_id', 'warn');
SELECT expectation, predicate, on_violation FROM microbatch.expectations ORDER BY 1;
SELECT audit, query, on_failure FROM microbatch.audits ORDER BY 1;
INSERT INTO signups VALUES (10, NULL, 'free', 1, 'fr'), (11, 'k@x', NULL, 1, 'it'),
                           (12, 'l@x', 'gold', 1, 'de');
SELECT microbatch.run_batch('signups');
SELECT name, passed_rows, failed_rows, sample FROM microbatch.expectation_results
 WHERE batch_id = 5 ORDER BY kind, name;
-- a key seen in an earlier batch fails unique, and the batch with it
INSERT INTO signups VALUES (11, 'again@x', 'pro', 1, 'fr');
SELECT microbatch.run_batch('signups');
SELECT count(*) AS fact_rows FROM fact_signup;
SELECT microbatch.remove_audit('signups', 'unique_fact_signup_id');

-- 7. Another role sees nothing of the quarantine and changes nothing
RESET ROLE;
SET ROLE mb_bob;
SELECT count(*) AS bob_sees FROM microbatch.quarantine;
SELECT count(*) AS bob_sees FROM microbatch.expectation_results;
SELECT count(*) AS bob_sees FROM microbatch.expectations;
SELECT microbatch.clear_quarantine('signups');
SELECT microbatch.add_expectation('signups', 'mine', 'true');
SELECT microbatch.remove_expectation('signups', 'not_null_email');
SELECT microbatch.add_audit('signups', 'mine', 'gold', 'SELECT 1');
SELECT count(*) FROM microbatch.quarantined_row;
RESET ROLE;

-- 8. Expectations and audits run as the owner, in a security-restricted
-- operation, and a setting they change ends with them
SET ROLE mb_alice;
CREATE TABLE quality.seen_by (who name, what text);
CREATE FUNCTION quality.probe(text) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM set_config('search_path', 'evil', false);
    PERFORM set_config('work_mem', '77kB', false);
    RETURN current_user = 'mb_alice' AND $1 IS NOT NULL;
END $$;
CREATE FUNCTION quality.probe_audit() RETURNS SETOF int LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO quality.seen_by VALUES (current_user, current_setting('search_path'));
    PERFORM set_config('search_path', 'evil', false);
    RETURN;
END $$;
SELECT microbatch.add_expectation('signups', 'probe', 'probe(email) AND lower(email) = email', 'warn');
SELECT microbatch.add_audit('signups', 'probe', 'bronze', 'SELECT * FROM probe_audit()', 'warn');
RESET ROLE;
INSERT INTO quality.signups VALUES (13, 'm@x', 'pro', 1, 'fr');
SELECT microbatch.run_batch('signups');
SELECT current_user, current_setting('search_path') AS search_path, current_setting('work_mem') AS work_mem;
SELECT kind, name, failed_rows FROM microbatch.expectation_results WHERE batch_id = 6 AND name = 'probe' ORDER BY kind;
SELECT * FROM quality.seen_by;
-- an expectation calling a function its owner may not execute is refused,
-- also when the pipeline is given to such a role
CREATE FUNCTION quality.secret(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$SELECT true$$;
REVOKE EXECUTE ON FUNCTION quality.secret(text) FROM PUBLIC;
SET ROLE mb_alice;
SELECT microbatch.add_expectation('signups', 'secret', 'quality.secret(email)');
RESET ROLE;
GRANT EXECUTE ON FUNCTION quality.secret(text) TO mb_alice;
SET ROLE mb_alice;
SELECT microbatch.add_expectation('signups', 'secret', 'quality.secret(email)');
RESET ROLE;
GRANT SELECT ON quality.signups, quality.dim_country TO mb_bob;
GRANT SELECT, INSERT ON quality.clean, quality.fact_signup TO mb_bob;
GRANT mb_bob TO mb_alice;
SET ROLE mb_alice;
SELECT microbatch.alter_pipeline_owner('signups', 'mb_bob');
SELECT owner FROM microbatch.pipelines WHERE pipeline = 'signups';
RESET ROLE;
REVOKE mb_bob FROM mb_alice;

-- 9. The owner clears the quarantine; dropping the pipeline removes the rest
SET ROLE mb_alice;
SELECT microbatch.clear_quarantine('signups', 0);
SELECT microbatch.clear_quarantine('signups', 2);
SELECT batch_id, count(*) FROM microbatch.quarantine GROUP BY 1 ORDER BY 1;
SELECT microbatch.clear_quarantine('signups');
SELECT count(*) FROM microbatch.quarantine;
SELECT microbatch.drop_pipeline('signups');
RESET ROLE;
SELECT (SELECT count(*) FROM microbatch.expectation) AS expectations,
       (SELECT count(*) FROM microbatch.audit) AS audits,
       (SELECT count(*) FROM microbatch.check_result) AS results,
       (SELECT count(*) FROM microbatch.quarantined_row) AS quarantined;

-- 10. Partitioned sources: rows are told apart by partition
CREATE TABLE quality.events (id int, kind text) PARTITION BY RANGE (id);
CREATE TABLE quality.events_1 PARTITION OF quality.events FOR VALUES FROM (0) TO (100);
CREATE TABLE quality.events_2 PARTITION OF quality.events FOR VALUES FROM (100) TO (200);
CREATE TABLE quality.events_out (id int, kind text);
SELECT microbatch.create_pipeline('events', 'quality.events');
SELECT microbatch.add_transform('events', 'out', 'bronze',
    'INSERT INTO quality.events_out SELECT id, kind FROM microbatch.events_batch');
SELECT microbatch.add_expectation('events', 'has_kind', 'kind IS NOT NULL', 'drop');
-- the same ctid in both partitions: only the failing one is dropped
INSERT INTO quality.events VALUES (1, NULL), (101, 'b'), (2, 'a'), (102, NULL);
SELECT microbatch.run_batch('events');
SELECT * FROM quality.events_out ORDER BY id;
SELECT row_data FROM microbatch.quarantine WHERE pipeline = 'events' ORDER BY row_data->>'id';
SELECT microbatch.drop_pipeline('events');
-- 11. Each row is checked once per batch, by one query for all the
-- expectations, however many transforms read the batch view; and nothing in
-- the catalog changes from batch to batch
CREATE TABLE quality.once (id int, v int);
CREATE TABLE quality.once_a (id int);
CREATE TABLE quality.once_b (n bigint);
CREATE SEQUENCE quality.calls;
CREATE FUNCTION quality.counted(v int) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM nextval('quality.calls');
    RETURN v > 0;
END $$;
SELECT microbatch.create_pipeline('once', 'quality.once');
SELECT microbatch.add_transform('once', 'a', 'bronze',
    'INSERT INTO quality.once_a SELECT id FROM microbatch.once_batch');
SELECT microbatch.add_transform('once', 'b', 'silver',
    'INSERT INTO quality.once_b SELECT count(*) FROM microbatch.once_batch o JOIN quality.once_a a USING (id)');
SELECT microbatch.add_expectation('once', 'first', 'quality.counted(v)', 'drop');
SELECT microbatch.add_expectation('once', 'second', 'quality.counted(v + 1)', 'warn');
SELECT c.xmin AS view_xmin FROM pg_class c
 WHERE c.oid = (SELECT batch_view FROM microbatch.pipeline WHERE pipeline_name = 'once') \gset
INSERT INTO quality.once SELECT g, g % 5 FROM generate_series(1, 100) g;
SELECT microbatch.run_batch('once');
SELECT last_value AS predicate_calls FROM quality.calls;
SELECT (SELECT count(*) FROM quality.once_a) AS kept, (SELECT n FROM quality.once_b) AS joined;
SELECT c.xmin = :'view_xmin'::xid AS view_unchanged FROM pg_class c
 WHERE c.oid = (SELECT batch_view FROM microbatch.pipeline WHERE pipeline_name = 'once');
SELECT microbatch.drop_pipeline('once');
-- 12. What is stored means what was validated, whatever the session's
-- settings and search_path, and whatever the source's columns are called
CREATE TABLE quality.odd (id int, s int, b int, d date, code text);
CREATE TABLE quality.odd_out (id int);
SELECT microbatch.create_pipeline('odd', 'quality.odd');
SELECT microbatch.add_transform('odd', 'out', 'bronze',
    'INSERT INTO quality.odd_out SELECT id FROM microbatch.odd_batch');
-- columns named like the engine's aliases
SELECT microbatch.add_expectation('odd', 'positive', 'id > 0', 'drop');
-- a date written in the session's DateStyle is stored in ISO
SET DateStyle = 'SQL, DMY';
SELECT microbatch.add_expectation('odd', 'recent', $$d >= '01/02/2024'$$, 'drop');
RESET DateStyle;
SELECT expectation, predicate FROM microbatch.expectations WHERE pipeline = 'odd' ORDER BY 1;
-- an operator of another schema, found first on the caller's search_path
CREATE FUNCTION quality.ci_eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE
    AS $$SELECT lower($1) = lower($2)$$;
CREATE OPERATOR quality.= (LEFTARG = text, RIGHTARG = text, FUNCTION = quality.ci_eq);
SET search_path = quality, pg_catalog;
SELECT microbatch.expect_accepted_values('odd', 'code', ARRAY['a', 'b'], 'drop');
SELECT microbatch.add_expectation('odd', 'not_x', $$code IS DISTINCT FROM 'x'$$);
SELECT microbatch.add_expectation('odd', 'not_x', $$NULLIF(code, 'x') IS NOT NULL$$);
SELECT microbatch.add_expectation('odd', 'not_x', $$CASE code WHEN 'x' THEN false ELSE true END$$);
SELECT microbatch.add_expectation('odd', 'not_x', $$NOT (code OPERATOR(quality.=) 'x')$$);
SET search_path = quality, public;
SELECT expectation, predicate FROM microbatch.expectations
 WHERE pipeline = 'odd' AND expectation IN ('accepted_values_code', 'not_x') ORDER BY 1;
-- temporary functions exist in one session only
CREATE FUNCTION pg_temp.tf(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$SELECT true$$;
SELECT microbatch.add_expectation('odd', 'temp', 'pg_temp.tf(id)');
INSERT INTO quality.odd VALUES (1, 10, 100, '2024-03-01', 'A'), (-1, 20, 200, '2024-03-01', 'b'),
                               (2, 30, 300, '2024-01-15', 'a'), (3, 40, 400, '2024-03-01', 'X');
SELECT microbatch.run_batch('odd');
SELECT id FROM quality.odd_out ORDER BY id;
SELECT expectations, row_data FROM microbatch.quarantine WHERE pipeline = 'odd' ORDER BY row_data->>'id';
SELECT microbatch.replay_batch('odd', 1);
SELECT count(*) AS quarantined FROM microbatch.quarantine WHERE pipeline = 'odd';
-- audits only read
SELECT microbatch.add_audit('odd', 'locks', 'gold', 'SELECT id FROM quality.odd_out FOR UPDATE');
-- a renamed column: the rebuilt view no longer has what the expectation reads
ALTER TABLE quality.odd RENAME COLUMN d TO day;
SELECT microbatch.run_batch('odd');
SELECT microbatch.refresh_pipeline('odd');
SELECT microbatch.remove_expectation('odd', 'recent');
SELECT microbatch.refresh_pipeline('odd');
SELECT microbatch.drop_pipeline('odd');
DROP SCHEMA quality CASCADE;
