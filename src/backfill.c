/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  Backfills: replays of a range of batches, one transaction per batch,
 *	  by CALL or on a background worker, and their progress.
 *
 * A backfill replays the committed batches of a range in order, each as
 * replay_batch() does and committed on its own, so that a month of batches
 * is not one transaction and an interrupted backfill keeps what it did;
 * running it again replays every batch again, which replays allow.  Before
 * the first batch, the whole range is checked against retention, so that a
 * backfill is never cut short by rows already removed, and from then on the
 * backfill holds retention back at the batch it has reached.
 *
 * A background backfill is started by the transaction that asks for it:
 * its worker waits for that transaction, and does nothing if it aborts.
 *
 * Each running backfill has a slot in shared memory: the progress view
 * reads it, retention reads its hold, and a live batch that finds its
 * pipeline busy waits for the backfill's batch instead of skipping its turn
 * (heavyweight locks queue, so the backfill's next batch then waits for the
 * live one).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "microbatch.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(microbatch_replay_range);
PG_FUNCTION_INFO_V1(microbatch_start_replay);
PG_FUNCTION_INFO_V1(microbatch_replay_progress_slots);

/* Backfills running at once, in the whole cluster */
#define MB_MAX_BACKFILLS 32

/* How often the CALL form says how far it got */
#define MB_BACKFILL_NOTICE_MS 5000

typedef struct MbBackfillSlot
{
	bool		in_use;
	pid_t		pid;			/* 0: its background worker is starting */
	uint64		generation;		/* bumped each time the slot is claimed */
	Oid			dboid;
	Oid			userid;			/* who started it: it runs as that role */
	Oid			owner;			/* the pipeline's, for the view */
	int32		pipeline_id;
	char		pipeline_name[NAMEDATALEN];
	bool		background;
	bool		by_time;
	int64		from_arg;		/* batch ids, or timestamps */
	int64		to_arg;
	int64		from_batch;		/* the committed batches found in the range */
	int64		to_batch;
	int64		total;
	int64		done;
	int64		current_batch;	/* the next to replay: retention's hold */
	int64		rows_done;
	TimestampTz started_at;
	TransactionId start_xid;	/* background: runs once this commits */
} MbBackfillSlot;

typedef struct MbBackfills
{
	MbBackfillSlot slots[MB_MAX_BACKFILLS];
} MbBackfills;

static MbBackfills *mb_backfills = NULL;
static bool cleanup_registered = false;

void
mb_backfill_shmem_request(void)
{
	RequestAddinShmemSpace(sizeof(MbBackfills));
}

/* Caller holds AddinShmemInitLock */
void
mb_backfill_shmem_startup(void)
{
	bool		found;

	mb_backfills = ShmemInitStruct("microbatch backfills", sizeof(MbBackfills),
								   &found);
	if (!found)
		memset(mb_backfills, 0, sizeof(MbBackfills));
}

static void
mb_backfills_check(void)
{
	if (mb_backfills == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("backfills need microbatch in shared_preload_libraries"),
				 errhint("Replay one batch at a time with microbatch.replay_batch(), or add microbatch to shared_preload_libraries and restart the server.")));
}

/* A backend that exits frees the slots it runs */
static void
mb_backfill_release_mine(int code, Datum arg)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MB_MAX_BACKFILLS; i++)
		if (mb_backfills->slots[i].in_use &&
			mb_backfills->slots[i].pid == MyProcPid)
			mb_backfills->slots[i].in_use = false;
	LWLockRelease(mb_shared->lock);
}

static void
mb_backfill_register_cleanup(void)
{
	if (!cleanup_registered)
	{
		before_shmem_exit(mb_backfill_release_mine, (Datum) 0);
		cleanup_registered = true;
	}
}

