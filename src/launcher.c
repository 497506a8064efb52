/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one scheduler per database that has the extension.
 *
 * The launcher is connected to no database: it reads pg_database, a shared
 * catalog, and starts a scheduler for each database that accepts
 * connections and is not a template.  A scheduler exits at once where the
 * extension is not installed; the launcher then tries that database again
 * only after ten naptimes, or as soon as a CREATE EXTENSION commits
 * anywhere.  Databases created later are found at the next naptime.  The
 * launcher starts only once the server accepts writes, so nothing runs on a
 * standby until it is promoted.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE
 * need a database without connections: the utility hook (src/ddl.c) asks
 * our processes in it to leave first, through mb_release_database().  The
 * launcher starts them again later where the database still exists.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "commands/dbcommands.h"
#include "tcop/tcopprot.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker.h"

/* A scheduler that lives less than this found no extension, most likely */
#define MB_SHORT_LIFE_NAPTIMES 1
#define MB_NO_EXTENSION_NAPTIMES 10

typedef struct MbDatabase
{
	Oid			dboid;			/* hash key */
	BackgroundWorkerHandle *handle; /* running scheduler, or NULL */
	TimestampTz started_at;
	uint64		extensions_created_at_start;
	TimestampTz next_start_at;
	bool		seen;
} MbDatabase;

/* Ask our schedulers and batch workers connected to a database to leave */
void
mb_release_database(const char *dbname)
{
	Oid			dboid = get_database_oid(dbname, true);
	int			signalled = 0;

	if (!OidIsValid(dboid) || mb_shared == NULL)
		return;
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	for (int i = 0; i < mb_shared->nslots; i++)
	{
		MbSlot	   *slot = &mb_shared->slots[i];

		if (slot->kind != MB_SLOT_UNUSED && slot->dboid == dboid &&
			slot->pid != 0 && kill(slot->pid, SIGTERM) == 0)
			signalled++;
		if (slot->kind == MB_SLOT_SCHEDULER && slot->dboid == dboid &&
			slot->retention_pid != 0 && kill(slot->retention_pid, SIGTERM) == 0)
			signalled++;
	}
	LWLockRelease(mb_shared->lock);
	signalled += mb_backfill_release_database(dboid);
	if (signalled > 0)
		ereport(DEBUG1,
				(errmsg("asked %d microbatch processes to leave database \"%s\"",
						signalled, dbname)));
}

void
mb_launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "microbatch");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "microbatch_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "microbatch launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "microbatch launcher");
	RegisterBackgroundWorker(&worker);
}

static void
mb_launcher_detach(int code, Datum arg)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	mb_shared->launcher_latch = NULL;
	LWLockRelease(mb_shared->lock);
}

/* Mark every database that accepts connections and is not a template */
static void
mb_scan_databases(HTAB *databases)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);
		MbDatabase *entry;
		bool		found;

		if (!db->datallowconn || db->datistemplate)
			continue;
		entry = hash_search(databases, &db->oid, HASH_ENTER, &found);
		if (!found)
		{
			entry->handle = NULL;
			entry->started_at = 0;
			entry->next_start_at = 0;
			entry->extensions_created_at_start = 0;
		}
		entry->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static void
mb_launcher_step(HTAB *databases)
{
	HASH_SEQ_STATUS status;
	MbDatabase *db;
	TimestampTz now = GetCurrentTimestamp();
	uint64		extensions_created;
	bool		rescan;
	static uint64 extensions_seen = 0;
	static TimestampTz last_warning = 0;

	LWLockAcquire(mb_shared->lock, LW_SHARED);
	extensions_created = mb_shared->extensions_created;
	LWLockRelease(mb_shared->lock);
	rescan = extensions_created != extensions_seen;
	extensions_seen = extensions_created;

	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		db->seen = false;
	mb_scan_databases(databases);

	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
	{
		pid_t		pid;

		if (db->handle != NULL &&
			GetBackgroundWorkerPid(db->handle, &pid) == BGWH_STOPPED)
		{
			int			naptimes = TimestampDifferenceExceeds(db->started_at, now,
															  mb_naptime * MB_SHORT_LIFE_NAPTIMES) ?
				1 : MB_NO_EXTENSION_NAPTIMES;

			pfree(db->handle);
			db->handle = NULL;
			db->next_start_at = TimestampTzPlusMilliseconds(now, mb_naptime * naptimes);

			/* it may have missed an extension created while it started */
			if (db->extensions_created_at_start != extensions_created)
				db->next_start_at = now;
			mb_schedule_forget_database(db->dboid);
		}
		if (!db->seen)
		{
			if (db->handle == NULL)
			{
				mb_stats_forget_database(db->dboid);
				hash_search(databases, &db->dboid, HASH_REMOVE, NULL);
			}
			continue;
		}
		if (db->handle != NULL || !mb_enabled)
			continue;
		if (!rescan && now < db->next_start_at)
			continue;
		if (!mb_start_dynamic_worker("scheduler", db->dboid,
									 ObjectIdGetDatum(db->dboid), &db->handle))
		{
			db->handle = NULL;
			if (TimestampDifferenceExceeds(last_warning, now, 60 * 1000))
			{
				ereport(WARNING,
						(errmsg("microbatch could not start a scheduler: no background worker slot is free"),
						 errhint("Raise max_worker_processes: microbatch needs one per database that has the extension, plus microbatch.max_workers.")));
				last_warning = now;
			}
			db->next_start_at = TimestampTzPlusMilliseconds(now, mb_naptime);
			mb_database_report(db->dboid, true, true);
			continue;
		}
		mb_database_report(db->dboid, true, false);
		db->started_at = now;
		db->extensions_created_at_start = extensions_created;
	}
}

void
microbatch_launcher_main(Datum arg)
{
	HTAB	   *databases;
	HASHCTL		ctl;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, SIG_IGN);	/* no statement of ours to cancel */
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("microbatch launcher");

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	mb_shared->launcher_latch = MyLatch;
	LWLockRelease(mb_shared->lock);
	before_shmem_exit(mb_launcher_detach, (Datum) 0);

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(MbDatabase);
	databases = hash_create("microbatch databases", 64, &ctl,
							HASH_ELEM | HASH_BLOBS);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		mb_launcher_step(databases);
		pgstat_report_stat(true);

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 mb_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
