/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Access to the microbatch.* catalog tables, and the pipeline lock.
 *
 * Users get no privileges on the catalog tables.  The API functions check
 * the caller's rights, then read and write the catalog through SPI as the
 * role that owns it, with search_path pinned to pg_catalog and every
 * operator and function in our queries schema-qualified, so that no object a
 * user creates can capture a name in them.  The queries are prepared once
 * per backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/xid8.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_definitions_changed);

#define MB_MAX_QUERY_ARGS 20

typedef struct MbQuery
{
	const char *sql;
	int			nargs;
	Oid			argtypes[MB_MAX_QUERY_ARGS];
	SPIPlanPtr	plan;			/* prepared on first use, kept for the backend */
} MbQuery;

#define EQ " OPERATOR(pg_catalog.=) "

#define PIPELINE_COLUMNS \
	"SELECT pipeline_id, pipeline_name, source_table::pg_catalog.oid, " \
	"batch_view::pg_catalog.oid, owner_role::pg_catalog.oid, " \
	"max_batch_rows, state, consecutive_failures, failure_alerted, " \
	"system_identifier, rebind_batch_id, history_retention " \
	"FROM microbatch.pipeline "

static MbQuery q_pipeline_by_name = {
	PIPELINE_COLUMNS "WHERE pipeline_name" EQ "$1", 1, {NAMEOID}
};

static MbQuery q_pipeline_by_id = {
	PIPELINE_COLUMNS "WHERE pipeline_id" EQ "$1", 1, {INT4OID}
};

static MbQuery q_pipelines_by_source = {
	PIPELINE_COLUMNS "WHERE source_table::pg_catalog.oid" EQ "ANY ($1) "
	"ORDER BY pipeline_id", 1, {OIDARRAYOID}
};

static MbQuery q_pipelines_by_view = {
	PIPELINE_COLUMNS "WHERE batch_view::pg_catalog.oid" EQ "ANY ($1) "
	"ORDER BY pipeline_id", 1, {OIDARRAYOID}
};

static MbQuery q_pipeline_next_id = {
	"SELECT pg_catalog.nextval('microbatch.pipeline_pipeline_id_seq'::pg_catalog.regclass)::pg_catalog.int4",
	0, {InvalidOid}
};

static MbQuery q_pipeline_insert = {
	"INSERT INTO microbatch.pipeline (pipeline_id, pipeline_name, source_table, "
	"batch_view, owner_role, batch_interval, max_batch_rows, batch_timeout, "
	"system_identifier) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
	9, {INT4OID, NAMEOID, REGCLASSOID, REGCLASSOID, REGROLEOID, INTERVALOID,
	INT8OID, INTERVALOID, INT8OID}
};

static MbQuery q_pipeline_delete = {
	"WITH transforms AS (DELETE FROM microbatch.transform WHERE pipeline_id" EQ "$1), "
	"expectations AS (DELETE FROM microbatch.expectation WHERE pipeline_id" EQ "$1), "
	"audits AS (DELETE FROM microbatch.audit WHERE pipeline_id" EQ "$1), "
	"versions AS (DELETE FROM microbatch.transform_version WHERE pipeline_id" EQ "$1), "
	"quarantine AS (DELETE FROM microbatch.quarantined_row WHERE pipeline_id" EQ "$1), "
	"results AS (DELETE FROM microbatch.check_result WHERE pipeline_id" EQ "$1), "
	"batches AS (DELETE FROM microbatch.batch WHERE pipeline_id" EQ "$1) "
	"DELETE FROM microbatch.pipeline WHERE pipeline_id" EQ "$1",
	1, {INT4OID}
};

static MbQuery q_pipeline_set_state = {
	"UPDATE microbatch.pipeline SET state = $2, consecutive_failures = 0 "
	"WHERE pipeline_id" EQ "$1",
	2, {INT4OID, TEXTOID}
};

/*
 * The failure counts as they are now, the row locked until commit; nothing
 * if another transaction holds it
 */
static MbQuery q_pipeline_failures_for_update = {
	"SELECT consecutive_failures, state, failure_alerted FROM microbatch.pipeline "
	"WHERE pipeline_id" EQ "$1 FOR UPDATE SKIP LOCKED",
	1, {INT4OID}
};

static MbQuery q_pipeline_set_failures = {
	"UPDATE microbatch.pipeline SET consecutive_failures = $2, "
	"state = CASE WHEN $3 THEN 'failed' ELSE state END, "
	"failure_alerted = $4 WHERE pipeline_id" EQ "$1",
	4, {INT4OID, INT4OID, BOOLOID, BOOLOID}
};

/* NULL keeps a setting; a zero cap or timeout returns it to its default */
static MbQuery q_pipeline_alter = {
	"UPDATE microbatch.pipeline SET "
	"batch_interval = COALESCE($2, batch_interval), "
	"max_batch_rows = CASE WHEN $3 IS NULL THEN max_batch_rows "
	"WHEN $3" EQ "0::pg_catalog.int8 THEN NULL ELSE $3 END, "
	"batch_timeout = CASE WHEN $4 IS NULL THEN batch_timeout "
	"WHEN $4" EQ "'0'::pg_catalog.interval THEN NULL ELSE $4 END "
	"WHERE pipeline_id" EQ "$1",
	4, {INT4OID, INTERVALOID, INT8OID, INTERVALOID}
};

static MbQuery q_pipeline_set_view = {
	"UPDATE microbatch.pipeline SET batch_view = $2 WHERE pipeline_id" EQ "$1",
	2, {INT4OID, REGCLASSOID}
};

static MbQuery q_pipeline_set_owner = {
	"UPDATE microbatch.pipeline SET owner_role = $2 WHERE pipeline_id" EQ "$1",
	2, {INT4OID, REGROLEOID}
};

static MbQuery q_pipelines_reassign = {
	"UPDATE microbatch.pipeline SET owner_role = $2 "
	"WHERE owner_role::pg_catalog.oid" EQ "ANY ($1)",
	2, {OIDARRAYOID, REGROLEOID}
};

static MbQuery q_pipeline_set_rebound = {
	"UPDATE microbatch.pipeline SET system_identifier = $2, "
	"rebind_batch_id = $3 WHERE pipeline_id" EQ "$1",
	3, {INT4OID, INT8OID, INT8OID}
};

static MbQuery q_alert = {
	"SELECT pg_catalog.pg_notify('microbatch_alerts', pg_catalog.json_build_object("
	"'event', $1, 'database', pg_catalog.current_database(), 'pipeline_id', $2, "
	"'batch_id', $3, 'sqlstate', $4, 'consecutive_failures', $5)::pg_catalog.text)",
	5, {TEXTOID, INT4OID, INT8OID, TEXTOID, INT4OID}
};

static MbQuery q_transform_list = {
	"SELECT transform_id, transform_name, layer, command, search_path, version "
	"FROM microbatch.transform WHERE pipeline_id" EQ "$1 "
	"ORDER BY CASE WHEN layer" EQ "'bronze' THEN 1 "
	"WHEN layer" EQ "'silver' THEN 2 ELSE 3 END, transform_id",
	1, {INT4OID}
};

static MbQuery q_transform_exists = {
	"SELECT 1 FROM microbatch.transform "
	"WHERE pipeline_id" EQ "$1 AND transform_name" EQ "$2",
	2, {INT4OID, NAMEOID}
};

/* A transform added again under an old name carries on its numbering */
static MbQuery q_transform_insert = {
	"WITH v AS (SELECT COALESCE(pg_catalog.max(version), 0) "
	"OPERATOR(pg_catalog.+) 1 AS version FROM microbatch.transform_version "
	"WHERE pipeline_id" EQ "$1 AND transform_name" EQ "$2), "
	"t AS (INSERT INTO microbatch.transform "
	"(pipeline_id, transform_name, layer, command, search_path, version) "
	"SELECT $1, $2, $3, $4, $5, v.version FROM v RETURNING version) "
	"INSERT INTO microbatch.transform_version "
	"(pipeline_id, transform_name, version, layer, command, search_path) "
	"SELECT $1, $2, t.version, $3, $4, $5 FROM t",
	5, {INT4OID, NAMEOID, TEXTOID, TEXTOID, TEXTOID}
};

