/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The batch engine: run a batch, replay a batch, count rows waiting,
 *	  rebind a pipeline restored into another cluster.
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
 * same batch id.  The ledger keeps a fingerprint of each batch's rows, and a
 * replay runs only over the same rows.
 *
 * The engine knows nothing of background workers: a worker passes an
 * observer to hear when a batch takes its snapshot and starts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "catalog/pg_class.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "microbatch.h"

static void
mb_check_can_run(const char *what)
{
	if (mb_window_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s inside a transform", what)));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s during recovery", what)));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s in a read-only transaction", what)));

	/*
	 * Under a transaction snapshot we could miss a batch committed after our
	 * snapshot was taken and sweep its rows again.
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s in a transaction with a transaction snapshot", what),
				 errdetail("The transaction isolation level is %s.",
						   IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Run it in a READ COMMITTED transaction.")));
}

/*
 * The ledger's snapshots hold transaction ids of the cluster the pipeline
 * was created in; in any other they mean nothing.
 */
static void
mb_check_same_cluster(const MbPipeline *pipeline)
{
	if (pipeline->system_identifier != GetSystemIdentifier())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" was restored from another cluster",
						pipeline->name),
				 errdetail("Its history refers to transaction ids of the cluster with system identifier " UINT64_FORMAT "; this one is " UINT64_FORMAT ".",
						   pipeline->system_identifier, GetSystemIdentifier()),
				 errhint("Run microbatch.rebind_pipeline(%s) to carry on from the rows it had not processed.",
						 quote_literal_cstr(pipeline->name))));
}

/* {transform name: version}, as the ledger records what processed a batch */
static char *
mb_transform_versions(List *transforms)
{
	StringInfoData json;
	ListCell   *lc;

	initStringInfo(&json);
	appendStringInfoChar(&json, '{');
	foreach(lc, transforms)
	{
		MbTransform *transform = lfirst(lc);

		if (json.len > 1)
			appendStringInfoString(&json, ", ");
		escape_json(&json, transform->name);
		appendStringInfo(&json, ": %d", transform->version);
	}
	appendStringInfoChar(&json, '}');
	return json.data;
}

/*
 * What each step of a batch did, for its ledger row: {"lock_wait_us": N,
 * "steps": [{"kind": ..., "name": ..., "layer": ..., "rows": N, "us": N}]}
 */
static char *
mb_progress_json(int64 lock_wait_us, List *steps)
{
	StringInfoData json;
	ListCell   *lc;

	initStringInfo(&json);
	appendStringInfo(&json, "{\"lock_wait_us\": " INT64_FORMAT ", \"steps\": [",
					 lock_wait_us);
	foreach(lc, steps)
	{
		MbStep	   *step = lfirst(lc);

		if (lc != list_head(steps))
			appendStringInfoString(&json, ", ");
		appendStringInfoString(&json, "{\"kind\": ");
		escape_json(&json, step->kind);
		if (step->name != NULL)
		{
			appendStringInfoString(&json, ", \"name\": ");
			escape_json(&json, step->name);
		}
		if (step->layer != NULL)
		{
			appendStringInfoString(&json, ", \"layer\": ");
			escape_json(&json, step->layer);
		}
		appendStringInfo(&json, ", \"rows\": " INT64_FORMAT ", \"us\": " INT64_FORMAT "}",
						 step->rows, step->usecs);
	}
	appendStringInfoString(&json, "]}");
	return json.data;
}

/* The rows the transforms of a batch wrote, by their steps */
static int64
mb_rows_written(List *steps)
{
	ListCell   *lc;
	int64		rows = 0;

	foreach(lc, steps)
	{
		MbStep	   *step = lfirst(lc);

		if (strcmp(step->kind, "transform") == 0)
			rows += step->rows;
	}
	return rows;
}

/* Everything a batch, a replay or a count of a pipeline needs first */
static void
mb_check_pipeline(const MbPipeline *pipeline)
{
	mb_check_role_may_run(pipeline->owner, pipeline->name);
	mb_check_same_cluster(pipeline);
	mb_pipeline_check_relations(pipeline);
}

/*
 * In the PG_CATCH of an internal subtransaction: the error, once the
 * subtransaction is rolled back and we are back in the caller's memory
 * context and resource owner.
 */
ErrorData *
mb_subtransaction_error(MemoryContext context, ResourceOwner owner)
{
	ErrorData  *error;

	MemoryContextSwitchTo(context);
	error = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	return error;
}

/*
 * The work of a batch over its active window: the expectations, then the
 * transforms with each layer's audits.  Returns the rows the drop
 * expectations took out.
 */
