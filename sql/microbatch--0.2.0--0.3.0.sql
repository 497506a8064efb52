-- microbatch 0.2.0 -> 0.3.0: cheaper tracking, cached definitions

\echo Use "ALTER EXTENSION microbatch UPDATE TO '0.3.0'" to load this file. \quit

-- The replica trigger now guards only the tables a subscription writes
-- into: on the others it never fired, but made every COPY insert row by
-- row.  The event triggers add it when a subscription starts writing into
-- a source table.  Ours are dropped while we remove it, and made again.
DROP EVENT TRIGGER microbatch_ddl_start;
DROP EVENT TRIGGER microbatch_ddl_end;
DROP EVENT TRIGGER microbatch_sql_drop;

DO $$
DECLARE
    target regclass;
BEGIN
    -- the tables holding the rows of pipeline sources, and nothing else: a
    -- trigger of that name elsewhere is somebody else's
    FOR target IN
        WITH RECURSIVE members(relid) AS (
            SELECT p.source_table::pg_catalog.oid FROM microbatch.pipeline p
            UNION
            SELECT i.inhrelid FROM pg_catalog.pg_inherits i
              JOIN members m ON i.inhparent OPERATOR(pg_catalog.=) m.relid)
        SELECT t.tgrelid::regclass
          FROM pg_catalog.pg_trigger t
          JOIN members m ON m.relid OPERATOR(pg_catalog.=) t.tgrelid
         WHERE t.tgname OPERATOR(pg_catalog.=) 'microbatch_source_replicated'
           AND t.tgfoid OPERATOR(pg_catalog.=) 'microbatch.source_replicated()'::pg_catalog.regprocedure
           AND t.tgparentid OPERATOR(pg_catalog.=) 0
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_subscription_rel r
                            WHERE r.srrelid OPERATOR(pg_catalog.=) ANY (
                                  SELECT a.relid FROM pg_catalog.pg_partition_ancestors(t.tgrelid) a)
                               OR r.srrelid OPERATOR(pg_catalog.=) t.tgrelid)
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS microbatch_source_replicated ON %s', target);
    END LOOP;
END
$$;

CREATE EVENT TRIGGER microbatch_ddl_start ON ddl_command_start
    EXECUTE FUNCTION microbatch.ddl_guard();
CREATE EVENT TRIGGER microbatch_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER FOREIGN TABLE',
                 'CREATE TABLE', 'CREATE FOREIGN TABLE', 'CREATE SCHEMA',
                 'CREATE SUBSCRIPTION', 'ALTER SUBSCRIPTION')
    EXECUTE FUNCTION microbatch.ddl_guard();
CREATE EVENT TRIGGER microbatch_sql_drop ON sql_drop
    EXECUTE FUNCTION microbatch.ddl_guard();
ALTER EVENT TRIGGER microbatch_ddl_start ENABLE ALWAYS;
ALTER EVENT TRIGGER microbatch_ddl_end ENABLE ALWAYS;
ALTER EVENT TRIGGER microbatch_sql_drop ENABLE ALWAYS;

/*
 * Backends cache the definitions a batch runs (0.3.0).  Any change to them,
 * by the API or by hand, makes every backend read them again.
 */
CREATE FUNCTION microbatch.definitions_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_definitions_changed';

COMMENT ON FUNCTION microbatch.definitions_changed()
    IS 'statement trigger on the catalog of transforms, expectations and audits: every backend drops its cached definitions';

CREATE TRIGGER definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON microbatch.transform
    FOR EACH STATEMENT EXECUTE FUNCTION microbatch.definitions_changed();
CREATE TRIGGER definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON microbatch.expectation
    FOR EACH STATEMENT EXECUTE FUNCTION microbatch.definitions_changed();
CREATE TRIGGER definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON microbatch.audit
    FOR EACH STATEMENT EXECUTE FUNCTION microbatch.definitions_changed();
ALTER TABLE microbatch.transform ENABLE ALWAYS TRIGGER definitions_changed;
ALTER TABLE microbatch.expectation ENABLE ALWAYS TRIGGER definitions_changed;
ALTER TABLE microbatch.audit ENABLE ALWAYS TRIGGER definitions_changed;