static MbQuery q_transform_replace = {
	"WITH t AS (UPDATE microbatch.transform SET command = $3, search_path = $4, "
	"version = version OPERATOR(pg_catalog.+) 1 "
	"WHERE pipeline_id" EQ "$1 AND transform_name" EQ "$2 RETURNING version, layer) "
	"INSERT INTO microbatch.transform_version "
	"(pipeline_id, transform_name, version, layer, command, search_path) "
	"SELECT $1, $2, t.version, t.layer, $3, $4 FROM t RETURNING version",
	4, {INT4OID, NAMEOID, TEXTOID, TEXTOID}
};

static MbQuery q_transform_delete = {
	"DELETE FROM microbatch.transform "
	"WHERE pipeline_id" EQ "$1 AND transform_name" EQ "$2",
	2, {INT4OID, NAMEOID}
};

#define BATCH_COLUMNS \
	"SELECT batch_id, status" EQ "'skipped', lower_snapshot, upper_snapshot, " \
	"xid_from, xid_to, rows_in, rows_digest FROM microbatch.batch "

/* Where the next batch starts: the last committed or skipped window */
static MbQuery q_position = {
	BATCH_COLUMNS
	"WHERE pipeline_id" EQ "$1 AND status OPERATOR(pg_catalog.<>) 'failed' "
	"ORDER BY batch_id DESC LIMIT 1",
	1, {INT4OID}
};

static MbQuery q_batch_by_id = {
	BATCH_COLUMNS
	"WHERE pipeline_id" EQ "$1 AND batch_id" EQ "$2 "
	"AND status OPERATOR(pg_catalog.<>) 'failed'",
	2, {INT4OID, INT8OID}
};

/* The attempt is numbered after the earlier attempts at the same batch id */
/* The ledger of an extension not yet updated from 0.1.0 */
static MbQuery q_ledger_insert_0_1 = {
	"INSERT INTO microbatch.batch (pipeline_id, batch_id, attempt, status, "
	"lower_snapshot, upper_snapshot, xid_from, xid_to, rows_in, rows_digest, "
	"started_at, finished_at, sqlstate, error, error_context, note, "
	"rows_dropped, error_detail, transform_versions) "
	"SELECT $1, $2, pg_catalog.count(*)::pg_catalog.int4 OPERATOR(pg_catalog.+) 1, "
	"$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
	"$18::pg_catalog.jsonb "
	"FROM microbatch.batch "
	"WHERE pipeline_id" EQ "$1 AND batch_id" EQ "$2",
	18, {INT4OID, INT8OID, TEXTOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID,
		XID8OID, XID8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID}
};

/* 0.2.0 records each step of a batch, and when its oldest row committed */
static MbQuery q_ledger_insert = {
	"INSERT INTO microbatch.batch (pipeline_id, batch_id, attempt, status, "
	"lower_snapshot, upper_snapshot, xid_from, xid_to, rows_in, rows_digest, "
	"started_at, finished_at, sqlstate, error, error_context, note, "
	"rows_dropped, error_detail, transform_versions, progress, "
	"oldest_row_committed_at) "
	"SELECT $1, $2, pg_catalog.count(*)::pg_catalog.int4 OPERATOR(pg_catalog.+) 1, "
	"$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
	"$18::pg_catalog.jsonb, $19::pg_catalog.jsonb, $20 "
	"FROM microbatch.batch "
	"WHERE pipeline_id" EQ "$1 AND batch_id" EQ "$2",
	20, {INT4OID, INT8OID, TEXTOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID,
		XID8OID, XID8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
	TEXTOID, TIMESTAMPTZOID}
};

static MbQuery q_ledger_replay = {
	"UPDATE microbatch.batch SET replays = replays OPERATOR(pg_catalog.+) 1, "
	"last_replayed_at = $3, rows_dropped = $4, "
	"transform_versions = $5::pg_catalog.jsonb "
	"WHERE pipeline_id" EQ "$1 AND batch_id" EQ "$2 AND status" EQ "'committed'",
	5, {INT4OID, INT8OID, TIMESTAMPTZOID, INT8OID, TEXTOID}
};

/* The lowest batch id the history still has */
static MbQuery q_ledger_first = {
	"SELECT batch_id FROM microbatch.batch WHERE pipeline_id" EQ "$1 "
	"ORDER BY batch_id LIMIT 1",
	1, {INT4OID}
};

/*
 * The last committed or skipped batch below $3 that finished before $2: the
 * ones after it are still within a retention
 */
static MbQuery q_ledger_last_finished_before = {
	"SELECT batch_id FROM microbatch.batch WHERE pipeline_id" EQ "$1 "
	"AND status OPERATOR(pg_catalog.<>) 'failed' "
	"AND finished_at OPERATOR(pg_catalog.<) $2 AND batch_id OPERATOR(pg_catalog.<) $3 "
	"ORDER BY batch_id DESC LIMIT 1",
	3, {INT4OID, TIMESTAMPTZOID, INT8OID}
};

/*
 * The lowest tracking value any row of the committed or skipped batches in
 * [$2, $3] can have: a row of a window is not visible in its lower snapshot,
 * so it is at least that snapshot's xmin, and at least the window's cut.
 */
static MbQuery q_ledger_lowest_xid = {
	"SELECT pg_catalog.min(GREATEST(xid_from, "
	"pg_catalog.pg_snapshot_xmin(lower_snapshot))) FROM microbatch.batch "
	"WHERE pipeline_id" EQ "$1 AND status OPERATOR(pg_catalog.<>) 'failed' "
	"AND (status" EQ "'committed' OR NOT $4) "
	"AND batch_id OPERATOR(pg_catalog.>=) $2 AND batch_id OPERATOR(pg_catalog.<=) $3",
	4, {INT4OID, INT8OID, INT8OID, BOOLOID}
};

/* Batch ids to replay: committed ones, by id or by start time */
static MbQuery q_ledger_range_by_id = {
	"SELECT pg_catalog.count(*), pg_catalog.min(batch_id), pg_catalog.max(batch_id) "
	"FROM microbatch.batch WHERE pipeline_id" EQ "$1 AND status" EQ "'committed' "
	"AND batch_id OPERATOR(pg_catalog.>=) $2 AND batch_id OPERATOR(pg_catalog.<=) $3",
	3, {INT4OID, INT8OID, INT8OID}
};

