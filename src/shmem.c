/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  State shared by the launcher, the schedulers, the batch workers and the
 *	  backends that wake them.
 *
 * One slot per scheduler or batch worker; the launcher has fields of its
 * own.  A scheduler hands a pipeline to an idle batch worker of its database
 * by writing the pipeline into the worker's slot and setting its latch; the
 * worker writes the outcome back and sets the scheduler's latch.  Next run
 * times are published in a hash table for the microbatch.pipelines view.
 *
 * Backends wake the scheduler of their database when they commit: after
 * inserting into a source (for continuous pipelines) or after changing a
 * pipeline (so that the change takes effect at once).  CREATE EXTENSION
 * wakes the launcher.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "microbatch.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(microbatch_source_changed);
PG_FUNCTION_INFO_V1(microbatch_extension_created);
PG_FUNCTION_INFO_V1(microbatch_workers);
PG_FUNCTION_INFO_V1(microbatch_next_run_at);

MbShared   *mb_shared = NULL;
static HTAB *mb_schedule = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* What this backend's transaction must do when it commits */
static bool wake_for_source = false;
static bool wake_for_catalog = false;
static bool wake_launcher = false;

static int
mb_slot_count(void)
{
	return max_worker_processes;
}

static Size
mb_shared_size(void)
{
	return add_size(offsetof(MbShared, slots),
					mul_size(sizeof(MbSlot), mb_slot_count()));
}

static void
mb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(mb_shared_size());
	RequestAddinShmemSpace(hash_estimate_size(mb_max_pipelines,
											  sizeof(MbScheduleEntry)));
	RequestNamedLWLockTranche("microbatch", 1);
}

static void
mb_shmem_startup(void)
{
	bool		found;
	HASHCTL		ctl;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	mb_shared = ShmemInitStruct("microbatch", mb_shared_size(), &found);
	if (!found)
	{
		memset(mb_shared, 0, mb_shared_size());
		mb_shared->lock = &(GetNamedLWLockTranche("microbatch"))->lock;
		mb_shared->nslots = mb_slot_count();
		for (int i = 0; i < mb_shared->nslots; i++)
		{
			pg_atomic_init_u64(&mb_shared->slots[i].source_commits, 0);
			pg_atomic_init_u32(&mb_shared->slots[i].wants_source_commits, 0);
			pg_atomic_init_u32(&mb_shared->slots[i].reload_requested, 0);
		}
	}
	ctl.keysize = sizeof(MbScheduleKey);
	ctl.entrysize = sizeof(MbScheduleEntry);
	mb_schedule = ShmemInitHash("microbatch schedule",
								mb_max_pipelines, mb_max_pipelines,
								&ctl, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Find the scheduler of a database and set its latch.  Caller holds the
 * lock in any mode.
 */
static MbSlot *
mb_scheduler_slot(Oid dboid)
{
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_SCHEDULER && slot->dboid == dboid &&
			slot->latch != NULL)
			return slot;
	}
	return NULL;
}

static void
mb_xact_callback(XactEvent event, void *arg)
{
	MbSlot	   *slot;

	/*
	 * A prepared transaction's rows are woken for by the naptime poll: its
	 * COMMIT PREPARED may run in any session.
	 */
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_ABORT && event != XACT_EVENT_PREPARE)
		return;
	if (event == XACT_EVENT_COMMIT && mb_shared != NULL &&
		(wake_for_source || wake_for_catalog || wake_launcher))
	{
		LWLockAcquire(mb_shared->lock, wake_launcher ? LW_EXCLUSIVE : LW_SHARED);
		if (wake_launcher && mb_shared->launcher_latch != NULL)
		{
			mb_shared->extensions_created++;
			SetLatch(mb_shared->launcher_latch);
		}
		slot = mb_scheduler_slot(MyDatabaseId);
		if (slot != NULL)
		{
			bool		wake = false;

			/*
			 * Every inserting commit is counted, but only a scheduler waiting
			 * for one (to start a continuous pipeline) is woken up: the others
			 * read the count when they wake anyway.  The fetch-add is a full
			 * barrier, pairing with the scheduler's between setting the flag
			 * and reading the count.
			 */
			if (wake_for_source)
			{
				pg_atomic_fetch_add_u64(&slot->source_commits, 1);
				wake = pg_atomic_read_u32(&slot->wants_source_commits) != 0;
			}
			if (wake_for_catalog)
			{
				pg_atomic_write_u32(&slot->reload_requested, 1);
				wake = true;
			}
			if (wake)
				SetLatch(slot->latch);
		}
		LWLockRelease(mb_shared->lock);
	}
	wake_for_source = wake_for_catalog = wake_launcher = false;
}

void
mb_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = mb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = mb_shmem_startup;
}

void
mb_register_xact_callback(void)
{
	RegisterXactCallback(mb_xact_callback, NULL);
}

