/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Batch workers: run the batches the scheduler hands them.
 *
 * A batch worker is connected to one database as the bootstrap superuser
 * and runs the batch engine, which runs the transforms as each pipeline's
 * owner.  Each batch is a transaction of its own, started from a clean
 * session: settings the database's owner may have set that would break a
 * batch are overridden (mb_background_session_defaults()), and whatever a
 * transform may have left in the session (advisory locks at session level,
 * prepared statements, sequence state) is dropped before the next batch,
 * which may be another owner's.
 *
 * After a batch that committed, a worker runs the pipeline's next batch by
 * itself while one is due at once: rows are waiting for a continuous
 * pipeline (once microbatch.coalesce_delay has passed since the batch
 * started), or a backlog for one whose window max_batch_rows cut short.  It
 * hands the pipeline back to the scheduler instead when the scheduler
 * reloaded since (a change may have paused the pipeline), another pipeline
 * or database waits for a worker, or it is asked to leave.
 *
 * A batch that runs longer than its timeout is cancelled and counted as a
 * failure; one that catches the cancel and goes on has its worker
 * terminated a few seconds later.  A pipeline whose lock another
 * transaction holds is skipped, not waited for.  Every error, inside or outside the transforms, is recorded
 * as the pipeline's failure, and the worker carries on.  SIGTERM ends the
 * worker at the next interrupt check, in the middle of a transform too; the
 * batch rolls back, the scheduler records it as failed, and it is done
 * again later; so does an error made FATAL (exit_on_error set by a
 * transform).  A cancel between batches is ignored.  A worker left idle for a
 * minute exits, giving its slot back, and one whose slot another database
 * needs, or whose scheduler left, exits as soon as it is idle.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "worker.h"

#define MB_WORKER_IDLE_EXIT_MS (60 * 1000)

static MbSlot *my_slot = NULL;

/* The pipeline being run */
typedef struct MbWorkerBatch
{
	char		pipeline_name[NAMEDATALEN];
	int			timeout_ms;
	MbSourceCommits *source_commits;
	bool		continuous;

	/*
	 * The count of source commits when the current batch took its snapshot,
	 * or 0 if it took none: every commit counted by then is in the window,
	 * as backends count their commits once these are visible.
	 */
	uint64		commits_covered;
} MbWorkerBatch;

/* What a batch allocates outside its transaction, freed by the next one */
static MemoryContext batch_context = NULL;

static TimeoutId batch_timeout_id;
static TimeoutId batch_terminate_id;
static volatile sig_atomic_t batch_timed_out = false;
static volatile sig_atomic_t batch_terminated = false;

/* The error that ends this worker in the middle of a batch, for its slot */
static emit_log_hook_type prev_emit_log_hook = NULL;
static int	fatal_sqlerrcode = 0;
static char fatal_message[sizeof(((MbSlot *) NULL)->result_message)];

/* Runs in the signal handler: cancel the batch like a statement timeout */
static void
mb_batch_timeout_handler(void)
{
	batch_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Runs in the signal handler: the batch caught its cancel and went on, so
 * the worker ends as on pg_terminate_backend(), which no transform can
 * catch; the scheduler records the failure.
 */
static void
mb_batch_terminate_handler(void)
{
	batch_terminated = true;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* Batches commit with microbatch.synchronous_commit, whatever else says */
static void
mb_worker_apply_settings(void)
{
	SetConfigOption("synchronous_commit",
					GetConfigOption("microbatch.synchronous_commit", false, false),
					PGC_SUSET, PGC_S_OVERRIDE);
}

/* The commits counted for the pipeline's source so far (see commits_covered) */
static uint64
mb_worker_source_commits(const MbWorkerBatch *batch)
{
	MbSlot	   *scheduler;
	uint64		commits = 0;

	if (batch->source_commits != NULL)
		return pg_atomic_read_u64(&batch->source_commits->commits);
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	scheduler = mb_scheduler_slot(my_slot->dboid);
	if (scheduler != NULL)
		commits = pg_atomic_read_u64(&scheduler->db_commits);
	LWLockRelease(mb_shared->lock);
	return commits;
}

static void
mb_worker_before_snapshot(void *arg, const MbPipeline *pipeline)
{
	MbWorkerBatch *batch = arg;

	batch->commits_covered = mb_worker_source_commits(batch);
}

static void
mb_worker_batch_started(void *arg, const MbPipeline *pipeline, int64 batch_id)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot->batch_id = batch_id;
	LWLockRelease(mb_shared->lock);
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("microbatch: pipeline %s, batch " INT64_FORMAT,
									pipeline->name, batch_id));
}