static MbQuery q_ledger_range_by_time = {
	"SELECT pg_catalog.count(*), pg_catalog.min(batch_id), pg_catalog.max(batch_id) "
	"FROM microbatch.batch WHERE pipeline_id" EQ "$1 AND status" EQ "'committed' "
	"AND started_at OPERATOR(pg_catalog.>=) $2 AND started_at OPERATOR(pg_catalog.<) $3",
	3, {INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

static MbQuery q_ledger_next_committed = {
	"SELECT batch_id FROM microbatch.batch WHERE pipeline_id" EQ "$1 "
	"AND status" EQ "'committed' AND batch_id OPERATOR(pg_catalog.>) $2 "
	"AND batch_id OPERATOR(pg_catalog.<=) $3 ORDER BY batch_id LIMIT 1",
	3, {INT4OID, INT8OID, INT8OID}
};

static MbQuery q_pipeline_set_history_retention = {
	"UPDATE microbatch.pipeline SET history_retention = $2 WHERE pipeline_id" EQ "$1",
	2, {INT4OID, INTERVALOID}
};

/*
 * A bounded step of history retention: rows of batches up to $2 (all
 * finished more than the retention ago, before the position), at most $3
 * of each table
 */
static MbQuery q_history_trim = {
	"WITH ledger AS (DELETE FROM microbatch.batch WHERE ctid" EQ "ANY (ARRAY("
	"SELECT ctid FROM microbatch.batch WHERE pipeline_id" EQ "$1 "
	"AND batch_id OPERATOR(pg_catalog.<=) $2 LIMIT $3)) RETURNING 1), "
	"quarantine AS (DELETE FROM microbatch.quarantined_row WHERE ctid" EQ "ANY (ARRAY("
	"SELECT ctid FROM microbatch.quarantined_row WHERE pipeline_id" EQ "$1 "
	"AND batch_id OPERATOR(pg_catalog.<=) $2 LIMIT $3)) RETURNING 1), "
	"results AS (DELETE FROM microbatch.check_result WHERE ctid" EQ "ANY (ARRAY("
	"SELECT ctid FROM microbatch.check_result WHERE pipeline_id" EQ "$1 "
	"AND batch_id OPERATOR(pg_catalog.<=) $2 LIMIT $3)) RETURNING 1) "
	"SELECT (SELECT pg_catalog.count(*) FROM ledger), "
	"(SELECT pg_catalog.count(*) FROM quarantine) OPERATOR(pg_catalog.+) "
	"(SELECT pg_catalog.count(*) FROM results)",
	3, {INT4OID, INT8OID, INT8OID}
};

#define RETENTION_COLUMNS \
	"SELECT source_table::pg_catalog.oid, retain, removed_below, system_identifier " \
	"FROM microbatch.retention_setting "

static MbQuery q_retention_all = {
	RETENTION_COLUMNS "ORDER BY source_table::pg_catalog.oid", 0, {InvalidOid}
};

static MbQuery q_retention_of = {
	RETENTION_COLUMNS "WHERE source_table::pg_catalog.oid" EQ "ANY ($1) "
	"ORDER BY source_table::pg_catalog.oid", 1, {OIDARRAYOID}
};

/*
 * A setting removed stays while rows were removed under it: replays of
 * their batches must still be refused
 */
static MbQuery q_retention_set = {
	"INSERT INTO microbatch.retention_setting (source_table, retain) VALUES ($1, $2) "
	"ON CONFLICT (source_table) DO UPDATE SET retain = EXCLUDED.retain",
	2, {REGCLASSOID, INTERVALOID}
};

static MbQuery q_retention_drop = {
	"DELETE FROM microbatch.retention_setting WHERE source_table::pg_catalog.oid" EQ "$1",
	1, {OIDOID}
};

static MbQuery q_retention_forget = {
	"DELETE FROM microbatch.retention_setting WHERE source_table::pg_catalog.oid" EQ "$1 "
	"AND retain IS NULL AND removed_below IS NULL",
	1, {OIDOID}
};

/* The horizon only rises, within one cluster's transaction ids */
static MbQuery q_retention_record = {
	"UPDATE microbatch.retention_setting SET "
	"removed_below = CASE WHEN system_identifier" EQ "$5 "
	"THEN GREATEST(removed_below, $2) ELSE $2 END, "
	"system_identifier = $5, "
	"rows_removed = rows_removed OPERATOR(pg_catalog.+) $3, "
	"partitions_dropped = partitions_dropped OPERATOR(pg_catalog.+) $4, "
	"last_removed_at = pg_catalog.now() "
	"WHERE source_table::pg_catalog.oid" EQ "$1",
	5, {OIDOID, XID8OID, INT8OID, INT8OID, INT8OID}
};

static MbQuery q_expectation_list = {
	"SELECT expectation_name, predicate, on_violation "
	"FROM microbatch.expectation WHERE pipeline_id" EQ "$1 ORDER BY expectation_id",
	1, {INT4OID}
};

static MbQuery q_expectation_exists = {
	"SELECT 1 FROM microbatch.expectation "
	"WHERE pipeline_id" EQ "$1 AND expectation_name" EQ "$2",
	2, {INT4OID, NAMEOID}
};

static MbQuery q_expectation_insert = {
	"INSERT INTO microbatch.expectation "
	"(pipeline_id, expectation_name, predicate, on_violation) VALUES ($1, $2, $3, $4)",
	4, {INT4OID, NAMEOID, TEXTOID, TEXTOID}
};

static MbQuery q_expectation_delete = {
	"DELETE FROM microbatch.expectation "
	"WHERE pipeline_id" EQ "$1 AND expectation_name" EQ "$2",
	2, {INT4OID, NAMEOID}
};

static MbQuery q_audit_list = {
	"SELECT audit_id, audit_name, layer, query, search_path, on_failure" EQ "'fail' "
	"FROM microbatch.audit WHERE pipeline_id" EQ "$1 ORDER BY audit_id",
	1, {INT4OID}
};

static MbQuery q_audit_exists = {
	"SELECT 1 FROM microbatch.audit WHERE pipeline_id" EQ "$1 AND audit_name" EQ "$2",
	2, {INT4OID, NAMEOID}
};

static MbQuery q_audit_insert = {
	"INSERT INTO microbatch.audit "
	"(pipeline_id, audit_name, layer, query, on_failure, search_path) "
	"VALUES ($1, $2, $3, $4, $5, $6)",
	6, {INT4OID, NAMEOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID}
};

static MbQuery q_audit_delete = {
	"DELETE FROM microbatch.audit WHERE pipeline_id" EQ "$1 AND audit_name" EQ "$2",
	2, {INT4OID, NAMEOID}
};

static MbQuery q_check_results_clear = {
	"WITH quarantine AS (DELETE FROM microbatch.quarantined_row "
	"WHERE pipeline_id" EQ "$1 AND batch_id" EQ "$2) "
	"DELETE FROM microbatch.check_result WHERE pipeline_id" EQ "$1 AND batch_id" EQ "$2",
	2, {INT4OID, INT8OID}
};

static MbQuery q_check_result_insert = {
	"INSERT INTO microbatch.check_result (pipeline_id, batch_id, kind, check_name, "
	"action, passed_rows, failed_rows, sample, checked_at) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, pg_catalog.statement_timestamp())",
	8, {INT4OID, INT8OID, TEXTOID, NAMEOID, TEXTOID, INT8OID, INT8OID, JSONBOID}
};

/* Each row with the names of the expectations whose bits its mask has */
static MbQuery q_quarantine_insert = {
	"INSERT INTO microbatch.quarantined_row "
	"(pipeline_id, batch_id, expectations, row_data, quarantined_at) "
	"SELECT $1, $2, ARRAY(SELECT e.name FROM pg_catalog.unnest($3) "
	"WITH ORDINALITY AS e(name, i) WHERE (q.mask OPERATOR(pg_catalog.&) "
	"(1::pg_catalog.int8 OPERATOR(pg_catalog.<<) (e.i OPERATOR(pg_catalog.-) 1)::pg_catalog.int4)) "
	"OPERATOR(pg_catalog.<>) 0 ORDER BY e.i), q.row_data, pg_catalog.statement_timestamp() "
	"FROM ROWS FROM (pg_catalog.unnest($4), pg_catalog.unnest($5)) AS q(mask, row_data)",
	5, {INT4OID, INT8OID, NAMEARRAYOID, INT8ARRAYOID, JSONBARRAYOID}
};

static MbQuery q_quarantine_clear = {
	"DELETE FROM microbatch.quarantined_row WHERE pipeline_id" EQ "$1 "
	"AND ($2 IS NULL OR batch_id OPERATOR(pg_catalog.<) $2)",
	2, {INT4OID, INT8OID}
};

/*
 * Run a catalog query, preparing it on first use.  Returns SPI_processed.
 * Never read-only: each query takes a fresh snapshot, so that what we read
 * after waiting for a pipeline's lock includes what its holder committed.
 *
 * The queries look rows up by key, and a backend keeps their plans for its
 * life: a plan made (or made again, after an invalidation) while a table
 * was small, or analysed empty, would read it sequentially, and then read
 * the whole ledger for every batch as the ledger grows.  So they run, and
 * are planned, with sequential scans disabled, which leaves one only where
 * no index serves.
 */
static uint64
mb_query(MbQuery *query, Datum *values, const char *nulls, long count)
{
	int			rc;
	int			guc_nest_level = NewGUCNestLevel();

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	if (query->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(query->sql, query->nargs, query->argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 query->sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		query->plan = plan;
	}

	rc = SPI_execute_plan(query->plan, values, nulls, false, count);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s",
			 query->sql, SPI_result_code_string(rc));
	AtEOXact_GUC(false, guc_nest_level);
	return SPI_processed;
}

static Datum
mb_name_datum(const char *str)
{
	Name		name = (Name) palloc0(NAMEDATALEN);

	namestrcpy(name, str);
	return NameGetDatum(name);
}

static Datum
mb_oid_array_datum(List *oids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(oids), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, oids)
		elems[n++] = ObjectIdGetDatum(lfirst_oid(lc));
	return PointerGetDatum(construct_array(elems, n, OIDOID, sizeof(Oid),
										   true, TYPALIGN_INT));
}

static Datum
mb_column_of(uint64 row, int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 column, isnull);
}

