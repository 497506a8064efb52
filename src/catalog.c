/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Access to the microbatch.* catalog tables.
 *
 * Users get no privileges on the catalog tables.  The API functions check
 * the caller's rights, then read and write the catalog through SPI as the
 * role that owns it, with search_path pinned to pg_catalog so that no object
 * a user creates can capture a name in our queries.  The queries are
 * prepared once per backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/xid8.h"

#include "microbatch.h"

#define MB_MAX_QUERY_ARGS 14

typedef struct MbQuery
{
	const char *sql;
	int			nargs;
	Oid			argtypes[MB_MAX_QUERY_ARGS];
	SPIPlanPtr	plan;			/* prepared on first use, kept for the backend */
} MbQuery;

#define PIPELINE_COLUMNS \
	"SELECT pipeline_id, pipeline_name, source_table::pg_catalog.oid, " \
	"batch_view::pg_catalog.oid, owner_role::pg_catalog.oid, " \
	"max_batch_rows, state, consecutive_failures, failure_alerted " \
	"FROM microbatch.pipeline "

static MbQuery q_pipeline_by_name = {
	PIPELINE_COLUMNS "WHERE pipeline_name = $1", 1, {NAMEOID}
};

static MbQuery q_pipeline_by_id = {
	PIPELINE_COLUMNS "WHERE pipeline_id = $1", 1, {INT4OID}
};

static MbQuery q_pipeline_next_id = {
	"SELECT pg_catalog.nextval('microbatch.pipeline_pipeline_id_seq')::pg_catalog.int4",
	0, {InvalidOid}
};

static MbQuery q_pipeline_insert = {
	"INSERT INTO microbatch.pipeline (pipeline_id, pipeline_name, source_table, "
	"batch_view, owner_role, batch_interval, max_batch_rows) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7)",
	7, {INT4OID, NAMEOID, REGCLASSOID, REGCLASSOID, REGROLEOID, INTERVALOID, INT8OID}
};

static MbQuery q_pipeline_delete = {
	"WITH transforms AS (DELETE FROM microbatch.transform WHERE pipeline_id = $1), "
	"batches AS (DELETE FROM microbatch.batch WHERE pipeline_id = $1) "
	"DELETE FROM microbatch.pipeline WHERE pipeline_id = $1",
	1, {INT4OID}
};

static MbQuery q_pipeline_set_state = {
	"UPDATE microbatch.pipeline SET state = $2, consecutive_failures = 0 "
	"WHERE pipeline_id = $1",
	2, {INT4OID, TEXTOID}
};

static MbQuery q_pipeline_set_failures = {
	"UPDATE microbatch.pipeline SET consecutive_failures = $2, "
	"state = CASE WHEN $3 THEN 'failed' ELSE state END, "
	"failure_alerted = $4 WHERE pipeline_id = $1",
	4, {INT4OID, INT4OID, BOOLOID, BOOLOID}
};

static MbQuery q_pipeline_alter = {
	"UPDATE microbatch.pipeline SET "
	"batch_interval = COALESCE($2, batch_interval), "
	"max_batch_rows = CASE WHEN $3 IS NULL THEN max_batch_rows "
	"WHEN $3 = 0 THEN NULL ELSE $3 END WHERE pipeline_id = $1",
	3, {INT4OID, INTERVALOID, INT8OID}
};

static MbQuery q_alert = {
	"SELECT pg_catalog.pg_notify('microbatch_alerts', pg_catalog.json_build_object("
	"'event', $1, 'database', pg_catalog.current_database(), 'pipeline', $2, "
	"'batch_id', $3, 'sqlstate', $4, 'message', $5, "
	"'consecutive_failures', $6)::pg_catalog.text)",
	6, {TEXTOID, NAMEOID, INT8OID, TEXTOID, TEXTOID, INT4OID}
};

static MbQuery q_pipeline_set_view = {
	"UPDATE microbatch.pipeline SET batch_view = $2 WHERE pipeline_id = $1",
	2, {INT4OID, REGCLASSOID}
};

static MbQuery q_source_users = {
	"SELECT pg_catalog.count(*)::pg_catalog.int4 FROM microbatch.pipeline "
	"WHERE source_table = $1 AND pipeline_id <> $2",
	2, {REGCLASSOID, INT4OID}
};

static MbQuery q_transform_list = {
	"SELECT transform_id, transform_name, layer, command, search_path "
	"FROM microbatch.transform WHERE pipeline_id = $1 "
	"ORDER BY CASE layer WHEN 'bronze' THEN 1 WHEN 'silver' THEN 2 ELSE 3 END, "
	"transform_id",
	1, {INT4OID}
};

