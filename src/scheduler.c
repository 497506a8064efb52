/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler of one database: when each pipeline runs, and where.
 *
 * Each enabled pipeline runs every batch_interval, measured from the start
 * of its previous batch; a batch that overruns makes the next one start at
 * once, never several.  A pipeline with batch_interval 0 runs when a
 * transaction that wrote into its source commits (the commit sets our
 * latch, while we wait for one), and again at once after each batch if
 * commits came that its snapshot may have missed; its batches start
 * microbatch.coalesce_delay apart at least.  Whatever its interval, a
 * pipeline whose window max_batch_rows cut short runs again at once, until
 * it has caught up, without a coalesce_delay.  After a batch that
 * committed, its worker runs those next batches itself, without handing
 * the pipeline back to us in between, until no commit came during its
 * batch (or no backlog is left), we reload, another pipeline waits for a
 * worker or another database is starved of them: see worker.c.  A failed
 * batch is retried after an exponential backoff from one second, with
 * jitter, capped at microbatch.max_retry_delay; source commits do not bring
 * the retry forward.  A pipeline whose lock another transaction held is
 * tried again after its interval.
 *
 * Due pipelines are handed to idle batch workers of this database; more are
 * started while fewer than microbatch.max_workers run in the whole cluster.
 * One pipeline is never on two workers.  Worker slots go where work waits:
 * a database whose pipelines with rows to process wait for a worker is
 * starved, and the others make room for it.  A free slot goes to the
 * starved database with the fewest workers, the one waiting longest among
 * equals; a database with two more workers than a starved one gives up an
 * idle worker; so does a database with any, to one with none that has
 * waited a naptime, so that when more databases have work than there are
 * workers they take turns; and when the cluster is full, an idle worker of
 * another database leaves for a starved database with none, or for one
 * with two fewer, or when nothing waits for it in its own.
 * The naptime's check of an idle pipeline takes only a worker no one
 * waits for.  Within the database, owners take turns: the next pipeline to
 * start is one of the owner with the fewest batches running, most overdue
 * first.  Every batch ends within its batch_timeout, so no owner keeps a
 * worker for long.
 *
 * A pipeline whose last batch found nothing is run again only once its
 * source had a write committed, or a naptime passed.
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
	Oid			owner;
	int64		interval_ms;
	int			timeout_ms;		/* its own, or microbatch.batch_timeout */
	bool		own_timeout;
	bool		enabled;
	TimestampTz next_run;
	int			slotno;			/* batch worker running it, or -1 */
	MbSourceCommits *source_commits;	/* or NULL: count the database's */
	uint64		commits_seen;
	bool		woken;			/* a source commit came that its last batch's
								 * snapshot may have missed */
	bool		last_empty;		/* its last batch found nothing */
	bool		backing_off;	/* its last batch failed: wait for next_run */
	TimestampTz last_dispatch;
} MbScheduled;

typedef struct MbWorkerHandle
{
	BackgroundWorkerHandle *handle;
	uint64		generation;		/* of the slot when we started it */
} MbWorkerHandle;

static MbSlot *my_slot = NULL;
static MbScheduled *pipelines = NULL;
static int	npipelines = 0;
static MbWorkerHandle *worker_handles = NULL;
static BackgroundWorkerHandle *retention_worker = NULL;

/* The slot of a worker that left in the middle of a batch is free again */
static void
mb_scheduler_free_left(MbSlot *slot)
{
	slot->kind = MB_SLOT_UNUSED;
	slot->state = MB_STATE_IDLE;
	mb_latch_waiting_schedulers();
}

/*
 * Leaving: our workers leave too, once idle (a new scheduler would not know
 * what they were doing), and what we published goes.
 */
