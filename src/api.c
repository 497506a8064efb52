/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The SQL-callable functions of the microbatch schema.
 *
 * Each function checks its arguments before touching anything, then works
 * between mb_call_begin() and mb_call_end(): catalog access as the catalog's
 * owner, user code as the pipeline's owner.  An error anywhere rolls back
 * the whole call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_create_pipeline);
PG_FUNCTION_INFO_V1(microbatch_drop_pipeline);
PG_FUNCTION_INFO_V1(microbatch_backlog);
PG_FUNCTION_INFO_V1(microbatch_refresh_pipeline);
PG_FUNCTION_INFO_V1(microbatch_set_tracking_index);
PG_FUNCTION_INFO_V1(microbatch_alter_pipeline);
PG_FUNCTION_INFO_V1(microbatch_alter_pipeline_owner);
PG_FUNCTION_INFO_V1(microbatch_pause_pipeline);
PG_FUNCTION_INFO_V1(microbatch_resume_pipeline);
PG_FUNCTION_INFO_V1(microbatch_rebind_pipeline);
PG_FUNCTION_INFO_V1(microbatch_add_transform);
PG_FUNCTION_INFO_V1(microbatch_remove_transform);
PG_FUNCTION_INFO_V1(microbatch_run_batch);
PG_FUNCTION_INFO_V1(microbatch_replay_batch);
PG_FUNCTION_INFO_V1(microbatch_rows_waiting);
PG_FUNCTION_INFO_V1(microbatch_add_expectation);
PG_FUNCTION_INFO_V1(microbatch_remove_expectation);
PG_FUNCTION_INFO_V1(microbatch_add_audit);
PG_FUNCTION_INFO_V1(microbatch_remove_audit);
PG_FUNCTION_INFO_V1(microbatch_clear_quarantine);
PG_FUNCTION_INFO_V1(microbatch_replace_transform);
PG_FUNCTION_INFO_V1(microbatch_reset_pipeline);
PG_FUNCTION_INFO_V1(microbatch_set_history_retention);
PG_FUNCTION_INFO_V1(microbatch_trim_history);
PG_FUNCTION_INFO_V1(microbatch_set_retention);
PG_FUNCTION_INFO_V1(microbatch_retention_now);
PG_FUNCTION_INFO_V1(microbatch_retention_state);
PG_FUNCTION_INFO_V1(microbatch_preview_batch);
PG_FUNCTION_INFO_V1(microbatch_create_distributed_pipeline);
PG_FUNCTION_INFO_V1(microbatch_drop_distributed_pipeline);
PG_FUNCTION_INFO_V1(microbatch_add_distributed_transform);
PG_FUNCTION_INFO_V1(microbatch_remove_distributed_transform);
PG_FUNCTION_INFO_V1(microbatch_create_shard_pipelines);
PG_FUNCTION_INFO_V1(microbatch_drop_shard_pipelines);
PG_FUNCTION_INFO_V1(microbatch_add_shard_transform);
PG_FUNCTION_INFO_V1(microbatch_remove_shard_transform);
PG_FUNCTION_INFO_V1(microbatch_pause_distributed_pipeline);
PG_FUNCTION_INFO_V1(microbatch_resume_distributed_pipeline);
PG_FUNCTION_INFO_V1(microbatch_refresh_distributed_pipeline);
PG_FUNCTION_INFO_V1(microbatch_alter_distributed_pipeline);
PG_FUNCTION_INFO_V1(microbatch_change_shard_pipelines);
PG_FUNCTION_INFO_V1(microbatch_distributed_pipeline_nodes);

/* Longest batch interval: batches less often than yearly need no stream */
#define MB_MAX_INTERVAL_USECS (INT64CONST(366) * USECS_PER_DAY)
#define MB_USECS_PER_MSEC INT64CONST(1000)

static void
mb_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
}

/*
 * Functions that change pipelines: not inside a transform (which must not
 * change the pipeline whose batch it is part of), not in a read-only
 * transaction, not during recovery.
 */
static void
mb_check_may_change(const char *function)
{
	if (mb_window_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot change pipelines inside a transform")));
	PreventCommandIfReadOnly(function);
	PreventCommandDuringRecovery(function);
}

static char *
mb_name_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *name;

	mb_require_arg(fcinfo, argno, argname);
	name = NameStr(*PG_GETARG_NAME(argno));
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s must not be empty", argname)));
	return name;
}

/*
 * An interval as microseconds, months counted as 30 days and days as 24
 * hours, as interval comparison does.  Intervals that mix signs ('1 mon
 * -30 days' is zero) say something other than their length, and are
 * refused.
 */