static int
mb_backfill_claim(const MbPipeline *pipeline, bool background, bool by_time,
				  int64 from_arg, int64 to_arg)
{
	int			slotno = -1;
	pid_t		running = 0;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MB_MAX_BACKFILLS; i++)
	{
		MbBackfillSlot *slot = &mb_backfills->slots[i];

		if (!slot->in_use && slotno < 0)
			slotno = i;
		else if (slot->in_use && slot->dboid == MyDatabaseId &&
				 slot->pipeline_id == pipeline->id)
			running = Max(slot->pid, 1);
	}
	if (running != 0)
	{
		LWLockRelease(mb_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a backfill of pipeline \"%s\" is already running", pipeline->name),
				 errdetail("Process %d runs it.", (int) running),
				 errhint("Wait for it to end, or cancel it with pg_cancel_backend().")));
	}
	if (slotno >= 0)
	{
		MbBackfillSlot *slot = &mb_backfills->slots[slotno];
		uint64		generation = slot->generation + 1;

		memset(slot, 0, sizeof(*slot));
		slot->in_use = true;
		slot->generation = generation;
		slot->pid = background ? 0 : MyProcPid;
		slot->dboid = MyDatabaseId;
		slot->userid = GetUserId();
		slot->owner = pipeline->owner;
		slot->pipeline_id = pipeline->id;
		strlcpy(slot->pipeline_name, pipeline->name, NAMEDATALEN);
		slot->background = background;
		slot->by_time = by_time;
		slot->from_arg = from_arg;
		slot->to_arg = to_arg;
		slot->started_at = GetCurrentTimestamp();
	}
	LWLockRelease(mb_shared->lock);
	if (slotno < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many backfills are running"),
				 errdetail("At most %d backfills run at once in the cluster.", MB_MAX_BACKFILLS),
				 errhint("Wait for one to end; microbatch.replay_progress lists them.")));
	return slotno;
}

static void
mb_backfill_release(int slotno)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	mb_backfills->slots[slotno].in_use = false;
	LWLockRelease(mb_shared->lock);
}

/*
 * The lowest batch a running backfill of a pipeline has still to replay,
 * or 0 if none runs
 */
int64
mb_backfill_hold(Oid dboid, int32 pipeline_id)
{
	int64		hold = 0;

	if (mb_backfills == NULL)
		return 0;
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	for (int i = 0; i < MB_MAX_BACKFILLS; i++)
	{
		MbBackfillSlot *slot = &mb_backfills->slots[i];

		if (slot->in_use && slot->dboid == dboid &&
			slot->pipeline_id == pipeline_id && slot->current_batch > 0 &&
			(hold == 0 || slot->current_batch < hold))
			hold = slot->current_batch;
	}
	LWLockRelease(mb_shared->lock);
	return hold;
}

bool
mb_backfill_running(Oid dboid, const char *pipeline_name)
{
	bool		running = false;

	if (mb_backfills == NULL)
		return false;
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	for (int i = 0; i < MB_MAX_BACKFILLS && !running; i++)
	{
		MbBackfillSlot *slot = &mb_backfills->slots[i];

		running = slot->in_use && slot->dboid == dboid &&
			strcmp(slot->pipeline_name, pipeline_name) == 0;
	}
	LWLockRelease(mb_shared->lock);
	return running;
}

/* DROP DATABASE and the like: the background backfills of it leave */
int
mb_backfill_release_database(Oid dboid)
{
	int			signalled = 0;

	if (mb_backfills == NULL)
		return 0;
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	for (int i = 0; i < MB_MAX_BACKFILLS; i++)
	{
		MbBackfillSlot *slot = &mb_backfills->slots[i];

		if (slot->in_use && slot->background && slot->dboid == dboid &&
			slot->pid != 0 && kill(slot->pid, SIGTERM) == 0)
			signalled++;
	}
	LWLockRelease(mb_shared->lock);
	return signalled;
}

static void
mb_backfill_publish(int slotno, int64 current_batch, int64 done, int64 rows)
{
	MbBackfillSlot *slot = &mb_backfills->slots[slotno];

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	slot->current_batch = current_batch;
	slot->done = done;
	slot->rows_done = rows;
	LWLockRelease(mb_shared->lock);
}

/* What the caller asked for, as the slot keeps it */
static void
mb_range_args(const MbBackfillSlot *slot, Datum *from, Datum *to)
{
	*from = slot->by_time ? TimestampTzGetDatum(slot->from_arg) :
		Int64GetDatum(slot->from_arg);
	*to = slot->by_time ? TimestampTzGetDatum(slot->to_arg) :
		Int64GetDatum(slot->to_arg);
}