static void
mb_scheduler_detach(int code, Datum arg)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind != MB_SLOT_WORKER || slot->dboid != MyDatabaseId)
			continue;
		if (slot->state == MB_STATE_LEFT)
			mb_scheduler_free_left(slot);
		else
		{
			slot->exit_requested = true;
			if (slot->latch != NULL)
				SetLatch(slot->latch);
		}
	}
	if (my_slot->pid == MyProcPid)
	{
		my_slot->kind = MB_SLOT_UNUSED;
		my_slot->pid = 0;
		my_slot->latch = NULL;
		my_slot->waiting = 0;
		my_slot->starved_since = 0;
		mb_latch_waiting_schedulers();
	}
	LWLockRelease(mb_shared->lock);
	mb_schedule_forget_database(MyDatabaseId);
	mb_source_commits_forget_database(MyDatabaseId);
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
		free_slot->generation++;
		free_slot->exit_requested = false;
		free_slot->waiting = 0;
		free_slot->retention_pid = 0;
		free_slot->starved_since = 0;
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

/* The commits a pipeline's wake-ups are counted in */
static uint64
mb_commits_of(const MbScheduled *p)
{
	if (p->source_commits != NULL)
		return pg_atomic_read_u64(&p->source_commits->commits);
	return pg_atomic_read_u64(&my_slot->db_commits);
}

/* Qualified down to the operators, as all the engine's SQL */
#define MB_SCHEDULER_QUERY \
	"SELECT p.pipeline_id, p.pipeline_name::pg_catalog.text, " \
	"p.owner_role::pg_catalog.oid, " \
	"(pg_catalog.date_part('epoch', p.batch_interval) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8, " \
	"(pg_catalog.date_part('epoch', p.batch_timeout) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8, " \
	"p.state OPERATOR(pg_catalog.=) 'enabled', p.consecutive_failures, " \
	"p.source_table::pg_catalog.oid, last.started_at, last.finished_at " \
	"FROM microbatch.pipeline p " \
	"LEFT JOIN LATERAL (SELECT b.started_at, b.finished_at " \
	"FROM microbatch.batch b WHERE b.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id " \
	"ORDER BY b.batch_id DESC, b.attempt DESC LIMIT 1) last ON true"

/*
 * The retention worker of this database runs while retention is set up (it
 * leaves by itself once nothing is); we start it again if it is gone.
 */
static void
mb_scheduler_start_retention(void)
{
	pid_t		pid;
	MemoryContext oldcxt;

	if (retention_worker != NULL &&
		GetBackgroundWorkerPid(retention_worker, &pid) != BGWH_STOPPED)
		return;
	if (retention_worker != NULL)
		pfree(retention_worker);
	retention_worker = NULL;
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (!mb_start_dynamic_worker("retention", MyDatabaseId,
								 ObjectIdGetDatum(MyDatabaseId), &retention_worker))
	{
		retention_worker = NULL;
		ereport(LOG,
				(errmsg("microbatch could not start the retention worker of database %u",
						MyDatabaseId),
				 errhint("Raise max_worker_processes.")));
	}
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Workers running a pipeline hand it back after their current batch, so that
 * the next one follows the pipelines and settings as we are about to read
 * them.
 */
static void
mb_scheduler_stop_keeping(void)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_WORKER && slot->dboid == MyDatabaseId)
			slot->keep_running = false;
	}
	LWLockRelease(mb_shared->lock);
}

/*
 * Pipelines wait for a worker: wake the workers that may keep theirs, this
 * database's, or every database's when ours is starved, so that one waiting
 * for its coalesce_delay hands its pipeline back now.  Lock held.
 */
