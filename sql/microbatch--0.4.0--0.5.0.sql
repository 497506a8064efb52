/* microbatch 0.4.0 -> 0.5.0: BRIN tracking indexes */
\echo Use "ALTER EXTENSION microbatch UPDATE TO '0.5.0'" to load this file. \quit

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

CREATE FUNCTION microbatch.set_tracking_index(source regclass, method text)
RETURNS regclass
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_set_tracking_index';

COMMENT ON FUNCTION microbatch.set_tracking_index(regclass, text)
    IS 'give a source table a B-tree (btree) or a BRIN (brin) index on its tracking column';
