-- hand.sql: the hand-written baseline of the throughput benchmark.
--
-- Loaded into a database WITHOUT the extension, before the demo's
-- clickstream.sql, it provides just enough of a "microbatch" schema for that
-- file to build the same tables, and for the very same transform statements
-- (taken from the pipeline's microbatch.transforms) to run by hand:
--
-- * create_pipeline makes microbatch.<pipeline>_batch a plain view of the
--   source rows in an id range (ingest_id > bench.lo AND <= bench.hi), read
--   through the primary key: what a hand-written job with a watermark on a
--   bigserial does, without the snapshot bookkeeping;
-- * current_batch_id() returns the setting bench.batch_id;
-- * add_transform does nothing: the runner reads the statements from the
--   real pipeline, in its run order.
--
-- No ledger, no lock, no subtransaction, no role switch: the physical limit
-- of running those statements over those rows.

CREATE SCHEMA microbatch;
CREATE SCHEMA IF NOT EXISTS bench;

-- The runner's watermark: last id processed and last batch id.
CREATE TABLE bench.hand_state (last_id bigint NOT NULL, batch_id bigint NOT NULL);
INSERT INTO bench.hand_state VALUES (0, 0);

CREATE FUNCTION microbatch.current_batch_id() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT current_setting('bench.batch_id')::bigint $$;

CREATE FUNCTION microbatch.create_pipeline(pipeline name, source regclass,
                                           batch_interval interval DEFAULT '1 second',
                                           max_batch_rows bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    key_column name;
    columns    text;
BEGIN
    -- The source's single-column primary key is the watermark column.
    SELECT a.attname INTO STRICT key_column
      FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = source AND i.indisprimary AND i.indnatts = 1;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
      FROM pg_attribute
     WHERE attrelid = source AND attnum > 0 AND NOT attisdropped;
    EXECUTE format($v$
        CREATE VIEW microbatch.%I AS
        SELECT %s FROM %s
         WHERE %I > current_setting('bench.lo')::bigint
           AND %I <= current_setting('bench.hi')::bigint $v$,
        pipeline || '_batch', columns, source, key_column, key_column);
END $$;

CREATE FUNCTION microbatch.add_transform(pipeline name, transform name,
                                         layer text, command text)
RETURNS void LANGUAGE sql AS $$ SELECT $$;
