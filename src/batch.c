/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The batch engine: run a batch, replay a batch, count rows waiting.
 *
 * A batch is one transaction: the sweep, every transform and the ledger row
 * that records the batch commit together or not at all.  Its window starts
 * at the previous committed batch's upper snapshot, so the ledger is the
 * only state there is, and a batch that rolls back leaves its rows to the
 * next one.  Batches of one pipeline are serialised by the pipeline's lock
 * (catalog.c), taken before reading the ledger; a unique index on committed
 * batch ids backs that up.  Nothing is written, and no transaction id is
 * assigned, when a window holds no rows.
 *
 * The transforms run in a subtransaction, so that a failed batch rolls back
 * alone and its failure is recorded in the ledger; the next run retries the
 * same batch id.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "microbatch.h"
#include "worker.h"

static void
mb_check_can_run(void)
{
	if (mb_window_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot run a batch inside a transform")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot run a batch during recovery")));

	/*
	 * Under a transaction snapshot we could miss a batch committed after our
	 * snapshot was taken and sweep its rows again.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot run a batch in a transaction with a transaction snapshot"),
				 errdetail("The transaction isolation level is %s.",
						   IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Run it in a READ COMMITTED transaction.")));
}

/*
 * A snapshot taken now, as a pg_snapshot, in which our own transaction, if it
 * has an id, is still running.
 */
static Datum
mb_current_snapshot(void)
{
	Datum		snapshot;

	mb_worker_note_snapshot();
	PushActiveSnapshot(GetTransactionSnapshot());
	snapshot = OidFunctionCall0(F_PG_CURRENT_SNAPSHOT);
	PopActiveSnapshot();
	return mb_snapshot_add_running(snapshot, GetTopFullTransactionIdIfAny());
}

/* Batch statements are short and planned for small inputs: JIT never pays */
static int
mb_batch_settings(void)
{
	int			nest_level = NewGUCNestLevel();

	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest_level;
}

static char *
mb_batch_view_qualified(const MbPipeline *pipeline)
{
	return quote_qualified_identifier(MB_SCHEMA, get_rel_name(pipeline->batch_view));
}

static char *
mb_source_qualified(const MbPipeline *pipeline)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(pipeline->source)),
									  get_rel_name(pipeline->source));
}

/*
 * Run a query over the window as the pipeline's owner.  Returns false when it
 * yields no row or a null; otherwise the first column of its first row.
 *
 * These queries read only the window.  A bitmap scan of the tracking index,
 * with the window's bounds as index conditions, costs the window's size
 * whatever it is; a sequential scan, or a full scan of the index with the
 * bounds as a filter, costs the table's.  The planner, estimating with the
 * window it is planned for, would rightly pick one of the latter for a window
 * holding most of the table, and the plan is kept for the batches after; so
 * the bitmap scan is the only scan it is offered.
 */
static bool
mb_window_query(const MbPipeline *pipeline, MbWindow *window, MbPlanKind kind,
				const char *sql, int nargs, Oid *argtypes, Datum *args,
				Datum *result)
{
	SPIPlanPtr	plan;
	Oid			saved_user;
	int			saved_sec_context;
	int			nest_level;
	volatile bool found = false;

	mb_run_as(pipeline->owner, &saved_user, &saved_sec_context);
	nest_level = NewGUCNestLevel();
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_indexscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_indexonlyscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	plan = mb_batch_plan(mb_batch_plan_slot(kind, pipeline->id), sql, nargs,
						 argtypes, -1);
	mb_window_activate(window);
	PG_TRY();
	{
		if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the window of pipeline \"%s\"",
				 pipeline->name);
		if (SPI_processed > 0)
		{
			bool		isnull;

			*result = SPI_getbinval(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1, &isnull);
			found = !isnull;
		}
	}
	PG_FINALLY();
	{
		mb_window_deactivate();
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest_level);
	mb_run_as_end(saved_user, saved_sec_context);
	return found;
}