static int64
mb_interval_usecs(Interval *value, const char *argname)
{
	int64		usecs;

	if ((value->month < 0 || value->day < 0 || value->time < 0) &&
		(value->month > 0 || value->day > 0 || value->time > 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not mix positive and negative parts", argname)));
	if (value->month < 0 || value->day < 0 || value->time < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", argname)));
	if (value->month > MB_MAX_INTERVAL_USECS / (DAYS_PER_MONTH * USECS_PER_DAY) ||
		value->day > MB_MAX_INTERVAL_USECS / USECS_PER_DAY ||
		value->time > MB_MAX_INTERVAL_USECS)
		return MB_MAX_INTERVAL_USECS + 1;
	usecs = ((int64) value->month * DAYS_PER_MONTH + value->day) * USECS_PER_DAY +
		value->time;
	return usecs;
}

/* 0 (continuous), or between a millisecond and a year */
static void
mb_check_batch_interval(Interval *value)
{
	int64		usecs = mb_interval_usecs(value, "batch_interval");

	if (usecs > MB_MAX_INTERVAL_USECS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_interval must be at most 366 days")));
	if (usecs > 0 && usecs < MB_USECS_PER_MSEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_interval must be 0 or at least 1 millisecond"),
				 errhint("Batch interval 0 runs a batch as soon as rows commit.")));
}

/*
 * A batch timeout of a millisecond up to the longest timeout PostgreSQL's
 * settings take (INT_MAX ms).  Background workers end a batch that runs
 * longer as a failure; a pipeline's own timeout may exceed the server's
 * microbatch.batch_timeout only when a superuser sets it.  Returns it in
 * milliseconds; 0 means "back to the default".
 */
static int64
mb_check_batch_timeout(Interval *value, bool zero_ok)
{
	int64		usecs = mb_interval_usecs(value, "batch_timeout");
	int64		msecs = usecs / MB_USECS_PER_MSEC;

	if (usecs == 0 && zero_ok)
		return 0;
	if (msecs < 1 || msecs > INT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_timeout must be between 1 millisecond and %d milliseconds",
						INT_MAX),
				 zero_ok ? errhint("Pass 0 to return the pipeline to microbatch.batch_timeout.") : 0));
	if (mb_batch_timeout > 0 && msecs > mb_batch_timeout && !superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser can give a pipeline a batch_timeout above microbatch.batch_timeout (%d ms)",
						mb_batch_timeout)));
	return msecs;
}

static int64
mb_max_batch_rows_arg(FunctionCallInfo fcinfo, int argno, bool zero_ok)
{
	int64		value = PG_GETARG_INT64(argno);

	if (value < 0 && zero_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_batch_rows must not be negative"),
				 errhint("Pass 0 to remove the cap.")));
	if (value <= 0 && !zero_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_batch_rows must be positive"),
				 errhint("Pass NULL for batches of any size.")));
	return value;
}

Datum
microbatch_create_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	Oid			source;
	Interval   *batch_interval;
	char	   *start_from = "beginning";
	MbPipeline	pipeline;
	MbPipeline	existing;
	MbCall		call;

	mb_require_arg(fcinfo, 1, "source");
	mb_require_arg(fcinfo, 2, "batch_interval");
	source = PG_GETARG_OID(1);
	batch_interval = PG_GETARG_INTERVAL_P(2);

	memset(&pipeline, 0, sizeof(pipeline));
	if (strlen(name) + strlen(MB_BATCH_VIEW_SUFFIX) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("pipeline name \"%s\" is too long", name),
				 errdetail("Pipeline names have at most %d bytes, so that the name of the batch view, %s.<pipeline>%s, fits.",
						   (int) (NAMEDATALEN - 1 - strlen(MB_BATCH_VIEW_SUFFIX)),
						   MB_SCHEMA, MB_BATCH_VIEW_SUFFIX)));
	mb_check_batch_interval(batch_interval);
	if (!PG_ARGISNULL(3))
		pipeline.max_batch_rows = mb_max_batch_rows_arg(fcinfo, 3, false);
	if (!PG_ARGISNULL(4))
		start_from = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (strcmp(start_from, "beginning") != 0 && strcmp(start_from, "now") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid start_from \"%s\"", start_from),
				 errhint("start_from is 'beginning' (every row in the table) or 'now' (rows committed from now on).")));
	if (!PG_ARGISNULL(5))
		(void) mb_check_batch_timeout(PG_GETARG_INTERVAL_P(5), false);

	mb_check_may_change("create_pipeline()");
	mb_call_begin(&call);
	if (mb_pipeline_by_name(name, &existing))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("pipeline \"%s\" already exists", name)));
	mb_source_check_usable(source, call.caller);
	mb_check_role_may_run(call.caller, name);
	{
		ListCell   *lc;

		/* no retention step removes the rows the first batch starts from */
		foreach(lc, mb_hierarchy_roots(source))
			(void) mb_lock_hierarchy_retention(lfirst_oid(lc), ShareLock, true);
	}
	mb_source_prepare(source, call.caller, strcmp(start_from, "now") == 0);

	pipeline.id = mb_pipeline_next_id();
	pipeline.name = name;
	pipeline.source = source;
	pipeline.owner = call.caller;
	pipeline.system_identifier = GetSystemIdentifier();
	pipeline.batch_view = mb_batch_view_create(&pipeline);
	mb_pipeline_insert(&pipeline, IntervalPGetDatum(batch_interval),
					   PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5),
					   PG_ARGISNULL(5));
	if (strcmp(start_from, "now") == 0)
		mb_skip_existing_rows(&pipeline);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();
	mb_warn_if_no_workers();

	PG_RETURN_VOID();
}

Datum
microbatch_drop_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_may_change("drop_pipeline()");
	mb_call_begin(&call);
	/* waits for a running batch of the pipeline to end */
	pipeline = mb_pipeline_lock(name, call.caller);
	mb_pipeline_delete(pipeline->id);
	mb_batch_view_drop(pipeline);
	mb_source_release(pipeline, call.caller);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

/*
 * Validate a pipeline's expectations and audits again, as role, against
 * its batch view as it is now: after the view was rebuilt, or before the
 * pipeline goes to another owner.
 */
static void
mb_check_error_context(void *arg)
{
	errcontext("%s", (const char *) arg);
}