/*
 * Start a scheduler or a batch worker ("scheduler" or "worker") for a
 * database; its entry point is microbatch_<role>_main.  We are told when it
 * exits.
 */
bool
mb_start_dynamic_worker(const char *role, Oid dboid, Datum arg,
						BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "microbatch");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "microbatch_%s_main", role);
	snprintf(worker.bgw_name, BGW_MAXLEN, "microbatch %s for database %u", role, dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "microbatch %s", role);
	worker.bgw_main_arg = arg;
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* The pipelines of this database changed: tell the scheduler at commit */
void
mb_wake_scheduler_at_commit(void)
{
	wake_for_catalog = true;
}

/* Say once per call when no worker will run the batches */
void
mb_warn_if_no_workers(void)
{
	if (mb_shared == NULL)
		ereport(WARNING,
				(errmsg("microbatch is not loaded through shared_preload_libraries, so no background worker will run batches"),
				 errhint("Add microbatch to shared_preload_libraries and restart the server; until then, run batches with microbatch.run_batch().")));
}

/*
 * Statement trigger on sources: a transaction that inserted rows tells the
 * scheduler when it commits, for pipelines with batch_interval 0 and for
 * idle pipelines.
 */
Datum
microbatch_source_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("microbatch.source_changed() must be called as a trigger")));
	wake_for_source = true;
	PG_RETURN_POINTER(NULL);
}

/* Called by the install script: start a scheduler here once committed */
Datum
microbatch_extension_created(PG_FUNCTION_ARGS)
{
	wake_launcher = true;
	mb_warn_if_no_workers();
	PG_RETURN_VOID();
}

void
mb_schedule_publish(Oid dboid, int32 pipeline_id, TimestampTz next_run_at)
{
	MbScheduleKey key;
	MbScheduleEntry *entry;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.pipeline_id = pipeline_id;
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	if (next_run_at == 0)
		hash_search(mb_schedule, &key, HASH_REMOVE, NULL);
	else
	{
		entry = hash_search(mb_schedule, &key, HASH_ENTER_NULL, NULL);
		if (entry != NULL)
			entry->next_run_at = next_run_at;
	}
	LWLockRelease(mb_shared->lock);
}

/* Forget the published schedule of a database's pipelines */
void
mb_schedule_forget_database(Oid dboid)
{
	HASH_SEQ_STATUS status;
	MbScheduleEntry *entry;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&status, mb_schedule);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->key.dboid == dboid)
			hash_search(mb_schedule, &entry->key, HASH_REMOVE, NULL);
	LWLockRelease(mb_shared->lock);
}

/* microbatch.next_run_at(pipeline_id): NULL when nothing is scheduled */
Datum
microbatch_next_run_at(PG_FUNCTION_ARGS)
{
	MbScheduleKey key;
	MbScheduleEntry *entry;
	TimestampTz next_run_at = 0;

	if (mb_shared == NULL)
		PG_RETURN_NULL();
	memset(&key, 0, sizeof(key));
	key.dboid = MyDatabaseId;
	key.pipeline_id = PG_GETARG_INT32(0);
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	entry = hash_search(mb_schedule, &key, HASH_FIND, NULL);
	if (entry != NULL)
		next_run_at = entry->next_run_at;
	LWLockRelease(mb_shared->lock);
	if (next_run_at == 0)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(next_run_at);
}

static const char *
mb_slot_state_name(const MbSlot *slot)
{
	if (slot->kind == MB_SLOT_SCHEDULER)
		return "scheduling";
	switch (slot->state)
	{
		case MB_STATE_STARTING:
			return "starting";
		case MB_STATE_IDLE:
			return "idle";
		case MB_STATE_ASSIGNED:
		case MB_STATE_RUNNING:
			return "running";
	}
	return "unknown";
}

/* microbatch.workers: the schedulers and batch workers of the cluster */
Datum
microbatch_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (mb_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(mb_shared->lock, LW_SHARED);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];
		Datum		values[7];
		bool		nulls[7];

		if (slot->kind == MB_SLOT_UNUSED || slot->pid == 0)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(slot->pid);
		values[1] = ObjectIdGetDatum(slot->dboid);
		values[2] = CStringGetTextDatum(slot->kind == MB_SLOT_SCHEDULER ?
										"scheduler" : "batch worker");
		values[3] = CStringGetTextDatum(mb_slot_state_name(slot));
		if (slot->kind == MB_SLOT_WORKER && slot->pipeline_id != 0)
		{
			values[4] = CStringGetTextDatum(slot->pipeline_name);
			values[5] = Int64GetDatum(slot->batch_id);
		}
		else
			nulls[4] = nulls[5] = true;
		if (slot->batch_id == 0)
			nulls[5] = true;
		values[6] = TimestampTzGetDatum(slot->since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(mb_shared->lock);
	return (Datum) 0;
}
