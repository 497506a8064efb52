/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared memory of the launcher, the schedulers and the batch
 *	  workers: its structures, and what every background process of ours
 *	  does when it starts.
 *
 * One slot per scheduler or batch worker; the launcher has fields of its
 * own.  A scheduler hands a pipeline to an idle batch worker of its database
 * by writing the pipeline into the worker's slot and setting its latch; the
 * worker writes the outcome back and sets the scheduler's latch.  Three
 * hash tables complete it: the next run of each pipeline (status.c), the
 * commit counters of sources (wakeup.c), and the databases that could not
 * get a background worker (status.c); and so does the list of prepared
 * transactions that wrote into sources (wakeup.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "microbatch.h"
#include "worker.h"

MbShared   *mb_shared = NULL;
MbPreparedWakes *mb_prepared_wakes = NULL;
HTAB	   *mb_schedule_hash = NULL;
HTAB	   *mb_source_hash = NULL;
HTAB	   *mb_database_hash = NULL;

/* Databases whose worker shortage the views can report */
#define MB_MAX_DATABASE_STATUS 256

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

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

static Size
mb_prepared_wakes_size(void)
{
	return add_size(offsetof(MbPreparedWakes, entries),
					mul_size(sizeof(MbPreparedWake), max_prepared_xacts));
}

static void
mb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(mb_shared_size());
	RequestAddinShmemSpace(mb_prepared_wakes_size());
	RequestAddinShmemSpace(hash_estimate_size(mb_max_pipelines,
											  sizeof(MbScheduleEntry)));
	RequestAddinShmemSpace(hash_estimate_size(mb_max_pipelines,
											  sizeof(MbSourceCommits)));
	RequestAddinShmemSpace(hash_estimate_size(MB_MAX_DATABASE_STATUS,
											  sizeof(MbDatabaseStatus)));
	RequestNamedLWLockTranche("microbatch", 1);
	mb_backfill_shmem_request();
	mb_stats_shmem_request();
}

static HTAB *
mb_shared_hash(const char *name, long size, Size keysize, Size entrysize)
{
	HASHCTL		ctl;

	ctl.keysize = keysize;
	ctl.entrysize = entrysize;
	/* fixed: the spare shared memory is the lock table's; callers enter with HASH_ENTER_NULL */
	return ShmemInitHash(name, size, size, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

static void
mb_shmem_startup(void)
{
	bool		found;

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
			pg_atomic_init_u64(&mb_shared->slots[i].db_commits, 0);
			pg_atomic_init_u32(&mb_shared->slots[i].wants_source_commits, 0);
			pg_atomic_init_u32(&mb_shared->slots[i].reload_requested, 0);
		}
	}
	mb_prepared_wakes = ShmemInitStruct("microbatch prepared wakes",
										mb_prepared_wakes_size(), &found);
	if (!found)
	{
		memset(mb_prepared_wakes, 0, mb_prepared_wakes_size());
		pg_atomic_init_u32(&mb_prepared_wakes->used, 0);
		mb_prepared_wakes->size = max_prepared_xacts;
	}
	mb_schedule_hash = mb_shared_hash("microbatch schedule", mb_max_pipelines,
									  sizeof(MbScheduleKey),
									  sizeof(MbScheduleEntry));
	mb_source_hash = mb_shared_hash("microbatch source commits", mb_max_pipelines,
									sizeof(MbSourceKey), sizeof(MbSourceCommits));
	mb_database_hash = mb_shared_hash("microbatch databases", MB_MAX_DATABASE_STATUS,
									  sizeof(Oid), sizeof(MbDatabaseStatus));
	mb_backfill_shmem_startup();
	mb_stats_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

void
mb_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = mb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = mb_shmem_startup;
}

/* The scheduler of a database, or NULL.  Caller holds the lock in any mode. */
MbSlot *
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

/*
 * A slot just became free: wake the schedulers that have pipelines waiting
 * for a worker.  Caller holds the lock in any mode.
 */
void
mb_latch_waiting_schedulers(void)
{
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind == MB_SLOT_SCHEDULER && slot->waiting > 0 &&
			slot->latch != NULL)
			SetLatch(slot->latch);
	}
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

/*
 * The session of a scheduler or batch worker, whatever the database's
 * settings (ALTER DATABASE ... SET is in its owner's hands): every batch in
 * a READ COMMITTED read-write transaction, which the engine needs, with
 * nothing but pg_catalog on the search_path, no timeouts of the session's
 * (batches have their own), triggers firing as in any session, errors that
 * stay errors, and, as_superuser, the bootstrap superuser as the session's
 * user and role (a backfill worker stays the role that started it).
 */
void
mb_background_session_defaults(bool as_superuser)
{
	static const char *const defaults[][2] = {
		{"search_path", "pg_catalog, pg_temp"},
		{"default_transaction_isolation", "read committed"},
		{"default_transaction_read_only", "off"},
		{"default_transaction_deferrable", "off"},
		{"statement_timeout", "0"},
		{"lock_timeout", "0"},
		{"idle_in_transaction_session_timeout", "0"},
		{"session_replication_role", "origin"},
		{"exit_on_error", "off"},
		{"role", "none"},
	};

	/* the check of session_authorization reads the catalog */
	StartTransactionCommand();
	if (as_superuser)
		SetConfigOption("session_authorization",
						GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false),
						PGC_SUSET, PGC_S_OVERRIDE);
	for (int i = 0; i < lengthof(defaults); i++)
		SetConfigOption(defaults[i][0], defaults[i][1], PGC_SUSET, PGC_S_OVERRIDE);
	CommitTransactionCommand();
}