static void
mb_checks_validate(const MbPipeline *pipeline, Oid role)
{
	ListCell   *lc;
	ErrorContextCallback callback;

	callback.callback = mb_check_error_context;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	foreach(lc, mb_expectation_list(pipeline->id))
	{
		MbExpectation *expectation = lfirst(lc);

		callback.arg = psprintf("expectation \"%s\" of pipeline \"%s\"",
								expectation->name, pipeline->name);
		/* stored with every name qualified */
		(void) mb_expectation_validate(pipeline, expectation->predicate, role,
									   "pg_catalog");
	}
	foreach(lc, mb_audit_list(pipeline->id))
	{
		MbAudit    *audit = lfirst(lc);

		callback.arg = psprintf("audit \"%s\" of pipeline \"%s\"",
								audit->name, pipeline->name);
		mb_audit_validate(audit->query, role, audit->search_path);
	}
	error_context_stack = callback.previous;
}

/*
 * Rebuild the batch view after columns of the source changed, and give the
 * source's tables the guards they lack (new partitions, for instance).  The
 * pipeline's owner may, and so may the source's owner, who alone may guard
 * the tables when the pipeline was given to another role.
 */
Datum
microbatch_refresh_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;
	AclResult	acl;

	mb_check_may_change("refresh_pipeline()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_get(name);
	mb_pipeline_check_source_exists(pipeline);
	if (!pg_class_ownercheck(pipeline->source, call.caller))
		mb_pipeline_check_owner(pipeline, call.caller);
	mb_pipeline_lock_known(pipeline);
	mb_pipeline_check_source_exists(pipeline);
	acl = pg_class_aclcheck(pipeline->source, pipeline->owner, ACL_SELECT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, get_rel_name(pipeline->source));
	mb_source_check_unguarded(pipeline->source);
	mb_source_guard(pipeline->source, call.caller, false);
	mb_batch_view_drop(pipeline);
	pipeline->batch_view = mb_batch_view_create(pipeline);
	mb_pipeline_set_batch_view(pipeline->id, pipeline->batch_view);
	CommandCounterIncrement();
	mb_checks_validate(pipeline, pipeline->owner);
	mb_call_end(&call);

	PG_RETURN_VOID();
}

/* NULL keeps a setting; max_batch_rows or batch_timeout 0 returns it to its default */
Datum
microbatch_alter_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;
	NullableDatum batch_interval = {PG_GETARG_DATUM(1), PG_ARGISNULL(1)};
	NullableDatum max_batch_rows = {PG_GETARG_DATUM(2), PG_ARGISNULL(2)};
	NullableDatum batch_timeout = {PG_GETARG_DATUM(3), PG_ARGISNULL(3)};

	if (!batch_interval.isnull)
		mb_check_batch_interval(PG_GETARG_INTERVAL_P(1));
	if (!max_batch_rows.isnull)
		(void) mb_max_batch_rows_arg(fcinfo, 2, true);
	if (!batch_timeout.isnull)
		(void) mb_check_batch_timeout(PG_GETARG_INTERVAL_P(3), true);

	mb_check_may_change("alter_pipeline()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	mb_pipeline_alter(pipeline->id, batch_interval, max_batch_rows, batch_timeout);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();
	mb_warn_if_no_workers();

	PG_RETURN_VOID();
}

/*
 * Give a pipeline to another role, as ALTER ... OWNER TO does: the caller
 * has the current owner's privileges and may become the new owner, who must
 * be able to run the pipeline (log in, read the source, run every
 * transform: each is validated again as the new owner).
 */
Datum
microbatch_alter_pipeline_owner(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	Oid			new_owner;
	MbPipeline *pipeline;
	MbCall		call;
	AclResult	acl;
	ListCell   *lc;

	mb_require_arg(fcinfo, 1, "new_owner");
	new_owner = PG_GETARG_OID(1);

	mb_check_may_change("alter_pipeline_owner()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	check_is_member_of_role(call.caller, new_owner);
	mb_check_role_may_run(new_owner, name);
	mb_pipeline_check_source_exists(pipeline);
	acl = pg_class_aclcheck(pipeline->source, new_owner, ACL_SELECT);
	if (acl != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("new owner \"%s\" of pipeline \"%s\" may not read its source %s",
						GetUserNameFromId(new_owner, false), name,
						get_rel_name(pipeline->source))));
	/* the transforms read the view as its new owner */
	mb_batch_view_set_owner(pipeline, new_owner);
	CommandCounterIncrement();
	foreach(lc, mb_transform_list(pipeline->id))
	{
		MbTransform *transform = lfirst(lc);

		mb_transform_validate(transform->command, new_owner, transform->search_path,
							  "transform command");
	}
	mb_checks_validate(pipeline, new_owner);
	mb_pipeline_set_owner(pipeline->id, new_owner);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

/*
 * Without waiting for a running batch, which counts its outcome against
 * the row as this leaves it (see mb_account_outcome()).
 */
static void
mb_set_state(FunctionCallInfo fcinfo, const char *state, const char *function)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_may_change(function);
	mb_call_begin(&call);
	pipeline = mb_pipeline_get(name);
	mb_pipeline_check_owner(pipeline, call.caller);
	mb_pipeline_set_state(pipeline->id, state);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();
}

Datum
microbatch_pause_pipeline(PG_FUNCTION_ARGS)
{
	mb_set_state(fcinfo, "paused", "pause_pipeline()");
	PG_RETURN_VOID();
}

Datum
microbatch_resume_pipeline(PG_FUNCTION_ARGS)
{
	mb_set_state(fcinfo, "enabled", "resume_pipeline()");
	mb_warn_if_no_workers();
	PG_RETURN_VOID();
}