static MbQuery q_transform_exists = {
	"SELECT 1 FROM microbatch.transform "
	"WHERE pipeline_id = $1 AND transform_name = $2",
	2, {INT4OID, NAMEOID}
};

static MbQuery q_transform_insert = {
	"INSERT INTO microbatch.transform "
	"(pipeline_id, transform_name, layer, command, search_path) "
	"VALUES ($1, $2, $3, $4, $5)",
	5, {INT4OID, NAMEOID, TEXTOID, TEXTOID, TEXTOID}
};

static MbQuery q_transform_delete = {
	"DELETE FROM microbatch.transform "
	"WHERE pipeline_id = $1 AND transform_name = $2",
	2, {INT4OID, NAMEOID}
};

#define BATCH_WINDOW_COLUMNS \
	"SELECT batch_id, lower_snapshot, upper_snapshot, xid_from, xid_to, " \
	"rows_in FROM microbatch.batch "

static MbQuery q_last_batch = {
	BATCH_WINDOW_COLUMNS
	"WHERE pipeline_id = $1 AND status = 'committed' "
	"ORDER BY batch_id DESC LIMIT 1",
	1, {INT4OID}
};

static MbQuery q_committed_batch = {
	BATCH_WINDOW_COLUMNS
	"WHERE pipeline_id = $1 AND batch_id = $2 AND status = 'committed'",
	2, {INT4OID, INT8OID}
};

/* The attempt is numbered after the earlier attempts at the same batch id */
static MbQuery q_ledger_insert = {
	"INSERT INTO microbatch.batch (pipeline_id, batch_id, attempt, status, "
	"lower_snapshot, upper_snapshot, xid_from, xid_to, rows_in, "
	"started_at, finished_at, sqlstate, error, error_context) "
	"SELECT $1, $2, pg_catalog.count(*)::pg_catalog.int4 + 1, $3, $4, $5, "
	"$6, $7, $8, $9, $10, $11, $12, $13 FROM microbatch.batch "
	"WHERE pipeline_id = $1 AND batch_id = $2",
	13, {INT4OID, INT8OID, TEXTOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID,
		XID8OID, XID8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID,
	TEXTOID, TEXTOID}
};

static MbQuery q_ledger_replay = {
	"UPDATE microbatch.batch SET replays = replays + 1, last_replayed_at = $3 "
	"WHERE pipeline_id = $1 AND batch_id = $2 AND status = 'committed'",
	3, {INT4OID, INT8OID, TIMESTAMPTZOID}
};

/*
 * Run a catalog query, preparing it on first use.  Returns SPI_processed.
 * Never read-only: each query takes a fresh snapshot, so that what we read
 * after waiting for a pipeline's lock includes what its holder committed.
 */
static uint64
mb_query(MbQuery *query, Datum *values, const char *nulls, long count)
{
	int			rc;

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
mb_column(int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
						 column, isnull);
}

static Datum
mb_column_notnull(int column)
{
	bool		isnull;
	Datum		value = mb_column(column, &isnull);

	if (isnull)
		elog(ERROR, "unexpected null in column %d of a microbatch catalog row",
			 column);
	return value;
}

/*
 * The catalog belongs to whoever owns microbatch.pipeline: the role that ran
 * CREATE EXTENSION.
 */