static int64
mb_batch_body(const MbPipeline *pipeline, List *transforms, MbWindow *window,
			  int64 rows)
{
	int64		dropped;

	dropped = mb_expectations_check(pipeline, mb_expectation_list(pipeline->id),
									window, rows);
	mb_transforms_run(pipeline, transforms, mb_audit_list(pipeline->id),
					  window, rows);
	return dropped;
}

/*
 * Run the batch's checks and transforms in a subtransaction.  Returns NULL
 * on success, or the error after rolling the subtransaction back.  A cancel
 * is not a batch failure, and propagates, unless the observer says it was
 * the batch's timeout; once that has fired, the batch fails even if the
 * transforms caught the cancel and ended.
 */
static ErrorData *
mb_transforms_run_guarded(const MbPipeline *pipeline, List *transforms,
						  MbWindow *window, int64 rows,
						  const MbBatchObserver *observer, int64 *dropped)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);

	PG_TRY();
	{
		const char *timed_out;

		mb_window_activate(window);
		*dropped = mb_batch_body(pipeline, transforms, window, rows);

		/* a transform that caught its batch's timeout does not save it */
		timed_out = observer && observer->timeout_reason ?
			observer->timeout_reason(observer->arg) : NULL;
		if (timed_out != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("%s", timed_out)));
		mb_window_deactivate();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		mb_window_deactivate();
		error = mb_subtransaction_error(context, owner);
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			const char *reason = observer && observer->timeout_reason ?
			observer->timeout_reason(observer->arg) : NULL;

			if (reason == NULL)
				ReThrowError(error);
			error->message = pstrdup(reason);
		}
	}
	PG_END_TRY();

	return error;
}

/*
 * Count a batch's outcome.  After max_retries failed batches in a row the
 * pipeline is marked failed, once, with a WARNING and an alert; the first
 * success after failures, resumed or not, sends a recovery alert.  Returns
 * the failures in a row.  Only batches, under the pipeline's lock, count
 * failures, so a success after none has nothing to change.  Otherwise the
 * counts are read again, their row locked, as pause and resume may have
 * changed them while the batch ran; if one of them still holds the row in
 * an open transaction, the state it leaves decides, uncounted, rather than
 * a background worker waiting on a transaction its owner keeps open.
 */
static int32
mb_account_outcome(MbPipeline *pipeline, int64 batch_id, const ErrorData *error)
{
	int32		failures;
	bool		now_failed;

	if (error == NULL && pipeline->consecutive_failures == 0 &&
		!pipeline->failure_alerted)
		return 0;
	if (!mb_pipeline_failures_for_update(pipeline))
		return error ? pipeline->consecutive_failures + 1 : 0;
	failures = error ? pipeline->consecutive_failures + 1 : 0;
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
				 errhint("Background workers no longer run it. Fix the cause, then run microbatch.resume_pipeline(%s).",
						 quote_literal_cstr(pipeline->name))));
		mb_notify_alert("failed", pipeline->id, batch_id, error, failures);
	}
	else if (error == NULL)
		mb_notify_alert("recovered", pipeline->id, batch_id, NULL, 0);
	return failures;
}

/*
 * Record an error that happened outside the transforms of a background
 * batch, in a transaction of its own (the batch's was rolled back): a
 * failed ledger row for the next batch id, counted toward max_retries and
 * alerted like any failure.  If even this fails, say so in the log and
 * carry on: the worker must not die of it.  Returns the failures in a row,
 * or 0 when nothing could be recorded.
 */
int32
mb_record_failure(const char *pipeline_name, const ErrorData *error,
				  TimestampTz started_at)
{
	MemoryContext context = CurrentMemoryContext;
	volatile int32 failures = 0;

	PG_TRY();
	{
		MbCall		call;
		MbPipeline *pipeline;

		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		mb_call_begin(&call);
		pipeline = mb_pipeline_try_lock(pipeline_name, call.caller);
		if (pipeline != NULL)
		{
			MbLedgerBatch position;
			MbLedgerEntry entry;
			MbBatchOutcome outcome;

			memset(&entry, 0, sizeof(entry));
			entry.pipeline_id = pipeline->id;
			entry.batch_id = mb_ledger_position(pipeline->id, &position) ?
				position.batch_id + 1 : 1;
			entry.status = "failed";
			entry.rows_in = -1;
			entry.started_at = started_at;
			entry.finished_at = GetCurrentTimestamp();
			entry.error = error;
			mb_ledger_insert(&entry);
			failures = mb_account_outcome(pipeline, 0, error);
			memset(&outcome, 0, sizeof(outcome));
			outcome.rows_in = outcome.rows_dropped = -1;
			outcome.started_at = started_at;
			mb_stats_count_batch(pipeline->id, &outcome);
		}
		mb_call_end(&call);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *again;

		MemoryContextSwitchTo(context);
		again = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("microbatch could not record the failure of pipeline \"%s\": %s",
						pipeline_name, again->message)));
		FreeErrorData(again);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	return failures;
}

