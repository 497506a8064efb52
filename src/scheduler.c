/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler of one database: when each pipeline runs, and where.
 *
 * Each enabled pipeline runs every batch_interval, measured from the start
 * of its previous batch; a batch that overruns makes the next one start at
 * once, never several.  A pipeline with batch_interval 0 runs when a
 * transaction that inserted into a source commits (the commit sets our
 * latch, while we wait for one), and again at once after each batch if
 * commits came that its snapshot may have missed, or if max_batch_rows cut
 * its window short.  A failed batch is retried after an exponential backoff
 * from one second, with jitter, capped at microbatch.max_retry_delay; source
 * commits do not bring the retry forward.
 *
 * Due pipelines are handed, most overdue first, to idle batch workers of
 * this database; more are started while fewer than microbatch.max_workers
 * run in the whole cluster.  One pipeline is never on two workers.
 *
 * A pipeline whose last batch found nothing is run again only once a source
 * of this database had an insert committed, or a naptime passed.
 *
 * The scheduler reads the catalog every microbatch.naptime, and at once when
 * a microbatch function changed a pipeline.  It exits when the extension is
 * not installed in its database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker.h"

typedef struct MbScheduled
{
	int32		id;
	char		name[NAMEDATALEN];
	int64		interval_ms;
	bool		enabled;
	TimestampTz next_run;
	int			slotno;			/* batch worker running it, or -1 */
	bool		woken;			/* a source commit came that its last batch's
								 * snapshot may have missed */
	bool		last_empty;		/* its last batch found nothing */
	bool		backing_off;	/* its last batch failed: wait for next_run */
	TimestampTz last_dispatch;
} MbScheduled;

static MbSlot *my_slot = NULL;
static MbScheduled *pipelines = NULL;
static int	npipelines = 0;
static BackgroundWorkerHandle **worker_handles = NULL;

static void
mb_scheduler_detach(int code, Datum arg)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	if (my_slot->pid == MyProcPid)
	{
		my_slot->kind = MB_SLOT_UNUSED;
		my_slot->pid = 0;
		my_slot->latch = NULL;
	}
	LWLockRelease(mb_shared->lock);
	mb_schedule_forget_database(MyDatabaseId);
}

/* Take a slot; exit if this database has a scheduler already */
static void
mb_scheduler_attach(Oid dboid)
{
	MbSlot	   *free_slot = NULL;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_SCHEDULER && slot->dboid == dboid)
		{
			LWLockRelease(mb_shared->lock);
			proc_exit(0);
		}
		if (slot->kind == MB_SLOT_UNUSED && free_slot == NULL)
			free_slot = slot;
	}
	if (free_slot != NULL)
	{
		free_slot->kind = MB_SLOT_SCHEDULER;
		free_slot->state = MB_STATE_IDLE;
		free_slot->dboid = dboid;
		free_slot->pid = MyProcPid;
		free_slot->latch = MyLatch;
		free_slot->since = GetCurrentTimestamp();
		pg_atomic_write_u32(&free_slot->reload_requested, 0);
		pg_atomic_write_u32(&free_slot->wants_source_commits, 0);
	}
	LWLockRelease(mb_shared->lock);
	if (free_slot == NULL)
	{
		elog(LOG, "microbatch scheduler found no free slot");
		proc_exit(1);
	}
	my_slot = free_slot;
	before_shmem_exit(mb_scheduler_detach, (Datum) 0);
}

static int64
mb_retry_delay_ms(int32 failures)
{
	double		delay = 1000.0;

	for (int i = 1; i < failures && delay < mb_max_retry_delay; i++)
		delay *= 2;
	delay = Min(delay, (double) mb_max_retry_delay);
	/* jitter: between half and all of the delay */
	return (int64) (delay * (0.5 + 0.5 * pg_prng_double(&pg_global_prng_state)));
}

static MbScheduled *
mb_find_pipeline(MbScheduled *list, int n, int32 id)
{
	for (int i = 0; i < n; i++)
		if (list[i].id == id)
			return &list[i];
	return NULL;
}

/*
 * Read the pipelines of this database.  Pipelines already known keep their
 * schedule; new ones start from their last batch in the ledger.
 */