static int64
mb_window_count(const MbPipeline *pipeline, MbWindow *window)
{
	Datum		count;

	mb_window_query(pipeline, window, MB_PLAN_WINDOW_COUNT,
					psprintf("SELECT pg_catalog.count(*) FROM %s",
							 mb_batch_view_qualified(pipeline)),
					0, NULL, NULL, &count);
	return DatumGetInt64(count);
}

/*
 * The tracking xid of the n-th row (from 0) of the window in xid order, or
 * 0 if the window has fewer rows.
 */
static uint64
mb_window_nth_xid(const MbPipeline *pipeline, MbWindow *window, int64 n)
{
	Datum		xid;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(n)};

	if (!mb_window_query(pipeline, window, MB_PLAN_WINDOW_NTH_XID,
						 psprintf("SELECT s.%s FROM %s AS s WHERE %s "
								  "ORDER BY 1 OFFSET $1 LIMIT 1",
								  MB_TRACKING_COLUMN,
								  mb_source_qualified(pipeline),
								  mb_window_predicate(pipeline->id, "s")),
						 1, argtypes, args, &xid))
		return 0;
	return U64FromFullTransactionId(DatumGetFullTransactionId(xid));
}

/*
 * Cap the window at max_batch_rows by cutting it at a transaction boundary,
 * in xid order; the rest is left to the following batches.  A single
 * transaction larger than the cap stays whole.  Returns the window's rows.
 */
static int64
mb_window_capped_count(const MbPipeline *pipeline, MbWindow *window)
{
	if (pipeline->max_batch_rows > 0)
	{
		uint64		cut = mb_window_nth_xid(pipeline, window,
											pipeline->max_batch_rows);

		if (cut != 0)
		{
			if (cut == mb_window_nth_xid(pipeline, window, 0))
				cut++;
			window->xid_to = cut;
		}
	}
	return mb_window_count(pipeline, window);
}

/*
 * Find the next batch's window and count its rows.  After a capped batch the
 * rest of its window comes first; then a new window from the previous upper
 * snapshot to now.
 */
static int64
mb_next_window(const MbPipeline *pipeline, MbWindow *window)
{
	MbLastBatch last;
	bool		has_last = mb_last_batch(pipeline->id, &last);
	int64		batch_id = has_last ? last.batch_id + 1 : 1;
	int64		rows;

	if (has_last && last.xid_to != 0)
	{
		mb_window_init(window, pipeline->id, batch_id, last.lower_datum,
					   last.upper_datum, last.xid_to, 0);
		rows = mb_window_capped_count(pipeline, window);
		if (rows > 0)
			return rows;
	}

	mb_window_init(window, pipeline->id, batch_id,
				   has_last ? last.upper_datum : mb_empty_snapshot(),
				   mb_current_snapshot(), 0, 0);

	/* Transaction ids only grow; the history must come from another cluster */
	if (window->lower.xmax > window->upper.xmax)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("last batch of pipeline \"%s\" is ahead of this server's transaction ids",
						pipeline->name),
				 errdetail("The batch ended at transaction " UINT64_FORMAT "; this server is at " UINT64_FORMAT ".",
						   window->lower.xmax, window->upper.xmax),
				 errhint("Transaction ids cannot be compared across clusters: drop the pipeline and create it again.")));

	return mb_window_capped_count(pipeline, window);
}

/*
 * Run the transforms in a subtransaction.  Returns NULL on success, or the
 * error after rolling the subtransaction back.  Cancellation is not a batch
 * failure: it propagates.
 */
static ErrorData *
mb_transforms_run_guarded(const MbPipeline *pipeline, List *transforms,
						  MbWindow *window, int64 rows)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);

	PG_TRY();
	{
		mb_window_activate(window);
		mb_transforms_run(pipeline, transforms, window->batch_id, rows);
		mb_window_deactivate();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		mb_window_deactivate();
		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(error);
	}
	PG_END_TRY();

	return error;
}