/*
 * The next batch of a pipeline, its steps logged into log; see
 * mb_run_batch().  entered is when the caller asked for it.
 */
static MbBatchResult
mb_run_batch_logged(const char *pipeline_name, Oid caller, bool wait,
					const MbBatchObserver *observer, MbStepLog *log,
					TimestampTz entered)
{
	MbBatchResult result = {MB_BATCH_EMPTY, 0, 0, 0, 0, false, NULL};
	MbPipeline *pipeline;
	MbWindow	window;
	MbWindowContent content;
	MbLedgerEntry entry;
	MbBatchOutcome outcome;
	List	   *transforms;
	int64		dropped = -1;

	mb_check_can_run("run a batch");
	pipeline = wait ? mb_pipeline_lock(pipeline_name, caller) :
		mb_pipeline_try_lock(pipeline_name, caller);

	/* a backfill holds the lock for one batch at a time: our turn is next */
	if (pipeline == NULL && mb_backfill_running(MyDatabaseId, pipeline_name))
		pipeline = mb_pipeline_lock(pipeline_name, caller);
	if (pipeline == NULL)
	{
		result.status = MB_BATCH_BUSY;
		return result;
	}

	/*
	 * A background batch runs only a pipeline enabled as of now: the
	 * scheduler that handed it out may not have read a pause yet.  Checked
	 * before the pipeline itself, whose failures would count towards marking
	 * a paused pipeline failed.
	 */
	if (!wait && strcmp(pipeline->state, "enabled") != 0)
	{
		if (observer != NULL && observer->before_snapshot != NULL)
			observer->before_snapshot(observer->arg, pipeline);
		result.status = MB_BATCH_NOT_ENABLED;
		return result;
	}
	mb_check_pipeline(pipeline);

	/*
	 * Rows swept by a batch without transforms would be lost to them.  The
	 * rows committed so far wait for a transform, not for another run.
	 */
	transforms = mb_transform_list(pipeline->id);
	if (transforms == NIL)
	{
		if (observer != NULL && observer->before_snapshot != NULL)
			observer->before_snapshot(observer->arg, pipeline);
		ereport(NOTICE,
				(errmsg("pipeline \"%s\" has no transforms, so no batch was run",
						pipeline->name),
				 errhint("Add transforms with microbatch.add_transform(); the rows wait for them.")));
		return result;
	}

	result.started_at = GetCurrentTimestamp();
	memset(&outcome, 0, sizeof(outcome));
	outcome.lock_wait_us = result.started_at - entered;
	content = mb_next_window(pipeline, &window, observer);
	result.rows_in = content.rows;
	if (content.rows == 0)
		return result;
	mb_tracking_index_analyze(pipeline);
	if (track_commit_timestamp)
		outcome.oldest_row_committed_at = mb_window_oldest_commit(pipeline, &window);
	mb_step_record("window", NULL, NULL, content.rows, result.started_at);

	result.batch_id = window.batch_id;
	if (observer != NULL && observer->batch_started != NULL)
		observer->batch_started(observer->arg, pipeline, window.batch_id);
	result.error = mb_transforms_run_guarded(pipeline, transforms, &window,
											 content.rows, observer, &dropped);
	result.status = result.error ? MB_BATCH_FAILED : MB_BATCH_COMMITTED;
	result.capped = window.xid_to != 0;

	outcome.committed = result.error == NULL;
	outcome.rows_in = content.rows;
	outcome.rows_written = outcome.committed ? mb_rows_written(log->steps) : 0;
	outcome.rows_dropped = outcome.committed ? dropped : -1;
	outcome.started_at = result.started_at;
	outcome.ledger_started_at = GetCurrentTimestamp();

	memset(&entry, 0, sizeof(entry));
	entry.pipeline_id = pipeline->id;
	entry.batch_id = window.batch_id;
	entry.status = result.error ? "failed" : "committed";
	entry.window = &window;
	entry.rows_in = content.rows;
	entry.rows_digest = content.digest;
	entry.rows_dropped = dropped;
	entry.started_at = result.started_at;
	entry.finished_at = outcome.ledger_started_at;
	entry.error = result.error;
	entry.transform_versions = mb_transform_versions(transforms);
	entry.progress = mb_progress_json(outcome.lock_wait_us, log->steps);
	entry.oldest_row_committed_at = outcome.oldest_row_committed_at;
	mb_ledger_insert(&entry);
	result.failures = mb_account_outcome(pipeline, window.batch_id, result.error);
	mb_stats_count_batch(pipeline->id, &outcome);
	return result;
}