Datum
microbatch_rebind_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;

	mb_check_may_change("rebind_pipeline()");
	mb_call_begin(&call);
	mb_rebind_pipeline(name, call.caller);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

static const char *
mb_layer_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *layer;

	mb_require_arg(fcinfo, argno, "layer");
	layer = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	for (int i = 0; i < MB_NLAYERS; i++)
		if (strcmp(layer, mb_layers[i]) == 0)
			return mb_layers[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid layer \"%s\"", layer),
			 errhint("The layers are bronze, silver and gold; a batch runs them in that order.")));
	pg_unreachable();
}

Datum
microbatch_add_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	const char *layer = mb_layer_arg(fcinfo, 2);
	char	   *command;
	MbPipeline *pipeline;
	MbCall		call;

	mb_require_arg(fcinfo, 3, "command");
	command = text_to_cstring(PG_GETARG_TEXT_PP(3));

	mb_check_may_change("add_transform()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (mb_transform_exists(pipeline->id, transform))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("transform \"%s\" of pipeline \"%s\" already exists",
						transform, name),
				 errhint("Remove it first with microbatch.remove_transform().")));
	mb_transform_validate(command, pipeline->owner, call.caller_search_path,
						  "transform command");
	mb_transform_insert(pipeline->id, transform, layer, command,
						call.caller_search_path);
	mb_call_end(&call);

	PG_RETURN_VOID();
}

Datum
microbatch_remove_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_may_change("remove_transform()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (!mb_transform_delete(pipeline->id, transform))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transform \"%s\" of pipeline \"%s\" does not exist",
						transform, name),
				 errhint("The view microbatch.transforms lists the transforms of each pipeline.")));
	mb_call_end(&call);

	PG_RETURN_VOID();
}

/*
 * A failed batch is rolled back and recorded in the ledger.  Raising its
 * error would roll the record back too, so it is reported as a WARNING, with
 * the original SQLSTATE, and the function returns NULL.
 */
Datum
microbatch_run_batch(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbBatchResult result;
	MbCall		call;

	mb_call_begin(&call);
	result = mb_run_batch(name, call.caller, true, NULL);
	/* before mb_call_end(), which frees the error with SPI's memory */
	if (result.status == MB_BATCH_FAILED)
		ereport(WARNING,
				(errcode(result.error->sqlerrcode),
				 errmsg("batch " INT64_FORMAT " of pipeline \"%s\" failed: %s",
						result.batch_id, name, result.error->message),
				 result.error->detail ? errdetail_internal("%s", result.error->detail) : 0,
				 result.error->context ? errcontext("%s", result.error->context) : 0,
				 errhint("The batch was rolled back and recorded in microbatch.batches; the next run retries batch " INT64_FORMAT ".",
						 result.batch_id)));
	mb_call_end(&call);

	if (result.status != MB_BATCH_COMMITTED)
		PG_RETURN_NULL();
	PG_RETURN_INT64(result.batch_id);
}

Datum
microbatch_replay_batch(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	int64		rows;
	MbCall		call;

	mb_require_arg(fcinfo, 1, "batch_id");
	mb_call_begin(&call);
	rows = mb_replay_batch(name, PG_GETARG_INT64(1), call.caller);
	mb_call_end(&call);

	PG_RETURN_INT64(rows);
}

Datum
microbatch_rows_waiting(PG_FUNCTION_ARGS)
{
	char	   *name = NameStr(*PG_GETARG_NAME(0));
	MbBacklog	backlog;
	bool		known;
	MbCall		call;

	mb_call_begin(&call);
	known = mb_rows_waiting(name, call.caller, false, &backlog);
	mb_call_end(&call);

	if (!known)
		PG_RETURN_NULL();
	PG_RETURN_INT64(backlog.rows);
}

/*
 * backlog(pipeline): rows_waiting(), with the oldest waiting row's
 * tracking xid and, by commit timestamps, its commit time; all NULL when
 * rows_waiting() would be.
 */
Datum
microbatch_backlog(PG_FUNCTION_ARGS)
{
	char	   *name = NameStr(*PG_GETARG_NAME(0));
	MbBacklog	backlog;
	bool		known;
	MbCall		call;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(&backlog, 0, sizeof(backlog));
	mb_call_begin(&call);
	known = mb_rows_waiting(name, call.caller, true, &backlog);
	mb_call_end(&call);

	values[0] = Int64GetDatum(backlog.rows);
	values[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(backlog.oldest_xid));
	values[2] = TimestampTzGetDatum(backlog.oldest_commit);
	nulls[0] = !known;
	nulls[1] = !known || backlog.oldest_xid == 0;
	nulls[2] = !known || backlog.oldest_commit == 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* The action of an expectation or an audit, among the allowed ones */
static const char *
mb_action_arg(FunctionCallInfo fcinfo, int argno, const char *argname,
			  bool drop_ok)
{
	char	   *action;

	mb_require_arg(fcinfo, argno, argname);
	action = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(action, "warn") == 0 || strcmp(action, "fail") == 0 ||
		(drop_ok && strcmp(action, "drop") == 0))
		return action;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s \"%s\"", argname, action),
			 drop_ok ?
			 errhint("An expectation warns (keeps and counts the row), drops (quarantines it) or fails (rolls the batch back).") :
			 errhint("An audit fails (rolls the batch back) or warns (records the violations).")));
	pg_unreachable();
}

/*
 * An expectation applies from the next batch: the pipeline's lock waits for
 * a running one.  The predicate is checked against the batch view, which
 * must match the source.
 */