static void
mb_scheduler_wake_keepers(bool all_databases)
{
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_WORKER && slot->keep_running &&
			slot->latch != NULL &&
			(all_databases || slot->dboid == MyDatabaseId))
			SetLatch(slot->latch);
	}
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
	bool		retention_wanted;
	Oid		   *roots;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading microbatch pipelines");

	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension "
					"WHERE extname OPERATOR(pg_catalog.=) 'microbatch'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the microbatch extension");
	installed = SPI_processed > 0;
	retention_wanted = installed && mb_retention_wanted();
	if (installed && SPI_execute(MB_SCHEDULER_QUERY, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read microbatch.pipeline");

	/* outside SPI's memory, which SPI_finish() frees */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	nfresh = installed ? (int) SPI_processed : 0;
	fresh = palloc0(sizeof(MbScheduled) * Max(nfresh, 1));
	roots = palloc0(sizeof(Oid) * Max(nfresh, 1));
	MemoryContextSwitchTo(oldcxt);

	for (int i = 0; i < nfresh; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MbScheduled *p = &fresh[i];
		MbScheduled *known;
		bool		isnull;
		int32		failures;
		Datum		value;
		Datum		started;
		bool		started_null;
		Datum		finished;
		bool		finished_null;
		List	   *source_roots;

		p->id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		strlcpy(p->name, SPI_getvalue(tuple, desc, 2), NAMEDATALEN);
		p->owner = DatumGetObjectId(SPI_getbinval(tuple, desc, 3, &isnull));
		p->interval_ms = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
		value = SPI_getbinval(tuple, desc, 5, &isnull);
		p->own_timeout = !isnull;
		p->timeout_ms = isnull ? 0 : (int) Min(DatumGetInt64(value), INT_MAX);
		p->enabled = DatumGetBool(SPI_getbinval(tuple, desc, 6, &isnull));
		failures = DatumGetInt32(SPI_getbinval(tuple, desc, 7, &isnull));
		source_roots = mb_hierarchy_roots(DatumGetObjectId(SPI_getbinval(tuple, desc, 8, &isnull)));
		/* a table dropped under the pipeline has no hierarchy any more */
		roots[i] = list_length(source_roots) == 1 ? linitial_oid(source_roots) : InvalidOid;
		started = SPI_getbinval(tuple, desc, 9, &started_null);
		finished = SPI_getbinval(tuple, desc, 10, &finished_null);

		known = mb_find_pipeline(pipelines, npipelines, p->id);
		if (known != NULL)
		{
			p->slotno = known->slotno;
			p->woken = known->woken;
			p->last_empty = known->last_empty;
			p->backing_off = known->backing_off;
			p->last_dispatch = known->last_dispatch;
			p->next_run = known->next_run;
			p->source_commits = known->source_commits;
			p->commits_seen = known->commits_seen;

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

	/* what we asked for is asked again, for the pipelines as they are now */
	for (int i = 0; i < npipelines; i++)
		if (pipelines[i].source_commits != NULL)
			pg_atomic_write_u32(&pipelines[i].source_commits->wanted, 0);

	for (int i = 0; i < nfresh; i++)
	{
		MbScheduled *p = &fresh[i];
		MbSourceCommits *counter = OidIsValid(roots[i]) ?
		mb_source_commits(MyDatabaseId, roots[i]) : NULL;

		if (!p->own_timeout)
			p->timeout_ms = mb_batch_timeout;
		if (counter != p->source_commits ||
			mb_find_pipeline(pipelines, npipelines, p->id) == NULL)
		{
			p->source_commits = counter;
			p->commits_seen = mb_commits_of(p);
		}
	}
	pfree(roots);

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

	if (retention_wanted && mb_enabled)
		mb_scheduler_start_retention();
}

/*
 * A worker left in the middle of a batch, which was rolled back: record the
 * failure for it.  Returns the failures in a row.
 */
static int32
mb_scheduler_record_exit(const MbScheduled *p, TimestampTz started_at,
						 bool timed_out, int sqlerrcode, const char *message)
{
	MemoryContext context = AllocSetContextCreate(CurrentMemoryContext,
												  "microbatch worker exit",
												  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(context);
	ErrorData  *error = palloc0(sizeof(ErrorData));
	int32		failures;

	error->elevel = ERROR;
	if (timed_out)
	{
		error->sqlerrcode = ERRCODE_QUERY_CANCELED;
		error->message = psprintf("batch of pipeline \"%s\" ran longer than its batch_timeout of %d ms",
								  p->name, p->timeout_ms);
		error->detail = psprintf("It went on after it was cancelled, so its worker was terminated %d ms later.",
								 MB_BATCH_CANCEL_GRACE_MS);
	}
	else if (sqlerrcode != 0)
	{
		/* exit_on_error, or a termination */
		error->sqlerrcode = sqlerrcode;
		error->message = pstrdup(message);
		error->detail = pstrdup("The error ended the batch worker (as under exit_on_error, or on a termination); the batch was rolled back.");
	}
	else
	{
		error->sqlerrcode = ERRCODE_OPERATOR_INTERVENTION;
		error->message = psprintf("the batch worker of pipeline \"%s\" exited before it reported its batch",
								  p->name);
		error->detail = pstrdup("A batch it started was rolled back. The server log has the worker's last message, such as why it could not connect.");
	}
	ereport(LOG,
			(errmsg("microbatch pipeline \"%s\" could not run a batch: %s",
					p->name, error->message)));
	failures = mb_record_failure(p->name, error, started_at);
	failures = Max(failures, 1);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(context);
	return failures;
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
		int			batches = 1;
		bool		timed_out = false;
		int			exit_sqlerrcode = 0;
		char		exit_message[sizeof(((MbSlot *) NULL)->result_message)] = "";
		uint64		commits_covered = 0;

		if (p->slotno < 0)
			continue;
		slot = &mb_shared->slots[p->slotno];
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		if (slot->result_ready && slot->result_pipeline_id == p->id &&
			slot->generation == worker_handles[p->slotno].generation)
		{
			done = true;
			status = slot->result_status;
			failures = slot->result_failures;
			started_at = slot->result_started_at;
			capped = slot->result_capped;
			batches = slot->result_batches;
			commits_covered = slot->result_commits_covered;
			timed_out = slot->result_timed_out;
			if (failures < 0)
			{
				exit_sqlerrcode = slot->result_sqlerrcode;
				strlcpy(exit_message, slot->result_message, sizeof(exit_message));
			}
			slot->result_ready = false;
			if (slot->state == MB_STATE_LEFT)
				mb_scheduler_free_left(slot);
		}
		else if (slot->kind != MB_SLOT_WORKER || slot->dboid != MyDatabaseId ||
				 slot->pipeline_id != p->id)
		{
			/*
			 * The worker exited before reporting: it could not connect, or
			 * another database took the slot it left before we read it.
			 */
			done = true;
			status = MB_BATCH_FAILED;
			started_at = p->last_dispatch;
			failures = -1;
		}
		LWLockRelease(mb_shared->lock);
		if (!done)
			continue;
		if (failures < 0)
			failures = mb_scheduler_record_exit(p, started_at, timed_out,
												exit_sqlerrcode, exit_message);

		p->slotno = -1;
		/* the worker ran the batches after the first one by itself */
		if (batches > 1)
			p->last_dispatch = Max(p->last_dispatch, started_at);
		p->last_empty = status == MB_BATCH_EMPTY;
		p->backing_off = status == MB_BATCH_FAILED;
		/* only commits its snapshot may have missed call for another batch */
		p->woken = mb_commits_of(p) > commits_covered;
		if (status == MB_BATCH_FAILED)
		{
			if (failures >= mb_max_retries)
				p->enabled = false; /* the engine marked it failed */
			p->next_run = TimestampTzPlusMilliseconds(now, mb_retry_delay_ms(failures));
		}
		else if (status == MB_BATCH_NOT_ENABLED)
		{
			/*
			 * Paused in the catalog since we read it, and maybe resumed since
			 * our last reload: read the catalog again.
			 */
			p->enabled = false;
			pg_atomic_write_u32(&my_slot->reload_requested, 1);
			SetLatch(MyLatch);
		}
		else if (status == MB_BATCH_BUSY)
			p->next_run = TimestampTzPlusMilliseconds(now,
													  Min(Max(p->interval_ms, 100), mb_naptime));
		else if (capped)
			p->next_run = now;	/* a backlog: batches back to back until it is gone */
		else if (p->interval_ms == 0)
			p->next_run = p->woken ? now :
				TimestampTzPlusMilliseconds(now, mb_naptime);
		else
			p->next_run = Max(now, TimestampTzPlusMilliseconds(started_at, p->interval_ms));
		mb_schedule_publish(MyDatabaseId, p->id, p->enabled ? p->next_run : 0);
	}

	/*
	 * The outcome of a batch of a pipeline dropped since is nobody's: drop
	 * it, or its worker would never count as idle again.
	 */
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];
		bool		ours = false;

		if (slot->kind != MB_SLOT_WORKER || slot->dboid != MyDatabaseId ||
			!slot->result_ready)
			continue;
		for (int j = 0; j < npipelines && !ours; j++)
			ours = pipelines[j].slotno == i;
		if (ours)
			continue;
		slot->result_ready = false;
		if (slot->state == MB_STATE_LEFT)
			mb_scheduler_free_left(slot);
	}
	LWLockRelease(mb_shared->lock);
}

/* Forget workers we started that exited before they took their slot */
static void
mb_scheduler_reap(void)
{
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];
		pid_t		pid;

		if (worker_handles[i].handle == NULL ||
			GetBackgroundWorkerPid(worker_handles[i].handle, &pid) != BGWH_STOPPED)
			continue;
		pfree(worker_handles[i].handle);
		worker_handles[i].handle = NULL;
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		/* only if no one claimed the slot again since */
		if (slot->kind == MB_SLOT_WORKER && slot->pid == 0 &&
			slot->state != MB_STATE_LEFT &&
			slot->generation == worker_handles[i].generation)
		{
			slot->kind = MB_SLOT_UNUSED;
			mb_latch_waiting_schedulers();
		}
		LWLockRelease(mb_shared->lock);
	}
}