/*
 * Count a batch's outcome.  After max_retries failed batches in a row the
 * pipeline is marked failed, once, with a WARNING and an alert; the first
 * success after failures, resumed or not, sends a recovery alert.  Returns
 * the failures in a row.
 */
static int32
mb_account_outcome(const MbPipeline *pipeline, int64 batch_id,
				   const ErrorData *error)
{
	int32		failures = error ? pipeline->consecutive_failures + 1 : 0;
	bool		now_failed;

	if (error == NULL && pipeline->consecutive_failures == 0 &&
		!pipeline->failure_alerted)
		return 0;

	now_failed = error != NULL && failures >= mb_max_retries &&
		strcmp(pipeline->state, "failed") != 0;
	mb_pipeline_set_failures(pipeline->id, failures, now_failed,
							 error != NULL && (pipeline->failure_alerted || now_failed));
	if (now_failed)
	{
		ereport(WARNING,
				(errmsg("pipeline \"%s\" is marked failed after %d failed batches in a row",
						pipeline->name, failures),
				 errdetail("Last error: %s (SQLSTATE %s).", error->message,
						   unpack_sql_state(error->sqlerrcode)),
				 errhint("Background workers no longer run it. Fix the cause, then run microbatch.resume_pipeline('%s').",
						 pipeline->name)));
		mb_notify_alert("failed", pipeline->name, batch_id, error, failures);
	}
	else if (error == NULL)
		mb_notify_alert("recovered", pipeline->name, batch_id, NULL, 0);
	return failures;
}

/*
 * Count an error that happened outside the transforms of a batch, in a
 * transaction of its own: the caller's was rolled back.  For batch workers.
 */
MbBatchResult
mb_record_failure(const char *pipeline_name, const ErrorData *error)
{
	MbBatchResult result = {MB_BATCH_FAILED, 0, 0, 0, 0, false, NULL};
	MbPipeline	pipeline;
	MbCall		call;

	StartTransactionCommand();
	mb_call_begin(&call);
	if (mb_pipeline_by_name(pipeline_name, &pipeline))
		result.failures = mb_account_outcome(&pipeline, 0, error);
	mb_call_end(&call);
	CommitTransactionCommand();
	return result;
}

/*
 * Process the next batch of a pipeline.  Expects mb_call_begin().
 */
MbBatchResult
mb_run_batch(const char *pipeline_name, Oid caller)
{
	MbBatchResult result = {MB_BATCH_EMPTY, 0, 0, 0, 0, false, NULL};
	MbPipeline *pipeline;
	MbWindow	window;
	List	   *transforms;
	int			nest_level;

	mb_check_can_run();
	pipeline = mb_pipeline_lock(pipeline_name, caller);
	mb_pipeline_check_relations(pipeline);

	/*
	 * Rows swept by a batch without transforms would be lost to them.  The
	 * rows committed so far wait for a transform, not for another run.
	 */
	transforms = mb_transform_list(pipeline->id);
	if (transforms == NIL)
	{
		mb_worker_note_snapshot();
		ereport(NOTICE,
				(errmsg("pipeline \"%s\" has no transforms, so no batch was run",
						pipeline->name),
				 errhint("Add transforms with microbatch.add_transform(); the rows wait for them.")));
		return result;
	}

	nest_level = mb_batch_settings();
	result.started_at = GetCurrentTimestamp();

	result.rows_in = mb_next_window(pipeline, &window);
	if (result.rows_in == 0)
	{
		AtEOXact_GUC(true, nest_level);
		return result;
	}

	result.batch_id = window.batch_id;
	mb_worker_report_batch(pipeline->name, window.batch_id);
	result.error = mb_transforms_run_guarded(pipeline, transforms, &window,
											 result.rows_in);
	result.status = result.error ? MB_BATCH_FAILED : MB_BATCH_COMMITTED;
	result.capped = window.xid_to != 0;

	mb_ledger_insert(&window, result.error == NULL, result.rows_in,
					 result.started_at, GetCurrentTimestamp(), result.error);
	result.failures = mb_account_outcome(pipeline, window.batch_id, result.error);
	AtEOXact_GUC(true, nest_level);
	return result;
}