Datum
microbatch_add_expectation(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *expectation = mb_name_arg(fcinfo, 1, "expectation");
	char	   *predicate;
	const char *action = mb_action_arg(fcinfo, 3, "on_violation", true);
	MbPipeline *pipeline;
	MbCall		call;

	mb_require_arg(fcinfo, 2, "predicate");
	predicate = text_to_cstring(PG_GETARG_TEXT_PP(2));

	mb_check_may_change("add_expectation()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (mb_expectation_exists(pipeline->id, expectation))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("expectation \"%s\" of pipeline \"%s\" already exists",
						expectation, name),
				 errhint("Remove it first with microbatch.remove_expectation().")));
	if (list_length(mb_expectation_list(pipeline->id)) >= MB_MAX_EXPECTATIONS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("pipeline \"%s\" cannot have more than %d expectations",
						name, MB_MAX_EXPECTATIONS),
				 errhint("Combine checks with AND into one expectation.")));
	mb_pipeline_check_source_exists(pipeline);
	mb_pipeline_check_relations(pipeline);
	mb_expectation_insert(pipeline->id, expectation,
						  mb_expectation_validate(pipeline, predicate,
												  pipeline->owner,
												  call.caller_search_path),
						  action);
	mb_call_end(&call);

	PG_RETURN_VOID();
}

Datum
microbatch_remove_expectation(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *expectation = mb_name_arg(fcinfo, 1, "expectation");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_may_change("remove_expectation()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (!mb_expectation_delete(pipeline->id, expectation))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("expectation \"%s\" of pipeline \"%s\" does not exist",
						expectation, name),
				 errhint("The view microbatch.expectations lists the expectations of each pipeline.")));
	mb_call_end(&call);

	PG_RETURN_VOID();
}

Datum
microbatch_add_audit(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *audit = mb_name_arg(fcinfo, 1, "audit");
	const char *layer = mb_layer_arg(fcinfo, 2);
	char	   *query;
	const char *action = mb_action_arg(fcinfo, 4, "on_failure", false);
	MbPipeline *pipeline;
	MbCall		call;

	mb_require_arg(fcinfo, 3, "query");
	query = text_to_cstring(PG_GETARG_TEXT_PP(3));

	mb_check_may_change("add_audit()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (mb_audit_exists(pipeline->id, audit))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("audit \"%s\" of pipeline \"%s\" already exists",
						audit, name),
				 errhint("Remove it first with microbatch.remove_audit().")));
	mb_audit_validate(query, pipeline->owner, call.caller_search_path);
	mb_audit_insert(pipeline->id, audit, layer, query, action,
					call.caller_search_path);
	mb_call_end(&call);

	PG_RETURN_VOID();
}

Datum
microbatch_remove_audit(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *audit = mb_name_arg(fcinfo, 1, "audit");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_may_change("remove_audit()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (!mb_audit_delete(pipeline->id, audit))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("audit \"%s\" of pipeline \"%s\" does not exist",
						audit, name),
				 errhint("The view microbatch.audits lists the audits of each pipeline.")));
	mb_call_end(&call);

	PG_RETURN_VOID();
}

/* The quarantine holds source rows: only the owner's privileges clear it */
Datum
microbatch_clear_quarantine(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	int64		before_batch = 0;
	int64		cleared;
	MbPipeline *pipeline;
	MbCall		call;

	if (!PG_ARGISNULL(1))
	{
		before_batch = PG_GETARG_INT64(1);
		if (before_batch <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("before_batch must be positive"),
					 errhint("Pass NULL to clear the whole quarantine of the pipeline.")));
	}

	mb_check_may_change("clear_quarantine()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_get(name);
	mb_pipeline_check_owner(pipeline, call.caller);
	cleared = mb_quarantine_clear(pipeline->id, before_batch);
	mb_call_end(&call);

	PG_RETURN_INT64(cleared);
}

Datum
microbatch_replace_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	char	   *command;
	MbPipeline *pipeline;
	MbCall		call;
	int32		version;

	mb_require_arg(fcinfo, 2, "command");
	command = text_to_cstring(PG_GETARG_TEXT_PP(2));

	mb_check_may_change("replace_transform()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (!mb_transform_exists(pipeline->id, transform))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transform \"%s\" of pipeline \"%s\" does not exist",
						transform, name),
				 errhint("Add it with microbatch.add_transform().")));
	mb_transform_validate(command, pipeline->owner, call.caller_search_path,
						  "transform command");
	version = mb_transform_replace(pipeline->id, transform, command,
								   call.caller_search_path);
	mb_call_end(&call);

	PG_RETURN_INT32(version);
}

Datum
microbatch_reset_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;
	int64		batch_id;

	mb_check_may_change("reset_pipeline()");
	mb_call_begin(&call);
	batch_id = mb_reset_pipeline(name, call.caller);
	mb_call_end(&call);

	PG_RETURN_INT64(batch_id);
}