/*
 * Check that every batch of a range, whose committed batches go from first
 * to last, can be replayed.  Expects mb_call_begin().
 */
static void
mb_range_check(const MbPipeline *pipeline, bool by_time, Datum from,
			   int64 first, int64 last)
{
	if (first < pipeline->rebind_batch_id)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batches before " INT64_FORMAT " of pipeline \"%s\" were recorded in another cluster",
						pipeline->rebind_batch_id, pipeline->name),
				 errhint("Start the range at batch " INT64_FORMAT " or later.",
						 pipeline->rebind_batch_id)));
	mb_retention_check_replayable(pipeline,
								  by_time ? first : Min(first, DatumGetInt64(from)),
								  last);
}

/*
 * Find the range's batches and check them all, in the first transaction of
 * the backfill, with its hold published first (see retention.c).  Returns
 * false when the range has no committed batch.
 */
static bool
mb_backfill_start(int slotno)
{
	MbBackfillSlot *slot = &mb_backfills->slots[slotno];
	MbCall		call;
	MbPipeline *pipeline;
	Datum		from;
	Datum		to;
	int64		first = 0;
	int64		last = 0;
	int64		total;

	mb_call_begin(&call);
	pipeline = mb_pipeline_get(slot->pipeline_name);
	mb_pipeline_check_owner(pipeline, call.caller);
	mb_range_args(slot, &from, &to);
	total = mb_ledger_range(pipeline->id, slot->by_time, from, to, &first, &last);
	if (total > 0)
	{
		LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
		slot->from_batch = first;
		slot->to_batch = last;
		slot->total = total;
		slot->current_batch = first;
		LWLockRelease(mb_shared->lock);
		mb_range_check(pipeline, slot->by_time, from, first, last);
	}
	mb_call_end(&call);
	return total > 0;
}

/* Replay the batch after prev in the range; its id, or 0 at the end */
static int64
mb_backfill_one(int slotno, int64 prev, int64 *rows)
{
	MbBackfillSlot *slot = &mb_backfills->slots[slotno];
	MbCall		call;
	MbPipeline *pipeline;
	int64		batch_id;

	mb_call_begin(&call);
	pipeline = mb_pipeline_get(slot->pipeline_name);
	batch_id = mb_ledger_next_committed(pipeline->id, prev, slot->to_batch);
	if (batch_id != 0)
	{
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("replaying batch " INT64_FORMAT " of pipeline %s",
										batch_id, pipeline->name));
		*rows = mb_replay_batch(slot->pipeline_name, batch_id, call.caller);
	}
	mb_call_end(&call);
	return batch_id;
}

static char *
mb_seconds_text(double seconds)
{
	return psprintf("%.0f s", seconds);
}

/*
 * The backfill itself.  commit ends the transaction of each batch and starts
 * the next; between batches a background backfill sleeps delay_ms.  keep
 * outlives the transactions.
 */
