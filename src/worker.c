/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Batch workers: run the batches the scheduler hands them.
 *
 * A batch worker is connected to one database as the bootstrap superuser
 * and runs the batch engine, which runs the transforms as each pipeline's
 * owner.  Each batch is a transaction of its own.  SIGTERM ends the worker
 * at the next interrupt check, in the middle of a transform too; the batch
 * rolls back and is done again later.  A worker left idle for a minute
 * exits, giving its slot back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker.h"

#define MB_WORKER_IDLE_EXIT_MS (60 * 1000)

static MbSlot *my_slot = NULL;

/*
 * The scheduler's count of source commits when the batch took its snapshot,
 * or 0 if it took none: every commit counted by then is in the window, as
 * backends count their commits once these are visible.
 */
static uint64 commits_covered = 0;

/* Batches commit with microbatch.synchronous_commit, whatever else says */
static void
mb_worker_apply_settings(void)
{
	SetConfigOption("synchronous_commit",
					GetConfigOption("microbatch.synchronous_commit", false, false),
					PGC_SUSET, PGC_S_OVERRIDE);
}

/* Called by the engine once it knows the batch id */
void
mb_worker_report_batch(const char *pipeline_name, int64 batch_id)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot->batch_id = batch_id;
	LWLockRelease(mb_shared->lock);
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("microbatch: pipeline %s, batch " INT64_FORMAT,
									pipeline_name, batch_id));
}

/* Called by the engine right before it takes a batch's upper snapshot */
void
mb_worker_note_snapshot(void)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_SCHEDULER && slot->dboid == my_slot->dboid)
			commits_covered = pg_atomic_read_u64(&slot->source_commits);
	}
	LWLockRelease(mb_shared->lock);
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
}

static void
mb_worker_detach(int code, Datum arg)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	mb_worker_release_slot();
	LWLockRelease(mb_shared->lock);
}

static void
mb_worker_attach(int slotno)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot = &mb_shared->slots[slotno];
	if (my_slot->kind != MB_SLOT_WORKER || my_slot->pid != 0)
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
				 TimestampTz started_at)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	my_slot->result_pipeline_id = pipeline_id;
	my_slot->result_status = result->status;
	my_slot->result_failures = result->failures;
	my_slot->result_started_at = result->started_at ? result->started_at : started_at;
	my_slot->result_capped = result->capped;
	my_slot->result_commits_covered = commits_covered;
	my_slot->result_ready = true;
	my_slot->pipeline_id = 0;
	my_slot->batch_id = 0;
	my_slot->state = MB_STATE_IDLE;
	my_slot->since = GetCurrentTimestamp();
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_SCHEDULER && slot->dboid == my_slot->dboid &&
			slot->latch != NULL)
			SetLatch(slot->latch);
	}
	LWLockRelease(mb_shared->lock);
}

static void
mb_worker_run(void)
{
	char		pipeline_name[NAMEDATALEN];
	char		activity[NAMEDATALEN + 32];
	int32		pipeline_id;
	MbBatchResult result;
	MemoryContext context = CurrentMemoryContext;
	TimestampTz started_at = GetCurrentTimestamp();

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	pipeline_id = my_slot->pipeline_id;
	strlcpy(pipeline_name, my_slot->pipeline_name, NAMEDATALEN);
	my_slot->state = MB_STATE_RUNNING;
	my_slot->since = started_at;
	LWLockRelease(mb_shared->lock);

	commits_covered = 0;
	snprintf(activity, sizeof(activity), "microbatch: pipeline %s", pipeline_name);
	pgstat_report_activity(STATE_RUNNING, activity);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	PG_TRY();
	{
		MbCall		call;

		mb_call_begin(&call);
		result = mb_run_batch(pipeline_name, call.caller);
		mb_call_end(&call);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *error;

		/*
		 * An error outside the transforms (the pipeline or its source is
		 * gone, the catalog is unreadable...): log it, count it as a
		 * failure, and go on.
		 */
		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("microbatch pipeline \"%s\" could not run a batch: %s",
						pipeline_name, error->message)));
		result = mb_record_failure(pipeline_name, error);
		FreeErrorData(error);
	}
	PG_END_TRY();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	mb_worker_report(pipeline_id, &result, started_at);
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
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	mb_worker_apply_settings();
	pgstat_report_appname("microbatch worker");
	idle_since = GetCurrentTimestamp();

	for (;;)
	{
		bool		assigned;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			mb_worker_apply_settings();
		}

		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		assigned = my_slot->state == MB_STATE_ASSIGNED;
		/* leave after a minute idle, unless handed a pipeline just now */
		if (!assigned && !my_slot->result_ready &&
			TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(),
									   MB_WORKER_IDLE_EXIT_MS))
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