static Datum
mb_column_notnull_of(uint64 row, int column)
{
	bool		isnull;
	Datum		value = mb_column_of(row, column, &isnull);

	if (isnull)
		elog(ERROR, "unexpected null in column %d of a microbatch catalog row",
			 column);
	return value;
}

/* A relation's schema-qualified, quoted name, for the SQL we build */
const char *
mb_qualified_relname(Oid relid)
{
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  relname);
}

/*
 * The catalog belongs to whoever owns microbatch.pipeline: the role that ran
 * CREATE EXTENSION.
 */
static Oid
mb_catalog_owner(void)
{
	Oid			namespace = get_namespace_oid(MB_SCHEMA, true);
	Oid			relid = OidIsValid(namespace) ?
		get_relname_relid("pipeline", namespace) : InvalidOid;
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("microbatch catalog table microbatch.pipeline is missing"),
				 errhint("Reinstall the extension with DROP EXTENSION and CREATE EXTENSION.")));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * Start an API call: connect to SPI, remember the caller, pin search_path and
 * become the catalog's owner.  An error unwinds all of it with the
 * (sub)transaction.
 */
void
mb_call_begin(MbCall *call)
{
	call->caller = GetUserId();
	call->caller_search_path = pstrdup(namespace_search_path);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	call->guc_nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	mb_citus_local_ddl();

	GetUserIdAndSecContext(&call->saved_user, &call->saved_sec_context);
	SetUserIdAndSecContext(mb_catalog_owner(),
						   call->saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * Whether a role may see a pipeline's counts (statistics, backlog): with its
 * owner's privileges, or those of pg_read_all_stats, as PostgreSQL's own
 * statistics views decide.  Its rows, steps and errors stay the owner's.
 */
bool
mb_may_monitor(Oid role, Oid owner)
{
	return has_privs_of_role(role, owner) ||
		has_privs_of_role(role, ROLE_PG_READ_ALL_STATS);
}

/* Nothing set during the call outlives it */
void
mb_call_end(MbCall *call)
{
	SetUserIdAndSecContext(call->saved_user, call->saved_sec_context);
	AtEOXact_GUC(false, call->guc_nest_level);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

static void
mb_pipeline_from_row(uint64 row, MbPipeline *pipeline)
{
	bool		isnull;
	Datum		value;

	pipeline->id = DatumGetInt32(mb_column_notnull_of(row, 1));
	pipeline->name = pstrdup(NameStr(*DatumGetName(mb_column_notnull_of(row, 2))));
	pipeline->source = DatumGetObjectId(mb_column_notnull_of(row, 3));
	pipeline->batch_view = DatumGetObjectId(mb_column_notnull_of(row, 4));
	pipeline->owner = DatumGetObjectId(mb_column_notnull_of(row, 5));
	value = mb_column_of(row, 6, &isnull);
	pipeline->max_batch_rows = isnull ? 0 : DatumGetInt64(value);
	pipeline->state = TextDatumGetCString(mb_column_notnull_of(row, 7));
	pipeline->consecutive_failures = DatumGetInt32(mb_column_notnull_of(row, 8));
	pipeline->failure_alerted = DatumGetBool(mb_column_notnull_of(row, 9));
	pipeline->system_identifier = (uint64) DatumGetInt64(mb_column_notnull_of(row, 10));
	value = mb_column_of(row, 11, &isnull);
	pipeline->rebind_batch_id = isnull ? 0 : DatumGetInt64(value);
	value = mb_column_of(row, 12, &isnull);
	pipeline->history_retention = isnull ? NULL :
		DatumGetIntervalP(datumCopy(value, false, sizeof(Interval)));
}

static List *
mb_pipelines_from_rows(uint64 n)
{
	List	   *pipelines = NIL;

	for (uint64 i = 0; i < n; i++)
	{
		MbPipeline *pipeline = palloc0(sizeof(MbPipeline));

		mb_pipeline_from_row(i, pipeline);
		pipelines = lappend(pipelines, pipeline);
	}
	return pipelines;
}

bool
mb_pipeline_by_name(const char *name, MbPipeline *pipeline)
{
	Datum		values[1];

	values[0] = mb_name_datum(name);
	if (mb_query(&q_pipeline_by_name, values, NULL, 1) == 0)
		return false;
	mb_pipeline_from_row(0, pipeline);
	return true;
}

/* Look a pipeline up by name, with the error users expect when it is unknown */
MbPipeline *
mb_pipeline_get(const char *name)
{
	MbPipeline *pipeline = palloc0(sizeof(MbPipeline));

	if (!mb_pipeline_by_name(name, pipeline))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline \"%s\" does not exist", name),
				 errhint("The view microbatch.pipelines lists the pipelines of this database.")));
	return pipeline;
}

bool
mb_pipeline_by_id(int32 id, MbPipeline *pipeline)
{
	Datum		values[1];

	values[0] = Int32GetDatum(id);
	if (mb_query(&q_pipeline_by_id, values, NULL, 1) == 0)
		return false;
	mb_pipeline_from_row(0, pipeline);
	return true;
}

/* The pipelines a query over an array of relation OIDs finds, by id */
static List *
mb_pipelines_of_relations(MbQuery *query, List *relids)
{
	Datum		values[1];

	if (relids == NIL)
		return NIL;
	values[0] = mb_oid_array_datum(relids);
	return mb_pipelines_from_rows(mb_query(query, values, NULL, 0));
}

/* The pipelines reading any of the given tables, by id */
List *
mb_pipelines_on_sources(List *relids)
{
	return mb_pipelines_of_relations(&q_pipelines_by_source, relids);
}

/* The pipelines whose batch view is any of the given views, by id */
List *
mb_pipelines_with_views(List *relids)
{
	return mb_pipelines_of_relations(&q_pipelines_by_view, relids);
}

/* Keeps our advisory locks apart from the int8 (1) and int4 (2) user keys */
#define MB_LOCKTAG_PIPELINE 0x4D42

/*
 * Serialise batches, replays and changes of a pipeline until the end of the
 * transaction.  Waiting is interruptible and seen by the deadlock detector,
 * like any heavyweight lock; it assigns no transaction id.  With wait false,
 * returns false at once if another transaction holds the lock.
 */
static bool
mb_lock_pipeline(int32 pipeline_id, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) pipeline_id, 0,
						 MB_LOCKTAG_PIPELINE);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * What replays and resets of a pipeline rely on, its source rows and its
 * history, against retention: they take the pipeline's history lock in
 * share mode, a retention step takes it exclusively (a background one
 * without waiting).  Live batches read rows that retention never removes,
 * and do not take it.
 */
bool
mb_lock_history(int32 pipeline_id, LOCKMODE mode, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) pipeline_id, 1,
						 MB_LOCKTAG_PIPELINE);
	return LockAcquire(&tag, mode, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * The retention worker of a database is alone: it holds this lock for its
 * life.  False if another holds it.
 */
bool
mb_lock_retention_worker(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 3, MB_LOCKTAG_PIPELINE);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Retention steps of a hierarchy against pipelines created on it: a step
 * holds the lock of each root of its table's hierarchy exclusively (a
 * background one without waiting), create_pipeline() in share mode, so
 * that a step never removes rows a pipeline committed meanwhile would
 * start from.
 */
bool
mb_lock_hierarchy_retention(Oid root, LOCKMODE mode, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) root, 2, MB_LOCKTAG_PIPELINE);
	return LockAcquire(&tag, mode, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Take a pipeline's lock and read it again under the lock: it may have been
 * dropped, or changed, while we waited.
 */
static void
mb_pipeline_reread(MbPipeline *pipeline, const char *name)
{
	if (!mb_pipeline_by_id(pipeline->id, pipeline))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline \"%s\" was dropped while waiting for its lock",
						name)));
}

/*
 * Look a pipeline up, check the caller may change or run it, and take its
 * lock, waiting for it.
 */
MbPipeline *
mb_pipeline_lock(const char *name, Oid caller)
{
	MbPipeline *pipeline = mb_pipeline_get(name);

	mb_pipeline_check_owner(pipeline, caller);
	(void) mb_lock_pipeline(pipeline->id, true);
	mb_pipeline_reread(pipeline, name);
	return pipeline;
}

/*
 * The same without waiting, for background workers: NULL when another
 * transaction holds the lock (a batch or a change by hand).
 */
