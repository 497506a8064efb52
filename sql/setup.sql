--
-- The server: the library preloaded and background batches off, since the
-- suites run their batches by hand (test/microbatch.conf; make installcheck
-- against a running server needs these settings)
--
SELECT 'microbatch' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ',')) AS microbatch_preloaded,
       current_setting('microbatch.enabled', true) AS microbatch_enabled;

-- Roles a previous run against the same server left (pg_regress has dropped
-- its database, so they own nothing any more); created again at the end
SET client_min_messages = warning;
DROP ROLE IF EXISTS mb_alice, mb_bob, mb_carol;
RESET client_min_messages;

--
-- Installing the extension
--
CREATE EXTENSION microbatch;

-- The API and the views, and nothing else, are open to everyone
SELECT c.relname, c.relkind,
       has_table_privilege('public', c.oid, 'SELECT') AS public_can_read
  FROM pg_class c
 WHERE c.relnamespace = 'microbatch'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY 1;

SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result
  FROM pg_proc p
 WHERE p.pronamespace = 'microbatch'::regnamespace
 ORDER BY 1, 2;

-- Catalog tables are kept by pg_dump
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension
 WHERE extname = 'microbatch' ORDER BY 1;

-- Roles used by the other suites
CREATE ROLE mb_alice LOGIN;
CREATE ROLE mb_bob LOGIN;
CREATE ROLE mb_carol LOGIN;