static void
mb_backfill_run(int slotno, void (*commit) (void), int delay_ms, bool notices,
				MemoryContext keep)
{
	MbBackfillSlot *slot = &mb_backfills->slots[slotno];
	int64		prev;
	int64		done = 0;
	int64		rows = 0;
	TimestampTz started = GetCurrentTimestamp();
	TimestampTz last_notice = started;
	char	   *name = MemoryContextStrdup(keep, slot->pipeline_name);

	PushActiveSnapshot(GetTransactionSnapshot());
	if (!mb_backfill_start(slotno))
	{
		PopActiveSnapshot();
		ereport(notices ? NOTICE : LOG,
				(errmsg("pipeline \"%s\" has no committed batch in the range, so none was replayed",
						name)));
		return;
	}
	PopActiveSnapshot();
	commit();
	prev = slot->from_batch - 1;

	for (;;)
	{
		int64		batch_rows = 0;
		int64		batch_id;
		TimestampTz at;

		CHECK_FOR_INTERRUPTS();
		PushActiveSnapshot(GetTransactionSnapshot());
		batch_id = mb_backfill_one(slotno, prev, &batch_rows);
		PopActiveSnapshot();
		commit();
		if (batch_id == 0)
			break;
		prev = batch_id;
		done++;
		rows += batch_rows;
		mb_backfill_publish(slotno, batch_id + 1, done, rows);

		at = GetCurrentTimestamp();
		if (notices && done < slot->total &&
			TimestampDifferenceExceeds(last_notice, at, MB_BACKFILL_NOTICE_MS))
		{
			double		elapsed = (double) (at - started) / USECS_PER_SEC;

			ereport(NOTICE,
					(errmsg("replaying pipeline \"%s\": " INT64_FORMAT " of " INT64_FORMAT " batches, " INT64_FORMAT " rows, about %s left",
							name, done, slot->total, rows,
							mb_seconds_text(elapsed / done * (slot->total - done)))));
			last_notice = at;
		}
		if (delay_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 delay_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	ereport(notices ? NOTICE : LOG,
			(errmsg_plural("replayed " INT64_FORMAT " batch of pipeline \"%s\" (" INT64_FORMAT " rows)",
						   "replayed " INT64_FORMAT " batches of pipeline \"%s\" (" INT64_FORMAT " rows)",
						   (unsigned long) done, done, name, rows)));
}

static void
mb_backfill_commit_spi(void)
{
	SPI_commit();
}

static void
mb_backfill_commit_worker(void)
{
	CommitTransactionCommand();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
}

/* The pipeline and the range of a call: the same arguments for all four */
static MbPipeline *
mb_backfill_args(FunctionCallInfo fcinfo, bool *by_time, int64 *from,
				 int64 *to)
{
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, 1);
	MbPipeline *found;
	MbPipeline *pipeline = palloc0(sizeof(MbPipeline));
	MemoryContext caller_context = CurrentMemoryContext;
	MbCall		call;

	for (int i = 0; i < 3; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null",
							i == 0 ? "pipeline" : i == 1 ? "the start of the range" :
							"the end of the range")));
	*by_time = type == TIMESTAMPTZOID;
	*from = PG_GETARG_INT64(1);
	*to = PG_GETARG_INT64(2);
	if (*from > *to)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the range of batches to replay is empty: its start is after its end")));
	if (mb_window_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot replay batches inside a transform")));
	PreventCommandIfReadOnly("microbatch.replay()");
	PreventCommandDuringRecovery("microbatch.replay()");
	mb_backfills_check();

	mb_call_begin(&call);
	found = mb_pipeline_get(NameStr(*PG_GETARG_NAME(0)));
	mb_pipeline_check_owner(found, call.caller);
	/* what the slot needs, out of SPI's memory */
	pipeline->id = found->id;
	pipeline->owner = found->owner;
	pipeline->name = MemoryContextStrdup(caller_context, found->name);
	mb_call_end(&call);
	return pipeline;
}

/* CALL microbatch.replay(pipeline, from, to) */
Datum
microbatch_replay_range(PG_FUNCTION_ARGS)
{
	bool		by_time;
	int64		from;
	int64		to;
	MbPipeline *pipeline;
	int			slotno;

	if (fcinfo->context == NULL || !IsA(fcinfo->context, CallContext) ||
		castNode(CallContext, fcinfo->context)->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("microbatch.replay() cannot run inside a transaction block"),
				 errdetail("It commits after each batch."),
				 errhint("Call it on its own, or replay single batches in your transaction with microbatch.replay_batch().")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot replay batches in a transaction with a transaction snapshot"),
				 errhint("Run it in a READ COMMITTED session.")));

	pipeline = mb_backfill_args(fcinfo, &by_time, &from, &to);
	mb_backfill_register_cleanup();
	slotno = mb_backfill_claim(pipeline, false, by_time, from, to);
	PG_TRY();
	{
		if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		mb_backfill_run(slotno, mb_backfill_commit_spi, 0, true,
						CurrentMemoryContext);
		SPI_finish();
	}
	PG_FINALLY();
	{
		mb_backfill_release(slotno);
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/* microbatch.start_replay(pipeline, from, to): the same, in the background */
Datum
microbatch_start_replay(PG_FUNCTION_ARGS)
{
	bool		by_time;
	int64		from;
	int64		to;
	MbPipeline *pipeline;
	int			slotno;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid = 0;
	BgwHandleStatus status;

	pipeline = mb_backfill_args(fcinfo, &by_time, &from, &to);

	/* what can be known now is an error now, not in the worker's log */
	{
		MbCall		call;
		MbPipeline *known;
		int64		first = 0;
		int64		last = 0;
		Datum		from_datum = by_time ? TimestampTzGetDatum(from) : Int64GetDatum(from);

		mb_call_begin(&call);
		known = mb_pipeline_get(pipeline->name);
		if (mb_ledger_range(known->id, by_time, from_datum,
							by_time ? TimestampTzGetDatum(to) : Int64GetDatum(to),
							&first, &last) > 0)
			mb_range_check(known, by_time, from_datum, first, last);
		mb_call_end(&call);
	}
	slotno = mb_backfill_claim(pipeline, true, by_time, from, to);
	/*
	 * The backfill is part of our (sub)transaction: it starts when that
	 * commits with its parents
	 */
	mb_backfills->slots[slotno].start_xid = GetCurrentTransactionId();

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "microbatch");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "microbatch_backfill_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "microbatch backfill of pipeline %s", pipeline->name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "microbatch backfill");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &mb_backfills->slots[slotno].generation, sizeof(uint64));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		mb_backfill_release(slotno);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker for the backfill"),
				 errhint("Raise max_worker_processes, or run it with CALL microbatch.replay().")));
	}
	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status != BGWH_STARTED)
	{
		mb_backfill_release(slotno);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the background worker of the backfill did not start")));
	}
	PG_RETURN_INT32((int32) pid);
}