/*
 * Process the next batch of a pipeline.  Expects mb_call_begin().  With
 * wait false (a background batch), a pipeline whose lock another
 * transaction holds is left alone (MB_BATCH_BUSY), and one paused or failed
 * runs nothing (MB_BATCH_NOT_ENABLED).  Each step is timed for the ledger
 * row; a batch run by a transform of a preview is a real batch all the
 * same.
 */
MbBatchResult
mb_run_batch(const char *pipeline_name, Oid caller, bool wait,
			 const MbBatchObserver *observer)
{
	TimestampTz entered = GetCurrentTimestamp();
	MbStepLog	log;
	bool		was_previewing = mb_previewing;
	MbBatchResult result;

	mb_steps_begin(&log, CurrentMemoryContext);
	mb_previewing = false;
	PG_TRY();
	{
		result = mb_run_batch_logged(pipeline_name, caller, wait, observer,
									 &log, entered);
	}
	PG_FINALLY();
	{
		mb_steps_end(&log);
		mb_previewing = was_previewing;
	}
	PG_END_TRY();
	return result;
}

/*
 * Run the current expectations, transforms and audits over the input rows
 * of a committed batch, with current_batch_id() returning its id; what the
 * checks found replaces what earlier runs of the batch found.  Errors
 * propagate: a replay is one statement of the caller's transaction.
 * Expects mb_call_begin().
 */
int64
mb_replay_batch(const char *pipeline_name, int64 batch_id, Oid caller)
{
	MbPipeline *pipeline;
	MbLedgerBatch batch;
	MbWindow	window;
	MbWindowContent content;
	List	   *transforms;
	volatile int64 dropped = 0;

	mb_check_can_run("replay a batch");
	pipeline = mb_pipeline_lock(pipeline_name, caller);
	mb_check_pipeline(pipeline);
	if (!mb_ledger_batch(pipeline->id, batch_id, &batch))
	{
		/* gone from the history, or never there */
		mb_retention_check_replayable(pipeline, batch_id, batch_id);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline \"%s\" has no committed batch " INT64_FORMAT,
						pipeline->name, batch_id),
				 errhint("The view microbatch.batches lists the batches of each pipeline.")));
	}
	if (batch.skipped)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " of pipeline \"%s\" was skipped, not processed",
						batch_id, pipeline->name),
				 errdetail("It stands for rows left unprocessed on purpose; see its note in microbatch.batches.")));
	if (batch_id < pipeline->rebind_batch_id)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " of pipeline \"%s\" was recorded in another cluster",
						batch_id, pipeline->name),
				 errdetail("The pipeline was rebound at batch " INT64_FORMAT "; earlier windows no longer match its rows.",
						   pipeline->rebind_batch_id)));
	mb_retention_check_replayable(pipeline, batch_id, batch_id);

	mb_window_init(&window, pipeline->id, batch_id, batch.lower_datum,
				   batch.upper_datum, batch.xid_from, batch.xid_to);
	content = mb_window_content(pipeline, &window);
	if (content.rows != batch.rows_in ||
		(batch.has_digest && content.digest != batch.rows_digest))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot replay batch " INT64_FORMAT " of pipeline \"%s\": its source rows changed",
						batch_id, pipeline->name),
				 content.rows == batch.rows_in ?
				 errdetail_plural("The window still holds " INT64_FORMAT " row, but its content differs from what the batch processed.",
								  "The window still holds " INT64_FORMAT " rows, but their content differs from what the batch processed.",
								  (unsigned long) content.rows, content.rows) :
				 errdetail_plural("The batch processed " INT64_FORMAT " row; its window now holds " INT64_FORMAT ".",
								  "The batch processed " INT64_FORMAT " rows; its window now holds " INT64_FORMAT ".",
								  (unsigned long) batch.rows_in, batch.rows_in, content.rows),
				 errhint("A batch can be replayed as long as its rows are kept in the source table unchanged: rows updated, deleted or re-inserted since, or a column added with a default, prevent it.")));

	transforms = mb_transform_list(pipeline->id);
	mb_check_results_clear(pipeline->id, batch_id);
	window.replay = true;
	mb_window_activate(&window);
	PG_TRY();
	{
		dropped = mb_batch_body(pipeline, transforms, &window, content.rows);
	}
	PG_FINALLY();
	{
		mb_window_deactivate();
	}
	PG_END_TRY();

	mb_ledger_record_replay(pipeline->id, batch_id, GetCurrentTimestamp(),
							dropped, mb_transform_versions(transforms));
	return content.rows;
}