static Oid
mb_catalog_owner(void)
{
	Oid			namespace = get_namespace_oid(MB_SCHEMA, false);
	Oid			relid = get_relname_relid("pipeline", namespace);
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

	GetUserIdAndSecContext(&call->saved_user, &call->saved_sec_context);
	SetUserIdAndSecContext(mb_catalog_owner(),
						   call->saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
mb_call_end(MbCall *call)
{
	SetUserIdAndSecContext(call->saved_user, call->saved_sec_context);
	AtEOXact_GUC(true, call->guc_nest_level);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/*
 * Run user code (transforms, reads of a source) as the given role, in a
 * security-restricted operation, as PostgreSQL does for index expressions
 * and maintenance commands.
 */
void
mb_run_as(Oid role, Oid *saved_user, int *saved_sec_context)
{
	GetUserIdAndSecContext(saved_user, saved_sec_context);
	SetUserIdAndSecContext(role, *saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
mb_run_as_end(Oid saved_user, int saved_sec_context)
{
	SetUserIdAndSecContext(saved_user, saved_sec_context);
}

static void
mb_pipeline_from_tuple(MbPipeline *pipeline)
{
	bool		isnull;
	Datum		max_rows;

	pipeline->id = DatumGetInt32(mb_column_notnull(1));
	pipeline->name = pstrdup(NameStr(*DatumGetName(mb_column_notnull(2))));
	pipeline->source = DatumGetObjectId(mb_column_notnull(3));
	pipeline->batch_view = DatumGetObjectId(mb_column_notnull(4));
	pipeline->owner = DatumGetObjectId(mb_column_notnull(5));
	max_rows = mb_column(6, &isnull);
	pipeline->max_batch_rows = isnull ? 0 : DatumGetInt64(max_rows);
	pipeline->state = TextDatumGetCString(mb_column_notnull(7));
	pipeline->consecutive_failures = DatumGetInt32(mb_column_notnull(8));
	pipeline->failure_alerted = DatumGetBool(mb_column_notnull(9));
}

bool
mb_pipeline_by_name(const char *name, MbPipeline *pipeline)
{
	Datum		values[1];

	values[0] = mb_name_datum(name);
	if (mb_query(&q_pipeline_by_name, values, NULL, 1) == 0)
		return false;
	mb_pipeline_from_tuple(pipeline);
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
	mb_pipeline_from_tuple(pipeline);
	return true;
}

/* Keeps our advisory locks apart from the int8 (1) and int4 (2) user keys */
#define MB_LOCKTAG_PIPELINE 0x4D42

/*
 * Serialise batches, replays and changes of a pipeline until the end of the
 * transaction.  Waiting is interruptible and seen by the deadlock detector,
 * like any heavyweight lock; it assigns no transaction id.
 */
static void
mb_lock_pipeline(int32 pipeline_id)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) pipeline_id, 0,
						 MB_LOCKTAG_PIPELINE);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * Look a pipeline up, check the caller may change or run it, and take its
 * lock.  It is read again under the lock: it may have been dropped, or
 * changed, while we waited.
 */
MbPipeline *
mb_pipeline_lock(const char *name, Oid caller)
{
	MbPipeline *pipeline = mb_pipeline_get(name);

	mb_pipeline_check_owner(pipeline, caller);
	mb_lock_pipeline(pipeline->id);
	if (!mb_pipeline_by_id(pipeline->id, pipeline))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline \"%s\" was dropped while waiting for its lock",
						name)));
	return pipeline;
}

/* Changing or running a pipeline takes the privileges of its owner */
void
mb_pipeline_check_owner(const MbPipeline *pipeline, Oid role)
{
	if (!has_privs_of_role(role, pipeline->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of pipeline \"%s\"", pipeline->name),
				 errdetail("The pipeline is owned by role \"%s\".",
						   GetUserNameFromId(pipeline->owner, true) ?
						   GetUserNameFromId(pipeline->owner, true) : "(dropped)")));
}

int32
mb_pipeline_next_id(void)
{
	mb_query(&q_pipeline_next_id, NULL, NULL, 1);
	return DatumGetInt32(mb_column_notnull(1));
}

void
mb_pipeline_insert(int32 id, const char *name, Oid source, Oid batch_view,
				   Oid owner, Datum batch_interval, int64 max_batch_rows)
{
	Datum		values[7];
	char		nulls[7] = "       ";

	values[0] = Int32GetDatum(id);
	values[1] = mb_name_datum(name);
	values[2] = ObjectIdGetDatum(source);
	values[3] = ObjectIdGetDatum(batch_view);
	values[4] = ObjectIdGetDatum(owner);
	values[5] = batch_interval;
	values[6] = Int64GetDatum(max_batch_rows);
	if (max_batch_rows == 0)
		nulls[6] = 'n';
	mb_query(&q_pipeline_insert, values, nulls, 0);
}