void
microbatch_backfill_main(Datum arg)
{
	int			slotno = DatumGetInt32(arg);
	MbBackfillSlot *slot = &mb_backfills->slots[slotno];
	uint64		generation;
	Oid			dboid;
	Oid			userid;

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(uint64));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	if (!slot->in_use || slot->generation != generation || slot->pid != 0)
	{
		LWLockRelease(mb_shared->lock);
		proc_exit(0);
	}
	slot->pid = MyProcPid;
	dboid = slot->dboid;
	userid = slot->userid;
	LWLockRelease(mb_shared->lock);
	mb_backfill_register_cleanup();

	BackgroundWorkerInitializeConnectionByOid(dboid, userid, 0);
	mb_background_session_defaults(false);
	pgstat_report_appname("microbatch backfill");

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactLockTableWait(slot->start_xid, NULL, NULL, XLTW_None);
	if (!TransactionIdDidCommit(slot->start_xid))
	{
		CommitTransactionCommand();
		proc_exit(0);
	}
	mb_backfill_run(slotno, mb_backfill_commit_worker, mb_backfill_delay, false,
					TopMemoryContext);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

/* The backfills running, for the view microbatch.replay_progress */
Datum
microbatch_replay_progress_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MbBackfillSlot slots[MB_MAX_BACKFILLS];

	InitMaterializedSRF(fcinfo, 0);
	if (mb_backfills == NULL)
		return (Datum) 0;

	/* a copy, so that the checks of rights below hold no lock */
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	memcpy(slots, mb_backfills->slots, sizeof(slots));
	LWLockRelease(mb_shared->lock);
	for (int i = 0; i < MB_MAX_BACKFILLS; i++)
	{
		MbBackfillSlot *slot = &slots[i];
		Datum		values[13];
		bool		nulls[13];

		/* the backfills of the pipelines whose owner's privileges we have */
		if (!slot->in_use || !has_privs_of_role(GetUserId(), slot->owner))
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(slot->pid);
		values[1] = ObjectIdGetDatum(slot->dboid);
		values[2] = Int32GetDatum(slot->pipeline_id);
		values[3] = DirectFunctionCall1(namein, CStringGetDatum(slot->pipeline_name));
		values[4] = ObjectIdGetDatum(slot->owner);
		values[5] = BoolGetDatum(slot->background);
		values[6] = Int64GetDatum(slot->from_batch);
		values[7] = Int64GetDatum(slot->to_batch);
		values[8] = Int64GetDatum(slot->total);
		values[9] = Int64GetDatum(slot->done);
		values[10] = Int64GetDatum(slot->current_batch);
		values[11] = Int64GetDatum(slot->rows_done);
		values[12] = TimestampTzGetDatum(slot->started_at);
		if (slot->total == 0)
			nulls[6] = nulls[7] = nulls[10] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