/*
 * Run the next batch of a pipeline, its expectations, transforms and
 * audits, in a subtransaction that is rolled back whatever happens, and
 * return what each step did (a list of MbStep, in result_context).  A fail
 * expectation or audit does not fail a preview: its step shows what it
 * found.  An error of a transform propagates.  Expects mb_call_begin().
 */
List *
mb_preview_batch(const char *pipeline_name, Oid caller,
				 MemoryContext result_context)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MbStepLog	log;
	bool		was_previewing = mb_previewing;

	mb_check_can_run("preview a batch");
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	mb_steps_begin(&log, result_context);
	mb_previewing = true;
	PG_TRY();
	{
		MbPipeline *pipeline;
		MbWindow	window;
		MbWindowContent content;
		List	   *transforms;
		TimestampTz started = GetCurrentTimestamp();

		pipeline = mb_pipeline_lock(pipeline_name, caller);
		mb_check_pipeline(pipeline);
		transforms = mb_transform_list(pipeline->id);
		content = mb_next_window(pipeline, &window, NULL);
		mb_step_record("window", NULL, NULL, content.rows, started);
		if (content.rows > 0)
		{
			mb_window_activate(&window);
			(void) mb_batch_body(pipeline, transforms, &window, content.rows);
			mb_window_deactivate();
		}
		mb_steps_end(&log);
		mb_previewing = was_previewing;
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		mb_window_deactivate();
		mb_steps_end(&log);
		mb_previewing = was_previewing;
		ReThrowError(mb_subtransaction_error(context, owner));
	}
	PG_END_TRY();
	return log.steps;
}

/*
 * Make the next batch start again from the first row still in the source:
 * a skipped batch whose window ends at the empty snapshot.  Its history
 * stays, and so do the batch ids, which keep increasing.  Expects
 * mb_call_begin().  Returns the id of the skipped batch.
 */
int64
mb_reset_pipeline(const char *pipeline_name, Oid caller)
{
	MbPipeline *pipeline;
	MbLedgerBatch position;
	MbLedgerEntry entry;
	MbWindow	window;

	mb_check_can_run("reset a pipeline");
	pipeline = mb_pipeline_lock(pipeline_name, caller);
	mb_check_same_cluster(pipeline);
	/* no retention step removes rows the next batch now covers, meanwhile */
	mb_lock_history(pipeline->id, ShareLock, true);

	memset(&entry, 0, sizeof(entry));
	entry.pipeline_id = pipeline->id;
	entry.batch_id = mb_ledger_position(pipeline->id, &position) ?
		position.batch_id + 1 : 1;
	entry.status = "skipped";
	mb_window_init(&window, pipeline->id, entry.batch_id, mb_empty_snapshot(),
				   mb_empty_snapshot(), 0, 0);
	entry.window = &window;
	entry.rows_in = -1;
	entry.started_at = entry.finished_at = GetCurrentTimestamp();
	entry.note = psprintf("reset by %s: the next batch processes every row still in the source",
						  GetUserNameFromId(caller, false));
	mb_ledger_insert(&entry);
	mb_wake_scheduler_at_commit();
	return entry.batch_id;
}

/* Whether a table of the source's hierarchy forces row security on its owner */
static bool
mb_source_forces_row_security(Oid source)
{
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(source, NoLock))
	{
		HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(lfirst_oid(lc)));
		bool		forced;

		if (!HeapTupleIsValid(tuple))
			continue;
		forced = ((Form_pg_class) GETSTRUCT(tuple))->relrowsecurity &&
			((Form_pg_class) GETSTRUCT(tuple))->relforcerowsecurity;
		ReleaseSysCache(tuple);
		if (forced)
			return true;
	}
	return false;
}

/*
 * Count the committed source rows that no committed batch has processed;
 * with oldest, also find the oldest of them (see mb_window_backlog()).
 * Returns false when that cannot be known (inside a transform, the pipeline
 * is broken, the count failed) or is not the caller's to know (the count
 * reads the source with the owner's rights, and gives only a count and the
 * oldest row's xid and commit time: to roles with the owner's privileges
 * or pg_read_all_stats), so that monitoring views never fail.  The count runs in a subtransaction for that; a cancel still
 * propagates.  Expects mb_call_begin().
 */