MbPipeline *
mb_pipeline_try_lock(const char *name, Oid caller)
{
	MbPipeline *pipeline = mb_pipeline_get(name);

	mb_pipeline_check_owner(pipeline, caller);
	if (!mb_lock_pipeline(pipeline->id, false))
		return NULL;
	mb_pipeline_reread(pipeline, name);
	return pipeline;
}

/* Lock a pipeline already looked up, whose rights the caller has */
void
mb_pipeline_lock_known(MbPipeline *pipeline)
{
	char	   *name = pstrdup(pipeline->name);

	(void) mb_lock_pipeline(pipeline->id, true);
	mb_pipeline_reread(pipeline, name);
}

/* Changing or running a pipeline takes the privileges of its owner */
void
mb_pipeline_check_owner(const MbPipeline *pipeline, Oid role)
{
	if (!has_privs_of_role(role, pipeline->owner))
	{
		char	   *owner = GetUserNameFromId(pipeline->owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of pipeline \"%s\"", pipeline->name),
				 owner ? errdetail("The pipeline is owned by role \"%s\".", owner) :
				 errdetail("The pipeline's owner no longer exists.")));
	}
}

int32
mb_pipeline_next_id(void)
{
	mb_query(&q_pipeline_next_id, NULL, NULL, 1);
	return DatumGetInt32(mb_column_notnull_of(0, 1));
}

void
mb_pipeline_insert(const MbPipeline *pipeline, Datum batch_interval,
				   Datum batch_timeout, bool timeout_null)
{
	Datum		values[9];
	char		nulls[9];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(pipeline->id);
	values[1] = mb_name_datum(pipeline->name);
	values[2] = ObjectIdGetDatum(pipeline->source);
	values[3] = ObjectIdGetDatum(pipeline->batch_view);
	values[4] = ObjectIdGetDatum(pipeline->owner);
	values[5] = batch_interval;
	values[6] = Int64GetDatum(pipeline->max_batch_rows);
	if (pipeline->max_batch_rows == 0)
		nulls[6] = 'n';
	values[7] = batch_timeout;
	if (timeout_null)
		nulls[7] = 'n';
	values[8] = Int64GetDatum((int64) pipeline->system_identifier);
	mb_query(&q_pipeline_insert, values, nulls, 0);
}

void
mb_pipeline_delete(int32 id)
{
	Datum		values[1];

	values[0] = Int32GetDatum(id);
	mb_query(&q_pipeline_delete, values, NULL, 0);
	mb_stats_forget_pipeline(id);
}

void
mb_pipeline_set_state(int32 id, const char *state)
{
	Datum		values[2];

	values[0] = Int32GetDatum(id);
	values[1] = CStringGetTextDatum(state);
	mb_query(&q_pipeline_set_state, values, NULL, 0);
}

/*
 * Read a pipeline's failure counts and state, locking its row: pause and
 * resume, which do not wait for a running batch, change them too.  False
 * if the row is gone, or locked by another transaction.
 */
bool
mb_pipeline_failures_for_update(MbPipeline *pipeline)
{
	Datum		values[1];

	values[0] = Int32GetDatum(pipeline->id);
	if (mb_query(&q_pipeline_failures_for_update, values, NULL, 1) == 0)
		return false;
	pipeline->consecutive_failures = DatumGetInt32(mb_column_notnull_of(0, 1));
	pipeline->state = TextDatumGetCString(mb_column_notnull_of(0, 2));
	pipeline->failure_alerted = DatumGetBool(mb_column_notnull_of(0, 3));
	return true;
}

/*
 * Record the count of consecutive failed batches, whether the pipeline is
 * now failed, and whether a failure alert awaits its recovery alert
 */
void
mb_pipeline_set_failures(int32 id, int32 failures, bool failed, bool alerted)
{
	Datum		values[4];

	values[0] = Int32GetDatum(id);
	values[1] = Int32GetDatum(failures);
	values[2] = BoolGetDatum(failed);
	values[3] = BoolGetDatum(alerted);
	mb_query(&q_pipeline_set_failures, values, NULL, 0);
}

/* A null Datum keeps a setting; see q_pipeline_alter */
void
mb_pipeline_alter(int32 id, NullableDatum batch_interval,
				  NullableDatum max_batch_rows, NullableDatum batch_timeout)
{
	Datum		values[4];
	char		nulls[4] = "    ";

	values[0] = Int32GetDatum(id);
	values[1] = batch_interval.value;
	values[2] = max_batch_rows.value;
	values[3] = batch_timeout.value;
	if (batch_interval.isnull)
		nulls[1] = 'n';
	if (max_batch_rows.isnull)
		nulls[2] = 'n';
	if (batch_timeout.isnull)
		nulls[3] = 'n';
	mb_query(&q_pipeline_alter, values, nulls, 0);
}

void
mb_pipeline_set_batch_view(int32 id, Oid batch_view)
{
	Datum		values[2];

	values[0] = Int32GetDatum(id);
	values[1] = ObjectIdGetDatum(batch_view);
	mb_query(&q_pipeline_set_view, values, NULL, 0);
}

void
mb_pipeline_set_owner(int32 id, Oid owner)
{
	Datum		values[2];

	values[0] = Int32GetDatum(id);
	values[1] = ObjectIdGetDatum(owner);
	mb_query(&q_pipeline_set_owner, values, NULL, 0);
}

/* REASSIGN OWNED moved the batch views; the pipelines follow them */
void
mb_pipelines_reassign(List *old_roles, Oid new_role)
{
	Datum		values[2];

	values[0] = mb_oid_array_datum(old_roles);
	values[1] = ObjectIdGetDatum(new_role);
	mb_query(&q_pipelines_reassign, values, NULL, 0);
}

/* The pipeline's history now counts from batch_id, in this cluster */
void
mb_pipeline_set_rebound(int32 id, uint64 system_identifier, int64 batch_id)
{
	Datum		values[3];

	values[0] = Int32GetDatum(id);
	values[1] = Int64GetDatum((int64) system_identifier);
	values[2] = Int64GetDatum(batch_id);
	mb_query(&q_pipeline_set_rebound, values, NULL, 0);
}

/*
 * NOTIFY microbatch_alerts, delivered at commit.  Any role may listen, so the
 * payload names the pipeline by id and carries no error text: the views,
 * which show a role only what it may see, have the rest.
 */
void
mb_notify_alert(const char *event, int32 pipeline_id, int64 batch_id,
				const ErrorData *error, int32 failures)
{
	Datum		values[5];
	char		nulls[5] = "     ";

	values[0] = CStringGetTextDatum(event);
	values[1] = Int32GetDatum(pipeline_id);
	values[2] = Int64GetDatum(batch_id);
	if (batch_id == 0)
		nulls[2] = 'n';
	if (error != NULL)
		values[3] = CStringGetTextDatum(unpack_sql_state(error->sqlerrcode));
	else
		nulls[3] = 'n';
	values[4] = Int32GetDatum(failures);
	mb_query(&q_alert, values, nulls, 1);
}

static List *
mb_transform_list_read(int32 pipeline_id)
{
	Datum		values[1];
	uint64		n;
	List	   *transforms = NIL;

	values[0] = Int32GetDatum(pipeline_id);
	n = mb_query(&q_transform_list, values, NULL, 0);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MbTransform *transform = palloc(sizeof(MbTransform));

		transform->id = DatumGetInt32(mb_column_notnull_of(i, 1));
		transform->name = SPI_getvalue(tuple, desc, 2);
		transform->layer = SPI_getvalue(tuple, desc, 3);
		transform->command = SPI_getvalue(tuple, desc, 4);
		transform->search_path = SPI_getvalue(tuple, desc, 5);
		transform->version = DatumGetInt32(mb_column_notnull_of(i, 6));
		transforms = lappend(transforms, transform);
	}
	return transforms;
}

bool
mb_transform_exists(int32 pipeline_id, const char *name)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	return mb_query(&q_transform_exists, values, NULL, 1) > 0;
}

void
mb_transform_insert(int32 pipeline_id, const char *name, const char *layer,
					const char *command, const char *search_path)
{
	Datum		values[5];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	values[2] = CStringGetTextDatum(layer);
	values[3] = CStringGetTextDatum(command);
	values[4] = CStringGetTextDatum(search_path);
	mb_query(&q_transform_insert, values, NULL, 0);
}