/* An interval argument that must not be negative, or NULL */
static Interval *
mb_retain_arg(FunctionCallInfo fcinfo, int argno)
{
	Interval   *retain;
	Interval	zero;

	if (PG_ARGISNULL(argno))
		return NULL;
	retain = PG_GETARG_INTERVAL_P(argno);
	memset(&zero, 0, sizeof(zero));
	if (DatumGetBool(DirectFunctionCall2(interval_lt, IntervalPGetDatum(retain),
										 IntervalPGetDatum(&zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retain must not be negative"),
				 errhint("Pass NULL to keep everything.")));
	return retain;
}

Datum
microbatch_set_history_retention(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	Interval   *retain = mb_retain_arg(fcinfo, 1);
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_may_change("set_history_retention()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	mb_pipeline_set_history_retention(pipeline->id, retain);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

Datum
microbatch_trim_history(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;
	int64		removed;

	mb_check_may_change("trim_history()");
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	removed = mb_trim_history(pipeline);
	mb_call_end(&call);

	PG_RETURN_INT64(removed);
}

/* A table argument: it exists, and the caller has its owner's privileges */
static Oid
mb_owned_table_arg(FunctionCallInfo fcinfo, int argno, Oid caller)
{
	Oid			relid;

	mb_require_arg(fcinfo, argno, "source");
	relid = PG_GETARG_OID(argno);
	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (!pg_class_ownercheck(relid, caller))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));
	return relid;
}

/*
 * Give a source table a B-tree or a BRIN tracking index.  The table's owner
 * may, on a plain table that is not a partition (a partition's index
 * belongs to its partitioned table's); a BRIN index only on one without
 * tables below it.  The locks of the pipelines that read the table come
 * first, as everywhere: no batch of theirs runs while the index changes.
 */
Datum
microbatch_set_tracking_index(PG_FUNCTION_ARGS)
{
	char	   *method;
	MbTrackingIndex kind = MB_TRACKING_INDEX_NONE;
	Oid			source;
	Oid			index;
	Relation	rel;
	bool		has_members;
	bool		partition;
	char		relkind;
	List	   *pipelines;
	ListCell   *lc;
	MbCall		call;

	mb_require_arg(fcinfo, 1, "method");
	method = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strcmp(method, "btree") == 0)
		kind = MB_TRACKING_INDEX_BTREE;
	else if (strcmp(method, "brin") == 0)
		kind = MB_TRACKING_INDEX_BRIN;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tracking index method \"%s\"", method),
				 errhint("The method is 'btree' (the default) or 'brin'.")));

	mb_check_may_change("set_tracking_index()");
	mb_call_begin(&call);
	source = mb_owned_table_arg(fcinfo, 0, call.caller);
	pipelines = mb_pipelines_on_sources(mb_table_and_ancestors(source));
	if (pipelines == NIL || get_attnum(source, MB_TRACKING_COLUMN) == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not the source of a pipeline",
						get_rel_name(source)),
				 errhint("Create a pipeline on it first: that adds the tracking column and its index.")));
	foreach(lc, pipelines)
		mb_pipeline_lock_known((MbPipeline *) lfirst(lc));

	rel = table_open(source, AccessShareLock);
	relkind = rel->rd_rel->relkind;
	partition = rel->rd_rel->relispartition;
	has_members = find_inheritance_children(source, AccessShareLock) != NIL;
	if (relkind != RELKIND_RELATION || partition)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot change the tracking index of table \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail(partition ? "It is a partition: its index belongs to its partitioned table's." :
						   "It is a partitioned table: its partitions have its B-tree.")));
	if (kind == MB_TRACKING_INDEX_BRIN && has_members)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot give table \"%s\" a BRIN tracking index",
						RelationGetRelationName(rel)),
				 errdetail("It has inheritance children; only a table without tables below it can have one.")));
	table_close(rel, NoLock);

	index = mb_tracking_index_set(source, kind, call.caller);
	mb_call_end(&call);

	PG_RETURN_OID(index);
}

Datum
microbatch_set_retention(PG_FUNCTION_ARGS)
{
	Interval   *retain = mb_retain_arg(fcinfo, 1);
	Oid			source;
	MbCall		call;

	mb_check_may_change("set_retention()");
	mb_call_begin(&call);
	source = mb_owned_table_arg(fcinfo, 0, call.caller);
	if (retain != NULL)
	{
		List	   *members = mb_hierarchy_members(source, AccessShareLock);
		List	   *tables = list_concat_unique_oid(list_copy(members),
													mb_table_and_ancestors(source));
		ListCell   *lc;

		if (mb_pipelines_on_sources(tables) == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no pipeline reads table \"%s\"", get_rel_name(source)),
					 errhint("Retention removes the rows pipelines have processed: create a pipeline on the table, or on a table above it, first.")));
		foreach(lc, mb_retention_list(tables))
		{
			MbRetention *other = lfirst(lc);

			if (other->source != source && other->retain != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("table \"%s\" shares rows with table \"%s\", which has a retention",
								get_rel_name(source), get_rel_name(other->source)),
						 errhint("One retention applies to a whole partition tree: change the one of \"%s\", or remove it with microbatch.set_retention(..., NULL).",
								 get_rel_name(other->source))));
		}
	}
	mb_retention_set(source, retain);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

Datum
microbatch_retention_now(PG_FUNCTION_ARGS)
{
	Oid			source;
	MbCall		call;
	int64		removed;

	mb_check_may_change("retention_now()");
	mb_call_begin(&call);
	source = mb_owned_table_arg(fcinfo, 0, call.caller);
	removed = mb_retention_now(source, call.caller);
	mb_call_end(&call);

	PG_RETURN_INT64(removed);
}

/*
 * What the view microbatch.retention shows; nulls for a table the caller
 * may not see, or that is gone, so that the view never fails.
 */