/*
 * Run the current transforms over the input rows of a committed batch, with
 * current_batch_id() returning its id.  Errors propagate: a replay is one
 * statement of the caller's transaction.  Expects mb_call_begin().
 */
int64
mb_replay_batch(const char *pipeline_name, int64 batch_id, Oid caller)
{
	MbPipeline *pipeline;
	MbLastBatch batch;
	MbWindow	window;
	int64		rows;
	List	   *transforms;
	int			nest_level;

	mb_check_can_run();
	pipeline = mb_pipeline_lock(pipeline_name, caller);
	mb_pipeline_check_relations(pipeline);
	if (!mb_committed_batch(pipeline->id, batch_id, &batch))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline \"%s\" has no committed batch " INT64_FORMAT,
						pipeline->name, batch_id),
				 errhint("The view microbatch.batches lists the batches of each pipeline.")));

	nest_level = mb_batch_settings();
	mb_window_init(&window, pipeline->id, batch_id, batch.lower_datum,
				   batch.upper_datum, batch.xid_from, batch.xid_to);

	/* New rows never enter an old window, so equal counts mean equal rows */
	rows = mb_window_count(pipeline, &window);
	if (rows != batch.rows_in)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot replay batch " INT64_FORMAT " of pipeline \"%s\": some of its source rows are gone",
						batch_id, pipeline->name),
				 errdetail("The batch processed " INT64_FORMAT " rows; " INT64_FORMAT " of them are still in the source table.",
						   batch.rows_in, rows),
				 errhint("A batch can be replayed as long as its rows are kept in the source table.")));

	transforms = mb_transform_list(pipeline->id);
	mb_window_activate(&window);
	PG_TRY();
	{
		mb_transforms_run(pipeline, transforms, batch_id, rows);
	}
	PG_FINALLY();
	{
		mb_window_deactivate();
	}
	PG_END_TRY();

	mb_ledger_record_replay(pipeline->id, batch_id, GetCurrentTimestamp());
	AtEOXact_GUC(true, nest_level);
	return rows;
}

/*
 * Count the committed source rows that no committed batch has processed.
 * Returns false when that cannot be known (inside a transform, or the
 * pipeline is broken) or is not the caller's to know (the count reads the
 * source with the owner's rights), so that monitoring views never fail.  Expects
 * mb_call_begin().
 */
bool
mb_rows_waiting(const char *pipeline_name, Oid caller, int64 *rows)
{
	MbPipeline	pipeline;
	MbLastBatch last;
	MbWindow	window;
	bool		has_last;

	if (mb_window_is_active() ||
		!mb_pipeline_by_name(pipeline_name, &pipeline) ||
		!has_privs_of_role(caller, pipeline.owner) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(pipeline.source)) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(pipeline.batch_view)) ||
		pg_class_aclcheck(pipeline.source, pipeline.owner, ACL_SELECT) != ACLCHECK_OK)
		return false;

	*rows = 0;
	has_last = mb_last_batch(pipeline.id, &last);
	if (has_last && last.xid_to != 0)
	{
		mb_window_init(&window, pipeline.id, 0, last.lower_datum,
					   last.upper_datum, last.xid_to, 0);
		*rows += mb_window_count(&pipeline, &window);
	}
	mb_window_init(&window, pipeline.id, 0,
				   has_last ? last.upper_datum : mb_empty_snapshot(),
				   mb_current_snapshot(), 0, 0);
	*rows += mb_window_count(&pipeline, &window);
	return true;
}