void
mb_pipeline_delete(int32 id)
{
	Datum		values[1];

	values[0] = Int32GetDatum(id);
	mb_query(&q_pipeline_delete, values, NULL, 0);
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

/* NULL arguments keep the setting; max_batch_rows 0 removes the cap */
void
mb_pipeline_alter(int32 id, Datum batch_interval, bool interval_null,
				  int64 max_batch_rows, bool max_rows_null)
{
	Datum		values[3];
	char		nulls[3] = "   ";

	values[0] = Int32GetDatum(id);
	values[1] = batch_interval;
	values[2] = Int64GetDatum(max_batch_rows);
	if (interval_null)
		nulls[1] = 'n';
	if (max_rows_null)
		nulls[2] = 'n';
	mb_query(&q_pipeline_alter, values, nulls, 0);
}

/* NOTIFY microbatch_alerts, with a JSON payload; delivered at commit */
void
mb_notify_alert(const char *event, const char *pipeline_name, int64 batch_id,
				const ErrorData *error, int32 failures)
{
	Datum		values[6];
	char		nulls[6] = "      ";

	values[0] = CStringGetTextDatum(event);
	values[1] = mb_name_datum(pipeline_name);
	values[2] = Int64GetDatum(batch_id);
	if (batch_id == 0)
		nulls[2] = 'n';
	if (error != NULL)
	{
		values[3] = CStringGetTextDatum(unpack_sql_state(error->sqlerrcode));
		values[4] = CStringGetTextDatum(error->message ? error->message : "");
	}
	else
		nulls[3] = nulls[4] = 'n';
	values[5] = Int32GetDatum(failures);
	mb_query(&q_alert, values, nulls, 1);
}

void
mb_pipeline_set_batch_view(int32 id, Oid batch_view)
{
	Datum		values[2];

	values[0] = Int32GetDatum(id);
	values[1] = ObjectIdGetDatum(batch_view);
	mb_query(&q_pipeline_set_view, values, NULL, 0);
}

/* How many pipelines other than this one read a source */
int32
mb_source_other_pipelines(Oid source, int32 pipeline_id)
{
	Datum		values[2];

	values[0] = ObjectIdGetDatum(source);
	values[1] = Int32GetDatum(pipeline_id);
	mb_query(&q_source_users, values, NULL, 1);
	return DatumGetInt32(mb_column_notnull(1));
}

/* The transforms of a pipeline in run order: bronze, silver, gold */
List *
mb_transform_list(int32 pipeline_id)
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
		bool		isnull;

		transform->id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		transform->name = SPI_getvalue(tuple, desc, 2);
		transform->layer = SPI_getvalue(tuple, desc, 3);
		transform->command = SPI_getvalue(tuple, desc, 4);
		transform->search_path = SPI_getvalue(tuple, desc, 5);
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
	Datum		value = mb_column(column, &isnull);

	return isnull ? 0 : U64FromFullTransactionId(DatumGetFullTransactionId(value));
}

static void
mb_batch_from_tuple(MbLastBatch *batch)
{
	batch->batch_id = DatumGetInt64(mb_column_notnull(1));
	batch->lower_datum = mb_column_notnull(2);
	batch->upper_datum = mb_column_notnull(3);
	batch->xid_from = mb_optional_xid(4);
	batch->xid_to = mb_optional_xid(5);
	batch->rows_in = DatumGetInt64(mb_column_notnull(6));
}

bool
mb_last_batch(int32 pipeline_id, MbLastBatch *last)
{
	Datum		values[1];

	values[0] = Int32GetDatum(pipeline_id);
	if (mb_query(&q_last_batch, values, NULL, 1) == 0)
		return false;
	mb_batch_from_tuple(last);
	return true;
}

bool
mb_committed_batch(int32 pipeline_id, int64 batch_id, MbLastBatch *batch)
{
	Datum		values[2];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	if (mb_query(&q_committed_batch, values, NULL, 1) == 0)
		return false;
	mb_batch_from_tuple(batch);
	return true;
}

void
mb_ledger_insert(const MbWindow *window, bool committed,
				 int64 rows_in, TimestampTz started_at,
				 TimestampTz finished_at, const ErrorData *error)
{
	Datum		values[13];
	char		nulls[13];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(window->pipeline_id);
	values[1] = Int64GetDatum(window->batch_id);
	values[2] = CStringGetTextDatum(committed ? "committed" : "failed");
	values[3] = window->lower_datum;
	values[4] = window->upper_datum;
	values[5] = UInt64GetDatum(window->xid_from);
	if (window->xid_from == 0)
		nulls[5] = 'n';
	values[6] = UInt64GetDatum(window->xid_to);
	if (window->xid_to == 0)
		nulls[6] = 'n';
	values[7] = Int64GetDatum(rows_in);
	values[8] = TimestampTzGetDatum(started_at);
	values[9] = TimestampTzGetDatum(finished_at);
	nulls[10] = nulls[11] = nulls[12] = 'n';
	if (error != NULL)
	{
		values[10] = CStringGetTextDatum(unpack_sql_state(error->sqlerrcode));
		nulls[10] = ' ';
		if (error->message)
		{
			values[11] = CStringGetTextDatum(error->message);
			nulls[11] = ' ';
		}
		if (error->context)
		{
			values[12] = CStringGetTextDatum(error->context);
			nulls[12] = ' ';
		}
	}
	mb_query(&q_ledger_insert, values, nulls, 0);
}

void
mb_ledger_record_replay(int32 pipeline_id, int64 batch_id,
						TimestampTz replayed_at)
{
	Datum		values[3];

	values[0] = Int32GetDatum(pipeline_id);
	values[1] = Int64GetDatum(batch_id);
	values[2] = TimestampTzGetDatum(replayed_at);
	mb_query(&q_ledger_replay, values, NULL, 0);
}