Datum
microbatch_retention_state(PG_FUNCTION_ARGS)
{
	Oid			source = PG_GETARG_OID(0);
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {true, true, true, true};
	MbCall		call;
	uint64		horizon;
	char	   *holder;
	const char *why;
	int64		removable;
	MemoryContext caller_context = CurrentMemoryContext;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	mb_call_begin(&call);
	if (!mb_window_is_active() && get_rel_name(source) != NULL &&
		pg_class_ownercheck(source, call.caller) &&
		mb_retention_state(source, &horizon, &holder, &why, &removable))
	{
		/* out of SPI's memory, which the end of the call frees */
		MemoryContext old = MemoryContextSwitchTo(caller_context);

		if (horizon > U64FromFullTransactionId(FirstNormalFullTransactionId))
		{
			values[0] = FullTransactionIdGetDatum(FullTransactionIdFromU64(horizon));
			nulls[0] = false;
		}
		if (holder != NULL)
		{
			values[1] = DirectFunctionCall1(namein, CStringGetDatum(holder));
			values[2] = CStringGetTextDatum(why);
			nulls[1] = nulls[2] = false;
		}
		values[3] = Int64GetDatum(removable);
		nulls[3] = false;
		MemoryContextSwitchTo(old);
	}
	mb_call_end(&call);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

Datum
microbatch_preview_batch(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MbCall		call;
	List	   *steps;
	ListCell   *lc;
	int			stepno = 0;

	MemoryContext caller_context;

	InitMaterializedSRF(fcinfo, 0);
	caller_context = CurrentMemoryContext;
	mb_call_begin(&call);
	steps = mb_preview_batch(name, call.caller, caller_context);
	mb_call_end(&call);

	foreach(lc, steps)
	{
		MbStep	   *step = lfirst(lc);
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		Interval   *duration = palloc0(sizeof(Interval));

		duration->time = step->usecs;
		values[0] = Int32GetDatum(stepno++);
		values[1] = CStringGetTextDatum(step->kind);
		if (step->name)
			values[2] = DirectFunctionCall1(namein, CStringGetDatum(step->name));
		else
			nulls[2] = true;
		if (step->layer)
			values[3] = CStringGetTextDatum(step->layer);
		else
			nulls[3] = true;
		values[4] = Int64GetDatum(step->rows);
		values[5] = IntervalPGetDatum(duration);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Distributed pipelines (citus.c).  The coordinator's functions check their
 * arguments as create_pipeline() and add_transform() do, then the workers'
 * functions make the same calls for every shard pipeline of the node.
 */

/*
 * Longest name of a distributed pipeline: its shard pipelines are named
 * <pipeline>_<shard id> (a bigint).
 */
#define MB_SHARD_SUFFIX_MAX 21

static void
mb_check_distributed_name(const char *name)
{
	if (strlen(name) + MB_SHARD_SUFFIX_MAX + strlen(MB_BATCH_VIEW_SUFFIX) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("distributed pipeline name \"%s\" is too long", name),
				 errdetail("Distributed pipeline names have at most %d bytes, so that the batch views of its shard pipelines, %s.<pipeline>_<shard id>%s, fit.",
						   (int) (NAMEDATALEN - 1 - MB_SHARD_SUFFIX_MAX - strlen(MB_BATCH_VIEW_SUFFIX)),
						   MB_SCHEMA, MB_BATCH_VIEW_SUFFIX)));
}

static const char *
mb_arg_text(FunctionCallInfo fcinfo, int argno, Oid type)
{
	Oid			output;
	bool		varlena;

	if (PG_ARGISNULL(argno))
		return NULL;
	getTypeOutputInfo(type, &output, &varlena);
	return OidOutputFunctionCall(output, PG_GETARG_DATUM(argno));
}

Datum
microbatch_create_distributed_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *start_from = "beginning";
	MbCall		call;
	int64		created;

	mb_require_arg(fcinfo, 1, "source");
	mb_require_arg(fcinfo, 2, "batch_interval");
	mb_check_distributed_name(name);
	mb_check_batch_interval(PG_GETARG_INTERVAL_P(2));
	if (!PG_ARGISNULL(3))
		(void) mb_max_batch_rows_arg(fcinfo, 3, false);
	if (!PG_ARGISNULL(4))
		start_from = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (strcmp(start_from, "beginning") != 0 && strcmp(start_from, "now") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid start_from \"%s\"", start_from),
				 errhint("start_from is 'beginning' (every row in the table) or 'now' (rows committed from now on).")));
	if (!PG_ARGISNULL(5))
		(void) mb_check_batch_timeout(PG_GETARG_INTERVAL_P(5), false);

	mb_check_may_change("create_distributed_pipeline()");
	mb_call_begin(&call);
	mb_check_role_may_run(call.caller, name);
	created = mb_distributed_create(&call, name, PG_GETARG_OID(1),
									mb_arg_text(fcinfo, 2, INTERVALOID),
									mb_arg_text(fcinfo, 3, INT8OID),
									start_from,
									mb_arg_text(fcinfo, 5, INTERVALOID));
	mb_call_end(&call);

	PG_RETURN_INT64(created);
}

Datum
microbatch_drop_distributed_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;
	int64		dropped;

	mb_check_may_change("drop_distributed_pipeline()");
	mb_call_begin(&call);
	dropped = mb_distributed_drop(&call, name);
	mb_call_end(&call);

	PG_RETURN_INT64(dropped);
}

Datum
microbatch_add_distributed_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	const char *layer = mb_layer_arg(fcinfo, 2);
	MbCall		call;
	int64		added;

	mb_require_arg(fcinfo, 3, "command");
	mb_check_may_change("add_distributed_transform()");
	mb_call_begin(&call);
	added = mb_distributed_add_transform(&call, name, transform, layer,
										 text_to_cstring(PG_GETARG_TEXT_PP(3)));
	mb_call_end(&call);

	PG_RETURN_INT64(added);
}

