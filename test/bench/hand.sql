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
--   real pipeline, in its run order;
-- * a drop expectation becomes a condition of the view (the same rows are
--   kept out, none is quarantined or counted); audits are not run.
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

-- The batch view of each pipeline, rebuilt when a drop expectation is added.
CREATE TABLE bench.hand_views (
    pipeline   name PRIMARY KEY,
    source     regclass NOT NULL,
    key_column name NOT NULL,
    columns    text NOT NULL,
    drops      text[] NOT NULL DEFAULT '{}'
);

CREATE FUNCTION bench.hand_define_view(view_pipeline name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v bench.hand_views;
BEGIN
    SELECT * INTO STRICT v FROM bench.hand_views WHERE pipeline = view_pipeline;
    EXECUTE format($v$
        CREATE OR REPLACE VIEW microbatch.%I AS
        SELECT %s FROM %s
         WHERE %I > current_setting('bench.lo')::bigint
           AND %I <= current_setting('bench.hi')::bigint %s $v$,
        v.pipeline || '_batch', v.columns, v.source, v.key_column, v.key_column,
        (SELECT coalesce(string_agg(format('AND (%s) IS TRUE', d), ' '), '')
           FROM unnest(v.drops) AS d));
END $$;

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
    INSERT INTO bench.hand_views VALUES (pipeline, source, key_column, columns);
    PERFORM bench.hand_define_view(pipeline);
END $$;

CREATE FUNCTION microbatch.add_transform(pipeline name, transform name,
                                         layer text, command text)
RETURNS void LANGUAGE sql AS $$ SELECT $$;

-- Expectations: a drop expectation filters the batch view, as it does the
-- real one; nothing is counted or quarantined.  Audits are not run.
CREATE FUNCTION microbatch.add_expectation(pipeline name, expectation name,
                                           predicate text, on_violation text DEFAULT 'warn')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF on_violation = 'drop' THEN
        UPDATE bench.hand_views v SET drops = v.drops || predicate WHERE v.pipeline = $1;
        PERFORM bench.hand_define_view(pipeline);
    END IF;
END $$;

CREATE FUNCTION microbatch.expect_not_null(pipeline name, column_name name,
                                           on_violation text DEFAULT 'drop',
                                           expectation name DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    SELECT microbatch.add_expectation(pipeline, expectation,
                                      format('%I IS NOT NULL', column_name), on_violation)
$$;

CREATE FUNCTION microbatch.expect_accepted_values(pipeline name, column_name name,
                                                  accepted_values text[],
                                                  on_violation text DEFAULT 'drop',
                                                  expectation name DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    SELECT microbatch.add_expectation(pipeline, expectation,
        format('%I IS NULL OR %I IN (%s)', column_name, column_name,
               (SELECT string_agg(quote_literal(v), ', ') FROM unnest(accepted_values) v)),
        on_violation)
$$;

CREATE FUNCTION microbatch.audit_relationships(pipeline name, layer text, target regclass,
                                               column_name name, to_table regclass,
                                               to_column name, batch_column name DEFAULT NULL,
                                               on_failure text DEFAULT 'fail',
                                               audit name DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$ SELECT $$;