static const char *
mb_worker_timeout_reason(void *arg)
{
	MbWorkerBatch *batch = arg;

	if (!batch_timed_out)
		return NULL;
	return psprintf("batch of pipeline \"%s\" ran longer than its batch_timeout of %d ms",
					batch->pipeline_name, batch->timeout_ms);
}

/* Give the slot back.  Caller holds the lock exclusively. */
static void
mb_worker_release_slot(void)
{
	if (my_slot->pid != MyProcPid)
		return;
	my_slot->kind = MB_SLOT_UNUSED;
	my_slot->pid = 0;
	my_slot->latch = NULL;
	my_slot->pipeline_id = 0;
	my_slot->result_ready = false;
	my_slot->exit_requested = false;
	mb_latch_waiting_schedulers();
}

/*
 * An error that ends the process (one a transform made FATAL by setting
 * exit_on_error, for one) is the batch's failure: keep it for the slot.
 */
static void
mb_worker_emit_log(ErrorData *edata)
{
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (edata->elevel >= FATAL && fatal_sqlerrcode == 0)
	{
		fatal_sqlerrcode = edata->sqlerrcode;
		strlcpy(fatal_message, edata->message ? edata->message : "", sizeof(fatal_message));
	}
}

/*
 * Leaving.  In the middle of a batch (terminated, or an error made FATAL),
 * whose transaction is rolled back by now, the slot tells the scheduler,
 * which records the failure and then frees the slot: until then no other
 * database can take it, and the outcome with it.  So does an outcome
 * reported but not read yet.
 */
static void
mb_worker_detach(int code, Datum arg)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	if (my_slot->pid == MyProcPid && my_slot->state == MB_STATE_RUNNING)
	{
		int32		pipeline_id = my_slot->pipeline_id;
		TimestampTz started_at = my_slot->since;
		MbSlot	   *scheduler;

		my_slot->state = MB_STATE_LEFT;
		my_slot->pid = 0;
		my_slot->latch = NULL;
		my_slot->pipeline_id = 0;
		my_slot->result_pipeline_id = pipeline_id;
		my_slot->result_status = MB_BATCH_FAILED;
		my_slot->result_failures = -1;
		my_slot->result_started_at = started_at;
		my_slot->result_capped = false;
		my_slot->result_batches = 1;
		my_slot->result_commits_covered = 0;
		my_slot->result_timed_out = batch_terminated;
		my_slot->result_sqlerrcode = fatal_sqlerrcode;
		strlcpy(my_slot->result_message, fatal_message,
				sizeof(my_slot->result_message));
		my_slot->result_ready = true;
		scheduler = mb_scheduler_slot(my_slot->dboid);
		if (scheduler != NULL)
			SetLatch(scheduler->latch);
	}
	else if (my_slot->pid == MyProcPid && my_slot->result_ready &&
			 !my_slot->exit_requested && mb_scheduler_slot(my_slot->dboid) != NULL)
	{
		/*
		 * Terminated as we handed a pipeline back: our scheduler has not read
		 * the outcome yet, and frees the slot once it has.
		 */
		my_slot->state = MB_STATE_LEFT;
		my_slot->pid = 0;
		my_slot->latch = NULL;
	}
	else
		mb_worker_release_slot();
	LWLockRelease(mb_shared->lock);
}

static void
mb_worker_attach(int slotno)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot = &mb_shared->slots[slotno];
	if (my_slot->kind != MB_SLOT_WORKER || my_slot->pid != 0 ||
		my_slot->state == MB_STATE_LEFT)
	{
		LWLockRelease(mb_shared->lock);
		elog(LOG, "microbatch worker slot %d is not waiting for a worker", slotno);
		proc_exit(0);
	}
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	my_slot->since = GetCurrentTimestamp();
	LWLockRelease(mb_shared->lock);
	before_shmem_exit(mb_worker_detach, (Datum) 0);
}

/* Tell the scheduler how the last batch ended, and go idle */
static void
mb_worker_report(int32 pipeline_id, const MbBatchResult *result,
				 const MbWorkerBatch *batch, TimestampTz started_at,
				 int batches)
{
	MbSlot	   *scheduler;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot->result_pipeline_id = pipeline_id;
	my_slot->result_status = result->status;
	my_slot->result_failures = result->failures;
	my_slot->result_started_at = result->started_at ? result->started_at : started_at;
	my_slot->result_capped = result->capped;
	my_slot->result_batches = batches;
	my_slot->result_commits_covered = batch->commits_covered;
	my_slot->result_ready = true;
	my_slot->pipeline_id = 0;
	my_slot->batch_id = 0;
	my_slot->keep_running = false;
	my_slot->state = MB_STATE_IDLE;
	my_slot->since = GetCurrentTimestamp();
	scheduler = mb_scheduler_slot(my_slot->dboid);
	if (scheduler != NULL)
		SetLatch(scheduler->latch);
	LWLockRelease(mb_shared->lock);
}

