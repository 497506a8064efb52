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
