/* microbatch--0.5.0.sql */

\echo Use "CREATE EXTENSION microbatch" to load this file. \quit

CREATE SCHEMA microbatch;
COMMENT ON SCHEMA microbatch IS 'micro-batch pipelines: catalog, ledger and API';

/*
 * Catalog.  Users never write these tables directly: the API functions do,
 * as the extension's owner, after checking the caller's rights, under the
 * pipeline's lock.  There are no foreign keys between them: pg_restore -j
 * loads extension configuration tables in parallel, in any order.
 *
 * The views below are parsed here, with search_path set to pg_catalog by
 * CREATE EXTENSION, so their operators are bound to pg_catalog's for good.
 */
CREATE TABLE microbatch.pipeline (
    pipeline_id     serial PRIMARY KEY,
    pipeline_name   name NOT NULL UNIQUE,
    source_table    regclass NOT NULL,
    batch_view      regclass NOT NULL,
    owner_role      regrole NOT NULL,
    batch_interval  interval NOT NULL CHECK (batch_interval >= interval '0'),
    max_batch_rows  bigint CHECK (max_batch_rows > 0),
    batch_timeout   interval CHECK (batch_timeout > interval '0'),
    -- how long its batch history is kept; NULL: microbatch.history_retention
    history_retention interval CHECK (history_retention >= interval '0'),
    state           text NOT NULL DEFAULT 'enabled'
                    CHECK (state IN ('enabled', 'paused', 'failed')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    failure_alerted boolean NOT NULL DEFAULT false,
    -- the cluster whose transaction ids the ledger's snapshots refer to
    system_identifier bigint NOT NULL,
    -- the skipped batch of the last rebind_pipeline(): the batches before
    -- it were recorded in another cluster and cannot be replayed
    rebind_batch_id bigint,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE microbatch.transform (
    transform_id    serial PRIMARY KEY,
    pipeline_id     integer NOT NULL,
    transform_name  name NOT NULL,
    layer           text NOT NULL CHECK (layer IN ('bronze', 'silver', 'gold')),
    command         text NOT NULL,
    search_path     text NOT NULL,
    version         integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (pipeline_id, transform_name)
);

-- Every version of every transform, so that a batch's transform_versions
-- can be read back as the statements that processed it
CREATE TABLE microbatch.transform_version (
    pipeline_id     integer NOT NULL,
    transform_name  name NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    layer           text NOT NULL,
    command         text NOT NULL,
    search_path     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (pipeline_id, transform_name, version)
);

/*
 * The ledger: one row per batch attempt.  A committed row is written in the
 * same transaction as the batch's transforms, so it exists exactly when the
 * batch's effects do.  The window of source rows a batch covers is the pair
 * of snapshots plus, when max_batch_rows split a window, an xid range;
 * rows_digest fingerprints the content of those rows, for replays.
 *
 * A skipped row marks a window deliberately left unprocessed: the rows
 * already in the source when a pipeline was created with start_from 'now',
 * or the history left behind by rebind_pipeline().  A failed row without
 * snapshots is a failure before the batch's window was known.
 */
CREATE TABLE microbatch.batch (
    pipeline_id      integer NOT NULL,
    batch_id         bigint NOT NULL CHECK (batch_id > 0),
    attempt          integer NOT NULL CHECK (attempt > 0),
    status           text NOT NULL
                     CHECK (status IN ('committed', 'failed', 'skipped')),
    lower_snapshot   pg_snapshot,
    upper_snapshot   pg_snapshot,
    xid_from         xid8,
    xid_to           xid8,
    rows_in          bigint,
    rows_digest      bigint,
    -- input rows that drop expectations kept from the transforms
    rows_dropped     bigint,
    -- {transform name: version} of the transforms that last processed it
    transform_versions jsonb,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    replays          integer NOT NULL DEFAULT 0,
    last_replayed_at timestamptz,
    sqlstate         text,
    error            text,
    error_detail     text,
    error_context    text,
    note             text,
    -- what each step took, and the rows it read or wrote (0.2.0)
    progress         jsonb,
    -- when the oldest input row committed, by commit timestamps
    oldest_row_committed_at timestamptz,
    PRIMARY KEY (pipeline_id, batch_id, attempt),
    CHECK (status = 'failed' OR
           (lower_snapshot IS NOT NULL AND upper_snapshot IS NOT NULL)),
    CHECK (status <> 'committed' OR rows_in IS NOT NULL)
);

-- At most one committed or skipped attempt per batch id: the last line of
-- defence against two sessions committing the same batch.
CREATE UNIQUE INDEX batch_position_key
    ON microbatch.batch (pipeline_id, batch_id) WHERE status <> 'failed';

/*
 * Data quality (src/quality.c).  An expectation is a boolean expression over
 * a batch's input rows, checked for every row before the transforms run; it
 * is stored as PostgreSQL deparses it with every name outside pg_catalog
 * qualified, so that one query checks all of a pipeline's expectations
 * whatever search_path each was written under.  An audit is a query run
 * after the transforms of a layer; every row it returns is a violation.
 */
CREATE TABLE microbatch.expectation (
    expectation_id   serial PRIMARY KEY,
    pipeline_id      integer NOT NULL,
    expectation_name name NOT NULL,
    predicate        text NOT NULL,
    on_violation     text NOT NULL CHECK (on_violation IN ('warn', 'drop', 'fail')),
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (pipeline_id, expectation_name)
);

CREATE TABLE microbatch.audit (
    audit_id     serial PRIMARY KEY,
    pipeline_id  integer NOT NULL,
    audit_name   name NOT NULL,
    layer        text NOT NULL CHECK (layer IN ('bronze', 'silver', 'gold')),
    query        text NOT NULL,
    on_failure   text NOT NULL CHECK (on_failure IN ('warn', 'fail')),
    search_path  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (pipeline_id, audit_name)
);

-- The input rows drop expectations kept from a batch, with every
-- expectation each one failed; written in the batch's transaction.
CREATE TABLE microbatch.quarantined_row (
    pipeline_id    integer NOT NULL,
    batch_id       bigint NOT NULL,
    expectations   name[] NOT NULL,
    row_data       jsonb NOT NULL,
    quarantined_at timestamptz NOT NULL
);
CREATE INDEX quarantined_row_batch ON microbatch.quarantined_row (pipeline_id, batch_id);

-- One row per batch per expectation and audit, written with the batch
CREATE TABLE microbatch.check_result (
    pipeline_id  integer NOT NULL,
    batch_id     bigint NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('expectation', 'audit')),
    check_name   name NOT NULL,
    action       text NOT NULL,
    passed_rows  bigint,
    failed_rows  bigint NOT NULL,
    sample       jsonb,
    checked_at   timestamptz NOT NULL,
    PRIMARY KEY (pipeline_id, batch_id, kind, check_name)
);

/*
 * Retention of the rows of staging tables (src/retention.c).  removed_below
 * is the highest horizon rows were removed below, in the transaction ids of
 * the cluster it names: a batch whose window reaches below it may have lost
 * rows, and is not replayed.
 */
CREATE TABLE microbatch.retention_setting (
    source_table       regclass PRIMARY KEY,
    -- NULL: keep the rows again, after some were removed
    retain             interval CHECK (retain >= interval '0'),
    removed_below      xid8,
    system_identifier  bigint,
    rows_removed       bigint NOT NULL DEFAULT 0,
    partitions_dropped bigint NOT NULL DEFAULT 0,
    last_removed_at    timestamptz,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);

SELECT pg_catalog.pg_extension_config_dump('microbatch.pipeline', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.pipeline_pipeline_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.transform', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.transform_transform_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.transform_version', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.retention_setting', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.batch', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.expectation', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.expectation_expectation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.audit', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.audit_audit_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.quarantined_row', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.check_result', '');

REVOKE ALL ON ALL TABLES IN SCHEMA microbatch FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA microbatch FROM PUBLIC;
GRANT USAGE ON SCHEMA microbatch TO PUBLIC;

/*
 * Pipeline management.
 */
CREATE FUNCTION microbatch.create_pipeline(pipeline name,
                                           source regclass,
                                           batch_interval interval DEFAULT '1 second',
                                           max_batch_rows bigint DEFAULT NULL,
                                           start_from text DEFAULT 'beginning',
                                           batch_timeout interval DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_create_pipeline';

COMMENT ON FUNCTION microbatch.create_pipeline(name, regclass, interval, bigint, text, interval)
    IS 'register a pipeline that processes the rows committed to a staging table in micro-batches';

CREATE FUNCTION microbatch.drop_pipeline(pipeline name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_drop_pipeline';

COMMENT ON FUNCTION microbatch.drop_pipeline(name)
    IS 'drop a pipeline, its transforms, its batch view and its batch history';

CREATE FUNCTION microbatch.refresh_pipeline(pipeline name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_refresh_pipeline';

COMMENT ON FUNCTION microbatch.refresh_pipeline(name)
    IS 'rebuild the batch view of a pipeline after columns of its source changed, and guard new partitions';

CREATE FUNCTION microbatch.set_tracking_index(source regclass, method text)
RETURNS regclass
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_set_tracking_index';

COMMENT ON FUNCTION microbatch.set_tracking_index(regclass, text)
    IS 'give a source table a B-tree (btree) or a BRIN (brin) index on its tracking column';


/*
 * A BRIN minmax operator class for xid8, which PostgreSQL lacks, built from
 * the core minmax support functions and xid8's comparison operators.  A
 * source table may carry its tracking index as BRIN of this class
 * (set_tracking_index(), src/tracking_index.c).
 */
CREATE OPERATOR CLASS microbatch.xid8_minmax_ops
    FOR TYPE pg_catalog.xid8 USING brin AS
    OPERATOR 1 pg_catalog.< (pg_catalog.xid8, pg_catalog.xid8),
    OPERATOR 2 pg_catalog.<= (pg_catalog.xid8, pg_catalog.xid8),
    OPERATOR 3 pg_catalog.= (pg_catalog.xid8, pg_catalog.xid8),
    OPERATOR 4 pg_catalog.>= (pg_catalog.xid8, pg_catalog.xid8),
    OPERATOR 5 pg_catalog.> (pg_catalog.xid8, pg_catalog.xid8),
    FUNCTION 1 pg_catalog.brin_minmax_opcinfo(internal),
    FUNCTION 2 pg_catalog.brin_minmax_add_value(internal, internal, internal, internal),
    FUNCTION 3 pg_catalog.brin_minmax_consistent(internal, internal, internal),
    FUNCTION 4 pg_catalog.brin_minmax_union(internal, internal, internal);

CREATE FUNCTION microbatch.alter_pipeline(pipeline name,
                                          batch_interval interval DEFAULT NULL,
                                          max_batch_rows bigint DEFAULT NULL,
                                          batch_timeout interval DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_alter_pipeline';

COMMENT ON FUNCTION microbatch.alter_pipeline(name, interval, bigint, interval)
    IS 'change the batch interval, the row cap or the batch timeout of a pipeline; NULL keeps a setting, 0 returns the cap or the timeout to its default';

CREATE FUNCTION microbatch.alter_pipeline_owner(pipeline name, new_owner regrole)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_alter_pipeline_owner';

COMMENT ON FUNCTION microbatch.alter_pipeline_owner(name, regrole)
    IS 'give a pipeline, its batch view and its transforms to another role';

CREATE FUNCTION microbatch.pause_pipeline(pipeline name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_pause_pipeline';

COMMENT ON FUNCTION microbatch.pause_pipeline(name)
    IS 'stop scheduling batches for a pipeline';

CREATE FUNCTION microbatch.resume_pipeline(pipeline name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_resume_pipeline';

COMMENT ON FUNCTION microbatch.resume_pipeline(name)
    IS 'schedule batches for a paused or failed pipeline again';

CREATE FUNCTION microbatch.rebind_pipeline(pipeline name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_rebind_pipeline';

COMMENT ON FUNCTION microbatch.rebind_pipeline(name)
    IS 'after a restore into another cluster, start the pipelines of a source again from the rows they had not processed';

CREATE FUNCTION microbatch.add_transform(pipeline name,
                                         transform name,
                                         layer text,
                                         command text)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_transform';

COMMENT ON FUNCTION microbatch.add_transform(name, name, text, text)
    IS 'append a SQL statement to a layer (bronze, silver or gold) of a pipeline';

CREATE FUNCTION microbatch.remove_transform(pipeline name, transform name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_transform';

COMMENT ON FUNCTION microbatch.remove_transform(name, name)
    IS 'remove a transform from a pipeline';

CREATE FUNCTION microbatch.replace_transform(pipeline name,
                                             transform name,
                                             command text)
RETURNS integer
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_replace_transform';

COMMENT ON FUNCTION microbatch.replace_transform(name, name, text)
    IS 'change the SQL of a transform in place, keeping its layer and its place in the run order; returns its new version';

CREATE FUNCTION microbatch.reset_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_reset_pipeline';

COMMENT ON FUNCTION microbatch.reset_pipeline(name)
    IS 'make the next batch of a pipeline process every row still in its source again; returns the id of the batch that records the reset';

CREATE FUNCTION microbatch.set_history_retention(pipeline name, retain interval)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_set_history_retention';

COMMENT ON FUNCTION microbatch.set_history_retention(name, interval)
    IS 'keep the batch history of a pipeline for this long; NULL returns it to microbatch.history_retention';

CREATE FUNCTION microbatch.trim_history(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_trim_history';

COMMENT ON FUNCTION microbatch.trim_history(name)
    IS 'remove now the batches of a pipeline older than its history retention, as the retention worker does; returns how many rows of the ledger, the quarantine and the check results';

/*
 * Retention of staging tables: see docs/lifecycle.md.
 */
CREATE FUNCTION microbatch.set_retention(source regclass, retain interval)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_set_retention';

COMMENT ON FUNCTION microbatch.set_retention(regclass, interval)
    IS 'remove the rows of a staging table that every pipeline on it has processed, once the batches that processed them are older than retain; NULL keeps them forever';

CREATE FUNCTION microbatch.retention_now(source regclass)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_retention_now';

COMMENT ON FUNCTION microbatch.retention_now(regclass)
    IS 'remove now, in this transaction, the rows of a staging table that its retention allows removing; returns how many';

CREATE FUNCTION microbatch.retention_state(source regclass,
                                           OUT horizon_xid xid8,
                                           OUT held_back_by name,
                                           OUT held_back_state text,
                                           OUT removable_rows bigint)
RETURNS record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_retention_state';

/*
 * Data quality: expectations on a batch's input rows, audits of what its
 * transforms wrote, and the quarantine (see docs/data-quality.md).
 */
CREATE FUNCTION microbatch.add_expectation(pipeline name,
                                           expectation name,
                                           predicate text,
                                           on_violation text DEFAULT 'warn')
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_expectation';

COMMENT ON FUNCTION microbatch.add_expectation(name, name, text, text)
    IS 'check a boolean expression on every input row of a pipeline''s batches: warn (count), drop (quarantine) or fail (roll the batch back)';

CREATE FUNCTION microbatch.remove_expectation(pipeline name, expectation name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_expectation';

COMMENT ON FUNCTION microbatch.remove_expectation(name, name)
    IS 'remove an expectation from a pipeline';

CREATE FUNCTION microbatch.add_audit(pipeline name,
                                     audit name,
                                     layer text,
                                     query text,
                                     on_failure text DEFAULT 'fail')
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_audit';

COMMENT ON FUNCTION microbatch.add_audit(name, name, text, text, text)
    IS 'run a query after the transforms of a layer, inside the batch; every row it returns is a violation: fail rolls the batch back, warn records it';

CREATE FUNCTION microbatch.remove_audit(pipeline name, audit name)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_audit';

COMMENT ON FUNCTION microbatch.remove_audit(name, name)
    IS 'remove an audit from a pipeline';

CREATE FUNCTION microbatch.clear_quarantine(pipeline name,
                                            before_batch bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_clear_quarantine';

COMMENT ON FUNCTION microbatch.clear_quarantine(name, bigint)
    IS 'delete the quarantined rows of a pipeline, all of them or those of batches before before_batch; returns how many';

/*
 * dbt's four generic tests, each one call.  not_null and accepted_values
 * check input rows (expectations); unique and relationships check a table
 * the transforms write (audits), restricted to the batch's own rows when
 * the table records the batch id in batch_column.  They run with the
 * caller's search_path, which the checks they add keep: the columns'
 * equality is the one the caller's queries would use (citext compares as
 * citext).  Every name they build into SQL is quoted, every table and
 * function qualified.
 */
CREATE FUNCTION microbatch.expect_not_null(pipeline name,
                                           column_name name,
                                           on_violation text DEFAULT 'drop',
                                           expectation name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE
AS $$
BEGIN
    IF column_name IS NULL THEN
        RAISE EXCEPTION 'column_name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM microbatch.add_expectation(pipeline,
        coalesce(expectation, pg_catalog.concat('not_null_', column_name)::name),
        pg_catalog.format('%I IS NOT NULL', column_name), on_violation);
END
$$;

COMMENT ON FUNCTION microbatch.expect_not_null(name, name, text, name)
    IS 'dbt''s not_null as an expectation: the column of every input row is not null';

CREATE FUNCTION microbatch.expect_accepted_values(pipeline name,
                                                  column_name name,
                                                  accepted_values text[],
                                                  on_violation text DEFAULT 'drop',
                                                  expectation name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE
AS $$
BEGIN
    IF column_name IS NULL THEN
        RAISE EXCEPTION 'column_name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF coalesce(pg_catalog.cardinality(accepted_values), 0) = 0
       OR pg_catalog.array_position(accepted_values, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'accepted_values must be a non-empty array without nulls'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A null column value is accepted, as in dbt; add microbatch.expect_not_null() to refuse it.';
    END IF;
    PERFORM microbatch.add_expectation(pipeline,
        coalesce(expectation, pg_catalog.concat('accepted_values_', column_name)::name),
        pg_catalog.format('%I IS NULL OR %I IN (%s)', column_name, column_name,
               (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(a.v), ', ' ORDER BY a.o)
                  FROM pg_catalog.unnest(accepted_values) WITH ORDINALITY AS a(v, o))),
        on_violation);
END
$$;

COMMENT ON FUNCTION microbatch.expect_accepted_values(name, name, text[], text, name)
    IS 'dbt''s accepted_values as an expectation: the column of every input row is null or one of the values';

-- A table's name, schema-qualified and quoted, and the columns given as
-- t.<column>, each quoted, for the audits below
CREATE FUNCTION microbatch.qualified_table(target regclass)
RETURNS text
LANGUAGE sql STABLE STRICT
AS $$
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) target
$$;

CREATE FUNCTION microbatch.audit_unique(pipeline name,
                                        layer text,
                                        target regclass,
                                        columns name[],
                                        batch_column name DEFAULT NULL,
                                        on_failure text DEFAULT 'fail',
                                        audit name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE
AS $$
DECLARE
    tbl text := microbatch.qualified_table(target);
    cols text;
    nonnull text;
    query text;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'target must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF coalesce(pg_catalog.cardinality(columns), 0) = 0
       OR pg_catalog.array_position(columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'columns must be a non-empty array without nulls'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.format('t.%I', a.c), ', ' ORDER BY a.o),
           pg_catalog.string_agg(pg_catalog.format('t.%I IS NOT NULL', a.c), ' AND ' ORDER BY a.o)
      INTO cols, nonnull
      FROM pg_catalog.unnest(columns) WITH ORDINALITY AS a(c, o);
    IF batch_column IS NULL THEN
        query := pg_catalog.format('SELECT %s, pg_catalog.count(*) AS occurrences FROM %s AS t WHERE %s '
                        'GROUP BY %s HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1',
                        cols, tbl, nonnull, cols);
    ELSE
        -- the keys of the batch's rows that occur more than once in the table
        query := pg_catalog.format('SELECT %s, pg_catalog.count(*) AS occurrences FROM %s AS t '
                        'WHERE (%s) IN (SELECT %s FROM %s AS t WHERE t.%I OPERATOR(pg_catalog.=) microbatch.current_batch_id()) '
                        'GROUP BY %s HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1',
                        cols, tbl, cols, cols, tbl, batch_column, cols);
    END IF;
    PERFORM microbatch.add_audit(pipeline,
        coalesce(audit, pg_catalog.left(pg_catalog.concat('unique_',
            (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) target),
            '_', pg_catalog.array_to_string(columns, '_')), 63)::name),
        layer, query, on_failure);
END
$$;

COMMENT ON FUNCTION microbatch.audit_unique(name, text, regclass, name[], name, text, name)
    IS 'dbt''s unique as an audit: no key of the batch''s rows (or of the whole table, without batch_column) occurs twice in the table';

CREATE FUNCTION microbatch.audit_relationships(pipeline name,
                                               layer text,
                                               target regclass,
                                               column_name name,
                                               to_table regclass,
                                               to_column name,
                                               batch_column name DEFAULT NULL,
                                               on_failure text DEFAULT 'fail',
                                               audit name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql CALLED ON NULL INPUT VOLATILE
AS $$
DECLARE
    tbl text := microbatch.qualified_table(target);
    ref text := microbatch.qualified_table(to_table);
    query text;
BEGIN
    IF tbl IS NULL OR ref IS NULL OR column_name IS NULL OR to_column IS NULL THEN
        RAISE EXCEPTION 'target, column_name, to_table and to_column must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- = as the caller's search_path finds it for the two columns' types
    query := pg_catalog.format('SELECT t.%I FROM %s AS t WHERE t.%I IS NOT NULL%s '
                    'AND NOT EXISTS (SELECT FROM %s AS d WHERE d.%I = t.%I)',
                    column_name, tbl, column_name,
                    CASE WHEN batch_column IS NOT NULL THEN
                        pg_catalog.format(' AND t.%I OPERATOR(pg_catalog.=) microbatch.current_batch_id()', batch_column)
                    ELSE '' END,
                    ref, to_column, column_name);
    PERFORM microbatch.add_audit(pipeline,
        coalesce(audit, pg_catalog.left(pg_catalog.concat('relationships_',
            (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) target),
            '_', column_name), 63)::name),
        layer, query, on_failure);
END
$$;

COMMENT ON FUNCTION microbatch.audit_relationships(name, text, regclass, name, regclass, name, name, text, name)
    IS 'dbt''s relationships as an audit: every non-null value of the column (in the batch''s rows, with batch_column) is in to_table.to_column';

/*
 * Batches.
 */
CREATE FUNCTION microbatch.run_batch(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_run_batch';

COMMENT ON FUNCTION microbatch.run_batch(name)
    IS 'process the rows committed since the previous batch; returns the batch id, or NULL when there is nothing new or the batch failed';

CREATE FUNCTION microbatch.replay_batch(pipeline name, batch_id bigint)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_replay_batch';

COMMENT ON FUNCTION microbatch.replay_batch(name, bigint)
    IS 'run the current transforms again over exactly the input rows of a committed batch; returns the number of rows';

/*
 * Backfills: replays of ranges of batches, committing after each batch
 * (src/backfill.c).
 */
CREATE PROCEDURE microbatch.replay(pipeline name, from_batch bigint, to_batch bigint)
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_replay_range';

COMMENT ON PROCEDURE microbatch.replay(name, bigint, bigint)
    IS 'replay the committed batches from from_batch to to_batch, in order, committing after each one';

CREATE PROCEDURE microbatch.replay(pipeline name, from_time timestamptz, to_time timestamptz)
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_replay_range';

COMMENT ON PROCEDURE microbatch.replay(name, timestamptz, timestamptz)
    IS 'replay the committed batches that started in [from_time, to_time), in order, committing after each one';

CREATE FUNCTION microbatch.start_replay(pipeline name, from_batch bigint, to_batch bigint)
RETURNS integer
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_start_replay';

COMMENT ON FUNCTION microbatch.start_replay(name, bigint, bigint)
    IS 'replay a range of batches on a background worker; returns its process id at once';

CREATE FUNCTION microbatch.start_replay(pipeline name, from_time timestamptz, to_time timestamptz)
RETURNS integer
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_start_replay';

COMMENT ON FUNCTION microbatch.start_replay(name, timestamptz, timestamptz)
    IS 'replay on a background worker the batches that started in [from_time, to_time); returns its process id at once';

CREATE FUNCTION microbatch.replay_progress_slots(OUT pid integer, OUT database oid,
                                                 OUT pipeline_id integer,
                                                 OUT pipeline name, OUT owner oid,
                                                 OUT background boolean,
                                                 OUT from_batch bigint, OUT to_batch bigint,
                                                 OUT batches_total bigint,
                                                 OUT batches_done bigint,
                                                 OUT current_batch bigint,
                                                 OUT rows_done bigint,
                                                 OUT started_at timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_replay_progress_slots';

CREATE FUNCTION microbatch.preview_batch(pipeline name)
RETURNS TABLE (step integer, kind text, name name, layer text, rows bigint,
               duration interval)
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_preview_batch';

COMMENT ON FUNCTION microbatch.preview_batch(name)
    IS 'run the next batch of a pipeline and roll it back: the rows each expectation, transform and audit found or wrote, and the time each took';

CREATE FUNCTION microbatch.rows_waiting(pipeline name)
RETURNS bigint
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_rows_waiting';

COMMENT ON FUNCTION microbatch.rows_waiting(name)
    IS 'number of committed source rows that no committed batch has processed yet';

CREATE FUNCTION microbatch.current_batch_id()
RETURNS bigint
LANGUAGE C STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'microbatch_current_batch_id';

COMMENT ON FUNCTION microbatch.current_batch_id()
    IS 'inside a transform, the id of the batch being processed; NULL elsewhere';

/*
 * The window of the batch being processed, for the batch views'
 * WHERE clauses.  Outside a batch of the given pipeline the range is empty.
 * They read backend-local state, hence PARALLEL RESTRICTED.
 */
CREATE FUNCTION microbatch.batch_lower_xid(pipeline_id integer)
RETURNS xid8
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'microbatch_batch_lower_xid';

CREATE FUNCTION microbatch.batch_upper_xid(pipeline_id integer)
RETURNS xid8
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'microbatch_batch_upper_xid';

CREATE FUNCTION microbatch.batch_lower_running(pipeline_id integer)
RETURNS xid8[]
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'microbatch_batch_lower_running';

CREATE FUNCTION microbatch.batch_contains(pipeline_id integer, xid xid8)
RETURNS boolean
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'microbatch_batch_contains';

/*
 * Whether a row of the active batch was kept by the drop expectations: the
 * batch views filter on it.  Its support function tells the planner it
 * keeps every row, so that plans over batch views are made for the window.
 */
CREATE FUNCTION microbatch.batch_row_kept_support(internal)
RETURNS internal
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'microbatch_batch_row_kept_support';

CREATE FUNCTION microbatch.batch_row_kept(pipeline_id integer, table_oid oid, row_id tid)
RETURNS boolean
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED
SUPPORT microbatch.batch_row_kept_support
AS 'MODULE_PATHNAME', 'microbatch_batch_row_kept';

/*
 * Fingerprint of a set of rows, whatever their order: the ledger keeps one
 * per batch, and a replay refuses to run over rows that changed since.
 */
CREATE FUNCTION microbatch.rows_digest_accum(state bigint, row_value record)
RETURNS bigint
LANGUAGE C STRICT STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'microbatch_rows_digest_accum';

CREATE AGGREGATE microbatch.rows_digest(record) (
    SFUNC = microbatch.rows_digest_accum,
    STYPE = bigint,
    INITCOND = '0'
);

/*
 * Sources.  Every row a source holds must carry the id of the transaction
 * that inserted it; a constraint on the tables that hold the rows calls this
 * function, which also knows the cluster those ids belong to.
 */
CREATE FUNCTION microbatch.tracking_xid_ok(xid xid8, source regclass,
                                           system_identifier bigint)
RETURNS boolean
LANGUAGE C CALLED ON NULL INPUT STABLE
AS 'MODULE_PATHNAME', 'microbatch_tracking_xid_ok';

COMMENT ON FUNCTION microbatch.tracking_xid_ok(xid8, regclass, bigint)
    IS 'check constraint of sources: the row carries the id of the transaction writing it';

CREATE FUNCTION microbatch.source_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_source_changed';

COMMENT ON FUNCTION microbatch.source_changed()
    IS 'statement trigger on sources: wakes the scheduler when the inserting transaction commits';

CREATE FUNCTION microbatch.source_truncated()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_source_truncated';

COMMENT ON FUNCTION microbatch.source_truncated()
    IS 'statement trigger on sources: refuses a TRUNCATE of rows that a pipeline has not processed';

CREATE FUNCTION microbatch.source_replicated()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_source_replicated';

COMMENT ON FUNCTION microbatch.source_replicated()
    IS 'row trigger on sources, fired in replica mode only: gives replicated rows the id of the applying transaction';

/*
 * DDL on sources and batch views: see src/ddl.c.  ENABLE ALWAYS, so that
 * session_replication_role does not turn them off.  The start trigger fires
 * for every statement: most drops can cascade to a table (DROP FUNCTION of
 * a partition key's function, DROP COLLATION...), and in a session without
 * the preload it loads the library, whose drop hook counts the waiting rows
 * of every table the statement drops.  sql_drop fires after every drop.
 * The end trigger also fires after CREATE and ALTER SUBSCRIPTION, which can
 * make a subscription write into a source table.
 */
CREATE FUNCTION microbatch.ddl_guard()
RETURNS event_trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_ddl_guard';

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
 * Background workers.
 */
CREATE FUNCTION microbatch.next_run_at(pipeline_id integer)
RETURNS timestamptz
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_next_run_at';

CREATE FUNCTION microbatch.worker_slots(OUT pid integer, OUT database oid,
                                        OUT kind text, OUT state text,
                                        OUT pipeline text, OUT batch_id bigint,
                                        OUT since timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_workers';

CREATE VIEW microbatch.workers AS
SELECT w.pid, d.datname AS database, w.kind, w.state, w.pipeline, w.batch_id, w.since
  FROM microbatch.worker_slots() w
  LEFT JOIN pg_catalog.pg_database d ON d.oid = w.database;

/*
 * Monitoring views.  Each role sees the pipelines whose owner's privileges
 * it has, as with the rows and statements they show.  They are security
 * barriers: a function in a caller's WHERE clause never sees rows the filter
 * hides.
 */
CREATE VIEW microbatch.pipelines WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       p.pipeline_id,
       p.source_table AS source,
       p.owner_role AS owner,
       p.batch_interval,
       p.max_batch_rows,
       p.batch_timeout,
       p.history_retention,
       p.state,
       last.batch_id AS last_batch_id,
       last.finished_at AS last_batch_at,
       last.rows_dropped AS last_batch_rows_dropped,
       (SELECT pg_catalog.sum(r.failed_rows)
          FROM microbatch.check_result r
         WHERE r.pipeline_id = p.pipeline_id AND r.batch_id = last.batch_id
           AND r.action = 'warn') AS last_batch_warnings,
       microbatch.rows_waiting(p.pipeline_name) AS rows_waiting,
       microbatch.next_run_at(p.pipeline_id) AS next_run_at,
       p.consecutive_failures,
       CASE WHEN p.consecutive_failures > 0 THEN failure.error END AS last_error,
       p.created_at
  FROM microbatch.pipeline p
  LEFT JOIN LATERAL (
        SELECT b.batch_id, b.finished_at, b.rows_dropped
          FROM microbatch.batch b
         WHERE b.pipeline_id = p.pipeline_id AND b.status = 'committed'
         ORDER BY b.batch_id DESC
         LIMIT 1) last ON true
  LEFT JOIN LATERAL (
        SELECT b.error
          FROM microbatch.batch b
         WHERE b.pipeline_id = p.pipeline_id AND b.status = 'failed'
         ORDER BY b.batch_id DESC, b.attempt DESC
         LIMIT 1) failure ON true
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

CREATE VIEW microbatch.transforms WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       t.transform_name AS transform,
       t.layer,
       row_number() OVER (PARTITION BY t.pipeline_id
                          ORDER BY CASE t.layer WHEN 'bronze' THEN 1
                                                WHEN 'silver' THEN 2
                                                ELSE 3 END,
                                   t.transform_id) AS run_order,
       t.version,
       t.command,
       t.search_path,
       t.created_at
  FROM microbatch.transform t
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

CREATE VIEW microbatch.batches WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       b.batch_id,
       b.attempt,
       b.status,
       b.rows_in,
       b.rows_dropped,
       b.transform_versions,
       b.started_at,
       b.finished_at,
       b.finished_at - b.started_at AS duration,
       b.replays,
       b.last_replayed_at,
       b.sqlstate,
       b.error,
       b.error_detail,
       b.error_context,
       b.note
  FROM microbatch.batch b
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

CREATE VIEW microbatch.expectations WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       e.expectation_name AS expectation,
       e.predicate,
       e.on_violation,
       e.created_at
  FROM microbatch.expectation e
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

CREATE VIEW microbatch.audits WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       a.audit_name AS audit,
       a.layer,
       a.query,
       a.on_failure,
       a.search_path,
       a.created_at
  FROM microbatch.audit a
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

-- The rows hold source data: only roles with the owner's privileges see them
CREATE VIEW microbatch.quarantine WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       q.batch_id,
       q.expectations,
       q.row_data,
       q.quarantined_at
  FROM microbatch.quarantined_row q
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

CREATE VIEW microbatch.expectation_results WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       r.batch_id,
       r.kind,
       r.check_name AS name,
       r.action,
       r.passed_rows,
       r.failed_rows,
       r.sample,
       r.checked_at
  FROM microbatch.check_result r
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

CREATE VIEW microbatch.transform_history WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       v.transform_name AS transform,
       v.version,
       v.layer,
       v.command,
       v.search_path,
       v.created_at
  FROM microbatch.transform_version v
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

-- Visible to the roles with the privileges of the staging table's owner
CREATE VIEW microbatch.retention WITH (security_barrier) AS
SELECT r.source_table AS source,
       r.retain,
       s.horizon_xid,
       s.held_back_by,
       s.held_back_state,
       s.removable_rows,
       r.rows_removed,
       r.partitions_dropped,
       r.last_removed_at
  FROM microbatch.retention_setting r
  JOIN pg_catalog.pg_class c ON c.oid = r.source_table
  CROSS JOIN LATERAL microbatch.retention_state(r.source_table) s
 WHERE r.retain IS NOT NULL AND pg_catalog.pg_has_role(c.relowner, 'USAGE');

-- In the style of pg_stat_progress_*: one row per running backfill
CREATE VIEW microbatch.replay_progress WITH (security_barrier) AS
SELECT s.pid,
       s.pipeline,
       s.background,
       s.from_batch,
       s.to_batch,
       s.batches_total,
       s.batches_done,
       s.current_batch,
       s.rows_done,
       s.started_at,
       pg_catalog.now() - s.started_at AS elapsed,
       CASE WHEN s.batches_done > 0 THEN
            (pg_catalog.now() - s.started_at) / s.batches_done::float8
            * (s.batches_total - s.batches_done)::float8
       END AS estimated_remaining
  FROM microbatch.replay_progress_slots() s
 WHERE s.database = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
   AND pg_catalog.pg_has_role(s.owner, 'USAGE');

GRANT SELECT ON microbatch.pipelines, microbatch.transforms, microbatch.batches,
    microbatch.workers, microbatch.expectations, microbatch.audits,
    microbatch.quarantine, microbatch.expectation_results,
    microbatch.transform_history, microbatch.retention,
    microbatch.replay_progress TO PUBLIC;

/*
 * Progress, freshness and cumulative statistics (0.2.0).  The ledger keeps
 * what each step of a batch did (progress) and when its oldest row committed,
 * by commit timestamps; shared memory keeps the counts since the server
 * started (src/stats.c).
 */
CREATE FUNCTION microbatch.backlog(pipeline name, OUT rows_waiting bigint,
                                   OUT oldest_xid xid8,
                                   OUT oldest_committed_at timestamptz)
RETURNS record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_backlog';

COMMENT ON FUNCTION microbatch.backlog(name)
    IS 'the committed rows no batch of a pipeline has processed, the oldest one''s tracking xid and, with track_commit_timestamp on, its commit time';

CREATE FUNCTION microbatch.pipeline_stats(OUT pipeline_id integer,
    OUT batches bigint, OUT failures bigint, OUT rows_in bigint,
    OUT rows_written bigint, OUT rows_dropped bigint,
    OUT total_time double precision, OUT max_time double precision,
    OUT mean_time double precision, OUT total_lock_wait_time double precision,
    OUT total_commit_time double precision, OUT last_batch_at timestamptz,
    OUT duration_bounds double precision[], OUT duration_buckets bigint[],
    OUT latency_bounds double precision[], OUT latency_buckets bigint[],
    OUT latency_count bigint, OUT latency_sum double precision,
    OUT stats_reset timestamptz)
RETURNS SETOF record
LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_stat_pipelines';

CREATE FUNCTION microbatch.stat_reset(pipeline name DEFAULT NULL)
RETURNS void
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_stat_reset';

COMMENT ON FUNCTION microbatch.stat_reset(name)
    IS 'zero the cumulative statistics of a pipeline, or with NULL of every pipeline of this database the caller has privileges on';

-- One row per batch attempt; attempts before 0.2.0 have no step times
CREATE VIEW microbatch.batch_progress WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       b.batch_id,
       b.attempt,
       b.status,
       b.rows_in,
       -- a failed attempt's writes were rolled back: its steps show them
       CASE WHEN b.status = 'committed' THEN s.rows_written END AS rows_written,
       b.rows_dropped,
       b.started_at,
       b.finished_at,
       pg_catalog.make_interval(secs => (b.progress ->> 'lock_wait_us')::bigint / 1e6)
           AS lock_wait,
       s.window_time,
       s.expectations_time,
       s.transforms_time,
       s.audits_time,
       b.finished_at - b.started_at AS duration,
       b.oldest_row_committed_at,
       b.finished_at - b.oldest_row_committed_at AS latency,
       b.rows_in / NULLIF(EXTRACT(epoch FROM b.finished_at - b.started_at), 0)::float8
           AS processed_rows_per_second,
       b.rows_in / NULLIF(EXTRACT(epoch FROM b.started_at - prev.started_at), 0)::float8
           AS input_rows_per_second
  FROM microbatch.batch b
  JOIN microbatch.pipeline p USING (pipeline_id)
  -- the previous attempt, through the primary key: a filter on batch_id
  -- reaches the ledger's index
  LEFT JOIN LATERAL (
        SELECT b2.started_at
          FROM microbatch.batch b2
         WHERE b2.pipeline_id = b.pipeline_id
           AND (b2.batch_id, b2.attempt) < (b.batch_id, b.attempt)
         ORDER BY b2.batch_id DESC, b2.attempt DESC
         LIMIT 1) prev ON true
  LEFT JOIN LATERAL (
        SELECT pg_catalog.sum(st.rows) FILTER (WHERE st.kind = 'transform')
                   AS rows_written,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'window') / 1e6)
                   AS window_time,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'expectations') / 1e6)
                   AS expectations_time,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'transform') / 1e6)
                   AS transforms_time,
               pg_catalog.make_interval(secs => pg_catalog.sum(st.us) FILTER (WHERE st.kind = 'audit') / 1e6)
                   AS audits_time
          FROM pg_catalog.jsonb_to_recordset(b.progress -> 'steps')
               AS st(kind text, rows bigint, us bigint)
         WHERE b.progress IS NOT NULL) s ON true
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

-- One row per step of a batch attempt, as preview_batch() shows them
CREATE VIEW microbatch.batch_steps WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       b.batch_id,
       b.attempt,
       b.status,
       (st.ordinality - 1)::integer AS step,
       st.kind,
       st.name::name AS name,
       st.layer,
       st.rows,
       pg_catalog.make_interval(secs => st.us / 1e6) AS duration
  FROM microbatch.batch b
  JOIN microbatch.pipeline p USING (pipeline_id)
  CROSS JOIN LATERAL ROWS FROM (
        pg_catalog.jsonb_to_recordset(b.progress -> 'steps')
        AS (kind text, name text, layer text, rows bigint, us bigint))
        WITH ORDINALITY AS st(kind, name, layer, rows, us, ordinality)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

-- One row per pipeline: what waits for it, and how old it is.  Counts, not
-- rows: pg_read_all_stats sees them too, as in stat_pipelines
CREATE VIEW microbatch.freshness WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       p.state,
       p.consecutive_failures,
       w.rows_waiting,
       w.oldest_xid AS oldest_waiting_xid,
       w.oldest_committed_at AS oldest_waiting_committed_at,
       CASE WHEN w.rows_waiting = 0 THEN interval '0'
            ELSE pg_catalog.now() - w.oldest_committed_at END AS lag,
       CASE WHEN w.rows_waiting = 0 THEN 0
            ELSE pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint
                 - w.oldest_xid::text::bigint END AS lag_xids,
       last.finished_at AS last_batch_at,
       last.finished_at - last.oldest_row_committed_at AS last_batch_latency,
       microbatch.next_run_at(p.pipeline_id) AS next_run_at
  FROM microbatch.pipeline p
  CROSS JOIN LATERAL microbatch.backlog(p.pipeline_name) w
  LEFT JOIN LATERAL (
        SELECT b.finished_at, b.oldest_row_committed_at
          FROM microbatch.batch b
         WHERE b.pipeline_id = p.pipeline_id AND b.status = 'committed'
         ORDER BY b.batch_id DESC
         LIMIT 1) last ON true
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

-- In the style of pg_stat_statements: counts since stats_reset, for the
-- owner's roles and pg_read_all_stats
CREATE VIEW microbatch.stat_pipelines WITH (security_barrier) AS
SELECT p.pipeline_name AS pipeline,
       s.pipeline_id,
       s.batches,
       s.failures,
       s.rows_in,
       s.rows_written,
       s.rows_dropped,
       s.total_time,
       s.max_time,
       s.mean_time,
       s.total_lock_wait_time,
       s.total_commit_time,
       s.last_batch_at,
       s.duration_bounds,
       s.duration_buckets,
       s.latency_bounds,
       s.latency_buckets,
       s.latency_count,
       s.latency_sum,
       s.stats_reset
  FROM microbatch.pipeline_stats() s
  JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE')
    OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE');

GRANT SELECT ON microbatch.batch_progress, microbatch.batch_steps,
    microbatch.freshness, microbatch.stat_pipelines TO PUBLIC;

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

/*
 * Distributed pipelines (src/citus.c, docs/scaling.md).  The coordinator
 * lists them; each worker runs one shard pipeline per shard placement it
 * holds, an ordinary pipeline named <pipeline>_<shard id>, listed in
 * shard_pipeline.
 */
CREATE TABLE microbatch.distributed_pipeline (
    pipeline_name   name PRIMARY KEY,
    source_table    regclass NOT NULL,
    owner_role      regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE microbatch.shard_pipeline (
    pipeline_id     integer PRIMARY KEY,
    distributed_pipeline name NOT NULL,
    shard           regclass NOT NULL,
    -- the shard had no microbatch_xid before: it goes with the pipeline
    tracking_added  boolean NOT NULL
);

SELECT pg_catalog.pg_extension_config_dump('microbatch.distributed_pipeline', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.shard_pipeline', '');
REVOKE ALL ON microbatch.distributed_pipeline, microbatch.shard_pipeline FROM PUBLIC;

CREATE FUNCTION microbatch.create_distributed_pipeline(pipeline name,
                                                       source regclass,
                                                       batch_interval interval DEFAULT '1 second',
                                                       max_batch_rows bigint DEFAULT NULL,
                                                       start_from text DEFAULT 'beginning',
                                                       batch_timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_create_distributed_pipeline';

COMMENT ON FUNCTION microbatch.create_distributed_pipeline(name, regclass, interval, bigint, text, interval)
    IS 'register a pipeline over a Citus distributed table: a shard pipeline on the node of each shard';

CREATE FUNCTION microbatch.drop_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_drop_distributed_pipeline';

COMMENT ON FUNCTION microbatch.drop_distributed_pipeline(name)
    IS 'drop a distributed pipeline and its shard pipelines';

CREATE FUNCTION microbatch.add_distributed_transform(pipeline name,
                                                     transform name,
                                                     layer text,
                                                     command text)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_distributed_transform';

COMMENT ON FUNCTION microbatch.add_distributed_transform(name, name, text, text)
    IS 'append a SQL statement to a layer of every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.remove_distributed_transform(pipeline name,
                                                        transform name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_distributed_transform';

COMMENT ON FUNCTION microbatch.remove_distributed_transform(name, name)
    IS 'remove a transform from every shard pipeline of a distributed pipeline';

/* Called by the coordinator on each node that holds shards */
CREATE FUNCTION microbatch.create_shard_pipelines(pipeline name,
                                                  shards regclass[],
                                                  batch_interval interval,
                                                  max_batch_rows bigint,
                                                  start_from text,
                                                  batch_timeout interval)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_create_shard_pipelines';

COMMENT ON FUNCTION microbatch.create_shard_pipelines(name, regclass[], interval, bigint, text, interval)
    IS 'create the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.drop_shard_pipelines(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_drop_shard_pipelines';

COMMENT ON FUNCTION microbatch.drop_shard_pipelines(name)
    IS 'drop the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.add_shard_transform(pipeline name,
                                               transform name,
                                               layer text,
                                               command text,
                                               search_path text)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_shard_transform';

COMMENT ON FUNCTION microbatch.add_shard_transform(name, name, text, text, text)
    IS 'add a transform to the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.remove_shard_transform(pipeline name,
                                                  transform name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_shard_transform';

COMMENT ON FUNCTION microbatch.remove_shard_transform(name, name)
    IS 'remove a transform from the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.pause_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_pause_distributed_pipeline';

COMMENT ON FUNCTION microbatch.pause_distributed_pipeline(name)
    IS 'pause every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.resume_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_resume_distributed_pipeline';

COMMENT ON FUNCTION microbatch.resume_distributed_pipeline(name)
    IS 'resume every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.refresh_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_refresh_distributed_pipeline';

COMMENT ON FUNCTION microbatch.refresh_distributed_pipeline(name)
    IS 'refresh every shard pipeline of a distributed pipeline, after columns of its table changed';

CREATE FUNCTION microbatch.alter_distributed_pipeline(pipeline name,
                                                      batch_interval interval DEFAULT NULL,
                                                      max_batch_rows bigint DEFAULT NULL,
                                                      batch_timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_alter_distributed_pipeline';

COMMENT ON FUNCTION microbatch.alter_distributed_pipeline(name, interval, bigint, interval)
    IS 'change the schedule of every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.change_shard_pipelines(pipeline name,
                                                  change text,
                                                  batch_interval interval DEFAULT NULL,
                                                  max_batch_rows bigint DEFAULT NULL,
                                                  batch_timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_change_shard_pipelines';

COMMENT ON FUNCTION microbatch.change_shard_pipelines(name, text, interval, bigint, interval)
    IS 'pause, resume, alter or refresh the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

/* Called on the coordinator: each node's shard pipelines, as JSON */
CREATE FUNCTION microbatch.distributed_pipeline_nodes(pipeline name,
                                                      OUT node_name text,
                                                      OUT node_port integer,
                                                      OUT success boolean,
                                                      OUT result text)
RETURNS SETOF record
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_distributed_pipeline_nodes';

COMMENT ON FUNCTION microbatch.distributed_pipeline_nodes(name)
    IS 'the shard pipelines of a distributed pipeline on each node, as JSON (behind distributed_pipeline_status())';

CREATE FUNCTION microbatch.distributed_pipeline_status(pipeline name)
RETURNS TABLE (node_name text, node_port integer, pipeline name, shard text,
               state text, last_batch_id bigint,
               last_batch_at timestamptz, rows_waiting bigint, last_error text)
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT n.node_name, n.node_port, r.pipeline, r.shard, r.state,
           r.last_batch_id, r.last_batch_at, r.rows_waiting, r.last_error
      FROM microbatch.distributed_pipeline_nodes(distributed_pipeline_status.pipeline) n,
           LATERAL pg_catalog.json_to_recordset(
               CASE WHEN n.success THEN n.result::pg_catalog.json
                    ELSE pg_catalog.json_build_array(pg_catalog.json_build_object(
                             'state', 'unreachable', 'last_error', n.result)) END)
               AS r(pipeline name, shard text, state text, last_batch_id bigint,
                    last_batch_at timestamptz, rows_waiting bigint, last_error text)
     ORDER BY n.node_name, n.node_port, r.pipeline;
END;

COMMENT ON FUNCTION microbatch.distributed_pipeline_status(name)
    IS 'the shard pipelines of a distributed pipeline on every node: state, last batch, rows waiting, last error';

CREATE VIEW microbatch.distributed_pipelines WITH (security_barrier) AS
SELECT d.pipeline_name AS pipeline,
       d.source_table AS source,
       d.owner_role AS owner,
       d.created_at
  FROM microbatch.distributed_pipeline d
 WHERE pg_catalog.pg_has_role(d.owner_role, 'USAGE');

CREATE VIEW microbatch.shard_pipelines WITH (security_barrier) AS
SELECT s.distributed_pipeline,
       p.pipeline_name AS pipeline,
       s.shard,
       p.owner_role AS owner
  FROM microbatch.shard_pipeline s
  JOIN microbatch.pipeline p ON p.pipeline_id = s.pipeline_id
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

GRANT SELECT ON microbatch.distributed_pipelines, microbatch.shard_pipelines TO PUBLIC;

/*
 * Start this database's scheduler once the extension is committed.  Only
 * this script may call it: each call makes the launcher look at every
 * database.
 */
CREATE FUNCTION microbatch.extension_created()
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 'microbatch_extension_created';
REVOKE ALL ON FUNCTION microbatch.extension_created() FROM PUBLIC;
SELECT microbatch.extension_created();