/*
 * Whether a due pipeline has rows to process, as far as we know: not only
 * the naptime's check of an idle pipeline whose source had no commit.
 */
static bool
mb_has_work(const MbScheduled *p)
{
	return p->woken || !p->last_empty || p->source_commits == NULL;
}

/*
 * The workers of a database, and one of them that is idle (or -1).  Caller
 * holds the lock.
 */
static int
mb_database_workers(Oid dboid, int *idle)
{
	int			workers = 0;

	*idle = -1;
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind != MB_SLOT_WORKER || slot->dboid != dboid)
			continue;
		workers++;
		if (*idle < 0 && slot->state == MB_STATE_IDLE && !slot->result_ready &&
			slot->latch != NULL && !slot->exit_requested)
			*idle = i;
	}
	return workers;
}

/* Another database with a scheduler, as we see it when assigning a pipeline */
typedef struct MbRival
{
	TimestampTz starved_since;	/* its scheduler's */
	int			workers;
	int			idle;			/* one of its idle workers, or -1 */
} MbRival;

/*
 * The other databases that have a scheduler, in rivals (room for nslots).
 * Caller holds the lock.
 */
static int
mb_rivals(MbRival *rivals)
{
	int			n = 0;

	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind != MB_SLOT_SCHEDULER || slot->dboid == MyDatabaseId)
			continue;
		rivals[n].starved_since = slot->starved_since;
		rivals[n].workers = mb_database_workers(slot->dboid, &rivals[n].idle);
		n++;
	}
	return n;
}