bool
mb_rows_waiting(const char *pipeline_name, Oid caller, bool oldest,
				MbBacklog *backlog)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MbPipeline	pipeline;
	volatile bool known = false;

	if (mb_window_is_active() ||
		!mb_pipeline_by_name(pipeline_name, &pipeline) ||
		!mb_may_monitor(caller, pipeline.owner))
		return false;

	/*
	 * The count reads the source as its owner: under a forced row security
	 * policy that runs the owner's code, which a monitoring role, unlike
	 * the owner's roles, has no reason to run.
	 */
	if (!has_privs_of_role(caller, pipeline.owner) &&
		mb_source_forces_row_security(pipeline.source))
		return false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		mb_check_pipeline(&pipeline);
		memset(backlog, 0, sizeof(*backlog));
		if (oldest)
			backlog->rows = mb_window_backlog(&pipeline, &backlog->oldest_xid,
											  &backlog->oldest_commit);
		else
			backlog->rows = mb_window_rows_waiting(&pipeline);
		known = true;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *error = mb_subtransaction_error(context, owner);

		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(error);
		FreeErrorData(error);
	}
	PG_END_TRY();
	return known;
}

/*
 * A boolean SQL expression over s.microbatch_xid: whether a pipeline's
 * position covers a row (visible in its upper snapshot, and not in the part
 * of a cut window still to come), with the position's snapshots as
 * constants.
 */
static char *
mb_covered_sql(const MbLedgerBatch *position, bool has_position)
{
	char	   *upper;

	if (!has_position)
		return "false";
	upper = psprintf("pg_catalog.pg_visible_in_snapshot(s.%s, %s::pg_catalog.pg_snapshot)",
					 MB_TRACKING_COLUMN,
					 quote_literal_cstr(DatumGetCString(DirectFunctionCall1(pg_snapshot_out,
																			position->upper_datum))));
	if (position->xid_to == 0)
		return upper;
	return psprintf("(%s AND NOT (s.%s OPERATOR(pg_catalog.>=) '" UINT64_FORMAT "'::pg_catalog.xid8 "
					"AND NOT pg_catalog.pg_visible_in_snapshot(s.%s, %s::pg_catalog.pg_snapshot)))",
					upper, MB_TRACKING_COLUMN, position->xid_to, MB_TRACKING_COLUMN,
					quote_literal_cstr(DatumGetCString(DirectFunctionCall1(pg_snapshot_out,
																		   position->lower_datum))));
}

/*
 * The lowest tracking value a position may not cover: values below it are
 * visible in its upper snapshot and below a cut, so every row with one is
 * processed.
 */
static uint64
mb_covered_below(const MbLedgerBatch *position, bool has_position)
{
	MbWindow	window;
	uint64		below;

	if (!has_position)
		return 0;
	mb_window_init(&window, 0, 0, position->lower_datum, position->upper_datum,
				   0, 0);
	below = window.upper.xmin;
	if (position->xid_to != 0)
		below = Min(below, position->xid_to);
	return below;
}

/* A subtransaction id of ours, committed with our transaction */
static uint64
mb_new_subxid(void)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	uint64		xid;

	BeginInternalSubTransaction(NULL);
	xid = U64FromFullTransactionId(GetCurrentFullTransactionId());
	ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	return xid;
}

/* Pipelines one rebind handles: one bit each in a row's mask */
#define MB_REBIND_MAX_PIPELINES 63

/* The rows that the same pipelines had processed share a tracking value */
typedef struct MbRebindGroup
{
	uint64		mask;			/* bit i: pipeline i had processed them */
	uint64		xid;
} MbRebindGroup;

/*
 * Carry on in this cluster with pipelines restored from another.  All the
 * pipelines of the source's hierarchy (on it, on the tables above it and
 * below it) are rebound together, since they share the rows' tracking
 * values.  Each pipeline processes exactly the rows it had not processed:
 * rows are grouped by the set of pipelines that had (a row's mask); the
 * rows all of them had processed get, if this cluster could mistake their
 * value, the smallest normal transaction id, which every snapshot but the
 * empty one sees as committed; every other group gets an id of a
 * subtransaction of ours, and each pipeline starts again from a position
 * in which the ids of the groups it had processed are committed and the
 * others still running.  The position is a skipped batch in each
 * pipeline's history; older batches cannot be replayed.  Expects
 * mb_call_begin().
 */