Datum
microbatch_remove_distributed_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	MbCall		call;
	int64		removed;

	mb_check_may_change("remove_distributed_transform()");
	mb_call_begin(&call);
	removed = mb_distributed_remove_transform(&call, name, transform);
	mb_call_end(&call);

	PG_RETURN_INT64(removed);
}

Datum
microbatch_create_shard_pipelines(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	NullableDatum args[4];
	MbCall		call;
	int64		created;

	mb_require_arg(fcinfo, 1, "shards");
	mb_require_arg(fcinfo, 2, "batch_interval");
	mb_check_distributed_name(name);
	for (int a = 0; a < 4; a++)
	{
		args[a].isnull = PG_ARGISNULL(a + 2);
		args[a].value = args[a].isnull ? (Datum) 0 : PG_GETARG_DATUM(a + 2);
	}
	mb_check_may_change("create_shard_pipelines()");
	mb_call_begin(&call);
	created = mb_shard_pipelines_create(&call, name, PG_GETARG_ARRAYTYPE_P(1), args);
	mb_call_end(&call);

	PG_RETURN_INT64(created);
}

Datum
microbatch_drop_shard_pipelines(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;
	int64		dropped;

	mb_check_may_change("drop_shard_pipelines()");
	mb_call_begin(&call);
	dropped = mb_shard_pipelines_drop(&call, name);
	mb_call_end(&call);

	PG_RETURN_INT64(dropped);
}

Datum
microbatch_add_shard_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	const char *layer = mb_layer_arg(fcinfo, 2);
	MbCall		call;
	int64		added;

	mb_require_arg(fcinfo, 3, "command");
	mb_require_arg(fcinfo, 4, "search_path");
	mb_check_may_change("add_shard_transform()");
	mb_call_begin(&call);
	added = mb_shard_transform_add(&call, name, transform, layer,
								   text_to_cstring(PG_GETARG_TEXT_PP(3)),
								   text_to_cstring(PG_GETARG_TEXT_PP(4)));
	mb_call_end(&call);

	PG_RETURN_INT64(added);
}

Datum
microbatch_remove_shard_transform(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	char	   *transform = mb_name_arg(fcinfo, 1, "transform");
	MbCall		call;
	int64		removed;

	mb_check_may_change("remove_shard_transform()");
	mb_call_begin(&call);
	removed = mb_shard_transform_remove(&call, name, transform);
	mb_call_end(&call);

	PG_RETURN_INT64(removed);
}

/* pause, resume and refresh: the same change on every shard pipeline */
static Datum
mb_distributed_simple_change(FunctionCallInfo fcinfo, const char *change,
							 const char *function)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;
	int64		changed;

	mb_check_may_change(function);
	mb_call_begin(&call);
	changed = mb_distributed_change(&call, name, change, NULL, NULL, NULL);
	mb_call_end(&call);

	PG_RETURN_INT64(changed);
}

Datum
microbatch_pause_distributed_pipeline(PG_FUNCTION_ARGS)
{
	return mb_distributed_simple_change(fcinfo, "pause", "pause_distributed_pipeline()");
}

Datum
microbatch_resume_distributed_pipeline(PG_FUNCTION_ARGS)
{
	return mb_distributed_simple_change(fcinfo, "resume", "resume_distributed_pipeline()");
}

Datum
microbatch_refresh_distributed_pipeline(PG_FUNCTION_ARGS)
{
	return mb_distributed_simple_change(fcinfo, "refresh", "refresh_distributed_pipeline()");
}

Datum
microbatch_alter_distributed_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;
	int64		changed;

	if (!PG_ARGISNULL(1))
		mb_check_batch_interval(PG_GETARG_INTERVAL_P(1));
	if (!PG_ARGISNULL(2))
		(void) mb_max_batch_rows_arg(fcinfo, 2, true);
	if (!PG_ARGISNULL(3))
		(void) mb_check_batch_timeout(PG_GETARG_INTERVAL_P(3), true);

	mb_check_may_change("alter_distributed_pipeline()");
	mb_call_begin(&call);
	changed = mb_distributed_change(&call, name, "alter",
									mb_arg_text(fcinfo, 1, INTERVALOID),
									mb_arg_text(fcinfo, 2, INT8OID),
									mb_arg_text(fcinfo, 3, INTERVALOID));
	mb_call_end(&call);

	PG_RETURN_INT64(changed);
}

Datum
microbatch_change_shard_pipelines(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	NullableDatum args[3];
	MbCall		call;
	int64		changed;

	mb_require_arg(fcinfo, 1, "change");
	for (int a = 0; a < 3; a++)
	{
		args[a].isnull = PG_ARGISNULL(a + 2);
		args[a].value = args[a].isnull ? (Datum) 0 : PG_GETARG_DATUM(a + 2);
	}
	mb_check_may_change("change_shard_pipelines()");
	mb_call_begin(&call);
	changed = mb_shard_pipelines_change(&call, name,
										text_to_cstring(PG_GETARG_TEXT_PP(1)), args);
	mb_call_end(&call);

	PG_RETURN_INT64(changed);
}

Datum
microbatch_distributed_pipeline_nodes(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbCall		call;

	InitMaterializedSRF(fcinfo, 0);
	mb_call_begin(&call);
	mb_distributed_status(&call, name, (ReturnSetInfo *) fcinfo->resultinfo);
	mb_call_end(&call);

	return (Datum) 0;
}