/*
 * Whether a starved database is owed one of our workers: it has two fewer,
 * or none at all and has waited a naptime (databases then take turns).
 */
static bool
mb_owed_worker(const MbRival *rivals, int nrivals, int mine, TimestampTz now)
{
	for (int i = 0; i < nrivals; i++)
		if (rivals[i].starved_since != 0 &&
			(rivals[i].workers <= mine - 2 ||
			 (rivals[i].workers == 0 && mine > 0 &&
			  TimestampDifferenceExceeds(rivals[i].starved_since, now, mb_naptime))))
			return true;
	return false;
}

/*
 * Whether we may start a worker in a free slot: not while a database with
 * fewer workers waits for one, or one with as many that has waited longer;
 * for a mere check of an idle pipeline, not while any database waits.
 */
static bool
mb_may_take_free_slot(const MbRival *rivals, int nrivals, int mine,
					  bool has_work, TimestampTz now)
{
	TimestampTz starved_since = my_slot->starved_since != 0 ?
		my_slot->starved_since : now;

	for (int i = 0; i < nrivals; i++)
	{
		if (rivals[i].starved_since == 0)
			continue;
		if (!has_work ||
			rivals[i].workers < mine ||
			(rivals[i].workers == mine && rivals[i].starved_since < starved_since))
			return false;
	}
	return true;
}