/* Returns the new version, or 0 if there is no such transform */
int32
mb_transform_replace(int32 pipeline_id, const char *name, const char *command,
					 const char *search_path)
{
	Datum		values[4];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	values[2] = CStringGetTextDatum(command);
	values[3] = CStringGetTextDatum(search_path);
	if (mb_query(&q_transform_replace, values, NULL, 0) == 0)
		return 0;
	return DatumGetInt32(mb_column_notnull_of(0, 1));
}

bool
mb_transform_delete(int32 pipeline_id, const char *name)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	return mb_query(&q_transform_delete, values, NULL, 0) > 0;
}

static uint64
mb_optional_xid(int column)
{
	bool		isnull;
	Datum		value = mb_column_of(0, column, &isnull);

	return isnull ? 0 : U64FromFullTransactionId(DatumGetFullTransactionId(value));
}

static void
mb_batch_from_row(MbLedgerBatch *batch)
{
	bool		isnull;
	Datum		value;

	batch->batch_id = DatumGetInt64(mb_column_notnull_of(0, 1));
	batch->skipped = DatumGetBool(mb_column_notnull_of(0, 2));
	batch->lower_datum = mb_column_notnull_of(0, 3);
	batch->upper_datum = mb_column_notnull_of(0, 4);
	batch->xid_from = mb_optional_xid(5);
	batch->xid_to = mb_optional_xid(6);
	value = mb_column_of(0, 7, &isnull);
	batch->rows_in = isnull ? -1 : DatumGetInt64(value);
	value = mb_column_of(0, 8, &isnull);
	batch->has_digest = !isnull;
	batch->rows_digest = isnull ? 0 : DatumGetInt64(value);
}

/* The window the next batch starts from; false before the first batch */
bool
mb_ledger_position(int32 pipeline_id, MbLedgerBatch *position)
{
	Datum		values[1];

	values[0] = Int32GetDatum(pipeline_id);
	if (mb_query(&q_position, values, NULL, 1) == 0)
		return false;
	mb_batch_from_row(position);
	return true;
}

/* A committed or skipped batch by id */
bool
mb_ledger_batch(int32 pipeline_id, int64 batch_id, MbLedgerBatch *batch)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	if (mb_query(&q_batch_by_id, values, NULL, 1) == 0)
		return false;
	mb_batch_from_row(batch);
	return true;
}

static Datum
mb_text_or_null(const char *str, char *null)
{
	if (str == NULL)
	{
		*null = 'n';
		return (Datum) 0;
	}
	return CStringGetTextDatum(str);
}

/*
 * Whether the ledger has the columns of 0.2.0.  The library runs batches
 * for a catalog still at 0.1.0 (between a package upgrade and ALTER
 * EXTENSION microbatch UPDATE) as 0.1.0 did, without their progress.
 */
static bool
mb_catalog_has_progress(void)
{
	Oid			ledger = get_relname_relid("batch", get_namespace_oid(MB_SCHEMA, false));

	return OidIsValid(ledger) && get_attnum(ledger, "progress") != InvalidAttrNumber;
}

void
mb_ledger_insert(const MbLedgerEntry *entry)
{
	Datum		values[20];
	char		nulls[20];
	const MbWindow *window = entry->window;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(entry->pipeline_id);
	values[1] = Int64GetDatum(entry->batch_id);
	values[2] = CStringGetTextDatum(entry->status);
	if (window != NULL)
	{
		values[3] = window->lower_datum;
		values[4] = window->upper_datum;
		values[5] = FullTransactionIdGetDatum(FullTransactionIdFromU64(window->xid_from));
		values[6] = FullTransactionIdGetDatum(FullTransactionIdFromU64(window->xid_to));
		if (window->xid_from == 0)
			nulls[5] = 'n';
		if (window->xid_to == 0)
			nulls[6] = 'n';
	}
	else
		nulls[3] = nulls[4] = nulls[5] = nulls[6] = 'n';
	values[7] = Int64GetDatum(entry->rows_in);
	values[8] = Int64GetDatum(entry->rows_digest);
	if (entry->rows_in < 0)
		nulls[7] = nulls[8] = 'n';
	values[9] = TimestampTzGetDatum(entry->started_at);
	values[10] = TimestampTzGetDatum(entry->finished_at);
	if (entry->error != NULL)
	{
		values[11] = CStringGetTextDatum(unpack_sql_state(entry->error->sqlerrcode));
		values[12] = mb_text_or_null(entry->error->message, &nulls[12]);
		values[13] = mb_text_or_null(entry->error->context, &nulls[13]);
	}
	else
		nulls[11] = nulls[12] = nulls[13] = 'n';
	values[14] = mb_text_or_null(entry->note, &nulls[14]);
	/* only a committed batch has dropped rows */
	values[15] = Int64GetDatum(entry->rows_dropped);
	if (entry->rows_dropped < 0 || strcmp(entry->status, "committed") != 0)
		nulls[15] = 'n';
	values[16] = mb_text_or_null(entry->error ? entry->error->detail : NULL,
								 &nulls[16]);
	values[17] = mb_text_or_null(entry->transform_versions, &nulls[17]);
	if (!mb_catalog_has_progress())
	{
		mb_query(&q_ledger_insert_0_1, values, nulls, 0);
		return;
	}
	values[18] = mb_text_or_null(entry->progress, &nulls[18]);
	values[19] = TimestampTzGetDatum(entry->oldest_row_committed_at);
	if (entry->oldest_row_committed_at == 0)
		nulls[19] = 'n';
	mb_query(&q_ledger_insert, values, nulls, 0);
}

void
mb_ledger_record_replay(int32 pipeline_id, int64 batch_id,
						TimestampTz replayed_at, int64 rows_dropped,
						const char *transform_versions)
{
	Datum		values[5];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	values[2] = TimestampTzGetDatum(replayed_at);
	values[3] = Int64GetDatum(rows_dropped);
	values[4] = CStringGetTextDatum(transform_versions);
	mb_query(&q_ledger_replay, values, NULL, 0);
}

/* The lowest batch id in a pipeline's history, or 0 if it has none */
int64
mb_ledger_first_batch(int32 pipeline_id)
{
	Datum		values[1];

	values[0] = Int32GetDatum(pipeline_id);
	if (mb_query(&q_ledger_first, values, NULL, 1) == 0)
		return 0;
	return DatumGetInt64(mb_column_notnull_of(0, 1));
}

/*
 * The last committed or skipped batch below before_batch that finished
 * before the given time, or 0
 */
int64
mb_ledger_last_finished_before(int32 pipeline_id, TimestampTz cutoff,
							   int64 before_batch)
{
	Datum		values[3];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = TimestampTzGetDatum(cutoff);
	values[2] = Int64GetDatum(before_batch);
	if (mb_query(&q_ledger_last_finished_before, values, NULL, 1) == 0)
		return 0;
	return DatumGetInt64(mb_column_notnull_of(0, 1));
}

/*
 * The lowest tracking value a row of the committed (and unless
 * committed_only, skipped) batches in [from_batch, to_batch] can have;
 * false if there are none.
 */
bool
mb_ledger_lowest_xid(int32 pipeline_id, int64 from_batch, int64 to_batch,
					 bool committed_only, uint64 *lowest)
{
	Datum		values[4];
	bool		isnull;
	Datum		value;

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(from_batch);
	values[2] = Int64GetDatum(to_batch);
	values[3] = BoolGetDatum(committed_only);
	mb_query(&q_ledger_lowest_xid, values, NULL, 1);
	value = mb_column_of(0, 1, &isnull);
	if (isnull)
		return false;
	*lowest = U64FromFullTransactionId(DatumGetFullTransactionId(value));
	return true;
}

/*
 * How many committed batches a range holds, and the first and last: by
 * batch id (from and to are bigints, both included) or by start time
 * (timestamptzs, [from, to)).
 */
int64
mb_ledger_range(int32 pipeline_id, bool by_time, Datum from, Datum to,
				int64 *first, int64 *last)
{
	Datum		values[3];
	int64		count;

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = from;
	values[2] = to;
	mb_query(by_time ? &q_ledger_range_by_time : &q_ledger_range_by_id,
			 values, NULL, 1);
	count = DatumGetInt64(mb_column_notnull_of(0, 1));
	if (count > 0)
	{
		*first = DatumGetInt64(mb_column_notnull_of(0, 2));
		*last = DatumGetInt64(mb_column_notnull_of(0, 3));
	}
	return count;
}