void
mb_rebind_pipeline(const char *pipeline_name, Oid caller)
{
	MbPipeline *named;
	List	   *members = NIL;
	List	   *pipelines;
	MbLedgerBatch *positions;
	bool	   *has_position;
	MbRebindGroup *groups;
	int			ngroups = 0;
	int			npipelines;
	uint64		all;
	uint64		current_xmin;
	ListCell   *lc;
	int64		retagged = 0;
	uint64		old_system_identifier;
	char	   *note;
	int			i;

	mb_check_can_run("rebind a pipeline");
	named = mb_pipeline_get(pipeline_name);
	mb_pipeline_check_owner(named, caller);
	if (named->system_identifier == GetSystemIdentifier())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" belongs to this cluster already", named->name),
				 errhint("rebind_pipeline() is for pipelines restored from another cluster.")));
	mb_pipeline_check_source_exists(named);
	old_system_identifier = named->system_identifier;

	foreach(lc, mb_hierarchy_roots(named->source))
	{
		mb_source_check_usable(lfirst_oid(lc), caller);
		members = list_concat_unique_oid(members,
										 mb_hierarchy_members(lfirst_oid(lc),
															  AccessExclusiveLock));
	}
	pipelines = mb_pipelines_on_sources(members);
	npipelines = list_length(pipelines);
	if (npipelines > MB_REBIND_MAX_PIPELINES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot rebind more than %d pipelines of one hierarchy at once",
						MB_REBIND_MAX_PIPELINES)));
	all = (UINT64CONST(1) << npipelines) - 1;
	positions = palloc0(sizeof(MbLedgerBatch) * Max(npipelines, 1));
	has_position = palloc0(sizeof(bool) * Max(npipelines, 1));
	i = 0;
	foreach(lc, pipelines)
	{
		MbPipeline *pipeline = lfirst(lc);

		mb_pipeline_check_owner(pipeline, caller);
		mb_pipeline_lock_known(pipeline);
		if (pipeline->system_identifier != old_system_identifier)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pipelines \"%s\" and \"%s\" read the same tables but come from different clusters",
							named->name, pipeline->name),
					 errdetail("Their histories count transaction ids of different clusters, so no rewrite of the tables' tracking values can suit both."),
					 errhint("Drop one of them first.")));
		has_position[i] = mb_ledger_position(pipeline->id, &positions[i]);
		i++;
	}

	foreach(lc, mb_hierarchy_roots(named->source))
		mb_source_guard(lfirst_oid(lc), caller, true);

	{
		MbWindow	now;

		mb_window_init(&now, 0, 0, mb_current_snapshot(false),
					   mb_current_snapshot(false), 0, 0);
		current_xmin = now.upper.xmin;
	}

	groups = palloc(sizeof(MbRebindGroup) * 1);
	foreach(lc, members)
	{
		Oid			member = lfirst_oid(lc);
		List	   *readers = mb_table_and_ancestors(member);
		StringInfoData mask_sql;
		char	   *where;
		uint64		below = current_xmin;
		ListCell   *lp;
		uint64		nmasks;
		uint64	   *masks;
		int64	   *counts;
		StringInfoData value_sql;
		bool		has_groups;
		MbUserCode	uc;

		if (get_rel_relkind(member) != RELKIND_RELATION)
			continue;

		/* a pipeline that does not read the table counts as having seen it */
		initStringInfo(&mask_sql);
		appendStringInfo(&mask_sql, "('" UINT64_FORMAT "'::pg_catalog.int8", (uint64) 0);
		i = 0;
		foreach(lp, pipelines)
		{
			MbPipeline *pipeline = lfirst(lp);
			int64		bit = (int64) (UINT64CONST(1) << i);

			if (!list_member_oid(readers, pipeline->source))
				appendStringInfo(&mask_sql, " OPERATOR(pg_catalog.|) " INT64_FORMAT "::pg_catalog.int8", bit);
			else
			{
				appendStringInfo(&mask_sql,
								 " OPERATOR(pg_catalog.|) CASE WHEN %s THEN " INT64_FORMAT "::pg_catalog.int8 ELSE 0::pg_catalog.int8 END",
								 mb_covered_sql(&positions[i], has_position[i]), bit);
				below = Min(below, mb_covered_below(&positions[i], has_position[i]));
			}
			i++;
		}
		appendStringInfoChar(&mask_sql, ')');
		where = psprintf("s.%s OPERATOR(pg_catalog.>=) '" UINT64_FORMAT "'::pg_catalog.xid8",
						 MB_TRACKING_COLUMN, below);

		/*
		 * The masks of the rows a rewrite may concern, counted before the
		 * rewrite changes the values they are computed from: engine SQL, as
		 * the catalog's owner.
		 */
		mb_user_code_begin(&uc, GetUserId(), NULL);
		if (SPI_execute(psprintf("SELECT %s, pg_catalog.count(*) FROM ONLY %s AS s WHERE %s GROUP BY 1",
								 mask_sql.data, mb_qualified_relname(member), where),
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the tracking values of %s",
				 mb_qualified_relname(member));
		nmasks = SPI_processed;
		masks = palloc(sizeof(uint64) * Max(nmasks, 1));
		counts = palloc(sizeof(int64) * Max(nmasks, 1));
		for (uint64 m = 0; m < nmasks; m++)
		{
			bool		isnull;

			masks[m] = (uint64) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[m],
															SPI_tuptable->tupdesc,
															1, &isnull));
			counts[m] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[m],
													SPI_tuptable->tupdesc,
													2, &isnull));
		}
		mb_user_code_end(&uc);

		if (nmasks == 0)
			continue;

		/*
		 * One rewrite for all groups: rows processed by all keep their value
		 * unless this cluster could mistake it.
		 */
		initStringInfo(&value_sql);
		for (uint64 m = 0; m < nmasks; m++)
		{
			int			g;

			if (masks[m] == all)
				continue;
			if (value_sql.len == 0)
				appendStringInfo(&value_sql, "CASE %s", mask_sql.data);
			for (g = 0; g < ngroups && groups[g].mask != masks[m]; g++)
				;
			if (g == ngroups)
			{
				groups = repalloc(groups, sizeof(MbRebindGroup) * (ngroups + 1));
				groups[g].mask = masks[m];
				groups[g].xid = mb_new_subxid();
				ngroups++;
			}
			appendStringInfo(&value_sql,
							 " WHEN " INT64_FORMAT " THEN '" UINT64_FORMAT "'::pg_catalog.xid8",
							 (int64) masks[m], groups[g].xid);
			retagged += counts[m];
		}
		has_groups = value_sql.len > 0;
		if (has_groups)
			appendStringInfoString(&value_sql, " ELSE ");
		appendStringInfo(&value_sql, "'" UINT64_FORMAT "'::pg_catalog.xid8",
						 U64FromFullTransactionId(FirstNormalFullTransactionId));
		if (has_groups)
			appendStringInfoString(&value_sql, " END");
		mb_source_retag(member, value_sql.data,
						psprintf("%s AND (%s OPERATOR(pg_catalog.<>) " INT64_FORMAT
								 " OR s.%s OPERATOR(pg_catalog.>=) '" UINT64_FORMAT "'::pg_catalog.xid8)",
								 where, mask_sql.data, (int64) all,
								 MB_TRACKING_COLUMN, current_xmin));
	}

	note = psprintf("rebound: earlier batches were recorded in the cluster with system identifier " UINT64_FORMAT,
					old_system_identifier);
	i = 0;
	foreach(lc, pipelines)
	{
		MbPipeline *pipeline = lfirst(lc);
		uint64	   *ours = palloc(sizeof(uint64) * Max(ngroups, 1));
		bool	   *seen = palloc(sizeof(bool) * Max(ngroups, 1));
		MbLedgerEntry entry;
		MbWindow	window;
		Datum		position;

		for (int g = 0; g < ngroups; g++)
		{
			ours[g] = groups[g].xid;
			seen[g] = (groups[g].mask & (UINT64CONST(1) << i)) != 0;
		}
		position = mb_rebind_snapshot(ours, seen, ngroups);

		memset(&entry, 0, sizeof(entry));
		entry.pipeline_id = pipeline->id;
		entry.batch_id = has_position[i] ? positions[i].batch_id + 1 : 1;
		entry.status = "skipped";
		mb_window_init(&window, pipeline->id, entry.batch_id, position, position, 0, 0);
		entry.window = &window;
		entry.rows_in = -1;
		entry.started_at = entry.finished_at = GetCurrentTimestamp();
		entry.note = note;
		mb_ledger_insert(&entry);
		mb_pipeline_set_rebound(pipeline->id, GetSystemIdentifier(), entry.batch_id);
		i++;
	}
	ereport(NOTICE,
			(errmsg_plural("rebound %d pipeline of the hierarchy of table \"%s\"",
						   "rebound %d pipelines of the hierarchy of table \"%s\"",
						   npipelines, npipelines, get_rel_name(named->source)),
			 errdetail_plural(INT64_FORMAT " row had not been processed by every pipeline; the next batch of each pipeline processes it if that pipeline had not.",
							  INT64_FORMAT " rows had not been processed by every pipeline; the next batch of each pipeline processes those it had not.",
							  (unsigned long) retagged, retagged)));
}

/*
 * The ledger row that makes a new pipeline start from now: a skipped batch
 * over every row committed before this transaction.  The rows this
 * transaction writes are not committed yet: they go to the first batch.
 */
void
mb_skip_existing_rows(const MbPipeline *pipeline)
{
	MbLedgerEntry entry;
	MbWindow	window;

	memset(&entry, 0, sizeof(entry));
	entry.pipeline_id = pipeline->id;
	entry.batch_id = 1;
	entry.status = "skipped";
	mb_window_init(&window, pipeline->id, 1, mb_empty_snapshot(),
				   mb_current_snapshot(true), 0, 0);
	entry.window = &window;
	entry.rows_in = -1;
	entry.started_at = entry.finished_at = GetCurrentTimestamp();
	entry.note = "start_from 'now': rows committed before the pipeline was created";
	mb_ledger_insert(&entry);
}
