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

/* The batch being run */
typedef struct MbWorkerBatch
{
	char		pipeline_name[NAMEDATALEN];
	int			timeout_ms;
	MbSourceCommits *source_commits;

	/*
	 * The count of source commits when the batch took its snapshot, or 0 if
	 * it took none: every commit counted by then is in the window, as
	 * backends count their commits once these are visible.
	 */
	uint64		commits_covered;
} MbWorkerBatch;

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

static void
mb_worker_before_snapshot(void *arg, const MbPipeline *pipeline)
{
	MbWorkerBatch *batch = arg;
	MbSlot	   *scheduler;

	if (batch->source_commits != NULL)
	{
		batch->commits_covered = pg_atomic_read_u64(&batch->source_commits->commits);
		return;
	}
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	scheduler = mb_scheduler_slot(my_slot->dboid);
	if (scheduler != NULL)
		batch->commits_covered = pg_atomic_read_u64(&scheduler->db_commits);
	LWLockRelease(mb_shared->lock);
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
 * database can take it, and the outcome with it.
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

/* Tell the scheduler how the batch ended, and go idle */
static void
mb_worker_report(int32 pipeline_id, const MbBatchResult *result,
				 const MbWorkerBatch *batch, TimestampTz started_at)
{
	MbSlot	   *scheduler;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot->result_pipeline_id = pipeline_id;
	my_slot->result_status = result->status;
	my_slot->result_failures = result->failures;
	my_slot->result_started_at = result->started_at ? result->started_at : started_at;
	my_slot->result_capped = result->capped;
	my_slot->result_commits_covered = batch->commits_covered;
	my_slot->result_ready = true;
	my_slot->pipeline_id = 0;
	my_slot->batch_id = 0;
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

static void
mb_worker_run(void)
{
	int32		pipeline_id;
	MbWorkerBatch batch;
	MbBatchObserver observer = {&batch, mb_worker_before_snapshot,
	mb_worker_batch_started, mb_worker_timeout_reason};
	MbBatchResult result;
	MemoryContext context = CurrentMemoryContext;
	TimestampTz started_at = GetCurrentTimestamp();

	memset(&batch, 0, sizeof(batch));
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	pipeline_id = my_slot->pipeline_id;
	strlcpy(batch.pipeline_name, my_slot->pipeline_name, NAMEDATALEN);
	batch.timeout_ms = my_slot->batch_timeout_ms;
	batch.source_commits = my_slot->source_commits;
	my_slot->state = MB_STATE_RUNNING;
	my_slot->since = started_at;
	LWLockRelease(mb_shared->lock);

	pgstat_report_activity(STATE_RUNNING,
						   psprintf("microbatch: pipeline %s", batch.pipeline_name));
	batch_timed_out = false;
	if (batch.timeout_ms > 0)
	{
		enable_timeout_after(batch_timeout_id, batch.timeout_ms);
		enable_timeout_after(batch_terminate_id,
							 batch.timeout_ms > INT_MAX - MB_BATCH_CANCEL_GRACE_MS ?
							 INT_MAX : batch.timeout_ms + MB_BATCH_CANCEL_GRACE_MS);
	}
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	PG_TRY();
	{
		MbCall		call;

		mb_worker_reset_session();
		mb_call_begin(&call);
		result = mb_run_batch(batch.pipeline_name, call.caller, false, &observer);
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
		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED && batch_timed_out)
			error->message = (char *) mb_worker_timeout_reason(&batch);
		ereport(LOG,
				(errmsg("microbatch pipeline \"%s\" could not run a batch: %s",
						batch.pipeline_name, error->message)));
		memset(&result, 0, sizeof(result));
		result.status = MB_BATCH_FAILED;
		result.failures = mb_record_failure(batch.pipeline_name, error, started_at);
		FreeErrorData(error);
	}
	PG_END_TRY();

	/* a cancel that came as the batch ended cancels nothing after it */
	QueryCancelPending = false;
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	mb_worker_report(pipeline_id, &result, &batch, started_at);
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