static void
mb_scheduler_reload(void)
{
	MemoryContext oldcxt;
	MbScheduled *fresh;
	int			nfresh;
	TimestampTz now = GetCurrentTimestamp();
	bool		installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading microbatch pipelines");

	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'microbatch'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the microbatch extension");
	installed = SPI_processed > 0;
	if (installed &&
		SPI_execute("SELECT p.pipeline_id, p.pipeline_name::pg_catalog.text, "
					"(pg_catalog.date_part('epoch', p.batch_interval) * 1000)::pg_catalog.int8, "
					"p.state = 'enabled', p.consecutive_failures, "
					"last.started_at, last.finished_at "
					"FROM microbatch.pipeline p "
					"LEFT JOIN LATERAL (SELECT b.started_at, b.finished_at "
					"FROM microbatch.batch b WHERE b.pipeline_id = p.pipeline_id "
					"ORDER BY b.batch_id DESC, b.attempt DESC LIMIT 1) last ON true",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read microbatch.pipeline");

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	nfresh = installed ? (int) SPI_processed : 0;
	fresh = palloc0(sizeof(MbScheduled) * Max(nfresh, 1));
	MemoryContextSwitchTo(oldcxt);

	for (int i = 0; i < nfresh; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MbScheduled *p = &fresh[i];
		MbScheduled *known;
		bool		isnull;
		int32		failures;
		Datum		started;
		bool		started_null;
		Datum		finished;
		bool		finished_null;

		p->id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		strlcpy(p->name, SPI_getvalue(tuple, desc, 2), NAMEDATALEN);
		p->interval_ms = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
		p->enabled = DatumGetBool(SPI_getbinval(tuple, desc, 4, &isnull));
		failures = DatumGetInt32(SPI_getbinval(tuple, desc, 5, &isnull));
		started = SPI_getbinval(tuple, desc, 6, &started_null);
		finished = SPI_getbinval(tuple, desc, 7, &finished_null);

		known = mb_find_pipeline(pipelines, npipelines, p->id);
		if (known != NULL)
		{
			p->slotno = known->slotno;
			p->woken = known->woken;
			p->last_empty = known->last_empty;
			p->backing_off = known->backing_off;
			p->last_dispatch = known->last_dispatch;
			p->next_run = known->next_run;
			/*
			 * A resumed pipeline runs now; a new interval applies from now
			 * (also to a continuous pipeline that was waiting a naptime for
			 * its next commit), except to a retry's backoff.
			 */
			if (p->enabled && !known->enabled)
			{
				p->next_run = now;
				p->backing_off = false;
			}
			else if (p->interval_ms != known->interval_ms && !p->backing_off)
				p->next_run = Min(p->next_run,
								  TimestampTzPlusMilliseconds(now, p->interval_ms));
		}
		else
		{
			p->slotno = -1;
			p->woken = true;
			p->backing_off = failures > 0 && !finished_null;
			if (p->backing_off)
				p->next_run = TimestampTzPlusMilliseconds(DatumGetTimestampTz(finished),
														  mb_retry_delay_ms(failures));
			else if (!started_null)
				p->next_run = TimestampTzPlusMilliseconds(DatumGetTimestampTz(started),
														  p->interval_ms);
			else
				p->next_run = now;
		}
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	if (!installed)
	{
		ereport(DEBUG1,
				(errmsg("microbatch scheduler exiting: the extension is not installed in this database")));
		proc_exit(0);
	}

	/* pipelines that are gone or disabled are no longer shown as scheduled */
	for (int i = 0; i < npipelines; i++)
	{
		MbScheduled *p = mb_find_pipeline(fresh, nfresh, pipelines[i].id);

		if (p == NULL)
			mb_schedule_publish(MyDatabaseId, pipelines[i].id, 0);
	}
	for (int i = 0; i < nfresh; i++)
		mb_schedule_publish(MyDatabaseId, fresh[i].id,
							fresh[i].enabled ? fresh[i].next_run : 0);

	if (pipelines != NULL)
		pfree(pipelines);
	pipelines = fresh;
	npipelines = nfresh;
}

/* Take the outcomes of finished batches, and notice workers that left */
static void
mb_scheduler_collect(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < npipelines; i++)
	{
		MbScheduled *p = &pipelines[i];
		MbSlot	   *slot;
		bool		done = false;
		MbBatchStatus status = MB_BATCH_EMPTY;
		int32		failures = 0;
		TimestampTz started_at = now;
		bool		capped = false;
		uint64		commits_covered = 0;

		if (p->slotno < 0)
			continue;
		slot = &mb_shared->slots[p->slotno];
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		if (slot->result_ready && slot->result_pipeline_id == p->id)
		{
			done = true;
			status = slot->result_status;
			failures = slot->result_failures;
			started_at = slot->result_started_at;
			capped = slot->result_capped;
			commits_covered = slot->result_commits_covered;
			slot->result_ready = false;
		}
		else if (slot->kind != MB_SLOT_WORKER || slot->dboid != MyDatabaseId ||
				 slot->pipeline_id != p->id)
		{
			/* the worker exited before reporting: try again shortly */
			done = true;
			status = MB_BATCH_FAILED;
			started_at = now;
			failures = 1;
		}
		LWLockRelease(mb_shared->lock);
		if (!done)
			continue;

		p->slotno = -1;
		p->last_empty = status == MB_BATCH_EMPTY;
		p->backing_off = status == MB_BATCH_FAILED;
		/* only commits its snapshot may have missed call for another batch */
		p->woken = pg_atomic_read_u64(&my_slot->source_commits) > commits_covered;
		if (status == MB_BATCH_FAILED)
		{
			if (failures >= mb_max_retries)
				p->enabled = false; /* the engine marked it failed */
			p->next_run = TimestampTzPlusMilliseconds(now, mb_retry_delay_ms(failures));
		}
		else if (p->interval_ms == 0)
			p->next_run = capped || p->woken ? now :
				TimestampTzPlusMilliseconds(now, mb_naptime);
		else
			p->next_run = Max(now, TimestampTzPlusMilliseconds(started_at, p->interval_ms));
		mb_schedule_publish(MyDatabaseId, p->id, p->enabled ? p->next_run : 0);
	}
}

/* Forget workers we started that exited before they took their slot */
static void
mb_scheduler_reap(void)
{
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		pid_t		pid;

		if (worker_handles[i] == NULL ||
			GetBackgroundWorkerPid(worker_handles[i], &pid) != BGWH_STOPPED)
			continue;
		pfree(worker_handles[i]);
		worker_handles[i] = NULL;
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		if (mb_shared->slots[i].kind == MB_SLOT_WORKER &&
			mb_shared->slots[i].pid == 0)
			mb_shared->slots[i].kind = MB_SLOT_UNUSED;
		LWLockRelease(mb_shared->lock);
	}
}

static int
mb_compare_next_run(const void *a, const void *b)
{
	const MbScheduled *pa = *(MbScheduled *const *) a;
	const MbScheduled *pb = *(MbScheduled *const *) b;

	if (pa->next_run != pb->next_run)
		return pa->next_run < pb->next_run ? -1 : 1;
	return pa->id - pb->id;
}

/*
 * Hand one pipeline to an idle worker of this database, or to a new one if
 * the cluster runs fewer than max_workers.  Returns false when no worker can
 * take it.
 */
static bool
mb_scheduler_assign(MbScheduled *p)
{
	int			idle = -1;
	int			unused = -1;
	int			workers = 0;
	MbSlot	   *slot;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		slot = &mb_shared->slots[i];
		if (slot->kind == MB_SLOT_WORKER)
		{
			workers++;
			if (idle < 0 && slot->dboid == MyDatabaseId &&
				slot->state == MB_STATE_IDLE && !slot->result_ready &&
				slot->latch != NULL)
				idle = i;
		}
		else if (slot->kind == MB_SLOT_UNUSED && unused < 0)
			unused = i;
	}

	if (idle >= 0)
		slot = &mb_shared->slots[idle];
	else if (workers < mb_max_workers && unused >= 0)
	{
		slot = &mb_shared->slots[unused];
		slot->kind = MB_SLOT_WORKER;
		slot->dboid = MyDatabaseId;
		slot->pid = 0;
		slot->latch = NULL;
		slot->result_ready = false;
	}
	else
	{
		LWLockRelease(mb_shared->lock);
		return false;
	}

	slot->state = MB_STATE_ASSIGNED;
	slot->pipeline_id = p->id;
	strlcpy(slot->pipeline_name, p->name, NAMEDATALEN);
	slot->batch_id = 0;
	slot->since = now;
	if (slot->latch != NULL)
		SetLatch(slot->latch);
	p->slotno = slot - mb_shared->slots;
	p->woken = false;
	p->last_dispatch = now;
	LWLockRelease(mb_shared->lock);

	if (idle < 0 &&
		!mb_start_dynamic_worker("worker", MyDatabaseId, Int32GetDatum(p->slotno),
								 &worker_handles[p->slotno]))
	{
		static TimestampTz last_warning = 0;

		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		slot->kind = MB_SLOT_UNUSED;
		LWLockRelease(mb_shared->lock);
		p->slotno = -1;
		if (TimestampDifferenceExceeds(last_warning, now, 60 * 1000))
		{
			ereport(WARNING,
					(errmsg("microbatch could not start a batch worker: no background worker slot is free"),
					 errhint("Raise max_worker_processes, or lower microbatch.max_workers.")));
			last_warning = now;
		}
		return false;
	}
	return true;
}