/*
 * The cluster is full: an idle worker of another database that should make
 * room for us, one that nothing waits for there, or of a database with at
 * least two more workers than we have, or any if we have none; or -1.
 */
static int
mb_worker_to_evict(const MbRival *rivals, int nrivals, int mine)
{
	for (int i = 0; i < nrivals; i++)
		if (rivals[i].idle >= 0 &&
			(rivals[i].starved_since == 0 || mine == 0 ||
			 rivals[i].workers >= mine + 2))
			return rivals[i].idle;
	return -1;
}

/*
 * Hand one pipeline to an idle worker of this database, or to a new one if
 * the cluster runs fewer than max_workers, as long as databases starved of
 * workers are not owed it.  Returns false when no worker can take it now.
 */
static bool
mb_scheduler_assign(MbScheduled *p)
{
	int			idle;
	int			unused = -1;
	int			workers = 0;
	int			mine;
	bool		has_work = mb_has_work(p);
	MbSlot	   *slot;
	static MbRival *rivals = NULL;
	int			nrivals;
	TimestampTz now = GetCurrentTimestamp();
	bool		prev_woken;
	TimestampTz prev_dispatch;

	if (rivals == NULL)
		rivals = MemoryContextAlloc(TopMemoryContext,
									sizeof(MbRival) * mb_shared->nslots);
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	mine = mb_database_workers(MyDatabaseId, &idle);
	nrivals = mb_rivals(rivals);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		slot = &mb_shared->slots[i];
		if (slot->kind == MB_SLOT_WORKER)
			workers++;
		else if (slot->kind == MB_SLOT_UNUSED && unused < 0)
			unused = i;
	}

	if (idle >= 0 && mb_owed_worker(rivals, nrivals, mine, now))
	{
		/* give the slot to a database that waits */
		mb_shared->slots[idle].exit_requested = true;
		SetLatch(mb_shared->slots[idle].latch);
		LWLockRelease(mb_shared->lock);
		return false;
	}
	if (idle >= 0)
		slot = &mb_shared->slots[idle];
	else if (workers < mb_max_workers && unused >= 0)
	{
		if (!mb_may_take_free_slot(rivals, nrivals, mine, has_work, now))
		{
			LWLockRelease(mb_shared->lock);
			return false;
		}
		slot = &mb_shared->slots[unused];
		slot->kind = MB_SLOT_WORKER;
		slot->dboid = MyDatabaseId;
		slot->pid = 0;
		slot->latch = NULL;
		slot->result_ready = false;
		slot->exit_requested = false;
		slot->generation++;
	}
	else
	{
		/* the cluster is full: an idle worker elsewhere may make room */
		int			evict = has_work ? mb_worker_to_evict(rivals, nrivals, mine) : -1;

		if (evict >= 0)
		{
			mb_shared->slots[evict].exit_requested = true;
			SetLatch(mb_shared->slots[evict].latch);
		}
		LWLockRelease(mb_shared->lock);
		return false;
	}

	slot->state = MB_STATE_ASSIGNED;
	slot->pipeline_id = p->id;
	strlcpy(slot->pipeline_name, p->name, NAMEDATALEN);
	slot->pipeline_owner = p->owner;
	slot->batch_timeout_ms = p->timeout_ms;
	slot->source_commits = p->source_commits;
	slot->continuous = p->interval_ms == 0;
	slot->keep_running = true;
	slot->batch_id = 0;
	slot->since = now;
	if (slot->latch != NULL)
		SetLatch(slot->latch);
	p->slotno = slot - mb_shared->slots;
	prev_woken = p->woken;
	prev_dispatch = p->last_dispatch;
	p->woken = false;
	p->last_dispatch = now;
	worker_handles[p->slotno].generation = slot->generation;
	LWLockRelease(mb_shared->lock);

	if (idle < 0 &&
		!mb_start_dynamic_worker("worker", MyDatabaseId, Int32GetDatum(p->slotno),
								 &worker_handles[p->slotno].handle))
	{
		static TimestampTz last_warning = 0;

		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		slot->kind = MB_SLOT_UNUSED;
		LWLockRelease(mb_shared->lock);
		worker_handles[p->slotno].handle = NULL;
		p->slotno = -1;
		/* it did not run: its wake-up stands, and no check was made */
		p->woken = prev_woken;
		p->last_dispatch = prev_dispatch;
		mb_database_report(MyDatabaseId, false, true);
		if (TimestampDifferenceExceeds(last_warning, now, 60 * 1000))
		{
			ereport(WARNING,
					(errmsg("microbatch could not start a batch worker: no background worker slot is free"),
					 errhint("Raise max_worker_processes, or lower microbatch.max_workers.")));
			last_warning = now;
		}
		return false;
	}
	if (idle < 0)
		mb_database_report(MyDatabaseId, false, false);
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
 * The earliest a pipeline with batch_interval 0 may start again: its
 * batches start microbatch.coalesce_delay apart at least, so that a stream
 * of small transactions makes fewer, larger batches.
 */
