/*-------------------------------------------------------------------------
 *
 * status.c
 *	  What the views and API calls show of the background processes: next
 *	  run times, the workers of the cluster, and databases that could not
 *	  get a background worker.
 *
 * microbatch.workers shows every scheduler and batch worker, as
 * pg_stat_activity shows every backend; which pipeline and batch a worker
 * runs only to roles with the privileges of the pipeline's owner, or of
 * pg_read_all_stats, as the other views do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "microbatch.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(microbatch_workers);
PG_FUNCTION_INFO_V1(microbatch_next_run_at);

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
		hash_search(mb_schedule_hash, &key, HASH_REMOVE, NULL);
	else
	{
		entry = hash_search(mb_schedule_hash, &key, HASH_ENTER_NULL, NULL);
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
	hash_seq_init(&status, mb_schedule_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->key.dboid == dboid)
			hash_search(mb_schedule_hash, &entry->key, HASH_REMOVE, NULL);
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
	entry = hash_search(mb_schedule_hash, &key, HASH_FIND, NULL);
	if (entry != NULL)
		next_run_at = entry->next_run_at;
	LWLockRelease(mb_shared->lock);
	if (next_run_at == 0)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(next_run_at);
}

/*
 * The launcher (for a scheduler) or a scheduler (for a batch worker) found
 * no free background worker slot for a database, or found one again.
 */
void
mb_database_report(Oid dboid, bool scheduler, bool starved)
{
	MbDatabaseStatus *status;
	bool		found;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	status = hash_search(mb_database_hash, &dboid, starved ? HASH_ENTER_NULL : HASH_FIND,
						 &found);
	if (status != NULL)
	{
		TimestampTz *since = scheduler ? &status->no_scheduler_since :
		&status->no_worker_since;

		if (!found)
			status->no_scheduler_since = status->no_worker_since = 0;
		if (!starved)
			*since = 0;
		else if (*since == 0)
			*since = GetCurrentTimestamp();
		if (status->no_scheduler_since == 0 && status->no_worker_since == 0)
			hash_search(mb_database_hash, &dboid, HASH_REMOVE, NULL);
	}
	LWLockRelease(mb_shared->lock);
}

/*
 * Say in SQL, not only in the server log, when no background worker will
 * run this database's batches: without the preload, or when the cluster had
 * no free background worker slot for it.
 */
void
mb_warn_if_no_workers(void)
{
	MbDatabaseStatus *status;
	TimestampTz no_scheduler_since = 0;
	TimestampTz no_worker_since = 0;

	if (mb_shared == NULL)
	{
		ereport(WARNING,
				(errmsg("microbatch is not loaded through shared_preload_libraries, so no background worker will run batches"),
				 errhint("Add microbatch to shared_preload_libraries and restart the server; until then, run batches with microbatch.run_batch().")));
		return;
	}
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	status = hash_search(mb_database_hash, &MyDatabaseId, HASH_FIND, NULL);
	if (status != NULL)
	{
		no_scheduler_since = status->no_scheduler_since;
		no_worker_since = status->no_worker_since;
	}
	LWLockRelease(mb_shared->lock);

	if (no_scheduler_since != 0)
		ereport(WARNING,
				(errmsg("no background worker slot has been free for the scheduler of database \"%s\" since %s",
						get_database_name(MyDatabaseId),
						timestamptz_to_str(no_scheduler_since)),
				 errdetail("No batch of this database runs in the background until one is."),
				 errhint("Raise max_worker_processes: microbatch needs one per database that has the extension, plus microbatch.max_workers.")));
	else if (no_worker_since != 0)
		ereport(WARNING,
				(errmsg("no background worker slot has been free for the batches of database \"%s\" since %s",
						get_database_name(MyDatabaseId),
						timestamptz_to_str(no_worker_since)),
				 errhint("Raise max_worker_processes, or lower microbatch.max_workers.")));
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
		case MB_STATE_LEFT:
			return "exited";
	}
	return "unknown";
}

/*
 * microbatch.workers: the schedulers and batch workers of the cluster.  The
 * slots are copied under the lock, and the privileges checked after it.
 */
Datum
microbatch_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			viewer = GetUserId();
	bool		read_all = has_privs_of_role(viewer, ROLE_PG_READ_ALL_STATS);
	MbSlot	   *slots;
	int			nslots;

	InitMaterializedSRF(fcinfo, 0);
	if (mb_shared == NULL)
		return (Datum) 0;

	nslots = mb_shared->nslots;
	slots = palloc(sizeof(MbSlot) * nslots);
	LWLockAcquire(mb_shared->lock, LW_SHARED);
	memcpy(slots, mb_shared->slots, sizeof(MbSlot) * nslots);
	LWLockRelease(mb_shared->lock);

	for (int i = 0; i < nslots; i++)
	{
		MbSlot	   *slot = &slots[i];
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
		if (slot->kind == MB_SLOT_WORKER && slot->pipeline_id != 0 &&
			(read_all || has_privs_of_role(viewer, slot->pipeline_owner)))
		{
			values[4] = CStringGetTextDatum(slot->pipeline_name);
			values[5] = Int64GetDatum(slot->batch_id);
			nulls[5] = slot->batch_id == 0;
		}
		else
			nulls[4] = nulls[5] = true;
		values[6] = TimestampTzGetDatum(slot->since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