/*
 * What a transform may have left at session level, where the next batch,
 * perhaps another owner's, would find it.  In the batch's transaction.
 */
static void
mb_worker_reset_session(void)
{
	LockReleaseSession(USER_LOCKMETHOD);
	DropAllPreparedStatements();
	ResetSequenceCaches();
}

/* One batch of the pipeline, in a transaction of its own */
static MbBatchResult
mb_worker_run_batch(MbWorkerBatch *batch, TimestampTz started_at)
{
	MbBatchObserver observer = {batch, mb_worker_before_snapshot,
	mb_worker_batch_started, mb_worker_timeout_reason};
	MbBatchResult result;

	MemoryContextReset(batch_context);
	MemoryContextSwitchTo(batch_context);
	batch->commits_covered = 0;
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("microbatch: pipeline %s", batch->pipeline_name));
	batch_timed_out = false;
	if (batch->timeout_ms > 0)
	{
		enable_timeout_after(batch_timeout_id, batch->timeout_ms);
		enable_timeout_after(batch_terminate_id,
							 batch->timeout_ms > INT_MAX - MB_BATCH_CANCEL_GRACE_MS ?
							 INT_MAX : batch->timeout_ms + MB_BATCH_CANCEL_GRACE_MS);
	}
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	PG_TRY();
	{
		MbCall		call;

		mb_worker_reset_session();
		mb_call_begin(&call);
		result = mb_run_batch(batch->pipeline_name, call.caller, false, &observer);
		mb_call_end(&call);
		PopActiveSnapshot();
		CommitTransactionCommand();
		disable_timeout(batch_timeout_id, false);
		disable_timeout(batch_terminate_id, false);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		/*
		 * An error outside the transforms (the pipeline or its source is
		 * gone, the owner may no longer log in, a cancel...): log it, count
		 * it as a failure, and go on.
		 */
		HOLD_INTERRUPTS();
		disable_timeout(batch_timeout_id, false);
		disable_timeout(batch_terminate_id, false);
		MemoryContextSwitchTo(batch_context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		/* the abort left us in TopMemoryContext */
		MemoryContextSwitchTo(batch_context);
		RESUME_INTERRUPTS();
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED && batch_timed_out)
			error->message = (char *) mb_worker_timeout_reason(batch);
		ereport(LOG,
				(errmsg("microbatch pipeline \"%s\" could not run a batch: %s",
						batch->pipeline_name, error->message)));
		memset(&result, 0, sizeof(result));
		result.status = MB_BATCH_FAILED;
		result.failures = mb_record_failure(batch->pipeline_name, error, started_at);
	}
	PG_END_TRY();
	/* the transaction's end left us in TopMemoryContext */
	MemoryContextSwitchTo(batch_context);

	/* a cancel that came as the batch ended cancels nothing after it */
	QueryCancelPending = false;
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/*
 * Whether the scheduler lets us keep the pipeline for another batch: it did
 * not reload since it handed it over (a change may have paused it, or
 * changed its interval or owner), nothing of this database waits for a
 * worker, no other database is starved of workers, and our slot is not
 * wanted elsewhere.  Otherwise the scheduler decides, as after any batch.
 */
static bool
mb_worker_may_keep_pipeline(void)
{
	bool		keep;

	LWLockAcquire(mb_shared->lock, LW_SHARED);
	keep = my_slot->keep_running && !my_slot->exit_requested;
	for (int i = 0; keep && i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind != MB_SLOT_SCHEDULER)
			continue;
		if (slot->dboid == my_slot->dboid)
			keep = slot->waiting == 0 &&
				pg_atomic_read_u32(&slot->reload_requested) == 0;
		else
			keep = slot->starved_since == 0;
	}
	LWLockRelease(mb_shared->lock);
	return keep;
}

/*
 * After a batch that committed, whether to run the pipeline's next batch
 * here at once rather than hand the pipeline back to the scheduler, which
 * would hand it out again: a batch that max_batch_rows cut short leaves a
 * backlog, and a continuous pipeline has rows waiting when commits came
 * that its snapshot may have missed, by the time microbatch.coalesce_delay
 * has passed since the batch started.  Saves the round trip through the
 * scheduler, two wake-ups, on the path from commit to batch.
 */