/*
 * Whether a source commit makes a pipeline due before its next_run: a
 * continuous pipeline waiting for rows, not for a retry.
 */
static bool
mb_runs_on_commit(const MbScheduled *p)
{
	return p->enabled && p->slotno < 0 && p->interval_ms == 0 && !p->backing_off;
}

/*
 * Start the due pipelines, most overdue first, while workers can take them.
 * Returns false if some had to wait for a worker.
 */
static bool
mb_scheduler_dispatch(void)
{
	TimestampTz now = GetCurrentTimestamp();
	MbScheduled **due = palloc(sizeof(MbScheduled *) * Max(npipelines, 1));
	int			ndue = 0;

	for (int i = 0; i < npipelines; i++)
	{
		MbScheduled *p = &pipelines[i];

		if (!p->enabled || p->slotno >= 0)
			continue;
		if (p->next_run > now && !(mb_runs_on_commit(p) && p->woken))
			continue;

		/*
		 * Nothing was inserted into a source of this database since the
		 * pipeline's last batch, which found nothing: skip this run, up to
		 * a naptime (for rows whose commit wakes nobody, such as those of
		 * a COMMIT PREPARED).  Idle pipelines cost next to nothing.
		 */
		if (p->interval_ms > 0 && p->last_empty && !p->woken &&
			!TimestampDifferenceExceeds(p->last_dispatch, now, mb_naptime))
		{
			p->next_run = Min(TimestampTzPlusMilliseconds(now, p->interval_ms),
							  TimestampTzPlusMilliseconds(p->last_dispatch, mb_naptime));
			mb_schedule_publish(MyDatabaseId, p->id, p->next_run);
			continue;
		}
		due[ndue++] = p;
	}
	qsort(due, ndue, sizeof(MbScheduled *), mb_compare_next_run);
	for (int i = 0; i < ndue; i++)
		if (!mb_scheduler_assign(due[i]))
		{
			pfree(due);
			return false;
		}
	pfree(due);
	return true;
}