/* The first committed batch in (after, to], or 0 */
int64
mb_ledger_next_committed(int32 pipeline_id, int64 after, int64 to)
{
	Datum		values[3];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(after);
	values[2] = Int64GetDatum(to);
	if (mb_query(&q_ledger_next_committed, values, NULL, 1) == 0)
		return 0;
	return DatumGetInt64(mb_column_notnull_of(0, 1));
}

/* NULL: the pipeline follows microbatch.history_retention */
void
mb_pipeline_set_history_retention(int32 id, Interval *retain)
{
	Datum		values[2];
	char		nulls[2] = "  ";

	values[0] = Int32GetDatum(id);
	values[1] = IntervalPGetDatum(retain);
	if (retain == NULL)
		nulls[1] = 'n';
	mb_query(&q_pipeline_set_history_retention, values, nulls, 0);
}

/*
 * Remove at most limit rows from each of the ledger, the quarantine and the
 * check results, of the batches of a pipeline up to through_batch.  Returns
 * the ledger rows removed; *others gets the rest.
 */
int64
mb_history_trim(int32 pipeline_id, int64 through_batch, int64 limit,
				int64 *others)
{
	Datum		values[3];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(through_batch);
	values[2] = Int64GetDatum(limit);
	mb_query(&q_history_trim, values, NULL, 1);
	*others = DatumGetInt64(mb_column_notnull_of(0, 2));
	return DatumGetInt64(mb_column_notnull_of(0, 1));
}

static List *
mb_retentions_from_rows(uint64 n)
{
	List	   *retentions = NIL;

	for (uint64 i = 0; i < n; i++)
	{
		MbRetention *retention = palloc0(sizeof(MbRetention));
		bool		isnull;
		Datum		value;

		retention->source = DatumGetObjectId(mb_column_notnull_of(i, 1));
		value = mb_column_of(i, 2, &isnull);
		retention->retain = isnull ? NULL :
			DatumGetIntervalP(datumCopy(value, false, sizeof(Interval)));
		value = mb_column_of(i, 3, &isnull);
		retention->removed_below = isnull ? 0 :
			U64FromFullTransactionId(DatumGetFullTransactionId(value));
		value = mb_column_of(i, 4, &isnull);
		retention->system_identifier = isnull ? 0 : (uint64) DatumGetInt64(value);
		retentions = lappend(retentions, retention);
	}
	return retentions;
}

/* Every retention setting of the database, or those of the given tables */
List *
mb_retention_list(List *relids)
{
	Datum		values[1];

	if (relids == NIL)
		return mb_retentions_from_rows(mb_query(&q_retention_all, NULL, NULL, 0));
	values[0] = mb_oid_array_datum(relids);
	return mb_retentions_from_rows(mb_query(&q_retention_of, values, NULL, 0));
}

/* NULL retain keeps the rows from now on */
void
mb_retention_set(Oid source, Interval *retain)
{
	Datum		values[2];
	char		nulls[2] = "  ";

	values[0] = ObjectIdGetDatum(source);
	values[1] = IntervalPGetDatum(retain);
	if (retain == NULL)
		nulls[1] = 'n';
	mb_query(&q_retention_set, values, nulls, 0);
	if (retain == NULL)
		mb_query(&q_retention_forget, values, NULL, 0);
}

/* The table is gone, and its setting with it */
void
mb_retention_drop(Oid source)
{
	Datum		values[1];

	values[0] = ObjectIdGetDatum(source);
	mb_query(&q_retention_drop, values, NULL, 0);
}

/* Rows were removed below horizon: replays of windows reaching below it fail */
void
mb_retention_record(Oid source, uint64 horizon, int64 rows, int64 partitions)
{
	Datum		values[5];

	values[0] = ObjectIdGetDatum(source);
	values[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(horizon));
	values[2] = Int64GetDatum(rows);
	values[3] = Int64GetDatum(partitions);
	values[4] = Int64GetDatum((int64) GetSystemIdentifier());
	mb_query(&q_retention_record, values, NULL, 0);
}

/* The expectations of a pipeline, in the order they were added */
static List *
mb_expectation_list_read(int32 pipeline_id)
{
	Datum		values[1];
	uint64		n;
	List	   *expectations = NIL;

	values[0] = Int32GetDatum(pipeline_id);
	n = mb_query(&q_expectation_list, values, NULL, 0);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MbExpectation *expectation = palloc(sizeof(MbExpectation));
		char	   *action = SPI_getvalue(tuple, desc, 3);

		expectation->name = SPI_getvalue(tuple, desc, 1);
		expectation->predicate = SPI_getvalue(tuple, desc, 2);
		expectation->action = strcmp(action, "fail") == 0 ? MB_VIOLATION_FAIL :
			strcmp(action, "drop") == 0 ? MB_VIOLATION_DROP : MB_VIOLATION_WARN;
		expectations = lappend(expectations, expectation);
	}
	return expectations;
}

bool
mb_expectation_exists(int32 pipeline_id, const char *name)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	return mb_query(&q_expectation_exists, values, NULL, 1) > 0;
}

void
mb_expectation_insert(int32 pipeline_id, const char *name,
					  const char *predicate, const char *action)
{
	Datum		values[4];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	values[2] = CStringGetTextDatum(predicate);
	values[3] = CStringGetTextDatum(action);
	mb_query(&q_expectation_insert, values, NULL, 0);
}

bool
mb_expectation_delete(int32 pipeline_id, const char *name)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	return mb_query(&q_expectation_delete, values, NULL, 0) > 0;
}

/* The audits of a pipeline, in the order they were added */
static List *
mb_audit_list_read(int32 pipeline_id)
{
	Datum		values[1];
	uint64		n;
	List	   *audits = NIL;

	values[0] = Int32GetDatum(pipeline_id);
	n = mb_query(&q_audit_list, values, NULL, 0);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MbAudit    *audit = palloc(sizeof(MbAudit));

		audit->id = DatumGetInt32(mb_column_notnull_of(i, 1));
		audit->name = SPI_getvalue(tuple, desc, 2);
		audit->layer = SPI_getvalue(tuple, desc, 3);
		audit->query = SPI_getvalue(tuple, desc, 4);
		audit->search_path = SPI_getvalue(tuple, desc, 5);
		audit->fail = DatumGetBool(mb_column_notnull_of(i, 6));
		audits = lappend(audits, audit);
	}
	return audits;
}

bool
mb_audit_exists(int32 pipeline_id, const char *name)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	return mb_query(&q_audit_exists, values, NULL, 1) > 0;
}

void
mb_audit_insert(int32 pipeline_id, const char *name, const char *layer,
				const char *query, const char *action, const char *search_path)
{
	Datum		values[6];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	values[2] = CStringGetTextDatum(layer);
	values[3] = CStringGetTextDatum(query);
	values[4] = CStringGetTextDatum(action);
	values[5] = CStringGetTextDatum(search_path);
	mb_query(&q_audit_insert, values, NULL, 0);
}

bool
mb_audit_delete(int32 pipeline_id, const char *name)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = mb_name_datum(name);
	return mb_query(&q_audit_delete, values, NULL, 0) > 0;
}

/* Forget what earlier runs of a batch found: its quarantine and results */
void
mb_check_results_clear(int32 pipeline_id, int64 batch_id)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	mb_query(&q_check_results_clear, values, NULL, 0);
}

/* passed -1 when not known (audits); sample (jsonb) 0 for none */
void
mb_check_result_insert(int32 pipeline_id, int64 batch_id, const char *kind,
					   const char *name, const char *action, int64 passed,
					   int64 failed, Datum sample)
{
	Datum		values[8];
	char		nulls[8];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = mb_name_datum(name);
	values[4] = CStringGetTextDatum(action);
	values[5] = Int64GetDatum(passed);
	if (passed < 0)
		nulls[5] = 'n';
	values[6] = Int64GetDatum(failed);
	values[7] = sample;
	if (sample == (Datum) 0)
		nulls[7] = 'n';
	mb_query(&q_check_result_insert, values, nulls, 0);
}

/*
 * Quarantine n rows (jsonb) of a batch; each mask says which of the names
 * (a name[], bit i for element i + 1) the row failed.
 */
