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

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_create_pipeline);
PG_FUNCTION_INFO_V1(microbatch_drop_pipeline);
PG_FUNCTION_INFO_V1(microbatch_refresh_pipeline);
PG_FUNCTION_INFO_V1(microbatch_alter_pipeline);
PG_FUNCTION_INFO_V1(microbatch_pause_pipeline);
PG_FUNCTION_INFO_V1(microbatch_resume_pipeline);
PG_FUNCTION_INFO_V1(microbatch_add_transform);
PG_FUNCTION_INFO_V1(microbatch_remove_transform);
PG_FUNCTION_INFO_V1(microbatch_run_batch);
PG_FUNCTION_INFO_V1(microbatch_replay_batch);
PG_FUNCTION_INFO_V1(microbatch_rows_waiting);

static const char *const layers[] = {"bronze", "silver", "gold"};

static void
mb_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
}

/* A transform must not change the pipeline whose batch it is part of */
static void
mb_check_not_in_batch(void)
{
	if (mb_window_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot change pipelines inside a transform")));
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

static void
mb_check_interval(Interval *batch_interval)
{
	Interval   *zero = palloc0(sizeof(Interval));

	if (DatumGetBool(DirectFunctionCall2(interval_lt,
										 IntervalPGetDatum(batch_interval),
										 IntervalPGetDatum(zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_interval must not be negative")));
}

Datum
microbatch_create_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	Oid			source;
	Interval   *batch_interval;
	int64		max_batch_rows = 0;
	MbPipeline	pipeline;
	MbPipeline	existing;
	MbCall		call;

	mb_require_arg(fcinfo, 1, "source");
	mb_require_arg(fcinfo, 2, "batch_interval");
	source = PG_GETARG_OID(1);
	batch_interval = PG_GETARG_INTERVAL_P(2);

	if (strlen(name) + strlen(MB_BATCH_VIEW_SUFFIX) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("pipeline name \"%s\" is too long", name),
				 errdetail("Pipeline names have at most %d bytes, so that the name of the batch view, %s.<pipeline>%s, fits.",
						   (int) (NAMEDATALEN - 1 - strlen(MB_BATCH_VIEW_SUFFIX)),
						   MB_SCHEMA, MB_BATCH_VIEW_SUFFIX)));
	mb_check_interval(batch_interval);
	if (!PG_ARGISNULL(3))
	{
		max_batch_rows = PG_GETARG_INT64(3);
		if (max_batch_rows <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_batch_rows must be positive"),
					 errhint("Pass NULL for batches of any size.")));
	}

	mb_check_not_in_batch();
	mb_call_begin(&call);
	if (mb_pipeline_by_name(name, &existing))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("pipeline \"%s\" already exists", name)));
	mb_source_check_usable(source, call.caller);
	mb_source_prepare(source, call.caller);

	memset(&pipeline, 0, sizeof(pipeline));
	pipeline.id = mb_pipeline_next_id();
	pipeline.name = name;
	pipeline.source = source;
	pipeline.owner = call.caller;
	pipeline.batch_view = mb_batch_view_create(&pipeline);
	mb_pipeline_insert(pipeline.id, name, source, pipeline.batch_view,
					   pipeline.owner, IntervalPGetDatum(batch_interval),
					   max_batch_rows);
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

	mb_check_not_in_batch();
	mb_call_begin(&call);
	/* waits for a running batch of the pipeline to end */
	pipeline = mb_pipeline_lock(name, call.caller);
	mb_batch_view_drop(pipeline);
	mb_source_release(pipeline);
	mb_pipeline_delete(pipeline->id);
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

/* Rebuild the batch view after columns of the source changed */
Datum
microbatch_refresh_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_not_in_batch();
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	mb_pipeline_check_source_exists(pipeline);
	mb_source_check_usable(pipeline->source, pipeline->owner);
	mb_batch_view_drop(pipeline);
	mb_pipeline_set_batch_view(pipeline->id, mb_batch_view_create(pipeline));
	mb_call_end(&call);

	PG_RETURN_VOID();
}

/* NULL keeps a setting; max_batch_rows 0 removes the cap */
Datum
microbatch_alter_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;

	if (!PG_ARGISNULL(1))
		mb_check_interval(PG_GETARG_INTERVAL_P(1));
	if (!PG_ARGISNULL(2) && PG_GETARG_INT64(2) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_batch_rows must not be negative"),
				 errhint("Pass 0 to remove the cap.")));

	mb_check_not_in_batch();
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	mb_pipeline_alter(pipeline->id,
					  PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1),
					  PG_ARGISNULL(1),
					  PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2),
					  PG_ARGISNULL(2));
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();

	PG_RETURN_VOID();
}

static void
mb_set_state(FunctionCallInfo fcinfo, const char *state)
{
	char	   *name = mb_name_arg(fcinfo, 0, "pipeline");
	MbPipeline *pipeline;
	MbCall		call;

	mb_check_not_in_batch();
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
	mb_set_state(fcinfo, "paused");
	PG_RETURN_VOID();
}

Datum
microbatch_resume_pipeline(PG_FUNCTION_ARGS)
{
	mb_set_state(fcinfo, "enabled");
	PG_RETURN_VOID();
}

static const char *
mb_layer_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *layer;

	mb_require_arg(fcinfo, argno, "layer");
	layer = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	for (int i = 0; i < lengthof(layers); i++)
		if (strcmp(layer, layers[i]) == 0)
			return layers[i];
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

	mb_check_not_in_batch();
	mb_call_begin(&call);
	pipeline = mb_pipeline_lock(name, call.caller);
	if (mb_transform_exists(pipeline->id, transform))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("transform \"%s\" of pipeline \"%s\" already exists",
						transform, name),
				 errhint("Remove it first with microbatch.remove_transform().")));
	mb_transform_validate(command, pipeline->owner, call.caller_search_path);
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

	mb_check_not_in_batch();
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
	result = mb_run_batch(name, call.caller);
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
	int64		rows;
	bool		known;
	MbCall		call;

	mb_call_begin(&call);
	known = mb_rows_waiting(name, call.caller, &rows);
	mb_call_end(&call);

	if (!known)
		PG_RETURN_NULL();
	PG_RETURN_INT64(rows);
}