static TimestampTz
mb_coalesced_start(const MbScheduled *p)
{
	return p->interval_ms == 0 ?
		TimestampTzPlusMilliseconds(p->last_dispatch, mb_coalesce_delay) : 0;
}

/* Batches running for an owner, counting those handed out this round */
static int
mb_owner_running(Oid owner)
{
	int			running = 0;

	for (int i = 0; i < npipelines; i++)
		if (pipelines[i].slotno >= 0 && pipelines[i].owner == owner)
			running++;
	return running;
}

/*
 * Start the due pipelines while workers can take them: those with rows to
 * process first, each time one of the owner with the fewest batches
 * running, most overdue first.  Returns how many had to wait for a worker,
 * whether some of those have rows to process, and whether any started.
 */
static int
mb_scheduler_dispatch(bool *starved, bool *served)
{
	TimestampTz now = GetCurrentTimestamp();
	MbScheduled **due = palloc(sizeof(MbScheduled *) * Max(npipelines, 1));
	int			ndue = 0;

	*served = false;
	for (int i = 0; i < npipelines; i++)
	{
		MbScheduled *p = &pipelines[i];

		if (!p->enabled || p->slotno >= 0)
			continue;
		if (p->next_run > now && !(mb_runs_on_commit(p) && p->woken))
			continue;
		if (mb_coalesced_start(p) > now)
			continue;

		/*
		 * Nothing was written into its source since the pipeline's last
		 * batch, which found nothing: skip this run, up to a naptime (for
		 * rows whose commit wakes nobody, such as those of a COMMIT
		 * PREPARED).  Idle pipelines cost next to nothing.
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

	while (ndue > 0)
	{
		int			best = 0;
		int			best_running = mb_owner_running(due[0]->owner);

		for (int i = 1; i < ndue; i++)
		{
			int			running = mb_owner_running(due[i]->owner);
			bool		work = mb_has_work(due[i]);
			bool		best_work = mb_has_work(due[best]);

			if ((work && !best_work) ||
				(work == best_work &&
				 (running < best_running ||
				  (running == best_running && due[i]->next_run < due[best]->next_run))))
			{
				best = i;
				best_running = running;
			}
		}
		if (!mb_scheduler_assign(due[best]))
			break;
		*served = true;
		due[best] = due[--ndue];
	}
	*starved = false;
	for (int i = 0; i < ndue; i++)
		*starved |= mb_has_work(due[i]);
	pfree(due);
	return ndue;
}

/*
 * How long to sleep: until the next pipeline is due, or the next reload.
 * While no worker can take more (or batches are disabled), only a finishing
 * worker, a freed slot, a change or the reload wakes us.
 */
static long
mb_scheduler_timeout(TimestampTz next_reload, bool can_dispatch)
{
	TimestampTz wake = next_reload;
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; can_dispatch && i < npipelines; i++)
		if (pipelines[i].enabled && pipelines[i].slotno < 0)
			wake = Min(wake, Max(mb_coalesced_start(&pipelines[i]),
								 (mb_runs_on_commit(&pipelines[i]) && pipelines[i].woken) ?
								 now : pipelines[i].next_run));
	if (wake <= now)
		return 0;
	return (long) ((wake - now + 999) / 1000);
}

/*
 * Ask committing backends to set our latch for the commits that would start
 * a batch: those into the source of a continuous pipeline waiting for rows
 * (its counter's flag, or the database's for a pipeline without one).  Not
 * for a pipeline already woken, which waits for its coalesce_delay, nor for
 * the sources of other pipelines: a stream of commits into one source does
 * not wake us for each one.  Returns whether we asked for any.
 */
static bool
mb_scheduler_ask_commits(bool can_dispatch)
{
	bool		any = false;
	bool		without_counter = false;

	for (int i = 0; i < npipelines; i++)
		if (pipelines[i].source_commits != NULL)
			pg_atomic_write_u32(&pipelines[i].source_commits->wanted, 0);
	for (int i = 0; can_dispatch && i < npipelines; i++)
	{
		MbScheduled *p = &pipelines[i];

		if (!mb_runs_on_commit(p) || p->woken)
			continue;
		any = true;
		if (p->source_commits != NULL)
			pg_atomic_write_u32(&p->source_commits->wanted, 1);
		else
			without_counter = true;
	}
	pg_atomic_write_u32(&my_slot->wants_source_commits, without_counter ? 1 : 0);
	return any;
}

/*
 * Mark the pipelines whose source had a write committed since we looked.
 * Returns whether one that was not woken yet is now.
 */
static bool
mb_scheduler_note_commits(void)
{
	bool		any = false;

	for (int i = 0; i < npipelines; i++)
	{
		MbScheduled *p = &pipelines[i];
		uint64		commits = mb_commits_of(p);

		if (commits != p->commits_seen)
		{
			p->commits_seen = commits;
			any |= !p->woken;
			p->woken = true;
		}
	}
	return any;
}

void
microbatch_scheduler_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	TimestampTz next_reload = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, SIG_IGN);	/* no statement of ours to cancel */
	BackgroundWorkerUnblockSignals();

	mb_scheduler_attach(dboid);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	mb_background_session_defaults(true);
	pgstat_report_appname("microbatch scheduler");
	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											sizeof(MbWorkerHandle) * mb_shared->nslots);

	for (;;)
	{
		bool		can_dispatch;
		int			waiting = 0;
		bool		starved = false;
		bool		served = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			mb_scheduler_stop_keeping();
		}

		if (pg_atomic_read_u32(&my_slot->reload_requested) != 0 ||
			GetCurrentTimestamp() >= next_reload)
		{
			/*
			 * Before the flag is cleared: a worker that finds it clear finds
			 * that it may not keep its pipeline.
			 */
			mb_scheduler_stop_keeping();
			(void) pg_atomic_exchange_u32(&my_slot->reload_requested, 0);
			mb_scheduler_reload();
			next_reload = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), mb_naptime);
		}

		(void) mb_scheduler_note_commits();
		mb_scheduler_reap();
		mb_scheduler_collect();
		if (mb_enabled)
			waiting = mb_scheduler_dispatch(&starved, &served);
		can_dispatch = mb_enabled && waiting == 0;
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		my_slot->waiting = waiting;

		/* how long we have waited counts from our last batch started */
		if (!starved)
			my_slot->starved_since = 0;
		else if (served || my_slot->starved_since == 0)
			my_slot->starved_since = GetCurrentTimestamp();
		if (waiting > 0)
			mb_scheduler_wake_keepers(my_slot->starved_since != 0);
		LWLockRelease(mb_shared->lock);

		/*
		 * Ask committing backends to set our latch only while a commit would
		 * start a batch; otherwise their commits are counted, and seen when
		 * something else wakes us.  A commit counted before the flag was set
		 * is caught here, after the barrier.
		 */
		if (mb_scheduler_ask_commits(can_dispatch))
		{
			pg_memory_barrier();
			if (mb_scheduler_note_commits())
				continue;
		}

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 mb_scheduler_timeout(next_reload, can_dispatch),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