void
mb_quarantine_insert(int32 pipeline_id, int64 batch_id, Datum names, int n,
					 Datum *masks, Datum *rows)
{
	Datum		values[5];

	if (n == 0)
		return;
	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	values[2] = names;
	values[3] = PointerGetDatum(construct_array(masks, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(rows, n, JSONBOID, -1, false,
												TYPALIGN_INT));
	mb_query(&q_quarantine_insert, values, NULL, 0);
}

/* before_batch 0: all of them */
int64
mb_quarantine_clear(int32 pipeline_id, int64 before_batch)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(before_batch);
	if (before_batch == 0)
		nulls[1] = 'n';
	return (int64) mb_query(&q_quarantine_clear, values, nulls, 0);
}

/*
 * The definitions a batch runs (transforms, expectations, audits), cached
 * per backend and pipeline: a continuous pipeline runs many batches a
 * second, and they change rarely.  Any change to their catalog tables, by
 * the API or by hand, fires a statement trigger that invalidates the
 * tables' relcache entries in every backend at commit (and in ours at once,
 * and again if we roll back), and the callback below drops the cache.  A
 * list read while an invalidation arrived is not kept: it may predate it;
 * nor one read under a transaction snapshot, which may predate changes
 * whose invalidations came before.
 */
typedef enum MbDefinitionKind
{
	MB_DEFINITION_TRANSFORMS,
	MB_DEFINITION_EXPECTATIONS,
	MB_DEFINITION_AUDITS
} MbDefinitionKind;

#define MB_DEFINITION_KINDS (MB_DEFINITION_AUDITS + 1)

typedef struct MbDefinitions
{
	int32		pipeline_id;	/* hash key */
	bool		have[MB_DEFINITION_KINDS];
	List	   *lists[MB_DEFINITION_KINDS];
} MbDefinitions;

static MemoryContext definitions_context = NULL;
static HTAB *definitions = NULL;
static uint64 definitions_generation = 0;

/* The catalog tables of definitions, known before any is read */
static Oid	definitions_tables[MB_DEFINITION_KINDS];

static void
mb_definitions_forget(Datum arg, Oid relid)
{
	bool		ours = !OidIsValid(relid);

	for (int i = 0; i < MB_DEFINITION_KINDS && !ours; i++)
		ours = relid == definitions_tables[i];
	if (!ours)
		return;
	definitions_generation++;
	if (definitions_context != NULL)
		MemoryContextDelete(definitions_context);
	definitions_context = NULL;
	definitions = NULL;
}

static MbDefinitions *
mb_definitions_of(int32 pipeline_id)
{
	static bool registered = false;
	bool		found;
	MbDefinitions *entry;

	if (!registered)
	{
		CacheRegisterRelcacheCallback(mb_definitions_forget, (Datum) 0);
		registered = true;
	}
	if (definitions == NULL)
	{
		HASHCTL		ctl;

		definitions_context = AllocSetContextCreate(CacheMemoryContext,
													"microbatch definitions",
													ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(MbDefinitions);
		ctl.hcxt = definitions_context;
		definitions = hash_create("microbatch definitions", 16, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(definitions, &pipeline_id, HASH_ENTER, &found);
	if (!found)
	{
		memset(entry->have, 0, sizeof(entry->have));
		memset(entry->lists, 0, sizeof(entry->lists));
	}
	return entry;
}

/*
 * Whether the catalog has the triggers that invalidate the cache (0.3.0).
 * Notes the tables whose invalidations drop it.
 */
static bool
mb_catalog_invalidates_definitions(void)
{
	static const char *const tables[MB_DEFINITION_KINDS] = {
		"transform", "expectation", "audit"
	};
	Oid			schema = get_namespace_oid(MB_SCHEMA, true);

	if (!OidIsValid(schema) ||
		!OidIsValid(GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
									CStringGetDatum("definitions_changed"),
									PointerGetDatum(buildoidvector(NULL, 0)),
									ObjectIdGetDatum(schema))))
		return false;
	for (int i = 0; i < MB_DEFINITION_KINDS; i++)
		definitions_tables[i] = get_relname_relid(tables[i], schema);
	return true;
}

static List *
mb_definitions_read(MbDefinitionKind kind, int32 pipeline_id)
{
	switch (kind)
	{
		case MB_DEFINITION_TRANSFORMS:
			return mb_transform_list_read(pipeline_id);
		case MB_DEFINITION_EXPECTATIONS:
			return mb_expectation_list_read(pipeline_id);
		case MB_DEFINITION_AUDITS:
			return mb_audit_list_read(pipeline_id);
	}
	pg_unreachable();
}

static void *
mb_definition_copy(MbDefinitionKind kind, const void *definition)
{
	switch (kind)
	{
		case MB_DEFINITION_TRANSFORMS:
			{
				const MbTransform *from = definition;
				MbTransform *to = palloc(sizeof(MbTransform));

				to->id = from->id;
				to->name = pstrdup(from->name);
				to->layer = pstrdup(from->layer);
				to->command = pstrdup(from->command);
				to->search_path = pstrdup(from->search_path);
				to->version = from->version;
				return to;
			}
		case MB_DEFINITION_EXPECTATIONS:
			{
				const MbExpectation *from = definition;
				MbExpectation *to = palloc(sizeof(MbExpectation));

				to->name = pstrdup(from->name);
				to->predicate = pstrdup(from->predicate);
				to->action = from->action;
				return to;
			}
		case MB_DEFINITION_AUDITS:
			{
				const MbAudit *from = definition;
				MbAudit    *to = palloc(sizeof(MbAudit));

				to->id = from->id;
				to->name = pstrdup(from->name);
				to->layer = pstrdup(from->layer);
				to->query = pstrdup(from->query);
				to->search_path = pstrdup(from->search_path);
				to->fail = from->fail;
				return to;
			}
	}
	pg_unreachable();
}

/* A copy of a list of definitions, in CurrentMemoryContext */
static List *
mb_definitions_copy(MbDefinitionKind kind, List *list)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, list)
		result = lappend(result, mb_definition_copy(kind, lfirst(lc)));
	return result;
}

/*
 * A pipeline's definitions of a kind, from the cache or read and kept.
 * Returns a copy the caller may change.
 */
static List *
mb_definitions_get(MbDefinitionKind kind, int32 pipeline_id)
{
	MbDefinitions *entry;
	uint64		generation;
	List	   *list;
	MemoryContext old;

	/* changes committed since we last looked, even within a transaction */
	AcceptInvalidationMessages();

	/*
	 * Under a transaction snapshot, a read may predate changes whose
	 * invalidations we have seen: it is neither kept nor answered from the
	 * cache.  Before the update to 0.3.0, nothing invalidates the cache; a
	 * cache that exists was made once the catalog had its triggers, and
	 * goes with the catalog tables (DROP EXTENSION invalidates them), so
	 * the catalog is looked at only when there is none.
	 */
	if (IsolationUsesXactSnapshot() ||
		(definitions == NULL && !mb_catalog_invalidates_definitions()))
		return mb_definitions_read(kind, pipeline_id);

	entry = mb_definitions_of(pipeline_id);
	if (entry->have[kind])
		return mb_definitions_copy(kind, entry->lists[kind]);

	generation = definitions_generation;
	list = mb_definitions_read(kind, pipeline_id);
	if (generation != definitions_generation)
		return list;
	entry = mb_definitions_of(pipeline_id);
	old = MemoryContextSwitchTo(definitions_context);
	entry->lists[kind] = mb_definitions_copy(kind, list);
	MemoryContextSwitchTo(old);
	entry->have[kind] = true;
	return list;
}

/* The transforms of a pipeline in run order: bronze, silver, gold */
List *
mb_transform_list(int32 pipeline_id)
{
	return mb_definitions_get(MB_DEFINITION_TRANSFORMS, pipeline_id);
}

List *
mb_expectation_list(int32 pipeline_id)
{
	return mb_definitions_get(MB_DEFINITION_EXPECTATIONS, pipeline_id);
}

List *
mb_audit_list(int32 pipeline_id)
{
	return mb_definitions_get(MB_DEFINITION_AUDITS, pipeline_id);
}

/*
 * Statement trigger on the catalog tables of definitions: every backend
 * drops its cached definitions when the change commits.
 */
Datum
microbatch_definitions_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("microbatch.definitions_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	PG_RETURN_POINTER(NULL);
}