static bool
mb_worker_next_batch_due(const MbWorkerBatch *batch, const MbBatchResult *result,
						 TimestampTz started_at)
{
	TimestampTz due;

	if (result->status != MB_BATCH_COMMITTED ||
		!(result->capped || batch->continuous))
		return false;
	/* nothing came yet: the scheduler wakes on the next commit */
	if (!result->capped &&
		mb_worker_source_commits(batch) == batch->commits_covered)
		return false;
	due = result->capped ? 0 :
		TimestampTzPlusMilliseconds(started_at, mb_coalesce_delay);
	for (;;)
	{
		TimestampTz now;

		/* a cancel between batches cancels nothing; a termination ends us */
		QueryCancelPending = false;
		if (ProcDiePending)
			return false;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			mb_worker_apply_settings();
		}
		if (!mb_enabled || !mb_worker_may_keep_pipeline())
			return false;
		now = GetCurrentTimestamp();
		if (now >= due)
			break;
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) ((due - now + 999) / 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	return result->capped ||
		mb_worker_source_commits(batch) > batch->commits_covered;
}

/* Run the pipeline handed over, for as many batches as are due in a row */
static void
mb_worker_run(void)
{
	int32		pipeline_id;
	MbWorkerBatch batch;
	MbBatchResult result;
	MemoryContext context = CurrentMemoryContext;
	TimestampTz started_at = GetCurrentTimestamp();
	int			batches = 0;

	memset(&batch, 0, sizeof(batch));
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	pipeline_id = my_slot->pipeline_id;
	strlcpy(batch.pipeline_name, my_slot->pipeline_name, NAMEDATALEN);
	batch.timeout_ms = my_slot->batch_timeout_ms;
	batch.source_commits = my_slot->source_commits;
	batch.continuous = my_slot->continuous;
	my_slot->state = MB_STATE_RUNNING;
	my_slot->since = started_at;
	LWLockRelease(mb_shared->lock);

	for (;;)
	{
		result = mb_worker_run_batch(&batch, started_at);
		batches++;
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		my_slot->batch_id = 0;
		LWLockRelease(mb_shared->lock);
		if (!mb_worker_next_batch_due(&batch, &result, started_at))
			break;
		started_at = GetCurrentTimestamp();
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		my_slot->since = started_at;
		LWLockRelease(mb_shared->lock);
	}
	if (batches > 1)
		elog(DEBUG1, "microbatch pipeline \"%s\" ran %d batches in a row on this worker",
			 batch.pipeline_name, batches);
	mb_worker_report(pipeline_id, &result, &batch, started_at, batches);
	MemoryContextSwitchTo(context);
}

void
microbatch_worker_main(Datum arg)
{
	TimestampTz idle_since;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	mb_worker_attach(DatumGetInt32(arg));
	BackgroundWorkerInitializeConnectionByOid(my_slot->dboid, InvalidOid, 0);
	mb_background_session_defaults(true);
	mb_worker_apply_settings();
	batch_timeout_id = RegisterTimeout(USER_TIMEOUT, mb_batch_timeout_handler);
	batch_terminate_id = RegisterTimeout(USER_TIMEOUT, mb_batch_terminate_handler);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = mb_worker_emit_log;
	pgstat_report_appname("microbatch worker");
	batch_context = AllocSetContextCreate(TopMemoryContext,
										  "microbatch worker batch",
										  ALLOCSET_DEFAULT_SIZES);
	idle_since = GetCurrentTimestamp();

	for (;;)
	{
		bool		assigned;

		/* a cancel while idle cancels nothing; a termination ends us */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			mb_worker_apply_settings();
		}

		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		assigned = my_slot->state == MB_STATE_ASSIGNED;

		/*
		 * Leave when asked to (another database needs the slot, or our
		 * scheduler left), or after a minute idle, unless handed a pipeline
		 * just now.
		 */
		if (!assigned &&
			(my_slot->exit_requested ||
			 (!my_slot->result_ready &&
			  TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(),
										 MB_WORKER_IDLE_EXIT_MS))))
		{
			mb_worker_release_slot();
			LWLockRelease(mb_shared->lock);
			proc_exit(0);
		}
		LWLockRelease(mb_shared->lock);

		if (assigned)
		{
			mb_worker_run();
			idle_since = GetCurrentTimestamp();
			continue;
		}

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 MB_WORKER_IDLE_EXIT_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