/*
 * How long to sleep: until the next pipeline is due, or the next reload.
 * While no worker can take more (or batches are disabled), only a finishing
 * worker, a change or the reload wakes us.
 */
static long
mb_scheduler_timeout(TimestampTz next_reload, bool can_dispatch)
{
	TimestampTz wake = next_reload;
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; can_dispatch && i < npipelines; i++)
		if (pipelines[i].enabled && pipelines[i].slotno < 0)
			wake = Min(wake, (mb_runs_on_commit(&pipelines[i]) && pipelines[i].woken) ?
					   now : pipelines[i].next_run);
	if (wake <= now)
		return 0;
	return (long) ((wake - now + 999) / 1000);
}

static bool
mb_scheduler_wants_commits(bool can_dispatch)
{
	for (int i = 0; can_dispatch && i < npipelines; i++)
		if (mb_runs_on_commit(&pipelines[i]))
			return true;
	return false;
}

void
microbatch_scheduler_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	TimestampTz next_reload = 0;
	uint64		commits_seen;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	mb_scheduler_attach(dboid);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("microbatch scheduler");
	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											sizeof(BackgroundWorkerHandle *) * mb_shared->nslots);
	commits_seen = pg_atomic_read_u64(&my_slot->source_commits);

	for (;;)
	{
		uint64		commits;
		bool		can_dispatch;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (pg_atomic_exchange_u32(&my_slot->reload_requested, 0) != 0 ||
			GetCurrentTimestamp() >= next_reload)
		{
			mb_scheduler_reload();
			next_reload = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), mb_naptime);
		}

		commits = pg_atomic_read_u64(&my_slot->source_commits);
		if (commits != commits_seen)
		{
			commits_seen = commits;
			for (int i = 0; i < npipelines; i++)
				pipelines[i].woken = true;
		}

		mb_scheduler_reap();
		mb_scheduler_collect();
		can_dispatch = mb_enabled && mb_scheduler_dispatch();

		/*
		 * Ask committing backends to set our latch only while a commit would
		 * start a batch; otherwise their commits are counted, and seen when
		 * something else wakes us.  A commit counted before the flag was set
		 * is caught here, after the barrier.
		 */
		if (mb_scheduler_wants_commits(can_dispatch))
		{
			pg_atomic_write_u32(&my_slot->wants_source_commits, 1);
			pg_memory_barrier();
			if (pg_atomic_read_u64(&my_slot->source_commits) != commits_seen)
				continue;
		}
		else
			pg_atomic_write_u32(&my_slot->wants_source_commits, 0);

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 mb_scheduler_timeout(next_reload, can_dispatch),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
